//! Fan-out: how a node learns of messages stored by any node and hands them
//! to its hub. `changestream` watches one MongoDB change stream per node;
//! `kafka` (the baseline) writes to MongoDB and produces to a topic that
//! every node consumes; `redis` publishes on a channel per room that only
//! the nodes serving the room subscribe to; `nats` publishes to a JetStream
//! stream every node reads. All end in the same hub and resequencer.
//!
//! A backend is one file here plus one variant of [`Fanout`] (what sends
//! and joins see), of [`FanoutConfig`] (its flags) and of [`Source`] (what
//! the node's fan-out task owns).

pub mod changestream;
pub mod kafka;
pub mod nats;
pub mod redis;

use crate::AppState;
use axum::extract::ws::Utf8Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::broadcast;

pub use chatbench_wire::Mode;

/// A running node's fan-out, as sends and joins see it: the broker modes
/// also publish every stored send.
pub enum Fanout {
    Changestream,
    Kafka(kafka::Producer),
    Redis(redis::Redis),
    Nats(nats::Nats),
}

/// Why a stored send could not be handed to the broker (the send is
/// answered `store_unavailable` and the client resends it).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Kafka(#[from] kafka::PublishError),
    #[error(transparent)]
    Redis(#[from] redis::PublishError),
    #[error(transparent)]
    Nats(#[from] nats::PublishError),
}

impl Fanout {
    pub fn mode(&self) -> Mode {
        match self {
            Fanout::Changestream => Mode::Changestream,
            Fanout::Kafka(_) => Mode::Kafka,
            Fanout::Redis(_) => Mode::Redis,
            Fanout::Nats(_) => Mode::Nats,
        }
    }

    /// Hand a stored message (its `msg` frame) to the broker; nothing to do
    /// in `changestream` mode, where the insert is the publication. Called
    /// for resends too: the first publish may be the one that failed.
    pub async fn publish(&self, state: &crate::AppState, message: &crate::protocol::ChatMessage) -> Result<(), PublishError> {
        let frame = || crate::protocol::ServerFrame::Msg(message).to_json();
        let room = message.room.as_str();
        match self {
            Fanout::Changestream => return Ok(()),
            Fanout::Kafka(kafka) => {
                state.metrics.kafka_produces.inc();
                kafka.publish(room, &frame(), &state.metrics.kafka_producer_resets).await?;
            }
            Fanout::Redis(redis) => {
                state.metrics.broker_publishes.inc();
                redis.publish(room, &frame()).await?;
            }
            Fanout::Nats(nats) => {
                state.metrics.broker_publishes.inc();
                nats.publish(room, message.id.as_str(), &frame()).await?;
            }
        }
        Ok(())
    }

    /// A connection of this node joined `room`. Resolves once the node hears
    /// the room live, so a head read after it misses nothing: at once where
    /// every node reads every message; in `redis` mode once the node's
    /// subscription to the room is confirmed. Registered before it returns.
    pub fn join(&self, room: &str) -> futures::future::BoxFuture<'static, ()> {
        match self {
            Fanout::Redis(redis) => Box::pin(redis.join(room)),
            _ => Box::pin(std::future::ready(())),
        }
    }

    /// A connection of this node left `room` (or closed while in it).
    pub fn leave(&self, room: &str) {
        if let Fanout::Redis(redis) = self {
            redis.leave(room);
        }
    }
}

/// The fan-out of one node, with what it needs.
#[derive(Debug, Clone)]
pub enum FanoutConfig {
    Changestream(changestream::ChangeStreamConfig),
    Kafka(kafka::KafkaConfig),
    Redis(redis::RedisConfig),
    Nats(nats::NatsConfig),
}

impl FanoutConfig {
    pub fn mode(&self) -> Mode {
        match self {
            FanoutConfig::Changestream(_) => Mode::Changestream,
            FanoutConfig::Kafka(_) => Mode::Kafka,
            FanoutConfig::Redis(_) => Mode::Redis,
            FanoutConfig::Nats(_) => Mode::Nats,
        }
    }
}

/// What the node's fan-out task owns: where it hears stored messages.
pub enum Source {
    Changestream(changestream::ChangeStreamConfig),
    Kafka(kafka::KafkaConfig),
    Redis(redis::Subscriber),
    Nats(nats::Consumer),
}

/// Why a node's fan-out could not be set up (before it serves anything).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("creating the Kafka producer for {bootstrap}: {source}")]
    Kafka {
        bootstrap: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("Redis URL {url:?}: {source}")]
    Redis {
        url: String,
        #[source]
        source: ::redis::RedisError,
    },
    #[error("NATS at {url}: {source}")]
    Nats {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
}

/// Set up the node's side of its fan-out backend. Brokers that are down
/// are not an error here: the node starts and reports `fanout: closed`
/// until its source opens.
pub async fn open(config: &FanoutConfig) -> Result<(Fanout, Source), OpenError> {
    Ok(match config {
        FanoutConfig::Changestream(c) => (Fanout::Changestream, Source::Changestream(*c)),
        FanoutConfig::Kafka(k) => {
            let producer = kafka::Producer::new(k).map_err(|source| OpenError::Kafka { bootstrap: k.bootstrap.clone(), source })?;
            (Fanout::Kafka(producer), Source::Kafka(k.clone()))
        }
        FanoutConfig::Redis(r) => {
            let (redis, subscriber) = redis::open(r).map_err(|source| OpenError::Redis { url: r.url.clone(), source })?;
            (Fanout::Redis(redis), Source::Redis(subscriber))
        }
        FanoutConfig::Nats(n) => {
            let (nats, consumer) = nats::open(n).await.map_err(|source| OpenError::Nats { url: n.url.clone(), source })?;
            (Fanout::Nats(nats), Source::Nats(consumer))
        }
    })
}

/// Run the node's fan-out until shutdown.
pub async fn run(state: Arc<AppState>, source: Source, shutdown: broadcast::Receiver<()>) {
    match source {
        Source::Changestream(c) => changestream::run(state, c, shutdown).await,
        Source::Kafka(k) => kafka::run(state, k, shutdown).await,
        Source::Redis(r) => redis::run(state, r, shutdown).await,
        Source::Nats(n) => nats::run(state, n, shutdown).await,
    }
}

/// The source is open (or not): `/healthz` follows it, and the first open
/// lets `/ws` serve clients.
fn set_open(state: &AppState, open: bool) {
    state.stream_open.store(open, Ordering::SeqCst);
    if open {
        state.ready.store(true, Ordering::SeqCst);
    }
}

/// Hand one serialized message to the node's hub (both fan-out modes end
/// here). Test-only sabotage: `stop_fanout` drops it, `late` hands it over
/// that much later (in order), `leak` hands it to every connection.
pub fn hand_to_hub(state: &AppState, room: &str, seq: u64, frame: &Utf8Bytes) {
    if state.sabotage.stop_fanout {
        return;
    }
    if let Some(late) = &state.late_fanout {
        let item = Delayed { due: tokio::time::Instant::now() + state.sabotage.late, room: room.to_owned(), seq, frame: frame.clone() };
        if late.try_send(item).is_err() {
            tracing::error!(room, seq, "sabotage late: the delay queue is full; message dropped");
        }
        return;
    }
    fan_out(state, room, seq, frame);
}

/// The fields of a `msg` frame the hub routes by.
#[derive(serde::Deserialize)]
struct Route<'a> {
    room: &'a str,
    seq: u64,
    #[serde(default)]
    ts_ms: i64,
}

/// Hand one `msg` frame a broker delivered (`from` names it in logs) to the
/// hub; a payload that is not one is counted and skipped.
pub fn hand_frame_to_hub(state: &AppState, payload: &[u8], from: &str) {
    let (Ok(route), Ok(text)) = (serde_json::from_slice::<Route>(payload), std::str::from_utf8(payload)) else {
        state.metrics.skipped_events.inc();
        tracing::error!(from, "a {from} payload is not a msg frame; skipped");
        return;
    };
    let lag_ms = (crate::store::now_ms() - route.ts_ms).max(0);
    state.metrics.insert_to_fanout_seconds.observe(lag_ms as f64 / 1000.0);
    let frame = Utf8Bytes::from(text.to_owned());
    state.store.observe(route.room, route.seq);
    hand_to_hub(state, route.room, route.seq, &frame);
}

fn fan_out(state: &AppState, room: &str, seq: u64, frame: &Utf8Bytes) {
    if state.sabotage.leak {
        state.hub.fanout_to_all(room, seq, frame);
    } else {
        state.hub.fanout(room, seq, frame);
    }
    if state.sabotage.auth_wildcard {
        state.hub.fanout_to_patterns(room, seq, frame);
    }
}

/// A message held back by `--sabotage late`.
pub struct Delayed {
    due: tokio::time::Instant,
    room: String,
    seq: u64,
    frame: Utf8Bytes,
}

/// Messages `--sabotage late` holds back (test only).
pub const LATE_QUEUE: usize = 65_536;

/// Hand each held-back message to the hub when it is due, in order; ends
/// when the node's state is gone.
pub async fn late_fanout(state: std::sync::Weak<AppState>, mut queue: tokio::sync::mpsc::Receiver<Delayed>) {
    while let Some(item) = queue.recv().await {
        tokio::time::sleep_until(item.due).await;
        let Some(state) = state.upgrade() else { return };
        fan_out(&state, &item.room, item.seq, &item.frame);
    }
}

/// Exponential backoff between re-opens of a fan-out source. It is reset
/// only once a source stayed healthy for a while, so a source that opens
/// and fails at once is not re-opened in a hot loop.
#[derive(Debug)]
pub struct Backoff {
    current: Duration,
    first: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { current: first, first, max }
    }

    /// The pause to take now; the next one doubles (up to the cap).
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.current;
        self.current = (self.current * 2).min(self.max);
        pause
    }

    pub fn reset(&mut self) {
        self.current = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let pauses: Vec<u128> = (0..5).map(|_| b.next_pause().as_millis()).collect();
        assert_eq!(pauses, [50, 100, 200, 300, 300]);
        b.reset();
        assert_eq!(b.next_pause(), Duration::from_millis(50));
    }
}
