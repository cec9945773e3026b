//! `docker`: MongoDB in a container, through testcontainers.
//!
//! The official image (`mongo:8.0` by default) runs `mongod --replSet rs0`
//! and the harness initiates the one-member set with the driver's
//! `replSetInitiate` (no `mongosh`), member `localhost:27017`, so clients
//! connect with `directConnection=true`. An image labelled
//! `org.chatbench.flavour=nx-27017` (ci/docker's compat image) runs its own
//! command: a standalone with change streams, not MongoDB.
//!
//! The host port is chosen before the container starts and bound on
//! 127.0.0.1, so `restart_mongo` (stop the container, start it again: the
//! data stays in it) keeps the nodes' connection strings valid.

use super::{MongoBackend, MongoRequest, single_member_only};
use crate::provider::docker::{self as engine, DEFAULT_MONGO_IMAGE, ImageInfo, LOCAL_MONGO_IMAGE, Pull};
use crate::provider::{ProviderError, ProviderKind, Restart};
use futures::future::BoxFuture;
use mongodb::bson::doc;
use std::time::Duration;
use testcontainers_modules::testcontainers::core::IntoContainerPort;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, GenericImage, ImageExt};

const PORT: u16 = 27017;
const REPLICA_SET: &str = "rs0";
const READY: Duration = Duration::from_secs(60);

/// The connection string for a container whose port 27017 is mapped to `port`.
pub(super) fn uri_for_port(port: u16) -> String {
    format!("mongodb://127.0.0.1:{port}/?directConnection=true")
}

/// The one-member replica-set configuration the harness initiates.
pub(super) fn initiate_command() -> mongodb::bson::Document {
    doc! { "replSetInitiate": { "_id": REPLICA_SET, "members": [ { "_id": 0, "host": format!("localhost:{PORT}") } ] } }
}

/// How the image is run: the official server, or a labelled stand-in.
fn is_compat(info: Option<&ImageInfo>) -> bool {
    info.and_then(|i| i.flavour.as_deref()) == Some("nx-27017")
}

struct Container {
    inner: ContainerAsync<GenericImage>,
    uri: String,
    /// Removed after the container (fields drop in order).
    _network: Option<engine::RunNetwork>,
}

impl Restart for Container {
    /// Stop the container (SIGKILL after no grace), wait `down_for`, start
    /// it again: same host port, same data.
    fn restart(&mut self, down_for: Duration) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            self.inner.stop_with_timeout(Some(0)).await.map_err(|e| anyhow::anyhow!("stopping the mongo container: {e}"))?;
            tokio::time::sleep(down_for).await;
            self.inner.start().await.map_err(|e| anyhow::anyhow!("starting the mongo container again: {e}"))?;
            super::wait_until_ready(&self.uri, READY).await.map(|_| ())
        })
    }
}

pub(super) async fn start(request: &MongoRequest, pull: Pull) -> Result<MongoBackend, ProviderError> {
    single_member_only("docker", request)?;
    let choice =
        engine::Choice { what: "MongoDB", given: request.image.as_deref(), default: DEFAULT_MONGO_IMAGE, stand_in: LOCAL_MONGO_IMAGE };
    let (_docker, image, info) = engine::prepare(choice, pull).await?;
    let compat = is_compat(info.as_ref());
    let failed = |why: String| ProviderError::StartFailed { provider: "docker", what: format!("the mongo container ({image})"), why };
    let host_port = crate::process::stable_port().map_err(|e| failed(format!("no free port: {e}")))?;
    let (name, tag) = engine::split_image(&image);
    let network = match &request.network {
        Some(name) => Some(engine::RunNetwork::create(name.clone()).await.map_err(|e| failed(format!("{e:#}")))?),
        None => None,
    };
    // On the run's network the nodes reach MongoDB by this name.
    let inside_name = network.as_ref().map(|n| format!("{}-mongo", n.name));
    let mut container = GenericImage::new(name, tag)
        .with_exposed_port(PORT.tcp())
        .with_labels(engine::labels())
        .with_startup_timeout(READY)
        .with_host_config_modifier(move |c| engine::loopback_only(c, &[(PORT, Some(host_port))]));
    if !compat {
        container = container.with_cmd(["--replSet", REPLICA_SET, "--bind_ip_all"]);
    }
    if let (Some(net), Some(inside)) = (&network, &inside_name) {
        container = container.with_network(net.name.clone()).with_container_name(inside.clone());
    }
    let container = engine::create(container.start()).await.map_err(|e| engine::start_failed("MongoDB", &image, info.is_some(), e))?;
    let uri = uri_for_port(host_port);
    let client = super::wait_until_ready(&uri, READY).await.map_err(|e| failed(format!("{e:#}")))?;
    if !compat {
        initiate(&client).await.map_err(|e| failed(format!("{e:#}")))?;
    }
    let (version, real) = match &info {
        Some(ImageInfo { flavour: Some(flavour), version }) if compat => {
            (format!("{flavour} {} (docker, {image})", version.as_deref().unwrap_or("")), false)
        }
        _ => {
            let v = super::server_version(&client).await.unwrap_or_else(|| "unknown".into());
            (format!("MongoDB {v} (docker, {image})"), true)
        }
    };
    let inside =
        network.as_ref().zip(inside_name).map(|(n, host)| (n.name.clone(), format!("mongodb://{host}:{PORT}/?directConnection=true")));
    let mut backend =
        MongoBackend::new(uri.clone(), ProviderKind::Docker, version, real, Container { inner: container, uri, _network: network });
    backend.inside = inside;
    Ok(backend)
}

/// Initiate the one-member set (once; a set already initiated is fine) and
/// wait until the member is primary.
async fn initiate(client: &mongodb::Client) -> anyhow::Result<()> {
    let admin = client.database("admin");
    if let Err(e) = admin.run_command(initiate_command()).await {
        let text = e.to_string();
        if !text.contains("already initialized") && !text.contains("AlreadyInitialized") {
            return Err(anyhow::anyhow!("replSetInitiate: {text}"));
        }
    }
    let deadline = tokio::time::Instant::now() + READY;
    loop {
        let hello = admin.run_command(doc! {"hello": 1}).await.map_err(|e| anyhow::anyhow!("hello: {e}"))?;
        if hello.get_bool("isWritablePrimary").unwrap_or(false) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(anyhow::anyhow!("the replica set has no primary {READY:?} after replSetInitiate: {hello}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_connects_directly_to_the_mapped_port() {
        assert_eq!(uri_for_port(32768), "mongodb://127.0.0.1:32768/?directConnection=true");
    }

    #[test]
    fn the_set_is_initiated_with_one_member_the_container_reaches_itself_by() {
        let cmd = initiate_command();
        let config = cmd.get_document("replSetInitiate").unwrap();
        assert_eq!(config.get_str("_id").unwrap(), "rs0");
        let members = config.get_array("members").unwrap();
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].as_document().unwrap().get_str("host").unwrap(), "localhost:27017");
    }

    #[test]
    fn only_a_labelled_image_is_run_as_the_compat_stand_in() {
        let nx = ImageInfo { flavour: Some("nx-27017".into()), version: Some("0.8.1".into()) };
        assert!(is_compat(Some(&nx)));
        assert!(!is_compat(Some(&ImageInfo { flavour: None, version: None })));
        assert!(!is_compat(None), "an image not yet pulled is the official server");
    }

    fn request(image: &str, persistent: bool) -> MongoRequest {
        MongoRequest { members: 1, uri: None, persistent, server_args: Vec::new(), image: Some(image.into()), network: None }
    }

    /// Needs `ci/setup docker` (the engine and the local images).
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "needs a Docker engine"]
    async fn the_local_compat_image_answers_and_survives_a_restart() {
        let request = request(LOCAL_MONGO_IMAGE, true);
        let mut backend = start(&request, Pull::Never).await.unwrap();
        assert!(!backend.is_real_mongodb, "{}", backend.version);
        let client = super::super::wait_until_ready(&backend.uri, Duration::from_secs(10)).await.unwrap();
        client.database("t").collection("m").insert_one(doc! {"a": 1}).await.unwrap();
        backend.restart(Duration::from_millis(200)).await.unwrap();
        let client = super::super::wait_until_ready(&backend.uri, Duration::from_secs(10)).await.unwrap();
        let n = client.database("t").collection::<mongodb::bson::Document>("m").count_documents(doc! {}).await.unwrap();
        assert_eq!(n, 1, "the data survives a restart on the same port");
    }

    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "needs a Docker engine"]
    async fn auto_never_pulls_a_missing_image() {
        let request = request("chatbench-local/no-such-image:0", false);
        match start(&request, Pull::Never).await {
            Err(ProviderError::CannotHonour { why, .. }) => {
                assert!(why.contains("never pulls") && why.contains("ci/setup docker"), "{why}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
