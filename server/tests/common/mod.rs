//! In-process nodes for the server's tests: a compat MongoDB (the
//! harness's provider, so `ci/setup` must have run) and N nodes started with
//! [`serve`] on port 0 inside the test, plus a small WebSocket client.
#![allow(dead_code)]

use chatbench::provider::ProviderChoice;
use chatbench::provider::mongo::{self, MongoBackend, MongoRequest};
use chatbench_server::fanout::FanoutConfig;
use chatbench_server::{Config, Limits, ServeError, serve};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Node {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Node {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Shut the node down (as on SIGTERM) and wait for `serve` to return.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("serve returns after shutdown").expect("serve did not panic")
    }
}

pub struct Env {
    pub mongo: MongoBackend,
    pub db: String,
    pub nodes: Vec<Node>,
    pub dir: tempfile::TempDir,
}

pub fn config(env_uri: &str, db: &str, node: usize, limits: Limits, fanout: FanoutConfig) -> Config {
    Config {
        mongo_uri: env_uri.to_owned(),
        db: db.to_owned(),
        node_id: format!("node-{node}"),
        fanout,
        limits,
        sabotage: Default::default(),
        sabotage_seed: 0,
        stomp_login: None,
        auth: None,
    }
}

/// A compat MongoDB only.
pub async fn mongo() -> (MongoBackend, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let request = MongoRequest { members: 1, uri: None, persistent: false, server_args: Vec::new(), image: None, network: None };
    let mongo = mongo::start(ProviderChoice::Compat, &request, dir.path()).await.expect("compat MongoDB starts (run ci/setup first)");
    (mongo, dir)
}

/// A compat MongoDB and `nodes` in-process nodes with `limits`.
pub async fn start(nodes: usize, limits: Limits) -> Env {
    let (mongo, dir) = mongo().await;
    let db = "server_tests".to_owned();
    let mut started = Vec::new();
    for n in 0..nodes {
        started.push(start_node(config(&mongo.uri, &db, n, limits, FanoutConfig::Changestream(Default::default()))).await);
    }
    for node in &started {
        wait_healthy(node).await;
    }
    Env { mongo, db, nodes: started, dir }
}

/// One node in-process on port 0 (not waited for).
pub async fn start_node(config: Config) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = listener.local_addr().expect("bound address");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, config, async move {
        let _ = stopped.await;
    }));
    Node { addr, stop: Some(stop), task }
}

pub async fn wait_healthy(node: &Node) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(node.http("/healthz")).await
            && r.status() == 200
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "node {} never turned healthy", node.addr);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A counter or gauge from a node's /metrics.
pub async fn metric(node: &Node, name: &str) -> f64 {
    let text = reqwest::get(node.http("/metrics")).await.expect("metrics").text().await.expect("metrics text");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("metric {name} not found in:\n{text}"))
}

#[allow(unused_imports)] // Not every test file uses every name.
pub use chatbench::testkit::{FRAME_TIMEOUT, Next, V1Client};

/// Protocol v1 clients of an in-process node.
pub struct Client;

impl Client {
    pub async fn connect(node: &Node) -> V1Client {
        V1Client::connect(&node.ws_url()).await
    }
}
