//! `chatbench` as a user runs it: exit codes, reports, sabotage that the
//! checks must catch, bad scenario files, and teardown on Ctrl-C.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_chatbench");

fn scenario(dir: &Path, duration: &str, extra: &str) -> std::path::PathBuf {
    let text = format!(
        "# test scenario\nname: e2e\ntopology:\n  nodes: 2\n  provider: compat\nworkload:\n  rooms: 2\n  subscribers_per_room: 2\n  senders_per_room: 2\n  load: {{open: {{rate_per_s: 80}}}}\n  duration: {duration}\n  drain_timeout: 3s\n{extra}"
    );
    let path = dir.join("e2e.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// [`scenario`] in kafka mode only, at `rate` msgs/s (the compat broker's
/// durable storage, used when Kafka restarts, is slow), with a long drain.
fn kafka_scenario(dir: &Path, duration: &str, rate: u32, extra: &str) -> std::path::PathBuf {
    let file = scenario(dir, duration, extra);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("workload:", "modes: [kafka]\nworkload:")
        .replace("rate_per_s: 80", &format!("rate_per_s: {rate}"))
        .replace("drain_timeout: 3s", "drain_timeout: 20s");
    std::fs::write(&file, text).unwrap();
    file
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("chatbench runs")
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report.json written")).unwrap()
}

fn finding_kinds(report: &serde_json::Value) -> BTreeSet<String> {
    report["modes"][0]["findings_by_kind"].as_object().unwrap().keys().cloned().collect()
}

#[test]
fn a_clean_run_passes_writes_every_report_and_rechecks_offline() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = scenario(dir.path(), "2s", "");
    let o = run(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("changestream") && stdout.contains("result: PASS"), "{stdout}");
    assert!(stdout.contains("not MongoDB's"), "the compat warning is printed: {stdout}");
    for f in ["report.json", "report.md", "junit.xml", "changestream/trace.bin", "changestream/node-0.log"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let r = report(&out);
    assert_eq!(r["schema_version"], chatbench::report::REPORT_SCHEMA_VERSION);
    assert_eq!(r["passed"], true);
    assert_eq!(r["modes"][0]["provider"], "compat");
    assert_eq!(r["modes"][0]["backend_is_real"], false);
    assert!(r["modes"][0]["counts"]["acked"].as_u64().unwrap() >= 100);
    assert!(finding_kinds(&r).is_empty());
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(junit.contains("exactly_once") && !junit.contains("<failure"), "{junit}");
    let check = run(&["check", out.join("changestream/trace.bin").to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stdout));
}

#[test]
fn a_closed_loop_run_keeps_sends_in_flight_and_labels_its_latency() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = scenario(dir.path(), "2s", "");
    let text = std::fs::read_to_string(&file).unwrap().replace("{open: {rate_per_s: 80}}", "{closed: {in_flight: 2}}");
    std::fs::write(&file, text).unwrap();
    let o = run(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    let r = report(&out);
    let mode = &r["modes"][0];
    assert!(mode["counts"]["acked"].as_u64().unwrap() > 20, "a closed loop sends: {}", mode["counts"]);
    assert!(mode["load"].as_str().unwrap().contains("coordinated omission"), "{}", mode["load"]);
    assert!(mode["throughput"]["offered_per_s"].is_null(), "a closed loop offers no rate");
    assert!(stdout.contains("closed loop"), "{stdout}");
}

#[test]
fn a_sweep_writes_curves_and_a_knee_per_mode_and_compare_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let file = scenario(dir.path(), "1s", "");
    let o = run(&["sweep", file.to_str().unwrap(), "--vary", "rate=20,40", "--repeat", "2", "--out", out.to_str().unwrap(), "--quiet"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    for f in ["sweep.json", "sweep.md", "sweep.html", "points/rate_20/r0/report.json", "points/rate_40/r1/report.json"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let sweep: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(sweep["points"].as_array().unwrap().len(), 2);
    assert_eq!(sweep["knees"][0]["per_repeat"].as_array().unwrap().len(), 2, "a knee per repeat");
    assert!(stdout.contains("knee changestream"), "{stdout}");
    let html = std::fs::read_to_string(out.join("sweep.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("achieved"), "the curve is drawn");
    let same = run(&["compare", out.join("sweep.json").to_str().unwrap(), out.join("sweep.json").to_str().unwrap()]);
    assert_eq!(same.status.code(), Some(0), "{}", String::from_utf8_lossy(&same.stdout));
    let bad = run(&["sweep", file.to_str().unwrap(), "--vary", "speed=1,2"]);
    assert_eq!(bad.status.code(), Some(2), "an unknown parameter is a usage error");
}

fn sabotaged(spec: &str) -> (Option<i32>, BTreeSet<String>, String) {
    sabotaged_with(spec, "")
}

fn sabotaged_with(spec: &str, extra: &str) -> (Option<i32>, BTreeSet<String>, String) {
    sabotaged_drain(spec, "3s", extra)
}

fn sabotaged_drain(spec: &str, drain: &str, extra: &str) -> (Option<i32>, BTreeSet<String>, String) {
    // Over protocol v1 (JSON) and over STOMP (the reference server's
    // /stomp endpoint): a sabotage must break both the same way.
    let over = |protocol: &str| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let system = if protocol == "json_frames" {
            format!("system:\n  protocol: json_frames\n  json_frames:\n{}", indent(V1_FRAMES, 4))
        } else {
            format!("system:\n  protocol: {protocol}\n")
        };
        let file = scenario(dir.path(), "2s", &format!("{extra}{system}"));
        let text = std::fs::read_to_string(&file).unwrap().replace("drain_timeout: 3s", &format!("drain_timeout: {drain}"));
        std::fs::write(&file, text).unwrap();
        let o = run(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet", "--sabotage", spec, "--seed", "7"]);
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        (o.status.code(), finding_kinds(&report(&out)), stdout)
    };
    let json = over("json");
    let stomp = over("stomp");
    assert_eq!((&stomp.0, &stomp.1), (&json.0, &json.1), "{spec} over STOMP vs JSON:\n{}\n{}", stomp.2, json.2);
    // Protocol v1 declared as json_frames must be judged as the built-in adapter.
    let frames = over("json_frames");
    assert_eq!((&frames.0, &frames.1), (&json.0, &json.1), "{spec} over json_frames vs JSON:\n{}\n{}", frames.2, json.2);
    json
}

/// Protocol v1 (server/PROTOCOL.md) as a `json_frames` declaration.
const V1_FRAMES: &str = r#"path: /ws
join: '{"op":"subscribe","room":"{room}"}'
join_after: '{"op":"subscribe","room":"{room}","after":{after}}'
leave: '{"op":"unsubscribe","room":"{room}"}'
send: '{"op":"send","room":"{room}","id":"{id}","body":"{text}"}'
frames:
  - {match: {op: ack}, is: ack, id: {json: id}, seq: seq}
  - {match: {op: msg}, is: delivery, id: {json: id}, room: room, seq: seq, text: body}
  - {match: {op: subscribed}, is: joined, room: room, head: head}
  - {match: {op: unsubscribed}, is: left, room: room}
  - {match: {op: error}, is: error, id: {json: id}, room: room, code: code}
"#;

/// A json_frames declaration that does not fit the server (its delivery
/// matcher waits for `op: message`, the server says `op: msg`) fails, and
/// the report says which frames nothing took, quoting one.
#[test]
fn a_json_frames_matcher_that_never_matches_fails_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let frames = V1_FRAMES.replace("{match: {op: msg}", "{match: {op: message}");
    let file = scenario(dir.path(), "2s", &format!("system:\n  protocol: json_frames\n  json_frames:\n{}", indent(&frames, 4)));
    let o = run(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    let r = report(&out);
    let notes = r["modes"][0]["notes"].to_string();
    assert!(notes.contains("matched no system.json_frames.frames matcher") && notes.contains(r#"\"op\":\"msg\""#), "{notes}");
}

fn indent(text: &str, by: usize) -> String {
    text.lines().map(|l| format!("{}{l}\n", " ".repeat(by))).collect()
}

fn kinds(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_server_that_refuses_every_upgrade_while_healthy_fails_liveness() {
    // connect_timeout keeps the wait for never-ready clients short.
    let (code, found, stdout) = sabotaged_with("refuse_upgrade", "  connect_timeout: 2s\n");
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(found, kinds(&["not_ready", "unattempted", "no_progress", "drain_incomplete"]), "{stdout}");
    assert!(stdout.contains("FAILED changestream: liveness.ready"), "{stdout}");
}

#[test]
fn a_server_that_stores_and_fans_out_but_never_acks_fails() {
    let (code, found, stdout) = sabotaged("no_ack");
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(found, kinds(&["unanswered", "no_progress", "drain_incomplete"]), "{stdout}");
    assert!(stdout.contains("liveness.answered"), "{stdout}");
}

/// `workload.max_pending` bounds each sender's unacked sends: against a
/// server that never acks, every sender makes exactly that many sends and
/// drops the rest, and the report counts them as dropped (not as a
/// generator that fell behind), with the same findings as without.
#[test]
fn past_max_pending_unacked_sends_a_sender_drops_instead_of_sending() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = scenario(dir.path(), "2s", "  max_pending: 2\n");
    let o = run(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet", "--sabotage", "no_ack", "--seed", "7"]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    let report = report(&out);
    assert_eq!(finding_kinds(&report), kinds(&["unanswered", "no_progress", "drain_incomplete"]), "{stdout}");
    let mode = &report["modes"][0];
    assert_eq!(mode["findings_by_kind"]["unanswered"], 4 * 2, "2 sends per sender, 4 senders: {stdout}");
    let throughput = &mode["throughput"];
    let (attempted, dropped) = (throughput["attempted_per_s"].as_f64().unwrap(), throughput["dropped_per_s"].as_f64().unwrap());
    assert!(dropped > 60.0 && attempted < 5.0, "{throughput}");
    assert!(!mode["generator"]["why"].to_string().contains("attempted"), "drops are the system's push-back: {}", mode["generator"]);
}

#[test]
fn a_server_that_refuses_subscribe_with_after_fails_once_clients_reconnect() {
    let drop = "faults:\n  - at: 1s\n    action: {drop_clients: {share: 0.5}}\n";
    let (code, found, stdout) = sabotaged_with("refuse_after", drop);
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(found, kinds(&["outage", "not_recovered", "lost", "drain_incomplete"]), "{stdout}");
}

#[test]
fn a_server_whose_fanout_stops_while_healthz_is_200_fails() {
    let (code, found, stdout) = sabotaged("stop_fanout");
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(found, kinds(&["lost", "no_progress", "drain_incomplete"]), "{stdout}");
}

#[test]
fn a_cluster_that_dies_at_once_fails_and_every_report_names_the_liveness_findings() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let faults = "faults:\n  - {at: 10ms, action: {kill_node: {node: 0}}}\n  - {at: 10ms, action: {kill_node: {node: 1}}}\n";
    let file = scenario(dir.path(), "3s", faults);
    let o = run(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    let found = finding_kinds(&report(&out));
    // What is wrong is that nearly nothing happened (plus, depending on
    // the race with the kills, a message acked just before them and owed
    // to subscribers that never came back).
    for kind in ["unattempted", "outage", "drain_incomplete"] {
        assert!(found.contains(kind), "{kind} missing from {found:?}\n{stdout}");
    }
    let expected = kinds(&["lost", "not_ready", "unattempted", "unanswered", "no_progress", "outage", "not_recovered", "drain_incomplete"]);
    assert!(found.is_subset(&expected), "liveness findings (and losses) only: {found:?}");
    assert!(stdout.contains("INCOMPLETE") && stdout.contains("FAILED changestream: recovery"), "{stdout}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    for (name, text) in [("report.md", &md), ("report.html", &html), ("junit.xml", &junit)] {
        assert!(text.contains("unattempted") && text.contains("drain_incomplete"), "{name} names the findings:\n{text}");
        assert!(text.contains("liveness.drained"), "{name} names the failed check");
    }
    assert!(md.contains("INCOMPLETE") && html.contains("INCOMPLETE"), "the drain status is in report.md and report.html");
    assert!(junit.matches("<failure").count() >= 3, "{junit}");
}

#[test]
fn dropped_deliveries_are_reported_as_lost_and_nothing_else() {
    let (code, kinds, stdout) = sabotaged("drop=0.05");
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(kinds, BTreeSet::from(["lost".to_owned()]), "{stdout}");
    assert!(stdout.contains("FAILED changestream: exactly_once"), "{stdout}");
}

#[test]
fn duplicated_deliveries_are_reported_as_duplicated_and_nothing_else() {
    let (code, kinds, stdout) = sabotaged("dup=0.05");
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(kinds, BTreeSet::from(["duplicated".to_owned()]), "{stdout}");
}

#[test]
fn reordered_deliveries_are_reported_as_order_violations_and_nothing_else() {
    let (code, kinds, stdout) = sabotaged("reorder=0.05");
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(kinds, BTreeSet::from(["order_violation".to_owned()]), "{stdout}");
    assert!(stdout.contains("ordering.per_room_total"), "{stdout}");
}

#[test]
fn bodies_cut_short_on_delivery_are_corrupted_and_nothing_else() {
    // MongoDB keeps the full body; what subscribers get is 8 characters.
    let (code, found, stdout) = sabotaged("truncate");
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(found, kinds(&["corrupted"]), "{stdout}");
    assert!(stdout.contains("FAILED changestream: exactly_once"), "{stdout}");
}

#[test]
fn deliveries_labelled_for_another_room_are_misrouted_and_nothing_else() {
    // JSON: the `room` names a room the client never joined; STOMP: the
    // `subscription` is not the client's id (stomp.js would drop it).
    let (code, found, stdout) = sabotaged("mislabel");
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(found, kinds(&["misrouted"]), "{stdout}");
    assert!(stdout.contains("FAILED changestream: routing"), "{stdout}");
}

#[test]
fn a_fan_out_three_seconds_late_is_stale_and_nothing_else() {
    // Nothing lost, nothing out of order, every body right: only late.
    let (code, found, stdout) = sabotaged_drain("late=3s", "10s", "");
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(found, kinds(&["stale"]), "{stdout}");
    assert!(stdout.contains("FAILED changestream: freshness"), "{stdout}");
}

#[test]
fn a_server_that_confirms_unsubscribe_and_keeps_delivering_leaks() {
    let churn = "  churn: {every: 400ms, share: 0.6, away: 300ms}\n";
    let (code, found, stdout) = sabotaged_with("ignore_unsubscribe", churn);
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(found, kinds(&["leak"]), "{stdout}");
}

#[test]
fn a_server_that_hands_every_room_to_every_connection_leaks() {
    let (code, found, stdout) = sabotaged("leak");
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(found, kinds(&["leak"]), "{stdout}");
}

#[test]
fn clients_in_several_rooms_that_leave_and_rejoin_pass_on_a_healthy_server() {
    // Multi-room connections, churn resuming with `after` and at the head,
    // late joiners at the head, random placement, realistic text: over
    // both protocols, the reference server passes every check.
    let extra = "  rooms_per_client: 2\n  placement: random\n  message_bytes: {min: 1, max: 400}\n  churn: {every: 400ms, share: 0.5, away: 200ms}\n  late_subscribers: {per_room: 1, join_at: 700ms, after: head}\n";
    let (code, found, stdout) = sabotaged_with("drop=0", extra);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(found.is_empty(), "{found:?}\n{stdout}");
}

#[test]
fn a_broken_scenario_exits_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "2s", "");
    let text = std::fs::read_to_string(&file).unwrap().replace("  nodes: 2", "  nodez: 2");
    std::fs::write(&file, text).unwrap();
    let o = run(&["run", file.to_str().unwrap(), "--quiet"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("e2e.yaml line 4") && stderr.contains("nodez"), "{stderr}");
    let o = run(&["run", dir.path().join("missing.yaml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["run", "--bogus-flag"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn an_unreachable_external_backend_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "1s", "");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
    let o = run(&[
        "run",
        file.to_str().unwrap(),
        "--quiet",
        "--provider",
        "external",
        "--mongo-uri",
        &uri,
        "--out",
        dir.path().join("o").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&uri), "the error names the URI: {stderr}");
}

/// Processes (other than zombies) whose environment carries `tag`.
fn tagged_processes(tag: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let path = entry.path();
        let Ok(environ) = std::fs::read(path.join("environ")) else {
            continue;
        };
        if !environ.windows(tag.len()).any(|w| w == tag.as_bytes()) {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        if stat.split_whitespace().nth(2) == Some("Z") {
            continue;
        }
        found.push(format!(
            "{} {}",
            entry.file_name().to_string_lossy(),
            std::fs::read_to_string(path.join("cmdline")).unwrap_or_default().replace('\0', " ")
        ));
    }
    found
}

/// Start chatbench with `tag` in its environment (children inherit it).
fn spawn_tagged(args: &[&str], tag: &str) -> std::process::Child {
    let (key, value) = tag.split_once('=').unwrap();
    Command::new(BIN).args(args).env(key, value).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap()
}

/// Ctrl-C the run, expect exit 130, and expect every tagged process gone.
fn interrupt_and_assert_nothing_left(mut child: std::process::Child, tag: &str) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = tagged_processes(tag);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes outlived the interrupted run: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ctrl_c_during_a_run_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = scenario(dir.path(), "60s", "");
    let tag = format!("CHATBENCH_TEST_TAG=ctrl-c-{}", std::process::id());
    let child = spawn_tagged(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"], &tag);
    // Wait until the nodes are up and the workload runs.
    let started = Instant::now();
    while !(out.join("changestream/node-1.log").exists() && tagged_processes(&tag).len() >= 4) {
        assert!(started.elapsed() < Duration::from_secs(30), "run did not start: {:?}", tagged_processes(&tag));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    interrupt_and_assert_nothing_left(child, &tag);
}

#[test]
fn both_modes_run_on_identical_work_and_kafka_costs_one_more_write_per_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = scenario(dir.path(), "2s", "");
    let text = std::fs::read_to_string(&file).unwrap().replace("workload:", "modes: [changestream, kafka]\nworkload:");
    std::fs::write(&file, text).unwrap();
    let o = run(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("Δ kafka vs changestream"), "side by side with the difference: {stdout}");
    let r = report(&out);
    let modes: Vec<&str> = r["modes"].as_array().unwrap().iter().map(|m| m["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["changestream", "kafka"]);
    let sent: Vec<u64> = r["modes"].as_array().unwrap().iter().map(|m| m["counts"]["sent"].as_u64().unwrap()).collect();
    assert_eq!(sent[0], sent[1], "identical workload in both modes");
    // Every insert attempt counts (a lost seq race is one more write).
    let writes = |i: usize| {
        let s = &r["modes"][i]["server"];
        let clashes = s["seq_clashes"].as_u64().unwrap();
        (s["mongo_writes"].as_u64().unwrap() - clashes + s["kafka_produces"].as_u64().unwrap()) as f64 / s["acks"].as_u64().unwrap() as f64
    };
    assert_eq!(writes(0), 1.0, "changestream: one MongoDB insert per message (besides lost races)");
    assert_eq!(writes(1), 2.0, "kafka: one insert and one produce per message (besides lost races)");
    assert!(r["modes"][1]["backend"].as_str().unwrap().contains("tansu"));
    assert!(out.join("report.html").exists());
    // A stored baseline gates a later run: the same report never regresses.
    let same = run(&["compare", out.join("report.json").to_str().unwrap(), out.join("report.json").to_str().unwrap()]);
    assert_eq!(same.status.code(), Some(0), "{}", String::from_utf8_lossy(&same.stdout));
}

#[test]
fn under_node_kills_and_client_drops_changestream_loses_nothing_and_reports_each_fault() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let faults = "faults:\n  - at: 1s\n    action: {kill_node: {node: 1, restart_after: 500ms}}\n  - at: 2500ms\n    action: {drop_clients: {share: 0.5}}\n";
    let file = scenario(dir.path(), "4s", faults);
    let o = run(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    let r = report(&out);
    let mode = &r["modes"][0];
    assert!(finding_kinds(&r).is_empty(), "{:?}", mode["findings"]);
    assert!(mode["counts"]["reconnects"].as_u64().unwrap() > 0, "clients reconnected");
    let faults = mode["faults"].as_array().unwrap();
    let actions: Vec<&str> = faults.iter().map(|f| f["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["kill_node", "drop_clients"]);
    assert!(faults[0]["duration_ms"].as_u64().unwrap() >= 500, "the kill lasted until the restart");
    assert!(faults.iter().all(|f| f["recovery_ms"].as_u64().is_some()), "every subscriber received again");
    assert!(stdout.contains("all receiving again"), "the per-fault table is printed: {stdout}");
    assert!(out.join("changestream/node-1.1.log").exists(), "the restarted node logs to its own file");
    // Every node listens outside the ephemeral range, where no client
    // socket can take its port while it is down for the restart.
    let (low, high) = ephemeral_range();
    for log in ["node-0.log", "node-1.log", "node-1.1.log"] {
        let text = std::fs::read_to_string(out.join("changestream").join(log)).unwrap();
        let port: u16 = text
            .split("listening addr=127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{log} names no listening address:\n{text}"));
        assert!(!(low..=high).contains(&port), "{log}: port {port} is in the ephemeral range {low}-{high}");
    }
}

fn ephemeral_range() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_else(|_| "32768 60999".into());
    let mut it = text.split_whitespace().filter_map(|p| p.parse().ok());
    (it.next().unwrap_or(32768), it.next().unwrap_or(60999))
}

#[test]
fn ctrl_c_during_a_fault_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Node 0 is frozen (SIGSTOP) from 1s for 60s: interrupt while it is.
    let file = scenario(dir.path(), "30s", "faults:\n  - at: 1s\n    action: {pause_node: {node: 0, duration: 60s}}\n");
    let tag = format!("CHATBENCH_TEST_TAG=ctrl-c-fault-{}", std::process::id());
    let child = spawn_tagged(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"], &tag);
    let started = Instant::now();
    let stopped = |pids: &[String]| {
        pids.iter().any(|p| {
            let pid = p.split_whitespace().next().unwrap_or("");
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.split_whitespace().nth(2) == Some("T"))
        })
    };
    while !stopped(&tagged_processes(&tag)) {
        assert!(started.elapsed() < Duration::from_secs(40), "the pause fault never happened: {:?}", tagged_processes(&tag));
        std::thread::sleep(Duration::from_millis(100));
    }
    interrupt_and_assert_nothing_left(child, &tag);
}

#[test]
fn kafka_broker_restart_and_link_faults_lose_nothing_and_the_consumers_recover() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let faults = "faults:\n  - at: 1s\n    action: {restart_kafka: {down_for: 500ms}}\n  - at: 3s\n    action: {network: {node: 1, link: kafka, duration: 300ms, reset: true}}\n";
    let file = kafka_scenario(dir.path(), "5s", 10, faults);
    let o = run(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    let r = report(&out);
    let mode = &r["modes"][0];
    assert_eq!(mode["mode"], "kafka");
    assert!(finding_kinds(&r).is_empty(), "{:?}", mode["findings"]);
    assert!(mode["backend"].as_str().unwrap().contains("S3"), "the broker stored durably: {}", mode["backend"]);
    let actions: Vec<&str> = mode["faults"].as_array().unwrap().iter().map(|f| f["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["restart_kafka", "network"]);
    assert!(mode["faults"][0]["duration_ms"].as_u64().unwrap() >= 500, "the broker was down for down_for");
    // Every node saw its broker link go and come back (what /healthz reports).
    for node in 0..2 {
        let log = std::fs::read_to_string(out.join(format!("kafka/node-{node}.log"))).unwrap();
        assert!(log.contains("Kafka broker unreachable") && log.contains("Kafka broker reachable again"), "node {node}:\n{log}");
    }
    assert!(out.join("kafka/kafka-link-1.log").exists(), "node 1 reached Kafka through its link proxy");
}

#[test]
fn ctrl_c_while_kafka_is_down_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // The broker goes down at 1s for 60s (moto, link proxies and nodes keep running).
    let faults = "faults:\n  - at: 1s\n    action: {restart_kafka: {down_for: 60s}}\n  - at: 2s\n    action: {network: {node: 0, link: kafka, duration: 1s}}\n";
    let file = kafka_scenario(dir.path(), "30s", 5, faults);
    let tag = format!("CHATBENCH_TEST_TAG=ctrl-c-kafka-{}", std::process::id());
    let child = spawn_tagged(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"], &tag);
    let started = Instant::now();
    let down = || std::fs::read_to_string(out.join("kafka/node-0.log")).is_ok_and(|l| l.contains("Kafka broker unreachable"));
    while !down() {
        assert!(started.elapsed() < Duration::from_secs(40), "the broker never went down: {:?}", tagged_processes(&tag));
        std::thread::sleep(Duration::from_millis(100));
    }
    let running = tagged_processes(&tag);
    assert!(running.iter().any(|p| p.contains("s3_launcher")), "moto holds the broker's data meanwhile: {running:?}");
    assert!(running.iter().any(|p| p.contains("tansu proxy")), "the link proxies run: {running:?}");
    interrupt_and_assert_nothing_left(child, &tag);
}

#[test]
fn network_faults_on_the_clients_link_stall_and_reset_clients_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let faults = "faults:\n  - {at: 500ms, action: {network: {node: 0, link: clients, duration: 1s, blackhole: true}}}\n  - {at: 2s, action: {network: {node: 1, link: clients, duration: 300ms, reset: true, latency: 50ms}}}\n";
    let file = scenario(dir.path(), "3s", faults);
    let o = run(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    let r = report(&out);
    let mode = &r["modes"][0];
    assert_eq!(mode["faults"].as_array().unwrap().len(), 2, "{}", mode["faults"]);
    assert!(mode["faults"].as_array().unwrap().iter().all(|f| f["error"].is_null()), "{}", mode["faults"]);
    // The reset closed the clients of node 1: they reconnected.
    assert!(mode["counts"]["reconnects"].as_u64().unwrap() > 0, "{}", mode["counts"]);
}

/// `workload.connect_rate` paces every connection: 12 clients at 10/s
/// open over at least 1.1 s (a lower bound: a slow machine only widens
/// it), and the report gives the connect-time distribution of each one.
#[test]
fn connect_rate_paces_the_connections_and_the_report_times_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = scenario(dir.path(), "1s", "  connect_rate: 10\n");
    let text = std::fs::read_to_string(&file).unwrap().replace("subscribers_per_room: 2", "subscribers_per_room: 4");
    std::fs::write(&file, text).unwrap();
    let o = run(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let trace = chatbench::trace::Trace::read(&out.join("changestream/trace.bin")).unwrap();
    let opened: Vec<u64> =
        trace.events.iter().filter_map(|e| matches!(e.kind, chatbench::trace::EventKind::Connected { .. }).then_some(e.t_ns)).collect();
    assert_eq!(opened.len(), 12, "2 rooms x (4 subscribers + 2 senders), no reconnects");
    let spread = opened.iter().max().unwrap() - opened.iter().min().unwrap();
    assert!(spread >= 1_050_000_000, "12 connections at 10/s opened within {spread} ns");
    let connect = &report(&out)["modes"][0]["latency"]["connect"];
    assert_eq!(connect["count"], 12, "{connect}");
    // A WebSocket upgrade takes a round trip at least (tens of µs on
    // loopback); the figures once were a histogram's clamp, 2 µs.
    assert!(connect["p50_us"].as_u64().unwrap() >= 20, "{connect}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("connect p99"), "{stdout}");
}
