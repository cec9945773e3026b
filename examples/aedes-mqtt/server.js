#!/usr/bin/env node
// An MQTT broker as the aedes docs build one for browsers: aedes behind a
// WebSocket server (`ws`), scaled out through an emitter every node
// shares, so a subscriber on node A gets what was published on node B:
//   --emitter redis     mqemitter-redis: Redis pub/sub (--redis URL)
//   --emitter mongodb   mqemitter-mongodb: every node writes each publish
//                       into one MongoDB capped collection and tails it
//   --emitter memory    one node alone (aedes's default)
//
// Clients speak MQTT 3.1.1 or 5 over WebSocket on /mqtt. A QoS 1 or 2
// publish is acknowledged (PUBACK, PUBCOMP) once aedes has handed it to
// the emitter; deliveries go out at the subscription's QoS.
//
// Sabotage (for the gate's own tests): --lose-every N acknowledges every
// N-th publish but never forwards it; --duplicate-every N forwards every
// N-th publish twice.
//
// Usage: node server.js --port P [--emitter memory|redis|mongodb]
//        [--redis URL] [--mongo URI --db DB [--collection mqtt_pubsub]]
//        [--lose-every N] [--duplicate-every N]
// GET /health answers 200 once MongoDB and the emitter are up.
'use strict';

const http = require('node:http');
const { WebSocketServer, createWebSocketStream } = require('ws');

function parseArgs(argv) {
  // nx-27017 (the compat MongoDB) refuses collection names with '.' or '-'.
  const opts = { emitter: 'memory', collection: 'mqtt_pubsub', loseEvery: 0, duplicateEvery: 0 };
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    if (value === undefined) fail(`${key} needs a value`);
    switch (key) {
      case '--port': opts.port = Number(value); break;
      case '--emitter': opts.emitter = value; break;
      case '--redis': opts.redis = value; break;
      case '--mongo': opts.mongo = value; break;
      case '--db': opts.db = value; break;
      case '--collection': opts.collection = value; break;
      case '--lose-every': opts.loseEvery = Number(value); break;
      case '--duplicate-every': opts.duplicateEvery = Number(value); break;
      default: fail(`unknown option ${key}`);
    }
  }
  if (!Number.isInteger(opts.port)) fail('need --port');
  if (opts.emitter === 'mongodb' && (!opts.mongo || !opts.db)) fail('--emitter mongodb needs --mongo and --db');
  if (opts.emitter === 'redis' && !opts.redis) fail('--emitter redis needs --redis');
  if (!['memory', 'redis', 'mongodb'].includes(opts.emitter)) fail(`unknown emitter ${opts.emitter}`);
  return opts;
}

function fail(message) {
  console.error(`aedes-mqtt: ${message}`);
  process.exit(2);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const { Aedes } = await import('aedes');
  const emitter = await makeEmitter(opts);
  const broker = await Aedes.createBroker(emitter ? { mq: emitter } : {});
  let publishes = 0;
  if (opts.loseEvery > 0 || opts.duplicateEvery > 0) {
    const publish = broker.publish.bind(broker);
    broker.authorizePublish = (client, packet, done) => {
      publishes += 1;
      if (opts.loseEvery > 0 && publishes % opts.loseEvery === 0) {
        // Acknowledged to the sender, forwarded to nobody.
        packet.topic = `$lost/${packet.topic}`;
      } else if (opts.duplicateEvery > 0 && publishes % opts.duplicateEvery === 0) {
        const copy = { ...packet, messageId: undefined };
        setImmediate(() => publish(copy, () => {}));
      }
      done(null);
    };
  }
  const server = http.createServer((req, res) => {
    if (req.url === '/health') res.writeHead(200).end('ok');
    else res.writeHead(404).end();
  });
  const wss = new WebSocketServer({ server, path: '/mqtt' });
  wss.on('connection', (socket, req) => {
    const stream = createWebSocketStream(socket);
    stream.on('error', () => socket.terminate());
    broker.handle(stream, req);
  });
  server.listen(opts.port, '127.0.0.1', () => console.log(`aedes-mqtt: listening on 127.0.0.1:${opts.port}`));
  const stop = () => {
    wss.close();
    server.close();
    broker.close(() => (emitter ? emitter.close(() => process.exit(0)) : process.exit(0)));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

async function makeEmitter(opts) {
  if (opts.emitter === 'redis') {
    const emitter = require('mqemitter-redis')({ connectionString: opts.redis });
    await new Promise((resolve, reject) => {
      emitter.subConn.once('ready', resolve);
      emitter.subConn.once('error', reject);
    });
    return emitter;
  }
  if (opts.emitter === 'mongodb') {
    const emitter = require('mqemitter-mongodb')({ url: opts.mongo, database: opts.db, collection: opts.collection });
    await new Promise((resolve, reject) => {
      emitter.status.once('stream', resolve);
      emitter.status.once('error', reject);
    });
    return emitter;
  }
  return null;
}

main().catch((e) => {
  console.error(`aedes-mqtt: ${e.stack || e}`);
  process.exit(1);
});
