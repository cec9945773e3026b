//! `docker`: Kafka in a container, through testcontainers.
//!
//! The official image (`apache/kafka:4.1.0` by default) runs in KRaft mode
//! through testcontainers-modules' `kafka::apache`, which advertises the
//! mapped host port. An image labelled `org.chatbench.flavour=tansu`
//! (ci/docker's compat image) runs `tansu broker` listening on the host
//! port chosen before the start and advertising `127.0.0.1:PORT`, published
//! on 127.0.0.1 only: not Kafka, and its log is in memory (no restarts).

use super::{KafkaBackend, KafkaRequest, prepare};
use crate::provider::docker::{self as engine, DEFAULT_KAFKA_IMAGE, ImageInfo, LOCAL_KAFKA_IMAGE, Pull};
use crate::provider::{ProviderError, ProviderKind, Restart, refuse_restarts};
use std::time::Duration;
use testcontainers_modules::kafka::apache::{KAFKA_PORT, Kafka};
use testcontainers_modules::testcontainers::core::IntoContainerPort;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, GenericImage, ImageExt};

const READY: Duration = Duration::from_secs(60);

pub(super) fn bootstrap_for_port(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// `tansu broker`'s command line inside the container for host port `port`.
pub(super) fn tansu_command(port: u16) -> Vec<String> {
    let advertised = format!("tcp://{}", bootstrap_for_port(port));
    ["tansu", "broker", "--storage-engine", "memory://tansu/", "--listener-url", "tcp://0.0.0.0:9092"]
        .into_iter()
        .map(str::to_owned)
        .chain(["--advertised-listener-url".to_owned(), advertised])
        .collect()
}

fn is_tansu(info: Option<&ImageInfo>) -> bool {
    info.and_then(|i| i.flavour.as_deref()) == Some("tansu")
}

/// Restarts are refused at the start (see [`start`]); a pause is
/// `docker pause` of the container.
impl Restart for ContainerAsync<Kafka> {
    fn pause(&mut self, duration: Duration) -> futures::future::BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(pause_container(self.id().to_owned(), duration))
    }
}
impl Restart for ContainerAsync<GenericImage> {
    fn pause(&mut self, duration: Duration) -> futures::future::BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(pause_container(self.id().to_owned(), duration))
    }
}

async fn pause_container(id: String, duration: Duration) -> anyhow::Result<()> {
    let docker = engine::engine().await?;
    docker.pause_container(&id).await.map_err(|e| anyhow::anyhow!("pausing the Kafka container: {e}"))?;
    tokio::time::sleep(duration).await;
    docker.unpause_container(&id).await.map_err(|e| anyhow::anyhow!("unpausing the Kafka container: {e}"))?;
    Ok(())
}

pub(super) async fn start(request: &KafkaRequest, pull: Pull) -> Result<KafkaBackend, ProviderError> {
    let choice =
        engine::Choice { what: "Kafka", given: request.image.as_deref(), default: DEFAULT_KAFKA_IMAGE, stand_in: LOCAL_KAFKA_IMAGE };
    let (_docker, image, info) = engine::prepare(choice, pull).await?;
    let failed = |why: String| ProviderError::StartFailed { provider: "docker", what: format!("the Kafka container ({image})"), why };
    let (name, tag) = engine::split_image(&image);
    if is_tansu(info.as_ref()) {
        refuse_restarts("docker", "Kafka", request.persistent, "tansu in a container keeps its log in memory (use compat)")?;
        let port = crate::process::stable_port().map_err(|e| failed(format!("no free port: {e}")))?;
        let container = GenericImage::new(name, tag)
            .with_exposed_port(9092.tcp())
            .with_cmd(tansu_command(port))
            .with_labels(engine::labels())
            .with_startup_timeout(READY)
            .with_host_config_modifier(move |c| engine::loopback_only(c, &[(9092, Some(port))]));
        let container = engine::create(container.start()).await.map_err(|e| engine::start_failed("Kafka", &image, true, e))?;
        let bootstrap = bootstrap_for_port(port);
        prepare(&bootstrap, request, READY).await.map_err(|e| failed(format!("{e:#}")))?;
        let version = format!("tansu {} (docker, {image})", info.and_then(|i| i.version).unwrap_or_default());
        return Ok(KafkaBackend::new(bootstrap, request, ProviderKind::Docker, version, false, container));
    }
    // The official image advertises the host port it was mapped to when it
    // started; a restarted container gets a new one.
    refuse_restarts("docker", "Kafka", request.persistent, "a restarted Apache Kafka container advertises a stale port (use compat)")?;
    let container = Kafka::default()
        .with_name(name)
        .with_tag(tag)
        .with_labels(engine::labels())
        .with_startup_timeout(READY)
        .with_host_config_modifier(|c| engine::loopback_only(c, &[(KAFKA_PORT.as_u16(), None)]));
    let container = engine::create(container.start()).await.map_err(|e| engine::start_failed("Kafka", &image, info.is_some(), e))?;
    let port = container.get_host_port_ipv4(KAFKA_PORT).await.map_err(|e| failed(e.to_string()))?;
    let bootstrap = bootstrap_for_port(port);
    prepare(&bootstrap, request, READY).await.map_err(|e| failed(format!("{e:#}")))?;
    Ok(KafkaBackend::new(bootstrap, request, ProviderKind::Docker, format!("Apache Kafka (docker, KRaft, {image})"), true, container))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_uses_loopback_and_the_mapped_port() {
        assert_eq!(bootstrap_for_port(49153), "127.0.0.1:49153");
    }

    #[test]
    fn tansu_advertises_the_host_port_it_is_published_on() {
        let cmd = tansu_command(40123);
        let at = cmd.iter().position(|a| a == "--advertised-listener-url").unwrap();
        assert_eq!(cmd[at + 1], "tcp://127.0.0.1:40123");
        assert!(cmd.windows(2).any(|w| w == ["--listener-url", "tcp://0.0.0.0:9092"]));
    }

    /// Needs `ci/setup docker` (the engine and the local images).
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "needs a Docker engine"]
    async fn the_local_tansu_image_serves_the_topic() {
        let request = KafkaRequest {
            topic: "t".into(),
            partitions: 2,
            bootstrap: None,
            persistent: false,
            image: Some("chatbench-local/tansu:0.6.0".into()),
        };
        let backend = start(&request, Pull::Never).await.unwrap();
        assert!(backend.bootstrap.starts_with("127.0.0.1:"));
        assert!(!backend.is_real_kafka);
    }
}
