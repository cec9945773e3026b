//! `compat`: nx-27017, a MongoDB wire-protocol server on SQLite, installed
//! pinned into a venv by `ci/setup`. It is one member with change streams,
//! resume tokens and unique indexes — not MongoDB: its latency and
//! throughput say nothing about MongoDB's. Our launcher
//! (`harness/compat/nx_launcher.py`, embedded here) re-types two reply fields
//! the Rust driver rejects; see the launcher's docstring.

use super::{MongoBackend, MongoRequest, Restart, single_member_only, wait_until_ready};
use crate::process::{ChildGuard, stable_port, tail};
use crate::provider::{ProviderError, ProviderKind, cache_dir};
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

const LAUNCHER: &str = include_str!("../../../compat/nx_launcher.py");

/// The venv Python that has nx-27017 (CHATBENCH_COMPAT_PYTHON overrides).
pub fn compat_python() -> PathBuf {
    std::env::var_os("CHATBENCH_COMPAT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("compat-venv").join("bin").join("python"))
}

/// Ok(description) when the compat MongoDB is installed.
pub fn compat_status() -> anyhow::Result<String> {
    venv_package("nx-27017", "nx_27017")
}

/// `Ok("<package> <version>")` when `package` (imported as `module`) is
/// installed in the compat venv.
pub fn venv_package(package: &str, module: &str) -> anyhow::Result<String> {
    let python = compat_python();
    if !python.exists() {
        return Err(anyhow::anyhow!("{} does not exist (run ci/setup)", python.display()));
    }
    let site = std::process::Command::new(&python)
        .args(["-c", &format!("import importlib.metadata as m, {module}; print(m.version('{package}'))")])
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", python.display()))?;
    if !site.status.success() {
        return Err(anyhow::anyhow!("{package} is not installed in {} (run ci/setup)", python.display()));
    }
    Ok(format!("{package} {}", String::from_utf8_lossy(&site.stdout).trim()))
}

/// The compat backend: the process, its working directory, and what it
/// takes to start it again on the same port and data.
struct Running {
    child: ChildGuard,
    dir: tempfile::TempDir,
    db: String,
    port: u16,
    log: PathBuf,
}

impl Running {
    /// Spawn nx-27017 and wait until it answers.
    async fn spawn(dir: &Path, db: &str, port: u16, log: &Path) -> anyhow::Result<ChildGuard> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", log.display()))?;
        let mut cmd = Command::new(compat_python());
        cmd.arg(dir.join("nx_launcher.py"))
            .args(["--db", db, "--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--pid-file")
            .arg(dir.join("nx.pid"))
            .arg("--log-file")
            .arg(dir.join("nx-internal.log"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone().map_err(anyhow::Error::from)?))
            .stderr(Stdio::from(log_file));
        let mut child = ChildGuard::spawn("nx-27017", &mut cmd).map_err(anyhow::Error::from)?;
        let uri = uri_for(port);
        let ready = tokio::select! {
            ready = wait_until_ready(&uri, Duration::from_secs(20)) => ready.map(|_| ()),
            status = child.child_mut().wait() => Err(anyhow::anyhow!("exited with {status:?}")),
        };
        match ready {
            Ok(()) => Ok(child),
            Err(why) => Err(anyhow::anyhow!("{why}; log {}:\n{}", log.display(), tail(log, 15))),
        }
    }
}

impl Restart for Running {
    /// SIGKILL nx-27017, wait `down_for`, start it on the same port and file.
    fn restart(&mut self, down_for: Duration) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            if self.db == "memory" {
                anyhow::bail!("compat MongoDB runs in memory for this run; a restart would lose the data");
            }
            self.child.kill().await;
            tokio::time::sleep(down_for).await;
            self.child = Running::spawn(self.dir.path(), &self.db, self.port, &self.log).await?;
            Ok(())
        })
    }
}

fn uri_for(port: u16) -> String {
    format!("mongodb://127.0.0.1:{port}/?directConnection=true")
}

pub(super) async fn start(request: &MongoRequest, log_dir: &Path) -> Result<MongoBackend, ProviderError> {
    single_member_only("compat", request)?;
    let version = compat_status().map_err(|why| ProviderError::Unavailable {
        provider: "compat",
        why: format!("{why:#}"),
        fix: "Run ci/setup (it installs nx-27017 pinned into a venv under ~/.cache/chatbench)".into(),
    })?;
    let failed = |why: String| ProviderError::StartFailed { provider: "compat", what: "nx-27017".into(), why };
    let dir = tempfile::Builder::new().prefix("chatbench-nx-").tempdir().map_err(|e| failed(e.to_string()))?;
    std::fs::write(dir.path().join("nx_launcher.py"), LAUNCHER).map_err(|e| failed(format!("writing the launcher: {e}")))?;
    // In memory unless a fault restarts it: then on a file it can reopen.
    let db = if request.persistent { dir.path().join("nx.db").display().to_string() } else { "memory".to_owned() };
    let log = log_dir.join("mongo-compat.log");
    let _ = std::fs::remove_file(&log);
    let mut last_error = String::new();
    // The port is picked before nx-27017 binds it; retry if someone took it.
    for _attempt in 0..3 {
        let port = stable_port().map_err(|e| failed(e.to_string()))?;
        match Running::spawn(dir.path(), &db, port, &log).await {
            Ok(child) => {
                let uri = uri_for(port);
                tracing::info!(%uri, "compat MongoDB (nx-27017) ready");
                let running = Running { child, dir, db, port, log };
                return Ok(MongoBackend::new(uri, ProviderKind::Compat, version, false, running));
            }
            Err(why) => last_error = format!("{why:#}"),
        }
    }
    Err(failed(last_error))
}

#[cfg(test)]
mod tests {
    #[test]
    fn launcher_patches_both_fields_the_driver_rejects() {
        assert!(super::LAUNCHER.contains("Int64(item[\"id\"])"));
        assert!(super::LAUNCHER.contains("Timestamp(item"));
    }
}
