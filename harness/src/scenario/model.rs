//! The scenario file's data model: what a run does, deserialized straight
//! from YAML. Every struct denies unknown keys; durations are human strings
//! (`10s`, `250ms`) and become `std::time::Duration` here.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::time::Duration;

/// A duration written as a human string: `10s`, `250ms`, `1m 30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        humantime::parse_duration(raw.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{raw:?} is not a duration like 10s or 250ms: {e}"
                ))
            })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "HumanDuration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration such as `10s`, `250ms` or `1m 30s`.",
            "pattern": "^\\s*[0-9]+\\s*[a-zµ]+(\\s*[0-9]+\\s*[a-zµ]+)*\\s*$"
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in reports and result folder names.
    pub name: String,
    /// What the scenario proves.
    #[serde(default)]
    pub description: String,
    pub topology: Topology,
    /// Server fan-out modes to run with the identical workload and seed.
    #[serde(default = "default_modes")]
    pub modes: Vec<Mode>,
    pub workload: Workload,
    /// Timed fault actions (filled in by the faults issue; no kinds yet).
    #[serde(default)]
    pub faults: Vec<Fault>,
    #[serde(default)]
    pub checks: Checks,
}

fn default_modes() -> Vec<Mode> {
    vec![Mode::Changestream]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Changestream,
    Kafka,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Changestream => "changestream",
            Mode::Kafka => "kafka",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Number of chat-server nodes.
    pub nodes: u32,
    #[serde(default)]
    pub mongo: MongoTopology,
    /// The Kafka broker for `kafka` mode.
    #[serde(default)]
    pub kafka: KafkaTopology,
    /// Which provider starts the backends (`--provider` overrides it).
    #[serde(default)]
    pub provider: ProviderChoice,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MongoTopology {
    /// Replica-set members (1 or 3).
    #[serde(default = "one")]
    pub members: u32,
    /// Connection string, required with `provider: external`.
    #[serde(default)]
    pub uri: Option<String>,
}

impl Default for MongoTopology {
    fn default() -> Self {
        Self {
            members: 1,
            uri: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaTopology {
    /// Bootstrap servers, required with `provider: external` in kafka mode.
    #[serde(default)]
    pub bootstrap: Option<String>,
    /// Partitions of the messages topic (keyed by room).
    #[serde(default = "default_partitions")]
    pub partitions: u32,
}

fn default_partitions() -> u32 {
    4
}

impl Default for KafkaTopology {
    fn default() -> Self {
        Self {
            bootstrap: None,
            partitions: default_partitions(),
        }
    }
}

fn one() -> u32 {
    1
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ProviderChoice {
    /// The first provider that works here: docker, process, compat.
    #[default]
    Auto,
    Compat,
    Process,
    Docker,
    External,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub rooms: u32,
    pub subscribers_per_room: u32,
    pub senders_per_room: u32,
    #[serde(default)]
    pub placement: Placement,
    /// Open loop (a fixed total rate) or closed loop (send after ack).
    pub load: Load,
    #[serde(default)]
    pub message_bytes: MessageBytes,
    pub duration: HumanDuration,
    /// Messages scheduled before this point are sent but left out of latency figures.
    #[serde(default = "zero")]
    pub warmup: HumanDuration,
    /// How long to wait after the last send for deliveries to arrive.
    #[serde(default = "default_drain")]
    pub drain_timeout: HumanDuration,
    /// Subscribers that join after the start and catch up with `after`.
    #[serde(default)]
    pub late_subscribers: Option<LateSubscribers>,
}

fn zero() -> HumanDuration {
    HumanDuration(Duration::ZERO)
}

fn default_drain() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

impl Workload {
    /// Whether pinned placement names a node index that `nodes` lacks.
    pub fn placement_needs_more_nodes(&self, nodes: u32) -> bool {
        match &self.placement {
            Placement::Pinned {
                senders,
                subscribers,
            } => senders.iter().chain(subscribers).any(|&n| n >= nodes),
            _ => false,
        }
    }
}

/// Where client connections go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Placement {
    /// Connection i goes to node i mod nodes (senders and subscribers interleaved).
    #[default]
    RoundRobin,
    /// Each connection picks a node at random from the seed.
    Random,
    /// Senders go to the listed nodes, subscribers to theirs (each cycled).
    Pinned {
        senders: Vec<u32>,
        subscribers: Vec<u32>,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Load {
    /// Open loop: messages/s in total over all senders, on a fixed schedule.
    /// Latency counts from the scheduled send time (no coordinated omission).
    Open { rate_per_s: f64 },
    /// Closed loop: each sender keeps `in_flight` unacked sends outstanding.
    Closed { in_flight: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum MessageBytes {
    Fixed(u32),
    Range { min: u32, max: u32 },
}

impl Default for MessageBytes {
    fn default() -> Self {
        MessageBytes::Fixed(64)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LateSubscribers {
    /// Late subscribers per room.
    pub per_room: u32,
    /// When they join, from the start of the workload.
    pub join_at: HumanDuration,
    /// They subscribe with `after: this` (0 = replay the whole room).
    #[serde(default)]
    pub after: u64,
}

/// A timed fault action. No kinds exist yet: the faults issue adds them, and
/// any kind given now is rejected by name.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub at: HumanDuration,
    pub action: FaultKind,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    #[serde(default = "yes")]
    pub exactly_once: bool,
    #[serde(default)]
    pub ordering: OrderingChecks,
    #[serde(default = "yes")]
    pub live_equals_history: bool,
    #[serde(default)]
    pub latency: LatencyChecks,
    #[serde(default)]
    pub min_throughput: Option<MinThroughput>,
}

impl Default for Checks {
    fn default() -> Self {
        Self {
            exactly_once: true,
            ordering: OrderingChecks::default(),
            live_equals_history: true,
            latency: LatencyChecks::default(),
            min_throughput: None,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderingChecks {
    #[serde(default = "yes")]
    pub per_room_total: bool,
    #[serde(default = "yes")]
    pub per_sender_fifo: bool,
}

impl Default for OrderingChecks {
    fn default() -> Self {
        Self {
            per_room_total: true,
            per_sender_fifo: true,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyChecks {
    /// Ceilings on send → ack latency.
    #[serde(default)]
    pub ack: Percentiles,
    /// Ceilings on send → delivery latency (every subscriber).
    #[serde(default)]
    pub delivery: Percentiles,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Percentiles {
    pub p50: Option<HumanDuration>,
    pub p99: Option<HumanDuration>,
    pub p999: Option<HumanDuration>,
    pub max: Option<HumanDuration>,
}

impl Percentiles {
    /// (label, quantile, ceiling) for each ceiling that is set.
    pub fn ceilings(&self) -> Vec<(&'static str, f64, Duration)> {
        [
            ("p50", 0.5, self.p50),
            ("p99", 0.99, self.p99),
            ("p999", 0.999, self.p999),
            ("max", 1.0, self.max),
        ]
        .into_iter()
        .filter_map(|(label, q, d)| d.map(|d| (label, q, d.0)))
        .collect()
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MinThroughput {
    /// Acked messages per second, at least.
    pub acked_per_s: Option<f64>,
    /// Deliveries (message × subscriber) per second, at least.
    pub delivered_per_s: Option<f64>,
}
