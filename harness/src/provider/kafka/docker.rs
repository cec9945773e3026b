//! `docker`: Apache Kafka (KRaft) in a container through
//! testcontainers-modules' `kafka::apache` image; bootstrap on the mapped port.

use super::{KafkaBackend, KafkaRequest, prepare};
use crate::provider::{ProviderError, ProviderKind, Restart, docker_reachable, refuse_restarts};
use testcontainers_modules::kafka::apache::{KAFKA_PORT, Kafka};
use testcontainers_modules::testcontainers::runners::AsyncRunner;

pub fn bootstrap_for_port(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

impl Restart for testcontainers_modules::testcontainers::ContainerAsync<Kafka> {}

pub async fn start(request: &KafkaRequest) -> Result<KafkaBackend, ProviderError> {
    // The image advertises the host port it was mapped to when it started;
    // a restarted container gets a new one.
    refuse_restarts("docker", "Kafka", request.persistent, "a restarted container gets a new host port (use compat or process)")?;
    docker_reachable().map_err(|why| ProviderError::Unavailable {
        provider: "docker",
        why,
        fix: "Start a Docker engine, or use --provider compat (after ci/setup)".into(),
    })?;
    let failed = |why: String| ProviderError::StartFailed { provider: "docker", what: "the Kafka container".into(), why };
    let container = Kafka::default().start().await.map_err(|e| failed(e.to_string()))?;
    let port = container.get_host_port_ipv4(KAFKA_PORT).await.map_err(|e| failed(e.to_string()))?;
    let bootstrap = bootstrap_for_port(port);
    prepare(&bootstrap, request, std::time::Duration::from_secs(60)).await.map_err(failed)?;
    Ok(KafkaBackend::new(bootstrap, request, ProviderKind::Docker, "Apache Kafka (docker, KRaft)".into(), true, container))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_uses_loopback_and_the_mapped_port() {
        assert_eq!(bootstrap_for_port(49153), "127.0.0.1:49153");
    }

    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "needs a Docker engine"]
    async fn starts_a_kraft_broker_with_the_topic() {
        let request = KafkaRequest { topic: "t".into(), partitions: 2, bootstrap: None, persistent: false };
        let backend = start(&request).await.unwrap();
        assert!(backend.bootstrap.starts_with("127.0.0.1:"));
    }
}
