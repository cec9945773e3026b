//! MQTT over WebSocket against a real broker: aedes 1.2 (examples/aedes-mqtt,
//! one node, aedes's own in-memory emitter), spoken to as MQTT 3.1.1 at
//! QoS 0, 1 and 2. Healthy it passes at each QoS; a broker that
//! acknowledges publishes it never forwards (`--lose-every N`) fails with
//! exactly `lost`, one that forwards some twice (`--duplicate-every N`)
//! with exactly `duplicated`, at QoS 1 and at QoS 2 alike: the client side
//! passes each delivery on once, so what the gate sees is the broker's.
//!
//! Needs Node.js and `ci/setup aedes` (the README's test command runs it):
//! without them these tests fail, naming the step.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod cli;

use cli::{kinds, report, run, text};

fn server_js() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("examples/aedes-mqtt");
    assert!(dir.join("node_modules/aedes").is_dir(), "examples/aedes-mqtt is installed: run ci/setup aedes");
    dir.join("server.js")
}

fn scenario(dir: &Path, qos: u8, extra_args: &str) -> PathBuf {
    let js = server_js().display().to_string();
    let ack = if qos == 0 { "none" } else { "receipt" };
    let lines = [
        "name: mqtt".to_owned(),
        "topology: {nodes: 1, provider: compat}".to_owned(),
        "workload: {rooms: 2, subscribers_per_room: 2, senders_per_room: 1, chatters_per_room: 1, load: {open: {rate_per_s: 40}}, duration: 4s, drain_timeout: 10s}".to_owned(),
        "system:".to_owned(),
        "  protocol: mqtt".to_owned(),
        format!("  command: {{run: [node, {js}, --port, \"{{port}}\"{extra_args}], ready: {{http: /health}}}}"),
        format!("  mqtt: {{qos: {qos}}}"),
        format!("  guarantees: {{ack: {ack}, order: per_sender, history: none}}"),
    ];
    let path = dir.join("mqtt.yaml");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

fn healthy(qos: u8) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&scenario(dir.path(), qos, ""), &out);
    assert_eq!(o.status.code(), Some(0), "QoS {qos}: {}", text(&o));
    let counts = &report(&out)["modes"][0]["counts"];
    if qos > 0 {
        assert_eq!(counts["acked"], counts["sent"], "every publish acknowledged: {counts}");
    }
    assert_eq!(counts["delivered"].as_u64(), counts["sent"].as_u64().map(|n| n * 3), "3 subscribers per room: {counts}");
}

#[test]
fn aedes_passes_at_qos_0_1_and_2() {
    for qos in [0, 1, 2] {
        healthy(qos);
    }
}

fn broken(qos: u8, sabotage: &str, finding: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&scenario(dir.path(), qos, &format!(", {sabotage}, \"10\"")), &out);
    assert_eq!(o.status.code(), Some(1), "QoS {qos} {sabotage}: {}", text(&o));
    assert_eq!(kinds(&report(&out)), BTreeSet::from([finding.to_owned()]), "QoS {qos} {sabotage}: {}", text(&o));
}

#[test]
fn acknowledged_publishes_never_forwarded_are_exactly_lost() {
    broken(1, "--lose-every", "lost");
    broken(2, "--lose-every", "lost");
}

#[test]
fn publishes_forwarded_twice_are_exactly_duplicated() {
    broken(1, "--duplicate-every", "duplicated");
    broken(2, "--duplicate-every", "duplicated");
}
