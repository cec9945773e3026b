#!/usr/bin/env node
// A chat server as the Socket.IO docs build one, scaled out through Redis:
//   --adapter pubsub    @socket.io/redis-adapter: every broadcast is
//                       PUBLISHed; every node SUBSCRIBEs (at most once:
//                       what a node misses while its link is down is gone)
//   --adapter streams   @socket.io/redis-streams-adapter: every broadcast is
//                       XADDed to one stream every node XREADs, resuming
//                       after a disconnection; with --recovery, connection
//                       state recovery (sessions kept in Redis, 2 min)
//
// Events (all with an acknowledgement callback):
//   join(room, cb)   leave(room, cb)   chat({room, id, text}, cb)
// Deliveries: `chat` with the same object, to every socket in the room,
// on every node.
//
// Usage: node server.js --port P --redis URL --adapter pubsub|streams
//        [--key NAME (channel prefix or stream name; default socket.io)]
//        [--recovery] [--max-payload BYTES (default 1e6)]
//        [--no-rejection-handler]
// The adapter discards the promises of its PUBLISH calls (redis-adapter
// 8.3, dist/index.js: `this.pubClient.publish(channel, msg);`): when Redis
// goes away, one rejects with ECONNRESET and Node.js ends the process on
// the unhandled rejection. The server therefore logs unhandled rejections
// (as a production server would); --no-rejection-handler leaves Node's
// default, to reproduce the crash.
// GET /health answers 200 once Redis and the adapter are up.
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');
const { createClient } = require('redis');

function parseArgs(argv) {
  const opts = { key: 'socket.io', maxPayload: 1e6 };
  for (let i = 0; i < argv.length; i += 2) {
    if (argv[i] === '--recovery') {
      opts.recovery = true;
      i -= 1;
      continue;
    }
    if (argv[i] === '--no-rejection-handler') {
      opts.noRejectionHandler = true;
      i -= 1;
      continue;
    }
    const [key, value] = [argv[i], argv[i + 1]];
    if (value === undefined) fail(`${key} needs a value`);
    switch (key) {
      case '--port': opts.port = Number(value); break;
      case '--redis': opts.redis = value; break;
      case '--adapter': opts.adapter = value; break;
      case '--key': opts.key = value; break;
      case '--max-payload': opts.maxPayload = Number(value); break;
      default: fail(`unknown option ${key}`);
    }
  }
  if (!Number.isInteger(opts.port) || !opts.redis) fail('need --port and --redis');
  if (!['pubsub', 'streams'].includes(opts.adapter)) fail('--adapter must be pubsub or streams');
  if (opts.recovery && opts.adapter !== 'streams') fail('--recovery needs --adapter streams (the pub/sub adapter keeps no packets)');
  return opts;
}

function fail(message) {
  console.error(`socketio-redis: ${message}`);
  process.exit(2);
}

async function adapterOf(opts) {
  const client = createClient({ url: opts.redis });
  client.on('error', (e) => console.error(`socketio-redis: Redis client: ${e.message}`));
  await client.connect();
  if (opts.adapter === 'pubsub') {
    const { createAdapter } = require('@socket.io/redis-adapter');
    const sub = client.duplicate();
    sub.on('error', (e) => console.error(`socketio-redis: Redis subscriber: ${e.message}`));
    await sub.connect();
    return { adapter: createAdapter(client, sub, { key: opts.key }), clients: [client, sub] };
  }
  const { createAdapter } = require('@socket.io/redis-streams-adapter');
  return { adapter: createAdapter(client, { streamName: opts.key, sessionKeyPrefix: `${opts.key}:session:` }), clients: [client] };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (!opts.noRejectionHandler) {
    process.on('unhandledRejection', (e) => console.error(`socketio-redis: unhandled rejection: ${e?.message ?? e}`));
  }
  const { adapter, clients } = await adapterOf(opts);
  let ready = false;
  const server = http.createServer((req, res) => {
    if (req.url === '/health') res.writeHead(ready ? 200 : 503).end(ready ? 'ok' : 'starting');
    else if (!req.url.startsWith('/socket.io/')) res.writeHead(404).end();
  });
  const io = new Server(server, {
    maxHttpBufferSize: opts.maxPayload,
    transports: ['websocket'],
    adapter,
    ...(opts.recovery ? { connectionStateRecovery: { maxDisconnectionDuration: 120000, skipMiddlewares: true } } : {}),
  });
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
      io.to(msg.room).emit('chat', msg);
      if (typeof cb === 'function') cb({ ok: true });
    });
  });
  server.listen(opts.port, '127.0.0.1', () => {
    ready = true;
    console.log(`socketio-redis (${opts.adapter}) listening on 127.0.0.1:${opts.port}`);
  });
  const stop = async () => {
    io.close();
    await Promise.all(clients.map((c) => c.quit().catch(() => {})));
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  console.error(`socketio-redis: ${e.stack ?? e}`);
  process.exit(1);
});
