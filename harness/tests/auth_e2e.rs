//! Authorization end to end: the reference server with auth on (the
//! harness mints the tokens), members beside intruders. A healthy server
//! passes; each authorization sabotage fails with exactly its findings,
//! over protocol v1 and over STOMP alike; no token or secret reaches a
//! result, a log or the terminal.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_chatbench");

fn scenario(dir: &Path, protocol: &str) -> std::path::PathBuf {
    scenario_with(dir, protocol, INTRUDERS)
}

/// The intruders of most tests: every credential but `confusable`.
const INTRUDERS: &str =
    "    - {credentials: other_room, count: 2}\n    - {credentials: expired}\n    - {credentials: forged}\n    - {credentials: none}\n";
/// Four `confusable` intruders on four rooms, one of each confusion, and
/// five `wildcard` ones, one of each pattern (the reference server takes
/// no pattern for a room name: all five are refused whatever the sabotage).
const CONFUSABLE: &str = "    - {credentials: confusable, count: 4}\n    - {credentials: wildcard, count: 5}\n";

/// Six `spelling` intruders, one of each spelling (percent-encoded, a
/// trailing slash, full width, a dot-segment, upper case, a trailing
/// space), each holding a token for its spelling.
const SPELLING: &str = "    - {credentials: spelling, count: 6}\n";

/// Two `expiring` intruders: members whose tokens expire 2 s into an 8 s run.
const EXPIRING: &str = "    - {credentials: expiring, count: 2}\n";

fn scenario_with(dir: &Path, protocol: &str, intruders: &str) -> std::path::PathBuf {
    let rooms = if intruders == CONFUSABLE || intruders == SPELLING { 4 } else { 2 };
    let duration = if intruders == EXPIRING { "8s" } else { "3s" };
    let text = format!(
        "# test scenario\nname: auth-e2e\ntopology:\n  nodes: 2\n  provider: compat\nworkload:\n  rooms: {rooms}\n  subscribers_per_room: 1\n  \
         senders_per_room: 1\n  chatters_per_room: 1\n  load: {{open: {{rate_per_s: 60}}}}\n  duration: {duration}\n  drain_timeout: 5s\n\
         system:\n  protocol: {protocol}\nauth:\n  intruders:\n{intruders}"
    );
    let path = dir.join("auth.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("RUST_LOG", "debug").output().expect("chatbench runs")
}

struct Verdict {
    code: Option<i32>,
    kinds: BTreeSet<String>,
    /// What each `unrefused` finding says was let through, counted.
    unrefused: BTreeMap<String, usize>,
    /// The names leaks say an intruder asked for its room as.
    leaked_as: BTreeSet<String>,
    stdout: String,
}

fn judged_with(protocol: &str, sabotage: Option<&str>, intruders: &str) -> Verdict {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = scenario_with(dir.path(), protocol, intruders);
    let mut args = vec!["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet", "--seed", "7"];
    if let Some(s) = sabotage {
        args.extend(["--sabotage", s]);
    }
    let o = run(&args);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap_or_else(|_| panic!("no report: {stdout}"))).unwrap();
    let mode = &report["modes"][0];
    let kinds = mode["findings_by_kind"].as_object().unwrap().keys().cloned().collect();
    let mut unrefused = BTreeMap::new();
    let mut leaked_as = BTreeSet::new();
    for f in mode["findings"].as_array().unwrap() {
        if f["kind"] == "leak"
            && let Some((_, asked)) = f["detail"].as_str().unwrap().split_once("(asked as ")
        {
            leaked_as.insert(asked.split(')').next().unwrap().to_owned());
        }
        if f["kind"] == "unrefused" {
            // "... tried to <attempt> <room>: it ..."
            let detail = f["detail"].as_str().unwrap();
            let attempt = detail.split(" tried to ").nth(1).and_then(|r| r.split(' ').next()).unwrap().to_owned();
            *unrefused.entry(attempt).or_default() += 1;
        }
    }
    let healthy = sabotage.is_none();
    if healthy {
        assert_no_secrets(&out, &o);
        let checks = report["modes"][0]["checks"].to_string();
        assert!(checks.contains("authorization"), "the authorization check is reported: {checks}");
    }
    Verdict { code: o.status.code(), kinds, unrefused, leaked_as, stdout }
}

/// Every token the harness mints starts with this: its header,
/// `{"typ":"JWT","alg":"HS256"}` in base64url (pinned in `auth.rs`).
const MINTED_PREFIX: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.";

/// No token and no secret (64 hex digits) in any result file (the
/// trace, reports, JUnit), node log, or what the harness printed (with
/// debug logging on).
fn assert_no_secrets(out: &Path, o: &Output) {
    let secret = regex::Regex::new("[0-9a-fA-F]{64}").unwrap();
    for (name, text) in outputs(out, o) {
        assert!(!text.contains(MINTED_PREFIX), "{name} holds a token");
        assert!(!secret.is_match(&text), "{name} holds something like the secret: {:?}", secret.find(&text).map(|m| m.as_str()));
    }
}

/// Everything a run leaves to read: stdout, stderr (debug logging on) and
/// every file under `out` (reports, JUnit, traces, node and backend logs).
fn outputs(out: &Path, o: &Output) -> Vec<(String, String)> {
    let mut texts = vec![("stdout".to_owned(), o.stdout.clone()), ("stderr".to_owned(), o.stderr.clone())];
    let mut stack = vec![out.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                texts.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    for needed in ["trace.bin", "junit.xml", "report.json", "report.html", "node-0.log"] {
        assert!(texts.iter().any(|(name, _)| name.ends_with(needed)), "{needed} is among what is searched");
    }
    texts.into_iter().map(|(name, bytes)| (name, String::from_utf8_lossy(&bytes).into_owned())).collect()
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|&(k, n)| (k.to_owned(), n)).collect()
}

fn kinds(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Both protocols judge a server the same way.
fn over_both(sabotage: Option<&str>) -> Verdict {
    over_both_with(sabotage, INTRUDERS)
}

fn over_both_with(sabotage: Option<&str>, intruders: &str) -> Verdict {
    let json = judged_with("json", sabotage, intruders);
    let stomp = judged_with("stomp", sabotage, intruders);
    assert_eq!((stomp.code, &stomp.kinds, &stomp.unrefused), (json.code, &json.kinds, &json.unrefused), "{sabotage:?}: {}", stomp.stdout);
    json
}

#[test]
fn with_auth_on_intruders_are_refused_and_members_pass() {
    let v = over_both(None);
    assert_eq!(v.code, Some(0), "{}", v.stdout);
    assert!(v.kinds.is_empty(), "{}", v.stdout);
}

/// `sabotage` fails the gate (exit 1) with exactly `unrefused` and
/// `leak`, and exactly these attempts let through.
fn caught(sabotage: &str, let_through: &[(&str, usize)]) -> Verdict {
    let v = over_both(Some(sabotage));
    assert_eq!(v.code, Some(1), "{}", v.stdout);
    assert_eq!(v.kinds, kinds(&["unrefused", "leak"]), "{}", v.stdout);
    assert_eq!(v.unrefused, counts(let_through), "{}", v.stdout);
    v
}

#[test]
fn a_resubscribe_that_skips_the_membership_check_is_caught() {
    let v = caught("auth_skip_after", &[("resubscribe", 2)]);
    assert!(v.stdout.contains("authorization"), "{}", v.stdout);
}

#[test]
fn a_history_endpoint_without_the_check_is_caught() {
    // Every intruder read it.
    caught("auth_history_open", &[("history", 5)]);
}

#[test]
fn a_server_that_checks_only_the_first_room_is_caught() {
    caught("auth_first_room_only", &[("send", 2), ("subscribe", 2), ("resubscribe", 2)]);
}

/// Confusable names: a member of `room-` (a prefix), `room-10` (an
/// extension), `ROOM-2` (another case) and `oom-3` (a suffix) each tries
/// the room it names; wildcard subscribers try `#`, `*`, `>`, `+` and
/// `room-*`. A healthy server refuses all nine; each broken
/// comparison lets exactly its own through (the prefix check both ways:
/// two intruders), on every attempt, history included.
#[test]
fn a_membership_check_by_prefix_suffix_or_case_is_caught_by_confusable_intruders() {
    let healthy = over_both_with(None, CONFUSABLE);
    assert_eq!(healthy.code, Some(0), "{}", healthy.stdout);
    assert!(healthy.kinds.is_empty(), "{}", healthy.stdout);
    for (sabotage, n) in [("auth_prefix_match", 2), ("auth_suffix_match", 1), ("auth_ignore_case", 1)] {
        let v = over_both_with(Some(sabotage), CONFUSABLE);
        assert_eq!(v.code, Some(1), "{sabotage}: {}", v.stdout);
        assert_eq!(v.kinds, kinds(&["unrefused", "leak"]), "{sabotage}: {}", v.stdout);
        let all = [("send", n), ("subscribe", n), ("resubscribe", n), ("history", n)];
        assert_eq!(v.unrefused, counts(&all), "{sabotage}: {}", v.stdout);
    }
}

/// A server that takes a broker-style pattern as a room and subscribes
/// it without a grant check (`auth_wildcard`) hands every wildcard
/// intruder (`#`, `*`, `>`, `+`, `room-*`) every room it covers: their
/// subscribes and resubscribes are unrefused and what they get leaks,
/// each leak naming the pattern; the confusable intruders stay refused.
#[test]
fn a_pattern_subscribed_without_a_grant_check_is_caught_by_wildcard_intruders() {
    let v = over_both_with(Some("auth_wildcard"), CONFUSABLE);
    assert_eq!(v.code, Some(1), "{}", v.stdout);
    assert_eq!(v.kinds, kinds(&["unrefused", "leak"]), "{}", v.stdout);
    assert_eq!(v.unrefused, counts(&[("subscribe", 5), ("resubscribe", 5)]), "{}", v.stdout);
    let patterns: BTreeSet<String> = ["#", "*", ">", "+", "room-*"].iter().map(|p| format!("{p:?}")).collect();
    assert_eq!(v.leaked_as, patterns, "{}", v.stdout);
}

/// Spellings of a room, each granted by the intruder's token: a healthy
/// server refuses them (not a room name) or takes the upper-case one as
/// a room of its own, which nobody uses. A server that checks the name as
/// written and then decodes it (`auth_raw_name`) hands every one the room:
/// leaks, each naming the spelling that got through, and nothing else.
#[test]
fn a_check_on_the_name_as_written_is_caught_by_spelling_intruders() {
    let healthy = over_both_with(None, SPELLING);
    assert_eq!(healthy.code, Some(0), "{}", healthy.stdout);
    assert!(healthy.kinds.is_empty(), "{}", healthy.stdout);
    let v = over_both_with(Some("auth_raw_name"), SPELLING);
    assert_eq!(v.code, Some(1), "{}", v.stdout);
    assert_eq!(v.kinds, kinds(&["leak"]), "{}", v.stdout);
    assert!(v.unrefused.is_empty(), "{:?}", v.unrefused);
    assert_eq!(v.leaked_as.len(), 6, "every spelling got through: {:?}", v.leaked_as);
}

/// Tokens that expire while their connection is open: the reference
/// server closes it (4001) and refuses the expired token after, so every
/// attempt past the expiry is refused and nothing sent after it arrives.
/// A server that checks expiry only when a connection opens keeps the
/// room flowing to it and takes its sends and subscribes.
#[test]
fn a_token_that_expires_mid_connection_ends_its_rights_or_the_gate_fails() {
    let healthy = over_both_with(None, EXPIRING);
    assert_eq!(healthy.code, Some(0), "{}", healthy.stdout);
    assert!(healthy.kinds.is_empty(), "{}", healthy.stdout);
    let v = over_both_with(Some("auth_expiry_at_connect"), EXPIRING);
    assert_eq!(v.code, Some(1), "{}", v.stdout);
    assert_eq!(v.kinds, kinds(&["unrefused", "leak"]), "{}", v.stdout);
    assert_eq!(v.unrefused, counts(&[("send", 2), ("subscribe", 2), ("resubscribe", 2)]), "{}", v.stdout);
}

/// Tokens a `token_command` prints are as secret as minted ones: a run
/// whose every client presents one (on the upgrade and, over STOMP, in
/// CONNECT) writes none of them anywhere.
#[test]
fn tokens_from_a_token_command_reach_no_result_or_log() {
    for protocol in ["json", "stomp"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let text = format!(
            "# test scenario\nname: token-command\ntopology:\n  nodes: 2\n  provider: compat\nworkload:\n  rooms: 2\n  \
             subscribers_per_room: 1\n  senders_per_room: 1\n  load: {{open: {{rate_per_s: 40}}}}\n  duration: 2s\n  drain_timeout: 5s\n\
             system:\n  protocol: {protocol}\n  credentials:\n    token_command: [echo, 'tok-zq9x-{{client}}-{{room}}']\n    \
             headers: {{Authorization: 'Bearer {{token}}'}}\n    connect_headers: {{passcode: '{{token}}'}}\n"
        );
        let file = dir.path().join("t.yaml");
        std::fs::write(&file, text).unwrap();
        let o = run(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
        for (name, text) in outputs(&out, &o) {
            assert!(!text.contains("tok-zq9x"), "{name} holds a token ({protocol})");
        }
    }
}

/// Intruders run in one process: a shard of a sharded run refuses them
/// before it starts anything (exit 3, the reason named).
#[test]
fn a_shard_refuses_intruders_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "json");
    let out = dir.path().join("out");
    let started = std::time::Instant::now();
    let o = run(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet", "--shard", "0/2", "--run-id", "t1"]);
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(3), "{said}");
    assert!(said.contains("auth.intruders run in one process"), "{said}");
    assert!(!out.join("changestream").exists(), "nothing was started: {said}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "refused at once");
}
