//! The shipped framework declarations (`scenarios/protocols/`: ActionCable,
//! SignalR's JSON hub protocol, Phoenix Channels), each run unchanged but
//! for `--url` against a small server of that framework's exact wire shape:
//! healthy it passes; broken it fails with exactly the break's findings.
//!
//! The servers are written here, in-process (tokio-tungstenite), from each
//! framework's protocol documentation, as the frameworks frame things:
//! - ActionCable: the `actioncable-v1-json` subprotocol, `welcome` and
//!   `ping` frames, `identifier` and `data` as JSON documents inside
//!   strings, a confirmation for a subscribe and none for an unsubscribe,
//!   no answer to a `message` command; a broadcast names the recipient's
//!   own subscription.
//! - SignalR: the `{"protocol":"json","version":1}` handshake answered
//!   `{}`, records ended by 0x1E (a completion and a broadcast to its
//!   sender in one frame), invocation ids answered by completions, server
//!   pings, and a client timeout: a connection that sends nothing for a
//!   while is closed, as ASP.NET Core does.
//! - Phoenix: `[join_ref, ref, topic, event, payload]` arrays, `phx_reply`
//!   by ref, `phx_close` after a leave, pushes to a topic not joined
//!   refused, `phoenix` heartbeats answered, and idle connections closed.

mod cli;

use cli::{kinds, report, run, run_with, text};
use futures::{SinkExt, StreamExt};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// How a server breaks: every n-th delivery dropped or sent twice, or
/// heartbeats left unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    None,
    Drop(u64),
    Duplicate(u64),
    MuteHeartbeats,
}

type Member = (u64, mpsc::UnboundedSender<String>, String);

/// Rooms and their members: connection, writer, and what the member's
/// frames name it by (ActionCable's identifier).
#[derive(Default)]
struct Hub {
    rooms: Mutex<HashMap<String, Vec<Member>>>,
    delivered: AtomicU64,
}

impl Hub {
    fn join(&self, room: &str, conn: u64, tx: &mpsc::UnboundedSender<String>, name: String) {
        let mut rooms = self.rooms.lock().unwrap();
        let members = rooms.entry(room.to_owned()).or_default();
        if !members.iter().any(|(c, _, _)| *c == conn) {
            members.push((conn, tx.clone(), name));
        }
    }

    fn leave(&self, room: &str, conn: u64) {
        if let Some(members) = self.rooms.lock().unwrap().get_mut(room) {
            members.retain(|(c, _, _)| *c != conn);
        }
    }

    fn leave_all(&self, conn: u64) {
        for members in self.rooms.lock().unwrap().values_mut() {
            members.retain(|(c, _, _)| *c != conn);
        }
    }

    fn member(&self, room: &str, conn: u64) -> bool {
        self.rooms.lock().unwrap().get(room).is_some_and(|m| m.iter().any(|(c, _, _)| *c == conn))
    }

    /// Each member's frame (by its connection and name), broken as told,
    /// with `tail` (by connection) after it in the same frame, once.
    fn broadcast(&self, room: &str, brk: Break, frame: impl Fn(u64, &str) -> String, tail: impl Fn(u64) -> String) {
        for (conn, tx, name) in self.rooms.lock().unwrap().get(room).into_iter().flatten() {
            let n = self.delivered.fetch_add(1, Ordering::Relaxed) + 1;
            let (f, t) = (frame(*conn, name), tail(*conn));
            match brk {
                Break::Drop(every) if n.is_multiple_of(every) => {
                    if !t.is_empty() {
                        let _ = tx.send(t);
                    }
                    continue;
                }
                Break::Duplicate(every) if n.is_multiple_of(every) => {
                    let _ = tx.send(f.clone());
                }
                _ => {}
            }
            let _ = tx.send(f + &t);
        }
    }
}

/// How a server serves a connection: `subprotocol` selected when offered;
/// `greet` written first, `ping` every second; a connection silent for
/// `idle` closed.
#[derive(Clone, Default)]
struct Serving {
    subprotocol: Option<&'static str>,
    idle: Option<Duration>,
    greet: Option<String>,
    ping: Option<String>,
}

/// A WebSocket server: each connection's frames handed to `on_frame`,
/// whose answers a writer task sends; `on_frame(conn, "")` when it ends.
async fn serve<F>(listener: tokio::net::TcpListener, shape: Serving, on_frame: F)
where
    F: Fn(u64, &str, &mpsc::UnboundedSender<String>) + Send + Sync + 'static,
{
    let on_frame = Arc::new(on_frame);
    let mut next = 0u64;
    loop {
        let Ok((socket, _)) = listener.accept().await else { return };
        next += 1;
        let (conn, on_frame, Serving { subprotocol, idle, greet, ping }) = (next, on_frame.clone(), shape.clone());
        tokio::spawn(async move {
            #[allow(clippy::result_large_err, reason = "tungstenite's callback type")]
            let pick = |req: &Request, mut resp: Response| {
                let offered = req.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).unwrap_or_default();
                if let Some(p) = subprotocol.filter(|p| offered.split(',').any(|o| o.trim() == *p)) {
                    resp.headers_mut().insert("sec-websocket-protocol", p.parse().unwrap());
                }
                Ok(resp)
            };
            let Ok(ws) = tokio_tungstenite::accept_hdr_async(socket, pick).await else { return };
            let (mut write, mut read) = ws.split();
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            if let Some(g) = greet {
                let _ = tx.send(g);
            }
            let writer = tokio::spawn(async move {
                let second = Duration::from_secs(1);
                let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
                loop {
                    let frame = tokio::select! {
                        f = rx.recv() => match f { Some(f) => f, None => break },
                        _ = pings.tick() => match &ping { Some(p) => p.clone(), None => continue },
                    };
                    if write.send(Message::text(frame)).await.is_err() {
                        break;
                    }
                }
                let _ = write.send(Message::Close(None)).await;
            });
            loop {
                let next = match idle {
                    Some(d) => match tokio::time::timeout(d, read.next()).await {
                        Ok(n) => n,
                        Err(_) => break,
                    },
                    None => read.next().await,
                };
                match next {
                    Some(Ok(Message::Text(t))) => on_frame(conn, t.as_str(), &tx),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
            on_frame(conn, "", &tx);
            drop(tx);
            let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
        });
    }
}

/// ActionCable (Rails): a `ChatChannel` with `speak`, rooms by `room`.
fn actioncable(hub: Arc<Hub>, brk: Break) -> impl Fn(u64, &str, &mpsc::UnboundedSender<String>) + Send + Sync + 'static {
    move |conn, frame, tx| {
        if frame.is_empty() {
            return hub.leave_all(conn);
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(frame) else { return };
        let identifier = v["identifier"].as_str().unwrap_or_default().to_owned();
        let Ok(id) = serde_json::from_str::<serde_json::Value>(&identifier) else { return };
        let (Some("ChatChannel"), Some(room)) = (id["channel"].as_str(), id["room"].as_str()) else {
            let _ = tx.send(serde_json::json!({"identifier": identifier, "type": "reject_subscription"}).to_string());
            return;
        };
        match v["command"].as_str() {
            Some("subscribe") => {
                hub.join(room, conn, tx, identifier.clone());
                let _ = tx.send(serde_json::json!({"identifier": identifier, "type": "confirm_subscription"}).to_string());
            }
            Some("unsubscribe") => hub.leave(room, conn),
            // Rails: "Unable to find subscription", and nothing to the client.
            Some("message") if !hub.member(room, conn) => {}
            Some("message") => {
                let Ok(data) = serde_json::from_str::<serde_json::Value>(v["data"].as_str().unwrap_or_default()) else { return };
                if data["action"] == "speak" {
                    let message = serde_json::json!({"id": data["id"], "body": data["body"], "sender": conn});
                    let frame = |_, name: &str| serde_json::json!({"identifier": name, "message": message}).to_string();
                    hub.broadcast(room, brk, frame, |_| String::new());
                }
            }
            _ => {}
        }
    }
}

/// SignalR's JSON hub protocol: a hub with `JoinRoom`, `LeaveRoom`,
/// `SendMessage(room, {id, text})` → `ReceiveMessage(room, {id, text})`.
fn signalr(hub: Arc<Hub>, brk: Break) -> impl Fn(u64, &str, &mpsc::UnboundedSender<String>) + Send + Sync + 'static {
    const RS: char = '\u{1e}';
    move |conn, frame, tx| {
        if frame.is_empty() {
            return hub.leave_all(conn);
        }
        for record in frame.split(RS).filter(|r| !r.is_empty()) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(record) else { continue };
            if v["protocol"] == "json" {
                let _ = tx.send(format!("{{}}{RS}"));
                continue;
            }
            if v["type"] != 1 {
                continue; // pings, completions of ours
            }
            let invocation = v["invocationId"].clone();
            let room = v["arguments"][0].as_str().unwrap_or_default().to_owned();
            let completion = |error: Option<&str>| {
                let mut c = serde_json::json!({"type": 3, "invocationId": invocation});
                if let Some(e) = error {
                    c["error"] = e.into();
                }
                format!("{c}{RS}")
            };
            match v["target"].as_str() {
                Some("JoinRoom") => {
                    hub.join(&room, conn, tx, String::new());
                    let _ = tx.send(completion(None));
                }
                Some("LeaveRoom") => {
                    hub.leave(&room, conn);
                    let _ = tx.send(completion(None));
                }
                Some("SendMessage") => {
                    let msg = serde_json::json!({"type": 1, "target": "ReceiveMessage", "arguments": [room, v["arguments"][1]]});
                    let frame = format!("{msg}{RS}");
                    // The sender's copy and its completion in one frame.
                    let own = hub.member(&room, conn);
                    let done = completion(None);
                    hub.broadcast(&room, brk, |_, _| frame.clone(), |c| if c == conn { done.clone() } else { String::new() });
                    if !own {
                        let _ = tx.send(done);
                    }
                }
                _ if !invocation.is_null() => {
                    let _ = tx.send(completion(Some("Unknown hub method")));
                }
                _ => {}
            }
        }
    }
}

/// Phoenix Channels (the V2 JSON serializer): topics `room:*`, a
/// `new_msg` event broadcast to the topic and answered `ok`.
fn phoenix(hub: Arc<Hub>, brk: Break) -> impl Fn(u64, &str, &mpsc::UnboundedSender<String>) + Send + Sync + 'static {
    move |conn, frame, tx| {
        if frame.is_empty() {
            return hub.leave_all(conn);
        }
        let Ok(serde_json::Value::Array(m)) = serde_json::from_str::<serde_json::Value>(frame) else { return };
        let [join_ref, r, topic, event, payload] = &m[..] else { return };
        let reply = |status: &str, response: serde_json::Value| {
            let _ = tx.send(serde_json::json!([join_ref, r, topic, "phx_reply", {"status": status, "response": response}]).to_string());
        };
        let room = topic.as_str().unwrap_or_default();
        match event.as_str() {
            Some("heartbeat") if room == "phoenix" => {
                if brk != Break::MuteHeartbeats {
                    reply("ok", serde_json::json!({}))
                }
            }
            Some("phx_join") if room.starts_with("room:") => {
                hub.join(room, conn, tx, String::new());
                reply("ok", serde_json::json!({}));
            }
            Some("phx_join") => reply("error", serde_json::json!({"reason": "unmatched topic"})),
            _ if !hub.member(room, conn) => reply("error", serde_json::json!({"reason": "unmatched topic"})),
            Some("phx_leave") => {
                hub.leave(room, conn);
                reply("ok", serde_json::json!({}));
                let _ = tx.send(serde_json::json!([join_ref, join_ref, topic, "phx_close", {}]).to_string());
            }
            Some("new_msg") => {
                let out = serde_json::json!([null, null, topic, "new_msg", {"id": payload["id"], "body": payload["body"]}]).to_string();
                hub.broadcast(room, brk, |_, _| out.clone(), |_| String::new());
                reply("ok", serde_json::json!({}));
            }
            _ => reply("error", serde_json::json!({"reason": "unhandled event"})),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    ActionCable,
    SignalR,
    Phoenix,
}

/// Start a server of `shape` broken as told; its URL.
async fn start(shape: Shape, brk: Break, idle: Option<Duration>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hub = Arc::new(Hub::default());
    match shape {
        Shape::ActionCable => {
            let serving = Serving {
                subprotocol: Some("actioncable-v1-json"),
                idle,
                greet: Some(r#"{"type":"welcome"}"#.into()),
                ping: Some(r#"{"type":"ping","message":1765100000}"#.into()),
            };
            tokio::spawn(serve(listener, serving, actioncable(hub, brk)));
            format!("ws://{addr}/cable")
        }
        Shape::SignalR => {
            let serving = Serving { idle, ping: Some("{\"type\":6}\u{1e}".into()), ..Serving::default() };
            tokio::spawn(serve(listener, serving, signalr(hub, brk)));
            format!("ws://{addr}/chathub")
        }
        Shape::Phoenix => {
            tokio::spawn(serve(listener, Serving { idle, ..Serving::default() }, phoenix(hub, brk)));
            format!("ws://{addr}/socket/websocket?vsn=2.0.0")
        }
    }
}

fn declaration(shape: Shape) -> PathBuf {
    let name = match shape {
        Shape::ActionCable => "actioncable.yaml",
        Shape::SignalR => "signalr.yaml",
        Shape::Phoenix => "phoenix.yaml",
    };
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/protocols").join(name)
}

/// Run `file` against `url` (None: the file's own); exit code, report, output.
async fn gate(file: PathBuf, url: Option<String>) -> (Option<i32>, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    tokio::task::spawn_blocking(move || {
        let o = match &url {
            Some(url) => run_with(&file, &out, &["--url", url]),
            None => run(&file, &out),
        };
        let r = report(&out);
        (o.status.code(), r, text(&o))
    })
    .await
    .unwrap()
}

async fn healthy(shape: Shape) {
    let url = start(shape, Break::None, None).await;
    let (code, r, out) = gate(declaration(shape), Some(url)).await;
    assert_eq!(code, Some(0), "{shape:?}: {out}");
    let counts = &r["modes"][0]["counts"];
    assert!(counts["delivered"].as_u64().unwrap() > 200, "{shape:?}: {counts}");
    let lat = &r["modes"][0]["latency"]["delivery"];
    eprintln!(
        "{shape:?}: sent {} acked {} delivered {}, delivery p50 {} µs p99 {} µs",
        counts["sent"], counts["acked"], counts["delivered"], lat["p50_us"], lat["p99_us"]
    );
}

async fn broken(shape: Shape, brk: Break, expected: &str) {
    let url = start(shape, brk, None).await;
    let (code, r, out) = gate(declaration(shape), Some(url)).await;
    assert_eq!(code, Some(1), "{shape:?} {brk:?}: {out}");
    assert_eq!(kinds(&r), BTreeSet::from([expected.to_owned()]), "{shape:?} {brk:?}: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn actioncable_passes_healthy() {
    healthy(Shape::ActionCable).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn actioncable_that_drops_deliveries_fails_with_exactly_lost() {
    broken(Shape::ActionCable, Break::Drop(25), "lost").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signalr_passes_healthy() {
    healthy(Shape::SignalR).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signalr_that_duplicates_deliveries_fails_with_exactly_duplicated() {
    broken(Shape::SignalR, Break::Duplicate(25), "duplicated").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn phoenix_passes_healthy() {
    healthy(Shape::Phoenix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn phoenix_that_drops_deliveries_fails_with_exactly_lost() {
    broken(Shape::Phoenix, Break::Drop(25), "lost").await;
}

/// Servers that close a connection silent for 1.5 s (Phoenix after 60 s,
/// SignalR after 30 s by default): the declared heartbeats keep every
/// subscriber, which otherwise sends nothing after its joins, connected;
/// without them (the shipped 5 s made 30 s) subscribers are cut off and
/// reconnect. A Phoenix server that stops answering heartbeats has its
/// connections taken for dead and reopened. (Reconnects of a system
/// without `seq` are not findings: nothing is owed across them.)
#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_keep_idle_subscribers_connected() {
    async fn reconnects(shape: Shape, brk: Break, idle: Option<Duration>, every: &str) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("beats.yaml");
        let yaml = std::fs::read_to_string(declaration(shape)).unwrap();
        assert!(yaml.contains("every: 5s"), "{shape:?}: the shipped heartbeat");
        let url = start(shape, brk, idle).await;
        let shipped = yaml.lines().find_map(|l| l.trim().strip_prefix("external: {urls: [\"")).unwrap().split('"').next().unwrap();
        std::fs::write(&file, yaml.replace("every: 5s", &format!("every: {every}")).replace(shipped, &url)).unwrap();
        let (code, r, out) = gate(file, None).await;
        // A connection closed with pushes unanswered resends them: a server
        // without dedup may then duplicate, which is judged as it is.
        assert!(brk != Break::None || code == Some(0), "{shape:?} every {every}: {out}");
        r["modes"][0]["counts"]["reconnects"].as_u64().unwrap()
    }
    let idle = Some(Duration::from_millis(1500));
    for shape in [Shape::SignalR, Shape::Phoenix] {
        assert_eq!(reconnects(shape, Break::None, idle, "400ms").await, 0, "{shape:?}");
        assert!(reconnects(shape, Break::None, idle, "30s").await > 0, "{shape:?}: without heartbeats the server cuts subscribers off");
    }
    assert!(reconnects(Shape::Phoenix, Break::MuteHeartbeats, None, "400ms").await > 0, "unanswered heartbeats end connections");
}
