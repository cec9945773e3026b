//! The harness's memory per client connection: the same run with 10 and
//! with 10,000 idle subscribers (one room, 1 sender at 0.5 msgs/s), the
//! harness's peak resident memory from its own per-second samples
//! (report.json `resource_samples`), and the difference per connection.
//! Also prints the bytes one recorded event takes. Prints figures; asserts
//! nothing (issue 19's goal: at most 16 KiB per connection).
//!
//!   ci/setup mongo && cargo build --release --workspace --bins
//!   cargo bench -p chatbench-benches --bench harness_memory
//!
//! The subscribers spread over 2 reference nodes on compat MongoDB; the
//! harness raises its soft file-descriptor limit itself (or refuses).

use chatbench::cluster::find_server_bin;
use std::process::Command;

const DURATION_S: u64 = 10;

/// Peak harness RSS (KiB) and the run's exit code, for `subscribers` idle subscribers.
fn run(subscribers: u32, dir: &std::path::Path) -> (u64, Option<i32>, u64) {
    let scenario = dir.join(format!("idle-{subscribers}.yaml"));
    std::fs::write(
        &scenario,
        format!(
            "# Proves: nothing; a memory measurement\nname: idle-{subscribers}\ntopology: {{nodes: 2, provider: compat}}\nworkload:\n  rooms: 1\n  subscribers_per_room: {subscribers}\n  senders_per_room: 1\n  load: {{open: {{rate_per_s: 0.5}}}}\n  message_bytes: 64\n  duration: {DURATION_S}s\n  drain_timeout: 30s\n  connect_timeout: 120s\n"
        ),
    )
    .expect("write scenario");
    let bin = find_server_bin().expect("built").with_file_name("chatbench");
    let out = dir.join(format!("run-{subscribers}"));
    let status = Command::new(&bin)
        .args(["run", scenario.to_str().expect("utf-8 path"), "--quiet", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("chatbench runs");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report.json")).expect("a report");
    let mode = &report["modes"][0];
    let peak = mode["resource_samples"]
        .as_array()
        .map(|s| s.iter().filter(|x| x["process"] == "harness").map(|x| x["rss_kib"].as_u64().unwrap_or(0)).max().unwrap_or(0))
        .unwrap_or(0);
    let events = mode["counts"]["delivered"].as_u64().unwrap_or(0) + mode["counts"]["sent"].as_u64().unwrap_or(0) * 2;
    (peak, status.code(), events)
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (small, small_code, _) = run(10, dir.path());
    let (large, large_code, events) = run(10_000, dir.path());
    let per_conn = (large.saturating_sub(small)) as f64 * 1024.0 / 9_990.0;
    println!(
        "harness peak RSS: 10 subscribers {:.1} MB (exit {small_code:?}), 10,000 subscribers {:.1} MB (exit {large_code:?})",
        small as f64 / 1024.0,
        large as f64 / 1024.0
    );
    println!("harness memory per idle client connection: {:.1} KiB (goal <= 16 KiB)", per_conn / 1024.0);
    println!(
        "one recorded event: {} bytes in memory (the 10,000-subscriber run recorded about {events} events: {:.1} MB)",
        std::mem::size_of::<chatbench::trace::Event>(),
        (events as f64 * std::mem::size_of::<chatbench::trace::Event>() as f64) / 1e6
    );
}
