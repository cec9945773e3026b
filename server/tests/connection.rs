//! One connection's defects and bounds, in-process on compat MongoDB: each
//! test failed on the server before the fix it names.

mod common;

use chatbench_server::Limits;
use chatbench_server::store::{Store, StoreLimits};
use common::{Client, Next, metric, start};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Was: the send worker pushed its ack into the same bounded queue the hub
/// fills while the loop, its only reader, waited to hand over the next send
/// — a client in a busy room stopped getting anything, for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_room_with_a_small_queue_acks_every_pipelined_send_and_closes_no_prompt_reader() {
    const PER_CLIENT: usize = 250;
    let env = start(2, Limits { queue_frames: 64, send_queue: 16, ..Limits::default() }).await;
    // One client on node 0 subscribes first (so it is owed every message)...
    let a = Client::connect(&env.nodes[0]).await;
    let (mut write, mut read) = a.ws.split();
    write.send(Message::text(json!({"op": "subscribe", "room": "dl"}).to_string())).await.unwrap();
    loop {
        let Some(Ok(Message::Text(t))) = read.next().await else { panic!("no subscribed reply") };
        if t.as_str().contains("\"subscribed\"") {
            break;
        }
    }
    // ...then four clients on node 1 pipeline sends into the room while it
    // pipelines its own.
    let mut others = Vec::new();
    for k in 0..4 {
        let mut c = Client::connect(&env.nodes[1]).await;
        others.push(tokio::spawn(async move {
            for i in 0..PER_CLIENT {
                c.send("dl", &format!("b{k}-{i}"), "x").await;
            }
            for _ in 0..PER_CLIENT {
                c.next_op("ack").await;
            }
        }));
    }
    let writer = tokio::spawn(async move {
        for i in 0..PER_CLIENT {
            let frame = json!({"op": "send", "room": "dl", "id": format!("a-{i}"), "body": "x"});
            write.send(Message::text(frame.to_string())).await.unwrap();
        }
        write
    });
    let (mut acks, mut msgs) = (0, 0);
    // Stuck means no text frame for 20 s (pings alone do not count: the
    // server pings every 15 s, which would keep a per-frame timeout away).
    let mut stuck_at = tokio::time::Instant::now() + Duration::from_secs(20);
    while acks < PER_CLIENT || msgs < 5 * PER_CLIENT {
        let frame = tokio::time::timeout_at(stuck_at, read.next()).await;
        let frame = frame.unwrap_or_else(|_| panic!("stuck after {acks} acks and {msgs} messages"));
        match frame {
            Some(Ok(Message::Text(t))) => {
                stuck_at = tokio::time::Instant::now() + Duration::from_secs(20);
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                match v["op"].as_str() {
                    Some("ack") => acks += 1,
                    Some("msg") => msgs += 1,
                    other => panic!("unexpected {other:?}: {v}"),
                }
            }
            Some(Ok(Message::Close(f))) => panic!("a prompt reader was closed: {f:?} after {acks} acks, {msgs} messages"),
            Some(Ok(_)) => {}
            other => panic!("connection failed: {other:?}"),
        }
    }
    let _write = writer.await.unwrap();
    for o in others {
        o.await.unwrap();
    }
    assert_eq!(metric(&env.nodes[0], "chat_slow_consumer_closes_total").await, 0.0);
}

/// Was: no ping, no idle timeout — a client that stops reading and sending
/// pinned its connection for ever.
#[tokio::test]
async fn a_silent_client_is_closed_at_the_idle_timeout_and_a_reading_one_is_not() {
    let limits = Limits { ping_interval: Duration::from_millis(200), idle_timeout: Duration::from_secs(1), ..Limits::default() };
    let env = start(1, limits).await;
    let node = &env.nodes[0];
    let mut silent = Client::connect(node).await;
    silent.subscribe("quiet", None).await;
    let mut reading = Client::connect(node).await;
    reading.subscribe("quiet", None).await;
    // The reading client answers pings (its WebSocket layer does, while it reads).
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < until {
        let _ = tokio::time::timeout(Duration::from_millis(100), reading.ws.next()).await;
    }
    assert_eq!(metric(node, "chat_idle_closes_total").await, 1.0);
    // Its close frame (4002) sits behind pings it never answered; reading
    // them now makes its side try to pong into a closed socket, so the end
    // may show as a reset instead: either way the connection is gone.
    match silent.next_event().await {
        Next::Closed(code) => assert!(matches!(code, Some(4002) | None), "{code:?}"),
        Next::Frame(f) => panic!("expected the idle close, got {f}"),
    }
    reading.send("quiet", "m1", "still here").await;
    assert_eq!(reading.next_op("ack").await["seq"], 1, "the reading client is still served");
}

/// Was: `after` above i64::MAX panicked the connection task (debug) or
/// looped on history queries (release).
#[tokio::test]
async fn after_beyond_the_largest_seq_is_a_bad_field_and_the_connection_stays_usable() {
    let env = start(1, Limits::default()).await;
    let mut c = Client::connect(&env.nodes[0]).await;
    c.send_json(json!({"op": "subscribe", "room": "r", "after": u64::MAX})).await;
    let err = c.next_op("error").await;
    assert_eq!((err["code"].as_str(), err["room"].as_str()), (Some("bad_field"), Some("r")));
    assert_eq!(c.subscribe("r", Some(i64::MAX as u64)).await, 0, "the largest seq is accepted");
    assert_eq!(c.subscribe("r", None).await, 0);
}

/// Was: subscriptions per connection were unlimited.
#[tokio::test]
async fn subscriptions_per_connection_are_limited_with_a_named_error() {
    let env = start(1, Limits { max_subscriptions: 3, ..Limits::default() }).await;
    let mut c = Client::connect(&env.nodes[0]).await;
    for room in ["a", "b", "c"] {
        c.subscribe(room, None).await;
    }
    c.send_json(json!({"op": "subscribe", "room": "d"})).await;
    let err = c.next_op("error").await;
    assert_eq!((err["code"].as_str(), err["room"].as_str()), (Some("too_many_subscriptions"), Some("d")));
    c.subscribe("a", None).await; // a room it has is fine
    c.send_json(json!({"op": "unsubscribe", "room": "b"})).await;
    c.next_op("unsubscribed").await;
    c.subscribe("d", None).await;
}

/// Was: `GET /rooms/{room}/messages?limit=10000` materialized every message
/// (up to ~650 MB) in one response.
#[tokio::test]
async fn history_responses_are_bounded_in_bytes_and_page_on() {
    let env = start(1, Limits { history_page_bytes: 64 * 1024, ..Limits::default() }).await;
    let node = &env.nodes[0];
    let mut c = Client::connect(node).await;
    let body = "y".repeat(20_000);
    for i in 0..20 {
        c.send("big", &format!("m{i}"), &body).await;
    }
    for _ in 0..20 {
        c.next_op("ack").await;
    }
    let mut after = 0u64;
    let mut got = 0;
    let mut pages = 0;
    loop {
        let r: serde_json::Value =
            reqwest::get(node.http(&format!("/rooms/big/messages?after={after}&limit=10000"))).await.unwrap().json().await.unwrap();
        let messages = r["messages"].as_array().unwrap();
        assert!(messages.len() <= 4, "64 KiB of 20 KB messages is at most 4 (the one over the limit included)");
        got += messages.len();
        pages += 1;
        if r["more"] != true {
            break;
        }
        after = messages.last().unwrap()["seq"].as_u64().unwrap();
    }
    assert_eq!(got, 20);
    assert!(pages >= 5, "{pages} pages");
    let bad = reqwest::get(node.http(&format!("/rooms/big/messages?after={}", u64::MAX))).await.unwrap();
    assert_eq!(bad.status(), 400);
}

/// Was: the queue was bounded in frames only (4096), so one subscriber that
/// never reads pinned up to ~250 MB of 60 KB messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_closed_once_its_queue_holds_too_many_bytes() {
    let env = start(1, Limits { queue_bytes: 256 * 1024, ..Limits::default() }).await;
    let node = &env.nodes[0];
    let mut stuck = Client::connect(node).await;
    stuck.subscribe("flood", None).await;
    let mut sender = Client::connect(node).await;
    let body = "z".repeat(50_000);
    for i in 0..300 {
        sender.send("flood", &format!("m{i}"), &body).await;
        sender.next_op("ack").await;
        if metric(node, "chat_slow_consumer_closes_total").await >= 1.0 {
            return;
        }
    }
    panic!("300 × 50 KB to a subscriber that never reads did not close it");
}

/// Was: the per-room head map never shrank.
#[tokio::test]
async fn room_head_hints_are_bounded() {
    let (mongo, _dir) = common::mongo().await;
    let store =
        Store::connect(&mongo.uri, "heads", StoreLimits { write_timeout: Duration::from_secs(5), max_room_heads: 8, max_pool_size: None })
            .await
            .unwrap();
    for r in 0..40 {
        let room = chatbench_server::protocol::RoomId::parse(&format!("room-{r}")).unwrap();
        let id = chatbench_server::protocol::MsgId::parse("m1").unwrap();
        store.insert(&room, &id, "x", "n").await.unwrap();
        assert!(store.room_heads() <= 9, "{} hints after {} rooms", store.room_heads(), r + 1);
    }
}

/// Shutdown is a barrier: every connection gets 1001 and `serve` returns
/// only once they are all gone.
#[tokio::test]
async fn shutdown_closes_every_connection_with_1001_and_then_returns() {
    let mut env = start(1, Limits::default()).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(&env.nodes[0]).await;
        c.subscribe("bye", None).await;
        clients.push(c);
    }
    let node = env.nodes.pop().unwrap();
    let stopped = tokio::spawn(node.stop());
    for mut c in clients {
        match c.next_event().await {
            Next::Closed(code) => assert_eq!(code, Some(1001)),
            Next::Frame(f) => panic!("expected 1001, got {f}"),
        }
    }
    stopped.await.unwrap().expect("serve returns Ok");
}

/// Past its write slots (`--max-inflight-writes`) a node sheds: a send that
/// waits longer than `--overload-wait` is answered `overloaded` and not
/// stored, later sends to its room are refused until it is resent, and a
/// client that resends what was refused gets every message stored exactly
/// once, in its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_past_its_write_slots_sheds_with_overloaded_and_resends_store_once() {
    const CLIENTS: usize = 6;
    const PER_CLIENT: usize = 20;
    let limits = Limits { max_inflight_writes: 1, overload_wait: Duration::from_millis(1), ..Limits::default() };
    let env = start(1, limits).await;
    let mut tasks = Vec::new();
    for k in 0..CLIENTS {
        let mut c = Client::connect(&env.nodes[0]).await;
        tasks.push(tokio::spawn(async move {
            let room = format!("shed-{k}");
            let mut pending: Vec<usize> = (0..PER_CLIENT).collect();
            let mut refused = 0;
            // Send everything still pending, in order; keep what was refused.
            while !pending.is_empty() {
                for &i in &pending {
                    c.send(&room, &format!("m{i}"), "x").await;
                }
                let mut again = Vec::new();
                for _ in 0..pending.len() {
                    let f = c.next().await;
                    match f["op"].as_str() {
                        Some("ack") => {}
                        Some("error") => {
                            let code = f["code"].as_str().unwrap().to_owned();
                            assert!(code == "overloaded" || code == "resend_required", "{f}");
                            refused += usize::from(code == "overloaded");
                            again.push(f["id"].as_str().unwrap()[1..].parse::<usize>().unwrap());
                        }
                        _ => panic!("unexpected {f}"),
                    }
                }
                again.sort_unstable();
                pending = again;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (room, refused)
        }));
    }
    let mut shed = 0;
    let mut rooms = Vec::new();
    for t in tasks {
        let (room, refused) = t.await.unwrap();
        shed += refused;
        rooms.push(room);
    }
    assert!(shed > 0, "six clients on one write slot with no wait: some sends are shed");
    assert_eq!(metric(&env.nodes[0], "chat_overloaded_sends_total").await as usize, shed);
    let http = reqwest::Client::new();
    for room in rooms {
        let page: serde_json::Value =
            http.get(env.nodes[0].http(&format!("/rooms/{room}/messages"))).send().await.unwrap().json().await.unwrap();
        let ids: Vec<&str> = page["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        let expected: Vec<String> = (0..PER_CLIENT).map(|i| format!("m{i}")).collect();
        assert_eq!(ids, expected, "{room}: every send stored once, in order");
    }
}
