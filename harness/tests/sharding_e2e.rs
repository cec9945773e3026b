//! Sharded runs as a user (or a Kubernetes Indexed Job) runs them: one
//! `chatbench backends`, N `chatbench run --shard I/N` processes against it
//! with one `--start-at`, then `chatbench merge`. The merged verdict must be
//! the verdict of one process running the whole scenario.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_chatbench");
const SHARDS: u32 = 3;

/// `chatbench backends --provider compat`, stopped with Ctrl-C on drop.
struct Backends {
    child: Child,
    mongo_uri: String,
}

impl Backends {
    fn start() -> Self {
        let mut child = Command::new(BIN)
            .args(["backends", "--provider", "compat"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chatbench backends starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mongo_uri = loop {
            let line = lines.next().expect("backends printed mongo_uri=").unwrap();
            if let Some(uri) = line.strip_prefix("mongo_uri=") {
                break uri.to_owned();
            }
        };
        // Keep reading (and discarding) so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, mongo_uri }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGINT);
        let _ = self.child.wait();
    }
}

fn scenario(dir: &Path) -> PathBuf {
    // 6 rooms: 2 per shard. One node per shard process keeps the machine
    // (3 shards + the compat backend on 2 cores) unloaded.
    let text = "name: sharded\ntopology:\n  nodes: 1\nworkload:\n  rooms: 6\n  subscribers_per_room: 2\n  senders_per_room: 1\n  load: {open: {rate_per_s: 60}}\n  duration: 3s\n  drain_timeout: 5s\n";
    let path = dir.join("sharded.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report.json written")).unwrap()
}

fn kinds(report: &serde_json::Value) -> BTreeSet<String> {
    report["modes"][0]["findings_by_kind"].as_object().unwrap().keys().cloned().collect()
}

fn count(report: &serde_json::Value, key: &str) -> u64 {
    report["modes"][0]["counts"][key].as_u64().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// One process, the whole scenario.
fn single(file: &Path, uri: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["run", file.to_str().unwrap(), "--provider", "external", "--mongo-uri", uri, "--quiet", "--seed", "7"];
    args.extend_from_slice(&["--out", out.to_str().unwrap()]);
    args.extend_from_slice(extra);
    Command::new(BIN).args(&args).output().unwrap()
}

/// SHARDS processes at once, one start time; returns their output folders.
fn shards(file: &Path, uri: &str, out: &Path, run_id: &str, extra: &[&str]) -> Vec<PathBuf> {
    let start_at = (chrono::Utc::now() + chrono::Duration::seconds(5)).to_rfc3339();
    let children: Vec<(PathBuf, Child)> = (0..SHARDS)
        .map(|i| {
            let dir = out.join(format!("shard-{i}"));
            let shard = format!("{i}/{SHARDS}");
            let mut args = vec!["run", file.to_str().unwrap(), "--provider", "external", "--mongo-uri", uri, "--quiet", "--seed", "7"];
            args.extend_from_slice(&["--shard", &shard, "--start-at", &start_at, "--run-id", run_id, "--out", dir.to_str().unwrap()]);
            args.extend_from_slice(extra);
            let child = Command::new(BIN).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
            (dir, child)
        })
        .collect();
    children
        .into_iter()
        .map(|(dir, child)| {
            let o = child.wait_with_output().unwrap();
            assert!(matches!(o.status.code(), Some(0 | 1)), "a shard must reach a verdict: {}", text(&o));
            dir
        })
        .collect()
}

fn merge(dirs: &[PathBuf], out: &Path) -> Output {
    let mut args = vec!["merge".to_owned(), "--out".to_owned(), out.to_str().unwrap().to_owned()];
    args.extend(dirs.iter().map(|d| d.to_str().unwrap().to_owned()));
    Command::new(BIN).args(&args).output().unwrap()
}

#[test]
fn three_shards_merged_give_the_verdict_and_counts_of_one_process() {
    let backends = Backends::start();
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path());

    let one = single(&file, &backends.mongo_uri, &dir.path().join("one"), &[]);
    assert_eq!(one.status.code(), Some(0), "{}", text(&one));
    let dirs = shards(&file, &backends.mongo_uri, &dir.path().join("sharded"), "clean", &[]);
    let merged_dir = dir.path().join("merged");
    let merged = merge(&dirs, &merged_dir);
    assert_eq!(merged.status.code(), Some(0), "{}", text(&merged));
    assert!(String::from_utf8_lossy(&merged.stdout).contains("per million events"), "{}", text(&merged));

    let (one, merged_report) = (report(&dir.path().join("one")), report(&merged_dir));
    assert!(kinds(&merged_report).is_empty(), "{merged_report}");
    // The same seed schedules the same sends; split by room, they add up.
    for key in ["clients", "senders", "subscribers", "sent", "acked", "delivered"] {
        assert_eq!(count(&merged_report, key), count(&one, key), "{key}");
    }
    assert_eq!(merged_report["modes"][0]["nodes"], serde_json::json!(SHARDS), "each shard ran its own node");
    for name in ["report.md", "report.html", "junit.xml", "changestream/trace.bin"] {
        assert!(merged_dir.join(name).exists(), "{name} written");
    }

    // A shard that never reported fails the merged run: its rooms were not judged.
    let partial_dir = dir.path().join("partial");
    let partial = merge(&dirs[..2], &partial_dir);
    assert_eq!(partial.status.code(), Some(1), "{}", text(&partial));
    let partial_report = report(&partial_dir);
    assert_eq!(kinds(&partial_report), BTreeSet::from(["shard_missing".to_owned()]));
    let detail = partial_report["modes"][0]["findings"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("shard 2 of the run never reported"), "{partial_report}");
}

#[test]
fn a_sabotaged_cluster_fails_the_merged_run_with_the_findings_of_one_process() {
    let backends = Backends::start();
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path());
    let sabotage = ["--sabotage", "stop_fanout"];

    let one = single(&file, &backends.mongo_uri, &dir.path().join("one"), &sabotage);
    assert_eq!(one.status.code(), Some(1), "{}", text(&one));
    let dirs = shards(&file, &backends.mongo_uri, &dir.path().join("sharded"), "sabotaged", &sabotage);
    let merged_dir = dir.path().join("merged");
    let merged = merge(&dirs, &merged_dir);
    assert_eq!(merged.status.code(), Some(1), "{}", text(&merged));

    let expected: BTreeSet<String> = ["lost", "no_progress", "drain_incomplete"].map(String::from).into();
    assert_eq!(kinds(&report(&dir.path().join("one"))), expected);
    assert_eq!(kinds(&report(&merged_dir)), expected);
}

#[test]
fn merge_refuses_folders_that_hold_no_shard_trace() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = merge(std::slice::from_ref(&empty), &dir.path().join("out"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains(empty.to_str().unwrap()), "the error names the folder: {}", text(&o));
}
