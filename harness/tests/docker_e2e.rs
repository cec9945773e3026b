//! The docker provider end to end, on the images `ci/setup docker` builds
//! here (nothing is pulled). Every test needs a Docker engine: they are
//! `#[ignore]`d for `cargo test` and run by `.ci/run` with `--ignored`,
//! where a missing engine fails them rather than skipping them.

mod cli;

use cli::{BIN, kinds, report, text};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MONGO: &str = "mongo=chatbench-local/nx-27017:0.8.1";
const KAFKA: &str = "kafka=chatbench-local/tansu:0.6.0";
const LABEL: &str = "org.chatbench.run";

/// One test at a time: each counts every labelled container on the engine.
static ENGINE: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ENGINE.lock().unwrap_or_else(|e| e.into_inner())
}

fn repo(path: &str) -> String {
    format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
}

/// Container or network ids carrying chatbench's label.
fn labelled(what: &[&str]) -> Vec<String> {
    let filter = format!("label={LABEL}");
    let out = Command::new("docker").args(what).args(["-q", "--filter", &filter]).output().expect("the docker CLI runs");
    assert!(out.status.success(), "docker {what:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

fn containers() -> Vec<String> {
    labelled(&["ps", "-a"])
}

fn networks() -> Vec<String> {
    labelled(&["network", "ls"])
}

fn assert_nothing_left(context: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(containers().is_empty() && networks().is_empty()) {
        assert!(Instant::now() < deadline, "{context}: left containers {:?} and networks {:?}", containers(), networks());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// `chatbench run SCENARIO --provider docker --quiet --out OUT EXTRA…`.
fn run_docker(scenario: &str, out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let (file, out) = (repo(scenario), out.to_str().unwrap().to_owned());
    let args = ["run", file.as_str(), "--provider", "docker", "--quiet", "--out", out.as_str()];
    run(&args.iter().chain(extra).copied().collect::<Vec<_>>())
}

/// Start the partition scenario (nodes in containers) in the background;
/// with `until_nodes`, return once its nodes log.
fn spawn_partition_run(out: &std::path::Path, until_nodes: bool) -> std::process::Child {
    let child = Command::new(BIN)
        .args(["run", &repo("scenarios/docker/partition-node.yaml"), "--quiet", "--out", out.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while until_nodes && !out.join("changestream/node-1.log").exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "nodes did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

#[test]
#[ignore = "needs a Docker engine"]
fn smoke_passes_on_local_images_and_leaves_nothing_behind() {
    let _engine = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run_docker("scenarios/smoke.yaml", &out, &["--docker-image", MONGO, "--docker-image", KAFKA]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = report(&out);
    assert_eq!(r["modes"][0]["provider"], "docker");
    assert!(r["modes"][0]["backend"].as_str().unwrap().contains("chatbench-local/nx-27017"), "{}", r["modes"][0]["backend"]);
    assert_nothing_left("after a run");
}

/// The command: `--provider docker` with no image named runs the
/// local stand-ins (the official images are not on this engine), says so,
/// and the report names them.
#[test]
#[ignore = "needs a Docker engine"]
fn provider_docker_without_images_runs_the_local_stand_ins_and_says_so() {
    let _engine = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&["run", &repo("scenarios/smoke.yaml"), "--provider", "docker", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("running the local stand-in chatbench-local/nx-27017:0.8.1"), "{}", text(&o));
    assert!(text(&o).contains("not MongoDB's"), "the compat note: {}", text(&o));
    let r = report(&out);
    assert_eq!(r["modes"][0]["provider"], "docker");
    assert!(r["modes"][0]["backend"].as_str().unwrap().starts_with("nx-27017 0.8.1"), "{}", r["modes"][0]["backend"]);
    assert_nothing_left("after a stand-in run");
}

#[test]
#[ignore = "needs a Docker engine"]
fn auto_with_an_engine_but_no_image_says_so_and_runs_on_the_next_provider() {
    let _engine = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // The default image (mongo:8.0) is not on this engine, and auto never pulls.
    let o = run(&["run", &repo("scenarios/smoke.yaml"), "--provider", "auto", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let all = text(&o);
    assert!(all.contains("never pulls") && all.contains("--docker-image"), "the skip is said where the user sees it: {all}");
    assert_eq!(report(&out)["modes"][0]["provider"], "compat");
    assert_nothing_left("after auto skipped docker");
}

/// Ctrl-C while a container is being created, and again while the nodes
/// run in containers: exit 130 and no container or network left.
#[test]
#[ignore = "needs a Docker engine"]
fn ctrl_c_leaves_no_container_or_network_behind() {
    let _engine = serial();
    for (moment, wait_for_nodes) in [("during container creation", false), ("while nodes in containers run", true)] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut child = spawn_partition_run(&out, wait_for_nodes);
        std::thread::sleep(if wait_for_nodes { Duration::from_secs(2) } else { Duration::from_millis(700) });
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(130), "{moment}");
        assert_nothing_left(moment);
    }
}

/// A panic with MongoDB and the nodes up in containers: the panic hook
/// removes them (unwinding may never reach their handles).
#[test]
#[ignore = "needs a Docker engine"]
fn a_panic_leaves_no_container_or_network_behind() {
    let _engine = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = Command::new(BIN)
        .args(["run", &repo("scenarios/docker/partition-node.yaml"), "--quiet", "--out", out.to_str().unwrap()])
        .env("CHATBENCH_TEST_PANIC", "1")
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("CHATBENCH_TEST_PANIC"), "{}", text(&o));
    assert_nothing_left("after a panic");
}

/// A SIGKILLed harness cannot clean up; the next docker run removes what
/// it left (its owner is gone), and nothing of a live run's.
#[test]
#[ignore = "needs a Docker engine"]
fn a_sigkilled_runs_containers_are_removed_by_the_next_run() {
    let _engine = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut child = spawn_partition_run(&out, true);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(containers().len() >= 3, "MongoDB and two nodes outlive a SIGKILL: {:?}", containers());
    let again = dir.path().join("again");
    let o = run_docker("scenarios/smoke.yaml", &again, &["--docker-image", MONGO]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_nothing_left("after the next run");
}

/// `partition` cuts a node container from MongoDB's network for 3 s; the
/// report shows the fault and its recovery, and nothing is lost.
#[test]
#[ignore = "needs a Docker engine"]
fn a_node_partitioned_from_mongodb_recovers_with_nothing_lost() {
    let _engine = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = cli::run(std::path::Path::new(&repo("scenarios/docker/partition-node.yaml")), &out);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = report(&out);
    assert!(kinds(&r).is_empty(), "{:?}", r["modes"][0]["findings"]);
    let fault = &r["modes"][0]["faults"][0];
    assert_eq!(fault["action"], "partition");
    assert_eq!(fault["node"], 1);
    assert!(fault["error"].is_null(), "{fault}");
    assert!(fault["recovery_ms"].as_u64().is_some(), "every subscriber received again: {fault}");
    // The cut acted: node 1's messages waited for the link to heal.
    assert!(fault["delayed"].as_u64().unwrap() > 0 && fault["max_delivery_us"].as_u64().unwrap() > 1_000_000, "{fault}");
    assert_nothing_left("after a partition run");
}

/// MongoDB's container is stopped and started again on the same host port
/// and data: the nodes reconnect and nothing is lost.
#[test]
#[ignore = "needs a Docker engine"]
fn restart_mongo_on_docker_keeps_the_port_and_the_data() {
    let _engine = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run_docker("scenarios/faults/restart-mongo.yaml", &out, &["--docker-image", MONGO, "--mode", "changestream"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = report(&out);
    assert_eq!(r["modes"][0]["faults"][0]["action"], "restart_mongo");
    assert!(kinds(&r).is_empty(), "{:?}", r["modes"][0]["findings"]);
    assert_nothing_left("after a MongoDB restart run");
}
