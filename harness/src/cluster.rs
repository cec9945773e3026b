//! N `chat-server` processes on ports outside the ephemeral range, each
//! owned by a [`ChildGuard`]. A node reports its address on the first
//! stdout line; its logs go to the
//! run's output folder. `start` returns once every node's `/healthz` is 200.

mod container;

pub use container::{ContainerSpec, DEFAULT_SERVER_IMAGE, NODE_PORT};

use crate::process::{ChildGuard, tail};
use crate::scenario::Mode;
use container::NodeContainer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "chat-server binary not found (looked at {looked}); build it with `cargo build --workspace --bins` or set CHATBENCH_SERVER_BIN"
    )]
    BinaryMissing { looked: String },
    #[error("node {index}: {what}; last log lines ({log}):\n{tail}")]
    NodeFailed { index: usize, what: String, log: String, tail: String },
}

/// How to start the nodes.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub server_bin: PathBuf,
    pub nodes: u32,
    pub mongo_uri: String,
    /// Per node, a different MongoDB URI (through that node's fault proxy).
    pub node_mongo_uris: Vec<String>,
    pub db: String,
    pub mode: Mode,
    /// Extra `chat-server` flags (e.g. `--sabotage` in tests).
    pub extra_args: Vec<String>,
    /// Per node, more flags (e.g. that node's Kafka bootstrap, which may be
    /// its own fault proxy).
    pub per_node_args: Vec<Vec<String>>,
    pub log_dir: PathBuf,
    /// Start nodes with this command instead of `server_bin`.
    pub command: Option<crate::scenario::CommandSystem>,
    /// Run the nodes in containers (`topology.nodes_in: containers`).
    pub containers: Option<ContainerSpec>,
}

pub struct Node {
    pub index: usize,
    pub addr: SocketAddr,
    pub log: PathBuf,
    /// How many times this node was restarted.
    pub generation: u32,
    handle: Handle,
}

/// What runs a node: a child process, or a container.
#[allow(clippy::large_enum_variant, reason = "one per node, a handful per run, never moved in a hot path")]
enum Handle {
    Process(ChildGuard),
    Container(NodeContainer),
}

impl Node {
    pub fn ws_url(&self) -> String {
        self.ws_url_at(chatbench_wire::paths::WS)
    }

    /// The WebSocket URL of another endpoint (e.g. `/stomp`).
    pub fn ws_url_at(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Exit status if the process has died.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        match &mut self.handle {
            Handle::Process(guard) => guard.exited(),
            Handle::Container(c) => c.exited(),
        }
    }

    pub fn pid(&self) -> i32 {
        match &self.handle {
            Handle::Process(guard) => guard.pid(),
            Handle::Container(c) => c.pid(),
        }
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    /// How the nodes were started (a restart reuses it, on the same address).
    pub spec: Option<ClusterSpec>,
    /// A command system's `{data_dir}`s, one per node, kept across its
    /// restarts and removed with the cluster (after the nodes: fields drop
    /// in order).
    data: Option<tempfile::TempDir>,
}

/// Where the `chat-server` binary is: CHATBENCH_SERVER_BIN, else next to the
/// running executable (or one folder up, for test binaries in `deps/`).
pub fn find_server_bin() -> Result<PathBuf, ClusterError> {
    if let Some(path) = std::env::var_os("CHATBENCH_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let mut looked = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join("chat-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
            looked.push(candidate.display().to_string());
        }
    }
    if let Some(found) = crate::process::which("chat-server") {
        return Ok(found);
    }
    looked.push("PATH".into());
    Err(ClusterError::BinaryMissing { looked: looked.join(", ") })
}

impl Cluster {
    /// Nodes taken out of a cluster, to stop them on their own.
    pub fn of(nodes: Vec<Node>) -> Cluster {
        Cluster { nodes, spec: None, data: None }
    }

    pub async fn start(spec: &ClusterSpec) -> Result<Cluster, ClusterError> {
        // Start all nodes at once, then wait for each: start-up overlaps.
        let data = match &spec.command {
            Some(_) => Some(data_dirs(spec.nodes).map_err(|e| ClusterError::NodeFailed {
                index: 0,
                what: format!("cannot create the nodes' data directories: {e}"),
                log: spec.log_dir.display().to_string(),
                tail: String::new(),
            })?),
            None => None,
        };
        let root = data.as_ref().map(|d| d.path());
        let mut starting = Vec::new();
        for index in 0..spec.nodes as usize {
            starting.push(start_node(spec, root, index, None));
        }
        let mut nodes = Vec::new();
        for result in futures::future::join_all(starting).await {
            nodes.push(result?);
        }
        let mut cluster = Cluster { nodes, spec: Some(spec.clone()), data };
        for node in &mut cluster.nodes {
            wait_ready(spec, node).await?;
        }
        Ok(cluster)
    }

    /// SIGTERM every node and wait for it to exit (SIGKILL after `grace`).
    /// Returns the nodes that did not exit cleanly.
    pub async fn stop(mut self, grace: Duration) -> Vec<String> {
        let mut unclean = Vec::new();
        for node in &mut self.nodes {
            let status = match &mut node.handle {
                Handle::Process(guard) => guard.terminate(grace).await,
                Handle::Container(c) => {
                    // A stopped (downed) container has its status already.
                    if c.exited().is_none() && c.signal(nix::sys::signal::Signal::SIGTERM).await.is_ok() {
                        let deadline = tokio::time::Instant::now() + grace;
                        while c.exited().is_none() && tokio::time::Instant::now() < deadline {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    c.exited()
                }
            };
            match status {
                Some(status) if status.success() => {}
                other => unclean.push(format!("node {} exited with {other:?}", node.index)),
            }
        }
        unclean
    }

    /// Signal one node's process group (kill, stop, pause, resume); for a
    /// node in a container, its container.
    pub async fn signal(&self, index: usize, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        match &self.nodes[index].handle {
            Handle::Process(guard) => guard.signal(signal).map_err(anyhow::Error::from),
            Handle::Container(c) => c.signal(signal).await,
        }
    }

    /// Cut node `index` from MongoDB (`cut`), or heal the cut: nodes in
    /// containers only.
    pub async fn partition(&self, index: usize, cut: bool) -> anyhow::Result<()> {
        match &self.nodes[index].handle {
            Handle::Container(c) => c.partition(cut).await,
            Handle::Process(_) => Err(anyhow::anyhow!("partition needs nodes in containers (topology.nodes_in: containers)")),
        }
    }

    /// Wait until a signalled node has exited (up to `timeout`).
    pub async fn wait_exit(&mut self, index: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.nodes[index].exited() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// Start a node again on the address it had (clients reconnect there).
    /// Its log continues in a numbered file next to the first.
    pub async fn restart(&mut self, index: usize) -> Result<(), ClusterError> {
        let spec = self.spec.clone().expect("a started cluster keeps its spec");
        let addr = self.nodes[index].addr;
        let generation = self.nodes[index].generation + 1;
        if let Handle::Container(c) = &mut self.nodes[index].handle {
            // The same container, started again: same port, same network.
            let log = spec.log_dir.join(format!("node-{index}.{generation}.log"));
            let failed = |what: String| ClusterError::NodeFailed { index, what, log: log.display().to_string(), tail: tail(&log, 20) };
            c.restart(&log).await.map_err(|e| failed(format!("{e:#}")))?;
            let node = &mut self.nodes[index];
            node.generation = generation;
            node.log = log;
            return wait_ready(&spec, node).await;
        }
        let root = self.data.as_ref().map(|d| d.path());
        let node = start_node(&spec, root, index, Some((addr, generation))).await?;
        self.nodes[index] = node;
        wait_ready(&spec, &mut self.nodes[index]).await
    }

    /// Nodes that died on their own, with their exit status.
    pub fn dead_nodes(&mut self) -> Vec<(usize, std::process::ExitStatus)> {
        self.nodes.iter_mut().filter_map(|n| n.exited().map(|s| (n.index, s))).collect()
    }
}

/// A command system's data directories: `node-<i>` under a fresh temporary
/// directory, each open to every user (1777, as /tmp is) so that a server
/// which drops privileges (Debian's rabbitmq-server runs as `rabbitmq`)
/// can keep its state there.
fn data_dirs(nodes: u32) -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::Builder::new().prefix("chatbench-data-").tempdir()?;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o1777))?;
    for index in 0..nodes {
        let dir = root.path().join(format!("node-{index}"));
        std::fs::create_dir(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777))?;
    }
    Ok(root)
}

/// Start node `index`; `again` = (address to reuse, generation) for a
/// restart; `data` = the root of a command system's `{data_dir}`s.
async fn start_node(spec: &ClusterSpec, data: Option<&Path>, index: usize, again: Option<(SocketAddr, u32)>) -> Result<Node, ClusterError> {
    let log = match again {
        None => spec.log_dir.join(format!("node-{index}.log")),
        Some((_, generation)) => spec.log_dir.join(format!("node-{index}.{generation}.log")),
    };
    let failed = |what: String| ClusterError::NodeFailed { index, what, log: log.display().to_string(), tail: tail(&log, 20) };
    if let Some(command) = &spec.command {
        let data_dir = data.map(|d| d.join(format!("node-{index}"))).unwrap_or_default();
        return start_command_node(spec, command, index, &data_dir, again, log).await;
    }
    if let Some(containers) = &spec.containers {
        let port = crate::process::stable_port().map_err(|e| failed(format!("no free port: {e}")))?;
        let mut args: Vec<String> =
            ["--listen".to_owned(), format!("0.0.0.0:{NODE_PORT}"), "--mongo-uri".to_owned(), containers.mongo_uri.clone()]
                .into_iter()
                .chain(["--db".to_owned(), spec.db.clone(), "--node-id".to_owned(), format!("node-{index}")])
                .chain(["--mode".to_owned(), spec.mode.as_str().to_owned()])
                .collect();
        args.extend(spec.extra_args.iter().cloned());
        args.extend(spec.per_node_args.get(index).into_iter().flatten().cloned());
        let container = NodeContainer::start(containers, index, port, args, &log).await.map_err(|e| failed(format!("{e:#}")))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        return Ok(Node { index, addr, log, generation: 0, handle: Handle::Container(container) });
    }
    if !spec.server_bin.is_file() {
        return Err(ClusterError::BinaryMissing { looked: spec.server_bin.display().to_string() });
    }
    // A node listens outside the ephemeral range, so that while it is down
    // for a restart no client socket can take its port (a port the OS picks
    // for `:0` is in that range; seen as the restarted node dying with
    // `address already in use`). A port taken between the check and the
    // node's bind fails the first start: try another.
    if let Some((addr, _)) = again {
        return start_reference_node(spec, index, again, addr.to_string(), log).await;
    }
    let mut attempt = 0;
    loop {
        let port = crate::process::stable_port().map_err(|e| failed(format!("no free port: {e}")))?;
        match start_reference_node(spec, index, None, format!("127.0.0.1:{port}"), log.clone()).await {
            Err(ClusterError::NodeFailed { tail, .. }) if attempt < 2 && tail.contains("in use") => attempt += 1,
            other => return other,
        }
    }
}

/// A reference-server node listening on `listen`.
async fn start_reference_node(
    spec: &ClusterSpec,
    index: usize,
    again: Option<(SocketAddr, u32)>,
    listen: String,
    log: PathBuf,
) -> Result<Node, ClusterError> {
    let failed = |what: String| ClusterError::NodeFailed { index, what, log: log.display().to_string(), tail: tail(&log, 20) };
    let log_file = std::fs::File::create(&log).map_err(|e| failed(format!("cannot create log: {e}")))?;
    let mut cmd = Command::new(&spec.server_bin);
    let mongo_uri = spec.node_mongo_uris.get(index).unwrap_or(&spec.mongo_uri);
    cmd.args(["--listen", &listen, "--mongo-uri", mongo_uri, "--db", &spec.db])
        .args(["--node-id", &format!("node-{index}"), "--mode", spec.mode.as_str()])
        .args(&spec.extra_args)
        .args(spec.per_node_args.get(index).into_iter().flatten())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file));
    let mut guard = ChildGuard::spawn(format!("node-{index}"), &mut cmd).map_err(|e| failed(format!("cannot spawn: {e}")))?;
    let stdout = guard.child_mut().stdout.take().ok_or_else(|| failed("no stdout pipe".into()))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
    let line = match first {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) => {
            return Err(failed(format!("exited before listening ({:?})", guard.child_mut().wait().await.ok())));
        }
        Ok(Err(e)) => return Err(failed(format!("reading stdout: {e}"))),
        Err(_) => return Err(failed("did not print `listening <addr>` within 20s".into())),
    };
    let addr: SocketAddr = line
        .strip_prefix("listening ")
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| failed(format!("first stdout line was {line:?}, expected `listening <ip>:<port>`")))?;
    // Keep draining stdout so the node never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Node { index, addr, log, generation: again.map_or(0, |a| a.1), handle: Handle::Process(guard) })
}

/// A node of a `system.command`: the template filled in for this node, on
/// a free port (the same one on a restart), stdout and stderr to its log.
async fn start_command_node(
    spec: &ClusterSpec,
    command: &crate::scenario::CommandSystem,
    index: usize,
    data_dir: &Path,
    again: Option<(SocketAddr, u32)>,
    log: PathBuf,
) -> Result<Node, ClusterError> {
    let failed = |what: String| ClusterError::NodeFailed { index, what, log: log.display().to_string(), tail: tail(&log, 20) };
    let addr = match again {
        Some((addr, _)) => addr,
        // A free port outside the ephemeral range (see `start_node`).
        None => SocketAddr::from(([127, 0, 0, 1], crate::process::stable_port().map_err(|e| failed(format!("no free port: {e}")))?)),
    };
    let mongo_uri = spec.node_mongo_uris.get(index).unwrap_or(&spec.mongo_uri);
    let per_node = spec.per_node_args.get(index).cloned().unwrap_or_default();
    let flag = |args: &[String], name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_default();
    let kafka = flag(&per_node, "--kafka-bootstrap");
    let topic = flag(&spec.extra_args, "--kafka-topic");
    let redis = flag(&per_node, "--redis-url");
    let nats = flag(&per_node, "--nats-url");
    let fill = |t: &str| {
        t.replace("{port}", &addr.port().to_string())
            .replace("{node}", &index.to_string())
            .replace("{mongo_uri}", mongo_uri)
            .replace("{kafka_bootstrap}", &kafka)
            .replace("{kafka_topic}", &topic)
            .replace("{redis_url}", &redis)
            .replace("{nats_url}", &nats)
            .replace("{mode}", spec.mode.as_str())
            .replace("{db}", &spec.db)
            .replace("{data_dir}", &data_dir.display().to_string())
    };
    let argv: Vec<String> = command.run.iter().map(|a| fill(a)).collect();
    let log_file = std::fs::File::create(&log).map_err(|e| failed(format!("cannot create log: {e}")))?;
    let err_file = log_file.try_clone().map_err(|e| failed(format!("cannot share log: {e}")))?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::from(log_file)).stderr(Stdio::from(err_file));
    for (k, v) in &command.env {
        cmd.env(k, fill(v));
    }
    let guard = ChildGuard::spawn(format!("node-{index}"), &mut cmd).map_err(|e| failed(format!("cannot spawn {}: {e}", argv[0])))?;
    Ok(Node { index, addr, log, generation: again.map_or(0, |a| a.1), handle: Handle::Process(guard) })
}

/// Ready: the reference server's `/healthz`, or a command's readiness probe.
async fn wait_ready(spec: &ClusterSpec, node: &mut Node) -> Result<(), ClusterError> {
    use crate::scenario::Readiness;
    let Some(command) = &spec.command else { return wait_healthy(node).await };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().expect("a plain HTTP client builds");
    let mut last = String::new();
    let mut node_exited = None;
    while tokio::time::Instant::now() < deadline {
        let ready = match &command.ready {
            Readiness::Tcp => tokio::net::TcpStream::connect(node.addr).await.map(drop).map_err(anyhow::Error::from),
            Readiness::Http(path) => match client.get(node.http_url(path)).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(anyhow::anyhow!("GET {path}: {}", r.status())),
                Err(e) => Err(anyhow::Error::from(e)),
            },
            Readiness::Log(text) => {
                if std::fs::read_to_string(&node.log).unwrap_or_default().contains(text.as_str()) {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("no log line with {text:?} yet"))
                }
            }
        };
        match ready {
            Ok(()) => return Ok(()),
            Err(e) => last = format!("{e:#}"),
        }
        if let Some(status) = node.exited() {
            node_exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ClusterError::NodeFailed {
        index: node.index,
        what: match node_exited {
            Some(status) => format!("the command exited ({status}) before it was ready"),
            None => format!("not ready within 60s ({:?}; last: {last})", command.ready),
        },
        log: node.log.display().to_string(),
        tail: tail(&node.log, 20),
    })
}

async fn wait_healthy(node: &Node) -> Result<(), ClusterError> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().expect("a plain HTTP client builds");
    let url = node.http_url(chatbench_wire::paths::HEALTHZ);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ClusterError::NodeFailed {
        index: node.index,
        what: format!("/healthz not 200 within 30s (last: {last})"),
        log: node.log.display().to_string(),
        tail: tail(&node.log, 20),
    })
}
