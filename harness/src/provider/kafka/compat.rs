//! `compat`: tansu 0.6.0, a Kafka-API broker in Rust, installed by
//! `ci/setup` (`cargo install tansu --version 0.6.0 --locked --features
//! dynostore`). In-memory storage, one broker, run in its own working
//! directory (it reads a `.env` there). Not Kafka: its latency says nothing
//! about Kafka's; it also holds fetches ~250 ms unless consumers set a low
//! `fetch.wait.max.ms` (the nodes use 5 ms).

use super::{KafkaBackend, KafkaRequest, prepare};
use crate::process::{ChildGuard, free_port, tail, which};
use crate::provider::{ProviderError, ProviderKind};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

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

pub fn tansu_status() -> Result<String, String> {
    let bin = tansu_bin().ok_or("tansu is not installed (run ci/setup)")?;
    let out = std::process::Command::new(&bin).arg("--version").output().map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(if version.is_empty() { "tansu".to_owned() } else { version })
}

struct Running {
    _broker: ChildGuard,
    _dir: tempfile::TempDir,
}

pub async fn start(request: &KafkaRequest, log_dir: &Path) -> Result<KafkaBackend, ProviderError> {
    let version = tansu_status().map_err(|why| ProviderError::Unavailable {
        provider: "compat",
        why,
        fix: "Run ci/setup (cargo install tansu --version 0.6.0 --locked --features dynostore)".into(),
    })?;
    let bin = tansu_bin().expect("tansu_status found it");
    let failed = |why: String| ProviderError::StartFailed { provider: "compat", what: "tansu".into(), why };
    let log = log_dir.join("kafka-compat.log");
    let mut last = String::new();
    for _attempt in 0..3 {
        let dir = tempfile::Builder::new().prefix("chatbench-tansu-").tempdir().map_err(|e| failed(e.to_string()))?;
        let port = free_port().map_err(|e| failed(e.to_string()))?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log_file = std::fs::File::create(&log).map_err(|e| failed(e.to_string()))?;
        let mut cmd = Command::new(&bin);
        cmd.args(["broker", "--storage-engine", "memory://tansu/", "--listener-url", &url, "--advertised-listener-url", &url, "--silent"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone().map_err(|e| failed(e.to_string()))?))
            .stderr(Stdio::from(log_file));
        let mut broker = ChildGuard::spawn("tansu", &mut cmd).map_err(|e| failed(e.to_string()))?;
        let bootstrap = format!("127.0.0.1:{port}");
        let ready = tokio::select! {
            ready = prepare(&bootstrap, request, Duration::from_secs(20)) => ready,
            status = broker.child_mut().wait() => Err(format!("exited with {status:?}")),
        };
        match ready {
            Ok(()) => {
                tracing::info!(%bootstrap, topic = %request.topic, "compat Kafka (tansu) ready");
                return Ok(KafkaBackend::new(
                    bootstrap,
                    request,
                    ProviderKind::Compat,
                    version,
                    false,
                    Running { _broker: broker, _dir: dir },
                ));
            }
            Err(why) => last = format!("{why}; log {}:\n{}", log.display(), tail(&log, 15)),
        }
    }
    Err(failed(last))
}
