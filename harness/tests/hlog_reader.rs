//! `latency.hlog` read by a real reader, not this crate's own:
//! HdrHistogram_py 0.10.8 (`HistogramLogReader`, installed pinned by
//! `ci/setup hdr`). Per tag, the intervals added up must be the report's
//! latency summary: the same count, max and p99 (a healthy run censors
//! nothing).

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_chatbench");

/// Per tag: count, max, p99 (µs), as HdrHistogram_py reads the log.
const READ: &str = r#"
import sys
from hdrh.log import HistogramLogReader
from hdrh.histogram import HdrHistogram
reader = HistogramLogReader(sys.argv[1], HdrHistogram(1, 3600000000, 3))
totals = {}
while True:
    h = reader.get_next_interval_histogram()
    if h is None:
        break
    totals.setdefault(h.get_tag(), HdrHistogram(1, 3600000000, 3)).add(h)
for tag, h in sorted(totals.items()):
    print(tag, h.get_total_count(), h.get_max_value(), h.get_value_at_percentile(99))
"#;

fn python() -> PathBuf {
    let cache = chatbench::provider::cache_dir();
    let bin = cache.join("hdr-venv/bin/python");
    assert!(bin.exists(), "{} is missing: run `ci/setup hdr` (the README's test command does)", bin.display());
    bin
}

fn scenario(dir: &Path) -> PathBuf {
    let text = "name: hlog\ntopology:\n  nodes: 2\n  provider: compat\nworkload:\n  rooms: 2\n  subscribers_per_room: 2\n  \
                senders_per_room: 1\n  load: {open: {rate_per_s: 80}}\n  duration: 3s\n  warmup: 500ms\n  drain_timeout: 5s\n";
    let path = dir.join("hlog.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn hdrhistogram_py_reads_the_interval_log_as_the_reports_latency() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = Command::new(BIN)
        .args(["run", scenario(dir.path()).to_str().unwrap(), "--quiet", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let mode = &report["modes"][0];
    let log = out.join(mode["mode"].as_str().unwrap()).join("latency.hlog");
    let read = Command::new(python()).args(["-c", READ]).arg(&log).output().unwrap();
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    let text = String::from_utf8(read.stdout).unwrap();
    let mut tags = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let summary = &mode["latency"][f[0]];
        assert_eq!(summary["count"].as_u64().unwrap().to_string(), f[1], "{} count: {line}", f[0]);
        assert_eq!(summary["max_us"].as_u64().unwrap().to_string(), f[2], "{} max: {line}", f[0]);
        assert_eq!(summary["p99_us"].as_u64().unwrap().to_string(), f[3], "{} p99: {line}", f[0]);
        tags.push(f[0].to_owned());
    }
    assert_eq!(tags, ["ack", "delivery"], "{text}");
    assert_eq!(mode["latency"]["incomplete_percent"].as_f64(), Some(0.0));
}
