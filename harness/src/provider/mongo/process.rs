//! `process`: real `mongod` binaries from PATH, one per replica-set member on
//! free ports, with the replica set initiated by the harness.

use super::{MongoBackend, MongoRequest, server_version, wait_until_ready};
use crate::process::{ChildGuard, stable_port, tail, which};
use crate::provider::{ProviderError, ProviderKind, Restart};
use anyhow::Context as _;
use futures::future::BoxFuture;
use mongodb::bson::{Document, doc};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

pub(super) const REPLICA_SET: &str = "rs0";

pub fn mongod_status() -> anyhow::Result<String> {
    let path = which("mongod").context("mongod is not on PATH")?;
    let out =
        std::process::Command::new(&path).arg("--version").output().map_err(|e| anyhow::anyhow!("cannot run {}: {e}", path.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("mongod").to_owned())
}

/// The `replSetInitiate` config for members on these ports.
pub(super) fn initiate_config(ports: &[u16]) -> Document {
    let members: Vec<Document> =
        ports.iter().enumerate().map(|(i, port)| doc! {"_id": i as i32, "host": format!("127.0.0.1:{port}")}).collect();
    doc! {"_id": REPLICA_SET, "members": members}
}

/// The connection string for a replica set on these ports.
pub(super) fn replica_set_uri(ports: &[u16]) -> String {
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    format!("mongodb://{}/?replicaSet={REPLICA_SET}", hosts.join(","))
}

/// One replica-set member and what it takes to start it again.
struct Member {
    index: usize,
    port: u16,
    dbpath: PathBuf,
    log: PathBuf,
    /// The scenario's extra mongod flags (kept for restarts).
    extra: Vec<String>,
    child: ChildGuard,
}

impl Member {
    fn spawn(index: usize, port: u16, dbpath: &Path, log: &Path, extra: &[String]) -> std::io::Result<ChildGuard> {
        let mut cmd = Command::new("mongod");
        cmd.args(["--replSet", REPLICA_SET, "--bind_ip", "127.0.0.1", "--port", &port.to_string()])
            .args(extra)
            .arg("--dbpath")
            .arg(dbpath)
            .arg("--logpath")
            .arg(log)
            .arg("--logappend")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ChildGuard::spawn(format!("mongod-{index}"), &mut cmd)
    }
}

struct Running {
    members: Vec<Member>,
    uri: String,
    _dir: tempfile::TempDir,
}

impl Restart for Running {
    /// SIGKILL the current primary, start it again on its data after
    /// `down_for`, and wait until the set has a primary again (with several
    /// members another one is elected meanwhile).
    fn restart(&mut self, down_for: Duration) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let client = wait_until_ready(&self.uri, Duration::from_secs(10)).await?;
            let hello = client.database("admin").run_command(doc! {"hello": 1}).await.map_err(|e| anyhow::anyhow!("hello: {e}"))?;
            let primary = hello.get_str("primary").map_err(|_| anyhow::anyhow!("the replica set has no primary to restart"))?.to_owned();
            let member = self
                .members
                .iter_mut()
                .find(|m| primary == format!("127.0.0.1:{}", m.port))
                .ok_or_else(|| anyhow::anyhow!("primary {primary} is not one of the members chatbench started"))?;
            member.child.kill().await;
            tokio::time::sleep(down_for).await;
            member.child = Member::spawn(member.index, member.port, &member.dbpath, &member.log, &member.extra)
                .map_err(|e| anyhow::anyhow!("starting mongod-{} again: {e}", member.index))?;
            wait_for_primary(&self.uri, Duration::from_secs(60)).await.map(|_| ())
        })
    }
}

/// Wait until the replica set answers with a primary.
async fn wait_for_primary(uri: &str, timeout: Duration) -> anyhow::Result<mongodb::Client> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(client) = wait_until_ready(uri, Duration::from_secs(5)).await {
            let hello = client.database("admin").run_command(doc! {"hello": 1}).await;
            if hello.is_ok_and(|h| h.get_str("primary").is_ok()) {
                return Ok(client);
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(anyhow::anyhow!("replica set {REPLICA_SET} elected no primary within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) async fn start(request: &MongoRequest, log_dir: &Path) -> Result<MongoBackend, ProviderError> {
    super::no_network("process", request)?;
    let version = mongod_status().map_err(|why| ProviderError::Unavailable {
        provider: "process",
        why: format!("{why:#}"),
        fix: "Install MongoDB server binaries (mongod) on PATH, or use --provider compat".into(),
    })?;
    let failed = |why: String| ProviderError::StartFailed { provider: "process", what: "mongod".into(), why };
    let dir = tempfile::Builder::new().prefix("chatbench-mongod-").tempdir().map_err(|e| failed(e.to_string()))?;
    let mut members = Vec::new();
    let mut ports = Vec::new();
    for i in 0..request.members {
        let port = stable_port().map_err(|e| failed(e.to_string()))?;
        let dbpath = dir.path().join(format!("member-{i}"));
        std::fs::create_dir_all(&dbpath).map_err(|e| failed(e.to_string()))?;
        let log = log_dir.join(format!("mongod-{i}.log"));
        let child = Member::spawn(i as usize, port, &dbpath, &log, &request.server_args).map_err(|e| failed(e.to_string()))?;
        members.push(Member { index: i as usize, port, dbpath, log, extra: request.server_args.clone(), child });
        ports.push(port);
    }
    let first = format!("mongodb://127.0.0.1:{}/?directConnection=true", ports[0]);
    let client = wait_until_ready(&first, Duration::from_secs(30))
        .await
        .map_err(|why| failed(format!("{why}; log:\n{}", tail(&log_dir.join("mongod-0.log"), 15))))?;
    client
        .database("admin")
        .run_command(doc! {"replSetInitiate": initiate_config(&ports)})
        .await
        .map_err(|e| failed(format!("replSetInitiate: {e}")))?;
    let uri = replica_set_uri(&ports);
    let client = wait_for_primary(&uri, Duration::from_secs(60)).await.map_err(|e| failed(format!("{e:#}")))?;
    let v = server_version(&client).await.unwrap_or(version);
    let running = Running { members, uri: uri.clone(), _dir: dir };
    Ok(MongoBackend::new(uri, ProviderKind::Process, format!("MongoDB {v}"), true, running))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initiates_every_member_on_loopback() {
        let config = initiate_config(&[1, 2, 3]);
        assert_eq!(config.get_str("_id").unwrap(), REPLICA_SET);
        let members = config.get_array("members").unwrap();
        assert_eq!(members.len(), 3);
        assert_eq!(members[2].as_document().unwrap().get_str("host").unwrap(), "127.0.0.1:3");
        assert_eq!(replica_set_uri(&[1, 2]), "mongodb://127.0.0.1:1,127.0.0.1:2/?replicaSet=rs0");
    }

    #[tokio::test]
    #[ignore = "needs mongod on PATH"]
    async fn starts_a_three_member_replica_set() {
        let dir = tempfile::tempdir().unwrap();
        let request = MongoRequest { members: 3, uri: None, persistent: false, server_args: Vec::new(), image: None, network: None };
        let backend = start(&request, dir.path()).await.unwrap();
        assert!(backend.uri.contains("replicaSet=rs0"));
    }
}
