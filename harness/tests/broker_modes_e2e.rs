//! The reference server's broker modes (`redis`, `nats`) as a user runs
//! them: the same checks catch the same defects as in `changestream` mode,
//! and the report shows what each architecture costs. Needs Debian's
//! redis-server and nats-server (ci/setup redis nats).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_chatbench");

fn scenario(dir: &Path, extra_workload: &str, drain: &str, modes: &str) -> std::path::PathBuf {
    let text = format!(
        "name: brokers\ntopology:\n  nodes: 2\n  provider: compat\nmodes: [{modes}]\nworkload:\n  rooms: 2\n  subscribers_per_room: 2\n  \
         senders_per_room: 2\n  load: {{open: {{rate_per_s: 80}}}}\n  duration: 2s\n  drain_timeout: {drain}\n{extra_workload}"
    );
    let path = dir.join("brokers.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("chatbench runs")
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report.json written")).unwrap()
}

/// Per mode (in report order): its name and the kinds of its findings.
fn kinds_per_mode(report: &serde_json::Value) -> Vec<(String, BTreeSet<String>)> {
    report["modes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["mode"].as_str().unwrap().to_owned(), m["findings_by_kind"].as_object().unwrap().keys().cloned().collect()))
        .collect()
}

/// Every sabotage switch of the reference server, with what its scenario
/// needs, gives the same findings in redis and nats mode as in
/// changestream mode: the broker modes hand messages to the same hub, and
/// the checks do not care how a message got there.
#[test]
fn every_sabotage_is_caught_the_same_way_in_every_mode() {
    let cases: [(&str, &str, &str); 10] = [
        ("stop_fanout", "", "3s"),
        ("drop=0.05", "", "3s"),
        ("dup=0.05", "", "3s"),
        ("reorder=0.05", "", "3s"),
        ("truncate", "", "3s"),
        ("mislabel", "", "3s"),
        ("leak", "", "3s"),
        ("no_ack", "", "3s"),
        ("late=3s", "", "10s"),
        ("ignore_unsubscribe", "  churn: {every: 400ms, share: 0.6, away: 300ms}\n", "3s"),
    ];
    let mut differ = Vec::new();
    for (spec, extra, drain) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let file = scenario(dir.path(), extra, drain, "changestream, redis, nats");
        let o = run(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet", "--sabotage", spec, "--seed", "7"]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{spec}: a sabotaged server fails\n{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
        let per_mode = kinds_per_mode(&report(&out));
        assert_eq!(per_mode.len(), 3, "{spec}: three modes ran");
        let (_, reference) = &per_mode[0];
        assert!(!reference.is_empty(), "{spec}: changestream mode found nothing\n{stdout}");
        for (mode, found) in &per_mode[1..] {
            if found != reference {
                differ.push(format!("{spec}: {mode} found {found:?}, changestream {reference:?}"));
            }
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// Four modes side by side on identical work, all healthy: a broker costs
/// one more external write per message; with every room's clients on one
/// node, a redis node reads only the rooms it serves while every node of
/// the other modes reads every message.
#[test]
fn four_modes_side_by_side_show_writes_and_reads_per_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = scenario(dir.path(), "  placement: by_room\n", "5s", "changestream, kafka, redis, nats");
    let text = std::fs::read_to_string(&file).unwrap().replace("rooms: 2", "rooms: 6");
    std::fs::write(&file, text).unwrap();
    let o = run(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    let r = report(&out);
    let modes = r["modes"].as_array().unwrap();
    let names: Vec<&str> = modes.iter().map(|m| m["mode"].as_str().unwrap()).collect();
    assert_eq!(names, ["changestream", "kafka", "redis", "nats"]);
    let per_ack = |i: usize, fields: &[&str]| {
        let s = &modes[i]["server"];
        let sum: u64 = fields.iter().map(|f| s[*f].as_u64().unwrap_or(0)).sum();
        sum as f64 / s["acks"].as_u64().unwrap() as f64
    };
    for (i, name) in names.iter().enumerate() {
        let writes = per_ack(i, &["kafka_produces", "broker_publishes"]);
        let expected = if *name == "changestream" { 0.0 } else { 1.0 };
        assert!((writes - expected).abs() < 0.05, "{name}: broker writes per message {writes}");
        assert!(modes[i]["backend"].as_str().unwrap().contains(match *name {
            "redis" => "Redis 7",
            "nats" => "NATS 2",
            _ => "nx-27017",
        }));
    }
    let reads = |i: usize| per_ack(i, &["changestream_events", "kafka_events", "broker_events"]);
    // Two nodes: broadcast modes read each message twice; sticky rooms
    // make redis read it once (the node that serves the room).
    for i in [0, 1, 3] {
        assert!((reads(i) - 2.0).abs() < 0.1, "{}: every node reads every message ({})", names[i], reads(i));
    }
    assert!((reads(2) - 1.0).abs() < 0.1, "redis: only the room's node reads it ({})", reads(2));
    assert!(stdout.contains("node reads / msg"), "{stdout}");
}

/// A broker this run cannot control refuses a scenario that restarts it,
/// and a missing URL for an external one is a usage error naming the flag.
#[test]
fn an_external_broker_needs_its_url_and_cannot_be_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "", "3s", "redis");
    let o = run(&["run", file.to_str().unwrap(), "--provider", "external", "--mongo-uri", "mongodb://127.0.0.1:1/"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--redis-url"), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&file).unwrap() + "faults:\n  - {at: 1s, action: {restart_broker: {down_for: 1s}}}\n";
    let text = text.replace("modes: [redis]", "modes: [changestream]");
    std::fs::write(&file, text).unwrap();
    let o = run(&["run", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "a broker fault with only changestream mode is a scenario error");
    assert!(String::from_utf8_lossy(&o.stderr).contains("restart_broker"), "{}", String::from_utf8_lossy(&o.stderr));
}
