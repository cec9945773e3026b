#!/usr/bin/env node
// A chat server as the graphql-ws docs build one: a schema with a `send`
// mutation and a `messages(room)` subscription, served over the
// graphql-transport-ws subprotocol on /graphql, scaled out through Redis
// pub/sub (each node publishes a sent message on `chat:{room}` and
// re-emits what it hears to its own subscribers), or alone in memory.
//
//   mutation { send(room, id, text) { id room text } }   the result is the ack
//   subscription { messages(room) { id room text } }
//
// Sabotage (for the gate's own tests): --lose-every N answers every N-th
// send but never publishes it; --duplicate-every N publishes it twice.
//
// Usage: node server.js --port P [--redis URL] [--lose-every N] [--duplicate-every N]
// GET /health answers 200 once Redis (if any) is subscribed.
'use strict';

const http = require('node:http');
const { EventEmitter } = require('node:events');
const { WebSocketServer } = require('ws');
const { useServer } = require('graphql-ws/use/ws');
const { buildSchema } = require('graphql');

function parseArgs(argv) {
  const opts = { loseEvery: 0, duplicateEvery: 0 };
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    if (value === undefined) fail(`${key} needs a value`);
    switch (key) {
      case '--port': opts.port = Number(value); break;
      case '--redis': opts.redis = value; break;
      case '--lose-every': opts.loseEvery = Number(value); break;
      case '--duplicate-every': opts.duplicateEvery = Number(value); break;
      default: fail(`unknown option ${key}`);
    }
  }
  if (!Number.isInteger(opts.port)) fail('need --port');
  return opts;
}

function fail(message) {
  console.error(`graphql-chat: ${message}`);
  process.exit(2);
}

const schema = buildSchema(`
  type Message { id: String! room: String! text: String! }
  type Query { health: Boolean }
  type Mutation { send(room: String!, id: String!, text: String!): Message! }
  type Subscription { messages(room: String!): Message! }
`);

// Events of one room as an async iterator, bounded: a subscriber that
// falls 10,000 messages behind is ended rather than buffered without end.
function roomEvents(local, room) {
  const queue = [];
  let wake = null;
  let done = false;
  const listener = (message) => {
    if (queue.length >= 10000) return finish();
    queue.push(message);
    if (wake) { wake(); wake = null; }
  };
  const finish = () => {
    done = true;
    local.off(room, listener);
    if (wake) { wake(); wake = null; }
    return Promise.resolve({ value: undefined, done: true });
  };
  local.on(room, listener);
  return {
    [Symbol.asyncIterator]() { return this; },
    async next() {
      while (queue.length === 0 && !done) await new Promise((r) => { wake = r; });
      if (queue.length > 0) return { value: { messages: queue.shift() }, done: false };
      return { value: undefined, done: true };
    },
    return: finish,
    throw: finish,
  };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const local = new EventEmitter();
  local.setMaxListeners(0);
  let publish = (message) => local.emit(message.room, message);
  let redis = null;
  if (opts.redis) {
    const Redis = require('ioredis');
    const pub = new Redis(opts.redis);
    const sub = new Redis(opts.redis);
    await sub.psubscribe('chat:*');
    sub.on('pmessage', (_pattern, _channel, raw) => {
      const message = JSON.parse(raw);
      local.emit(message.room, message);
    });
    publish = (message) => pub.publish(`chat:${message.room}`, JSON.stringify(message));
    redis = { pub, sub };
  }
  let sends = 0;
  const root = {
    health: () => true,
    send: async ({ room, id, text }) => {
      const message = { id, room, text };
      sends += 1;
      if (opts.loseEvery > 0 && sends % opts.loseEvery === 0) return message;
      await publish(message);
      if (opts.duplicateEvery > 0 && sends % opts.duplicateEvery === 0) await publish(message);
      return message;
    },
    messages: ({ room }) => roomEvents(local, room),
  };
  const server = http.createServer((req, res) => {
    if (req.url === '/health') res.writeHead(200).end('ok');
    else res.writeHead(404).end();
  });
  const wss = new WebSocketServer({ server, path: '/graphql' });
  useServer(
    {
      schema,
      roots: { query: root, mutation: root, subscription: { messages: root.messages } },
    },
    wss,
  );
  server.listen(opts.port, '127.0.0.1', () => console.log(`graphql-chat: listening on 127.0.0.1:${opts.port}`));
  const stop = () => {
    wss.close();
    server.close();
    if (redis) { redis.pub.disconnect(); redis.sub.disconnect(); }
    setTimeout(() => process.exit(0), 500).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  console.error(`graphql-chat: ${e.stack || e}`);
  process.exit(1);
});
