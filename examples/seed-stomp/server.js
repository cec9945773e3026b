#!/usr/bin/env node
// The seed's chat-server design, small: what Spring's simple broker plus a
// change-stream listener does, in Node.js, so chatbench can gate the kind
// of server it exists for without a JVM.
//
// - STOMP 1.2 over WebSocket at --path (default /ws-stomp).
// - SEND to /pub/chat/{groupId} with a JSON body {"content": "..."}: the
//   handler inserts {groupId, content, createdAt} into MongoDB
//   (collection chat_messages). No RECEIPT, for SEND or SUBSCRIBE (Spring's
//   simple broker sends none).
// - Every node watches one change stream on chat_messages (inserts) and
//   sends each new message as MESSAGE to its subscribers of
//   /sub/chat/{groupId}; the body is the server's DTO:
//   {"id": "<ObjectId>", "groupId", "content", "createdAt"}.
// - A connection's SENDs are inserted one after another, in order.
//
// Sabotage (for the gate's own tests): --lose-every N drops every N-th
// change event on this node (stored, never delivered here).
//
// Usage: node server.js --port P --mongo URI --db DB [--path /ws-stomp]
//        [--lose-every N] [--max-frame BYTES (default 65536)]
// GET /health answers 200 once MongoDB and the change stream are up.
'use strict';

const http = require('node:http');
const { WebSocketServer } = require('ws');
const { MongoClient } = require('mongodb');

function parseArgs(argv) {
  const opts = { path: '/ws-stomp', loseEvery: 0, maxFrame: 65536 };
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    if (value === undefined) fail(`${key} needs a value`);
    switch (key) {
      case '--port': opts.port = Number(value); break;
      case '--mongo': opts.mongo = value; break;
      case '--db': opts.db = value; break;
      case '--path': opts.path = value; break;
      case '--lose-every': opts.loseEvery = Number(value); break;
      case '--max-frame': opts.maxFrame = Number(value); break;
      default: fail(`unknown option ${key}`);
    }
  }
  if (!Number.isInteger(opts.port) || !opts.mongo || !opts.db) fail('need --port, --mongo and --db');
  return opts;
}

function fail(message) {
  console.error(`seed-stomp: ${message}`);
  process.exit(2);
}

// STOMP 1.2 header escaping.
const unescape = (s) => s.replace(/\\([\\cnr])/g, (_, c) => ({ '\\': '\\', c: ':', n: '\n', r: '\r' })[c]);
const escape = (s) => String(s).replace(/[\\:\n\r]/g, (c) => ({ '\\': '\\\\', ':': '\\c', '\n': '\\n', '\r': '\\r' })[c]);

function encode(command, headers, body = '') {
  const lines = [command, ...Object.entries(headers).map(([k, v]) => `${escape(k)}:${escape(v)}`)];
  return `${lines.join('\n')}\n\n${body}\0`;
}

// Frames in one WebSocket message (heart-beats are bare EOLs).
function decode(text) {
  const frames = [];
  for (const raw of text.split('\0')) {
    const chunk = raw.replace(/^[\r\n]+/, '');
    if (!chunk) continue;
    const end = chunk.indexOf('\n\n');
    const head = end < 0 ? chunk : chunk.slice(0, end);
    const body = end < 0 ? '' : chunk.slice(end + 2);
    const [command, ...lines] = head.split(/\r?\n/);
    const headers = {};
    for (const line of lines) {
      const i = line.indexOf(':');
      if (i <= 0) return { error: `malformed header line ${JSON.stringify(line)}` };
      const k = unescape(line.slice(0, i));
      if (!(k in headers)) headers[k] = unescape(line.slice(i + 1));
    }
    frames.push({ command: command.trim(), headers, body });
  }
  return { frames };
}

// An ObjectId as hex. (nx-27017, the compat MongoDB, hands change events'
// ObjectIds over as {__neosqlite_objectid__, id}.)
const idOf = (v) => (typeof v?.toHexString === 'function' ? v.toHexString() : typeof v?.id === 'string' ? v.id : String(v));

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const client = new MongoClient(opts.mongo, { serverSelectionTimeoutMS: 10000 });
  await client.connect();
  const messages = client.db(opts.db).collection('chat_messages');
  // destination -> Map(ws -> subscription id)
  const subscribers = new Map();
  let events = 0;
  let ready = false;

  const stream = messages.watch([{ $match: { operationType: 'insert' } }]);
  stream.on('change', (change) => {
    events += 1;
    if (opts.loseEvery > 0 && events % opts.loseEvery === 0) return;
    const doc = change.fullDocument;
    if (!doc || typeof doc.groupId !== 'string') return;
    const destination = `/sub/chat/${doc.groupId}`;
    const dto = JSON.stringify({ id: idOf(doc._id), groupId: doc.groupId, content: doc.content, createdAt: doc.createdAt });
    for (const [ws, id] of subscribers.get(destination) ?? []) {
      if (ws.readyState !== ws.OPEN) continue;
      ws.send(encode('MESSAGE', {
        destination,
        subscription: id,
        // As Spring numbers them: session, then a counter.
        'message-id': `${ws.sessionId}-${++ws.sent}`,
        'content-type': 'application/json',
      }, dto));
    }
  });
  stream.on('error', (e) => console.error(`seed-stomp: change stream error: ${e.message}`));
  // The cursor is open once the first getMore round-trip is under way.
  await new Promise((resolve) => setTimeout(resolve, 200));
  ready = true;

  const server = http.createServer((req, res) => {
    res.writeHead(req.url === '/health' && ready ? 200 : 404).end(ready ? 'ok' : 'starting');
  });
  const wss = new WebSocketServer({ server, path: opts.path, maxPayload: opts.maxFrame,
    handleProtocols: (protocols) => (protocols.has('v12.stomp') ? 'v12.stomp' : false) });
  let sessions = 0;
  wss.on('connection', (ws) => {
    ws.sessionId = `${opts.port}.${++sessions}`;
    ws.sent = 0;
    const mine = new Map(); // subscription id -> destination
    let inserts = Promise.resolve();
    const drop = () => {
      for (const destination of mine.values()) subscribers.get(destination)?.delete(ws);
      mine.clear();
    };
    const error = (message) => {
      ws.send(encode('ERROR', { message }));
      ws.close(1002, 'STOMP error');
    };
    ws.on('message', (data) => {
      const { frames, error: bad } = decode(data.toString('utf8'));
      if (bad) return error(bad);
      for (const f of frames) {
        switch (f.command) {
          case 'CONNECT':
          case 'STOMP':
            ws.send(encode('CONNECTED', { version: '1.2', 'heart-beat': '0,0', server: 'seed-stomp/0.1' }));
            break;
          case 'SUBSCRIBE': {
            const { id, destination } = f.headers;
            if (!id || !destination) return error('SUBSCRIBE needs id and destination');
            mine.set(id, destination);
            if (!subscribers.has(destination)) subscribers.set(destination, new Map());
            subscribers.get(destination).set(ws, id);
            break;
          }
          case 'UNSUBSCRIBE': {
            const destination = mine.get(f.headers.id);
            if (destination) subscribers.get(destination)?.delete(ws);
            mine.delete(f.headers.id);
            break;
          }
          case 'SEND': {
            const m = /^\/pub\/chat\/(.+)$/.exec(f.headers.destination ?? '');
            if (!m) return error(`no such destination ${f.headers.destination}`);
            let content;
            try {
              content = JSON.parse(f.body).content;
            } catch {
              return error('SEND body is not JSON');
            }
            if (typeof content !== 'string') return error('SEND body has no content');
            const doc = { groupId: m[1], content, createdAt: new Date() };
            inserts = inserts.then(() => messages.insertOne(doc)).catch((e) => console.error(`seed-stomp: insert failed: ${e.message}`));
            break;
          }
          case 'DISCONNECT':
            ws.close();
            break;
          default:
            return error(`unknown command ${f.command}`);
        }
      }
    });
    ws.on('close', drop);
    ws.on('error', drop);
  });
  server.listen(opts.port, '127.0.0.1', () => console.log(`seed-stomp listening on 127.0.0.1:${opts.port}${opts.path}`));
  const stop = async () => {
    wss.close();
    server.close();
    await stream.close().catch(() => {});
    await client.close().catch(() => {});
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  console.error(`seed-stomp: ${e.stack ?? e}`);
  process.exit(1);
});
