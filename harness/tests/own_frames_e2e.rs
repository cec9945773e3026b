//! A server with frames of its own shape — none of chatbench's — gated
//! with a `json_frames` declaration: an auth frame first (answered
//! `ready`), joins answered per room, sends acknowledged by the client's
//! `ref` (a string seq in the ack), deliveries as `["event", {...}]`
//! arrays that name no room (one room per client) and never go back to
//! their sender (`echo: false`). Healthy, it passes; when it drops one
//! delivery in twenty, it fails with exactly `lost`; when it refuses the
//! token, every client gives up with the server's words.
//!
//! The server is written here, in-process (tokio-tungstenite), and the
//! harness reaches it as `system.external`.

mod cli;

use cli::{kinds, report, run, text};
use futures::{SinkExt, StreamExt};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Members = Arc<Mutex<HashMap<String, Vec<(u64, mpsc::UnboundedSender<String>)>>>>;

/// `drop_every`: 0, or skip every n-th delivery; `token`: what auth must carry.
async fn serve(listener: tokio::net::TcpListener, drop_every: u64, token: &'static str) {
    let members: Members = Arc::default();
    let counter = Arc::new(AtomicU64::new(0));
    let mut next_conn = 0u64;
    loop {
        let Ok((socket, _)) = listener.accept().await else { return };
        next_conn += 1;
        let conn = next_conn;
        let (members, counter) = (members.clone(), counter.clone());
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(socket).await else { return };
            let (mut write, mut read) = ws.split();
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            let writer = tokio::spawn(async move {
                while let Some(frame) = rx.recv().await {
                    if write.send(Message::text(frame)).await.is_err() {
                        break;
                    }
                }
            });
            let mut authed = false;
            let mut joined: Option<String> = None;
            let mut seq = 0u64;
            while let Some(Ok(Message::Text(t))) = read.next().await {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) else { continue };
                match v["type"].as_str() {
                    Some("auth") if v["token"] == token => {
                        authed = true;
                        let _ = tx.send(r#"{"type":"ready"}"#.into());
                    }
                    Some("auth") => {
                        let _ = tx.send(r#"{"type":"denied","reason":"bad token"}"#.into());
                    }
                    _ if !authed => {}
                    Some("join") => {
                        let channel = v["channel"].as_str().unwrap_or_default().to_owned();
                        members.lock().unwrap().entry(channel.clone()).or_default().push((conn, tx.clone()));
                        joined = Some(channel.clone());
                        let _ = tx.send(serde_json::json!({"type": "joined", "channel": channel}).to_string());
                    }
                    Some("post") => {
                        let channel = v["channel"].as_str().unwrap_or_default().to_owned();
                        seq += 1;
                        let event =
                            serde_json::json!(["event", {"from": conn, "payload": {"ref": v["ref"], "text": v["text"]}}]).to_string();
                        for (other, member) in members.lock().unwrap().get(&channel).into_iter().flatten() {
                            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                            if *other != conn && !(drop_every > 0 && n % drop_every == 0) {
                                let _ = member.send(event.clone());
                            }
                        }
                        let _ = tx.send(serde_json::json!({"type": "ok", "ref": v["ref"], "n": seq.to_string()}).to_string());
                    }
                    _ => {}
                }
            }
            if let Some(channel) = joined {
                members.lock().unwrap().entry(channel).or_default().retain(|(c, _)| *c != conn);
            }
            writer.abort();
        });
    }
}

/// The scenario, with the deliveries' text read at `text_path`
/// (`1.payload.text` is where the server puts it).
fn scenario_reading_text_at(dir: &std::path::Path, url: &str, token: &str, text_path: &str) -> std::path::PathBuf {
    let text = format!(
        r#"name: own-frames
topology: {{nodes: 1}}
workload: {{rooms: 3, subscribers_per_room: 1, senders_per_room: 0, chatters_per_room: 2, load: {{open: {{rate_per_s: 60}}}}, duration: 3s, drain_timeout: 5s}}
system:
  protocol: json_frames
  external: {{urls: ["{url}"]}}
  credentials: {{token_command: [echo, "{token}"]}}
  json_frames:
    hello: '{{"type":"auth","token":"{{token}}"}}'
    join: '{{"type":"join","channel":"{{room}}"}}'
    send: '{{"type":"post","channel":"{{room}}","ref":"{{id}}","text":"{{text}}"}}'
    frames:
      - {{match: {{type: ready}}, is: connected}}
      - {{match: {{type: denied}}, is: error, code: reason}}
      - {{match: {{type: joined}}, is: joined, room: channel}}
      - {{match: {{type: ok}}, is: ack, id: {{json: ref}}}}
      - {{match: {{"0": event}}, is: delivery, id: {{json: 1.payload.ref}}, text: {text_path}}}
  guarantees: {{ack: receipt, order: per_sender, history: none, echo: false}}
"#
    );
    let path = dir.join("own.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn gate(drop_every: u64, token: &'static str) -> (Option<i32>, serde_json::Value, String) {
    gate_reading_text_at(drop_every, token, "1.payload.text").await
}

async fn gate_reading_text_at(drop_every: u64, token: &'static str, text_path: &str) -> (Option<i32>, serde_json::Value, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, drop_every, "s3cret"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = scenario_reading_text_at(dir.path(), &url, token, text_path);
    tokio::task::spawn_blocking(move || {
        let o = run(&file, &out);
        (o.status.code(), report(&out), text(&o))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_with_its_own_frames_passes_healthy() {
    let (code, r, out) = gate(0, "s3cret").await;
    assert_eq!(code, Some(0), "{out}");
    let counts = &r["modes"][0]["counts"];
    // 2 chatters and 1 subscriber per room: each message reaches the 2 others.
    assert_eq!(counts["delivered"].as_u64(), counts["sent"].as_u64().map(|n| n * 2), "{counts}");
    assert!(r["modes"][0]["guarantees"].as_str().unwrap().contains("echo: false"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_with_its_own_frames_that_drops_deliveries_fails_with_exactly_lost() {
    let (code, r, out) = gate(20, "s3cret").await;
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(kinds(&r), BTreeSet::from(["lost".to_owned()]), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_hello_is_a_refusal_quoting_the_server() {
    let (code, r, out) = gate(0, "wrong").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(kinds(&r).contains("gave_up"), "{out}");
    assert!(r["modes"][0]["findings"].to_string().contains("bad token"), "{out}");
}

/// A declaration that reads the text in the wrong place fails every
/// delivery as `corrupted`; the report names the declaration as the likely
/// cause and where the sent text is (issue 32: not a list of 1,000 rows).
#[tokio::test(flavor = "multi_thread")]
async fn a_text_path_that_misses_every_delivery_is_named_as_the_cause() {
    let (code, r, out) = gate_reading_text_at(0, "s3cret", "\"0\"").await;
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(kinds(&r), BTreeSet::from(["corrupted".to_owned()]), "{out}");
    let causes = r["modes"][0]["causes"].to_string();
    assert!(causes.contains("reads the text") && causes.contains("`1.payload.text`"), "{causes}");
    assert!(out.contains("why    external: ") && out.contains("`1.payload.text`"), "printed beside the failed check: {out}");
    // A healthy declaration gets no such sentence.
    let (code, r, out) = gate(0, "s3cret").await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(r["modes"][0]["causes"], serde_json::json!([]), "{out}");
}
