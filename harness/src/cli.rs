//! The `chatbench` command line: `run`, `check`, `doctor`, `schema`.
//! Exit codes: 0 all checks passed, 1 a check failed, 2 the scenario or the
//! command line is wrong, 3 infrastructure failed, 130 interrupted.

use crate::cluster::find_server_bin;
use crate::report::evaluate::{self, evaluate};
use crate::report::{REPORT_SCHEMA_VERSION, RunReport};
use crate::run::{RunOptions, run};
use crate::scenario::{self, Checks, Mode, ProviderChoice, Scenario};
use crate::trace::Trace;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

pub const EXIT_PASS: u8 = 0;
pub const EXIT_CHECK_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INFRA: u8 = 3;
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser, Debug)]
#[command(
    name = "chatbench",
    version,
    about = "Does change-stream fan-out deliver every chat message exactly once, in order, and how fast?"
)]
pub struct Cli {
    /// Less output: no progress bar, warnings only.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// The summary's every row, zeros included (by default rows that are
    /// all zeros are folded away).
    #[arg(long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a scenario: start backends and nodes, drive clients, check, report.
    Run(RunArgs),
    /// Run a scenario over a grid of parameters (or bisect the rate) and
    /// draw latency–throughput curves with the knee per mode.
    Sweep(SweepArgs),
    /// Re-check a recorded trace offline.
    Check {
        /// A trace.bin from a run's output folder.
        trace: PathBuf,
        /// Judge with this scenario's checks instead of the ones recorded.
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
    /// Compare two runs' report.json (or two sweeps' sweep.json: knees and
    /// curves), or with --history the newest run of a scenario against the
    /// runs before it; exit 1 if a gated metric regressed.
    Compare {
        /// The baseline report.json or sweep.json.
        #[arg(required_unless_present = "history")]
        baseline: Option<PathBuf>,
        /// The candidate report.json or sweep.json.
        #[arg(required_unless_present = "history")]
        candidate: Option<PathBuf>,
        /// Metrics that gate (default: delivery-p99 and acked-per-s).
        #[arg(long = "metric", value_enum)]
        metrics: Vec<crate::report::compare::Metric>,
        /// How much worse (percent) a gated metric may get.
        #[arg(long, default_value_t = 10.0)]
        tolerance: f64,
        /// A history file (`run --history`): judge its newest run of the
        /// scenario against the median of the runs before it.
        #[arg(long, conflicts_with_all = ["baseline", "candidate"])]
        history: Option<PathBuf>,
        /// With --history: which scenario (default: the newest run's).
        #[arg(long, requires = "history")]
        scenario: Option<String>,
        /// With --history: how many earlier runs make the baseline's medians.
        #[arg(long, default_value_t = 5, requires = "history")]
        window: usize,
    },
    /// One message's timeline in a run: each send, ack, delivery (body as
    /// sent or not), its subscribers' connection events and the faults
    /// around it, and what the checks found about it.
    Explain {
        /// A run's output folder (every mode in it), or one trace.bin.
        run: PathBuf,
        /// The message: its wire id (`m12884901928`) or number.
        msg: String,
    },
    /// Print a trace's events as text (optionally one client's, or one message's).
    Dump {
        trace: PathBuf,
        #[arg(long)]
        client: Option<u32>,
        #[arg(long)]
        msg: Option<u64>,
    },
    /// Join the shards of a sharded run (`run --shard I/N`) into one
    /// verdict: every check on the merged trace, reports as for one run.
    /// A shard that never reported fails the verdict.
    Merge {
        /// The shards' run folders (`run --out`), one per shard.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Output folder for the merged reports and traces.
        #[arg(long)]
        out: PathBuf,
    },
    /// Start backends (MongoDB; Kafka with --kafka) for runs to share, print
    /// their addresses (`mongo_uri=...`, `kafka_bootstrap=...`) and keep them
    /// up until Ctrl-C / SIGTERM (exit 130). E.g. for local shards.
    Backends {
        #[arg(long, value_enum, default_value = "auto")]
        provider: ProviderChoice,
        /// Also start Kafka.
        #[arg(long)]
        kafka: bool,
        /// The docker provider's image for `mongo` or `kafka` (repeatable).
        #[arg(long = "docker-image", value_name = "KEY=IMAGE")]
        docker_images: Vec<String>,
        /// Folder for the backends' logs and data (default: a temporary one).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Kubernetes: render the manifests of a sharded run.
    #[command(subcommand)]
    K8s(K8sCommand),
    /// Which providers work on this machine, and what to install for the others.
    Doctor,
    /// Print the scenario JSON Schema.
    Schema,
}

#[derive(Subcommand, Debug)]
pub enum K8sCommand {
    /// Print the manifests (ConfigMap, results claim, Indexed Job of
    /// shards, merge Job) for `kubectl apply -f -`.
    Render(K8sRenderArgs),
}

#[derive(clap::Args, Debug)]
pub struct K8sRenderArgs {
    /// The scenario file (YAML); it goes into a ConfigMap.
    pub scenario: PathBuf,
    /// How many shard pods (rooms are split among them).
    #[arg(long)]
    pub shards: u32,
    /// The chatbench image (deploy/Dockerfile), e.g. registry.example/chatbench:0.1.0.
    #[arg(long)]
    pub image: String,
    /// The mode the shards run (default: the scenario's, if it has one).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// The shared MongoDB's connection string (or --mongo-uri-secret).
    #[arg(long, required_unless_present = "mongo_uri_secret")]
    pub mongo_uri: Option<String>,
    /// A Secret holding the connection string: NAME/KEY.
    #[arg(long, conflicts_with = "mongo_uri")]
    pub mongo_uri_secret: Option<String>,
    /// The shared Kafka (kafka mode).
    #[arg(long)]
    pub kafka_bootstrap: Option<String>,
    /// When the shards start sending (RFC 3339). Default: now + --lead.
    #[arg(long)]
    pub start_at: Option<String>,
    /// With no --start-at: how far ahead the start is (pods must be
    /// scheduled and images pulled by then).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub lead: std::time::Duration,
    #[arg(long)]
    pub namespace: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// CPU per shard pod (request = limit).
    #[arg(long, default_value = "2")]
    pub cpu: String,
    /// Memory per shard pod (request = limit).
    #[arg(long, default_value = "2Gi")]
    pub memory: String,
    /// Write results to this existing ReadWriteMany claim instead of a new one.
    #[arg(long)]
    pub results_claim: Option<String>,
    /// Storage class of the new results claim.
    #[arg(long, conflicts_with = "results_claim")]
    pub storage_class: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The scenario file (YAML).
    pub scenario: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Output folder (default: `results/<timestamp>-<scenario>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override `topology.nodes` (e.g. to compare 1, 2 and 3 nodes).
    #[arg(long)]
    pub nodes: Option<u32>,
    /// The system's WebSocket URLs, one per node (repeatable): replace
    /// `system.external.urls`, and `topology.nodes` with their number
    /// (e.g. a shipped declaration under scenarios/protocols/ against
    /// your server: `--url ws://127.0.0.1:3000/cable`).
    #[arg(long = "url", value_name = "URL")]
    pub urls: Vec<String>,
    /// Report this mode's results but leave it out of the exit code (e.g. the
    /// kafka baseline under faults, whose findings are reported as they are).
    #[arg(long = "report-only-mode", value_enum)]
    pub report_only_modes: Vec<Mode>,
    /// Run shard I of N: only the rooms r with r % N == I, and their
    /// clients (room-affine, so every latency is measured on one clock).
    /// `chatbench merge` joins the shards' results into one verdict.
    #[arg(long)]
    pub shard: Option<crate::trace::ShardOf>,
    /// Start sending at this wall-clock instant (RFC 3339, e.g.
    /// 2026-11-26T20:00:00Z), so the shards of a run start together.
    #[arg(long)]
    pub start_at: Option<String>,
    /// Name the run's database `chatbench_<mode>_<ID>` (letters, digits,
    /// `-`, `_`). Shards share one: default for a sharded run is derived
    /// from --start-at.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Append this run to a history file (one JSON line: when, the commit
    /// under test, the report without per-event detail), which `compare
    /// --history` reads to flag regressions across commits.
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Serve the clients' live counters (sends, acks, deliveries, errors,
    /// outstanding sends, ready clients; labels scenario and mode) for a
    /// Prometheus to scrape at http://ADDR/metrics while the run lasts,
    /// e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// What a run runs against, shared by `run` and `sweep`.
#[derive(clap::Args, Debug)]
pub struct TargetArgs {
    /// Run only these modes (default: the scenario's `modes`).
    #[arg(long = "mode", value_enum)]
    pub modes: Vec<Mode>,
    /// Backend provider (default: the scenario's, else auto).
    #[arg(long, value_enum)]
    pub provider: Option<ProviderChoice>,
    /// MongoDB URI for --provider external.
    #[arg(long)]
    pub mongo_uri: Option<String>,
    /// Kafka bootstrap servers for --provider external in kafka mode.
    #[arg(long)]
    pub kafka_bootstrap: Option<String>,
    /// Redis URL (redis://HOST:PORT) for --provider external in redis mode.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// NATS URL (nats://HOST:PORT, JetStream on) for --provider external in nats mode.
    #[arg(long)]
    pub nats_url: Option<String>,
    /// The docker provider's image for `mongo`, `kafka` or `server`, e.g.
    /// `mongo=chatbench-local/nx-27017:0.8.1` (repeatable; over the
    /// scenario's `topology.images`; default the official images).
    #[arg(long = "docker-image", value_name = "KEY=IMAGE")]
    pub docker_images: Vec<String>,
    /// Seed for placement, message sizes and schedules.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The chat-server binary (default: next to chatbench, or CHATBENCH_SERVER_BIN).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// TEST ONLY: make every node break guarantees: `drop=0.02,dup=0.01,reorder=0.01`
    /// and/or the liveness flags `refuse_upgrade`, `no_ack`, `refuse_after`, `stop_fanout`.
    #[arg(long)]
    pub sabotage: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    /// The scenario file (YAML).
    pub scenario: PathBuf,
    /// A parameter and its values: `rate=50,100,200` or a geometric ladder
    /// `rate=25..800x2`; also `nodes`, `subscribers`, `message-bytes`.
    /// Repeat to sweep a grid.
    #[arg(long = "vary", required_unless_present = "bisect")]
    pub vary: Vec<String>,
    /// Bisect the open-loop rate for the knee instead: `rate=LOW..HIGH`.
    #[arg(long, conflicts_with = "vary")]
    pub bisect: Option<String>,
    /// Bisection steps past the two bounds.
    #[arg(long, default_value_t = 6)]
    pub bisect_steps: u32,
    /// Fresh runs per point (each with the next seed).
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Override every point's sending duration (e.g. a short CI ladder);
    /// warmup is capped at a quarter of it.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Knee rule: achieved acks/s at least this share of the offered rate.
    #[arg(long, default_value_t = 0.95)]
    pub knee_achieved: f64,
    /// Knee rule: delivery p99 at most this.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub knee_p99: std::time::Duration,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Output folder (default: `results/<timestamp>-sweep-<scenario>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub async fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run(args) => run_command(args, cli.quiet, cli.verbose).await,
        Command::Sweep(args) => sweep_command(args, cli.quiet).await,
        Command::Check { trace, scenario } => check_command(&trace, scenario.as_deref(), cli.verbose),
        Command::Compare { history: Some(history), scenario, window, metrics, tolerance, .. } => {
            history_command(&history, scenario.as_deref(), window, metrics, tolerance)
        }
        Command::Compare { baseline: Some(baseline), candidate: Some(candidate), metrics, tolerance, .. } => {
            compare_command(&baseline, &candidate, metrics, tolerance)
        }
        Command::Compare { .. } => usage_error("compare needs BASELINE and CANDIDATE, or --history FILE"),
        Command::Dump { trace, client, msg } => match Trace::read(&trace) {
            Ok(t) => {
                // A closed pipe (`| head`) ends the dump quietly.
                let _ = dump(&t, client, msg, &mut std::io::stdout().lock());
                ExitCode::from(EXIT_PASS)
            }
            Err(e) => usage_error(e),
        },
        Command::Explain { run, msg } => explain_command(&run, &msg),
        Command::Merge { dirs, out } => merge_command(&dirs, &out, cli.verbose),
        Command::Backends { provider, kafka, docker_images, out } => backends_command(provider, kafka, &docker_images, out).await,
        Command::K8s(K8sCommand::Render(args)) => k8s_render_command(args),
        Command::Doctor => {
            let mut statuses = crate::doctor::survey();
            if let Some(docker) = statuses.iter_mut().find(|s| s.provider == "docker" && s.ready.is_ok()) {
                docker.ready = crate::provider::docker::status().await;
            }
            print!("{}", crate::doctor::render(&statuses));
            ExitCode::from(EXIT_PASS)
        }
        Command::Schema => {
            print!("{}", scenario::schema::scenario_schema_json());
            ExitCode::from(EXIT_PASS)
        }
    }
}

/// `chatbench explain`: the message's timeline in each trace of the run.
fn explain_command(run: &std::path::Path, msg: &str) -> ExitCode {
    let Some(msg) = crate::report::explain::parse_msg(msg) else {
        return usage_error(format!("{msg:?} is not a message: give its wire id (m12884901928) or number"));
    };
    let traces: Vec<PathBuf> = if run.is_dir() {
        let mut found: Vec<PathBuf> = std::fs::read_dir(run)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("trace.bin"))
            .chain(std::iter::once(run.join("trace.bin")))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        found
    } else {
        vec![run.to_path_buf()]
    };
    if traces.is_empty() {
        return usage_error(format!("{}: no trace.bin in it or in its mode folders", run.display()));
    }
    let mut seen = false;
    for path in &traces {
        let trace = match Trace::read(path) {
            Ok(t) => t,
            Err(e) => return usage_error(e),
        };
        if let Some(text) = crate::report::explain::explain(&trace, msg) {
            seen = true;
            println!("== {} ({})\n{text}", trace.meta.mode, path.display());
        }
    }
    if seen {
        ExitCode::from(EXIT_PASS)
    } else {
        usage_error(format!(
            "message {msg} is in none of: {}",
            traces.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ))
    }
}

/// A trace's events as text (optionally one client's, or one message's), then its faults.
fn dump(t: &Trace, client: Option<u32>, msg: Option<u64>, out: &mut impl std::io::Write) -> std::io::Result<()> {
    use crate::trace::EventKind;
    for e in t.events.iter().filter(|e| client.is_none_or(|c| e.client == c)) {
        let about = match e.kind {
            EventKind::Send { msg, .. } | EventKind::Ack { msg, .. } | EventKind::Deliver { msg, .. } => Some(msg),
            EventKind::Error { msg } => msg,
            _ => None,
        };
        if msg.is_none() || about == msg {
            writeln!(out, "{:>14} c{:<4} {:?}", e.t_ns, e.client, e.kind)?;
        }
    }
    for f in &t.meta.faults {
        writeln!(out, "fault {f:?}")?;
    }
    Ok(())
}

/// The client connections this process opens: a shard's share of the
/// scenario's (its rooms' clients), what opens them, and how many
/// processes share the scenario's clients.
fn client_sockets(scenario: &Scenario, shard: Option<crate::trace::ShardOf>) -> (u64, String, u64) {
    let workload = &scenario.workload;
    match shard {
        None => (workload.connections(), "the scenario".into(), 1),
        Some(s) => {
            let rooms = (0..workload.rooms).filter(|r| s.owns_room(*r)).count() as u32;
            (workload.connections_in(rooms), format!("shard {}/{}", s.index, s.count), u64::from(s.count))
        }
    }
}

/// `--url`: the external system's URLs, one node each.
fn use_urls(scenario: &mut Scenario, urls: &[String]) -> Result<(), String> {
    let Some(external) = scenario.system.external.as_mut() else {
        return Err("--url names an external system's nodes; this scenario runs its own (no system.external)".into());
    };
    if let Some(bad) = urls.iter().find(|u| !(u.starts_with("ws://") || u.starts_with("wss://"))) {
        return Err(format!("--url {bad:?} is not a ws:// or wss:// URL"));
    }
    let nodes = urls.len() as u32;
    if scenario.workload.placement_needs_more_nodes(nodes) {
        return Err(format!("--url: {nodes} URLs, but the scenario pins clients to a node index past them"));
    }
    external.urls = urls.to_vec();
    scenario.topology.nodes = nodes;
    Ok(())
}

fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// Run options from the shared flags: Err(exit code) on a usage error.
fn run_options(scenario: &Scenario, target: TargetArgs, out_dir: PathBuf, quiet: bool) -> Result<RunOptions, ExitCode> {
    let modes: Vec<Mode> = if target.modes.is_empty() { scenario.modes.clone() } else { target.modes.clone() };
    let provider = target.provider.unwrap_or(scenario.topology.provider);
    if provider == ProviderChoice::External && target.mongo_uri.is_none() && scenario.topology.mongo.uri.is_none() {
        return Err(usage_error("--provider external needs --mongo-uri (or topology.mongo.uri in the scenario)"));
    }
    if provider == ProviderChoice::External
        && modes.contains(&Mode::Kafka)
        && target.kafka_bootstrap.is_none()
        && scenario.topology.kafka.bootstrap.is_none()
    {
        return Err(usage_error("--provider external in kafka mode needs --kafka-bootstrap (or topology.kafka.bootstrap)"));
    }
    if provider == ProviderChoice::External && modes.contains(&Mode::Redis) && target.redis_url.is_none() {
        return Err(usage_error("--provider external in redis mode needs --redis-url"));
    }
    if provider == ProviderChoice::External && modes.contains(&Mode::Nats) && target.nats_url.is_none() {
        return Err(usage_error("--provider external in nats mode needs --nats-url"));
    }
    // A command or external system is not the reference server: no
    // chat-server binary is needed, and --sabotage has nothing to act on.
    let reference = scenario.system.command.is_none() && scenario.system.external.is_none();
    if !reference && target.sabotage.is_some() {
        return Err(usage_error("--sabotage breaks the reference server on purpose; this scenario's system is another server"));
    }
    let server_bin =
        if reference { target.server_bin.map(Ok).unwrap_or_else(find_server_bin).map_err(usage_error)? } else { PathBuf::new() };
    let mut docker_images = crate::provider::docker::DockerImages::default();
    for spec in &target.docker_images {
        docker_images.set(spec).map_err(usage_error)?;
    }
    let mut server_args = Vec::new();
    if let Some(spec) = &target.sabotage {
        eprintln!("warning: --sabotage {spec}: nodes will break delivery guarantees on purpose (test only)");
        server_args.extend(["--sabotage".to_owned(), spec.clone()]);
    }
    Ok(RunOptions {
        modes,
        provider,
        mongo_uri: target.mongo_uri,
        kafka_bootstrap: target.kafka_bootstrap,
        redis_url: target.redis_url,
        nats_url: target.nats_url,
        docker_images: docker_images.or(&scenario.topology.images),
        out_dir,
        seed: target.seed,
        quiet,
        server_bin,
        server_args,
        shard: None,
        start_at_unix_ns: None,
        run_id: None,
        live: None,
    })
}

async fn run_command(args: RunArgs, quiet: bool, verbose: bool) -> ExitCode {
    let mut scenario = match scenario::load(&args.scenario) {
        Ok(s) => s,
        Err(e) => return usage_error(e),
    };
    if let Some(nodes) = args.nodes {
        if nodes == 0 || scenario.workload.placement_needs_more_nodes(nodes) {
            return usage_error(format!("--nodes {nodes}: need at least 1 node, and every pinned node index must exist"));
        }
        scenario.topology.nodes = nodes;
    }
    if !args.urls.is_empty()
        && let Err(e) = use_urls(&mut scenario, &args.urls)
    {
        return usage_error(e);
    }
    let report_only_modes = args.report_only_modes.clone();
    let out_dir = args
        .out
        .unwrap_or_else(|| PathBuf::from("results").join(format!("{}-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S"), scenario.name)));
    let mut options = match run_options(&scenario, args.target, out_dir.clone(), quiet) {
        Ok(o) => o,
        Err(code) => return code,
    };
    if let Err(e) = shard_options(args.shard, args.start_at.as_deref(), args.run_id.as_deref(), &mut options) {
        return usage_error(e);
    }
    if let Some(addr) = args.metrics_listen {
        match crate::live_metrics::LiveMetrics::start(addr).await {
            Ok(live) => {
                // Asked for by name: said even with --quiet (with :0, the port is news).
                eprintln!("metrics: http://{}/metrics", live.addr);
                options.live = Some(std::sync::Arc::new(live));
            }
            Err(e) => return usage_error(format!("--metrics-listen {addr}: cannot listen there: {e}")),
        }
    }
    if let (Some(shard), Some(fault)) = (args.shard, scenario.shared_backend_fault()) {
        return usage_error(format!(
            "--shard {}/{}: {} has a {fault} fault; the shards share their backends, so a sharded run cannot restart them (run it in one process)",
            shard.index,
            shard.count,
            args.scenario.display()
        ));
    }
    // Each connection is a socket, and a second one in the harness's proxy
    // when the scenario faults the clients' links.
    let per_connection = if scenario.needs_link_proxies(crate::scenario::LinkTarget::Clients) { 3 } else { 1 };
    let (sockets, who, processes) = client_sockets(&scenario, args.shard);
    if let Err(e) = crate::resources::ensure_fd_limit(sockets * per_connection, &who, processes) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_INFRA);
    }
    if let Err(e) = crate::resources::ensure_port_range(sockets, u64::from(crate::client::CLIENTS_PER_SOURCE)) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_INFRA);
    }
    // Nodes this process starts hold these connections too (an external
    // system's limits are its own).
    if scenario.system.external.is_none()
        && let Err(e) = crate::resources::ensure_node_fd_limit(sockets, u64::from(scenario.topology.nodes), &who)
    {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_INFRA);
    }
    match run(&scenario, &options).await {
        Ok(report) => {
            print!("{}", crate::report::table::render(&report, verbose));
            println!("results: {}", out_dir.display());
            if let Some(path) = &args.history {
                let entry = crate::report::history::Entry::of(&report, crate::report::history::current_commit());
                if let Err(e) = crate::report::history::append(path, &entry) {
                    eprintln!("error: appending the run to {}: {e}", path.display());
                    return ExitCode::from(EXIT_INFRA);
                }
                println!("history: {} (commit {})", path.display(), entry.commit.as_deref().unwrap_or("unknown"));
            }
            let report_only: Vec<Mode> = report_only_modes.clone();
            let gated_pass = report
                .modes
                .iter()
                .filter(|m| !report_only.iter().any(|&r| crate::subject::Subject::from(r) == m.mode))
                .all(|m| m.failed_checks().next().is_none());
            if !report.passed && gated_pass {
                println!("(failures above are in report-only modes; exit code 0)");
            }
            ExitCode::from(if gated_pass { EXIT_PASS } else { EXIT_CHECK_FAILED })
        }
        // A declaration that does not fit the system is the scenario's error.
        Err(e @ crate::run::InfraError::Store(_)) => usage_error(e),
        Err(e) => {
            eprintln!("error: infrastructure failed: {e}");
            ExitCode::from(EXIT_INFRA)
        }
    }
}

/// `--shard`, `--start-at`, `--run-id`: a sharded run takes one mode (the
/// shards of a mode start together) and a run id shared by its shards.
fn shard_options(
    shard: Option<crate::trace::ShardOf>,
    start_at: Option<&str>,
    run_id: Option<&str>,
    options: &mut RunOptions,
) -> anyhow::Result<()> {
    options.shard = shard;
    if let Some(at) = start_at {
        let t = chrono::DateTime::parse_from_rfc3339(at)
            .map_err(|e| anyhow::anyhow!("--start-at {at}: not an RFC 3339 time ({e}), e.g. 2026-11-26T20:00:00Z"))?;
        options.start_at_unix_ns =
            Some(t.timestamp_nanos_opt().ok_or_else(|| anyhow::anyhow!("--start-at {at}: out of range"))?.max(0) as u64);
    }
    if let Some(id) = run_id {
        if id.is_empty() || id.len() > 40 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(anyhow::anyhow!("--run-id {id:?}: use 1 to 40 letters, digits, '-' or '_'"));
        }
        options.run_id = Some(id.to_owned());
    }
    if let Some(shard) = options.shard {
        if options.modes.len() != 1 {
            return Err(anyhow::anyhow!(
                "--shard {}/{}: a sharded run takes one mode (give --mode); the shards of a mode must start together",
                shard.index,
                shard.count
            ));
        }
        match (options.start_at_unix_ns, &options.run_id) {
            (Some(at), None) => options.run_id = Some(format!("at{}", at / 1_000_000)),
            (None, None) => {
                return Err(anyhow::anyhow!(
                    "--shard {}/{}: give --start-at (the shards start together and share a database named from it) or --run-id",
                    shard.index,
                    shard.count
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `chatbench sweep`: exit 0 once every point ran (points that fail checks
/// are results, shown and left out of the knee), 2 on bad flags, 3 when a
/// point's infrastructure failed.
async fn sweep_command(args: SweepArgs, quiet: bool) -> ExitCode {
    use crate::report::sweep::{KneeRule, render_table};
    use crate::report::write_sweep;
    use crate::sweep::{self, Search, SweepError, SweepOptions};
    let mut scenario = match scenario::load(&args.scenario) {
        Ok(s) => s,
        Err(e) => return usage_error(e),
    };
    if let Some(d) = args.duration {
        if d.is_zero() || scenario.faults.iter().any(|f| f.at.0 >= d) {
            return usage_error(format!("--duration {d:?}: must be longer than 0s and than every fault's `at`"));
        }
        scenario.workload.duration = crate::scenario::HumanDuration(d);
        scenario.workload.warmup = crate::scenario::HumanDuration(scenario.workload.warmup.0.min(d / 4));
    }
    let search = match &args.bisect {
        Some(spec) => match sweep::parse_bisect(spec) {
            Ok((low, high)) => Search::Bisect { low, high, steps: args.bisect_steps },
            Err(e) => return usage_error(e),
        },
        None => match args.vary.iter().map(|v| sweep::parse_axis(v)).collect::<Result<Vec<_>, _>>() {
            Ok(axes) => Search::Grid(axes),
            Err(e) => return usage_error(e),
        },
    };
    if !(args.knee_achieved > 0.0 && args.knee_achieved <= 1.0) {
        return usage_error(format!("--knee-achieved {}: must be in (0, 1]", args.knee_achieved));
    }
    let out_dir = args.out.clone().unwrap_or_else(|| sweep::default_out(&scenario));
    let run = match run_options(&scenario, args.target, out_dir.clone(), true) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let options = SweepOptions {
        search,
        repeat: args.repeat.max(1),
        knee: KneeRule { min_achieved_share: args.knee_achieved, max_p99_us: sweep::ceiling_us(args.knee_p99) },
        run,
    };
    let visible = !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = indicatif::ProgressBar::with_draw_target(
        None,
        if visible { indicatif::ProgressDrawTarget::stderr() } else { indicatif::ProgressDrawTarget::hidden() },
    );
    bar.set_style(indicatif::ProgressStyle::with_template("sweep [{elapsed_precise}] point {pos}/{len} {msg}").expect("valid template"));
    let result = sweep::sweep(&scenario, &options, |done, total, label| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(label.to_owned());
        if !visible && !quiet {
            eprintln!("sweep: point {}/{total} {label}", done + 1);
        }
    })
    .await;
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            if let Err(e) = write_sweep(&report, &out_dir) {
                eprintln!("error: writing the sweep's results to {}: {e}", out_dir.display());
                return ExitCode::from(EXIT_INFRA);
            }
            print!("{}", render_table(&report));
            println!("results: {} (sweep.json, sweep.md, sweep.html; every point's run under points/)", out_dir.display());
            if report.points.iter().any(|p| p.modes.iter().any(|m| !m.passed)) {
                println!("note: some points failed checks; they are results (see each point's report), left out of the knee");
            }
            ExitCode::from(EXIT_PASS)
        }
        Err(e @ (SweepError::Axis { .. } | SweepError::Point { .. })) => usage_error(e),
        Err(e) => {
            eprintln!("error: infrastructure failed: {e}");
            ExitCode::from(EXIT_INFRA)
        }
    }
}

fn compare_command(
    baseline: &std::path::Path,
    candidate: &std::path::Path,
    metrics: Vec<crate::report::compare::Metric>,
    tolerance: f64,
) -> ExitCode {
    use crate::report::compare::{Metric, compare, render};
    if !(tolerance.is_finite() && tolerance >= 0.0) {
        return usage_error(format!("--tolerance {tolerance}: must be a non-negative percentage"));
    }
    // Two sweeps: knees and curves.
    let is_sweep = |p: &std::path::Path| p.file_name().is_some_and(|n| n == "sweep.json");
    if is_sweep(baseline) || is_sweep(candidate) {
        let (a, b) = match (crate::report::sweep::SweepReport::read(baseline), crate::report::sweep::SweepReport::read(candidate)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return usage_error(e),
        };
        let (text, regressed) = crate::report::sweep::compare(&a, &b, tolerance);
        print!("{text}");
        return ExitCode::from(if regressed { EXIT_CHECK_FAILED } else { EXIT_PASS });
    }
    let (a, b) = match (RunReport::read(baseline), RunReport::read(candidate)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return usage_error(e),
    };
    let gate = if metrics.is_empty() { vec![Metric::DeliveryP99, Metric::AckedPerS] } else { metrics };
    let comparison = compare(&a, &b, &gate, tolerance);
    print!("{}", render(&comparison, tolerance));
    ExitCode::from(if comparison.regressed() { EXIT_CHECK_FAILED } else { EXIT_PASS })
}

/// `chatbench compare --history`: 0 no regression, 1 a regression, 2 the
/// history cannot be read or has too few runs of the scenario.
fn history_command(
    path: &std::path::Path,
    scenario: Option<&str>,
    window: usize,
    metrics: Vec<crate::report::compare::Metric>,
    tolerance: f64,
) -> ExitCode {
    use crate::report::compare::{Metric, render};
    use crate::report::history;
    if !(tolerance.is_finite() && tolerance >= 0.0) {
        return usage_error(format!("--tolerance {tolerance}: must be a non-negative percentage"));
    }
    let entries = match history::read(path) {
        Ok(e) => e,
        Err(e) => return usage_error(e),
    };
    let gate = if metrics.is_empty() { vec![Metric::DeliveryP99, Metric::AckedPerS] } else { metrics };
    match history::judge(&entries, scenario, window, &gate, tolerance) {
        Ok((comparison, candidate, baseline)) => {
            print!("{}{}", history::describe(candidate, &baseline), render(&comparison, tolerance));
            ExitCode::from(if comparison.regressed() { EXIT_CHECK_FAILED } else { EXIT_PASS })
        }
        Err(e) => usage_error(format!("{}: {e}", path.display())),
    }
}

/// `chatbench merge`: 0 the merged verdict passed, 1 a check failed (or a
/// shard is missing), 2 the folders are not shards of one run, 3 nothing
/// to merge or the output could not be written.
fn merge_command(dirs: &[PathBuf], out: &std::path::Path, verbose: bool) -> ExitCode {
    use crate::merge::{MergeRunError, merge_runs};
    match merge_runs(dirs, out) {
        Ok(merged) => {
            print!("{}", crate::report::table::render(&merged.report, verbose));
            let per_million = merged.took.as_secs_f64() / (merged.events.max(1) as f64 / 1e6);
            println!("merged {} events in {:.2} s ({per_million:.2} s per million events)", merged.events, merged.took.as_secs_f64());
            println!("results: {}", out.display());
            ExitCode::from(if merged.report.passed { EXIT_PASS } else { EXIT_CHECK_FAILED })
        }
        // Folders that hold no shard trace, or traces that do not fit together, are bad input.
        Err(e @ (MergeRunError::Traces { .. } | MergeRunError::NothingToMerge { .. })) => usage_error(e),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_INFRA)
        }
    }
}

/// `chatbench backends`: start, print addresses, wait for Ctrl-C.
async fn backends_command(provider: ProviderChoice, with_kafka: bool, docker_images: &[String], out: Option<PathBuf>) -> ExitCode {
    use crate::provider::{kafka, mongo};
    let mut images = crate::provider::docker::DockerImages::default();
    if let Some(e) = docker_images.iter().find_map(|spec| images.set(spec).err()) {
        return usage_error(e);
    }
    let temp = match out {
        Some(_) => None,
        None => match tempfile::tempdir() {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: a temporary folder for the backends: {e}");
                return ExitCode::from(EXIT_INFRA);
            }
        },
    };
    let dir = out.unwrap_or_else(|| temp.as_ref().expect("made above").path().to_path_buf());
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: {}: {e}", dir.display());
        return ExitCode::from(EXIT_INFRA);
    }
    let request =
        mongo::MongoRequest { members: 1, uri: None, persistent: false, server_args: Vec::new(), image: images.mongo, network: None };
    let mongo = match mongo::start(provider, &request, &dir).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INFRA);
        }
    };
    println!("mongo_uri={}", mongo.uri);
    let _kafka = if with_kafka {
        let request = kafka::KafkaRequest {
            topic: "chatbench.backends".into(),
            partitions: 1,
            bootstrap: None,
            persistent: false,
            image: images.kafka.clone(),
        };
        match kafka::start(provider, &request, &dir).await {
            Ok(k) => {
                println!("kafka_bootstrap={}", k.bootstrap);
                Some(k)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_INFRA);
            }
        }
    } else {
        None
    };
    println!("provider={} backend={}", mongo.provider.as_str(), mongo.version);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    eprintln!("backends up (logs in {}); Ctrl-C stops them", dir.display());
    std::future::pending::<()>().await;
    unreachable!("pending never resolves")
}

/// `chatbench k8s render`.
fn k8s_render_command(args: K8sRenderArgs) -> ExitCode {
    use crate::k8s::{MongoRef, RenderOptions, render};
    let text = match std::fs::read_to_string(&args.scenario) {
        Ok(t) => t,
        Err(e) => return usage_error(format!("{}: {e}", args.scenario.display())),
    };
    let scenario = match scenario::load(&args.scenario) {
        Ok(s) => s,
        Err(e) => return usage_error(e),
    };
    let mode = match (args.mode, scenario.modes.as_slice()) {
        (Some(m), _) => m,
        (None, [only]) => *only,
        (None, _) => return usage_error("the scenario has several modes: give --mode (render and apply one mode at a time)"),
    };
    let start_at_unix_ns = match &args.start_at {
        Some(at) => match chrono::DateTime::parse_from_rfc3339(at) {
            Ok(t) => t.timestamp_nanos_opt().unwrap_or(0).max(0) as u64,
            Err(e) => return usage_error(format!("--start-at {at}: not an RFC 3339 time ({e})")),
        },
        None => (chrono::Utc::now() + args.lead).timestamp_nanos_opt().unwrap_or(0).max(0) as u64,
    };
    let mongo = match (&args.mongo_uri, &args.mongo_uri_secret) {
        (Some(uri), _) => MongoRef::Uri(uri.clone()),
        (None, Some(secret)) => match secret.split_once('/') {
            Some((name, key)) if !name.is_empty() && !key.is_empty() => MongoRef::Secret { name: name.into(), key: key.into() },
            _ => return usage_error(format!("--mongo-uri-secret {secret}: expected NAME/KEY")),
        },
        (None, None) => return usage_error("give --mongo-uri or --mongo-uri-secret"),
    };
    let options = RenderOptions {
        shards: args.shards,
        image: args.image,
        mode,
        start_at_unix_ns,
        mongo,
        kafka_bootstrap: args.kafka_bootstrap,
        namespace: args.namespace,
        seed: args.seed,
        cpu: args.cpu,
        memory: args.memory,
        results_claim: args.results_claim,
        storage_class: args.storage_class,
    };
    match render(&scenario, &text, &options) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::from(EXIT_PASS)
        }
        Err(e) => usage_error(e),
    }
}

fn check_command(path: &std::path::Path, scenario: Option<&std::path::Path>, verbose: bool) -> ExitCode {
    let trace = match Trace::read(path) {
        Ok(t) => t,
        Err(e) => return usage_error(e),
    };
    let checks: Checks = match scenario {
        Some(file) => match scenario::load(file) {
            Ok(s) => s.checks,
            Err(e) => return usage_error(e),
        },
        None => trace.meta.checks.clone(),
    };
    let ctx = evaluate::Context { server: Default::default(), notes: vec![format!("re-checked offline from {}", path.display())] };
    let mode = evaluate(&trace, &checks, ctx);
    let passed = mode.failed_checks().next().is_none();
    let report = RunReport {
        schema_version: REPORT_SCHEMA_VERSION,
        chatbench_version: env!("CARGO_PKG_VERSION").to_owned(),
        scenario: trace.meta.scenario.clone(),
        description: String::new(),
        seed: trace.meta.seed,
        started_at: String::new(),
        passed,
        modes: vec![mode],
    };
    print!("{}", crate::report::table::render(&report, verbose));
    ExitCode::from(if report.passed { EXIT_PASS } else { EXIT_CHECK_FAILED })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard opens its own rooms' clients, not the scenario's: 60,032
    /// clients over 16 rooms in 4 shards are 15,008 per shard; 5 rooms in
    /// 2 shards split 3 and 2.
    #[test]
    fn a_shard_counts_its_own_share_of_the_connections() {
        let yaml = |rooms: u32| {
            format!(
                "name: big\ntopology: {{nodes: 4}}\nworkload: {{rooms: {rooms}, subscribers_per_room: 3750, senders_per_room: 1, chatters_per_room: 1, \
                 load: {{open: {{rate_per_s: 10}}}}, duration: 2s}}\n"
            )
        };
        let scenario = crate::scenario::parse_str(&yaml(16), "big.yaml").unwrap();
        assert_eq!(client_sockets(&scenario, None), (60_032, "the scenario".into(), 1));
        for index in 0..4 {
            let shard = crate::trace::ShardOf { index, count: 4 };
            assert_eq!(client_sockets(&scenario, Some(shard)), (15_008, format!("shard {index}/4"), 4));
        }
        let odd = crate::scenario::parse_str(&yaml(5), "big.yaml").unwrap();
        let share = |index| client_sockets(&odd, Some(crate::trace::ShardOf { index, count: 2 })).0;
        assert_eq!((share(0), share(1)), (3 * 3752, 2 * 3752));
    }

    /// `--url` replaces an external system's URLs and its node count, and
    /// is refused, with the reason, for a system the harness starts and for
    /// a URL that is not ws:// or wss://.
    #[test]
    fn url_flags_point_an_external_scenario_at_other_nodes() {
        let external = "name: x\ntopology: {nodes: 1}\nworkload: {rooms: 2, subscribers_per_room: 1, senders_per_room: 1, \
                        load: {open: {rate_per_s: 10}}, duration: 2s}\nsystem: {external: {urls: [\"ws://127.0.0.1:1/ws\"]}, \
                        guarantees: {history: none}}\n";
        let mut s = crate::scenario::parse_str(external, "x.yaml").unwrap();
        let urls = vec!["ws://127.0.0.1:5000/a".to_owned(), "wss://h:1/b".to_owned()];
        use_urls(&mut s, &urls).unwrap();
        assert_eq!((s.system.external.as_ref().unwrap().urls.clone(), s.topology.nodes), (urls, 2));
        let e = use_urls(&mut s, &["http://h/".to_owned()]).unwrap_err();
        assert!(e.contains("not a ws:// or wss:// URL"), "{e}");
        let own = external.replace("system: {external: {urls: [\"ws://127.0.0.1:1/ws\"]}, ", "system: {");
        let mut s = crate::scenario::parse_str(&own, "x.yaml").unwrap();
        let e = use_urls(&mut s, &["ws://h/".to_owned()]).unwrap_err();
        assert!(e.contains("runs its own"), "{e}");
    }
}
