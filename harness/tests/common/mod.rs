//! Shared helpers for the end-to-end tests: a compat MongoDB plus N real
//! `chat-server` processes, and a small WebSocket test client.
#![allow(dead_code)]

use chatbench::cluster::{Cluster, ClusterSpec, find_server_bin};
use chatbench::provider::ProviderChoice;
use chatbench::provider::kafka::{self, KafkaBackend, KafkaRequest};
use chatbench::provider::mongo::{self, MongoBackend, MongoRequest};
use chatbench::scenario::Mode;

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
        Mode::Redis | Mode::Nats => panic!("the e2e helpers start changestream or kafka nodes; broker modes run through `chatbench run`"),
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

pub use chatbench::testkit::V1Client;

/// Protocol v1 clients of a node of the run.
pub struct Client;

impl Client {
    pub async fn connect(env: &Env, node: usize) -> V1Client {
        V1Client::connect(&env.cluster.nodes[node].ws_url()).await
    }
}

pub async fn http_get(env: &Env, node: usize, path: &str) -> (u16, String) {
    let r = reqwest::get(env.cluster.nodes[node].http_url(path)).await.expect("http get");
    (r.status().as_u16(), r.text().await.expect("body"))
}
