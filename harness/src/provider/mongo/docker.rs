//! `docker`: a single-member replica set in a container, through
//! testcontainers-modules' `mongo` image. The member registers under the
//! container's own host name, so clients connect with `directConnection=true`.

use super::{MongoBackend, MongoRequest, single_member_only};
use crate::provider::{ProviderError, ProviderKind, Restart, docker_reachable, refuse_restarts};
use testcontainers_modules::mongo::Mongo;
use testcontainers_modules::testcontainers::runners::AsyncRunner;

/// The connection string for a container whose port 27017 is mapped to `port`.
pub fn uri_for_port(port: u16) -> String {
    format!("mongodb://127.0.0.1:{port}/?directConnection=true")
}

impl Restart for testcontainers_modules::testcontainers::ContainerAsync<Mongo> {}

pub async fn start(request: &MongoRequest) -> Result<MongoBackend, ProviderError> {
    single_member_only("docker", request)?;
    // Docker gives a restarted container new ephemeral host ports, so the
    // nodes' connection strings would go stale.
    refuse_restarts("docker", "MongoDB", request.persistent, "a restarted container gets a new host port (use compat or process)")?;
    docker_reachable().map_err(|why| ProviderError::Unavailable {
        provider: "docker",
        why,
        fix: "Start a Docker engine, or use --provider compat (after ci/setup)".into(),
    })?;
    let failed = |why: String| ProviderError::StartFailed { provider: "docker", what: "the mongo container".into(), why };
    let container = Mongo::repl_set().start().await.map_err(|e| failed(e.to_string()))?;
    let port = container.get_host_port_ipv4(27017).await.map_err(|e| failed(e.to_string()))?;
    let uri = uri_for_port(port);
    let client = super::wait_until_ready(&uri, std::time::Duration::from_secs(30)).await.map_err(failed)?;
    let version = super::server_version(&client).await.unwrap_or_else(|| "unknown".into());
    Ok(MongoBackend::new(uri, ProviderKind::Docker, format!("MongoDB {version} (docker)"), true, container))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_connects_directly_to_the_mapped_port() {
        assert_eq!(uri_for_port(32768), "mongodb://127.0.0.1:32768/?directConnection=true");
    }

    #[tokio::test]
    #[ignore = "needs a Docker engine"]
    async fn starts_a_replica_set_that_accepts_change_streams() {
        let request = MongoRequest { members: 1, uri: None, persistent: false, server_args: Vec::new() };
        let backend = start(&request).await.unwrap();
        let client = super::super::wait_until_ready(&backend.uri, std::time::Duration::from_secs(10)).await.unwrap();
        let hello = client.database("admin").run_command(mongodb::bson::doc! {"hello": 1}).await.unwrap();
        assert!(hello.get_str("setName").is_ok(), "not a replica set: {hello}");
    }
}
