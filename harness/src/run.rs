//! One `chatbench run`, one pipeline for every subject:
//!
//! 1. **start**: fresh backends and nodes for each mode (the reference
//!    server or `system.command`), or nothing for an external system;
//! 2. **plan**: rooms, client plans and credentials (`plan`);
//! 3. **drive**: the clients and the faults side by side (`drive`; the
//!    subject decides which faults it can apply);
//! 4. **collect**: history from the oracle, the history API, counters,
//!    then teardown (started nodes only);
//! 5. **judge**: the trace is assembled, written and evaluated (`judge`);
//! 6. **write**: one report for every subject ([`RunReport::new`]).
//!
//! `chatbench merge` runs stages 5 and 6 on traces read from shards.
//! Everything started here is owned by a guard, so an error, a panic or a
//! dropped future (Ctrl-C) tears it down.

use crate::client::{self, Controls, Shared, WorkloadOutcome, plan_clients};
use crate::cluster::{Cluster, ClusterError, ClusterSpec};
use crate::nemesis::{self, Targets};
use crate::oracle;
use crate::provider::ProviderError;
use crate::provider::broker::{self, BrokerBackend, BrokerKind, BrokerRequest};
use crate::provider::kafka::{self, KafkaBackend, KafkaLink, KafkaRequest};
use crate::provider::mongo::{self, MongoBackend, MongoRequest};
use crate::proxy::FaultProxy;
use crate::report::evaluate::{self, evaluate};
use crate::report::{ModeReport, RunReport, ServerCounters};
use crate::scenario::{HistoryGuarantee, LinkTarget, Mode, NodesIn, ProviderChoice, Scenario};
use crate::subject::Subject;
use crate::trace::{Clock, DrainRecord, TRACE_VERSION, Trace, TraceMeta};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::Mutex;

#[derive(Debug, Clone)]
pub(crate) struct RunOptions {
    pub modes: Vec<Mode>,
    pub provider: ProviderChoice,
    pub mongo_uri: Option<String>,
    pub kafka_bootstrap: Option<String>,
    /// Redis for --provider external in redis mode.
    pub redis_url: Option<String>,
    /// NATS for --provider external in nats mode.
    pub nats_url: Option<String>,
    /// The docker provider's images (CLI over scenario; None: the defaults).
    pub docker_images: crate::provider::docker::DockerImages,
    pub out_dir: PathBuf,
    pub seed: u64,
    pub quiet: bool,
    pub server_bin: PathBuf,
    /// Extra flags for every node (test-only sabotage goes here).
    pub server_args: Vec<String>,
    /// Run only this shard's rooms (and their clients).
    pub shard: Option<crate::trace::ShardOf>,
    /// Open the sending window at this wall-clock instant (ns since the
    /// Unix epoch), so the shards of a sharded run start together.
    pub start_at_unix_ns: Option<u64>,
    /// Names the run's database (and Kafka topic) instead of the clock:
    /// the shards of a run share one, so every node sees every message.
    pub run_id: Option<String>,
    /// `--metrics-listen`: the live counters' endpoint, told of each mode.
    pub live: Option<Arc<crate::live_metrics::LiveMetrics>>,
}

/// Why a run could not produce a verdict (exit code 3).
#[derive(Debug, thiserror::Error)]
pub(crate) enum InfraError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("node {node} died during the run ({status}); see {log}")]
    NodeDied { node: usize, status: String, log: String },
    #[error("fault {action} could not be applied: {why}")]
    Fault { action: String, why: String },
    /// The scenario's declaration does not fit the system (exit 2).
    #[error(transparent)]
    Store(#[from] oracle::StoreMismatch),
    #[error("credentials.token_command for client {client}: {why}")]
    TokenCommand { client: u32, why: String },
    #[error("writing results to {path}: {source}")]
    Output {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) async fn run(scenario: &Scenario, options: &RunOptions) -> Result<RunReport, InfraError> {
    let output = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |source| InfraError::Output { path, source }
    };
    std::fs::create_dir_all(&options.out_dir).map_err(output(&options.out_dir))?;
    if options.shard.is_some() && scenario.auth.as_ref().is_some_and(|a| !a.intruders.is_empty()) {
        // Refused before anything starts.
        return Err(InfraError::Provider(crate::provider::ProviderError::CannotHonour {
            provider: "sharded run",
            why: "auth.intruders run in one process for now: run the scenario unsharded".into(),
        }));
    }
    let started_at = chrono::Utc::now().to_rfc3339();
    let with_bearer;
    let scenario = if mints_tokens(scenario) {
        with_bearer = bearer_by_default(scenario);
        &with_bearer
    } else {
        scenario
    };
    // Fan-out modes are the reference server's: an external system runs once.
    let subjects: Vec<Subject> = match &scenario.system.external {
        Some(_) => vec![Subject::External],
        None => options.modes.iter().map(|&m| Subject::Started(m)).collect(),
    };
    let mut modes = Vec::new();
    for subject in subjects {
        let dir = options.out_dir.join(subject.as_str());
        std::fs::create_dir_all(&dir).map_err(output(&dir))?;
        modes.push(match (subject, &scenario.system.external) {
            (Subject::External, Some(external)) => run_external(scenario, options, external, &dir).await?,
            (Subject::Started(mode), _) => run_mode(scenario, options, mode, &dir).await?,
            (Subject::External, None) => unreachable!("an external subject comes only from system.external"),
        });
    }
    let report = RunReport::new(&scenario.name, &scenario.description, options.seed, started_at, modes);
    report.write_all(&options.out_dir).map_err(output(&options.out_dir))?;
    Ok(report)
}

/// The harness mints the credentials: `auth` on the reference server,
/// without a `token_command`.
fn mints_tokens(scenario: &Scenario) -> bool {
    let system = &scenario.system;
    scenario.auth.is_some() && system.command.is_none() && system.external.is_none() && system.credentials.token_command.is_none()
}

/// Minted tokens go where the reference server reads them, unless the
/// scenario says where: `Authorization: Bearer {token}` on the upgrade
/// (both endpoints take it there).
fn bearer_by_default(scenario: &Scenario) -> Scenario {
    let mut scenario = scenario.clone();
    let c = &mut scenario.system.credentials;
    if c.headers.is_empty() && c.query.is_empty() && c.connect_headers.is_empty() {
        c.headers.insert("Authorization".to_owned(), "Bearer {token}".to_owned());
    }
    scenario
}

/// What every subject's clients need: the run's rooms, each client's plan
/// and credentials (this shard's only, in a sharded run).
struct Planned {
    rooms: Vec<String>,
    plans: Vec<client::ClientPlan>,
    tokens: Vec<String>,
    /// The harness mints the tokens: `expiring` intruders sign theirs
    /// when sending starts.
    signer: Option<crate::auth::Signer>,
}

/// The run's id, which names its rooms, database and topic: given (the
/// shards of a run share one) or the clock's.
fn run_id(options: &RunOptions) -> String {
    options.run_id.clone().unwrap_or_else(|| chrono::Utc::now().format("%Y%m%d%H%M%S%3f").to_string())
}

/// Stage 2: plan the clients over `nodes` nodes (after the nodes started:
/// a `token_command` may ask them for credentials), members first, then
/// `auth`'s intruders; `minter`: the harness mints the credentials.
async fn plan(
    scenario: &Scenario,
    options: &RunOptions,
    nodes: u32,
    run_id: &str,
    minter: Option<&crate::auth::Minter>,
) -> Result<Planned, InfraError> {
    let rooms: Vec<String> =
        client::rooms_of(scenario.workload.rooms, options.shard).iter().map(|&r| scenario.workload.room_name(r, run_id)).collect();
    let mut plans = plan_clients(&scenario.workload, nodes, options.seed, options.shard.map_or(1, |s| s.count));
    if let Some(shard) = options.shard {
        plans = client::shard_plans(plans, shard);
    }
    if let Some(auth) = &scenario.auth {
        plans.extend(client::plan_intruders(auth, plans.len() as u32, rooms.len() as u32, nodes));
    }
    let tokens = match minter {
        Some(minter) => minted_tokens(minter, scenario, &plans, &rooms),
        None => client_tokens(scenario, &plans, &rooms).await?,
    };
    Ok(Planned { rooms, plans, tokens, signer: minter.map(crate::auth::Minter::signer) })
}

/// The room an intruder's credentials grant (see [`client::granted_room`]).
fn granted_room(credential: crate::trace::Credential, rooms: &[String], plan: &client::ClientPlan) -> String {
    let target = rooms.get(plan.room as usize).map_or("room", String::as_str);
    client::granted_room(credential, target, plan.msg_client).unwrap_or_else(|| client::other_room(target))
}

/// The names of every room a member joins, or `*` (`rooms_per_client: all`).
fn member_rooms(scenario: &Scenario, plan: &client::ClientPlan, rooms: &[String]) -> Vec<String> {
    match scenario.auth.as_ref().map(|a| a.rooms_per_client) {
        Some(crate::scenario::RoomGrant::All) => vec![chatbench_wire::token::EVERY_ROOM.to_owned()],
        _ => plan.rooms().filter_map(|r| rooms.get(r as usize).cloned()).collect(),
    }
}

/// Every client's token, minted for the reference server.
fn minted_tokens(minter: &crate::auth::Minter, scenario: &Scenario, plans: &[client::ClientPlan], rooms: &[String]) -> Vec<String> {
    plans
        .iter()
        .map(|p| {
            let sub = format!("client-{}", p.msg_client);
            let room = rooms.get(p.room as usize).map_or("", String::as_str);
            match p.role.intruder() {
                Some(c) => minter.intruder(c, &sub, room, &granted_room(c, rooms, p)).unwrap_or_default(),
                None => minter.member(&sub, &member_rooms(scenario, p, rooms)),
            }
        })
        .collect()
}

/// A run whose faults could not all be applied has no verdict.
fn fault_error(faults: &[crate::trace::FaultRecord]) -> Result<(), InfraError> {
    match faults.iter().find(|f| f.error.is_some()) {
        Some(f) => Err(InfraError::Fault { action: f.action.clone(), why: f.error.clone().unwrap_or_default() }),
        None => Ok(()),
    }
}

/// An external system: nodes the harness did not start, judged on what
/// its clients saw (no backends, no history unless declared, client
/// faults only).
async fn run_external(
    scenario: &Scenario,
    options: &RunOptions,
    external: &crate::scenario::ExternalSystem,
    dir: &std::path::Path,
) -> Result<ModeReport, InfraError> {
    let nodes = external.urls.len() as u32;
    let planned = plan(scenario, options, nodes, &run_id(options), None).await?;
    let (urls, client_links) = client_link_proxies(scenario, external.urls.clone()).await?;
    let clock = Clock::start();
    let schedule = scenario.fault_schedule(options.seed);
    let faults = async |window, drops| (nemesis::run_client_faults(schedule, window, clock, &drops, &client_links).await, ());
    let mut driven = drive(scenario, options, Subject::External, &planned, (&urls, &[]), clock, faults).await;
    let unmatched = std::mem::take(&mut driven.outcome.unmatched);
    let samples = std::mem::take(&mut driven.outcome.samples);
    let ended_ns = clock.now_ns();
    fault_error(&driven.faults)?;
    let checks = scenario.judged_checks();
    let recorded = Recorded {
        mode: Subject::External,
        provider: "external system".to_owned(),
        backend: external.urls.join(", "),
        // Its latency is the system's own, not a compat stand-in's.
        backend_is_real: true,
        history_source: "none (the system declares no history)".to_owned(),
        nodes,
        history: planned.rooms.iter().map(|_| crate::trace::RoomHistory::default()).collect(),
        api_history: Vec::new(),
        rooms: planned.rooms,
        plans: &planned.plans,
        outcome: driven.outcome,
        ended_ns,
        clock,
        faults: driven.faults,
        loop_lag: driven.loop_lag,
        resources: driven.resources,
    };
    let trace = assemble(scenario, options, &checks, recorded);
    let report = judge(&trace, &checks, dir, Default::default(), unmatched_note(unmatched)).map_err(trace_output(dir))?;
    Ok(with_cause(report, &trace, &samples))
}

/// One mode, in named phases: backends → nodes → workload and nemesis →
/// verdict inputs (history from the oracle, counters) → teardown → trace →
/// evaluation. Every phase's resources are owned by guards.
async fn run_mode(scenario: &Scenario, options: &RunOptions, mode: Mode, dir: &std::path::Path) -> Result<ModeReport, InfraError> {
    let run_id = run_id(options);
    let db = format!("chatbench_{}_{run_id}", mode.as_str());
    let minter = if mints_tokens(scenario) {
        Some(crate::auth::Minter::new().map_err(|source| InfraError::Output { path: "the run's auth secret".into(), source })?)
    } else {
        None
    };
    let backends = start_backends(scenario, options, mode, dir, &db).await?;
    let cluster = start_nodes(scenario, options, mode, dir, &backends, &db, minter.as_ref()).await?;
    // TEST ONLY: a panic with backends and nodes up (the cleanup tests).
    if std::env::var_os("CHATBENCH_TEST_PANIC").is_some() {
        panic!("CHATBENCH_TEST_PANIC: panicking with backends and nodes up, as asked");
    }
    let planned = plan(scenario, options, scenario.topology.nodes, &run_id, minter.as_ref()).await?;
    let clock = Clock::start();
    let path = scenario.system.ws_path();
    // The reference server's history API, where intruders try to read.
    let http_bases: Vec<String> =
        if scenario.system.command.is_none() { cluster.nodes.iter().map(|n| n.http_url("")).collect() } else { Vec::new() };
    let (urls, client_links) = client_link_proxies(scenario, cluster.nodes.iter().map(|n| n.ws_url_at(path)).collect()).await?;
    let mut schedule = scenario.fault_schedule(options.seed);
    // Same seed, same schedule; a fault on a broker this mode does not run
    // has nothing to act on here.
    schedule.retain(|(_, action)| action.applies_in(mode));
    let Backends { mongo, kafka, links, kafka_links, broker, broker_links } = backends;
    let faults = async |window, drops| {
        let targets = Targets {
            cluster: Mutex::new(cluster),
            mongo: Mutex::new(mongo),
            drops,
            down: Mutex::new(BTreeSet::new()),
            paused: Mutex::new(BTreeSet::new()),
            partitioned: Mutex::new(BTreeSet::new()),
            links,
            kafka: kafka.map(Mutex::new),
            kafka_links,
            broker: broker.map(Mutex::new),
            broker_links,
            client_links,
        };
        (nemesis::run(schedule, window, clock, &targets).await, targets)
    };
    let driven = drive(scenario, options, mode.into(), &planned, (&urls, &http_bases), clock, faults).await;
    nemesis::settle(&driven.owned).await;
    let ended_ns = clock.now_ns();
    let Driven { mut outcome, faults, owned: targets, loop_lag, resources } = driven;
    let unmatched = std::mem::take(&mut outcome.unmatched);
    let samples = std::mem::take(&mut outcome.samples);
    let Targets { cluster, mongo, down, kafka, kafka_links, broker, broker_links, .. } = targets;
    let (mut cluster, mongo, down) = (cluster.into_inner(), mongo.into_inner(), down.into_inner());
    // A node that died outside a planned fault makes the run's verdict void.
    if let Some((node, status)) = cluster.dead_nodes().into_iter().find(|(node, _)| !down.contains(node)) {
        return Err(InfraError::NodeDied { node, status: status.to_string(), log: cluster.nodes[node].log.display().to_string() });
    }
    fault_error(&faults)?;
    let rooms = &planned.rooms;
    let (history, history_source) = match (&scenario.system.store, scenario.system.guarantees.history) {
        (Some(store), _) => {
            tracing::info!(collection = store.collection, "reading the system's store back from MongoDB (the store oracle)");
            let delivered = outcome.buffers.iter().flatten().filter(|e| matches!(e.kind, crate::trace::EventKind::Deliver { .. })).count();
            (oracle::read_store(&mongo.uri, &db, store, rooms, delivered as u64).await?, oracle::store_source(&db, store))
        }
        // Its history is not in the reference layout: nothing to read.
        (None, HistoryGuarantee::None | HistoryGuarantee::Recovery) => (
            rooms.iter().map(|_| crate::trace::RoomHistory::default()).collect(),
            "none (the system declares no history and no store)".to_owned(),
        ),
        (None, HistoryGuarantee::Reference) => {
            tracing::info!("reading history back from MongoDB (the oracle)");
            (oracle::read_history(&mongo.uri, &db, rooms).await, oracle::source(&db))
        }
    };
    // The reference server's own history API, read as a client would.
    let live: Vec<String> = cluster.nodes.iter().enumerate().filter(|(i, _)| !down.contains(i)).map(|(_, n)| n.http_url("")).collect();
    let api_history = if scenario.system.command.is_some() {
        Vec::new()
    } else if live.is_empty() {
        // Nothing to ask (every node is down at the end, by the nemesis):
        // the API is not judged, and the run's liveness findings say why.
        tracing::warn!("no node is up at the end of the run: the history API is not read");
        Vec::new()
    } else {
        // With auth on, the harness reads as a client granted every room.
        let headers: Vec<(String, String)> = minter
            .iter()
            .map(|m| {
                (
                    "Authorization".to_owned(),
                    format!("Bearer {}", m.member("chatbench-harness", &[chatbench_wire::token::EVERY_ROOM.to_owned()])),
                )
            })
            .collect();
        crate::history_api::read(&live, rooms, &headers).await
    };
    let server = scrape_counters(&cluster).await;
    for problem in cluster.stop(Duration::from_secs(5)).await {
        tracing::warn!("{problem}");
    }
    drop(kafka_links);
    drop(broker_links);
    let kafka = kafka.map(Mutex::into_inner);
    let broker = broker.map(Mutex::into_inner);
    let (provider, backend, backend_is_real) = describe(&mongo, kafka.as_ref(), broker.as_ref());
    drop(kafka);
    drop(broker);
    drop(mongo);
    // What the system does not promise is not checked (each with its reason).
    let checks = scenario.judged_checks();
    let recorded = Recorded {
        mode: mode.into(),
        provider,
        backend,
        backend_is_real,
        history_source,
        nodes: scenario.topology.nodes,
        rooms: planned.rooms.clone(),
        plans: &planned.plans,
        history,
        api_history,
        outcome,
        ended_ns,
        clock,
        faults,
        loop_lag,
        resources,
    };
    let trace = assemble(scenario, options, &checks, recorded);
    let report = judge(&trace, &checks, dir, server, unmatched_note(unmatched)).map_err(trace_output(dir))?;
    Ok(with_cause(report, &trace, &samples))
}

/// A run whose deliveries (nearly) all carry another text says where the
/// declaration should read it (see `report::cause`).
fn with_cause(mut report: ModeReport, trace: &Trace, samples: &crate::client::Samples) -> ModeReport {
    let corrupted = report.count(crate::check::FindingKind::Corrupted);
    if let Some(cause) = crate::report::cause::wrong_text_note(corrupted, report.counts.delivered, trace, samples) {
        report.causes.push(cause);
    }
    report
}

/// What one run recorded, and the parts of its trace that differ between
/// the reference server and an external system.
struct Recorded<'a> {
    mode: Subject,
    provider: String,
    backend: String,
    backend_is_real: bool,
    history_source: String,
    nodes: u32,
    rooms: Vec<String>,
    plans: &'a [client::ClientPlan],
    history: Vec<crate::trace::RoomHistory>,
    /// Each room as the system's history API served it (empty: none).
    api_history: Vec<crate::trace::RoomHistory>,
    outcome: WorkloadOutcome,
    ended_ns: u64,
    clock: Clock,
    faults: Vec<crate::trace::FaultRecord>,
    loop_lag: crate::resources::LoopLag,
    resources: Vec<crate::resources::ResourceSample>,
}

fn assemble(scenario: &Scenario, options: &RunOptions, checks: &crate::scenario::Checks, r: Recorded<'_>) -> Trace {
    let outcome = r.outcome;
    Trace {
        version: TRACE_VERSION,
        meta: TraceMeta {
            scenario: scenario.name.clone(),
            mode: r.mode,
            seed: options.seed,
            provider: r.provider,
            backend: r.backend,
            warmup_ns: outcome.start_ns + scenario.workload.warmup.0.as_nanos() as u64,
            sending_started_ns: outcome.start_ns,
            sending_ended_ns: outcome.sending_ended_ns,
            ended_ns: r.ended_ns,
            checks: checks.clone(),
            load: Some(scenario.workload.load),
            drain: DrainRecord { completed: outcome.drained, took_ns: outcome.drain_took.as_nanos() as u64 },
            history_source: r.history_source,
            backend_is_real: r.backend_is_real,
            nodes: r.nodes,
            faults: r.faults,
            loop_lag: r.loop_lag,
            resources: r.resources,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            shard: options.shard,
            origin_unix_ns: r.clock.origin_unix_ns(),
            missing_shards: Vec::new(),
            refusals: outcome.refusals,
            protocol: protocol_name(scenario),
            guarantees: scenario.system.guarantees.clone(),
            message_text: scenario.workload.message_text.as_str().to_owned(),
        },
        clients: r
            .plans
            .iter()
            .map(|p| crate::trace::ClientInfo {
                tried_as: client::tried_as_other_name(p, &r.rooms),
                granted: client::granted_run_room(p, &r.rooms),
                ..p.info(scenario.workload.duration.0)
            })
            .collect(),
        rooms: r.rooms,
        events: Trace::merge(outcome.buffers),
        history: r.history,
        api_history: r.api_history,
    }
}

/// Stage 5: write the trace next to the reports, then judge it. `notes`
/// go into the report after the trace's path.
pub(crate) fn judge(
    trace: &Trace,
    checks: &crate::scenario::Checks,
    dir: &std::path::Path,
    server: ServerCounters,
    notes: Vec<String>,
) -> Result<ModeReport, crate::trace::TraceError> {
    let trace_path = dir.join("trace.bin");
    trace.write(&trace_path)?;
    let hlog_path = dir.join("latency.hlog");
    crate::report::hlog::write(trace, &hlog_path)
        .map_err(|source| crate::trace::TraceError::Io { path: hlog_path.display().to_string(), source })?;
    let notes = std::iter::once(format!("trace: {}", trace_path.display()))
        .chain(std::iter::once(format!("latency per second (HdrHistogram interval log, tags ack and delivery): {}", hlog_path.display())))
        .chain(notes)
        .collect();
    Ok(evaluate(trace, checks, evaluate::Context { server, notes }))
}

fn trace_output(dir: &std::path::Path) -> impl FnOnce(crate::trace::TraceError) -> InfraError {
    let path = dir.join("trace.bin").display().to_string();
    move |e| InfraError::Output { path, source: std::io::Error::other(e.to_string()) }
}

/// Server frames no declared matcher took, as a report note.
fn unmatched_note((n, example): (u64, Option<String>)) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    vec![format!(
        "{n} server frames matched no system.json_frames.frames matcher (socketio: no declared event) and were ignored; the first: {}",
        example.unwrap_or_default()
    )]
}

fn protocol_name(scenario: &Scenario) -> String {
    scenario.system.protocol.protocol().as_str().to_owned()
}

/// With network faults on the clients' link: a fault proxy in front of each
/// node, and the URL clients use rewritten to go through it.
async fn client_link_proxies(scenario: &Scenario, urls: Vec<String>) -> Result<(Vec<String>, Vec<FaultProxy>), InfraError> {
    if !scenario.needs_link_proxies(LinkTarget::Clients) {
        return Ok((urls, Vec::new()));
    }
    let cannot = |why: String| InfraError::Provider(crate::provider::ProviderError::CannotHonour { provider: "network faults", why });
    let mut proxied = Vec::with_capacity(urls.len());
    let mut proxies = Vec::with_capacity(urls.len());
    for url in urls {
        let rest = url.strip_prefix("ws://").ok_or_else(|| {
            cannot(format!("{url}: a fault proxy on the clients' link needs plain ws:// (TLS names the host it was issued for)"))
        })?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let upstream = tokio::net::lookup_host(&with_port)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| cannot(format!("{url}: cannot resolve {authority}")))?;
        let proxy = FaultProxy::start(upstream).await.map_err(|e| InfraError::Output { path: "fault proxy".into(), source: e })?;
        proxied.push(format!("ws://{}{path}", proxy.addr));
        proxies.push(proxy);
    }
    Ok((proxied, proxies))
}

/// Each client's `{token}`: the first line `credentials.token_command`
/// prints for it (empty strings without one, and for an intruder without
/// credentials).
async fn client_tokens(scenario: &Scenario, plans: &[client::ClientPlan], rooms: &[String]) -> Result<Vec<String>, InfraError> {
    let Some(command) = scenario.system.credentials.token_command.as_ref().filter(|c| !c.is_empty()) else {
        return Ok(vec![String::new(); plans.len()]);
    };
    let mut tokens = vec![String::new(); plans.len()];
    for plan in plans {
        let fail = |why: String| InfraError::TokenCommand { client: plan.id, why };
        // `{credentials}`: what to make; `{room}`: the room they are for;
        // `{rooms}`: a member's rooms, comma-separated.
        let (kind, room, granted) = match plan.role.intruder() {
            Some(crate::trace::Credential::None) => continue,
            Some(
                c @ (crate::trace::Credential::OtherRoom
                | crate::trace::Credential::Confusable
                | crate::trace::Credential::Wildcard
                | crate::trace::Credential::Spelling),
            ) => {
                let other = granted_room(c, rooms, plan);
                (c.as_str(), other.clone(), other)
            }
            Some(c) => {
                let room = rooms.get(plan.room as usize).cloned().unwrap_or_default();
                (c.as_str(), room.clone(), room)
            }
            None => ("member", rooms.get(plan.room as usize).cloned().unwrap_or_default(), member_rooms(scenario, plan, rooms).join(",")),
        };
        let args: Vec<String> = command
            .iter()
            .map(|a| {
                crate::protocol::fill_credentials(
                    &a.replace("{credentials}", kind).replace("{rooms}", &granted),
                    plan.msg_client,
                    &room,
                    "",
                )
            })
            .collect();
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(&args[0]).args(&args[1..]).kill_on_drop(true).output(),
        )
        .await
        .map_err(|_| fail(format!("{} did not finish within 30 s", args[0])))?
        .map_err(|e| fail(format!("could not run {}: {e}", args[0])))?;
        if !output.status.success() {
            return Err(fail(format!("{} exited with {}: {}", args[0], output.status, String::from_utf8_lossy(&output.stderr).trim())));
        }
        let token = String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or("").trim().to_owned();
        if token.is_empty() {
            return Err(fail(format!("{} printed no token", args[0])));
        }
        tokens[plan.id as usize] = token;
    }
    Ok(tokens)
}

/// The backends of one mode and the fault proxies on each node's links.
struct Backends {
    mongo: MongoBackend,
    kafka: Option<KafkaBackend>,
    /// Per node: its fault proxy to MongoDB (network faults only).
    links: Vec<FaultProxy>,
    /// Per node: its path to Kafka through a fault proxy (network faults on Kafka only).
    kafka_links: Vec<KafkaLink>,
    /// The broker of the redis and nats modes.
    broker: Option<BrokerBackend>,
    /// Per node: its fault proxy to that broker (network faults on it only).
    broker_links: Vec<FaultProxy>,
}

async fn start_backends(
    scenario: &Scenario,
    options: &RunOptions,
    mode: Mode,
    dir: &std::path::Path,
    db: &str,
) -> Result<Backends, InfraError> {
    let topology = &scenario.topology;
    let request = MongoRequest {
        members: topology.mongo.members,
        uri: options.mongo_uri.clone().or_else(|| topology.mongo.uri.clone()),
        // A MongoDB restart needs data that survives it.
        persistent: scenario.may_restart_mongo(),
        server_args: topology.mongo.server_args.clone(),
        image: options.docker_images.mongo.clone(),
        // Nodes in containers reach MongoDB on the run's own network.
        network: (topology.nodes_in == NodesIn::Containers).then(|| format!("chatbench-{db}")),
    };
    tracing::info!(mode = mode.as_str(), provider = ?options.provider, "starting MongoDB");
    let mongo = mongo::start(options.provider, &request, dir).await?;
    let kafka = match mode {
        Mode::Kafka => {
            let request = KafkaRequest {
                // One topic per run: two runs on one external Kafka never cross-talk.
                topic: format!("chatbench.{db}"),
                partitions: topology.kafka.partitions as i32,
                bootstrap: options.kafka_bootstrap.clone().or_else(|| topology.kafka.bootstrap.clone()),
                // A Kafka restart needs data that survives it.
                persistent: scenario.may_restart_kafka(),
                image: options.docker_images.kafka.clone(),
            };
            tracing::info!(provider = ?options.provider, "starting Kafka");
            Some(kafka::start(options.provider, &request, dir).await?)
        }
        Mode::Changestream | Mode::Redis | Mode::Nats => None,
    };
    let broker = match broker::kind_of(mode) {
        Some(kind) => {
            let (url, image) = match kind {
                BrokerKind::Redis => (options.redis_url.clone(), options.docker_images.redis.clone()),
                BrokerKind::Nats => (options.nats_url.clone(), options.docker_images.nats.clone()),
            };
            let request = BrokerRequest { kind, url, controlled: scenario.controls_broker(), image };
            tracing::info!(provider = ?options.provider, broker = kind.name(), "starting the broker");
            Some(broker::start(options.provider, &request, dir).await?)
        }
        None => None,
    };
    let cannot = |why: String| InfraError::Provider(crate::provider::ProviderError::CannotHonour { provider: "network faults", why });
    let mut links = Vec::new();
    if scenario.needs_link_proxies(LinkTarget::Mongo) {
        let upstream = single_host(&mongo.uri)
            .ok_or_else(|| cannot(format!("the MongoDB URI {} has several hosts; the fault proxy needs a single-host URI", mongo.uri)))?;
        for _ in 0..topology.nodes {
            let proxy = FaultProxy::start(upstream).await.map_err(|e| InfraError::Output { path: "fault proxy".into(), source: e })?;
            links.push(proxy);
        }
    }
    let mut kafka_links = Vec::new();
    let broker_link_faults = scenario.needs_link_proxies(LinkTarget::Broker);
    if let Some(k) = kafka.as_ref().filter(|_| scenario.needs_link_proxies(LinkTarget::Kafka) || broker_link_faults) {
        for node in 0..topology.nodes {
            kafka_links.push(
                KafkaLink::start(&k.bootstrap, &dir.join(format!("kafka-link-{node}.log"))).await.map_err(|e| cannot(format!("{e:#}")))?,
            );
        }
    }
    let mut broker_links = Vec::new();
    if let Some(b) = broker.as_ref().filter(|_| broker_link_faults) {
        let upstream =
            b.addr().ok_or_else(|| cannot(format!("the {} URL {} has no single host:port for the fault proxy", b.kind.name(), b.url)))?;
        for _ in 0..topology.nodes {
            broker_links.push(FaultProxy::start(upstream).await.map_err(|e| InfraError::Output { path: "fault proxy".into(), source: e })?);
        }
    }
    Ok(Backends { mongo, kafka, links, kafka_links, broker, broker_links })
}

async fn start_nodes(
    scenario: &Scenario,
    options: &RunOptions,
    mode: Mode,
    dir: &std::path::Path,
    backends: &Backends,
    db: &str,
    minter: Option<&crate::auth::Minter>,
) -> Result<Cluster, InfraError> {
    let nodes = scenario.topology.nodes;
    let spec = ClusterSpec {
        server_bin: options.server_bin.clone(),
        nodes,
        mongo_uri: backends.mongo.uri.clone(),
        node_mongo_uris: backends.links.iter().map(|l| with_host(&backends.mongo.uri, l.addr)).collect(),
        db: db.to_owned(),
        mode,
        extra_args: node_args(scenario, options, backends, db).into_iter().chain(minter.iter().flat_map(|m| m.server_args())).collect(),
        per_node_args: (0..nodes as usize).map(|n| broker_args(backends, n)).filter(|a| !a.is_empty()).collect(),
        log_dir: dir.to_owned(),
        command: scenario.system.command.clone(),
        containers: match scenario.topology.nodes_in {
            NodesIn::Processes => None,
            NodesIn::Containers if mode != Mode::Changestream => {
                return Err(InfraError::Provider(crate::provider::ProviderError::CannotHonour {
                    provider: "nodes in containers",
                    why: format!("{mode} mode: the broker listens on a host address the node containers cannot reach (changestream only)"),
                }));
            }
            NodesIn::Containers => {
                let (network, mongo_uri) = backends.mongo.inside.clone().ok_or_else(|| {
                    InfraError::Provider(crate::provider::ProviderError::CannotHonour {
                        provider: "nodes in containers",
                        why: "MongoDB is not on the run's Docker network".into(),
                    })
                })?;
                let image = options.docker_images.server.clone().unwrap_or_else(|| crate::cluster::DEFAULT_SERVER_IMAGE.to_owned());
                Some(crate::cluster::ContainerSpec { image, network, mongo_uri })
            }
        },
    };
    tracing::info!(nodes, "starting chat-server nodes");
    Ok(Cluster::start(&spec).await?)
}

/// What the workload and the nemesis leave behind.
struct Driven<T> {
    outcome: WorkloadOutcome,
    faults: Vec<crate::trace::FaultRecord>,
    /// What the faults owned (the nodes and backends they act on).
    owned: T,
    loop_lag: crate::resources::LoopLag,
    resources: Vec<crate::resources::ResourceSample>,
}

/// Stage 3: run the clients and the faults side by side, with the
/// harness's own samplers and progress. `faults` gets the sending window
/// (faults are timed from its start) and the `drop_clients` signal, and
/// returns its records and what it owned.
async fn drive<T>(
    scenario: &Scenario,
    options: &RunOptions,
    subject: Subject,
    planned: &Planned,
    (urls, http_bases): (&[String], &[String]),
    clock: Clock,
    faults: impl AsyncFnOnce(
        tokio::sync::watch::Receiver<Option<client::Window>>,
        tokio::sync::watch::Sender<(u64, f64)>,
    ) -> (Vec<crate::trace::FaultRecord>, T),
) -> Driven<T> {
    let Planned { rooms, plans, tokens, signer } = planned;
    // A declared connect rate is the whole scenario's: each shard takes its share.
    let shards = options.shard.map_or(1, |s| s.count);
    let connect_rate = scenario.workload.connect_rate.map(|r| r / f64::from(shards));
    let shared = Arc::new(Shared::new(rooms.len(), plans, scenario.workload.duration.0).with_connect_rate(connect_rate));
    if let Some(live) = &options.live {
        live.watch(&scenario.name, subject.as_str(), shared.clone());
    }
    let progress = progress_bar(options.quiet, scenario, subject);
    let ticker = spawn_ticker(progress.clone(), shared.clone());
    let (controls, drops) = Controls::new();
    let window = controls.window.subscribe();
    let force = client::Workforce {
        plans,
        urls,
        rooms,
        workload: &scenario.workload,
        seed: options.seed,
        clock,
        shared: shared.clone(),
        start_at_unix_ns: options.start_at_unix_ns,
        system: &scenario.system,
        tokens,
        confirm_after: scenario.checks.confirm_after.0,
        auth: scenario.auth.as_ref(),
        http_bases,
        signer: signer.clone(),
    };
    let (lag_stop, lag) = crate::resources::spawn_loop_lag();
    let (sampler_stop, sampler) = crate::resources::spawn_sampler();
    let (outcome, (faults, owned)) = tokio::join!(client::run(force, controls), faults(window, drops));
    let _ = (lag_stop.send(()), sampler_stop.send(()));
    let (loop_lag, resources) = (lag.await.unwrap_or_default(), sampler.await.unwrap_or_default());
    ticker.abort();
    progress.finish_and_clear();
    Driven { outcome, faults, owned, loop_lag, resources }
}

/// (provider, backend description, whether every backend is the real thing).
fn describe(mongo: &MongoBackend, kafka: Option<&KafkaBackend>, broker: Option<&BrokerBackend>) -> (String, String, bool) {
    let provider = mongo.provider.as_str().to_owned();
    match (kafka, broker) {
        (Some(k), _) => (provider, format!("{} + {}", mongo.version, k.version), mongo.is_real_mongodb && k.is_real_kafka),
        // Redis and NATS are always the real servers.
        (None, Some(b)) => {
            let real =
                if b.provider == crate::provider::ProviderKind::External { b.version.clone() } else { format!("{} (real)", b.version) };
            (format!("{provider} + {}", b.provider.as_str()), format!("{} + {real}", mongo.version), mongo.is_real_mongodb)
        }
        (None, None) => (provider, mongo.version.clone(), mongo.is_real_mongodb),
    }
}

/// One node's flags for its broker: its link proxy if it has one, else the
/// broker itself.
fn broker_args(backends: &Backends, node: usize) -> Vec<String> {
    if let Some(k) = &backends.kafka {
        let bootstrap = backends.kafka_links.get(node).map_or_else(|| k.bootstrap.clone(), |l| l.proxy.addr.to_string());
        return vec!["--kafka-bootstrap".to_owned(), bootstrap];
    }
    let Some(b) = &backends.broker else { return Vec::new() };
    let url = match backends.broker_links.get(node) {
        Some(link) => format!("{}://{}", b.url.split_once("://").map_or("redis", |(scheme, _)| scheme), link.addr),
        None => b.url.clone(),
    };
    let flag = match b.kind {
        BrokerKind::Redis => "--redis-url",
        BrokerKind::Nats => "--nats-url",
    };
    vec![flag.to_owned(), url]
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

/// The URI with its single host replaced by `addr`, connecting directly:
/// with `replicaSet` the driver would discover the members' real addresses
/// and go around the proxy.
fn with_host(uri: &str, addr: std::net::SocketAddr) -> String {
    let rest = uri.strip_prefix("mongodb://").unwrap_or(uri);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (path, query) = match rest[end..].split_once('?') {
        Some((path, query)) => (path, query),
        None => (&rest[end..], ""),
    };
    let mut params: Vec<&str> =
        query.split('&').filter(|p| !p.is_empty() && !p.starts_with("replicaSet=") && !p.starts_with("directConnection=")).collect();
    params.push("directConnection=true");
    let path = if path.is_empty() { "/" } else { path };
    format!("mongodb://{addr}{path}?{}", params.join("&"))
}

/// Flags for every node: the Kafka topic in kafka mode, the scenario's
/// `server_args`, and the command line's (each node's bootstrap is in
/// `per_node_args`).
fn node_args(scenario: &Scenario, options: &RunOptions, backends: &Backends, db: &str) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(k) = &backends.kafka {
        args.extend(["--kafka-topic".to_owned(), k.topic.clone()]);
    }
    // One channel prefix or stream per run: two runs on one external broker
    // never cross-talk.
    match backends.broker.as_ref().map(|b| b.kind) {
        Some(BrokerKind::Redis) => args.extend(["--redis-channel-prefix".to_owned(), format!("chatbench.{db}.room.")]),
        Some(BrokerKind::Nats) => args.extend(["--nats-stream".to_owned(), nats_stream_name(db)]),
        None => {}
    }
    args.extend(scenario.topology.server_args.iter().cloned());
    args.extend(options.server_args.iter().cloned());
    args
}

/// A JetStream stream name for the run: names may not hold `.`, `*`, `>`,
/// path separators or whitespace.
fn nats_stream_name(db: &str) -> String {
    let safe: String = db.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("chatbench_{safe}")
}

fn progress_bar(quiet: bool, scenario: &Scenario, subject: Subject) -> ProgressBar {
    let visible = !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let total = (scenario.workload.duration.0 + scenario.workload.drain_timeout.0).as_secs().max(1);
    let bar = ProgressBar::with_draw_target(Some(total), if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
    bar.set_style(ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {msg}").expect("the progress template is valid"));
    bar.set_prefix(format!("{} / {subject}", scenario.name));
    bar
}

fn spawn_ticker(bar: ProgressBar, shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let started = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            bar.set_position(started.elapsed().as_secs());
            let sent = shared.sent.load(Ordering::Relaxed);
            if sent == 0 {
                // The connect phase (long at 100k connections, paced by
                // `workload.connect_rate`): how many are up so far.
                bar.set_message(format!(
                    "connecting: {} up, {} gave up",
                    shared.ready.load(Ordering::Relaxed),
                    shared.gave_up.load(Ordering::Relaxed)
                ));
                continue;
            }
            bar.set_message(format!(
                "sent {} acked {} delivered {} errors {}",
                sent,
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
        match client.get(node.http_url(chatbench_wire::paths::METRICS)).send().await {
            Ok(r) => {
                let text = r.text().await.unwrap_or_default();
                counters.add_prometheus_text(&text);
                let stages = crate::report::NodeStages::from_prometheus_text(node.index as u32, &text);
                if stages.insert_to_fanout.count + stages.fanout_to_socket.count > 0 {
                    counters.stages.push(stages);
                }
            }
            Err(e) => tracing::warn!(node = node.index, error = %e, "could not read /metrics"),
        }
    }
    counters
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
        // A replica set member behind the proxy: no discovery around it.
        let rs = "mongodb://127.0.0.1:27017/?replicaSet=rs0&w=majority";
        assert_eq!(with_host(rs, "127.0.0.1:40000".parse().unwrap()), "mongodb://127.0.0.1:40000/?w=majority&directConnection=true");
        assert_eq!(with_host("mongodb://h:1", "127.0.0.1:2".parse().unwrap()), "mongodb://127.0.0.1:2/?directConnection=true");
    }

    /// `token_command` learns what to make: a member's rooms, an
    /// intruder's kind and the room its credentials are for; an intruder
    /// without credentials runs nothing.
    #[tokio::test]
    async fn a_token_command_is_told_what_credentials_to_make() {
        let text = "name: t\ntopology: {nodes: 1}\nworkload:\n  rooms: 2\n  subscribers_per_room: 1\n  senders_per_room: 0\n  \
                    chatters_per_room: 1\n  load: {open: {rate_per_s: 1}}\n  duration: 1s\n  rooms_per_client: 2\n\
                    system:\n  credentials: {token_command: [echo, '{credentials} {client} {room} {rooms}']}\n\
                    auth:\n  intruders: [{credentials: other_room}, {credentials: expired}, {credentials: none}]\n";
        let scenario = crate::scenario::parse_str(text, "t.yaml").unwrap();
        let rooms = vec!["r0".to_owned(), "r1".to_owned()];
        let mut plans = plan_clients(&scenario.workload, 1, 1, 1);
        let members = plans.len() as u32;
        plans.extend(client::plan_intruders(scenario.auth.as_ref().unwrap(), members, 2, 1));
        let tokens = client_tokens(&scenario, &plans, &rooms).await.unwrap();
        let member = plans.iter().position(|p| p.role.intruder().is_none() && p.room == 0).unwrap();
        assert_eq!(tokens[member], format!("member {member} r0 r0,r1"));
        let m = members as usize;
        assert_eq!(tokens[m], format!("other_room {m} r0-other r0-other"));
        assert_eq!(tokens[m + 1], format!("expired {} r1 r1", m + 1));
        assert_eq!(tokens[m + 2], "", "no credentials, nothing run");
    }
}
