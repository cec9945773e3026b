//! Kafka-mode defects, in-process on compat MongoDB and the compat broker.

mod common;

use chatbench::provider::ProviderChoice;
use chatbench::provider::kafka::{self, KafkaRequest};
use chatbench_server::Limits;
use chatbench_server::fanout::FanoutConfig;
use chatbench_server::fanout::kafka::{KafkaConfig, PARTITION_REFRESH};
use common::{Client, config, metric, start_node, wait_healthy};
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

/// Was: the consumer assigned the partitions the topic had at start and
/// never looked again, so messages in partitions added later reached no one.
/// The compat broker (tansu 0.6.0) has no CreatePartitions, and deleting and
/// re-creating the topic under running clients crashes librdkafka 2.12.1 in
/// its metadata cache (seen here), so this needs a real broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kafka-server-start.sh on PATH (tansu 0.6.0 has no CreatePartitions)"]
async fn partitions_added_to_the_topic_later_are_consumed() {
    let (mongo, dir) = common::mongo().await;
    let request = KafkaRequest { topic: "grow".into(), partitions: 1, bootstrap: None, persistent: false, image: None };
    let broker = kafka::start(ProviderChoice::Process, &request, dir.path()).await.expect("Kafka binaries on PATH");
    let kafka = KafkaConfig { bootstrap: broker.bootstrap.clone(), topic: "grow".into(), fetch_wait_max_ms: 5 };
    let node = start_node(config(&mongo.uri, "grow", 0, Limits::default(), FanoutConfig::Kafka(kafka))).await;
    wait_healthy(&node).await;
    let mut sub = Client::connect(&node).await;
    sub.subscribe("late-partition", None).await;

    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &broker.bootstrap).create().expect("admin client");
    let results = admin.create_partitions([&NewPartitions::new("grow", 4)], &AdminOptions::new()).await.expect("CreatePartitions request");
    for r in results {
        r.unwrap_or_else(|(topic, code)| panic!("the broker refused to add partitions to {topic}: {code}"));
    }
    // The node stores and produces this itself; then a frame written straight
    // into every new partition (as another producer of the topic would).
    let producer: FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", &broker.bootstrap).create().expect("producer");
    tokio::time::sleep(PARTITION_REFRESH + Duration::from_secs(2)).await;
    for partition in 1..4 {
        let frame = serde_json::json!({"op": "msg", "room": "late-partition", "seq": partition, "id": format!("p{partition}"),
            "body": "from a new partition", "node": "elsewhere", "ts_ms": 0})
        .to_string();
        producer
            .send(FutureRecord::to("grow").partition(partition).key("late-partition").payload(&frame), Duration::from_secs(5))
            .await
            .map_err(|(e, _)| e)
            .expect("produce into a new partition");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while metric(&node, "chat_kafka_events_total").await < 3.0 {
        assert!(tokio::time::Instant::now() < deadline, "frames in partitions added later were never consumed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
