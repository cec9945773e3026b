//! chatbench's clients against a peer load generator, Artillery (its
//! WebSocket engine), and against the limit — a bare tokio-tungstenite
//! client in this process that sends and receives the same frames and
//! records nothing — on the same server with the same workload: 4 rooms,
//! 2 subscribers and 1 sender per room, open loop at a ladder of total rates
//! for 20 s each. Prints each generator's CPU seconds per 1000 messages sent,
//! the highest rate it sustains (achieved ≥ 95 % of offered), and
//! chatbench's CPU per message as a multiple of the bare client's (the
//! price of recording and checking; goal ≤ 1.5×). chatbench also records
//! and checks every event; Artillery and the bare client only send and
//! receive.
//!
//!   ci/setup mongo && benches/install-artillery   # Artillery 2.0.34, pinned
//!   cargo build --release --workspace --bins && cargo bench -p chatbench-benches --bench generators
//!
//! CPU: chatbench's from its own per-second samples of the harness process
//! (report.json `resource_samples`); Artillery's from getrusage of its
//! processes once they exited. Both generators drive nodes of the same
//! release `chat-server` on compat MongoDB.

use chatbench::cluster::{Cluster, ClusterSpec, find_server_bin};
use chatbench::provider::ProviderChoice;
use chatbench::provider::mongo::{self, MongoRequest};
use chatbench::scenario::Mode;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ROOMS: u32 = 4;
const SUBSCRIBERS_PER_ROOM: u32 = 2;
const DURATION_S: u64 = 20;
const RATES: [f64; 4] = [250.0, 500.0, 1000.0, 2000.0];

struct Figures {
    generator: &'static str,
    offered: f64,
    achieved: f64,
    cpu_s: f64,
    sent: f64,
    /// Frames the subscribers received (deliveries; the bare client counts
    /// every frame after its subscription's answer). NaN: not counted.
    received: f64,
    /// chatbench: the run's checks passed (a rate whose run failed them is
    /// not sustained, however much was sent). Artillery checks nothing.
    passed: bool,
}

fn self_cpu_s() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we own; no other memory is touched.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

/// The limit: the same workload from bare tokio-tungstenite connections in
/// this process (subscribers subscribe and read; senders send on a fixed
/// schedule and read their acks), recording and checking nothing. CPU is
/// this process's own (nothing else runs in it meanwhile).
async fn run_bare(ws: &str, rate: f64) -> Figures {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut subscribers = Vec::new();
    for i in 0..ROOMS * SUBSCRIBERS_PER_ROOM {
        let (mut socket, _) = tokio_tungstenite::connect_async(ws).await.expect("bare subscriber connects");
        let room = i % ROOMS;
        socket.send(Message::text(format!(r#"{{"op":"subscribe","room":"room-{room}"}}"#))).await.expect("subscribe");
        let stop = stop.clone();
        subscribers.push(tokio::spawn(async move {
            let mut got = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(200), socket.next()).await {
                    Ok(Some(Ok(_))) => got += 1,
                    Ok(_) => break,
                    Err(_) => {}
                }
            }
            got
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_before = self_cpu_s();
    let started = Instant::now();
    let per_sender = rate / f64::from(ROOMS);
    let body = "x".repeat(64);
    let mut senders = Vec::new();
    for room in 0..ROOMS {
        let (socket, _) = tokio_tungstenite::connect_async(ws).await.expect("bare sender connects");
        let (mut write, mut read) = socket.split();
        let body = body.clone();
        senders.push(tokio::spawn(async move {
            let reader = tokio::spawn(async move { while let Some(Ok(_)) = read.next().await {} });
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sender));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let count = (per_sender * DURATION_S as f64) as u64;
            for k in 0..count {
                tick.tick().await;
                // Ids unique across the ladder: the same node serves every
                // rate, and a repeated (room, id) is a resend (acked, never
                // delivered again), which once made the limit look cheap.
                let frame = format!(r#"{{"op":"send","room":"room-{room}","id":"b{rate}-{room}-{k}","body":"{body}"}}"#);
                if write.send(Message::text(frame)).await.is_err() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = write.close().await;
            reader.abort();
            count
        }));
    }
    let mut sent = 0u64;
    for s in senders {
        sent += s.await.unwrap_or(0);
    }
    let elapsed = started.elapsed().as_secs_f64() - 1.0;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut received = 0u64;
    for s in subscribers {
        // Less the `subscribed` answer each got first.
        received += s.await.unwrap_or(0).saturating_sub(1);
    }
    Figures {
        generator: "bare",
        offered: rate,
        achieved: sent as f64 / elapsed.max(DURATION_S as f64),
        cpu_s: self_cpu_s() - cpu_before,
        sent: sent as f64,
        received: received as f64,
        passed: true,
    }
}

fn children_cpu_s() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we own; no other memory is touched.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

async fn metric(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics")).await.expect("metrics").text().await.unwrap_or_default();
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0.0)
}

fn artillery_bin() -> PathBuf {
    let cache = std::env::var_os("CHATBENCH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/chatbench"));
    cache.join("artillery/node_modules/.bin/artillery")
}

/// Artillery configs: subscribers that subscribe and stay, senders that
/// send at `rate / ROOMS` each.
fn artillery_configs(dir: &Path, ws: &str, rate: f64) -> (PathBuf, PathBuf) {
    let per_sender = rate / f64::from(ROOMS);
    let count = (per_sender * DURATION_S as f64) as u64;
    let think = 1.0 / per_sender;
    let subscribers = dir.join("subscribers.yml");
    let mut sub_scenarios = String::new();
    for room in 0..ROOMS {
        sub_scenarios.push_str(&format!(
            "  - engine: ws\n    weight: 1\n    flow:\n      - send: '{{\"op\":\"subscribe\",\"room\":\"room-{room}\"}}'\n      - think: {}\n",
            DURATION_S + 5
        ));
    }
    std::fs::write(
        &subscribers,
        format!(
            "config:\n  target: \"{ws}\"\n  phases:\n    - duration: 1\n      arrivalCount: {}\nscenarios:\n{sub_scenarios}",
            ROOMS * SUBSCRIBERS_PER_ROOM
        ),
    )
    .expect("write config");
    let senders = dir.join("senders.yml");
    std::fs::write(
        &senders,
        format!(
            "config:\n  target: \"{ws}\"\n  phases:\n    - duration: 1\n      arrivalCount: {ROOMS}\nscenarios:\n  - engine: ws\n    flow:\n      - loop:\n          - send: '{{\"op\":\"send\",\"room\":\"room-{{{{ $randomNumber(0,{}) }}}}\",\"id\":\"{{{{ $randomString(20) }}}}\",\"body\":\"{}\"}}'\n          - think: {think:.4}\n        count: {count}\n",
            ROOMS - 1,
            "x".repeat(64)
        ),
    )
    .expect("write config");
    (subscribers, senders)
}

async fn run_artillery(ws: &str, http: &str, rate: f64, dir: &Path) -> Figures {
    let (subscribers, senders) = artillery_configs(dir, ws, rate);
    let bin = artillery_bin();
    let cpu_before = children_cpu_s();
    let sends_before = metric(http, "chat_sends_total").await;
    let mut subs =
        Command::new(&bin).args(["run", "--quiet"]).arg(&subscribers).spawn().expect("artillery runs (benches/install-artillery)");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    let status = Command::new(&bin).args(["run", "--quiet"]).arg(&senders).status().expect("artillery runs");
    let elapsed = started.elapsed().as_secs_f64();
    let sent = metric(http, "chat_sends_total").await - sends_before;
    let _ = subs.wait();
    if !status.success() {
        eprintln!("artillery exited with {status}");
    }
    Figures {
        generator: "artillery",
        offered: rate,
        achieved: sent / elapsed.max(DURATION_S as f64),
        cpu_s: children_cpu_s() - cpu_before,
        sent,
        received: f64::NAN,
        passed: true,
    }
}

fn run_chatbench(mongo_uri: &str, rate: f64, dir: &Path) -> Figures {
    let scenario = dir.join("generators.yaml");
    std::fs::write(
        &scenario,
        format!(
            "# Proves: nothing; a load generator comparison\nname: generators\ntopology: {{nodes: 1}}\nworkload:\n  rooms: {ROOMS}\n  subscribers_per_room: {SUBSCRIBERS_PER_ROOM}\n  senders_per_room: 1\n  load: {{open: {{rate_per_s: {rate}}}}}\n  message_bytes: 64\n  duration: {DURATION_S}s\n  drain_timeout: 15s\n"
        ),
    )
    .expect("write scenario");
    let bin = find_server_bin().expect("built").with_file_name("chatbench");
    let out = dir.join("run");
    let status = Command::new(&bin)
        .args(["run", scenario.to_str().expect("utf-8 path"), "--provider", "external", "--mongo-uri", mongo_uri, "--quiet", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("chatbench runs");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report.json")).expect("a report");
    let mode = &report["modes"][0];
    let cpu_s: f64 = mode["resource_samples"]
        .as_array()
        .map(|s| s.iter().filter(|x| x["process"] == "harness").map(|x| x["cpu_percent"].as_f64().unwrap_or(0.0) / 100.0).sum())
        .unwrap_or(0.0);
    if !status.success() {
        eprintln!("chatbench exited with {status} at {rate}/s (checks failed: see {})", out.display());
    }
    Figures {
        generator: "chatbench",
        offered: rate,
        achieved: mode["throughput"]["attempted_per_s"].as_f64().unwrap_or(0.0),
        cpu_s,
        sent: mode["counts"]["sent"].as_f64().unwrap_or(0.0),
        received: mode["counts"]["delivered"].as_f64().unwrap_or(0.0),
        passed: status.success(),
    }
}

#[tokio::main]
async fn main() {
    assert!(artillery_bin().exists(), "Artillery is not installed: run benches/install-artillery");
    let dir = tempfile::tempdir().expect("temp dir");
    let mongo = mongo::start(
        ProviderChoice::Compat,
        &MongoRequest { members: 1, uri: None, persistent: false, server_args: Vec::new(), image: None, network: None },
        dir.path(),
    )
    .await
    .expect("compat MongoDB (ci/setup mongo)");
    let spec = ClusterSpec {
        server_bin: find_server_bin().expect("chat-server built (cargo build --release --workspace --bins)"),
        nodes: 1,
        mongo_uri: mongo.uri.clone(),
        node_mongo_uris: Vec::new(),
        db: "artillery".into(),
        mode: Mode::Changestream,
        extra_args: Vec::new(),
        per_node_args: Vec::new(),
        log_dir: dir.path().to_owned(),
        command: None,
        containers: None,
    };
    let cluster = Cluster::start(&spec).await.expect("node starts");
    let (ws, http) = (cluster.nodes[0].ws_url(), cluster.nodes[0].http_url(""));
    let mut rows = Vec::new();
    for rate in RATES {
        let point = tempfile::tempdir().expect("temp dir");
        rows.push(run_chatbench(&mongo.uri, rate, point.path()));
        rows.push(run_artillery(&ws, &http, rate, point.path()).await);
        rows.push(run_bare(&ws, rate).await);
    }
    println!("generator   offered/s  achieved/s  CPU s  CPU s per 1000 msgs  received");
    for f in &rows {
        println!(
            "{:<10} {:>9.0} {:>11.0} {:>6.2} {:>20.3} {:>9.0}",
            f.generator,
            f.offered,
            f.achieved,
            f.cpu_s,
            if f.sent > 0.0 { f.cpu_s * 1000.0 / f.sent } else { f64::NAN },
            f.received
        );
    }
    for g in ["chatbench", "artillery", "bare"] {
        let best =
            rows.iter().filter(|f| f.generator == g && f.passed && f.achieved >= 0.95 * f.offered).map(|f| f.offered).fold(0.0, f64::max);
        println!("{g}: highest rate sustained (achieved >= 95% of offered, and chatbench's checks passed): {best:.0} msgs/s");
    }
    let per_k = |g: &str| {
        let v: Vec<f64> = rows.iter().filter(|f| f.generator == g && f.sent > 0.0).map(|f| f.cpu_s * 1000.0 / f.sent).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    println!(
        "CPU per 1000 messages, mean over the ladder: chatbench {:.3} s, artillery {:.3} s ({:.1}x)",
        per_k("chatbench"),
        per_k("artillery"),
        per_k("artillery") / per_k("chatbench")
    );
    println!(
        "the limit: a bare tokio-tungstenite client {:.3} s per 1000 messages; chatbench costs {:.2}x that (goal <= 1.5x)",
        per_k("bare"),
        per_k("chatbench") / per_k("bare")
    );
    let _ = cluster.stop(Duration::from_secs(5)).await;
}
