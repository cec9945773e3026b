//! One `chatbench run`: for each mode, fresh backends and nodes, the
//! workload, history read-back, teardown, then checks and reports.
//! Everything started here is owned by a guard, so an error, a panic or a
//! dropped future (Ctrl-C) tears it down.

use crate::client::{self, Controls, Shared, plan_clients};
use crate::cluster::{Cluster, ClusterError, ClusterSpec};
use crate::nemesis::{self, Targets};
use crate::provider::ProviderError;
use crate::provider::kafka::{self, KafkaBackend, KafkaLink, KafkaRequest};
use crate::provider::mongo::{self, MongoRequest};
use crate::proxy::FaultProxy;
use crate::report::evaluate::{self, evaluate};
use crate::report::{Drain, ModeReport, REPORT_SCHEMA_VERSION, RunReport, ServerCounters};
use crate::scenario::{LinkTarget, Mode, ProviderChoice, Scenario};
use crate::trace::{Clock, FOREIGN_MSG, MsgNo, RoomHistory, TRACE_VERSION, Trace, TraceMeta, parse_wire_id};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::Mutex;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub modes: Vec<Mode>,
    pub provider: ProviderChoice,
    pub mongo_uri: Option<String>,
    pub kafka_bootstrap: Option<String>,
    pub out_dir: PathBuf,
    pub seed: u64,
    pub quiet: bool,
    pub server_bin: PathBuf,
    /// Extra flags for every node (test-only sabotage goes here).
    pub server_args: Vec<String>,
}

/// Why a run could not produce a verdict (exit code 3).
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("node {node} died during the run ({status}); see {log}")]
    NodeDied { node: usize, status: String, log: String },
    #[error("fault {action} could not be applied: {why}")]
    Fault { action: String, why: String },
    #[error("writing results to {path}: {source}")]
    Output {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub async fn run(scenario: &Scenario, options: &RunOptions) -> Result<RunReport, InfraError> {
    let output = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |source| InfraError::Output { path, source }
    };
    std::fs::create_dir_all(&options.out_dir).map_err(output(&options.out_dir))?;
    let started_at = chrono::Utc::now().to_rfc3339();
    let mut modes = Vec::new();
    for &mode in &options.modes {
        let dir = options.out_dir.join(mode.as_str());
        std::fs::create_dir_all(&dir).map_err(output(&dir))?;
        modes.push(run_mode(scenario, options, mode, &dir).await?);
    }
    let passed = modes.iter().all(|m| m.failed_checks().next().is_none());
    let report = RunReport {
        schema_version: REPORT_SCHEMA_VERSION,
        chatbench_version: env!("CARGO_PKG_VERSION").to_owned(),
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        seed: options.seed,
        started_at,
        passed,
        modes,
    };
    report.write_all(&options.out_dir).map_err(output(&options.out_dir))?;
    Ok(report)
}

async fn run_mode(scenario: &Scenario, options: &RunOptions, mode: Mode, dir: &std::path::Path) -> Result<ModeReport, InfraError> {
    let topology = &scenario.topology;
    let request = MongoRequest {
        members: topology.mongo.members,
        uri: options.mongo_uri.clone().or_else(|| topology.mongo.uri.clone()),
        // A MongoDB restart needs data that survives it.
        persistent: scenario.may_restart_mongo(),
    };
    tracing::info!(mode = mode.as_str(), provider = ?options.provider, "starting MongoDB");
    let backend = mongo::start(options.provider, &request, dir).await?;
    let (provider, backend_version, backend_is_real) =
        (backend.provider.as_str().to_owned(), backend.version.clone(), backend.is_real_mongodb);
    let kafka = match mode {
        Mode::Kafka => {
            let request = KafkaRequest {
                topic: "chatbench.messages".into(),
                partitions: topology.kafka.partitions as i32,
                bootstrap: options.kafka_bootstrap.clone().or_else(|| topology.kafka.bootstrap.clone()),
                // A Kafka restart needs data that survives it.
                persistent: scenario.may_restart_kafka(),
            };
            tracing::info!(provider = ?options.provider, "starting Kafka");
            Some(kafka::start(options.provider, &request, dir).await?)
        }
        Mode::Changestream => None,
    };
    let (backend_version, backend_is_real) = match &kafka {
        Some(k) => (format!("{backend_version} + {}", k.version), backend_is_real && k.is_real_kafka),
        None => (backend_version, backend_is_real),
    };
    // Network faults: each node reaches MongoDB (and Kafka) through its own
    // fault proxy.
    let mut links = Vec::new();
    if scenario.needs_link_proxies(LinkTarget::Mongo) {
        let upstream = single_host(&backend.uri).ok_or_else(|| {
            InfraError::Provider(crate::provider::ProviderError::CannotHonour {
                provider: "network faults",
                why: format!("the MongoDB URI {} has several hosts; the fault proxy needs a single-host URI", backend.uri),
            })
        })?;
        for _ in 0..topology.nodes {
            let proxy = FaultProxy::start(upstream).await.map_err(|e| InfraError::Output { path: "fault proxy".into(), source: e })?;
            links.push(proxy);
        }
    }
    let mut kafka_links = Vec::new();
    if let Some(k) = kafka.as_ref().filter(|_| scenario.needs_link_proxies(LinkTarget::Kafka)) {
        for node in 0..topology.nodes {
            let link = KafkaLink::start(&k.bootstrap, &dir.join(format!("kafka-link-{node}.log")))
                .await
                .map_err(|why| InfraError::Provider(crate::provider::ProviderError::CannotHonour { provider: "network faults", why }))?;
            kafka_links.push(link);
        }
    }
    let db = format!("chatbench_{}_{}", mode.as_str(), chrono::Utc::now().format("%Y%m%d%H%M%S%3f"));
    let spec = ClusterSpec {
        server_bin: options.server_bin.clone(),
        nodes: topology.nodes,
        mongo_uri: backend.uri.clone(),
        node_mongo_uris: links.iter().map(|l| with_host(&backend.uri, l.addr)).collect(),
        db,
        mode,
        extra_args: node_args(options, kafka.as_ref()),
        // In kafka mode each node's bootstrap: its link proxy, else the broker.
        per_node_args: kafka
            .iter()
            .flat_map(|k| {
                (0..topology.nodes as usize).map(|n| {
                    let bootstrap = kafka_links.get(n).map_or_else(|| k.bootstrap.clone(), |l| l.proxy.addr.to_string());
                    vec!["--kafka-bootstrap".to_owned(), bootstrap]
                })
            })
            .collect(),
        log_dir: dir.to_owned(),
    };
    tracing::info!(nodes = topology.nodes, "starting chat-server nodes");
    let cluster = Cluster::start(&spec).await?;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.ws_url()).collect();
    let rooms: Vec<String> = (0..scenario.workload.rooms).map(|r| format!("room-{r}")).collect();
    let plans = plan_clients(&scenario.workload, topology.nodes, options.seed);
    let shared = Arc::new(Shared::new(rooms.len(), plans.len()));
    let clock = Clock::start();
    let progress = progress_bar(options.quiet, scenario, mode);
    let ticker = spawn_ticker(progress.clone(), shared.clone());
    let (controls, drops) = Controls::new();
    let window = controls.window.subscribe();
    let targets = Targets {
        cluster: Mutex::new(cluster),
        mongo: Mutex::new(backend),
        drops,
        down: Mutex::new(BTreeSet::new()),
        paused: Mutex::new(BTreeSet::new()),
        links,
        kafka: kafka.map(Mutex::new),
        kafka_links,
    };
    let workload = client::run(&plans, &urls, &rooms, &scenario.workload, options.seed, clock, shared.clone(), controls);
    let mut schedule = scenario.fault_schedule(options.seed);
    if mode == Mode::Changestream {
        // Same seed, same schedule; faults on Kafka have nothing to act on here.
        schedule.retain(|(_, action)| !action.targets_kafka());
    }
    let (outcome, faults) = tokio::join!(workload, nemesis::run(schedule, window, clock, &targets));
    nemesis::settle(&targets).await;
    ticker.abort();
    progress.finish_and_clear();
    let ended_ns = clock.now_ns();
    let Targets { cluster, mongo: backend, down, kafka, kafka_links, .. } = targets;
    let (mut cluster, backend, down) = (cluster.into_inner(), backend.into_inner(), down.into_inner());
    // A node that died outside a planned fault makes the run's verdict void.
    if let Some((node, status)) = cluster.dead_nodes().into_iter().find(|(node, _)| !down.contains(node)) {
        return Err(InfraError::NodeDied { node, status: status.to_string(), log: cluster.nodes[node].log.display().to_string() });
    }
    if let Some(f) = faults.iter().find(|f| f.error.is_some()) {
        return Err(InfraError::Fault { action: f.action.clone(), why: f.error.clone().unwrap_or_default() });
    }
    let live = (0..cluster.nodes.len()).find(|n| !down.contains(n)).unwrap_or(0);
    let history = read_history(&cluster.nodes[live].http_url(""), &rooms).await;
    let server = scrape_counters(&cluster).await;
    for problem in cluster.stop(Duration::from_secs(5)).await {
        tracing::warn!("{problem}");
    }
    drop(kafka_links);
    drop(kafka);
    drop(backend);
    let trace = Trace {
        version: TRACE_VERSION,
        meta: TraceMeta {
            scenario: scenario.name.clone(),
            mode: mode.as_str().to_owned(),
            seed: options.seed,
            provider: provider.clone(),
            backend: backend_version.clone(),
            warmup_ns: outcome.start_ns + scenario.workload.warmup.0.as_nanos() as u64,
            sending_started_ns: outcome.start_ns,
            sending_ended_ns: outcome.sending_ended_ns,
            ended_ns,
            checks_json: serde_json::to_string(&scenario.checks).expect("checks serialize"),
            backend_is_real,
            nodes: topology.nodes,
            faults,
        },
        rooms,
        clients: plans.iter().map(|p| p.info()).collect(),
        events: Trace::merge(outcome.buffers),
        history,
    };
    let trace_path = dir.join("trace.bin");
    trace
        .write(&trace_path)
        .map_err(|e| InfraError::Output { path: trace_path.display().to_string(), source: std::io::Error::other(e.to_string()) })?;
    let mut notes = vec![format!("trace: {}", trace_path.display())];
    if !outcome.drained {
        notes.push(format!("drain did not complete within {:?}", scenario.workload.drain_timeout.0));
    }
    let ctx = evaluate::Context {
        provider,
        backend: backend_version,
        backend_is_real,
        nodes: topology.nodes,
        drain: Drain { completed: outcome.drained, took_ms: outcome.drain_took.as_millis() as u64 },
        server,
        notes,
    };
    Ok(evaluate(&trace, &scenario.checks, ctx))
}

/// The one `host:port` of a MongoDB URI (None when it lists several).
fn single_host(uri: &str) -> Option<std::net::SocketAddr> {
    let rest = uri.strip_prefix("mongodb://")?;
    let hosts = rest.split(['/', '?']).next()?;
    let hosts = hosts.rsplit('@').next()?;
    if hosts.contains(',') {
        return None;
    }
    std::net::ToSocketAddrs::to_socket_addrs(hosts).ok()?.next()
}

/// The URI with its single host replaced by `addr`.
fn with_host(uri: &str, addr: std::net::SocketAddr) -> String {
    let rest = uri.strip_prefix("mongodb://").unwrap_or(uri);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    format!("mongodb://{addr}{}", &rest[end..])
}

/// Flags for every node: the Kafka topic in kafka mode, plus extras (each
/// node's bootstrap is in `per_node_args`).
fn node_args(options: &RunOptions, kafka: Option<&KafkaBackend>) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(k) = kafka {
        args.extend(["--kafka-topic".to_owned(), k.topic.clone()]);
    }
    args.extend(options.server_args.iter().cloned());
    args
}

fn progress_bar(quiet: bool, scenario: &Scenario, mode: Mode) -> ProgressBar {
    let visible = !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let total = (scenario.workload.duration.0 + scenario.workload.drain_timeout.0).as_secs().max(1);
    let bar = ProgressBar::with_draw_target(Some(total), if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
    bar.set_style(ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {msg}").expect("the progress template is valid"));
    bar.set_prefix(format!("{} / {}", scenario.name, mode.as_str()));
    bar
}

fn spawn_ticker(bar: ProgressBar, shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let started = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            bar.set_position(started.elapsed().as_secs());
            bar.set_message(format!(
                "sent {} acked {} delivered {} errors {}",
                shared.sent.load(Ordering::Relaxed),
                shared.acked.load(Ordering::Relaxed),
                shared.delivered.load(Ordering::Relaxed),
                shared.errors.load(Ordering::Relaxed)
            ));
        }
    })
}

/// Sum every node's `/metrics` counters (missing nodes are logged, not fatal).
async fn scrape_counters(cluster: &Cluster) -> ServerCounters {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("a plain HTTP client builds");
    let mut counters = ServerCounters::default();
    for node in &cluster.nodes {
        match client.get(node.http_url("/metrics")).send().await {
            Ok(r) => counters.add_prometheus_text(&r.text().await.unwrap_or_default()),
            Err(e) => tracing::warn!(node = node.index, error = %e, "could not read /metrics"),
        }
    }
    counters
}

#[derive(Deserialize)]
struct HistoryPage {
    messages: Vec<HistoryMessage>,
}

#[derive(Deserialize)]
struct HistoryMessage {
    seq: u64,
    id: String,
}

/// Read every room's history back through a node's HTTP API.
async fn read_history(base: &str, rooms: &[String]) -> Vec<RoomHistory> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("a plain HTTP client builds");
    let mut out = Vec::with_capacity(rooms.len());
    for room in rooms {
        let mut history = RoomHistory { entries: Vec::new(), complete: true };
        let mut after = 0u64;
        loop {
            let url = format!("{base}/rooms/{room}/messages?after={after}&limit=10000");
            let page = match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => r.json::<HistoryPage>().await.ok(),
                _ => None,
            };
            let Some(page) = page else {
                tracing::warn!(%room, "could not read history");
                history.complete = false;
                break;
            };
            if page.messages.is_empty() {
                break;
            }
            for m in page.messages {
                after = after.max(m.seq);
                let msg: MsgNo = parse_wire_id(&m.id).unwrap_or(FOREIGN_MSG);
                history.entries.push((m.seq, msg));
            }
        }
        out.push(history);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_host_uri_is_rerouted_through_a_proxy() {
        let uri = "mongodb://127.0.0.1:27017/?directConnection=true";
        assert_eq!(single_host(uri), Some("127.0.0.1:27017".parse().unwrap()));
        assert_eq!(with_host(uri, "127.0.0.1:40000".parse().unwrap()), "mongodb://127.0.0.1:40000/?directConnection=true");
        assert_eq!(single_host("mongodb://127.0.0.1:1,127.0.0.1:2/?replicaSet=rs0"), None);
    }
}
