//! Shared helpers for the end-to-end tests: a compat MongoDB plus N real
//! `chat-server` processes, and a small WebSocket test client.
#![allow(dead_code)]

use chatbench::cluster::{Cluster, ClusterSpec, find_server_bin};
use chatbench::provider::ProviderChoice;
use chatbench::provider::kafka::{self, KafkaBackend, KafkaRequest};
use chatbench::provider::mongo::{self, MongoBackend, MongoRequest};
use chatbench::scenario::Mode;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub struct Env {
    pub cluster: Cluster,
    pub mongo: MongoBackend,
    /// In kafka mode: the compat broker.
    pub kafka: Option<KafkaBackend>,
    pub dir: tempfile::TempDir,
}

pub async fn start(nodes: u32, extra_args: &[&str]) -> Env {
    start_mode(nodes, Mode::Changestream, extra_args).await
}

/// Nodes in `mode`; in kafka mode on a compat broker whose data survives a
/// restart (S3 on moto), so tests can restart it.
pub async fn start_mode(nodes: u32, mode: Mode, extra_args: &[&str]) -> Env {
    let mut dir = tempfile::tempdir().expect("temp dir");
    // Keep node and backend logs for a failing run: CHATBENCH_KEEP_TEST_DIRS=1.
    if std::env::var_os("CHATBENCH_KEEP_TEST_DIRS").is_some() {
        dir.disable_cleanup(true);
        eprintln!("test logs kept in {}", dir.path().display());
    }
    let request = MongoRequest { members: 1, uri: None, persistent: false, server_args: Vec::new(), image: None, network: None };
    let mongo = mongo::start(ProviderChoice::Compat, &request, dir.path()).await.expect("compat MongoDB starts (run ci/setup first)");
    let mut args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
    let kafka = match mode {
        Mode::Kafka => {
            let request = KafkaRequest { topic: "e2e".into(), partitions: 2, bootstrap: None, persistent: true, image: None };
            let k = kafka::start(ProviderChoice::Compat, &request, dir.path()).await.expect("compat Kafka starts (run ci/setup first)");
            args.extend(["--kafka-bootstrap".to_owned(), k.bootstrap.clone(), "--kafka-topic".to_owned(), k.topic.clone()]);
            Some(k)
        }
        Mode::Changestream => None,
    };
    let spec = ClusterSpec {
        server_bin: find_server_bin().expect("chat-server is built: run `cargo build --workspace --bins` first"),
        nodes,
        mongo_uri: mongo.uri.clone(),
        node_mongo_uris: Vec::new(),
        db: "e2e".into(),
        mode,
        extra_args: args,
        per_node_args: Vec::new(),
        log_dir: dir.path().to_owned(),
        command: None,
        containers: None,
    };
    let cluster = Cluster::start(&spec).await.expect("nodes start and turn healthy");
    Env { cluster, mongo, kafka, dir }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Client {
    pub ws: Ws,
}

pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    pub async fn connect(env: &Env, node: usize) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(env.cluster.nodes[node].ws_url()).await.expect("connect");
        Client { ws }
    }

    pub async fn send_json(&mut self, value: Value) {
        self.ws.send(Message::text(value.to_string())).await.expect("send frame");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("send frame");
    }

    /// The next text frame as JSON; panics on timeout or close.
    pub async fn next(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(FRAME_TIMEOUT, self.ws.next())
                .await
                .expect("a frame within the timeout")
                .expect("connection open")
                .expect("frame ok");
            match msg {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).expect("server frames are JSON");
                }
                Message::Close(frame) => panic!("connection closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next frame with this op, skipping others (e.g. msgs while waiting for an ack).
    pub async fn next_op(&mut self, op: &str) -> Value {
        loop {
            let frame = self.next().await;
            if frame["op"] == op {
                return frame;
            }
        }
    }

    /// One frame of each op, in whatever order they arrive (a connection
    /// that sends into its own room may get its `msg` before its `ack`).
    pub async fn next_each(&mut self, ops: &[&str]) -> Vec<Value> {
        let mut found: Vec<Option<Value>> = vec![None; ops.len()];
        while found.iter().any(Option::is_none) {
            let frame = self.next().await;
            if let Some(i) = ops.iter().position(|op| frame["op"] == *op)
                && found[i].is_none()
            {
                found[i] = Some(frame);
            }
        }
        found.into_iter().map(|f| f.expect("every op was found")).collect()
    }

    pub async fn subscribe(&mut self, room: &str, after: Option<u64>) -> u64 {
        let mut frame = serde_json::json!({"op": "subscribe", "room": room});
        if let Some(a) = after {
            frame["after"] = a.into();
        }
        self.send_json(frame).await;
        let reply = self.next_op("subscribed").await;
        reply["head"].as_u64().expect("head is a number")
    }

    pub async fn send(&mut self, room: &str, id: &str, body: &str) {
        self.send_json(serde_json::json!({"op": "send", "room": room, "id": id, "body": body})).await;
    }

    /// Collect `n` msg frames as (seq, id).
    pub async fn msgs(&mut self, n: usize) -> Vec<(u64, String)> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let f = self.next_op("msg").await;
            out.push((f["seq"].as_u64().unwrap(), f["id"].as_str().unwrap().to_owned()));
        }
        out
    }

    /// No further frame arrives within `wait`.
    pub async fn assert_quiet(&mut self, wait: Duration) {
        if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(wait, self.ws.next()).await {
            panic!("unexpected frame: {t}");
        }
    }
}

pub async fn http_get(env: &Env, node: usize, path: &str) -> (u16, String) {
    let r = reqwest::get(env.cluster.nodes[node].http_url(path)).await.expect("http get");
    (r.status().as_u16(), r.text().await.expect("body"))
}
