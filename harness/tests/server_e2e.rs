//! The reference server against a real (compat) MongoDB and real node
//! processes: cross-node delivery, exactly-once and seq order under
//! concurrent senders, idempotent resend, `after` catch-up, bad input.

mod common;

use chatbench::scenario::Mode;
use common::{Client, http_get, start, start_mode};
use futures::StreamExt;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_message_sent_on_one_node_reaches_a_subscriber_on_another() {
    let env = start(2, &[]).await;
    let mut sub = Client::connect(&env, 1).await;
    assert_eq!(sub.subscribe("lobby", None).await, 0);
    let mut sender = Client::connect(&env, 0).await;
    sender.send("lobby", "m1", "hello").await;
    let ack = sender.next_op("ack").await;
    assert_eq!(ack, json!({"op": "ack", "id": "m1", "room": "lobby", "seq": 1}));
    let msg = sub.next_op("msg").await;
    assert_eq!((msg["seq"].as_u64(), msg["id"].as_str(), msg["body"].as_str()), (Some(1), Some("m1"), Some("hello")));
    assert_eq!(msg["node"], "node-0");
}

#[tokio::test]
async fn concurrent_senders_on_three_nodes_are_delivered_exactly_once_in_one_order() {
    const PER_SENDER: usize = 40;
    let env = start(3, &[]).await;
    let mut subs = Vec::new();
    for node in 0..3 {
        let mut s = Client::connect(&env, node).await;
        s.subscribe("busy", None).await;
        subs.push(s);
    }
    let mut senders = Vec::new();
    for node in 0..3 {
        let mut c = Client::connect(&env, node).await;
        senders.push(tokio::spawn(async move {
            // Pipelined: all sends first, then the acks.
            for k in 0..PER_SENDER {
                c.send("busy", &format!("n{node}-{k}"), "x").await;
            }
            let mut acked = Vec::new();
            for _ in 0..PER_SENDER {
                let ack = c.next_op("ack").await;
                acked.push((ack["id"].as_str().unwrap().to_owned(), ack["seq"].as_u64().unwrap()));
            }
            acked
        }));
    }
    let mut acks = Vec::new();
    for s in senders {
        let acked = s.await.unwrap();
        // Per-sender FIFO: a sender's messages get rising seqs in send order.
        let seqs: Vec<u64> = acked.iter().map(|a| a.1).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sender FIFO broken: {seqs:?}");
        acks.extend(acked);
    }
    let total = 3 * PER_SENDER;
    let mut all_seqs: Vec<u64> = acks.iter().map(|a| a.1).collect();
    all_seqs.sort();
    assert_eq!(all_seqs, (1..=total as u64).collect::<Vec<_>>(), "acked seqs are gap-free and unique");
    let mut orders = Vec::new();
    for s in &mut subs {
        let got = s.msgs(total).await;
        assert_eq!(got.iter().map(|m| m.0).collect::<Vec<_>>(), (1..=total as u64).collect::<Vec<_>>(), "seq order");
        assert_eq!(got.iter().map(|m| &m.1).collect::<HashSet<_>>().len(), total, "exactly once");
        s.assert_quiet(Duration::from_millis(300)).await;
        orders.push(got);
    }
    assert!(orders.windows(2).all(|w| w[0] == w[1]), "all subscribers see one order");
    let (status, body) = http_get(&env, 2, "/rooms/busy/messages?limit=1000").await;
    assert_eq!(status, 200);
    let history: serde_json::Value = serde_json::from_str(&body).unwrap();
    let history: Vec<(u64, String)> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["seq"].as_u64().unwrap(), m["id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(history, orders[0], "history order equals live order");
}

#[tokio::test]
async fn a_resend_is_stored_once_and_acked_with_the_same_seq_on_any_node() {
    let env = start(2, &[]).await;
    let mut sub = Client::connect(&env, 1).await;
    sub.subscribe("r", None).await;
    let mut a = Client::connect(&env, 0).await;
    a.send("r", "dup-1", "first").await;
    let first = a.next_op("ack").await;
    a.send("r", "dup-1", "first").await;
    let again = a.next_op("ack").await;
    let mut b = Client::connect(&env, 1).await;
    b.send("r", "dup-1", "first").await;
    let elsewhere = b.next_op("ack").await;
    assert_eq!(first["seq"], 1);
    assert_eq!(again["seq"], 1);
    assert_eq!(elsewhere["seq"], 1);
    a.send("r", "next", "second").await;
    assert_eq!(a.next_op("ack").await["seq"], 2, "the resend did not burn a seq");
    assert_eq!(sub.msgs(2).await, vec![(1, "dup-1".to_owned()), (2, "next".to_owned())]);
    sub.assert_quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn subscribe_after_replays_history_then_continues_live_without_gap_or_duplicate() {
    let env = start(2, &[]).await;
    let mut sender = Client::connect(&env, 0).await;
    for k in 1..=20 {
        sender.send("hist", &format!("m{k}"), "x").await;
    }
    for _ in 0..20 {
        sender.next_op("ack").await;
    }
    // Keep sending while the late subscriber joins, so the seam is live.
    let mut live_sender = Client::connect(&env, 0).await;
    let live = tokio::spawn(async move {
        for k in 21..=60 {
            live_sender.send("hist", &format!("m{k}"), "x").await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for _ in 21..=60 {
            live_sender.next_op("ack").await;
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut late = Client::connect(&env, 1).await;
    let head = late.subscribe("hist", Some(5)).await;
    assert!(head >= 20, "head {head} counts the stored messages");
    let got = late.msgs(55).await;
    live.await.unwrap();
    assert_eq!(got.iter().map(|m| m.0).collect::<Vec<_>>(), (6..=60).collect::<Vec<_>>());
    assert_eq!(got[0].1, "m6");
    late.assert_quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_connection_stays_usable() {
    let env = start(1, &[]).await;
    let mut c = Client::connect(&env, 0).await;
    let oversized = json!({"op": "send", "room": "r", "id": "big", "body": "x".repeat(70 * 1024)}).to_string();
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("{not json"), "bad_json"),
        (Message::text("[1,2,3]"), "not_object"),
        (Message::text(r#"{"op":"dance"}"#), "unknown_op"),
        (Message::text(r#"{"op":"send","room":"r","body":"x"}"#), "missing_field"),
        (Message::text(r#"{"op":"send","room":"r","id":"","body":"x"}"#), "empty_field"),
        (Message::text(r#"{"op":"subscribe","room":"no spaces allowed"}"#), "bad_room"),
        (Message::text(r#"{"op":"unsubscribe","room":"never"}"#), "not_subscribed"),
        (Message::text(oversized), "frame_too_large"),
        (Message::binary(vec![0u8, 1, 2]), "binary_not_supported"),
    ];
    for (frame, code) in cases {
        c.send_raw(frame).await;
        let reply = c.next().await;
        assert_eq!(reply["op"], "error", "{reply}");
        assert_eq!(reply["code"], code, "{reply}");
        assert!(!reply["message"].as_str().unwrap_or("").is_empty());
    }
    c.subscribe("r", None).await;
    c.send("r", "ok-1", "still works").await;
    let [ack, msg] = <[_; 2]>::try_from(c.next_each(&["ack", "msg"]).await).unwrap();
    assert_eq!(ack["seq"], 1);
    assert_eq!(msg["id"], "ok-1");
    let (_, metrics) = http_get(&env, 0, "/metrics").await;
    assert!(metrics.contains("chat_frame_errors_total 9"), "{metrics}");
}

#[tokio::test]
async fn health_history_and_metrics_endpoints_answer() {
    let env = start(1, &[]).await;
    let (status, body) = http_get(&env, 0, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"fanout\":\"open\""), "{body}");
    let (status, _) = http_get(&env, 0, "/rooms/bad%20room/messages").await;
    assert_eq!(status, 400);
    let mut c = Client::connect(&env, 0).await;
    c.subscribe("m", None).await;
    c.send("m", "a", "b").await;
    c.next_each(&["ack", "msg"]).await;
    let (_, metrics) = http_get(&env, 0, "/metrics").await;
    for line in [
        "chat_sends_total 1",
        "chat_acks_total 1",
        "chat_deliveries_total 1",
        "chat_changestream_events_total 1",
        "chat_mongo_writes_total 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    assert!(metrics.contains("chat_insert_to_fanout_seconds_count 1"), "{metrics}");
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_and_exits_zero() {
    let mut env = start(1, &[]).await;
    let mut c = Client::connect(&env, 0).await;
    c.subscribe("bye", None).await;
    let node = env.cluster.nodes.remove(0);
    let pid = node.pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).unwrap();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), c.ws.next()).await.expect("close within 5s") {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1001));
    let status = chatbench::cluster::Cluster::of(vec![node]).stop(Duration::from_secs(5)).await;
    assert!(status.is_empty(), "node did not exit 0: {status:?}");
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_closed_with_4008_and_memory_stays_bounded() {
    let env = start(1, &["--queue-capacity", "8"]).await;
    let mut slow = Client::connect(&env, 0).await;
    slow.subscribe("flood", None).await;
    let mut sender = Client::connect(&env, 0).await;
    let body = "y".repeat(60_000);
    // ~24 MB of frames: more than socket buffers hold, so the queue fills.
    for k in 0..400 {
        sender.send("flood", &format!("f{k}"), &body).await;
    }
    for _ in 0..400 {
        sender.next_op("ack").await;
    }
    // The server writes its close frame with a 2 s timeout: a client that
    // is still not reading by then (this test waits for 400 acks first,
    // which a loaded machine may take longer than that to store) gets the
    // connection dropped without it. What the client must see is the end
    // of the connection; a close frame, when it gets one, says 4008.
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break Some(frame.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => break None,
            Err(_) => panic!("the slow consumer was never disconnected"),
        }
    };
    if let Some(code) = ended {
        assert_eq!(code, Some(4008), "slow consumer closed with the documented code");
    }
    let (_, metrics) = http_get(&env, 0, "/metrics").await;
    assert!(metrics.contains("chat_slow_consumer_closes_total 1"), "{metrics}");
}

/// Poll `/healthz` until `want(status, body)`; returns the body.
async fn healthz_until(env: &common::Env, want: impl Fn(u16, &str) -> bool, what: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http_get(env, 0, "/healthz").await;
        if want(status, &body) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "healthz never reported {what}; last: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_kafka_mode_healthz_follows_the_broker_and_the_consumer_recovers_after_a_restart() {
    let mut env = start_mode(1, Mode::Kafka, &[]).await;
    let body = healthz_until(&env, |s, b| s == 200 && b.contains("\"fanout\":\"open\""), "healthy").await;
    assert!(body.contains("\"mode\":\"kafka\""), "{body}");
    let mut c = Client::connect(&env, 0).await;
    c.subscribe("k", None).await;
    c.send("k", "before", "x").await;
    c.next_each(&["ack", "msg"]).await;
    // The broker is down for 3 s: /healthz turns 503 (fanout closed), then 200.
    let mut broker = env.kafka.take().unwrap();
    let (restarted, closed) = tokio::join!(
        broker.restart(Duration::from_secs(3)),
        healthz_until(&env, |s, b| s == 503 && b.contains("\"fanout\":\"closed\""), "fanout closed while the broker is down"),
    );
    restarted.expect("the broker restarts on its data");
    assert!(closed.contains("\"mongo\":\"ok\""), "only the Kafka link is down: {closed}");
    healthz_until(&env, |s, b| s == 200 && b.contains("\"fanout\":\"open\""), "healthy again after the restart").await;
    // The same consumer carries on from its offsets: a new message arrives
    // through Kafka (not from history) and nothing is replayed twice.
    c.send("k", "after", "y").await;
    let frames = c.next_each(&["ack", "msg"]).await;
    assert_eq!((frames[1]["id"].as_str(), frames[1]["seq"].as_u64()), (Some("after"), Some(2)));
    c.assert_quiet(Duration::from_millis(500)).await;
    let (_, metrics) = http_get(&env, 0, "/metrics").await;
    for line in ["chat_kafka_events_total 2", "chat_kafka_reconnects_total 1", "chat_history_replays_total 0"] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}
