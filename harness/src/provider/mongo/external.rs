//! `external`: a MongoDB the user runs; we only check that it answers.

use super::{MongoBackend, MongoRequest, server_version, wait_until_ready};
use crate::provider::{ProviderError, ProviderKind, refuse_restarts};
use std::time::Duration;

pub(super) async fn start(request: &MongoRequest) -> Result<MongoBackend, ProviderError> {
    refuse_restarts("external", "MongoDB", request.persistent, "chatbench does not control an external MongoDB")?;
    super::no_mongod_flags("external", request)?;
    super::no_network("external", request)?;
    let uri = request.uri.clone().ok_or_else(|| ProviderError::Unavailable {
        provider: "external",
        why: "no MongoDB URI was given".into(),
        fix: "Set topology.mongo.uri in the scenario or pass --mongo-uri".into(),
    })?;
    let client = wait_until_ready(&uri, Duration::from_secs(5)).await.map_err(|why| ProviderError::StartFailed {
        provider: "external",
        what: format!("MongoDB at {uri}"),
        why: format!("{why:#}"),
    })?;
    let version = server_version(&client).await.map_or("MongoDB (version unknown)".into(), |v| format!("MongoDB {v}"));
    Ok(MongoBackend::new(uri, ProviderKind::External, version, true, ()))
}
