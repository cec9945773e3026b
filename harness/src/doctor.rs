//! `chatbench doctor`: which providers work on this machine and what to
//! install for the others.

use crate::provider::broker::{self, BrokerKind};
use crate::provider::kafka::{kafka_status, moto_status, tansu_status};
use crate::provider::mongo::{compat_python, compat_status, mongod_status};
use crate::provider::{cache_dir, docker_reachable};

pub(crate) struct ProviderStatus {
    pub provider: &'static str,
    pub backend: &'static str,
    pub ready: anyhow::Result<String>,
    pub fix: String,
}

pub(crate) fn survey() -> Vec<ProviderStatus> {
    vec![
        ProviderStatus {
            provider: "docker",
            backend: "MongoDB (mongo:8.0, 1-member replica set) and Kafka (apache/kafka, KRaft), or --docker-image",
            ready: docker_reachable(),
            fix: "ci/setup docker (an engine and local images), then --docker-image mongo=chatbench-local/nx-27017:0.8.1".into(),
        },
        ProviderStatus {
            provider: "process",
            backend: "MongoDB (mongod on PATH, 1 or 3 members)",
            ready: mongod_status(),
            fix: "install MongoDB server binaries so that `mongod` is on PATH".into(),
        },
        ProviderStatus {
            provider: "compat",
            backend: "nx-27017 (MongoDB wire protocol on SQLite; not MongoDB's speed)",
            ready: compat_status(),
            fix: format!("run ci/setup (installs into {}; python at {})", cache_dir().display(), compat_python().display()),
        },
        ProviderStatus {
            provider: "process",
            backend: "Kafka (kafka-server-start.sh on PATH, KRaft) for --mode kafka",
            ready: kafka_status(),
            fix: "put Apache Kafka's bin/ on PATH".into(),
        },
        ProviderStatus {
            provider: "compat",
            backend: "tansu (Kafka API, in memory; not Kafka's speed) for --mode kafka",
            ready: tansu_status(),
            fix: "run ci/setup (cargo install tansu --version 0.6.0 --locked --features dynostore)".into(),
        },
        ProviderStatus {
            provider: "compat",
            backend: "moto (S3 server: tansu's durable storage, for restart_kafka)",
            ready: moto_status(),
            fix: "run ci/setup (pins moto[server]==5.2.5 in the compat venv)".into(),
        },
        ProviderStatus {
            provider: "process",
            backend: "Redis (redis-server, real) for --mode redis",
            ready: broker::status(BrokerKind::Redis),
            fix: "run ci/setup redis (Debian's redis-server 7.0.15)".into(),
        },
        ProviderStatus {
            provider: "process",
            backend: "NATS with JetStream (nats-server, real) for --mode nats",
            ready: broker::status(BrokerKind::Nats),
            fix: "run ci/setup nats (Debian's nats-server 2.9.10)".into(),
        },
        ProviderStatus {
            provider: "external",
            backend: "any MongoDB (and Kafka, Redis, NATS) you run",
            ready: Err(anyhow::anyhow!("needs a URI")),
            fix: "pass --mongo-uri mongodb://... (or topology.mongo.uri)".into(),
        },
    ]
}

pub(crate) fn render(statuses: &[ProviderStatus]) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(["provider", "backend", "status", "to use it"]);
    for s in statuses {
        let (status, fix) = match &s.ready {
            Ok(found) => (format!("ready: {found}"), "-".to_owned()),
            Err(why) => (format!("unavailable: {why}"), s.fix.clone()),
        };
        table.add_row([s.provider.to_owned(), s.backend.to_owned(), status, fix]);
    }
    let auto = statuses.iter().find(|s| s.provider != "external" && s.ready.is_ok()).map_or("none", |s| s.provider);
    format!("{table}\n`--provider auto` would use: {auto}\n")
}
