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
//! per-connection resequencer repairs that from history.
//!
//! Nothing is skipped silently: an offset out of range (records deleted
//! under the consumer) is an error here, not a quiet jump to the end — the
//! node re-assigns at the end offsets and every connection re-checks its
//! rooms against history. Partitions added to the topic later are picked up
//! (from their beginning) by a metadata check every [`PARTITION_REFRESH`].

use super::set_open;
use crate::AppState;
use prometheus_client::metrics::counter::Counter;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::broadcast;

/// How often the topic's metadata is read again for new partitions.
pub const PARTITION_REFRESH: Duration = Duration::from_secs(10);

/// Why a produce failed (the send is answered `store_unavailable`).
#[derive(Debug, thiserror::Error)]
#[error("Kafka produce to {topic} failed: {source}")]
pub struct PublishError {
    topic: String,
    #[source]
    source: rdkafka::error::KafkaError,
}

/// Why the consumer could not be set up (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("{what}: {source}")]
    Kafka {
        what: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("topic {0} does not exist or has no partitions (create it first)")]
    NoTopic(String),
}

fn kafka_err(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> ConsumerError {
    let what = what.into();
    move |source| ConsumerError::Kafka { what, source }
}

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
    pub async fn publish(&self, room: &str, frame: &str, resets: &Counter) -> Result<(), PublishError> {
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
                Err(PublishError { topic: self.topic.clone(), source: e })
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

pub async fn run(state: Arc<AppState>, config: KafkaConfig, mut shutdown: broadcast::Receiver<()>) {
    // Set-up (metadata, end offsets, assignment) is retried until the
    // broker answers; after that librdkafka reconnects by itself and the
    // consumer's [`Link`] context tracks whether the broker is reachable.
    let Some(consumer) = assign_until_done(&state, &config, &mut shutdown).await else { return };
    set_open(&state, true);
    let mut refresh = tokio::time::interval(PARTITION_REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.tick().await;
    loop {
        let received = tokio::select! {
            _ = shutdown.recv() => return,
            _ = refresh.tick() => {
                if let Err(e) = add_new_partitions(&consumer, &config) {
                    tracing::warn!(error = %e, "could not check the topic for new partitions");
                }
                continue;
            }
            received = consumer.recv() => received,
        };
        match received {
            Ok(message) => {
                if let Some(payload) = message.payload() {
                    fan_out(&state, payload);
                }
            }
            Err(rdkafka::error::KafkaError::MessageConsumption(code)) if is_offset_reset(code) => {
                // Records were deleted under the consumer: never skip them
                // silently. Start again at the end and let every connection
                // fill what it missed from MongoDB history.
                tracing::error!(?code, "Kafka offset out of range; re-assigning at the end offsets, subscribers re-sync from history");
                state.metrics.kafka_offset_resets.inc();
                if let Err(e) = assign_all(&consumer, &config) {
                    tracing::warn!(error = %e, "re-assigning after an offset reset failed; the next refresh retries");
                }
                state.hub.request_resync();
            }
            // librdkafka retries broker errors itself; log and go on.
            Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
        }
    }
}

fn is_offset_reset(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode::{AutoOffsetReset, OffsetOutOfRange};
    matches!(code, AutoOffsetReset | OffsetOutOfRange)
}

async fn assign_until_done(
    state: &Arc<AppState>,
    config: &KafkaConfig,
    shutdown: &mut broadcast::Receiver<()>,
) -> Option<StreamConsumer<Link>> {
    let mut backoff = super::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        match consumer(state, config).and_then(|c| assign_all(&c, config).map(|()| c)) {
            Ok(consumer) => return Some(consumer),
            Err(e) => {
                set_open(state, false);
                let pause = backoff.next_pause();
                tracing::warn!(error = %e, ?pause, "could not set up the Kafka consumer; retrying");
                tokio::select! {
                    _ = shutdown.recv() => return None,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
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
        // Only `/healthz`: serving `/ws` waits for the assignment (in `run`).
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

/// A consumer with the node's context; nothing assigned yet.
fn consumer(state: &Arc<AppState>, config: &KafkaConfig) -> Result<StreamConsumer<Link>, ConsumerError> {
    // Up: assignment only succeeds once the broker answered.
    let link = Link { state: state.clone(), up: AtomicBool::new(true) };
    ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap)
        .set("group.id", format!("chat-server-{}-{}", state.node_id, std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Never jump silently: an out-of-range offset is an error we handle.
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", config.fetch_wait_max_ms.to_string())
        .set("statistics.interval.ms", STATS_INTERVAL_MS.to_string())
        .set("reconnect.backoff.ms", RECONNECT_BACKOFF_MS)
        .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
        .create_with_context(link)
        .map_err(kafka_err("creating the consumer"))
}

/// The topic's partitions as the broker reports them now.
fn partitions(consumer: &StreamConsumer<Link>, topic: &str) -> Result<Vec<i32>, ConsumerError> {
    let metadata = tokio::task::block_in_place(|| consumer.fetch_metadata(Some(topic), Duration::from_secs(5)))
        .map_err(kafka_err(format!("reading metadata of topic {topic}")))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(ConsumerError::NoTopic(topic.to_owned()));
    }
    Ok(partitions)
}

/// Assign every partition of the topic at its current end offset (read
/// now, so nothing produced from here on is missed), replacing any
/// assignment.
fn assign_all(consumer: &StreamConsumer<Link>, config: &KafkaConfig) -> Result<(), ConsumerError> {
    let topic = &config.topic;
    let mut assignment = TopicPartitionList::new();
    for p in partitions(consumer, topic)? {
        let (_, high) = tokio::task::block_in_place(|| consumer.fetch_watermarks(topic, p, Duration::from_secs(5)))
            .map_err(kafka_err(format!("reading the end offset of {topic}[{p}]")))?;
        assignment.add_partition_offset(topic, p, Offset::Offset(high)).map_err(kafka_err(format!("assigning {topic}[{p}]")))?;
    }
    consumer.assign(&assignment).map_err(kafka_err("assigning partitions"))
}

/// Partitions added to the topic since the assignment: consume them from
/// their beginning (everything in them was produced after they appeared).
fn add_new_partitions(consumer: &StreamConsumer<Link>, config: &KafkaConfig) -> Result<usize, ConsumerError> {
    let topic = &config.topic;
    let assigned = consumer.assignment().map_err(kafka_err("reading the assignment"))?;
    let known: std::collections::HashSet<i32> = assigned.elements_for_topic(topic).iter().map(|e| e.partition()).collect();
    let mut added = TopicPartitionList::new();
    for p in partitions(consumer, topic)?.into_iter().filter(|p| !known.contains(p)) {
        added.add_partition_offset(topic, p, Offset::Beginning).map_err(kafka_err(format!("assigning {topic}[{p}]")))?;
    }
    let n = added.count();
    if n > 0 {
        consumer.incremental_assign(&added).map_err(kafka_err("assigning new partitions"))?;
        tracing::info!(topic, added = n, "consuming partitions added to the topic");
    }
    Ok(n)
}

fn fan_out(state: &AppState, payload: &[u8]) {
    state.metrics.kafka_events.inc();
    super::hand_frame_to_hub(state, payload, "Kafka");
}
