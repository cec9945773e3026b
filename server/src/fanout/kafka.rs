//! `kafka` fan-out, the baseline: a send is stored in MongoDB exactly as in
//! `changestream` mode, then its `msg` frame is produced to one topic keyed
//! by room (idempotent producer, `acks=all`); the client is acked only after
//! both. Every node consumes every partition by manual assignment, starting
//! at the end offsets read before `/healthz` turns ready (a per-node group
//! id is required by librdkafka; nothing is committed), and hands each frame
//! to its hub exactly as the change-stream path does.
//!
//! The payload is the finished `msg` frame, so a message is serialized once
//! for the whole cluster. Kafka orders a room only by produce order, which
//! can differ from `seq` order when two nodes write one room; the
//! per-connection resequencer (see `ws`) repairs that from history.

use crate::AppState;
use prometheus_client::metrics::counter::Counter;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::broadcast;

/// librdkafka backs off reconnects exponentially up to 10 s by default, so
/// after a broker outage with several failed attempts a node could sit out
/// seconds after the broker is back. A chat fan-out wants it back at once.
const RECONNECT_BACKOFF_MS: &str = "50";
const RECONNECT_BACKOFF_MAX_MS: &str = "1000";

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub bootstrap: String,
    pub topic: String,
    /// librdkafka `fetch.wait.max.ms`: how long a fetch may wait for data.
    /// Low by default because Kafka-API stand-ins hold fetches otherwise.
    pub fetch_wait_max_ms: u32,
}

/// The node's idempotent producer. A producer that hits a fatal error
/// (e.g. `OutOfOrderSequence`) or is fenced (`ProducerFenced`, seen on the
/// compat broker after a restart) refuses every later produce, so it is
/// replaced by a new one (which asks for a producer id again); the send that
/// failed is answered `store_unavailable` and the client resends it.
pub struct Producer {
    /// The current producer and its generation (bumped on replacement).
    current: RwLock<(u64, FutureProducer)>,
    bootstrap: String,
    topic: String,
}

impl Producer {
    pub fn new(config: &KafkaConfig) -> Result<Self, rdkafka::error::KafkaError> {
        let inner = Self::create(&config.bootstrap)?;
        Ok(Self { current: RwLock::new((0, inner)), bootstrap: config.bootstrap.clone(), topic: config.topic.clone() })
    }

    fn create(bootstrap: &str) -> Result<FutureProducer, rdkafka::error::KafkaError> {
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "10000")
            .set("reconnect.backoff.ms", RECONNECT_BACKOFF_MS)
            .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
            .create()
    }

    /// Produce one `msg` frame keyed by room; Ok once the broker acked it.
    /// `resets` counts producers replaced after a fatal error.
    pub async fn publish(&self, room: &str, frame: &str, resets: &Counter) -> Result<(), String> {
        let (generation, producer) = self.current.read().expect("producer lock").clone();
        let record = FutureRecord::to(&self.topic).key(room).payload(frame);
        match producer.send(record, Duration::from_secs(10)).await {
            Ok(_) => Ok(()),
            Err((e, _)) => {
                // A fenced producer (a newer one holds its producer id) fails
                // every later message too, although librdkafka does not raise
                // it as fatal for a non-transactional producer.
                let fenced = e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::ProducerFenced);
                if let Some((code, reason)) = producer.client().fatal_error() {
                    self.replace(generation, resets, &format!("{code:?}: {reason}"));
                } else if fenced {
                    self.replace(generation, resets, "ProducerFenced");
                }
                Err(format!("Kafka produce to {} failed: {e}", self.topic))
            }
        }
    }

    /// Replace the producer of `generation` (once, however many sends saw
    /// its fatal error).
    fn replace(&self, generation: u64, resets: &Counter, why: &str) {
        let mut current = self.current.write().expect("producer lock");
        if current.0 != generation {
            return;
        }
        match Self::create(&self.bootstrap) {
            Ok(fresh) => {
                *current = (generation + 1, fresh);
                resets.inc();
                tracing::error!(fatal = why, "the Kafka producer hit a fatal error; replaced it with a new one");
            }
            Err(e) => tracing::error!(fatal = why, error = %e, "the Kafka producer hit a fatal error and could not be replaced"),
        }
    }
}

/// The fields of a `msg` frame the hub routes by.
#[derive(Deserialize)]
struct Route<'a> {
    room: &'a str,
    seq: u64,
}

pub async fn run(state: Arc<AppState>, config: KafkaConfig, mut shutdown: broadcast::Receiver<()>) {
    // Set-up (metadata, end offsets, assignment) is retried until the
    // broker answers; after that librdkafka reconnects by itself and the
    // consumer's [`Link`] context tracks whether the broker is reachable.
    let mut backoff = Duration::from_millis(100);
    let consumer = loop {
        match assign(&state, &config) {
            Ok(consumer) => break consumer,
            Err(e) => {
                state.stream_open.store(false, Ordering::SeqCst);
                tracing::warn!(error = %e, ?backoff, "could not set up the Kafka consumer; retrying");
                tokio::select! {
                    _ = shutdown.recv() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    };
    state.stream_open.store(true, Ordering::SeqCst);
    loop {
        let received = tokio::select! {
            _ = shutdown.recv() => return,
            received = consumer.recv() => received,
        };
        match received {
            Ok(message) => {
                if let Some(payload) = message.payload() {
                    fan_out(&state, payload);
                }
            }
            // librdkafka retries broker errors itself; log and go on.
            Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
        }
    }
}

/// How often librdkafka reports broker states to [`Link`].
const STATS_INTERVAL_MS: u32 = 250;

/// The consumer's context: whether its broker connection is up, from
/// librdkafka's statistics (every [`STATS_INTERVAL_MS`]) and error events.
/// This drives `/healthz` (`fanout: closed` while the broker is
/// unreachable) and, when the link comes back, asks every connection to
/// re-check its rooms against history — what the change stream does after
/// a re-open — so nothing the broker lost or a node missed stays missing.
pub struct Link {
    state: Arc<AppState>,
    up: AtomicBool,
}

impl Link {
    fn mark(&self, up: bool) {
        let was = self.up.swap(up, Ordering::SeqCst);
        self.state.stream_open.store(up, Ordering::SeqCst);
        match (was, up) {
            (false, true) => {
                self.state.metrics.kafka_reconnects.inc();
                self.state.hub.request_resync();
                tracing::info!("Kafka broker reachable again; subscribers re-check history");
            }
            (true, false) => tracing::warn!("Kafka broker unreachable; /healthz reports fanout closed"),
            _ => {}
        }
    }
}

impl ClientContext for Link {
    fn stats(&self, statistics: Statistics) {
        // Bootstrap entries (nodeid -1) are only used to learn the cluster.
        let mut brokers = statistics.brokers.values().filter(|b| b.nodeid >= 0).peekable();
        if brokers.peek().is_some() {
            self.mark(brokers.any(|b| b.state == "UP"));
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode::AllBrokersDown;
        if error.rdkafka_error_code() == Some(AllBrokersDown) {
            self.mark(false);
        }
        tracing::warn!(%error, reason, "Kafka client error");
    }
}

impl ConsumerContext for Link {}

/// A consumer assigned every partition of the topic at its current end.
fn assign(state: &Arc<AppState>, config: &KafkaConfig) -> Result<StreamConsumer<Link>, String> {
    // Up: assignment below only succeeds once the broker answered.
    let link = Link { state: state.clone(), up: AtomicBool::new(true) };
    let consumer: StreamConsumer<Link> = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap)
        .set("group.id", format!("chat-server-{}-{}", state.node_id, std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "latest")
        .set("fetch.wait.max.ms", config.fetch_wait_max_ms.to_string())
        .set("statistics.interval.ms", STATS_INTERVAL_MS.to_string())
        .set("reconnect.backoff.ms", RECONNECT_BACKOFF_MS)
        .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
        .create_with_context(link)
        .map_err(|e| format!("creating the consumer: {e}"))?;
    let timeout = Duration::from_secs(5);
    let metadata = tokio::task::block_in_place(|| consumer.fetch_metadata(Some(&config.topic), timeout))
        .map_err(|e| format!("reading metadata of topic {}: {e}", config.topic))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == config.topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!("topic {} does not exist or has no partitions (create it first)", config.topic));
    }
    let mut assignment = TopicPartitionList::new();
    for p in partitions {
        let (_, high) = tokio::task::block_in_place(|| consumer.fetch_watermarks(&config.topic, p, timeout))
            .map_err(|e| format!("reading the end offset of {}[{p}]: {e}", config.topic))?;
        assignment
            .add_partition_offset(&config.topic, p, Offset::Offset(high))
            .map_err(|e| format!("assigning {}[{p}]: {e}", config.topic))?;
    }
    consumer.assign(&assignment).map_err(|e| format!("assigning partitions: {e}"))?;
    Ok(consumer)
}

fn fan_out(state: &AppState, payload: &[u8]) {
    state.metrics.kafka_events.inc();
    let Ok(route) = serde_json::from_slice::<Route>(payload) else {
        tracing::error!("Kafka payload is not a msg frame; skipped");
        return;
    };
    let Ok(text) = std::str::from_utf8(payload) else {
        return;
    };
    let frame = axum::extract::ws::Utf8Bytes::from(text.to_owned());
    super::hand_to_hub(state, route.room, route.seq, &frame);
}
