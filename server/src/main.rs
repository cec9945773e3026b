//! `chat-server`: flags, start-up and shutdown. The first line on stdout is
//! `listening <ip>:<port>` so a harness can start nodes on port 0.

use anyhow::{Context, bail};
use chatbench_server::fanout::kafka::KafkaConfig;
use chatbench_server::fanout::{self, Mode};
use chatbench_server::sabotage::Sabotage;
use chatbench_server::store::Store;
use chatbench_server::{AppState, http, hub, metrics};
use clap::Parser;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::broadcast;

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
    /// Frames queued per connection before it is closed as a slow consumer (4008).
    #[arg(long, env = "CHAT_QUEUE_CAPACITY", default_value_t = 4096)]
    queue_capacity: usize,
    /// TEST ONLY: break delivery guarantees on purpose, e.g. `drop=0.02,dup=0.01,reorder=0.01`.
    #[arg(long, env = "CHAT_SABOTAGE")]
    sabotage: Option<Sabotage>,
    /// Seed for --sabotage's dice.
    #[arg(long, env = "CHAT_SABOTAGE_SEED", default_value_t = 0)]
    sabotage_seed: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,mongodb=warn".into()))
        .init();
    let args = Args::parse();
    let kafka = match (args.mode, &args.kafka_bootstrap) {
        (Mode::Kafka, None) => {
            bail!("--mode kafka needs --kafka-bootstrap (or CHAT_KAFKA_BOOTSTRAP)")
        }
        (Mode::Kafka, Some(bootstrap)) => Some(KafkaConfig {
            bootstrap: bootstrap.clone(),
            topic: args.kafka_topic.clone(),
            fetch_wait_max_ms: args.kafka_fetch_wait_max_ms,
        }),
        (Mode::Changestream, _) => None,
    };
    let producer = match &kafka {
        Some(config) => {
            Some(fanout::kafka::Producer::new(config).with_context(|| format!("creating a Kafka producer for {}", config.bootstrap))?)
        }
        None => None,
    };
    if args.queue_capacity == 0 {
        bail!("--queue-capacity must be at least 1");
    }
    let sabotage = args.sabotage.unwrap_or_default();
    if !sabotage.is_off() {
        tracing::warn!(?sabotage, "SABOTAGE ENABLED: this node breaks delivery guarantees on purpose (test only)");
    }
    let node_id = args.node_id.unwrap_or_else(|| format!("node-{}", std::process::id()));
    let store = Store::connect(&args.mongo_uri, &args.db).await.with_context(|| format!("connecting to MongoDB at {}", args.mongo_uri))?;
    let (shutdown, _) = broadcast::channel(1);
    let state = Arc::new(AppState {
        node_id: node_id.clone(),
        mode: args.mode,
        store,
        hub: hub::Hub::default(),
        metrics: metrics::Metrics::default(),
        stream_open: AtomicBool::new(false),
        shutdown: shutdown.clone(),
        queue_capacity: args.queue_capacity,
        sabotage,
        sabotage_seed: args.sabotage_seed,
        kafka: producer,
    });
    let fanout_task = match kafka {
        Some(config) => tokio::spawn(fanout::kafka::run(state.clone(), config, shutdown.subscribe())),
        None => tokio::spawn(fanout::changestream::run(state.clone(), shutdown.subscribe())),
    };

    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening {addr}").context("writing the listening line")?;
        stdout.flush().context("flushing stdout")?;
    }
    tracing::info!(%addr, node = %node_id, mode = args.mode.as_str(), majority = state.store.majority, "chat-server ready");

    let signal_state = state.clone();
    axum::serve(listener, http::router(state.clone()))
        .with_graceful_shutdown(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: closing connections with 1001");
            let _ = signal_state.shutdown.send(());
        })
        .await
        .context("serving HTTP")?;
    // Upgraded WebSocket connections are not tracked by axum's graceful
    // shutdown; give them a moment to send their close frames.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while state.metrics.connections.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fanout_task.abort();
    Ok(())
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
