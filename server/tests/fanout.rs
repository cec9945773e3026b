//! The fan-out's defects, in-process on compat MongoDB (and a Kafka
//! bootstrap nobody answers): each test failed before the fix it names.

mod common;

use chatbench_server::Limits;
use chatbench_server::fanout::FanoutConfig;
use chatbench_server::fanout::kafka::KafkaConfig;
use common::{Client, config, metric, start, start_node};
use mongodb::bson::doc;
use std::time::Duration;

async fn messages(env: &common::Env) -> mongodb::Collection<mongodb::bson::Document> {
    let client = mongodb::Client::with_uri_str(&env.mongo.uri).await.unwrap();
    client.database(&env.db).collection("messages")
}

/// Was: a document that does not decode as a message made the stream fail
/// and re-open from the token *before* it — replaying it for ever, on every
/// node, and delivering nothing after it.
#[tokio::test]
async fn a_foreign_document_is_skipped_once_and_later_messages_still_flow() {
    let env = start(1, Limits::default()).await;
    let node = &env.nodes[0];
    let mut sub = Client::connect(node).await;
    sub.subscribe("r", None).await;
    messages(&env).await.insert_one(doc! {"note": "inserted by another tool"}).await.unwrap();
    // Another tool's document in the room itself must not make it unreadable.
    messages(&env).await.insert_one(doc! {"room": "r", "note": "no seq"}).await.unwrap();
    let mut sender = Client::connect(node).await;
    sender.send("r", "m1", "after the stranger").await;
    assert_eq!(sender.next_op("ack").await["seq"], 1);
    assert_eq!(sub.msgs(1).await, vec![(1, "m1".to_owned())]);
    assert_eq!(metric(node, "chat_skipped_events_total").await, 2.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(metric(node, "chat_changestream_reopens_total").await, 0.0, "no re-open, no replay");
    assert_eq!(metric(node, "chat_skipped_events_total").await, 2.0, "skipped once each, not replayed");
}

/// Was: after the collection was dropped (an invalidate) the stream was
/// re-opened in a tight loop from a token it cannot resume after, and the
/// unique `(room, id)` index — the idempotency key — was never re-created.
/// nx-27017 does not invalidate a stream on a drop (its change feed is
/// trigger-based and survives it), so this needs a real `mongod`; the
/// decision itself is unit-tested in `fanout::changestream`.
#[tokio::test]
#[ignore = "needs mongod on PATH (compat MongoDB sends no invalidate on a drop)"]
async fn a_dropped_collection_gets_its_indexes_back_and_no_hot_reopen_loop() {
    use chatbench::provider::ProviderChoice;
    use chatbench::provider::mongo::{self, MongoRequest};
    let dir = tempfile::tempdir().unwrap();
    let mongo = mongo::start(
        ProviderChoice::Process,
        &MongoRequest { members: 1, uri: None, persistent: false, server_args: Vec::new(), image: None, network: None },
        dir.path(),
    )
    .await
    .unwrap();
    let node = start_node(config(&mongo.uri, "dropped", 0, Limits::default(), FanoutConfig::Changestream(Default::default()))).await;
    common::wait_healthy(&node).await;
    let coll =
        mongodb::Client::with_uri_str(&mongo.uri).await.unwrap().database("dropped").collection::<mongodb::bson::Document>("messages");
    coll.drop().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !coll.list_index_names().await.unwrap_or_default().iter().any(|n| n == "room_id_unique") {
        assert!(tokio::time::Instant::now() < deadline, "the unique (room, id) index was not re-created");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reopens = metric(&node, "chat_changestream_reopens_total").await;
    assert!(reopens <= 5.0, "{reopens} re-opens in ~2 s: a hot loop");
    let mut sender = Client::connect(&node).await;
    for _ in 0..2 {
        sender.send("after-drop", "same-id", "x").await;
        assert_eq!(sender.next_op("ack").await["seq"], 1, "idempotent again");
    }
}

/// Was: `/ws` was served before the fan-out was open (in kafka mode for as
/// long as the broker was unreachable), so a client could subscribe into a
/// window in which nothing reached it.
#[tokio::test]
async fn ws_is_refused_until_the_fanout_has_opened() {
    let (mongo, _dir) = common::mongo().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let kafka = KafkaConfig { bootstrap: format!("127.0.0.1:{port}"), topic: "nobody".into(), fetch_wait_max_ms: 5 };
    let node = start_node(config(&mongo.uri, "startup", 0, Limits::default(), FanoutConfig::Kafka(kafka))).await;
    // Give it time to connect to MongoDB and try the broker.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let health = reqwest::get(node.http("/healthz")).await.unwrap();
    assert_eq!(health.status(), 503);
    match tokio_tungstenite::connect_async(node.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        Err(other) => panic!("expected a 503 upgrade refusal, got {other}"),
        Ok(_) => panic!("/ws was served before the fan-out opened"),
    }
    node.stop().await.expect("stops cleanly while the broker is unreachable");
}

/// Was: a node's head hint for a room was its own last insert, never the
/// inserts its fan-out showed it from other nodes, so a room written from
/// two nodes in turn lost the race for the next `seq` on nearly every
/// message (0.99 clashes per message at 100 msgs/s on 2 nodes).
#[tokio::test]
async fn a_room_written_from_two_nodes_in_turn_does_not_clash() {
    let env = start(2, Limits::default()).await;
    let mut senders = [Client::connect(&env.nodes[0]).await, Client::connect(&env.nodes[1]).await];
    let mut subscribers = [Client::connect(&env.nodes[0]).await, Client::connect(&env.nodes[1]).await];
    for s in &mut subscribers {
        s.subscribe("turns", None).await;
    }
    for i in 0..10u64 {
        let sender = &mut senders[(i % 2) as usize];
        sender.send("turns", &format!("m{i}"), "hello").await;
        assert_eq!(sender.next_op("ack").await["seq"], i + 1);
        // Both nodes' fan-outs have seen it once both subscribers have it.
        for s in &mut subscribers {
            assert_eq!(s.msgs(1).await, vec![(i + 1, format!("m{i}"))]);
        }
    }
    for node in &env.nodes {
        assert_eq!(metric(node, "chat_seq_clashes_total").await, 0.0, "each node learned the other's inserts from its fan-out");
        assert_eq!(metric(node, "chat_mongo_writes_total").await, 5.0, "one insert attempt per message");
    }
}
