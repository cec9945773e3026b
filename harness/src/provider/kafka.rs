//! Kafka providers (the baseline's broker). [`start`] returns a
//! [`KafkaBackend`] with a bootstrap address and the topic the nodes use,
//! created by the harness; dropping it stops the broker.

mod compat;
mod docker;
mod external;
mod process;

use super::docker::Pull;
use super::{ProviderChoice, ProviderError, ProviderKind, Restart};
use crate::process::{ChildGuard, stable_port, tail};
use crate::proxy::FaultProxy;
use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use compat::{moto_status, tansu_bin, tansu_status};
pub use process::kafka_status;

/// What a run asks of Kafka.
#[derive(Debug, Clone)]
pub struct KafkaRequest {
    pub topic: String,
    pub partitions: i32,
    /// Bootstrap servers for `external`.
    pub bootstrap: Option<String>,
    /// Keep data where a broker restart finds it (`restart_kafka`).
    pub persistent: bool,
    /// The docker provider's image (default [`super::docker::DEFAULT_KAFKA_IMAGE`]).
    pub image: Option<String>,
}

pub struct KafkaBackend {
    pub bootstrap: String,
    pub topic: String,
    pub provider: ProviderKind,
    pub version: String,
    /// False for compat stand-ins: their latency is not Kafka's.
    pub is_real_kafka: bool,
    backend: Box<dyn Restart>,
}

impl KafkaBackend {
    fn new(
        bootstrap: String,
        request: &KafkaRequest,
        provider: ProviderKind,
        version: String,
        real: bool,
        backend: impl Restart + 'static,
    ) -> Self {
        Self { bootstrap, topic: request.topic.clone(), provider, version, is_real_kafka: real, backend: Box::new(backend) }
    }

    /// Stop the broker and start it again on the same data after `down_for`.
    pub async fn restart(&mut self, down_for: Duration) -> anyhow::Result<()> {
        self.backend.restart(down_for).await
    }

    /// Freeze the broker for `duration` (SIGSTOP/SIGCONT; a container:
    /// docker pause): connections stay open, nothing is answered.
    pub async fn pause(&mut self, duration: Duration) -> anyhow::Result<()> {
        self.backend.pause(duration).await
    }
}

pub async fn start(choice: ProviderChoice, request: &KafkaRequest, log_dir: &Path) -> Result<KafkaBackend, ProviderError> {
    match choice {
        ProviderChoice::Compat => compat::start(request, log_dir).await,
        ProviderChoice::Process => process::start(request, log_dir).await,
        ProviderChoice::Docker => docker::start(request, Pull::IfMissing).await,
        ProviderChoice::External => external::start(request).await,
        ProviderChoice::Auto => {
            let candidates = [
                (ProviderChoice::Docker, super::docker_reachable()),
                (ProviderChoice::Process, kafka_status()),
                (ProviderChoice::Compat, tansu_status()),
            ];
            let fix = "Run ci/setup for the compat broker (tansu), start Docker, or give --kafka-bootstrap with --provider external";
            // auto never pulls: a missing image moves on to the next provider.
            super::first_that_works("Kafka", candidates, fix, |kind| match kind {
                ProviderChoice::Docker => Box::pin(docker::start(request, Pull::Never)),
                _ => Box::pin(start(kind, request, log_dir)),
            })
            .await
        }
    }
}

fn admin_client(bootstrap: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "2000")
        .create()
        .map_err(|e| anyhow::anyhow!("creating an admin client: {e}"))
}

/// Wait until the broker answers a metadata request.
pub(crate) async fn wait_for_metadata(bootstrap: &str, timeout: Duration) -> anyhow::Result<()> {
    answers(&admin_client(bootstrap)?, bootstrap, timeout).await
}

async fn answers(admin: &AdminClient<DefaultClientContext>, bootstrap: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let answered = tokio::task::block_in_place(|| admin.inner().fetch_metadata(None, Duration::from_millis(1000)));
        match answered {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(anyhow::anyhow!("broker at {bootstrap} did not answer within {timeout:?}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    Ok(())
}

/// Wait until the broker answers a metadata request, then create the topic
/// (an existing topic is fine). Returns an error string for the provider.
pub(crate) async fn prepare(bootstrap: &str, request: &KafkaRequest, timeout: Duration) -> anyhow::Result<()> {
    let admin = admin_client(bootstrap)?;
    answers(&admin, bootstrap, timeout).await?;
    let topic = NewTopic::new(&request.topic, request.partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&topic], &options).await.map_err(|e| anyhow::anyhow!("creating topic {}: {e}", request.topic))?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(anyhow::anyhow!("creating topic {name}: {code}")),
        }
    }
    Ok(())
}

/// One node's own path to a single-broker Kafka, so the nemesis can degrade
/// just that node's Kafka link: node → `FaultProxy` → `tansu proxy` →
/// broker. Kafka clients connect to the addresses the broker advertises in
/// metadata, which would bypass a plain TCP proxy; tansu's Kafka-aware proxy
/// advertises the fault proxy's address instead, so every connection the
/// node opens comes back through it. Needs the tansu binary (ci/setup
/// installs it) whatever provider runs the broker.
pub struct KafkaLink {
    pub proxy: FaultProxy,
    tansu_proxy: tokio::sync::Mutex<ChildGuard>,
    tansu_port: u16,
    bootstrap: String,
    log: PathBuf,
}

impl KafkaLink {
    pub async fn start(bootstrap: &str, log: &Path) -> anyhow::Result<KafkaLink> {
        if bootstrap.contains(',') {
            return Err(anyhow::anyhow!("Kafka at {bootstrap} has several bootstrap servers; the Kafka link proxy serves a single broker"));
        }
        let tansu_port = stable_port().map_err(anyhow::Error::from)?;
        let proxy = FaultProxy::start(([127, 0, 0, 1], tansu_port).into()).await.map_err(|e| anyhow::anyhow!("fault proxy: {e}"))?;
        let tansu_proxy = spawn_tansu_proxy(tansu_port, &proxy, bootstrap, log)?;
        let link = KafkaLink {
            proxy,
            tansu_proxy: tokio::sync::Mutex::new(tansu_proxy),
            tansu_port,
            bootstrap: bootstrap.to_owned(),
            log: log.to_owned(),
        };
        link.wait_until_it_answers().await?;
        Ok(link)
    }

    /// After a broker restart: tansu's proxy (0.6.0) does not reconnect to
    /// a broker that went away, so it is restarted on the same port. Its
    /// clients' connections drop, as they did when the broker died.
    pub async fn broker_restarted(&self) -> anyhow::Result<()> {
        let mut child = self.tansu_proxy.lock().await;
        child.kill().await;
        *child = spawn_tansu_proxy(self.tansu_port, &self.proxy, &self.bootstrap, &self.log)?;
        drop(child);
        self.wait_until_it_answers().await
    }

    async fn wait_until_it_answers(&self) -> anyhow::Result<()> {
        wait_for_metadata(&self.proxy.addr.to_string(), Duration::from_secs(20)).await.map_err(|why| {
            anyhow::anyhow!("Kafka link proxy for {}: {why}; log {}:\n{}", self.bootstrap, self.log.display(), tail(&self.log, 10))
        })
    }
}

fn spawn_tansu_proxy(port: u16, advertised: &FaultProxy, bootstrap: &str, log: &Path) -> anyhow::Result<ChildGuard> {
    let bin =
        tansu_bin().context("network faults on the Kafka link need tansu's Kafka proxy, and tansu is not installed (run ci/setup)")?;
    let log_file =
        std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(|e| anyhow::anyhow!("opening {}: {e}", log.display()))?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(["proxy", "--listener-url", &format!("tcp://127.0.0.1:{port}")])
        .args(["--advertised-listener-url", &format!("tcp://{}", advertised.addr)])
        .args(["--origin-url", &format!("tcp://{bootstrap}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(log_file.try_clone().map_err(anyhow::Error::from)?))
        .stderr(std::process::Stdio::from(log_file));
    ChildGuard::spawn("tansu-proxy", &mut cmd).map_err(|e| anyhow::anyhow!("starting tansu proxy: {e}"))
}
