//! The seed's kind of server (examples/seed-stomp: Node.js, STOMP over
//! WebSocket, no receipts, one change stream per node, ids only inside the
//! echoed `content`) gated with `ack: none`: healthy it passes; when it
//! loses messages after storing them (`--lose-every N`, on every node, so
//! the same messages reach no one) it fails with exactly `lost`, whether
//! the sends are resolved by its store or by evidence.
//!
//! Needs Node.js and `ci/setup seed` (the README's test command runs it):
//! without them these tests fail, naming the step.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod cli;

use cli::{kinds, report, run, text};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn server_js() -> PathBuf {
    let dir = repo().join("examples/seed-stomp");
    assert!(
        dir.join("node_modules/ws").is_dir() && dir.join("node_modules/mongodb").is_dir(),
        "examples/seed-stomp is installed: run ci/setup seed"
    );
    dir.join("server.js")
}

/// 2 nodes, 2 rooms; `lose` adds `--lose-every N`; `store` declares the
/// store oracle (else: evidence).
fn scenario(dir: &Path, lose: Option<u32>, store: bool) -> PathBuf {
    let lose = lose.map_or(String::new(), |n| format!(", --lose-every, \"{n}\""));
    let store =
        if store { r"  store: {collection: chat_messages, room: groupId, id: {json: content, pattern: '\[(m\d+)\]$'}}" } else { "" };
    let js = server_js().display().to_string();
    let lines = [
        "name: seed".to_owned(),
        "topology: {nodes: 2, provider: compat}".to_owned(),
        "workload:".to_owned(),
        "  rooms: 2".to_owned(),
        "  subscribers_per_room: 2".to_owned(),
        "  senders_per_room: 1".to_owned(),
        "  chatters_per_room: 1".to_owned(),
        "  placement: round_robin".to_owned(),
        "  load: {open: {rate_per_s: 40}}".to_owned(),
        "  duration: 5s".to_owned(),
        "  drain_timeout: 10s".to_owned(),
        "system:".to_owned(),
        "  protocol: stomp".to_owned(),
        format!(
            "  command: {{run: [node, {js}, --port, \"{{port}}\", --mongo, \"{{mongo_uri}}\", --db, \"{{db}}\"{lose}], ready: {{http: /health}}}}"
        ),
        "  stomp:".to_owned(),
        "    path: /ws-stomp".to_owned(),
        "    subscribe: /sub/chat/{room}".to_owned(),
        "    send: /pub/chat/{room}".to_owned(),
        r#"    body: '{"content":"{text} [{id}]"}'"#.to_owned(),
        r"    id: {json: content, pattern: '\[(m\d+)\]$'}".to_owned(),
        "    text: {json: content}".to_owned(),
        "    subscribed: {after: 300ms}".to_owned(),
        "    heartbeat_ms: 0".to_owned(),
        "  guarantees: {ack: none, order: per_sender, history: none}".to_owned(),
        store.to_owned(),
    ];
    let text = lines.join("\n");
    let path = dir.join("seed.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_seed_shaped_server_passes_healthy_with_its_store_resolving_every_send() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&scenario(dir.path(), None, true), &out);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = report(&out);
    let counts = &r["modes"][0]["counts"];
    assert_eq!(counts["acked"], 0, "no receipts asked for or counted");
    assert_eq!(counts["resolved_stored"], counts["sent"], "the store resolves every send: {counts}");
    assert!(counts["sent"].as_u64().unwrap() >= 150, "{counts}");
}

/// One lost message in N, on every node: each is owed to every
/// subscriber that covered it and reached none — `lost`, nothing else.
#[test]
fn a_seed_shaped_server_that_loses_stored_messages_fails_with_exactly_lost() {
    for store in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let o = run(&scenario(dir.path(), Some(20), store), &out);
        assert_eq!(o.status.code(), Some(1), "store {store}: {}", text(&o));
        let r = report(&out);
        let mode = &r["modes"][0];
        assert_eq!(kinds(&r), BTreeSet::from(["lost".to_owned()]), "store {store}: {}", text(&o));
        let lost_msgs: BTreeSet<u64> = mode["findings"].as_array().unwrap().iter().filter_map(|f| f["msg"].as_u64()).collect();
        let sent = mode["counts"]["sent"].as_u64().unwrap();
        // Every 20th stored message (the last few may still be in the
        // change stream when the run ends: at least all but one).
        assert!((sent / 20 - 1..=sent / 20).contains(&(lost_msgs.len() as u64)), "store {store}: {} lost of {sent}", lost_msgs.len());
        let counts = &mode["counts"];
        if store {
            assert_eq!(counts["resolved_stored"], counts["sent"], "{counts}");
        } else {
            assert_eq!(counts["unconfirmed"].as_u64(), Some(lost_msgs.len() as u64), "{counts}");
        }
    }
}

/// A store declaration naming a field the server does not write is the
/// scenario's error (exit 2, naming it), not a pile of phantoms.
#[test]
fn a_store_declaration_that_matches_nothing_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = scenario(dir.path(), None, true);
    let yaml = std::fs::read_to_string(&file).unwrap().replace("room: groupId", "room: group_id");
    std::fs::write(&file, yaml).unwrap();
    let o = run(&file, &out);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("system.store: no document has a string at room path \"group_id\""), "{}", text(&o));
}
