//! Soak: two real `chat-server` nodes on compat MongoDB under hostile
//! clients, measuring resident memory (from /proc) and checking that honest
//! clients keep getting every message exactly once and in order. Prints
//! figures; asserts nothing about time.
//!
//!   cargo build --release --workspace --bins && cargo bench -p chatbench-benches --bench soak
//!
//! Phases (each against node 0, honest traffic through node 1):
//! 1. idle connections: resident memory per idle WebSocket connection;
//! 2. a subscription flood: many connections each subscribing to the most
//!    rooms allowed (and one asking for more);
//! 3. everything hostile at once — malformed, binary and oversized frames,
//!    `after` past the largest seq, a sender that never reads its acks, idle
//!    sockets — while an honest sender on node 1 and honest subscribers on
//!    both nodes check every message;
//! 4. a subscriber that never reads while 60 KB messages flood its room:
//!    peak growth, and whether it is closed (4008).

use chatbench::cluster::{Cluster, ClusterSpec, find_server_bin};
use chatbench::provider::ProviderChoice;
use chatbench::provider::mongo::{self, MongoRequest};
use chatbench::scenario::Mode;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.expect("connect").0
}

async fn metric(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics")).await.expect("metrics").text().await.unwrap_or_default();
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0.0)
}

async fn next_text(ws: &mut Ws) -> Option<serde_json::Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

async fn subscribe(ws: &mut Ws, room: &str) {
    ws.send(Message::text(json!({"op": "subscribe", "room": room}).to_string())).await.expect("subscribe");
    while let Some(f) = next_text(ws).await {
        if f["op"] == "subscribed" {
            return;
        }
    }
    panic!("no subscribed reply for {room}");
}

/// Sample a process's resident memory until `stop` is set; the peak.
fn sample_peak(pid: i32, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    })
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mongo = mongo::start(
        ProviderChoice::Compat,
        &MongoRequest { members: 1, uri: None, persistent: false, server_args: Vec::new(), image: None, network: None },
        dir.path(),
    )
    .await
    .expect("compat MongoDB (run ci/setup)");
    let spec = ClusterSpec {
        server_bin: find_server_bin().expect("chat-server built (cargo build --release --workspace --bins)"),
        nodes: 2,
        mongo_uri: mongo.uri.clone(),
        node_mongo_uris: Vec::new(),
        db: "soak".into(),
        mode: Mode::Changestream,
        extra_args: Vec::new(),
        per_node_args: Vec::new(),
        log_dir: dir.path().to_owned(),
        command: None,
        containers: None,
    };
    let mut cluster = Cluster::start(&spec).await.expect("nodes start");
    let (ws0, ws1) = (cluster.nodes[0].ws_url(), cluster.nodes[1].ws_url());
    let http0 = cluster.nodes[0].http_url("");
    let pid0 = cluster.nodes[0].pid();
    println!("chat-server: {}", spec.server_bin.display());
    println!("node 0 resident at start: {} KiB", rss_kib(pid0));

    // 1. Idle connections.
    let before = rss_kib(pid0);
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(connect(&ws0).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid0);
    println!(
        "1. idle connections: 1000 → +{} KiB resident = {:.1} KiB per idle connection",
        after - before,
        (after - before) as f64 / 1000.0
    );

    // 2. A subscription flood: 200 connections × 100 rooms, and one asking for 150.
    let base = rss_kib(pid0);
    let mut flood = Vec::new();
    for c in 0..200 {
        let mut ws = connect(&ws0).await;
        for r in 0..100 {
            ws.send(Message::text(json!({"op": "subscribe", "room": format!("flood-{c}-{r}")}).to_string())).await.expect("subscribe");
        }
        for _ in 0..100 {
            next_text(&mut ws).await.expect("subscribed");
        }
        flood.push(ws);
    }
    let mut greedy = connect(&ws0).await;
    let mut refused = 0;
    for r in 0..150 {
        greedy.send(Message::text(json!({"op": "subscribe", "room": format!("greedy-{r}")}).to_string())).await.expect("subscribe");
    }
    for _ in 0..150 {
        if next_text(&mut greedy).await.is_some_and(|f| f["code"] == "too_many_subscriptions") {
            refused += 1;
        }
    }
    println!(
        "2. subscription flood: 200 connections × 100 rooms → +{:.1} MiB resident; a connection asking for 150 rooms: {refused} refused",
        rss_kib(pid0).saturating_sub(base) as f64 / 1024.0
    );
    drop(flood);

    // 3. Everything hostile at once while honest clients check every message.
    const HONEST: u64 = 2000;
    let mut honest_subs = Vec::new();
    for url in [&ws0, &ws1, &ws0] {
        let mut ws = connect(url).await;
        subscribe(&mut ws, "honest").await;
        honest_subs.push(ws);
    }
    let checkers: Vec<_> = honest_subs
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                while (seqs.len() as u64) < HONEST {
                    match next_text(&mut ws).await {
                        Some(f) if f["op"] == "msg" => seqs.push(f["seq"].as_u64().unwrap_or(0)),
                        Some(_) => {}
                        None => break,
                    }
                }
                seqs
            })
        })
        .collect();
    let hostile_ws0 = ws0.clone();
    let attack = tokio::spawn(async move {
        let mut attackers = Vec::new();
        for k in 0..20 {
            let url = hostile_ws0.clone();
            attackers.push(tokio::spawn(async move {
                let mut ws = connect(&url).await;
                let junk = [
                    Message::text("{"),
                    Message::text("[1,2,3]"),
                    Message::text(json!({"op": "subscribe", "room": "honest", "after": u64::MAX}).to_string()),
                    Message::text(json!({"op": "send", "room": "a b", "id": "x", "body": "y"}).to_string()),
                    Message::text(json!({"op": "dance"}).to_string()),
                    Message::binary(vec![0u8; 100]),
                    Message::text("x".repeat(70_000)),
                ];
                for round in 0..200 {
                    if ws.send(junk[(round + k) % junk.len()].clone()).await.is_err() {
                        break;
                    }
                }
                // A sender that never reads its acks.
                for i in 0..500 {
                    let frame = json!({"op": "send", "room": format!("attack-{k}"), "id": format!("a{i}"), "body": "spam"});
                    if ws.send(Message::text(frame.to_string())).await.is_err() {
                        break;
                    }
                }
                // An oversized frame: the WebSocket layer closes with 1009.
                let _ = connect(&url).await.send(Message::text("y".repeat(2 << 20))).await;
                ws
            }));
        }
        let mut idle = Vec::new();
        for _ in 0..500 {
            idle.push(connect(&hostile_ws0).await);
        }
        (attackers, idle)
    });
    let mut honest = connect(&ws1).await;
    let started = Instant::now();
    for i in 0..HONEST {
        honest
            .send(Message::text(json!({"op": "send", "room": "honest", "id": format!("h{i}"), "body": "hello"}).to_string()))
            .await
            .expect("send");
        if i % 20 == 19 {
            for _ in 0..20 {
                next_text(&mut honest).await.expect("honest ack");
            }
        }
    }
    let (attackers, idle_attack) = attack.await.expect("attack");
    let mut verdicts = Vec::new();
    for (i, c) in checkers.into_iter().enumerate() {
        let seqs = c.await.expect("checker");
        let exact = seqs == (1..=HONEST).collect::<Vec<_>>();
        verdicts.push(format!("subscriber {i} got {} of {HONEST}, exactly once in order: {exact}", seqs.len()));
    }
    let alive = cluster.dead_nodes().is_empty();
    println!(
        "3. hostile mix (20 junk/spam clients, 20 oversized frames, 500 idle sockets) during {HONEST} honest messages in {:.1}s: nodes alive: {alive}",
        started.elapsed().as_secs_f64()
    );
    for v in verdicts {
        println!("   {v}");
    }
    println!(
        "   node 0 frame errors: {}, resident now {:.1} MiB",
        metric(&http0, "chat_frame_errors_total").await,
        rss_kib(pid0) as f64 / 1024.0
    );
    drop((attackers, idle_attack));
    // 4. A subscriber that never reads, 3000 × 60 KB into its room (last:
    // the compat backend slows down once it holds 180 MB of messages).
    let mut stuck = connect(&ws0).await;
    subscribe(&mut stuck, "flood").await;
    let mut sender = connect(&ws1).await;
    let body = "z".repeat(60_000);
    let base = rss_kib(pid0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_peak(pid0, stop.clone());
    let started = Instant::now();
    for i in 0..3000 {
        let frame = json!({"op": "send", "room": "flood", "id": format!("f{i}"), "body": body});
        sender.send(Message::text(frame.to_string())).await.expect("send");
        if i % 16 == 15 {
            for _ in 0..16 {
                next_text(&mut sender).await.expect("ack");
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.expect("sampler");
    let closes = metric(&http0, "chat_slow_consumer_closes_total").await;
    println!(
        "4. never-reading subscriber, 3000 × 60 KB in {:.1}s: node 0 peak +{:.1} MiB over {:.1} MiB; slow-consumer closes: {closes}",
        started.elapsed().as_secs_f64(),
        peak.saturating_sub(base) as f64 / 1024.0,
        base as f64 / 1024.0
    );
    drop((stuck, idle));

    for problem in cluster.stop(Duration::from_secs(15)).await {
        println!("   shutdown: {problem}");
    }
}
