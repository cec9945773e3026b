//! STOMP 1.2 over WebSocket against the reference server's `/stomp`
//! endpoint: a healthy cluster passes in both fan-out modes, credentials
//! reach CONNECT (from templates and a token command), and a refused
//! CONNECT is a finding that quotes the server's answer, never silence.
//! (Every sabotage over STOMP is in cli_e2e.rs: each must break STOMP
//! exactly as it breaks protocol v1.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_chatbench");

fn scenario(dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        "name: stomp\ntopology:\n  nodes: 2\n  provider: compat\n  server_args: [--stomp-login, \"guest:s3cret\"]\nmodes: [changestream, kafka]\nworkload:\n  rooms: 3\n  subscribers_per_room: 1\n  senders_per_room: 1\n  chatters_per_room: 1\n  load: {{open: {{rate_per_s: 60}}}}\n  duration: 2s\n  drain_timeout: 5s\n  connect_timeout: 3s\nsystem:\n  protocol: stomp\n{extra}"
    );
    let path = dir.join("stomp.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(file: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(BIN).args(["run", file.to_str().unwrap(), "--quiet", "--out", out.to_str().unwrap()]).args(extra).output().unwrap()
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report.json written")).unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_healthy_cluster_passes_over_stomp_in_both_modes_with_credentials_from_a_token_command() {
    let dir = tempfile::tempdir().unwrap();
    let creds =
        "  credentials:\n    token_command: [sh, -c, \"echo s3cret\"]\n    connect_headers: {login: guest, passcode: \"{token}\"}\n";
    let out = dir.path().join("out");
    let o = run(&scenario(dir.path(), creds), &out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = report(&out);
    for m in r["modes"].as_array().unwrap() {
        let counts = &m["counts"];
        assert!(counts["sent"].as_u64().unwrap() > 100, "{counts}");
        assert_eq!(counts["acked"], counts["sent"], "every SEND got its RECEIPT");
        assert!(m["findings_by_kind"].as_object().unwrap().is_empty(), "{m}");
    }
}

#[test]
fn a_refused_connect_is_a_finding_quoting_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let creds = "  credentials:\n    connect_headers: {login: guest, passcode: wrong}\n";
    let out = dir.path().join("out");
    let o = run(&scenario(dir.path(), creds), &out, &["--mode", "changestream"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = report(&out);
    let mode = &r["modes"][0];
    let kinds: BTreeSet<String> = mode["findings_by_kind"].as_object().unwrap().keys().cloned().collect();
    assert!(kinds.contains("gave_up") && kinds.contains("not_ready"), "{kinds:?}");
    let gave_up: Vec<&serde_json::Value> = mode["findings"].as_array().unwrap().iter().filter(|f| f["kind"] == "gave_up").collect();
    assert_eq!(gave_up.len(), 9, "every client (3 rooms x 3) gave up: {gave_up:?}");
    for f in gave_up {
        let detail = f["detail"].as_str().unwrap();
        assert!(detail.contains("STOMP CONNECT was refused") && detail.contains("access_refused"), "{detail}");
    }
}

#[test]
fn a_token_command_that_fails_is_an_infrastructure_error_naming_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let creds = "  credentials:\n    token_command: [sh, -c, \"echo no token for {client} >&2; exit 4\"]\n";
    let out = dir.path().join("out");
    let o = run(&scenario(dir.path(), creds), &out, &["--mode", "changestream"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("token_command for client 0") && text(&o).contains("no token for 0"), "{}", text(&o));
}

/// The reference server judged as if it promised only what a plain broker
/// does (no seq, no history): the seq-less checks and drain, end to end.
fn declared_weak(dir: &Path) -> PathBuf {
    let extra = "  credentials:\n    connect_headers: {login: guest, passcode: s3cret}\n  guarantees: {ack: receipt, order: per_sender, history: none}\n";
    scenario(dir, extra)
}

fn weak_kinds(sabotage: Option<&str>) -> (Option<i32>, BTreeSet<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut extra = vec!["--mode", "changestream", "--seed", "7"];
    if let Some(s) = sabotage {
        extra.extend(["--sabotage", s]);
    }
    let o = run(&declared_weak(dir.path()), &out, &extra);
    let r = report(&out);
    (o.status.code(), r["modes"][0]["findings_by_kind"].as_object().unwrap().keys().cloned().collect(), text(&o))
}

#[test]
fn declared_weaker_guarantees_are_checked_as_declared_and_reported_off() {
    let (code, kinds, out) = weak_kinds(None);
    assert_eq!(code, Some(0), "{out}");
    assert!(kinds.is_empty(), "{kinds:?}");
    for off in ["ordering.per_room_total — off: declared order: per_sender", "live_equals_history — off: declared history: none"] {
        assert!(out.contains(off), "{off} missing:\n{out}");
    }
    let (code, kinds, out) = weak_kinds(Some("drop=0.05"));
    assert_eq!((code, kinds), (Some(1), BTreeSet::from(["lost".to_owned()])), "{out}");
    let (code, kinds, out) = weak_kinds(Some("dup=0.05"));
    assert_eq!((code, kinds), (Some(1), BTreeSet::from(["duplicated".to_owned()])), "{out}");
}
