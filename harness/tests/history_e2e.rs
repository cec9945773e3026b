//! A run history across commits: `run --history` appends a line naming the
//! commit; `compare --history` flags the newest run of a scenario that got
//! worse than the median of the runs before it (exit 1), and passes one
//! that did not (exit 0).

use chatbench::report::history::{Entry, append, read};
use chatbench::report::{ModeReport, RunReport};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_chatbench");

fn entry(p99_us: u64, commit: &str) -> Entry {
    let mut mode = ModeReport::default();
    mode.latency.delivery.p99_us = p99_us;
    mode.throughput.acked_per_s = 100.0;
    Entry::of(&RunReport { scenario: "chat".into(), modes: vec![mode], ..Default::default() }, Some(commit.into()))
}

#[test]
fn a_run_is_appended_with_its_commit_and_a_slower_commit_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.jsonl");
    // A real run appends itself, with the commit it was told.
    let scenario = dir.path().join("tiny.yaml");
    std::fs::write(
        &scenario,
        "name: tiny\ntopology:\n  nodes: 1\n  provider: compat\nworkload:\n  rooms: 1\n  subscribers_per_room: 1\n  senders_per_room: 1\n  \
         load: {open: {rate_per_s: 20}}\n  duration: 2s\n  drain_timeout: 5s\n",
    )
    .unwrap();
    let o = Command::new(BIN)
        .args(["run", scenario.to_str().unwrap(), "--quiet", "--history", history.to_str().unwrap(), "--out"])
        .arg(dir.path().join("out"))
        .env("CHATBENCH_COMMIT", "c0ffee1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let entries = read(&history).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].commit.as_deref(), entries[0].report.scenario.as_str()), (Some("c0ffee1"), "tiny"));
    // One run of it: nothing to compare with yet (a usage error, exit 2).
    let compare = |args: &[&str]| Command::new(BIN).arg("compare").arg("--history").arg(&history).args(args).output().unwrap();
    let o = compare(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    // Another scenario's runs: steady, then a commit 2x slower.
    for (p99, commit) in [(10_000, "a1"), (10_400, "a2"), (9_800, "a3")] {
        append(&history, &entry(p99, commit)).unwrap();
    }
    let o = compare(&["--scenario", "chat"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
    append(&history, &entry(20_000, "b1")).unwrap();
    let o = compare(&[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("commit b1") && text.contains("commits a1, a2, a3") && text.contains("REGRESSED"), "{text}");
}
