//! Providers: how the backends a run needs come to exist, chosen per run.
//!
//! `docker` (testcontainers), `process` (binaries on PATH), `compat`
//! (Docker-less stand-ins installed by `ci/setup`) and `external` (URIs the
//! user gives). `auto` takes the first that can honour the scenario. A
//! provider that cannot honour a request fails with a clear message; none
//! silently downgrades. Every backend is torn down when its handle drops.

pub mod broker;
pub mod docker;
pub mod kafka;
pub mod mongo;

use std::path::PathBuf;

pub use crate::scenario::ProviderChoice;

/// Concrete providers (what `auto` resolves to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Docker,
    Process,
    Compat,
    External,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Docker => "docker",
            ProviderKind::Process => "process",
            ProviderKind::Compat => "compat",
            ProviderKind::External => "external",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{provider} provider is not available here: {why}. {fix}")]
    Unavailable { provider: &'static str, why: String, fix: String },
    #[error("{provider} provider cannot honour this scenario: {why}")]
    CannotHonour { provider: &'static str, why: String },
    #[error("{provider} provider: {what} did not start: {why}")]
    StartFailed { provider: &'static str, what: String, why: String },
}

/// A running backend the nemesis can stop and start again on the same data
/// (`restart_mongo`, `restart_kafka`). Providers that cannot, refuse a
/// scenario that asks for it when they start (see `refuse_restarts`).
pub trait Restart: Send + Sync {
    fn restart(&mut self, down_for: std::time::Duration) -> futures::future::BoxFuture<'_, anyhow::Result<()>> {
        let _ = down_for;
        Box::pin(async { Err(anyhow::anyhow!("this provider cannot restart its backend")) })
    }

    /// Freeze the backend for `duration` (it keeps its connections and
    /// state, and answers nothing meanwhile), then let it go on.
    fn pause(&mut self, duration: std::time::Duration) -> futures::future::BoxFuture<'_, anyhow::Result<()>> {
        let _ = duration;
        Box::pin(async { Err(anyhow::anyhow!("this provider cannot pause its backend")) })
    }
}

/// SIGSTOP a backend's process tree for `duration`, then SIGCONT.
pub(crate) async fn pause_process(child: &crate::process::ChildGuard, duration: std::time::Duration) -> anyhow::Result<()> {
    use nix::sys::signal::Signal;
    child.signal(Signal::SIGSTOP)?;
    tokio::time::sleep(duration).await;
    child.signal(Signal::SIGCONT)?;
    Ok(())
}

impl Restart for () {}

/// For providers without [`Restart`]: a scenario that restarts this backend
/// cannot be honoured (auto then tries the next provider).
pub(crate) fn refuse_restarts(provider: &'static str, backend: &str, restarts: bool, why: &str) -> Result<(), ProviderError> {
    if restarts {
        return Err(ProviderError::CannotHonour { provider, why: format!("the scenario restarts {backend}, but {why}") });
    }
    Ok(())
}

/// `auto`: try the providers that report themselves available, in order.
/// One that cannot honour the request is skipped (auto may pick another
/// that can); any other failure is final — nothing silently downgrades.
pub(crate) async fn first_that_works<'a, B>(
    backend: &str,
    candidates: [(ProviderChoice, anyhow::Result<String>); 3],
    fix: &str,
    mut start: impl FnMut(ProviderChoice) -> std::pin::Pin<Box<dyn Future<Output = Result<B, ProviderError>> + 'a>>,
) -> Result<B, ProviderError> {
    let mut tried = Vec::new();
    for (kind, available) in candidates {
        if let Err(why) = available {
            tried.push(format!("{kind:?}: {why}"));
            continue;
        }
        match start(kind).await {
            Ok(b) => return Ok(b),
            Err(e @ ProviderError::CannotHonour { .. }) => {
                // Said where the user sees it: the run goes on with another provider.
                tracing::warn!("auto: not {kind:?} for {backend}: {e}");
                tried.push(e.to_string())
            }
            Err(e) => return Err(e),
        }
    }
    Err(ProviderError::Unavailable {
        provider: "auto",
        why: format!("no {backend} provider can serve this run ({})", tried.join("; ")),
        fix: fix.to_owned(),
    })
}

/// Where `ci/setup` installs the compat backends.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHATBENCH_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("chatbench");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("chatbench")
}

/// Is a Docker engine reachable? (A socket that exists, or DOCKER_HOST set.)
pub fn docker_reachable() -> anyhow::Result<String> {
    if let Some(host) = std::env::var_os("DOCKER_HOST") {
        return Ok(format!("DOCKER_HOST={}", host.to_string_lossy()));
    }
    let socket = std::path::Path::new("/var/run/docker.sock");
    if !socket.exists() {
        anyhow::bail!("no Docker engine: /var/run/docker.sock does not exist and DOCKER_HOST is not set");
    }
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => Ok("/var/run/docker.sock".into()),
        Err(e) => Err(anyhow::anyhow!("/var/run/docker.sock exists but does not answer: {e}")),
    }
}
