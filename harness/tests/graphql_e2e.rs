//! GraphQL over WebSocket against a real server: examples/graphql-chat
//! (graphql 16 + graphql-ws 6.4, one node, in memory), spoken to over
//! `graphql-transport-ws`. Healthy it passes; a server that answers a
//! mutation but never publishes it (`--lose-every N`) fails with exactly
//! `lost`, one that publishes some twice (`--duplicate-every N`) with
//! exactly `duplicated`; a delivery path the results do not have fails,
//! and nothing is taken for a delivery that is not one.
//!
//! Needs Node.js and `ci/setup graphql` (the README's test command runs
//! it): without them these tests fail, naming the step.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod cli;

use cli::{kinds, report, run, text};

fn server_js() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("examples/graphql-chat");
    assert!(dir.join("node_modules/graphql-ws").is_dir(), "examples/graphql-chat is installed: run ci/setup graphql");
    dir.join("server.js")
}

fn scenario(dir: &Path, extra_args: &str, id_path: &str) -> PathBuf {
    let js = server_js().display().to_string();
    let lines = [
        "name: gql".to_owned(),
        "topology: {nodes: 1, provider: compat}".to_owned(),
        "workload: {rooms: 2, subscribers_per_room: 2, senders_per_room: 1, chatters_per_room: 1, load: {open: {rate_per_s: 40}}, duration: 4s, drain_timeout: 10s}".to_owned(),
        "system:".to_owned(),
        "  protocol: graphql_ws".to_owned(),
        format!("  command: {{run: [node, {js}, --port, \"{{port}}\"{extra_args}], ready: {{http: /health}}}}"),
        "  graphql_ws:".to_owned(),
        "    subscription: 'subscription ($room: String!) { messages(room: $room) { id room text } }'".to_owned(),
        r#"    subscription_variables: '{"room":"{room}"}'"#.to_owned(),
        "    mutation: 'mutation ($room: String!, $id: String!, $text: String!) { send(room: $room, id: $id, text: $text) { id } }'"
            .to_owned(),
        r#"    mutation_variables: '{"room":"{room}","id":"{id}","text":"{text}"}'"#.to_owned(),
        format!("    delivery: {{id: {{json: {id_path}}}, room: messages.room, text: messages.text}}"),
        "  guarantees: {ack: receipt, order: per_sender, history: none}".to_owned(),
    ];
    let path = dir.join("gql.yaml");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

#[test]
fn a_graphql_ws_chat_server_passes_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&scenario(dir.path(), "", "messages.id"), &out);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let counts = &report(&out)["modes"][0]["counts"];
    assert_eq!(counts["acked"], counts["sent"], "every mutation answered: {counts}");
    assert_eq!(counts["delivered"].as_u64(), counts["sent"].as_u64().map(|n| n * 3), "3 subscribers per room: {counts}");
}

#[test]
fn answered_but_never_published_is_exactly_lost_and_published_twice_exactly_duplicated() {
    for (sabotage, finding) in [("--lose-every", "lost"), ("--duplicate-every", "duplicated")] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let o = run(&scenario(dir.path(), &format!(", {sabotage}, \"10\""), "messages.id"), &out);
        assert_eq!(o.status.code(), Some(1), "{sabotage}: {}", text(&o));
        assert_eq!(kinds(&report(&out)), BTreeSet::from([finding.to_owned()]), "{sabotage}: {}", text(&o));
    }
}

/// A declaration whose id path the results do not have: every delivery
/// is someone else's message (a phantom), none is owed's: the run fails.
#[test]
fn a_delivery_path_the_results_lack_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&scenario(dir.path(), "", "messages.messageId"), &out);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let found = kinds(&report(&out));
    assert!(found.contains("lost") && found.contains("phantom"), "{found:?}: {}", text(&o));
}
