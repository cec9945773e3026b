//! `compat`: tansu 0.6.0, a Kafka-API broker in Rust, installed by
//! `ci/setup` (`cargo install tansu --version 0.6.0 --locked --features
//! dynostore`). One broker, run in its own working directory (it reads a
//! `.env` there). Not Kafka: its latency says nothing about Kafka's; it also
//! holds fetches ~250 ms unless consumers set a low `fetch.wait.max.ms`
//! (the nodes use 5 ms).
//!
//! Storage is in the broker's memory, unless the scenario restarts Kafka:
//! then tansu stores in S3, served by moto in a separate process
//! (`harness/compat/s3_launcher.py`, pinned in the compat venv), so a killed
//! broker starts again on the same topics, offsets and producer state. That
//! storage is far slower (every produce is several conditional S3 writes
//! to a Python server), so restart scenarios run at low rates.

use super::{KafkaBackend, KafkaRequest, prepare};
use crate::process::{ChildGuard, stable_port, tail, which};
use crate::provider::mongo::{compat_python, venv_package};
use crate::provider::{ProviderError, ProviderKind, Restart};
use anyhow::Context as _;
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

const S3_LAUNCHER: &str = include_str!("../../../compat/s3_launcher.py");
const BUCKET: &str = "tansu";

/// The tansu binary: CHATBENCH_TANSU, else PATH, else ~/.cargo/bin/tansu.
pub fn tansu_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHATBENCH_TANSU") {
        return Some(PathBuf::from(p));
    }
    which("tansu").or_else(|| {
        let home = std::env::var_os("HOME")?;
        let candidate = PathBuf::from(home).join(".cargo/bin/tansu");
        candidate.is_file().then_some(candidate)
    })
}

pub fn tansu_status() -> anyhow::Result<String> {
    let bin = tansu_bin().context("tansu is not installed (run ci/setup kafka)")?;
    let out =
        std::process::Command::new(&bin).arg("--version").output().map_err(|e| anyhow::anyhow!("cannot run {}: {e}", bin.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(if version.is_empty() { "tansu".to_owned() } else { version })
}

/// Ok(description) when moto (the S3 stand-in for `restart_kafka`) is in the compat venv.
pub fn moto_status() -> anyhow::Result<String> {
    venv_package("moto", "moto.server")
}

/// Where tansu keeps its data.
enum Storage {
    Memory,
    /// moto's S3 server on this port (the process that holds the data).
    S3 {
        port: u16,
        _server: Box<ChildGuard>,
    },
}

impl Storage {
    fn url(&self) -> &'static str {
        match self {
            Storage::Memory => "memory://tansu/",
            Storage::S3 { .. } => "s3://tansu/",
        }
    }

    /// Start moto's S3 server with the bucket, and wait until it is ready.
    async fn start_s3(dir: &Path, log: &Path) -> anyhow::Result<Storage> {
        let script = dir.join("s3_launcher.py");
        std::fs::write(&script, S3_LAUNCHER).map_err(|e| anyhow::anyhow!("writing the S3 launcher: {e}"))?;
        let ready_file = dir.join("s3.ready");
        let port = stable_port().map_err(anyhow::Error::from)?;
        let log_file = std::fs::File::create(log).map_err(|e| anyhow::anyhow!("creating {}: {e}", log.display()))?;
        let mut cmd = Command::new(compat_python());
        cmd.arg(&script)
            .args(["--port", &port.to_string(), "--bucket", BUCKET, "--ready-file"])
            .arg(&ready_file)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone().map_err(anyhow::Error::from)?))
            .stderr(Stdio::from(log_file));
        let mut server = ChildGuard::spawn("moto-s3", &mut cmd).map_err(anyhow::Error::from)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !ready_file.exists() {
            if let Some(status) = server.exited() {
                return Err(anyhow::anyhow!(
                    "the S3 stand-in (moto) exited with {status}; is moto in the compat venv? (run ci/setup); log {}:\n{}",
                    log.display(),
                    tail(log, 15)
                ));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(anyhow::anyhow!("the S3 stand-in (moto) was not ready within 30s; log {}:\n{}", log.display(), tail(log, 15)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Storage::S3 { port, _server: Box::new(server) })
    }
}

/// The broker and what it takes to start it again on the same port and data.
struct Running {
    broker: ChildGuard,
    storage: Storage,
    port: u16,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Running {
    fn spawn(dir: &Path, storage: &Storage, port: u16, log: &Path) -> anyhow::Result<ChildGuard> {
        let bin = tansu_bin().context("tansu is not installed (run ci/setup kafka)")?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", log.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.args(["broker", "--storage-engine", storage.url(), "--listener-url", &url, "--advertised-listener-url", &url, "--silent"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone().map_err(anyhow::Error::from)?))
            .stderr(Stdio::from(log_file));
        if let Storage::S3 { port, .. } = storage {
            // object_store's S3 client reads these (AmazonS3Builder::from_env).
            cmd.env("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"))
                .env("AWS_ALLOW_HTTP", "true")
                .env("AWS_ACCESS_KEY_ID", "chatbench")
                .env("AWS_SECRET_ACCESS_KEY", "chatbench")
                .env("AWS_DEFAULT_REGION", "us-east-1");
        }
        ChildGuard::spawn("tansu", &mut cmd).map_err(anyhow::Error::from)
    }

    /// Spawn the broker and wait until it answers (and the topic exists).
    async fn spawn_ready(dir: &Path, storage: &Storage, port: u16, log: &Path, request: &KafkaRequest) -> anyhow::Result<ChildGuard> {
        let mut broker = Running::spawn(dir, storage, port, log)?;
        let bootstrap = format!("127.0.0.1:{port}");
        let ready = tokio::select! {
            ready = prepare(&bootstrap, request, Duration::from_secs(20)) => ready,
            status = broker.child_mut().wait() => Err(anyhow::anyhow!("exited with {status:?}")),
        };
        ready.map(|()| broker).map_err(|why| anyhow::anyhow!("{why}; log {}:\n{}", log.display(), tail(log, 15)))
    }
}

impl Restart for Running {
    /// SIGKILL the broker, wait `down_for`, start it on the same port and storage.
    fn restart(&mut self, down_for: Duration) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            if matches!(self.storage, Storage::Memory) {
                anyhow::bail!("compat Kafka keeps this run's topics in memory; a restart would lose them");
            }
            self.broker.kill().await;
            tokio::time::sleep(down_for).await;
            self.broker = Running::spawn(self.dir.path(), &self.storage, self.port, &self.log)?;
            let bootstrap = format!("127.0.0.1:{}", self.port);
            super::wait_for_metadata(&bootstrap, Duration::from_secs(20))
                .await
                .map_err(|why| anyhow::anyhow!("tansu did not come back: {why}; log {}:\n{}", self.log.display(), tail(&self.log, 15)))
        })
    }

    /// SIGSTOP tansu for `duration`, then SIGCONT (its topics stay, even in memory).
    fn pause(&mut self, duration: Duration) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(crate::provider::pause_process(&self.broker, duration))
    }
}

pub(super) async fn start(request: &KafkaRequest, log_dir: &Path) -> Result<KafkaBackend, ProviderError> {
    let version = tansu_status().map_err(|why| ProviderError::Unavailable {
        provider: "compat",
        why: format!("{why:#}"),
        fix: "Run ci/setup kafka (cargo install tansu --version 0.6.0 --locked --features dynostore, about 10 minutes once)".into(),
    })?;
    let failed = |why: String| ProviderError::StartFailed { provider: "compat", what: "tansu".into(), why };
    let log = log_dir.join("kafka-compat.log");
    let _ = std::fs::remove_file(&log);
    let mut last = String::new();
    for _attempt in 0..3 {
        let dir = tempfile::Builder::new().prefix("chatbench-tansu-").tempdir().map_err(|e| failed(e.to_string()))?;
        let storage = if request.persistent {
            Storage::start_s3(dir.path(), &log_dir.join("kafka-compat-s3.log")).await.map_err(|e| failed(format!("{e:#}")))?
        } else {
            Storage::Memory
        };
        let port = stable_port().map_err(|e| failed(e.to_string()))?;
        match Running::spawn_ready(dir.path(), &storage, port, &log, request).await {
            Ok(broker) => {
                let bootstrap = format!("127.0.0.1:{port}");
                tracing::info!(%bootstrap, topic = %request.topic, storage = storage.url(), "compat Kafka (tansu) ready");
                let version = match storage {
                    Storage::Memory => version,
                    Storage::S3 { .. } => format!("{version} on S3 (moto)"),
                };
                let running = Running { broker, storage, port, log, dir };
                return Ok(KafkaBackend::new(bootstrap, request, ProviderKind::Compat, version, false, running));
            }
            Err(why) => last = format!("{why:#}"),
        }
    }
    Err(failed(last))
}
