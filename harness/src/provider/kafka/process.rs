//! `process`: Apache Kafka from PATH (`kafka-server-start.sh`), one KRaft
//! broker+controller on free ports, storage formatted by the harness.

use super::{KafkaBackend, KafkaRequest, prepare};
use crate::process::{ChildGuard, stable_port, tail, which};
use crate::provider::{ProviderError, ProviderKind, Restart};
use anyhow::Context as _;
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

pub fn kafka_status() -> anyhow::Result<String> {
    let start = which("kafka-server-start.sh").context("kafka-server-start.sh is not on PATH")?;
    which("kafka-storage.sh").context("kafka-storage.sh is not on PATH")?;
    Ok(format!("Apache Kafka ({})", start.display()))
}

/// A single-node KRaft configuration on the given ports.
pub(super) fn server_properties(broker_port: u16, controller_port: u16, log_dir: &Path) -> String {
    format!(
        "process.roles=broker,controller\nnode.id=1\n\
         controller.quorum.voters=1@127.0.0.1:{controller_port}\n\
         listeners=PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}\n\
         advertised.listeners=PLAINTEXT://127.0.0.1:{broker_port}\n\
         controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
         listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
         log.dirs={}\noffsets.topic.replication.factor=1\ntransaction.state.log.replication.factor=1\n\
         transaction.state.log.min.isr=1\nauto.create.topics.enable=false\n",
        log_dir.display()
    )
}

/// The broker and what it takes to start it again on the same data.
struct Running {
    broker: ChildGuard,
    config: PathBuf,
    log: PathBuf,
    bootstrap: String,
    _dir: tempfile::TempDir,
}

fn spawn_broker(config: &Path, log: &Path) -> std::io::Result<ChildGuard> {
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut cmd = Command::new("kafka-server-start.sh");
    cmd.arg(config).stdin(Stdio::null()).stdout(Stdio::from(log_file.try_clone()?)).stderr(Stdio::from(log_file));
    ChildGuard::spawn("kafka", &mut cmd)
}

impl Restart for Running {
    /// SIGKILL the broker (no clean shutdown, as in a crash), start it again
    /// on the same config and log dirs after `down_for`.
    fn restart(&mut self, down_for: Duration) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            self.broker.kill().await;
            tokio::time::sleep(down_for).await;
            self.broker = spawn_broker(&self.config, &self.log).map_err(|e| anyhow::anyhow!("starting Kafka again: {e}"))?;
            super::wait_for_metadata(&self.bootstrap, Duration::from_secs(60))
                .await
                .map_err(|why| anyhow::anyhow!("Kafka did not come back: {why}; log:\n{}", tail(&self.log, 15)))
        })
    }

    /// SIGSTOP the broker's JVM for `duration`, then SIGCONT.
    fn pause(&mut self, duration: Duration) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(crate::provider::pause_process(&self.broker, duration))
    }
}

pub(super) async fn start(request: &KafkaRequest, log_dir: &Path) -> Result<KafkaBackend, ProviderError> {
    let version = kafka_status().map_err(|why| ProviderError::Unavailable {
        provider: "process",
        why: format!("{why:#}"),
        fix: "Put Apache Kafka's bin/ folder on PATH, or use --provider compat".into(),
    })?;
    let failed = |why: String| ProviderError::StartFailed { provider: "process", what: "Kafka".into(), why };
    let dir = tempfile::Builder::new().prefix("chatbench-kafka-").tempdir().map_err(|e| failed(e.to_string()))?;
    let (broker_port, controller_port) =
        (stable_port().map_err(|e| failed(e.to_string()))?, stable_port().map_err(|e| failed(e.to_string()))?);
    let config = dir.path().join("server.properties");
    std::fs::write(&config, server_properties(broker_port, controller_port, &dir.path().join("data")))
        .map_err(|e| failed(e.to_string()))?;
    let format = Command::new("kafka-storage.sh")
        .args(["format", "--ignore-formatted", "-t", "chatbench-cluster-0000001", "-c"])
        .arg(&config)
        .output()
        .await
        .map_err(|e| failed(format!("kafka-storage.sh format: {e}")))?;
    if !format.status.success() {
        return Err(failed(format!("kafka-storage.sh format: {}", String::from_utf8_lossy(&format.stderr))));
    }
    let log = log_dir.join("kafka.log");
    let _ = std::fs::remove_file(&log);
    let broker = spawn_broker(&config, &log).map_err(|e| failed(e.to_string()))?;
    let bootstrap = format!("127.0.0.1:{broker_port}");
    prepare(&bootstrap, request, Duration::from_secs(60)).await.map_err(|why| failed(format!("{why}; log:\n{}", tail(&log, 15))))?;
    let running = Running { broker, config, log, bootstrap: bootstrap.clone(), _dir: dir };
    Ok(KafkaBackend::new(bootstrap, request, ProviderKind::Process, version, true, running))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kraft_config_listens_on_loopback_ports() {
        let text = server_properties(9092, 9093, Path::new("/tmp/x"));
        assert!(text.contains("listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"));
        assert!(text.contains("controller.quorum.voters=1@127.0.0.1:9093"));
        assert!(text.contains("auto.create.topics.enable=false"));
    }

    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "needs Apache Kafka (kafka-server-start.sh) on PATH"]
    async fn starts_a_broker_with_the_topic() {
        let dir = tempfile::tempdir().unwrap();
        let request = KafkaRequest { topic: "t".into(), partitions: 2, bootstrap: None, persistent: false, image: None };
        let backend = start(&request, dir.path()).await.unwrap();
        assert!(backend.bootstrap.starts_with("127.0.0.1:"));
    }
}
