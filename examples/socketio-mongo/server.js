#!/usr/bin/env node
// A chat server as the Socket.IO docs build one, scaled out with
// @socket.io/mongo-adapter: every node inserts each broadcast into a
// MongoDB collection and watches it with one change stream.
//
// Events (all with an acknowledgement callback):
//   join(room, cb)   leave(room, cb)   chat({room, id, text}, cb)
// Deliveries: `chat` with the same object, to every socket in the room,
// on every node.
//
// Sabotage (for the gate's own tests): --lose-every N acknowledges every
// N-th chat message but never broadcasts it.
//
// Usage: node server.js --port P --mongo URI --db DB
//        [--collection socket_io_events] [--max-payload BYTES (default 1e6)]
//        [--lose-every N] [--recovery]   (connection state recovery, 2 min)
// GET /health answers 200 once MongoDB and the adapter are up.
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/mongo-adapter');
const { MongoClient } = require('mongodb');

function parseArgs(argv) {
  // nx-27017 (the compat MongoDB) refuses collection names with '.' or '-'.
  const opts = { collection: 'socket_io_events', maxPayload: 1e6, loseEvery: 0 };
  for (let i = 0; i < argv.length; i += 2) {
    if (argv[i] === '--recovery') {
      opts.recovery = true;
      i -= 1;
      continue;
    }
    const [key, value] = [argv[i], argv[i + 1]];
    if (value === undefined) fail(`${key} needs a value`);
    switch (key) {
      case '--port': opts.port = Number(value); break;
      case '--mongo': opts.mongo = value; break;
      case '--db': opts.db = value; break;
      case '--collection': opts.collection = value; break;
      case '--max-payload': opts.maxPayload = Number(value); break;
      case '--lose-every': opts.loseEvery = Number(value); break;
      default: fail(`unknown option ${key}`);
    }
  }
  if (!Number.isInteger(opts.port) || !opts.mongo || !opts.db) fail('need --port, --mongo and --db');
  return opts;
}

function fail(message) {
  console.error(`socketio-mongo: ${message}`);
  process.exit(2);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const client = new MongoClient(opts.mongo, { serverSelectionTimeoutMS: 10000 });
  await client.connect();
  const db = client.db(opts.db);
  const events = db.collection(opts.collection);
  // The adapter's documented set-up without a capped collection: a TTL
  // index on createdAt (addCreatedAtField below).
  await events.createIndex({ createdAt: 1 }, { expireAfterSeconds: 3600, background: true }).catch((e) => {
    console.error(`socketio-mongo: TTL index not created (${e.message}); continuing`);
  });
  let ready = false;
  const server = http.createServer((req, res) => {
    if (req.url === '/health') res.writeHead(ready ? 200 : 503).end(ready ? 'ok' : 'starting');
    else if (!req.url.startsWith('/socket.io/')) res.writeHead(404).end();
  });
  const io = new Server(server, {
    maxHttpBufferSize: opts.maxPayload,
    transports: ['websocket'],
    // Missed broadcasts are replayed from the adapter's collection to a
    // client that reconnects within 2 minutes with its pid and offset.
    ...(opts.recovery ? { connectionStateRecovery: { maxDisconnectionDuration: 120000, skipMiddlewares: true } } : {}),
  });
  io.adapter(createAdapter(events, { addCreatedAtField: true }));
  let chats = 0;
  io.on('connection', (socket) => {
    socket.on('join', (room, cb) => {
      if (typeof room !== 'string') return typeof cb === 'function' && cb({ error: 'room must be a string' });
      socket.join(room);
      if (typeof cb === 'function') cb({ ok: true });
    });
    socket.on('leave', (room, cb) => {
      socket.leave(room);
      if (typeof cb === 'function') cb({ ok: true });
    });
    socket.on('chat', (msg, cb) => {
      if (!msg || typeof msg.room !== 'string') return typeof cb === 'function' && cb({ error: 'chat needs a room' });
      chats += 1;
      if (!(opts.loseEvery > 0 && chats % opts.loseEvery === 0)) io.to(msg.room).emit('chat', msg);
      if (typeof cb === 'function') cb({ ok: true });
    });
  });
  server.listen(opts.port, '127.0.0.1', () => {
    ready = true;
    console.log(`socketio-mongo listening on 127.0.0.1:${opts.port}`);
  });
  const stop = async () => {
    io.close();
    await client.close().catch(() => {});
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  console.error(`socketio-mongo: ${e.stack ?? e}`);
  process.exit(1);
});
