//! MongoDB providers. [`start`] returns a [`MongoBackend`] whose connection
//! string the nodes use; dropping it tears the backend down.

mod compat;
mod docker;
mod external;
mod process;

use super::docker::Pull;
use super::{ProviderChoice, ProviderError, ProviderKind, Restart};
use mongodb::bson::doc;
use std::path::Path;
use std::time::Duration;

pub use compat::{compat_python, compat_status, venv_package};
pub use process::mongod_status;

/// What a run asks of MongoDB.
#[derive(Debug, Clone)]
pub struct MongoRequest {
    pub members: u32,
    /// Connection string for `external`.
    pub uri: Option<String>,
    /// Keep data on disk so the backend can restart on it (faults).
    pub persistent: bool,
    /// Extra `mongod` flags (process provider only; the others refuse).
    pub server_args: Vec<String>,
    /// The docker provider's image (default [`super::docker::DEFAULT_MONGO_IMAGE`]).
    pub image: Option<String>,
    /// Put MongoDB on this new Docker network, for nodes in containers
    /// (docker provider only; the others refuse).
    pub network: Option<String>,
}

/// A running MongoDB. Dropping it stops the backend.
pub struct MongoBackend {
    pub uri: String,
    pub provider: ProviderKind,
    /// Backend name and version as reported, e.g. `nx-27017 0.8.1`.
    pub version: String,
    /// Whether latency through this backend says anything about MongoDB.
    pub is_real_mongodb: bool,
    /// With [`MongoRequest::network`]: the network and the connection
    /// string containers on it use.
    pub inside: Option<(String, String)>,
    backend: Box<dyn Restart>,
}

impl std::fmt::Debug for MongoBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoBackend").field("uri", &self.uri).field("provider", &self.provider).finish()
    }
}

impl MongoBackend {
    fn new(uri: String, provider: ProviderKind, version: String, real: bool, backend: impl Restart + 'static) -> Self {
        Self { uri, provider, version, is_real_mongodb: real, inside: None, backend: Box::new(backend) }
    }

    /// Stop MongoDB and start it again on the same data after `down_for`.
    pub async fn restart(&mut self, down_for: Duration) -> anyhow::Result<()> {
        self.backend.restart(down_for).await
    }
}

/// Start (or connect to) MongoDB with the chosen provider. Logs go to `log_dir`.
pub async fn start(choice: ProviderChoice, request: &MongoRequest, log_dir: &Path) -> Result<MongoBackend, ProviderError> {
    match choice {
        ProviderChoice::Compat => compat::start(request, log_dir).await,
        ProviderChoice::Process => process::start(request, log_dir).await,
        ProviderChoice::Docker => docker::start(request, Pull::IfMissing).await,
        ProviderChoice::External => external::start(request).await,
        ProviderChoice::Auto => {
            let candidates = [
                (ProviderChoice::Docker, super::docker_reachable()),
                (ProviderChoice::Process, mongod_status()),
                (ProviderChoice::Compat, compat_status()),
            ];
            let fix = "Run ci/setup for the compat backend, put mongod on PATH, start Docker, or give --provider external with a URI";
            // auto never pulls: a missing image moves on to the next provider.
            super::first_that_works("MongoDB", candidates, fix, |kind| match kind {
                ProviderChoice::Docker => Box::pin(docker::start(request, Pull::Never)),
                _ => Box::pin(start(kind, request, log_dir)),
            })
            .await
        }
    }
}

/// Ping until the deployment answers (and, for replica sets, has a primary).
pub(crate) async fn wait_until_ready(uri: &str, timeout: Duration) -> anyhow::Result<mongodb::Client> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("no attempt made");
    while tokio::time::Instant::now() < deadline {
        match try_ping(uri).await {
            Ok(client) => return Ok(client),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(anyhow::anyhow!("no answer within {timeout:?}: {last}"))
}

async fn try_ping(uri: &str) -> anyhow::Result<mongodb::Client> {
    let mut options = mongodb::options::ClientOptions::parse(uri).await.map_err(anyhow::Error::from)?;
    options.server_selection_timeout = Some(Duration::from_millis(500));
    options.connect_timeout = Some(Duration::from_millis(500));
    let client = mongodb::Client::with_options(options).map_err(anyhow::Error::from)?;
    client.database("admin").run_command(doc! {"ping": 1}).await.map_err(anyhow::Error::from)?;
    Ok(client)
}

/// `buildInfo.version`, when the server reports one.
pub(crate) async fn server_version(client: &mongodb::Client) -> Option<String> {
    let info = client.database("admin").run_command(doc! {"buildInfo": 1}).await.ok()?;
    info.get_str("version").ok().map(str::to_owned)
}

/// Only the docker provider puts MongoDB on a Docker network.
fn no_network(provider: &'static str, request: &MongoRequest) -> Result<(), ProviderError> {
    if provider == "docker" || request.network.is_none() {
        return Ok(());
    }
    Err(ProviderError::CannotHonour {
        provider,
        why: "nodes in containers need MongoDB in a container on the run's network (the docker provider)".into(),
    })
}

/// Providers that do not start `mongod` themselves cannot pass it flags.
fn no_mongod_flags(provider: &'static str, request: &MongoRequest) -> Result<(), ProviderError> {
    if request.server_args.is_empty() {
        return Ok(());
    }
    Err(ProviderError::CannotHonour {
        provider,
        why: format!("the scenario passes mongod flags {:?}, which only the process provider can apply", request.server_args),
    })
}

fn single_member_only(provider: &'static str, request: &MongoRequest) -> Result<(), ProviderError> {
    no_mongod_flags(provider, request)?;
    no_network(provider, request)?;
    if request.members == 1 {
        return Ok(());
    }
    Err(ProviderError::CannotHonour {
        provider,
        why: format!(
            "it runs a single-member replica set and the scenario asks for {} members; use the process or external provider",
            request.members
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_process_provider_takes_mongod_flags() {
        let mut request = MongoRequest { members: 1, uri: None, persistent: false, server_args: Vec::new(), image: None, network: None };
        assert!(single_member_only("compat", &request).is_ok());
        request.server_args = vec!["--journalCommitInterval".into(), "10".into()];
        match single_member_only("compat", &request) {
            Err(ProviderError::CannotHonour { why, .. }) => assert!(why.contains("journalCommitInterval") && why.contains("process")),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn single_member_providers_refuse_three_members_instead_of_downgrading() {
        let request = MongoRequest { members: 3, uri: None, persistent: false, server_args: Vec::new(), image: None, network: None };
        let dir = tempfile::tempdir().unwrap();
        for choice in [ProviderChoice::Compat, ProviderChoice::Docker] {
            let err = start(choice, &request, dir.path()).await.unwrap_err();
            assert!(matches!(err, ProviderError::CannotHonour { .. }), "{choice:?}: {err}");
            assert!(err.to_string().contains("3 members"), "{err}");
        }
    }

    /// Nodes in containers need MongoDB on the run's Docker network: every
    /// provider but docker refuses rather than start one the nodes cannot reach.
    #[tokio::test]
    async fn only_docker_puts_mongodb_on_a_docker_network() {
        let request = MongoRequest {
            members: 1,
            uri: Some("mongodb://127.0.0.1:1/".into()),
            persistent: false,
            server_args: Vec::new(),
            image: None,
            network: Some("chatbench-test".into()),
        };
        let dir = tempfile::tempdir().unwrap();
        for choice in [ProviderChoice::Compat, ProviderChoice::Process, ProviderChoice::External] {
            match start(choice, &request, dir.path()).await {
                Err(ProviderError::CannotHonour { why, .. }) => assert!(why.contains("the run's network"), "{choice:?}: {why}"),
                other => panic!("{choice:?}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn external_without_uri_is_a_clear_error() {
        let request = MongoRequest { members: 1, uri: None, persistent: false, server_args: Vec::new(), image: None, network: None };
        let dir = tempfile::tempdir().unwrap();
        let err = start(ProviderChoice::External, &request, dir.path()).await.unwrap_err();
        assert!(err.to_string().contains("URI"), "{err}");
    }

    #[tokio::test]
    async fn external_that_does_not_answer_names_the_uri() {
        let port = crate::process::stable_port().unwrap();
        let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=300");
        let request =
            MongoRequest { members: 1, uri: Some(uri.clone()), persistent: false, server_args: Vec::new(), image: None, network: None };
        let dir = tempfile::tempdir().unwrap();
        let err = start(ProviderChoice::External, &request, dir.path()).await.unwrap_err();
        assert!(err.to_string().contains(&uri), "{err}");
    }
}
