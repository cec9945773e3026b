//! `chat-server`: flags into a [`Config`], then [`serve`] until SIGTERM or
//! SIGINT. The first line on stdout is `listening <ip>:<port>` so a harness
//! can start nodes on port 0.

use anyhow::Context;
use chatbench_server::fanout::changestream::ChangeStreamConfig;
use chatbench_server::fanout::kafka::KafkaConfig;
use chatbench_server::fanout::nats::NatsConfig;
use chatbench_server::fanout::redis::RedisConfig;
use chatbench_server::fanout::{FanoutConfig, Mode};
use chatbench_server::sabotage::Sabotage;
use chatbench_server::{Config, Limits, serve};
use clap::Parser;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "chat-server", version, about = "chatbench reference chat server (protocol v1, see server/PROTOCOL.md)")]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, env = "CHAT_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// MongoDB connection string.
    #[arg(long, env = "CHAT_MONGO_URI")]
    mongo_uri: String,
    /// Database holding the `messages` collection.
    #[arg(long, env = "CHAT_DB", default_value = "chatbench")]
    db: String,
    /// Name of this node in logs, metrics and stored messages (default: node-<pid>).
    #[arg(long, env = "CHAT_NODE_ID")]
    node_id: Option<String>,
    /// How nodes learn of messages stored by other nodes.
    #[arg(long, env = "CHAT_MODE", value_enum, default_value_t = Mode::Changestream)]
    mode: Mode,
    /// Kafka bootstrap servers (required with --mode kafka).
    #[arg(long, env = "CHAT_KAFKA_BOOTSTRAP")]
    kafka_bootstrap: Option<String>,
    /// Kafka topic every node produces to and consumes (must exist).
    #[arg(long, env = "CHAT_KAFKA_TOPIC", default_value = "chatbench.messages")]
    kafka_topic: String,
    /// librdkafka fetch.wait.max.ms for the consumer.
    #[arg(long, env = "CHAT_KAFKA_FETCH_WAIT_MAX_MS", default_value_t = 5)]
    kafka_fetch_wait_max_ms: u32,
    /// Redis URL, e.g. redis://127.0.0.1:6379 (required with --mode redis).
    #[arg(long, env = "CHAT_REDIS_URL")]
    redis_url: Option<String>,
    /// Room R's Redis channel is <prefix>R.
    #[arg(long, env = "CHAT_REDIS_CHANNEL_PREFIX", default_value = "chatbench.room.")]
    redis_channel_prefix: String,
    /// How long a join waits for Redis to confirm the node's subscription
    /// to the room before it reads the room's head anyway (--mode redis).
    #[arg(long, env = "CHAT_REDIS_INTEREST_WAIT", default_value = "2s", value_parser = parse_duration)]
    redis_interest_wait: Duration,
    /// A broker publish (Redis PUBLISH, JetStream publish and its ack) not
    /// done within this fails the send with store_unavailable (--mode redis, nats).
    #[arg(long, env = "CHAT_BROKER_PUBLISH_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    broker_publish_timeout: Duration,
    /// NATS server URL, e.g. nats://127.0.0.1:4222 (required with --mode nats).
    #[arg(long, env = "CHAT_NATS_URL")]
    nats_url: Option<String>,
    /// JetStream stream every node publishes to and reads (created if
    /// missing, subjects <stream>.room.>).
    #[arg(long, env = "CHAT_NATS_STREAM", default_value = "chatbench")]
    nats_stream: String,
    /// Messages older than this leave the JetStream stream (when the node creates it).
    #[arg(long, env = "CHAT_NATS_MAX_AGE", default_value = "1h", value_parser = parse_duration)]
    nats_max_age: Duration,
    /// Frames queued per connection before it is closed as a slow consumer (4008).
    #[arg(long, env = "CHAT_QUEUE_CAPACITY", default_value_t = Limits::default().queue_frames as u64, value_parser = clap::value_parser!(u64).range(1..))]
    queue_capacity: u64,
    /// Bytes queued per connection before it is closed as a slow consumer (4008).
    #[arg(long, env = "CHAT_QUEUE_BYTES", default_value_t = Limits::default().queue_bytes)]
    queue_bytes: usize,
    /// Rooms one connection may subscribe to (more: `too_many_subscriptions`).
    #[arg(long, env = "CHAT_MAX_SUBSCRIPTIONS", default_value_t = Limits::default().max_subscriptions)]
    max_subscriptions: usize,
    /// Sends of one connection waiting to be stored before the server stops reading it.
    #[arg(long, env = "CHAT_SEND_QUEUE", default_value_t = Limits::default().send_queue)]
    send_queue: usize,
    /// Bytes of sends of one connection waiting to be stored before the server stops reading it.
    #[arg(long, env = "CHAT_SEND_QUEUE_BYTES", default_value_t = Limits::default().send_queue_bytes)]
    send_queue_bytes: usize,
    /// How long one WebSocket write may block before the connection is closed (4008).
    #[arg(long, env = "CHAT_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    write_timeout: Duration,
    /// How often a connection is pinged.
    #[arg(long, env = "CHAT_PING_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) this long is closed (4002).
    #[arg(long, env = "CHAT_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Bytes of messages per history page (catch-up and GET /rooms/{room}/messages).
    #[arg(long, env = "CHAT_HISTORY_PAGE_BYTES", default_value_t = Limits::default().history_page_bytes)]
    history_page_bytes: usize,
    /// Initial WebSocket read and write buffer size per connection.
    #[arg(long, env = "CHAT_WS_BUFFER_BYTES", default_value_t = Limits::default().ws_buffer_bytes)]
    ws_buffer_bytes: usize,
    /// wtimeout of majority writes on a replica set.
    #[arg(long, env = "CHAT_MONGO_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    mongo_write_timeout: Duration,
    /// Room head hints kept per node before idle ones are dropped.
    #[arg(long, env = "CHAT_MAX_ROOM_HEADS", default_value_t = Limits::default().max_room_heads)]
    max_room_heads: usize,
    /// The MongoDB driver's connection pool size (default: the driver's 10).
    /// An open change stream holds one pooled connection while it waits.
    #[arg(long, env = "CHAT_MONGO_MAX_POOL_SIZE")]
    mongo_max_pool_size: Option<u32>,
    /// Sends one node stores (and publishes) at once, over all its connections.
    #[arg(long, env = "CHAT_MAX_INFLIGHT_WRITES", default_value_t = Limits::default().max_inflight_writes as u64, value_parser = clap::value_parser!(u64).range(1..))]
    max_inflight_writes: u64,
    /// How long a send waits for a write slot before it is answered `overloaded`.
    #[arg(long, env = "CHAT_OVERLOAD_WAIT", default_value = "5s", value_parser = parse_duration)]
    overload_wait: Duration,
    /// Change stream maxAwaitTimeMS: how long an empty getMore may wait.
    #[arg(long, env = "CHAT_CHANGE_STREAM_MAX_AWAIT", default_value = "500ms", value_parser = parse_duration)]
    change_stream_max_await: Duration,
    /// Change stream cursor batchSize (default: the server's).
    #[arg(long, env = "CHAT_CHANGE_STREAM_BATCH_SIZE")]
    change_stream_batch_size: Option<u32>,
    /// TEST ONLY: break guarantees on purpose, e.g. `drop=0.02,dup=0.01,reorder=0.01`
    /// or the flags `refuse_upgrade`, `no_ack`, `refuse_after`, `stop_fanout`.
    #[arg(long, env = "CHAT_SABOTAGE")]
    sabotage: Option<Sabotage>,
    /// `/stomp` refuses a CONNECT without this `login` and `passcode`
    /// (LOGIN:PASSCODE), with an ERROR frame. Default: no credentials asked.
    #[arg(long, env = "CHAT_STOMP_LOGIN", value_parser = parse_login)]
    stomp_login: Option<(String, String)>,
    /// A file holding the HS256 secret (at least 32 bytes; one trailing
    /// newline is ignored). With it, every WebSocket connection and history
    /// read needs a token (JWT: sub, rooms, exp) that grants its rooms; see
    /// PROTOCOL.md. Default: no authentication. The secret itself is never
    /// a flag, so it never shows in a process list or a log.
    #[arg(long, env = "CHAT_AUTH_SECRET_FILE")]
    auth_secret: Option<std::path::PathBuf>,
    /// Seed for --sabotage's dice.
    #[arg(long, env = "CHAT_SABOTAGE_SEED", default_value_t = 0)]
    sabotage_seed: u64,
}

fn parse_login(raw: &str) -> anyhow::Result<(String, String)> {
    raw.split_once(':').map(|(l, p)| (l.to_owned(), p.to_owned())).ok_or_else(|| anyhow::anyhow!("expected LOGIN:PASSCODE"))
}

fn parse_duration(raw: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(raw)
}

impl Args {
    fn config(self) -> anyhow::Result<Config> {
        let fanout = match self.mode {
            Mode::Kafka => FanoutConfig::Kafka(KafkaConfig {
                bootstrap: self.kafka_bootstrap.context("--mode kafka needs --kafka-bootstrap (or CHAT_KAFKA_BOOTSTRAP)")?,
                topic: self.kafka_topic,
                fetch_wait_max_ms: self.kafka_fetch_wait_max_ms,
            }),
            Mode::Redis => FanoutConfig::Redis(RedisConfig {
                url: self.redis_url.context("--mode redis needs --redis-url (or CHAT_REDIS_URL)")?,
                channel_prefix: self.redis_channel_prefix,
                interest_wait: self.redis_interest_wait,
                publish_timeout: self.broker_publish_timeout,
            }),
            Mode::Nats => FanoutConfig::Nats(NatsConfig {
                url: self.nats_url.context("--mode nats needs --nats-url (or CHAT_NATS_URL)")?,
                stream: self.nats_stream,
                max_age: self.nats_max_age,
                publish_timeout: self.broker_publish_timeout,
            }),
            Mode::Changestream => FanoutConfig::Changestream(ChangeStreamConfig {
                max_await: self.change_stream_max_await,
                batch_size: self.change_stream_batch_size,
            }),
        };
        let limits = Limits {
            queue_frames: self.queue_capacity as usize,
            queue_bytes: self.queue_bytes,
            max_subscriptions: self.max_subscriptions,
            send_queue: self.send_queue.max(1),
            send_queue_bytes: self.send_queue_bytes,
            write_timeout: self.write_timeout,
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            history_page_bytes: self.history_page_bytes,
            ws_buffer_bytes: self.ws_buffer_bytes,
            mongo_write_timeout: self.mongo_write_timeout,
            max_room_heads: self.max_room_heads.max(1),
            mongo_max_pool_size: self.mongo_max_pool_size,
            max_inflight_writes: self.max_inflight_writes as usize,
            overload_wait: self.overload_wait,
        };
        Ok(Config {
            mongo_uri: self.mongo_uri,
            db: self.db,
            node_id: self.node_id.unwrap_or_else(|| format!("node-{}", std::process::id())),
            fanout,
            limits,
            sabotage: self.sabotage.unwrap_or_default(),
            sabotage_seed: self.sabotage_seed,
            stomp_login: self.stomp_login,
            auth: match self.auth_secret {
                Some(path) => {
                    let mut secret = std::fs::read(&path).with_context(|| format!("--auth-secret {}: cannot read", path.display()))?;
                    if secret.last() == Some(&b'\n') {
                        secret.pop();
                    }
                    let verifier =
                        chatbench_server::auth::Verifier::new(&secret).with_context(|| format!("--auth-secret {}", path.display()))?;
                    Some(std::sync::Arc::new(verifier))
                }
                None => None,
            },
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,mongodb=warn".into()))
        .init();
    let args = Args::parse();
    let listen = args.listen;
    let config = args.config()?;
    let mongo_uri = config.mongo_uri.clone();
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening {addr}").context("writing the listening line")?;
        stdout.flush().context("flushing stdout")?;
    }
    tracing::info!(%addr, "listening");
    serve(listener, config, wait_for_signal()).await.with_context(|| format!("serving with MongoDB at {mongo_uri}"))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("could not install signal handlers; falling back to Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
