//! Socket.IO 4.8 + @socket.io/mongo-adapter (examples/socketio-mongo) on 2
//! nodes, spoken to over Engine.IO v4 / Socket.IO v5: healthy it passes;
//! when it acknowledges messages it never broadcasts (`--lose-every N`) it
//! fails with exactly `lost`; a delivery event the declaration does not
//! name fails, and the report quotes the event nothing took.
//!
//! Needs Node.js and `ci/setup socketio` (the README's test command runs
//! it): without them these tests fail, naming the step.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod cli;

use cli::{kinds, report, run, text};

fn server_js() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("examples/socketio-mongo");
    assert!(dir.join("node_modules/socket.io").is_dir(), "examples/socketio-mongo is installed: run ci/setup socketio");
    dir.join("server.js")
}

fn scenario(dir: &Path, extra_args: &str, delivery_event: &str) -> PathBuf {
    let js = server_js().display().to_string();
    let lines = [
        "name: sio".to_owned(),
        "topology: {nodes: 2, provider: compat}".to_owned(),
        "workload: {rooms: 2, subscribers_per_room: 2, senders_per_room: 1, chatters_per_room: 1, placement: round_robin, load: {open: {rate_per_s: 40}}, duration: 4s, drain_timeout: 10s}".to_owned(),
        "system:".to_owned(),
        "  protocol: socketio".to_owned(),
        format!("  command: {{run: [node, {js}, --port, \"{{port}}\", --mongo, \"{{mongo_uri}}\", --db, \"{{db}}\"{extra_args}], ready: {{http: /health}}}}"),
        "  socketio:".to_owned(),
        "    join: {event: join, args: ['\"{room}\"']}".to_owned(),
        r#"    send: {event: chat, args: ['{"room":"{room}","id":"{id}","text":"{text}"}'], error: 0.error}"#.to_owned(),
        format!("    delivery: {{event: {delivery_event}, room: 0.room, id: {{json: 0.id}}, text: 0.text}}"),
        "  guarantees: {ack: receipt, order: per_sender, history: none}".to_owned(),
    ];
    let path = dir.join("sio.yaml");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

#[test]
fn socket_io_with_the_mongo_adapter_passes_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&scenario(dir.path(), "", "chat"), &out);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let counts = &report(&out)["modes"][0]["counts"];
    assert_eq!(counts["acked"], counts["sent"], "every chat acknowledged by its callback: {counts}");
    assert_eq!(counts["delivered"].as_u64(), counts["sent"].as_u64().map(|n| n * 3), "3 clients per room: {counts}");
}

#[test]
fn acknowledged_messages_never_broadcast_are_exactly_lost() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&scenario(dir.path(), ", --lose-every, \"10\"", "chat"), &out);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = report(&out);
    assert_eq!(kinds(&r), BTreeSet::from(["lost".to_owned()]), "{}", text(&o));
}

#[test]
fn a_delivery_event_the_server_never_sends_fails_and_the_report_quotes_what_came() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&scenario(dir.path(), "", "message"), &out);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = report(&out);
    let notes = r["modes"][0]["notes"].to_string();
    assert!(notes.contains("matched no") && notes.contains(r#"[\"chat\""#), "{notes}");
}
