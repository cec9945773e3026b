//! `external`: a Kafka the user runs; we check it answers and create the topic.

use super::{KafkaBackend, KafkaRequest, prepare};
use crate::provider::{ProviderError, ProviderKind, refuse_restarts};
use std::time::Duration;

pub(super) async fn start(request: &KafkaRequest) -> Result<KafkaBackend, ProviderError> {
    refuse_restarts("external", "Kafka", request.persistent, "chatbench does not control an external Kafka")?;
    let bootstrap = request.bootstrap.clone().ok_or_else(|| ProviderError::Unavailable {
        provider: "external",
        why: "no Kafka bootstrap address was given".into(),
        fix: "Set topology.kafka.bootstrap in the scenario or pass --kafka-bootstrap".into(),
    })?;
    prepare(&bootstrap, request, Duration::from_secs(10)).await.map_err(|why| ProviderError::StartFailed {
        provider: "external",
        what: format!("Kafka at {bootstrap}"),
        why: format!("{why:#}"),
    })?;
    Ok(KafkaBackend::new(bootstrap, request, ProviderKind::External, "Kafka (external)".into(), true, ()))
}
