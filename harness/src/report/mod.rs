//! Results: one [`RunReport`] per run with every figure a reader needs to
//! recompute the summary (OpenMessaging Benchmark's rule), rendered as a
//! terminal table, `report.json`, `report.md` and `junit.xml`.

pub(crate) mod cause;
pub mod compare;
pub mod evaluate;
pub mod explain;
pub mod history;
pub mod hlog;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod sweep;

/// Why a result file (report.json, sweep.json) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a chatbench {what}: {source}", path.display())]
    NotJson {
        path: std::path::PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {what} schema version {found}, this chatbench reads {reads}", path.display())]
    Schema { path: std::path::PathBuf, what: &'static str, found: u32, reads: u32 },
}

/// Read and parse one JSON result file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &'static str) -> Result<T, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadError::Io { path: path.to_owned(), source })?;
    serde_json::from_str(&text).map_err(|source| ReadError::NotJson { path: path.to_owned(), what, source })
}
pub mod table;

use crate::check::latency::LatencySummary;
use crate::check::throughput::Throughput;
use crate::check::{Finding, FindingKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Version of `report.json`'s layout (see docs/report-json.md).
pub const REPORT_SCHEMA_VERSION: u32 = 2;
/// At most this many findings are listed per mode (all are counted).
pub const MAX_LISTED_FINDINGS: usize = 500;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunReport {
    pub schema_version: u32,
    pub chatbench_version: String,
    pub scenario: String,
    pub description: String,
    pub seed: u64,
    pub started_at: String,
    pub passed: bool,
    pub modes: Vec<ModeReport>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModeReport {
    pub mode: crate::subject::Subject,
    pub provider: String,
    pub backend: String,
    /// False for compat stand-ins: their latency is not MongoDB's.
    pub backend_is_real: bool,
    /// The wire the clients spoke: `json` (protocol v1) or `stomp`.
    #[serde(default)]
    pub protocol: String,
    pub nodes: u32,
    /// The workload's load; a closed loop says its latency counts from the
    /// actual send (coordinated omission).
    #[serde(default)]
    pub load: String,
    /// Where stored history was read from (the oracle for resolution and
    /// live = history).
    #[serde(default)]
    pub history_source: String,
    /// What the system declared (`ack`, `order`, `history`), e.g.
    /// `ack: none, order: per_sender, history: none`.
    #[serde(default)]
    pub guarantees: String,
    pub counts: Counts,
    pub findings_by_kind: BTreeMap<FindingKind, u64>,
    pub findings: Vec<Finding>,
    pub checks: Vec<CheckResult>,
    pub latency: LatencyReport,
    pub throughput: Throughput,
    pub drain: Drain,
    /// Counters scraped from every node's `/metrics` at the end, summed.
    #[serde(default)]
    pub server: ServerCounters,
    /// 1 s buckets from the start of sending.
    #[serde(default)]
    pub timeline: Vec<TimelineBucket>,
    /// Delivery latency percentile curve: (percentile, µs), for plots.
    #[serde(default)]
    pub delivery_curve: Vec<(f64, u64)>,
    /// Owed deliveries acked but not yet delivered, over time: (ms from
    /// the start of sending, count), Jepsen's "unseen".
    #[serde(default)]
    pub unseen: Vec<(u64, u64)>,
    /// What the generated message text looked like (`message_text`).
    #[serde(default)]
    pub message_text: String,
    /// One entry per applied fault.
    #[serde(default)]
    pub faults: Vec<FaultFigures>,
    /// Whether the load generator kept up (send lateness, loop lag, CPU).
    #[serde(default)]
    pub generator: crate::check::generator::GeneratorReport,
    /// Per process (harness, each node, each backend): CPU and memory.
    #[serde(default)]
    pub resources: Vec<ResourceSummary>,
    /// The per-second samples behind `resources` (for the HTML charts).
    #[serde(default)]
    pub resource_samples: Vec<crate::resources::ResourceSample>,
    pub notes: Vec<String>,
    /// The names of the rooms the listed findings name (by room index).
    #[serde(default)]
    pub room_names: BTreeMap<u32, String>,
    /// What most likely explains the failing checks, in a sentence each
    /// (a declaration that fails every delivery): printed beside them.
    #[serde(default)]
    pub causes: Vec<String>,
}

/// One process's CPU and memory over a mode's run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceSummary {
    pub process: String,
    pub cpu_mean_percent: f64,
    pub cpu_max_percent: f64,
    pub rss_max_kib: u64,
    /// CPU time used while sampled (each sample's share of a core times
    /// the time since the process's previous sample).
    #[serde(default)]
    pub cpu_seconds: f64,
}

impl ResourceSummary {
    /// Per process, in first-seen order.
    pub fn from_samples(samples: &[crate::resources::ResourceSample]) -> Vec<ResourceSummary> {
        let mut out: Vec<(ResourceSummary, u32)> = Vec::new();
        let mut last_t: Vec<f64> = Vec::new();
        for s in samples {
            let i = match out.iter().position(|(r, _)| r.process == s.process) {
                Some(i) => i,
                None => {
                    out.push((ResourceSummary { process: s.process.clone(), ..Default::default() }, 0));
                    last_t.push(s.t_s);
                    out.len() - 1
                }
            };
            let (r, n) = &mut out[i];
            r.cpu_seconds += s.cpu_percent / 100.0 * (s.t_s - last_t[i]).max(0.0);
            last_t[i] = s.t_s;
            r.cpu_mean_percent += s.cpu_percent;
            r.cpu_max_percent = r.cpu_max_percent.max(s.cpu_percent);
            r.rss_max_kib = r.rss_max_kib.max(s.rss_kib);
            *n += 1;
        }
        out.into_iter()
            .map(|(mut r, n)| {
                r.cpu_mean_percent /= f64::from(n.max(1));
                r
            })
            .collect()
    }
}

/// Server-side counters summed over the nodes (Prometheus `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerCounters {
    pub acks: u64,
    pub mongo_writes: u64,
    pub kafka_produces: u64,
    pub deliveries: u64,
    pub history_replays: u64,
    pub changestream_events: u64,
    pub kafka_events: u64,
    /// Publishes to Redis or JetStream (redis and nats modes).
    #[serde(default)]
    pub broker_publishes: u64,
    /// Messages the nodes read from Redis or JetStream.
    #[serde(default)]
    pub broker_events: u64,
    pub slow_consumer_closes: u64,
    /// Change streams re-opened plus Kafka consumer links that came back.
    #[serde(default)]
    pub fanout_reopens: u64,
    /// Kafka producers replaced after a fatal error.
    #[serde(default)]
    pub kafka_producer_resets: u64,
    /// Inserts that found their `seq` taken by another node (seq allocation's cost).
    #[serde(default)]
    pub seq_clashes: u64,
    /// Reads of a room's head to allocate a `seq`.
    #[serde(default)]
    pub head_reads: u64,
    /// Per node: where a message's time goes on the server side — the
    /// backend (insert → change event or Kafka record) and the server
    /// itself (fan-out → socket write).
    #[serde(default)]
    pub stages: Vec<NodeStages>,
}

/// One node's stage histograms, from its `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStages {
    pub node: u32,
    /// Insert (server wall clock, ms) → the event reached this node's fan-out.
    pub insert_to_fanout: StageHistogram,
    /// Fan-out → the live frame written to a subscriber's socket.
    pub fanout_to_socket: StageHistogram,
}

impl NodeStages {
    /// Both histograms out of one node's Prometheus text.
    pub fn from_prometheus_text(node: u32, text: &str) -> Self {
        Self {
            node,
            insert_to_fanout: StageHistogram::from_prometheus_text(text, "chat_insert_to_fanout_seconds"),
            fanout_to_socket: StageHistogram::from_prometheus_text(text, "chat_fanout_to_socket_seconds"),
        }
    }
}

/// A Prometheus histogram: cumulative counts per upper bound (seconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageHistogram {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_s: f64,
}

impl StageHistogram {
    pub fn from_prometheus_text(text: &str, name: &str) -> Self {
        let mut h = StageHistogram::default();
        for line in text.lines().filter(|l| l.starts_with(name)) {
            let Some((key, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.trim().parse::<f64>() else { continue };
            match &key[name.len()..] {
                "_count" => h.count = value as u64,
                "_sum" => h.sum_s = value,
                rest => {
                    let le = rest.strip_prefix("_bucket{le=\"").and_then(|r| r.strip_suffix("\"}"));
                    // The +Inf bucket is `count` (and JSON has no infinity).
                    if let Some(bound) = le.and_then(|le| le.parse::<f64>().ok()).filter(|b| b.is_finite()) {
                        h.buckets.push((bound, value as u64));
                    }
                }
            }
        }
        h
    }

    /// The upper bound of the bucket holding quantile `q` (seconds; None
    /// without samples, infinite past the last bound).
    pub fn quantile_le(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        Some(self.buckets.iter().find(|(_, cum)| *cum >= rank).map_or(f64::INFINITY, |(le, _)| *le))
    }
}

impl ServerCounters {
    /// External write operations (every MongoDB insert attempt + Kafka
    /// produces + Redis or JetStream publishes) per acked message.
    pub fn external_ops_per_ack(&self) -> Option<f64> {
        (self.acks > 0).then(|| (self.mongo_writes + self.kafka_produces + self.broker_publishes) as f64 / self.acks as f64)
    }

    /// Messages the nodes read from their fan-out source (change events,
    /// Kafka records, Redis or JetStream messages) per acked message: the
    /// node count where every node reads everything, fewer where a node
    /// hears only the rooms it serves.
    pub fn node_reads_per_ack(&self) -> Option<f64> {
        (self.acks > 0).then(|| (self.changestream_events + self.kafka_events + self.broker_events) as f64 / self.acks as f64)
    }

    /// Share of deliveries served from history instead of the live stream.
    pub fn history_share(&self) -> Option<f64> {
        (self.deliveries > 0).then(|| self.history_replays as f64 / self.deliveries as f64)
    }

    /// Add another set of nodes' counters (the shards of a merged run).
    pub fn add(&mut self, o: &ServerCounters) {
        self.acks += o.acks;
        self.mongo_writes += o.mongo_writes;
        self.kafka_produces += o.kafka_produces;
        self.deliveries += o.deliveries;
        self.history_replays += o.history_replays;
        self.changestream_events += o.changestream_events;
        self.kafka_events += o.kafka_events;
        self.broker_publishes += o.broker_publishes;
        self.broker_events += o.broker_events;
        self.slow_consumer_closes += o.slow_consumer_closes;
        self.fanout_reopens += o.fanout_reopens;
        self.kafka_producer_resets += o.kafka_producer_resets;
        self.seq_clashes += o.seq_clashes;
        self.head_reads += o.head_reads;
        self.stages.extend(o.stages.iter().cloned());
    }

    /// Read the counters out of Prometheus text (summing over calls).
    pub fn add_prometheus_text(&mut self, text: &str) {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut parts = line.split_whitespace();
            let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let slot = match name {
                "chat_acks_total" => &mut self.acks,
                "chat_mongo_writes_total" => &mut self.mongo_writes,
                "chat_kafka_produces_total" => &mut self.kafka_produces,
                "chat_deliveries_total" => &mut self.deliveries,
                "chat_history_replays_total" => &mut self.history_replays,
                "chat_changestream_events_total" => &mut self.changestream_events,
                "chat_kafka_events_total" => &mut self.kafka_events,
                "chat_slow_consumer_closes_total" => &mut self.slow_consumer_closes,
                "chat_broker_publishes_total" => &mut self.broker_publishes,
                "chat_broker_events_total" => &mut self.broker_events,
                "chat_changestream_reopens_total" | "chat_kafka_reconnects_total" | "chat_broker_reconnects_total" => {
                    &mut self.fanout_reopens
                }
                "chat_kafka_producer_resets_total" => &mut self.kafka_producer_resets,
                "chat_seq_clashes_total" => &mut self.seq_clashes,
                "chat_head_reads_total" => &mut self.head_reads,
                _ => continue,
            };
            *slot += value as u64;
        }
    }
}

/// What one fault did to delivery.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultFigures {
    pub action: String,
    pub node: Option<u32>,
    /// Seconds from the start of sending.
    pub at_s: f64,
    /// How long the fault lasted (e.g. until a restarted node was healthy).
    pub duration_ms: u64,
    /// From the fault's start until every subscriber had again received a
    /// message sent after the fault started (None: some never did).
    pub recovery_ms: Option<u64>,
    /// Messages sent from the fault's start until 2 s after its end whose
    /// slowest delivery exceeded the pre-fault p99.
    pub delayed: u64,
    /// Slowest delivery of those messages.
    pub max_delivery_us: u64,
    /// The pre-fault delivery p99 that `delayed` compares against.
    pub baseline_p99_us: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineBucket {
    /// Seconds from the start of sending.
    pub t_s: u64,
    pub acked: u64,
    pub delivered: u64,
    pub delivery_p50_us: u64,
    pub delivery_p99_us: u64,
    pub delivery_max_us: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    pub clients: u64,
    pub senders: u64,
    pub subscribers: u64,
    /// Connections that subscribe and send.
    #[serde(default)]
    pub chatters: u64,
    /// Distinct messages sent.
    pub sent: u64,
    pub acked: u64,
    /// Sent but never acked (indeterminate until resolved from history).
    pub unacked: u64,
    /// Unacked sends that history holds (owed like acked ones).
    #[serde(default)]
    pub resolved_stored: u64,
    /// Unacked sends history does not hold (must reach no one).
    #[serde(default)]
    pub resolved_not_stored: u64,
    /// Unacked sends (`ack: none`, no store) delivered to some subscriber:
    /// owed to every covering one (the evidence rule).
    #[serde(default)]
    pub resolved_delivered: u64,
    /// Unacked sends (`ack: none`, no store) that reached no one although
    /// their connection stayed open `confirm_after`: each covering
    /// subscriber lost them (counted among `lost` findings too).
    #[serde(default)]
    pub unconfirmed: u64,
    /// Unacked sends nothing resolves: their room's history could not be
    /// read, or (`ack: none`) they reached no one and their connection
    /// closed within `confirm_after`.
    #[serde(default)]
    pub unresolved: u64,
    /// Deliveries received (every copy).
    pub delivered: u64,
    pub error_frames: u64,
    /// Connections that closed before the run ended (then reconnected or gave up).
    pub closed_early: u64,
    #[serde(default)]
    pub reconnects: u64,
    /// `auth.intruders` (not among senders, subscribers, chatters).
    #[serde(default)]
    pub intruders: u64,
    /// Attempts intruders made, and how many were refused with a definite error.
    #[serde(default)]
    pub intruder_attempts: u64,
    #[serde(default)]
    pub intruder_refused: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencyReport {
    pub ack: LatencySummary,
    pub delivery: LatencySummary,
    /// Per owed message, until the last subscriber that owed it had it
    /// (Maelstrom's stable latency), from the scheduled send.
    #[serde(default)]
    pub stable: LatencySummary,
    /// Sends never acked: their ack samples are censored at the end of the run.
    #[serde(default)]
    pub incomplete_acks: u64,
    /// Owed deliveries that never happened: censored likewise.
    #[serde(default)]
    pub incomplete_deliveries: u64,
    /// Censored samples as a share of all samples.
    #[serde(default)]
    pub incomplete_percent: f64,
    /// Connection set-up: from a connection's first attempt (after its
    /// `workload.connect_rate` turn) to its open session, failed attempts
    /// and back-off included; every connection, reconnects too.
    #[serde(default)]
    pub connect: LatencySummary,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Drain {
    pub completed: bool,
    pub took_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    /// e.g. `exactly_once`, `liveness.ready`, `latency.delivery.p99`.
    pub name: String,
    /// False only when the check ran and failed.
    pub passed: bool,
    /// Set when the scenario turned the check off: the reason it gave.
    #[serde(default)]
    pub off: Option<String>,
    pub detail: String,
}

impl ModeReport {
    pub fn failed_checks(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.passed)
    }

    pub fn count(&self, kind: FindingKind) -> u64 {
        self.findings_by_kind.get(&kind).copied().unwrap_or(0)
    }
}

/// The sentence every report carries when a compat backend was used.
pub const COMPAT_WARNING: &str =
    "compat backends were used: their latency and throughput are not MongoDB's (or Kafka's); they prove behaviour, not speed";

impl RunReport {
    /// Stage 6 of every run (and of a merge): one report over the
    /// subjects' verdicts; it passes when every subject passed.
    pub fn new(scenario: &str, description: &str, seed: u64, started_at: String, modes: Vec<ModeReport>) -> RunReport {
        RunReport {
            schema_version: REPORT_SCHEMA_VERSION,
            chatbench_version: env!("CARGO_PKG_VERSION").to_owned(),
            scenario: scenario.to_owned(),
            description: description.to_owned(),
            seed,
            started_at,
            passed: modes.iter().all(|m| m.failed_checks().next().is_none()),
            modes,
        }
    }

    pub fn write_all(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).expect("reports serialize: plain data");
        std::fs::write(dir.join("report.json"), json + "\n")?;
        std::fs::write(dir.join("report.md"), markdown::render(self))?;
        std::fs::write(dir.join("junit.xml"), junit::render(self))?;
        std::fs::write(dir.join("report.html"), html::render(self))?;
        Ok(())
    }

    pub fn read(path: &Path) -> Result<Self, ReadError> {
        let report: RunReport = read_json(path, "report")?;
        if report.schema_version != REPORT_SCHEMA_VERSION {
            return Err(ReadError::Schema {
                path: path.to_owned(),
                what: "report",
                found: report.schema_version,
                reads: REPORT_SCHEMA_VERSION,
            });
        }
        Ok(report)
    }

    pub fn any_compat(&self) -> bool {
        self.modes.iter().any(|m| !m.backend_is_real)
    }
}

pub use crate::check::latency::fmt_us;

/// Write sweep.json, sweep.md and sweep.html into `dir`.
pub fn write_sweep(report: &sweep::SweepReport, dir: &Path) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(report).expect("sweep reports serialize: plain data");
    std::fs::write(dir.join("sweep.json"), json + "\n")?;
    std::fs::write(dir.join("sweep.md"), format!("# chatbench sweep: {}\n\n```\n{}```\n", report.scenario, sweep::render_table(report)))?;
    std::fs::write(dir.join("sweep.html"), html::render_sweep(report))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{NodeStages, ServerCounters};

    #[test]
    fn stage_histograms_are_read_per_node_and_give_bucket_bounds() {
        let text = "chat_insert_to_fanout_seconds_sum 0.9\nchat_insert_to_fanout_seconds_count 10\n\
                    chat_insert_to_fanout_seconds_bucket{le=\"0.001\"} 2\nchat_insert_to_fanout_seconds_bucket{le=\"0.002\"} 9\n\
                    chat_insert_to_fanout_seconds_bucket{le=\"0.004\"} 10\nchat_insert_to_fanout_seconds_bucket{le=\"+Inf\"} 10\n\
                    chat_fanout_to_socket_seconds_count 0\n";
        let s = NodeStages::from_prometheus_text(1, text);
        assert_eq!((s.node, s.insert_to_fanout.count, s.insert_to_fanout.buckets.len()), (1, 10, 3));
        assert_eq!(s.insert_to_fanout.quantile_le(0.5), Some(0.002));
        assert_eq!(s.insert_to_fanout.quantile_le(0.99), Some(0.004));
        assert_eq!(s.insert_to_fanout.quantile_le(0.1), Some(0.001));
        assert_eq!(s.fanout_to_socket.quantile_le(0.5), None, "no samples, no figure");
        // Reports round-trip through JSON (`compare`, `merge` read them back).
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<NodeStages>(&json).unwrap(), s);
        let past = NodeStages::from_prometheus_text(
            0,
            "chat_insert_to_fanout_seconds_count 2\nchat_insert_to_fanout_seconds_bucket{le=\"0.001\"} 1\n",
        );
        assert_eq!(past.insert_to_fanout.quantile_le(0.99), Some(f64::INFINITY), "beyond the last bound");
    }

    #[test]
    fn counters_sum_over_nodes_and_fold_both_fanout_reopen_kinds() {
        let node = "# HELP chat_acks Acks\n# TYPE chat_acks counter\nchat_acks_total 10\nchat_mongo_writes_total 10\n\
                    chat_kafka_produces_total 10\nchat_kafka_reconnects_total 1\nchat_changestream_reopens_total 0\n\
                    chat_kafka_producer_resets_total 1\nchat_connections 4\nchat_insert_to_fanout_seconds_sum 0.5\n";
        let mut c = ServerCounters::default();
        c.add_prometheus_text(node);
        c.add_prometheus_text(&node.replace("chat_changestream_reopens_total 0", "chat_changestream_reopens_total 2"));
        assert_eq!((c.acks, c.mongo_writes, c.kafka_produces), (20, 20, 20));
        assert_eq!((c.fanout_reopens, c.kafka_producer_resets), (4, 2));
        assert_eq!(c.external_ops_per_ack(), Some(2.0));
        // An old report without the new fields still reads.
        let old: ServerCounters = serde_json::from_str(
            r#"{"acks":1,"mongo_writes":1,"kafka_produces":0,"deliveries":1,"history_replays":0,"changestream_events":1,"kafka_events":0,"slow_consumer_closes":0}"#,
        )
        .unwrap();
        assert_eq!(old.fanout_reopens, 0);
    }
}
