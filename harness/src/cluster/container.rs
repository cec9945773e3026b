//! Nodes in containers (`topology.nodes_in: containers`): each chat-server
//! node runs in its own container on the run's Docker network, beside the
//! MongoDB container, so faults act on real links and hosts. A node listens
//! on 8080 inside, published on 127.0.0.1 at a host port chosen once: a
//! restarted node (the same container, started again) keeps its address.
//!
//! Signals map onto the engine: SIGKILL and SIGTERM are sent to the
//! container, SIGSTOP / SIGCONT pause and unpause it. `partition` cuts the
//! node from the run's network (`docker network disconnect`), which is its
//! only path to MongoDB; its clients still reach it through the published
//! port on the default bridge.

use crate::provider::docker as engine;
use futures::StreamExt;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use testcontainers_modules::testcontainers::bollard::Docker;
use testcontainers_modules::testcontainers::bollard::models::{NetworkConnectRequest, NetworkDisconnectRequest};
use testcontainers_modules::testcontainers::bollard::query_parameters::{KillContainerOptions, LogsOptions};
use testcontainers_modules::testcontainers::core::IntoContainerPort;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// The port a node listens on inside its container.
pub const NODE_PORT: u16 = 8080;
/// The image nodes run in by default (`ci/docker images` builds it).
pub const DEFAULT_SERVER_IMAGE: &str = "chatbench-local/chat-server:dev";

/// How node containers are made.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub image: String,
    pub network: String,
    /// The node's connection string, as seen from the run's network.
    pub mongo_uri: String,
}

/// One node's container, its exit watcher and its log pump.
pub(super) struct NodeContainer {
    container: ContainerAsync<GenericImage>,
    docker: Docker,
    network: String,
    exit: Arc<Mutex<Option<ExitStatus>>>,
    pid: u32,
}

impl NodeContainer {
    /// Create and start node `index`'s container on `host_port`, its log in `log`.
    pub(super) async fn start(spec: &ContainerSpec, index: usize, host_port: u16, args: Vec<String>, log: &Path) -> anyhow::Result<Self> {
        let docker = engine::engine().await?;
        let (name, tag) = engine::split_image(&spec.image);
        if engine::inspect(&docker, &spec.image).await?.is_none() {
            return Err(anyhow::anyhow!(
                "the node image {} is not on this Docker engine (ci/setup docker builds it; or --docker-image server=IMAGE)",
                spec.image
            ));
        }
        let request = GenericImage::new(name, tag)
            .with_exposed_port(NODE_PORT.tcp())
            .with_cmd(args)
            .with_env_var("NO_COLOR", "1")
            .with_labels(engine::labels())
            .with_host_config_modifier(move |c| engine::loopback_only(c, &[(NODE_PORT, Some(host_port))]));
        let container = engine::create(request.start()).await.map_err(|e| anyhow::anyhow!("starting node {index}'s container: {e}"))?;
        let network = spec.network.clone();
        let connect = NetworkConnectRequest { container: Some(container.id().to_owned()), ..Default::default() };
        docker.connect_network(&network, connect).await.map_err(|e| anyhow::anyhow!("joining node {index} to network {network}: {e}"))?;
        let mut node = NodeContainer { container, docker, network, exit: Arc::new(Mutex::new(None)), pid: 0 };
        node.watch(log).await?;
        Ok(node)
    }

    /// After a (re)start: follow the log into `log`, note the exit, read the pid.
    async fn watch(&mut self, log: &Path) -> anyhow::Result<()> {
        let id = self.container.id().to_owned();
        *self.exit.lock().expect("exit lock") = None;
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i32 - 1);
        spawn_log_pump(self.docker.clone(), id.clone(), log.to_path_buf(), since)?;
        let (docker, exit) = (self.docker.clone(), self.exit.clone());
        let waited = id.clone();
        tokio::spawn(async move {
            let mut stream = docker
                .wait_container(&waited, None::<testcontainers_modules::testcontainers::bollard::query_parameters::WaitContainerOptions>);
            let code = match stream.next().await {
                Some(Ok(r)) => r.status_code,
                // bollard reports a non-zero exit as an error carrying the code.
                Some(Err(testcontainers_modules::testcontainers::bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
                _ => -1,
            };
            *exit.lock().expect("exit lock") = Some(ExitStatus::from_raw(((code as i32) & 0xff) << 8));
        });
        let inspected = self
            .docker
            .inspect_container(&id, None::<testcontainers_modules::testcontainers::bollard::query_parameters::InspectContainerOptions>)
            .await
            .map_err(|e| anyhow::anyhow!("inspecting {id}: {e}"))?;
        self.pid = inspected.state.and_then(|s| s.pid).unwrap_or(0) as u32;
        Ok(())
    }

    pub(super) fn exited(&self) -> Option<ExitStatus> {
        *self.exit.lock().expect("exit lock")
    }

    /// The node's main process, as the host sees it (0 when not running).
    pub(super) fn pid(&self) -> i32 {
        self.pid as i32
    }

    /// SIGKILL / SIGTERM to the container; SIGSTOP / SIGCONT pause and unpause it.
    pub(super) async fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        use nix::sys::signal::Signal;
        let id = self.container.id();
        let result = match signal {
            Signal::SIGSTOP => self.docker.pause_container(id).await,
            Signal::SIGCONT => self.docker.unpause_container(id).await,
            other => {
                let options = KillContainerOptions { signal: other.as_str().to_owned() };
                self.docker.kill_container(id, Some(options)).await
            }
        };
        result.map_err(|e| anyhow::anyhow!("{signal} to container {id}: {e}"))
    }

    /// Start the stopped container again (same port, same network); log to `log`.
    pub(super) async fn restart(&mut self, log: &Path) -> anyhow::Result<()> {
        self.container.start().await.map_err(|e| anyhow::anyhow!("starting the container again: {e}"))?;
        self.watch(log).await
    }

    /// Cut the node from the run's network (its path to MongoDB), or heal it.
    pub(super) async fn partition(&self, cut: bool) -> anyhow::Result<()> {
        let id = self.container.id().to_owned();
        let result = if cut {
            let request = NetworkDisconnectRequest { container: Some(id.clone()), force: Some(true) };
            self.docker.disconnect_network(&self.network, request).await
        } else {
            let request = NetworkConnectRequest { container: Some(id.clone()), ..Default::default() };
            self.docker.connect_network(&self.network, request).await
        };
        result.map_err(|e| {
            anyhow::anyhow!(
                "{} node container {id} {} network {}: {e}",
                if cut { "disconnecting" } else { "reconnecting" },
                if cut { "from" } else { "to" },
                self.network
            )
        })
    }
}

/// Copy the container's output (from `since`, Unix seconds) into `log`.
fn spawn_log_pump(docker: Docker, id: String, log: PathBuf, since: i32) -> anyhow::Result<()> {
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(&log).map_err(|e| anyhow::anyhow!("opening {}: {e}", log.display()))?;
    tokio::spawn(async move {
        let options = LogsOptions { follow: true, stdout: true, stderr: true, since, ..Default::default() };
        let mut stream = docker.logs(&id, Some(options));
        while let Some(Ok(chunk)) = stream.next().await {
            let _ = file.write_all(&chunk.into_bytes());
        }
    });
    Ok(())
}
