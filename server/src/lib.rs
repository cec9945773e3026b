//! chatbench's reference chat server: WebSocket chat whose nodes fan
//! messages out through one MongoDB change stream each (or, as the
//! baseline, through Kafka). See PROTOCOL.md.
//!
//! # Layout
//! - [`serve`]: one node on a listener until `shutdown` resolves; `main.rs`
//!   only parses flags into a [`Config`].
//! - `protocol` (frames, pure), `resequencer` (per-room order, pure),
//!   `send_gate` (per-sender FIFO across failures, pure), `subscriptions`
//!   (a connection's rooms: pending, flowing, retries; pure).
//! - `ws` (one connection's socket I/O around them), `hub` (rooms →
//!   connections, bounded queues), `store` (MongoDB), `fanout/`
//!   (`changestream`, `kafka`), `http` (routes), `metrics`, `sabotage`
//!   (test-only guarantee breaking).
//!
//! Only what `main.rs` and the tests use is public; the rest is
//! `pub(crate)` (the `unreachable_pub` lint keeps it so).
#![warn(unreachable_pub)]

pub mod auth;
pub mod fanout;
mod http;
mod hub;
mod metrics;
pub mod protocol;
pub mod resequencer;
pub mod sabotage;
mod send_gate;
pub mod stomp_dialect;
pub mod store;
mod subscriptions;
mod ws;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::task::TaskTracker;

/// Every per-connection and per-node bound, each a flag with its default
/// documented in PROTOCOL.md.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Frames queued for one connection before it is closed as a slow consumer (4008).
    pub queue_frames: usize,
    /// Bytes queued for one connection before it is closed as a slow consumer.
    pub queue_bytes: usize,
    /// Rooms one connection may subscribe to (`too_many_subscriptions`).
    pub max_subscriptions: usize,
    /// Sends of one connection waiting to be stored before reading pauses.
    pub send_queue: usize,
    /// Bytes of sends of one connection waiting to be stored before reading pauses.
    pub send_queue_bytes: usize,
    /// How long one WebSocket write may block before the connection is closed (4008).
    pub write_timeout: Duration,
    /// How often the server pings an otherwise quiet connection.
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) this long is closed (4002).
    pub idle_timeout: Duration,
    /// Bytes of message bodies per history page (catch-up and `GET .../messages`).
    pub history_page_bytes: usize,
    /// The WebSocket layer's read and write buffer sizes per connection.
    pub ws_buffer_bytes: usize,
    /// `wtimeout` of majority writes on a replica set.
    pub mongo_write_timeout: Duration,
    /// Room head hints kept per node before idle ones are dropped.
    pub max_room_heads: usize,
    /// The MongoDB driver's connection pool size (None: the driver's 10).
    /// An open change stream holds one connection while it waits.
    pub mongo_max_pool_size: Option<u32>,
    /// Sends one node stores (and publishes) at once, over all connections.
    pub max_inflight_writes: usize,
    /// How long a send waits for one of those slots before it is answered
    /// `overloaded` (not stored; the client resends it later).
    pub overload_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            queue_frames: 4096,
            queue_bytes: 8 << 20,
            max_subscriptions: 100,
            send_queue: 64,
            send_queue_bytes: 1 << 20,
            write_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            history_page_bytes: 1 << 20,
            ws_buffer_bytes: 4096,
            mongo_write_timeout: Duration::from_secs(10),
            max_room_heads: 10_000,
            mongo_max_pool_size: None,
            max_inflight_writes: 32,
            overload_wait: Duration::from_secs(5),
        }
    }
}

/// One node's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub mongo_uri: String,
    pub db: String,
    /// Name in logs, metrics and stored messages.
    pub node_id: String,
    pub fanout: fanout::FanoutConfig,
    pub limits: Limits,
    pub sabotage: sabotage::Sabotage,
    pub sabotage_seed: u64,
    /// `/stomp` requires CONNECT with this `login` and `passcode` (None: any).
    pub stomp_login: Option<(String, String)>,
    /// Tokens are required and rooms authorized (None: anyone may do anything).
    pub auth: Option<Arc<auth::Verifier>>,
}

/// Everything a request handler or the fan-out task shares.
pub struct AppState {
    pub node_id: String,
    /// How stored sends reach every node (and the producer kafka mode
    /// writes them to).
    pub fanout: fanout::Fanout,
    pub store: store::Store,
    pub hub: hub::Hub,
    pub metrics: metrics::Metrics,
    /// True while the fan-out source is open (part of `/healthz`).
    pub stream_open: AtomicBool,
    /// True once the fan-out source opened the first time: `/ws` is served
    /// only from then on, so no client subscribes into a window in which
    /// nothing would reach it.
    pub ready: AtomicBool,
    pub shutdown: broadcast::Sender<()>,
    /// Set before `shutdown` is sent: a connection upgraded after the
    /// signal (it subscribed too late to receive it) closes at once.
    pub stopping: AtomicBool,
    pub limits: Limits,
    pub sabotage: sabotage::Sabotage,
    pub sabotage_seed: u64,
    pub stomp_login: Option<(String, String)>,
    /// Tokens are required and rooms authorized (None: auth is off).
    pub auth: Option<Arc<auth::Verifier>>,
    /// `--sabotage late` only: messages wait here before the hub.
    pub late_fanout: Option<tokio::sync::mpsc::Sender<fanout::Delayed>>,
    /// Every connection task is tracked: shutdown waits for all of them
    /// (a barrier, not a gauge).
    pub connections: TaskTracker,
    /// Slots for sends being stored (`--max-inflight-writes`): past the
    /// backend's capacity more concurrent writes only add contention, so a
    /// send that cannot get a slot in time is shed, not queued.
    pub writes: tokio::sync::Semaphore,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Fanout(#[from] fanout::OpenError),
    #[error("serving HTTP: {0}")]
    Http(#[source] std::io::Error),
}

/// How long connections get to send their close frames after shutdown.
const DRAIN_CONNECTIONS: Duration = Duration::from_secs(12);

/// Run one node on `listener` until `shutdown` resolves: every WebSocket is
/// then closed with 1001, and this returns once every connection is gone
/// (or after a grace period).
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let store_limits = store::StoreLimits {
        write_timeout: config.limits.mongo_write_timeout,
        max_room_heads: config.limits.max_room_heads,
        max_pool_size: config.limits.mongo_max_pool_size,
    };
    let store = store::Store::connect(&config.mongo_uri, &config.db, store_limits).await?;
    let (fanout, source) = fanout::open(&config.fanout).await?;
    let (stop, _) = broadcast::channel(1);
    let connections = TaskTracker::new();
    if config.sabotage.auth_raw_name {
        protocol::normalise_room_names();
    }
    if config.sabotage.auth_wildcard {
        protocol::accept_room_patterns();
    }
    let (late_fanout, late_queue) = match config.sabotage.late.is_zero() {
        true => (None, None),
        false => {
            let (tx, rx) = tokio::sync::mpsc::channel(fanout::LATE_QUEUE);
            (Some(tx), Some(rx))
        }
    };
    let state = Arc::new(AppState {
        node_id: config.node_id.clone(),
        fanout,
        store,
        hub: hub::Hub::default(),
        metrics: metrics::Metrics::default(),
        stream_open: AtomicBool::new(false),
        ready: AtomicBool::new(false),
        shutdown: stop.clone(),
        stopping: AtomicBool::new(false),
        limits: config.limits,
        sabotage: config.sabotage,
        sabotage_seed: config.sabotage_seed,
        stomp_login: config.stomp_login.clone(),
        auth: config.auth.clone(),
        late_fanout,
        connections: connections.clone(),
        writes: tokio::sync::Semaphore::new(config.limits.max_inflight_writes.max(1)),
    });
    if let Some(queue) = late_queue {
        tokio::spawn(fanout::late_fanout(Arc::downgrade(&state), queue));
    }
    if !state.sabotage.is_off() {
        tracing::warn!(sabotage = ?state.sabotage, "SABOTAGE ENABLED: this node breaks guarantees on purpose (test only)");
    }
    let fanout_task = tokio::spawn(fanout::run(state.clone(), source, stop.subscribe()));
    tracing::info!(node = %state.node_id, mode = state.fanout.mode().as_str(), majority = state.store.majority, "chat-server ready");
    let signal_state = state.clone();
    let served = axum::serve(listener, http::router(state.clone()))
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: closing connections with 1001");
            signal_state.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = signal_state.shutdown.send(());
        })
        .await;
    // Upgraded WebSockets outlive axum's graceful shutdown: wait until every
    // connection task has finished (each closes with 1001 on the signal).
    state.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = state.shutdown.send(());
    connections.close();
    if tokio::time::timeout(DRAIN_CONNECTIONS, connections.wait()).await.is_err() {
        tracing::warn!(left = connections.len(), "connections did not close in time");
    }
    fanout_task.abort();
    served.map_err(ServeError::Http)
}
