//! `system.command`: nodes started from a template instead of the reference
//! server's built-in launch — here the reference server itself, so the
//! run must pass while the nemesis kills, pauses, stops and restarts the
//! command's processes exactly as it does reference nodes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_chatbench");

fn chat_server() -> PathBuf {
    let dir = Path::new(BIN).parent().unwrap();
    let bin = dir.join("chat-server");
    assert!(bin.is_file(), "{} is built (cargo build --workspace --bins)", bin.display());
    bin
}

fn scenario(dir: &Path, run: &str, faults: &str) -> PathBuf {
    let text = format!(
        "name: command\ntopology:\n  nodes: 2\n  provider: compat\nworkload:\n  rooms: 2\n  subscribers_per_room: 2\n  senders_per_room: 1\n  chatters_per_room: 1\n  load: {{open: {{rate_per_s: 60}}}}\n  duration: 6s\n  drain_timeout: 10s\n{faults}system:\n  command:\n    run: {run}\n    env: {{RUST_LOG: info}}\n    ready: {{http: /healthz}}\n"
    );
    let path = dir.join("command.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(file: &Path, out: &Path) -> Output {
    Command::new(BIN).args(["run", file.to_str().unwrap(), "--quiet", "--out", out.to_str().unwrap()]).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_command_started_system_is_killed_paused_stopped_and_restarted_like_the_reference_server() {
    let dir = tempfile::tempdir().unwrap();
    // Each start notes itself in the node's {data_dir} and prints the notes
    // so far: a restarted node must find its earlier starts there.
    let run_template = format!(
        "[sh, -c, \"echo start >> '{{data_dir}}/starts'; echo data_dir={{data_dir}}; cat '{{data_dir}}/starts'; exec {} --listen 127.0.0.1:{{port}} --mongo-uri '{{mongo_uri}}' --db '{{db}}' --mode '{{mode}}' --node-id 'cmd-{{node}}'\"]",
        chat_server().display()
    );
    let faults = "faults:\n  - {at: 1s, action: {kill_node: {node: 0, restart_after: 500ms}}}\n  - {at: 3s, action: {pause_node: {node: 1, duration: 1s}}}\n  - {at: 4500ms, action: {stop_node: {node: 0, restart_after: 300ms}}}\n";
    let out = dir.path().join("out");
    let o = run(&scenario(dir.path(), &run_template, faults), &out);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let mode = &report["modes"][0];
    let applied: Vec<&str> = mode["faults"].as_array().unwrap().iter().map(|f| f["action"].as_str().unwrap()).collect();
    assert_eq!(applied, ["kill_node", "pause_node", "stop_node"]);
    assert!(mode["faults"].as_array().unwrap().iter().all(|f| f["error"].is_null()), "{}", mode["faults"]);
    // Two restarts of node 0, each a new process with its own log.
    for log in ["node-0.log", "node-0.1.log", "node-0.2.log", "node-1.log"] {
        let path = out.join("changestream").join(log);
        let body = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{} written", path.display()));
        assert!(body.contains("listening"), "{log} is the command's output:\n{body}");
    }
    assert!(mode["findings_by_kind"].as_object().unwrap().is_empty(), "{mode}");
    // {data_dir}: one per node, kept across restarts, removed after the run.
    let log = |name: &str| std::fs::read_to_string(out.join("changestream").join(name)).unwrap();
    assert_eq!(log("node-0.2.log").matches("start\n").count(), 3, "node 0's third start saw its two earlier ones");
    assert_eq!(log("node-1.log").matches("start\n").count(), 1, "node 1 has a data_dir of its own");
    let dir_of = |body: String| body.lines().find_map(|l| l.strip_prefix("data_dir=").map(PathBuf::from)).expect("data_dir printed");
    let (d0, d1) = (dir_of(log("node-0.log")), dir_of(log("node-1.log")));
    assert_ne!(d0, d1);
    assert!(!d0.exists() && !d0.parent().unwrap().exists(), "{} removed after the run", d0.display());
}

#[test]
fn a_command_that_exits_before_it_is_ready_is_an_infrastructure_error_quoting_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&scenario(dir.path(), "[sh, -c, \"echo cannot bind {port} >&2; exit 7\"]", ""), &dir.path().join("out"));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("exited (exit status: 7) before it was ready") && text(&o).contains("cannot bind"), "{}", text(&o));
}

#[test]
fn a_command_that_cannot_start_names_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&scenario(dir.path(), "[/nonexistent/chat-node, \"{port}\"]", ""), &dir.path().join("out"));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("cannot spawn /nonexistent/chat-node"), "{}", text(&o));
}

#[test]
fn sabotage_is_refused_for_a_system_that_is_not_the_reference_server() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "[sh, -c, \"sleep 60\"]", "");
    let o = Command::new(BIN).args(["run", file.to_str().unwrap(), "--quiet", "--sabotage", "no_ack"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("another server"), "{}", text(&o));
}
