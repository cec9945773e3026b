//! Kafka providers (the baseline's broker). [`start`] returns a
//! [`KafkaBackend`] with a bootstrap address and the topic the nodes use,
//! created by the harness; dropping it stops the broker.

mod compat;
mod docker;
mod external;
mod process;

use super::{ProviderChoice, ProviderError, ProviderKind};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use std::path::Path;
use std::time::Duration;

pub use compat::{tansu_bin, tansu_status};
pub use process::kafka_status;

/// What a run asks of Kafka.
#[derive(Debug, Clone)]
pub struct KafkaRequest {
    pub topic: String,
    pub partitions: i32,
    /// Bootstrap servers for `external`.
    pub bootstrap: Option<String>,
}

pub struct KafkaBackend {
    pub bootstrap: String,
    pub topic: String,
    pub provider: ProviderKind,
    pub version: String,
    /// False for compat stand-ins: their latency is not Kafka's.
    pub is_real_kafka: bool,
    _guard: Box<dyn Send + Sync>,
}

impl KafkaBackend {
    fn new(
        bootstrap: String,
        request: &KafkaRequest,
        provider: ProviderKind,
        version: String,
        real: bool,
        guard: impl Send + Sync + 'static,
    ) -> Self {
        Self { bootstrap, topic: request.topic.clone(), provider, version, is_real_kafka: real, _guard: Box::new(guard) }
    }
}

pub async fn start(choice: ProviderChoice, request: &KafkaRequest, log_dir: &Path) -> Result<KafkaBackend, ProviderError> {
    match choice {
        ProviderChoice::Compat => compat::start(request, log_dir).await,
        ProviderChoice::Process => process::start(request, log_dir).await,
        ProviderChoice::Docker => docker::start(request).await,
        ProviderChoice::External => external::start(request).await,
        ProviderChoice::Auto => {
            let candidates = [
                (ProviderChoice::Docker, super::docker_reachable()),
                (ProviderChoice::Process, kafka_status()),
                (ProviderChoice::Compat, tansu_status()),
            ];
            let fix = "Run ci/setup for the compat broker (tansu), start Docker, or give --kafka-bootstrap with --provider external";
            super::first_that_works("Kafka", candidates, fix, |kind| Box::pin(start(kind, request, log_dir))).await
        }
    }
}

/// Wait until the broker answers a metadata request, then create the topic
/// (an existing topic is fine). Returns an error string for the provider.
pub(crate) async fn prepare(bootstrap: &str, request: &KafkaRequest, timeout: Duration) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "2000")
        .create()
        .map_err(|e| format!("creating an admin client: {e}"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let answered = tokio::task::block_in_place(|| admin.inner().fetch_metadata(None, Duration::from_millis(1000)));
        match answered {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(format!("broker at {bootstrap} did not answer within {timeout:?}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let topic = NewTopic::new(&request.topic, request.partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&topic], &options).await.map_err(|e| format!("creating topic {}: {e}", request.topic))?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("creating topic {name}: {code}")),
        }
    }
    Ok(())
}
