//! Broker providers for the `redis` and `nats` modes: real Redis and NATS
//! (JetStream) servers. [`start`] returns a [`BrokerBackend`] with the URL
//! the nodes use; dropping it stops the broker.
//!
//! - `process` (and `compat`, which means the same here: the real servers
//!   are what `ci/setup redis nats` installs): Debian's `redis-server` or
//!   `nats-server` from PATH, on a port outside the ephemeral range (the
//!   nemesis restarts it on the same port), data in the run's directory.
//! - `external`: a URL the user gives (`--redis-url`, `--nats-url`); it is
//!   checked to answer. chatbench cannot restart or pause it.
//! - `docker`: the server in a container from a local image that
//!   `ci/docker images` builds from the same Debian packages
//!   (`chatbench-local/redis:7.0.15`, `chatbench-local/nats:2.9.10`; or
//!   `--docker-image redis=IMAGE` / `nats=IMAGE`), published on 127.0.0.1
//!   on a port outside the ephemeral range; restart stops and starts the
//!   container, pause is `docker pause`. A missing image is never pulled
//!   unless named.
//!
//! The readiness checks speak one line of each protocol by hand (`PING` /
//! `+PONG`; NATS's `INFO` greeting with JetStream on): a client library for
//! two lines would cost more than it saves.

use super::docker::{self as engine, Pull};
use super::{ProviderChoice, ProviderError, ProviderKind};
use crate::process::{ChildGuard, stable_port, tail, which};
use chatbench_wire::Mode;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use testcontainers_modules::testcontainers::core::IntoContainerPort;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// How long a broker may take to answer after a (re)start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Which broker a mode uses (None: it uses none of these).
pub fn kind_of(mode: Mode) -> Option<BrokerKind> {
    match mode {
        Mode::Redis => Some(BrokerKind::Redis),
        Mode::Nats => Some(BrokerKind::Nats),
        Mode::Changestream | Mode::Kafka => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Redis,
    Nats,
}

impl BrokerKind {
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Redis => "Redis",
            BrokerKind::Nats => "NATS",
        }
    }

    fn binary(self) -> &'static str {
        match self {
            BrokerKind::Redis => "redis-server",
            BrokerKind::Nats => "nats-server",
        }
    }

    /// The local image `ci/docker images` builds for this broker.
    pub fn local_image(self) -> &'static str {
        match self {
            BrokerKind::Redis => engine::LOCAL_REDIS_IMAGE,
            BrokerKind::Nats => engine::LOCAL_NATS_IMAGE,
        }
    }

    /// The port the server listens on inside its container.
    fn container_port(self) -> u16 {
        match self {
            BrokerKind::Redis => 6379,
            BrokerKind::Nats => 4222,
        }
    }

    /// The command a container runs (the official images and the local
    /// ones take the same).
    fn container_cmd(self) -> Vec<String> {
        let args: &[&str] = match self {
            BrokerKind::Redis => {
                &["redis-server", "--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
            }
            BrokerKind::Nats => &["nats-server", "-a", "0.0.0.0", "-p", "4222", "-js", "--no_advertise", "-sd", "/data"],
        };
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    fn scheme(self) -> &'static str {
        match self {
            BrokerKind::Redis => "redis",
            BrokerKind::Nats => "nats",
        }
    }
}

/// What a run asks of its broker.
#[derive(Debug, Clone)]
pub struct BrokerRequest {
    pub kind: BrokerKind,
    /// The broker's URL for `external`.
    pub url: Option<String>,
    /// The scenario restarts or pauses the broker (external refuses).
    pub controlled: bool,
    /// The docker provider's image (default [`BrokerKind::local_image`]).
    pub image: Option<String>,
}

pub struct BrokerBackend {
    pub kind: BrokerKind,
    /// `redis://127.0.0.1:P` or `nats://127.0.0.1:P`.
    pub url: String,
    pub provider: ProviderKind,
    pub version: String,
    running: Option<Running>,
}

/// A broker this process started, and what it takes to start it again.
/// (One per run: the variants' sizes do not matter.)
#[allow(clippy::large_enum_variant)]
enum Running {
    Process { kind: BrokerKind, child: ChildGuard, port: u16, data: PathBuf, log: PathBuf, _dir: tempfile::TempDir },
    Container { kind: BrokerKind, container: ContainerAsync<GenericImage>, port: u16 },
}

impl BrokerBackend {
    /// `host:port` of the broker (for a node's fault proxy).
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        let rest = self.url.split_once("://").map_or(self.url.as_str(), |(_, r)| r);
        let host_port = rest.rsplit('@').next()?.split('/').next()?;
        std::net::ToSocketAddrs::to_socket_addrs(host_port).ok()?.next()
    }

    /// SIGKILL the broker (a crash) and start it again on the same port and
    /// data after `down_for`; returns once it answers.
    /// (A container: stopped without grace and started again, same port.)
    pub async fn restart(&mut self, down_for: Duration) -> anyhow::Result<()> {
        let running = self.running.as_mut().ok_or_else(|| anyhow::anyhow!("chatbench cannot restart an external {}", self.kind.name()))?;
        match running {
            Running::Process { kind, child, port, data, log, .. } => {
                child.kill().await;
                tokio::time::sleep(down_for).await;
                *child = spawn(*kind, *port, data, log)?;
                wait_ready(*kind, *port, log).await
            }
            Running::Container { kind, container, port } => {
                container.stop_with_timeout(Some(0)).await.map_err(|e| anyhow::anyhow!("stopping the {} container: {e}", kind.name()))?;
                tokio::time::sleep(down_for).await;
                container.start().await.map_err(|e| anyhow::anyhow!("starting the {} container again: {e}", kind.name()))?;
                wait_ready(*kind, *port, Path::new("")).await
            }
        }
    }

    /// SIGSTOP the broker for `duration`, then SIGCONT (a container:
    /// `docker pause`, then unpause): it keeps its connections but answers
    /// nothing meanwhile.
    pub async fn pause(&mut self, duration: Duration) -> anyhow::Result<()> {
        let running = self.running.as_mut().ok_or_else(|| anyhow::anyhow!("chatbench cannot pause an external {}", self.kind.name()))?;
        match running {
            Running::Process { child, .. } => {
                child.signal(Signal::SIGSTOP)?;
                tokio::time::sleep(duration).await;
                child.signal(Signal::SIGCONT)?;
            }
            Running::Container { kind, container, .. } => {
                container.pause().await.map_err(|e| anyhow::anyhow!("pausing the {} container: {e}", kind.name()))?;
                tokio::time::sleep(duration).await;
                container.unpause().await.map_err(|e| anyhow::anyhow!("unpausing the {} container: {e}", kind.name()))?;
            }
        }
        Ok(())
    }
}

impl Drop for BrokerBackend {
    fn drop(&mut self) {
        // A paused broker would ignore the guard's SIGKILL only until
        // continued; make sure it is not left stopped. (A container is
        // removed with force, paused or not.)
        if let Some(Running::Process { child, .. }) = &self.running {
            let _ = child.signal(Signal::SIGCONT);
        }
    }
}

/// The broker's server binary: on PATH, else where Debian puts it
/// (`nats-server` is in /usr/sbin, which a user's PATH may lack).
fn binary_path(kind: BrokerKind) -> Option<PathBuf> {
    which(kind.binary()).or_else(|| ["/usr/sbin", "/usr/bin"].iter().map(|dir| Path::new(dir).join(kind.binary())).find(|p| p.is_file()))
}

/// Is the broker's server binary installed? Its version if so.
pub fn status(kind: BrokerKind) -> anyhow::Result<String> {
    let bin = binary_path(kind).ok_or_else(|| anyhow::anyhow!("{} is not on PATH (nor in /usr/sbin)", kind.binary()))?;
    let out = std::process::Command::new(&bin).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(version_of(kind, &text).unwrap_or_else(|| format!("{} ({})", kind.name(), bin.display())))
}

/// "Redis 7.0.15" from `redis-server --version`, "NATS 2.9.10 (JetStream)"
/// from `nats-server --version`.
fn version_of(kind: BrokerKind, text: &str) -> Option<String> {
    match kind {
        BrokerKind::Redis => {
            let v = text.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
            Some(format!("Redis {v}"))
        }
        BrokerKind::Nats => {
            let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
            Some(format!("NATS {v} (JetStream)"))
        }
    }
}

pub async fn start(choice: ProviderChoice, request: &BrokerRequest, log_dir: &Path) -> Result<BrokerBackend, ProviderError> {
    match choice {
        ProviderChoice::External => external(request).await,
        ProviderChoice::Docker => docker(request).await,
        ProviderChoice::Process | ProviderChoice::Compat | ProviderChoice::Auto => process(request, log_dir).await,
    }
}

async fn external(request: &BrokerRequest) -> Result<BrokerBackend, ProviderError> {
    let kind = request.kind;
    if request.controlled {
        return Err(ProviderError::CannotHonour {
            provider: "external",
            why: format!("the scenario restarts or pauses {}, but chatbench does not control an external one", kind.name()),
        });
    }
    let url = request.url.clone().ok_or_else(|| ProviderError::Unavailable {
        provider: "external",
        why: format!("no {} URL was given", kind.name()),
        fix: format!("Pass --{}-url {}://HOST:PORT", kind.scheme(), kind.scheme()),
    })?;
    let backend = BrokerBackend {
        kind,
        url: url.clone(),
        provider: ProviderKind::External,
        version: format!("{} (external)", kind.name()),
        running: None,
    };
    let addr = backend.addr().ok_or_else(|| ProviderError::StartFailed {
        provider: "external",
        what: format!("{} at {url}", kind.name()),
        why: "the URL has no reachable host:port".into(),
    })?;
    answers(kind, addr).await.map_err(|why| ProviderError::StartFailed {
        provider: "external",
        what: format!("{} at {url}", kind.name()),
        why: format!("{why:#}"),
    })?;
    Ok(backend)
}

async fn process(request: &BrokerRequest, log_dir: &Path) -> Result<BrokerBackend, ProviderError> {
    let kind = request.kind;
    let version = status(kind).map_err(|why| ProviderError::Unavailable {
        provider: "process",
        why: format!("{why:#}"),
        fix: format!("Run ci/setup {} (Debian's {})", kind.scheme(), kind.binary()),
    })?;
    let failed = |why: String| ProviderError::StartFailed { provider: "process", what: kind.name().into(), why };
    let dir = tempfile::Builder::new().prefix(&format!("chatbench-{}-", kind.scheme())).tempdir().map_err(|e| failed(e.to_string()))?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).map_err(|e| failed(format!("{}: {e}", data.display())))?;
    let log = log_dir.join(format!("{}.log", kind.scheme()));
    let _ = std::fs::remove_file(&log);
    // A port taken between the check and the bind shows as a start
    // failure ("in use" in the log): try another.
    let mut last = String::new();
    for _ in 0..3 {
        let port = stable_port().map_err(|e| failed(e.to_string()))?;
        let mut child = spawn(kind, port, &data, &log).map_err(|e| failed(format!("{e:#}")))?;
        match wait_ready(kind, port, &log).await {
            Ok(()) => {
                let url = format!("{}://127.0.0.1:{port}", kind.scheme());
                let running = Running::Process { kind, child, port, data, log, _dir: dir };
                return Ok(BrokerBackend { kind, url, provider: ProviderKind::Process, version, running: Some(running) });
            }
            Err(e) => {
                child.kill().await;
                last = format!("{e:#}");
                if !tail(&log, 5).contains("in use") {
                    break;
                }
            }
        }
    }
    Err(failed(last))
}

/// The broker in a container on the local (or given) image, on a stable
/// host port bound on 127.0.0.1.
async fn docker(request: &BrokerRequest) -> Result<BrokerBackend, ProviderError> {
    let kind = request.kind;
    let local = kind.local_image();
    let choice = engine::Choice { what: kind.name(), given: request.image.as_deref(), default: local, stand_in: local };
    // The default is a local image: never pulled (there is nothing to pull
    // it from); an image the user names is pulled when missing.
    let pull = if request.image.is_some() { Pull::IfMissing } else { Pull::Never };
    let (_docker, image, info) = engine::prepare(choice, pull).await.map_err(|e| match e {
        ProviderError::CannotHonour { .. } if request.image.is_none() => ProviderError::Unavailable {
            provider: "docker",
            why: format!("the {} image {local} is not on this Docker engine", kind.name()),
            fix: "Build the local images: ci/setup docker (or ci/docker images)".into(),
        },
        other => other,
    })?;
    let failed =
        |why: String| ProviderError::StartFailed { provider: "docker", what: format!("the {} container ({image})", kind.name()), why };
    let port = stable_port().map_err(|e| failed(format!("no free port: {e}")))?;
    let (name, tag) = engine::split_image(&image);
    let inside = kind.container_port();
    let container = GenericImage::new(name, tag)
        .with_exposed_port(inside.tcp())
        .with_cmd(kind.container_cmd())
        .with_labels(engine::labels())
        .with_startup_timeout(READY_TIMEOUT)
        .with_host_config_modifier(move |c| engine::loopback_only(c, &[(inside, Some(port))]));
    let container = engine::create(container.start()).await.map_err(|e| engine::start_failed(kind.name(), &image, info.is_some(), e))?;
    wait_ready(kind, port, Path::new("")).await.map_err(|e| failed(format!("{e:#}")))?;
    let version = match info.as_ref().and_then(|i| i.version.clone()) {
        Some(v) => format!("{} {v} (docker, {image})", kind.name()),
        None => format!("{} (docker, {image})", kind.name()),
    };
    let url = format!("{}://127.0.0.1:{port}", kind.scheme());
    let running = Running::Container { kind, container, port };
    Ok(BrokerBackend { kind, url, provider: ProviderKind::Docker, version, running: Some(running) })
}

fn spawn(kind: BrokerKind, port: u16, data: &Path, log: &Path) -> anyhow::Result<ChildGuard> {
    let log_file =
        std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(|e| anyhow::anyhow!("{}: {e}", log.display()))?;
    let bin = binary_path(kind).ok_or_else(|| anyhow::anyhow!("{} is not installed", kind.binary()))?;
    let mut cmd = Command::new(bin);
    match kind {
        BrokerKind::Redis => {
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(data);
        }
        BrokerKind::Nats => {
            cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "--no_advertise"]).arg("-sd").arg(data);
        }
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::from(log_file.try_clone()?)).stderr(Stdio::from(log_file));
    ChildGuard::spawn(kind.binary(), &mut cmd).map_err(|e| anyhow::anyhow!("starting {}: {e}", kind.binary()))
}

/// Wait until the broker on `port` answers (with its log's tail if not).
async fn wait_ready(kind: BrokerKind, port: u16, log: &Path) -> anyhow::Result<()> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        match answers(kind, addr).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => {
                let log = if log.as_os_str().is_empty() {
                    "its log: docker logs of the container".to_owned()
                } else {
                    format!("log {}:\n{}", log.display(), tail(log, 10))
                };
                anyhow::bail!("{} on {addr} did not answer within {READY_TIMEOUT:?}: {e:#}; {log}", kind.name())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One exchange that shows the broker serves: Redis answers `PING` with
/// `+PONG`; NATS greets with `INFO {...}` that has JetStream on.
async fn answers(kind: BrokerKind, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        if kind == BrokerKind::Redis {
            stream.write_all(b"PING\r\n").await?;
        }
        let mut line = String::new();
        BufReader::new(&mut stream).read_line(&mut line).await?;
        anyhow::Ok(line)
    };
    let line = tokio::time::timeout(Duration::from_secs(2), exchange).await.map_err(|_| anyhow::anyhow!("no answer within 2s"))??;
    let ok = match kind {
        BrokerKind::Redis => line.trim_end() == "+PONG",
        BrokerKind::Nats => line.starts_with("INFO ") && line.contains("\"jetstream\":true"),
    };
    anyhow::ensure!(ok, "unexpected greeting {:?}", line.trim_end());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_from_the_servers_own_words() {
        let redis = "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=c4ab2b9ecb0b9e4";
        assert_eq!(version_of(BrokerKind::Redis, redis).as_deref(), Some("Redis 7.0.15"));
        assert_eq!(version_of(BrokerKind::Nats, "nats-server: v2.9.10\n").as_deref(), Some("NATS 2.9.10 (JetStream)"));
    }

    #[tokio::test]
    async fn external_needs_a_url_and_refuses_restarts() {
        let request = BrokerRequest { kind: BrokerKind::Redis, url: None, controlled: false, image: None };
        let err = start(ProviderChoice::External, &request, Path::new("/tmp")).await.err().unwrap().to_string();
        assert!(err.contains("--redis-url"), "{err}");
        let request = BrokerRequest { kind: BrokerKind::Nats, url: Some("nats://127.0.0.1:1".into()), controlled: true, image: None };
        let err = start(ProviderChoice::External, &request, Path::new("/tmp")).await.err().unwrap().to_string();
        assert!(err.contains("does not control"), "{err}");
    }

    /// Needs `ci/setup docker` (the engine and the local images).
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "needs a Docker engine"]
    async fn docker_brokers_answer_on_loopback_and_come_back_after_a_restart_and_a_pause() {
        for kind in [BrokerKind::Redis, BrokerKind::Nats] {
            let request = BrokerRequest { kind, url: None, controlled: true, image: None };
            let mut broker = start(ProviderChoice::Docker, &request, Path::new("/tmp")).await.unwrap();
            assert!(broker.url.starts_with(&format!("{}://127.0.0.1:", kind.scheme())), "{}", broker.url);
            assert!(broker.version.contains(kind.local_image()), "{}", broker.version);
            let addr = broker.addr().unwrap();
            broker.restart(Duration::from_millis(200)).await.unwrap();
            answers(kind, addr).await.unwrap();
            broker.pause(Duration::from_millis(100)).await.unwrap();
            answers(kind, addr).await.unwrap();
        }
        let missing = BrokerRequest { kind: BrokerKind::Redis, url: None, controlled: false, image: Some("chatbench-local/none:0".into()) };
        assert!(start(ProviderChoice::Docker, &missing, Path::new("/tmp")).await.is_err(), "a named image that is not there fails");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_process_broker_comes_back_on_its_port_after_a_restart() {
        for kind in [BrokerKind::Redis, BrokerKind::Nats] {
            if status(kind).is_err() {
                panic!("{} is not installed: run ci/setup redis nats", kind.binary());
            }
            let dir = tempfile::tempdir().unwrap();
            let request = BrokerRequest { kind, url: None, controlled: true, image: None };
            let mut broker = start(ProviderChoice::Process, &request, dir.path()).await.unwrap();
            let addr = broker.addr().unwrap();
            broker.restart(Duration::from_millis(200)).await.unwrap();
            answers(kind, addr).await.unwrap();
            broker.pause(Duration::from_millis(100)).await.unwrap();
            answers(kind, addr).await.unwrap();
        }
    }
}
