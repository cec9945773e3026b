//! What the docker provider's backends share: which image to run, what it
//! is, labels that name the harness process owning a container, ports
//! published on 127.0.0.1 only, and the sweep that removes what a killed
//! harness left behind.
//!
//! Images: the official ones by default (`mongo:8.0`, `apache/kafka:4.1.0`),
//! or any image given with `--docker-image mongo=IMAGE` / `topology.images`.
//! `ci/docker images` builds local stand-ins (`chatbench-local/nx-27017`,
//! `chatbench-local/tansu`, `chatbench-local/chat-server`) labelled
//! `org.chatbench.flavour`, which tells the provider how to run them.
//! `auto` never pulls nor substitutes: with an engine but not the image it
//! moves on to the next provider and says why. `--provider docker` without
//! `--docker-image` runs the official image when the engine has it, else
//! the local stand-in when `ci/setup docker` built it (with a warning; the
//! report names the backend and says compat latency is not MongoDB's or
//! Kafka's), else pulls the official image and, when that fails, names the fix.

use super::ProviderError;
use std::collections::HashMap;
use testcontainers_modules::testcontainers::bollard::Docker;
use testcontainers_modules::testcontainers::bollard::models::{HostConfig, NetworkCreateRequest, PortBinding};
use testcontainers_modules::testcontainers::bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, RemoveContainerOptions,
};

/// The official MongoDB image (a one-member replica set, initiated by the harness).
pub const DEFAULT_MONGO_IMAGE: &str = "mongo:8.0";
/// The official Apache Kafka image (KRaft, through testcontainers-modules).
pub const DEFAULT_KAFKA_IMAGE: &str = "apache/kafka:4.1.0";
/// The local stand-ins `ci/setup docker` builds (see [`Choice`]).
pub const LOCAL_MONGO_IMAGE: &str = "chatbench-local/nx-27017:0.8.1";
pub const LOCAL_KAFKA_IMAGE: &str = "chatbench-local/tansu:0.6.0";
/// Debian's redis-server in a local image (`ci/docker images`): the real server.
pub const LOCAL_REDIS_IMAGE: &str = "chatbench-local/redis:7.0.15";
/// Debian's nats-server (JetStream) in a local image (`ci/docker images`).
pub const LOCAL_NATS_IMAGE: &str = "chatbench-local/nats:2.9.10";
/// The label whose value names the harness process that owns a container.
pub const OWNER_LABEL: &str = "org.chatbench.run";
/// The label the local images carry to say what they are.
pub const FLAVOUR_LABEL: &str = "org.chatbench.flavour";

pub use crate::scenario::DockerImages;

/// `name:tag` split for testcontainers (`latest` when no tag; a registry
/// port's colon is not a tag).
pub fn split_image(image: &str) -> (String, String) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_owned(), tag.to_owned()),
        _ => (image.to_owned(), "latest".to_owned()),
    }
}

/// What an image is, from its `org.chatbench.flavour` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub flavour: Option<String>,
    pub version: Option<String>,
}

pub(crate) async fn engine() -> anyhow::Result<Docker> {
    let docker = Docker::connect_with_defaults().map_err(|e| anyhow::anyhow!("cannot reach the Docker engine: {e}"))?;
    docker.ping().await.map_err(|e| anyhow::anyhow!("the Docker engine does not answer: {e}"))?;
    Ok(docker)
}

/// The image's labels, or None when the engine does not have it.
pub(crate) async fn inspect(docker: &Docker, image: &str) -> anyhow::Result<Option<ImageInfo>> {
    use testcontainers_modules::testcontainers::bollard::errors::Error;
    match docker.inspect_image(image).await {
        Ok(found) => {
            let labels = found.config.and_then(|c| c.labels).unwrap_or_default();
            Ok(Some(ImageInfo { flavour: labels.get(FLAVOUR_LABEL).cloned(), version: labels.get("org.chatbench.version").cloned() }))
        }
        Err(Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
        Err(e) => Err(anyhow::anyhow!("inspecting image {image}: {e}")),
    }
}

/// For `chatbench doctor`: Ok when auto would run the default MongoDB
/// image; otherwise why not, with the local images that are there.
pub async fn status() -> anyhow::Result<String> {
    let at = super::docker_reachable()?;
    let docker = engine().await?;
    let mut local = Vec::new();
    for image in [LOCAL_MONGO_IMAGE, LOCAL_KAFKA_IMAGE, "chatbench-local/chat-server:dev", LOCAL_REDIS_IMAGE, LOCAL_NATS_IMAGE] {
        if inspect(&docker, image).await?.is_some() {
            local.push(image);
        }
    }
    let local = if local.is_empty() { "none (ci/setup docker builds them)".to_owned() } else { local.join(", ") };
    match inspect(&docker, DEFAULT_MONGO_IMAGE).await? {
        Some(_) => Ok(format!("{at}; {DEFAULT_MONGO_IMAGE} present; local images: {local}")),
        None => Err(anyhow::anyhow!(
            "the engine at {at} answers, but {DEFAULT_MONGO_IMAGE} is not on it and auto never pulls; local images: {local}"
        )),
    }
}

/// How a run gets its image: `auto` never pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pull {
    Never,
    IfMissing,
}

/// Which image a backend runs: the one given, else the official default;
/// and for `--provider docker` only, when the default is not on the
/// engine, the local stand-in `ci/setup docker` built (said in a warning,
/// and in the report's backend line and compat note).
pub struct Choice<'a> {
    pub what: &'a str,
    pub given: Option<&'a str>,
    pub default: &'a str,
    pub stand_in: &'a str,
}

/// The engine, the image to run and its description, after the sweep of
/// leftovers. A missing image under [`Pull::Never`] is `CannotHonour`
/// (auto moves on); under [`Pull::IfMissing`] it is pulled at the start.
pub(crate) async fn prepare(choice: Choice<'_>, pull: Pull) -> Result<(Docker, String, Option<ImageInfo>), ProviderError> {
    let unavailable = |why: String| ProviderError::Unavailable {
        provider: "docker",
        why: format!("{why:#}"),
        fix: "Start a Docker engine (ci/setup docker), or use --provider compat (after ci/setup)".into(),
    };
    super::docker_reachable().map_err(|e| unavailable(format!("{e:#}")))?;
    let docker = engine().await.map_err(|e| unavailable(format!("{e:#}")))?;
    USED.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Err(why) = sweep_leftovers(&docker).await {
        tracing::warn!("docker: could not remove containers left by an earlier run: {why}");
    }
    let Choice { what, given, default, stand_in } = choice;
    let image = given.unwrap_or(default).to_owned();
    let info = inspect(&docker, &image).await.map_err(|e| unavailable(format!("{e:#}")))?;
    if info.is_some() {
        return Ok((docker, image, info));
    }
    if pull == Pull::Never {
        return Err(ProviderError::CannotHonour {
            provider: "docker",
            why: format!(
                "the {what} image {image} is not on this Docker engine and auto never pulls \
                 (build local images with ci/setup docker and pass --docker-image, or choose --provider docker)"
            ),
        });
    }
    if given.is_none()
        && let Some(local) = inspect(&docker, stand_in).await.map_err(|e| unavailable(format!("{e:#}")))?
    {
        tracing::warn!(
            "docker: {default} is not on this engine; running the local stand-in {stand_in} for {what} instead \
             (not {what}: its latency is not {what}'s; --docker-image {} chooses)",
            if what == "MongoDB" { "mongo=IMAGE" } else { "kafka=IMAGE" }
        );
        return Ok((docker, stand_in.to_owned(), Some(local)));
    }
    Ok((docker, image, None))
}

/// A pull or start failure, with the fix when the image was missing.
pub(crate) fn start_failed(what: &str, image: &str, had_image: bool, error: impl std::fmt::Display) -> ProviderError {
    let hint = if had_image {
        String::new()
    } else {
        format!(
            " ({image} is not on this engine and could not be pulled; ci/setup docker builds local images, \
             e.g. --docker-image mongo=chatbench-local/nx-27017:0.8.1 kafka=chatbench-local/tansu:0.6.0)"
        )
    };
    ProviderError::StartFailed { provider: "docker", what: format!("the {what} container ({image})"), why: format!("{error}{hint}") }
}

/// This process, as the owner label names it: `HOST/PID-START`. The start
/// time keeps a reused pid from passing for the owner; the host name keeps
/// a harness in another machine or container (sharing the engine, seeing
/// other pids) from judging this one's containers.
pub fn owner_id() -> String {
    let pid = std::process::id();
    format!("{}/{pid}-{}", host_name(), start_time(pid).unwrap_or(0))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "unknown".to_owned(), |h| h.trim().to_owned())
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat` field 22).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// May the sweep take the owner a label names for gone? Only an owner on
/// this host whose process is not running (with that start time); an owner
/// elsewhere, or a label this code did not write, is left alone.
pub fn owner_alive(owner: &str) -> bool {
    let Some((host, process)) = owner.rsplit_once('/') else { return true };
    if host != host_name() {
        return true;
    }
    let Some((pid, started)) = process.split_once('-') else { return true };
    let (Ok(pid), Ok(started)) = (pid.parse::<u32>(), started.parse::<u64>()) else { return true };
    start_time(pid) == Some(started)
}

/// Labels every container and network of this run carries.
pub fn labels() -> HashMap<String, String> {
    HashMap::from([(OWNER_LABEL.to_owned(), owner_id())])
}

/// Publish each container port on 127.0.0.1 only (never on every interface,
/// which `publish_all_ports` would do), on the given host port or, with
/// None, on one the engine picks.
pub fn loopback_only(host_config: &mut HostConfig, ports: &[(u16, Option<u16>)]) {
    host_config.publish_all_ports = Some(false);
    host_config.port_bindings = Some(
        ports
            .iter()
            .map(|&(container, host)| {
                let binding = PortBinding { host_ip: Some("127.0.0.1".into()), host_port: host.map(|p| p.to_string()) };
                (format!("{container}/tcp"), Some(vec![binding]))
            })
            .collect(),
    );
}

/// Set once this process has asked the engine for a container.
static USED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Container creations under way (see [`create`]).
static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Run a container's creation to its end even if the caller is dropped
/// (Ctrl-C): the engine finishes a create whose client went away, and a
/// container nobody holds would outlive the run. A creation whose caller is
/// gone drops its container when it completes, which removes it; the
/// binary's last step ([`remove_own`]) waits for every one.
pub(crate) async fn create<T: Send + 'static>(creation: impl Future<Output = T> + Send + 'static) -> T {
    use std::sync::atomic::Ordering::SeqCst;
    IN_FLIGHT.fetch_add(1, SeqCst);
    let task = tokio::spawn(async move {
        let out = creation.await;
        IN_FLIGHT.fetch_sub(1, SeqCst);
        out
    });
    match task.await {
        Ok(out) => out,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Remove every container and network this process labelled, when it used
/// the engine at all. The binary's last step: a container whose creation
/// was under way when Ctrl-C dropped the run has no handle to drop.
pub async fn remove_own() {
    remove_own_within(std::time::Duration::from_secs(60)).await
}

/// From a panic hook: [`remove_own`] on a thread and runtime of its own
/// (the run's runtime may be unwinding), waiting briefly for creations.
pub fn remove_own_blocking() {
    if !USED.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let _ = std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(remove_own_within(std::time::Duration::from_secs(5)));
    })
    .join();
}

async fn remove_own_within(wait: std::time::Duration) {
    if !USED.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let deadline = tokio::time::Instant::now() + wait;
    while IN_FLIGHT.load(std::sync::atomic::Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let Ok(docker) = engine().await else { return };
    let filters = HashMap::from([("label".to_owned(), vec![format!("{OWNER_LABEL}={}", owner_id())])]);
    let list = ListContainersOptions { all: true, filters: Some(filters.clone()), ..Default::default() };
    for id in docker.list_containers(Some(list)).await.unwrap_or_default().into_iter().filter_map(|c| c.id) {
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        if let Err(e) = docker.remove_container(&id, Some(options)).await
            && !e.to_string().contains("No such container")
        {
            eprintln!("warning: could not remove container {id}: {e} (docker rm -f {id})");
        }
    }
    let networks = docker.list_networks(Some(ListNetworksOptions { filters: Some(filters) })).await.unwrap_or_default();
    for name in networks.into_iter().filter_map(|n| n.name) {
        if let Err(e) = docker.remove_network(&name).await {
            eprintln!("warning: could not remove network {name}: {e} (docker network rm {name})");
        }
    }
}

/// Remove the containers and networks whose owning harness is gone (killed
/// with SIGKILL, say): what drop and Ctrl-C could not clean.
pub(crate) async fn sweep_leftovers(docker: &Docker) -> anyhow::Result<usize> {
    let filters = HashMap::from([("label".to_owned(), vec![OWNER_LABEL.to_owned()])]);
    let containers = docker
        .list_containers(Some(ListContainersOptions { all: true, filters: Some(filters.clone()), ..Default::default() }))
        .await
        .map_err(anyhow::Error::from)?;
    let mut removed = 0;
    for c in containers {
        let owner = c.labels.as_ref().and_then(|l| l.get(OWNER_LABEL)).cloned().unwrap_or_default();
        let Some(id) = c.id.filter(|_| !owner_alive(&owner)) else { continue };
        tracing::info!(container = %id, owner = %owner, "docker: removing a container left by a run that is gone");
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        docker.remove_container(&id, Some(options)).await.map_err(anyhow::Error::from)?;
        removed += 1;
    }
    let networks = docker.list_networks(Some(ListNetworksOptions { filters: Some(filters) })).await.map_err(anyhow::Error::from)?;
    for n in networks {
        let owner = n.labels.as_ref().and_then(|l| l.get(OWNER_LABEL)).cloned().unwrap_or_default();
        let Some(name) = n.name.filter(|_| !owner_alive(&owner)) else { continue };
        tracing::info!(network = %name, "docker: removing a network left by a run that is gone");
        docker.remove_network(&name).await.map_err(anyhow::Error::from)?;
        removed += 1;
    }
    Ok(removed)
}

/// A Docker network for one run, labelled like its containers; removed
/// when dropped (after the containers on it: hold it last).
pub struct RunNetwork {
    pub name: String,
}

impl RunNetwork {
    pub async fn create(name: String) -> anyhow::Result<RunNetwork> {
        let docker = engine().await?;
        let request = NetworkCreateRequest { name: name.clone(), labels: Some(labels()), ..Default::default() };
        docker.create_network(request).await.map_err(|e| anyhow::anyhow!("creating Docker network {name}: {e}"))?;
        Ok(RunNetwork { name })
    }
}

impl Drop for RunNetwork {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A runtime of its own: drop may run inside or outside one.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(docker) = engine().await
                    && let Err(e) = docker.remove_network(&name).await
                {
                    tracing::warn!(network = %name, error = %e, "could not remove the run's Docker network");
                }
            });
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_split_at_the_tag_not_at_a_registry_port() {
        assert_eq!(split_image("mongo:8.0"), ("mongo".into(), "8.0".into()));
        assert_eq!(split_image("chatbench-local/nx-27017:0.8.1"), ("chatbench-local/nx-27017".into(), "0.8.1".into()));
        assert_eq!(split_image("mongo"), ("mongo".into(), "latest".into()));
        assert_eq!(split_image("registry:5000/mongo"), ("registry:5000/mongo".into(), "latest".into()));
        assert_eq!(split_image("registry:5000/mongo:8.0"), ("registry:5000/mongo".into(), "8.0".into()));
    }

    #[test]
    fn docker_image_flags_name_their_key_and_the_cli_wins() {
        let mut cli = DockerImages::default();
        cli.set("mongo=chatbench-local/nx-27017:0.8.1").unwrap();
        assert!(cli.set("rabbitmq=x").unwrap_err().to_string().contains("unknown key \"rabbitmq\""));
        cli.set("nats=nats:2.9").unwrap();
        assert_eq!(cli.nats.as_deref(), Some("nats:2.9"));
        assert!(cli.set("kafka").unwrap_err().to_string().contains("KEY=IMAGE"));
        assert!(cli.set("kafka=").unwrap_err().to_string().contains("not an image name"));
        let scenario = DockerImages { mongo: Some("mongo:7.0".into()), kafka: Some("k:1".into()), ..DockerImages::default() };
        let merged = cli.or(&scenario);
        assert_eq!(merged.mongo.as_deref(), Some("chatbench-local/nx-27017:0.8.1"));
        assert_eq!(merged.kafka.as_deref(), Some("k:1"));
        assert_eq!(merged.server, None);
    }

    #[test]
    fn this_process_owns_its_label_and_a_dead_or_reused_pid_does_not() {
        assert!(owner_alive(&owner_id()));
        let (me, host) = (std::process::id(), host_name());
        assert!(!owner_alive(&format!("{host}/{me}-1")), "same pid, other start time: a reused pid");
        assert!(!owner_alive(&format!("{host}/4194304-5")), "no such pid");
        assert!(owner_alive("another-host/4194304-5"), "another host's harness is not ours to judge");
        assert!(owner_alive("garbage") && owner_alive(&format!("{host}/x-y")), "a label we did not write is left alone");
    }

    #[test]
    fn ports_are_published_on_loopback_only() {
        let mut config = HostConfig { publish_all_ports: Some(true), ..Default::default() };
        loopback_only(&mut config, &[(27017, Some(40001))]);
        assert_eq!(config.publish_all_ports, Some(false));
        let bindings = config.port_bindings.unwrap();
        let b = &bindings["27017/tcp"].as_ref().unwrap()[0];
        assert_eq!(b.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(b.host_port.as_deref(), Some("40001"));
    }
}
