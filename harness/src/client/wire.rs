//! Protocol adapters: what a client writes and how it reads what comes
//! back, behind one interface, so the connection loop (reconnects,
//! resends, resubscribes) is the same for every protocol.
//!
//! - `json`: chatbench protocol v1 (server/PROTOCOL.md).
//! - `stomp`: STOMP 1.2 over WebSocket. `CONNECT` is answered by
//!   `CONNECTED` before anything else is sent (an `ERROR` is a refusal,
//!   recorded with the server's words); `SUBSCRIBE` and `SEND` carry a
//!   `receipt`, and only the `RECEIPT` counts (a subscriber is subscribed
//!   when its receipt arrives, a send acked when its receipt arrives);
//!   heart-beats are sent when the server asks for them.

use crate::scenario::{AckGuarantee, Credentials, IdLocation, JsonId, Protocol, StompSettings, Subscribed, System, TextLocation};
use crate::trace::{BodyDigest, Label, MsgNo, id_hash, parse_wire_id, wire_id};
use chatbench_stomp::{Command, Frame as StompFrame, Incoming as StompIncoming};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// What one server message means to a client. Rooms are the client's
/// room slots (indexes into the rooms it was built with; 0 is its home).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A send was acked (stored) with this `seq`.
    Ack { msg: MsgNo, seq: u64 },
    /// A chat message.
    Msg(Delivered),
    /// The subscription of this room slot is live from `head` (None: the
    /// answer names no room this client asked for).
    Subscribed { slot: Option<usize>, head: u64 },
    /// The unsubscribe of this room slot was confirmed.
    Unsubscribed { slot: Option<usize> },
    /// An error; `msg` when it names one of our sends, `slot` when it
    /// names one of our rooms.
    Error { msg: Option<MsgNo>, slot: Option<usize>, code: String },
    /// The session is open (STOMP CONNECTED): send heart-beats this often.
    Connected { heartbeat: Option<Duration> },
    /// A heart-beat, or a frame with nothing for the client.
    Nothing,
    /// json_frames / socketio: a frame no declaration takes.
    Unmatched,
    /// Write this back (an Engine.IO pong).
    Reply(String),
}

/// One delivered chat message, with what its labels said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// None: not one of the harness's ids.
    pub msg: Option<MsgNo>,
    pub seq: u64,
    /// The room slot its labels name (the home room, 0, when they name none).
    pub slot: usize,
    pub label: Label,
    /// None when the settings give no way to read the text.
    pub body: Option<BodyDigest>,
    /// STOMP `message-id`, hashed (0: none).
    pub message_id: u64,
}

/// Everything a client needs to speak its protocol, for one client.
#[derive(Debug, Clone)]
pub(crate) struct Wire {
    protocol: Speaks,
    /// The client's room names, by slot (home first).
    rooms: Vec<String>,
}

#[derive(Debug, Clone)]
enum Speaks {
    Json,
    Stomp(Box<Stomp>),
    Frames(Box<super::frames::Frames>),
    SocketIo(Box<super::socketio::SocketIo>),
}

#[derive(Debug, Clone)]
pub(crate) struct Stomp {
    settings: StompSettings,
    /// CONNECT headers, templates already filled in for this client.
    connect_headers: BTreeMap<String, String>,
    /// The SUBSCRIBE destination template split around `{room}`.
    destination: (String, String),
    /// The SEND body template is JSON.
    json_body: bool,
    /// With `text: {json: PATH}`: what subscribers must get there.
    expected: ExpectedText,
    /// SENDs ask for a RECEIPT (not with `ack: none`).
    send_receipts: bool,
    /// Where MESSAGE frames carry the harness's id.
    id: IdReader,
}

/// How a delivered frame's id is read: a header, or a JSON field path with
/// an optional pattern inside its text.
#[derive(Debug, Clone)]
pub(crate) enum IdReader {
    Header(String),
    Json { path: String, pattern: Option<regex::Regex> },
}

impl IdReader {
    /// From a declaration already validated (a pattern that does not
    /// compile is refused when the scenario is read).
    pub(crate) fn new(location: &IdLocation) -> Result<Self, regex::Error> {
        Ok(match location {
            IdLocation::Header { header } => IdReader::Header(header.clone()),
            IdLocation::Json(id) => Self::json(id)?,
        })
    }

    pub(crate) fn json(id: &JsonId) -> Result<Self, regex::Error> {
        Ok(IdReader::Json { path: id.json.clone(), pattern: id.pattern.as_deref().map(regex::Regex::new).transpose()? })
    }

    /// The id in a JSON document's text at this reader's path (None for a
    /// header reader, a missing path, a non-string or no match).
    pub(crate) fn id_in(&self, doc: &serde_json::Value) -> Option<String> {
        let IdReader::Json { path, pattern } = self else { return None };
        let text = json_path(doc, path)?.as_str()?;
        match pattern {
            None => Some(text.to_owned()),
            Some(re) => {
                let caps = re.captures(text)?;
                caps.get(1).or_else(|| caps.get(0)).map(|m| m.as_str().to_owned())
            }
        }
    }
}

/// The value at a dotted path (`payload.content`; a number indexes an
/// array: `0.room`) of a JSON document.
pub(crate) fn json_path<'v>(doc: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    path.split('.').try_fold(doc, |v, key| match v {
        serde_json::Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => v.get(key),
    })
}

/// Marks standing for the text, id and room in a template filled once, to
/// see where they land (private-use characters: JSON leaves them as they are).
const TEXT_MARK: &str = "\u{E000}";
const ID_MARK: &str = "\u{E001}";
const ROOM_MARK: &str = "\u{E002}";

/// What a subscriber must receive at a delivery's text path, worked out
/// once per declaration: what the harness writes there, with marks for the
/// text, id and room (None: the generated text itself). Found at the path
/// in what is sent, else under the path's last name anywhere in it (a
/// server that wraps what it echoes: `payload.content` ← `content`).
#[derive(Debug, Clone)]
pub(crate) struct ExpectedText(Option<String>);

impl ExpectedText {
    /// `filled`: the send template filled with [`ExpectedText::marks`]
    /// (`room`, `id`, `text`); `path`: where deliveries carry the text.
    pub(crate) fn new(filled: &str, path: Option<&str>) -> Self {
        let Some(path) = path else { return Self(None) };
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(filled) else { return Self(None) };
        let last = path.rsplit('.').next().unwrap_or(path);
        let value = json_path(&doc, path).or_else(|| find_key(&doc, last)).and_then(|v| v.as_str());
        Self(value.filter(|v| *v != TEXT_MARK).map(str::to_owned))
    }

    /// The room, id and text marks to fill a template with for [`Self::new`].
    pub(crate) fn marks() -> (&'static str, &'static str, &'static str) {
        (ROOM_MARK, ID_MARK, TEXT_MARK)
    }

    /// The digest subscribers must get for one send.
    pub(crate) fn digest(&self, room: &str, id: &str, text: &str) -> BodyDigest {
        match &self.0 {
            None => BodyDigest::of(text.as_bytes()),
            Some(t) => BodyDigest::of(t.replace(TEXT_MARK, text).replace(ID_MARK, id).replace(ROOM_MARK, room).as_bytes()),
        }
    }
}

/// What a delivery's room label says: the room it names (`slot`: one of
/// the client's, if it is); `unlabelled_ok`: the protocol declares no
/// room label and the client is in one room, so none is needed.
pub(crate) fn room_label(named: Option<&str>, slot: Option<usize>, unlabelled_ok: bool) -> Label {
    match (named, slot) {
        (None, _) if unlabelled_ok => Label::Ok,
        (None, _) => Label::Missing,
        (Some(_), None) => Label::UnknownRoom,
        (Some(_), Some(_)) => Label::Ok,
    }
}

/// A JSON number, or a string of digits (some servers send seqs as strings).
pub(crate) fn json_u64(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// The first value under `key` in a JSON document, depth first.
fn find_key<'v>(doc: &'v serde_json::Value, key: &str) -> Option<&'v serde_json::Value> {
    match doc {
        serde_json::Value::Object(map) => map.get(key).or_else(|| map.values().find_map(|v| find_key(v, key))),
        serde_json::Value::Array(items) => items.iter().find_map(|v| find_key(v, key)),
        _ => None,
    }
}

/// Fill `{client}`, `{room}` and `{token}` in a credentials template.
pub(crate) fn fill(template: &str, client: u32, room: &str, token: &str) -> String {
    template.replace("{client}", &client.to_string()).replace("{room}", room).replace("{token}", token)
}

/// [`fill`] for a JSON template (a Socket.IO `auth`, a json_frames
/// `hello`): the room and token go in JSON-escaped.
pub(crate) fn fill_json(template: &str, client: u32, room: &str, token: &str) -> String {
    let esc = |s: &str| fill_body("{text}", true, "", s);
    template.replace("{client}", &client.to_string()).replace("{room}", &esc(room)).replace("{token}", &esc(token))
}

/// The STOMP `id` of a room slot's subscription (as stomp.js numbers them).
pub(crate) fn subscription_id(slot: usize) -> String {
    format!("sub-{slot}")
}

/// Whether a SEND body template is JSON (it parses as JSON with its
/// placeholders filled): `{text}` then goes in JSON-escaped.
pub(crate) fn is_json_template(template: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(&template.replace("{id}", "x").replace("{text}", "x")).is_ok()
}

/// Fill a SEND body template: `{id}` as is, `{text}` JSON-escaped in a
/// JSON template, so any text keeps it valid JSON.
pub(crate) fn fill_body(template: &str, json: bool, id: &str, text: &str) -> String {
    let text: Cow<str> = if json {
        let quoted = serde_json::to_string(text).expect("a string always serializes");
        Cow::Owned(quoted[1..quoted.len() - 1].to_owned())
    } else {
        Cow::Borrowed(text)
    };
    template.replace("{id}", id).replace("{text}", &text)
}

impl Wire {
    /// `rooms`: the client's room names, home room first.
    pub(crate) fn new(system: &System, client: u32, rooms: Vec<String>, token: &str) -> Self {
        let home = rooms.first().map_or("", String::as_str);
        let protocol = match system.protocol {
            Protocol::Json => Speaks::Json,
            Protocol::SocketIo => {
                let decl = system.socketio.as_ref().expect("socketio is checked when the scenario is read");
                let auth = decl.auth.as_deref().map(|t| fill_json(t, client, home, token));
                Speaks::SocketIo(Box::new(
                    super::socketio::SocketIo::new(decl, auth, system.guarantees.history == crate::scenario::HistoryGuarantee::Recovery)
                        .expect("id patterns are checked when the scenario is read"),
                ))
            }
            Protocol::JsonFrames => {
                let decl = system.json_frames.as_ref().expect("json_frames is checked when the scenario is read");
                let hello = decl.hello.as_deref().map(|t| fill_json(t, client, home, token));
                Speaks::Frames(Box::new(
                    super::frames::Frames::new(decl, hello).expect("id patterns are checked when the scenario is read"),
                ))
            }
            Protocol::Stomp => {
                let template = &system.stomp.subscribe;
                let destination = match template.split_once("{room}") {
                    Some((before, after)) => (before.to_owned(), after.to_owned()),
                    None => (template.clone(), String::new()),
                };
                Speaks::Stomp(Box::new(Stomp {
                    settings: system.stomp.clone(),
                    connect_headers: system
                        .credentials
                        .connect_headers
                        .iter()
                        .map(|(k, v)| (k.clone(), fill(v, client, home, token)))
                        .collect(),
                    destination,
                    json_body: is_json_template(&system.stomp.body),
                    expected: match &system.stomp.text {
                        TextLocation::Json(path) => {
                            let (_, id, text) = ExpectedText::marks();
                            ExpectedText::new(&fill_body(&system.stomp.body, true, id, text), Some(path))
                        }
                        TextLocation::Body => ExpectedText(None),
                    },
                    send_receipts: system.guarantees.ack != AckGuarantee::None,
                    id: IdReader::new(&system.stomp.id).expect("id patterns are checked when the scenario is read"),
                }))
            }
        };
        Wire { protocol, rooms }
    }

    /// The WebSocket path clients connect to on nodes the harness starts.
    pub(crate) fn path(system: &System) -> &str {
        match (system.protocol, &system.command) {
            (Protocol::Json, Some(command)) => &command.ws_path,
            (Protocol::Json, None) => chatbench_wire::paths::WS,
            (Protocol::Stomp, _) => &system.stomp.path,
            (Protocol::JsonFrames, _) => system.json_frames.as_ref().map_or(chatbench_wire::paths::WS, |f| &f.path),
            (Protocol::SocketIo, _) => system.socketio.as_ref().map_or("/socket.io/", |s| &s.path),
        }
    }

    /// How long after a SUBSCRIBE or UNSUBSCRIBE it counts as done, for a
    /// server that sends no receipts (None: wait for the RECEIPT).
    pub(crate) fn done_after(&self) -> Option<Duration> {
        match &self.protocol {
            Speaks::Stomp(s) => match s.settings.subscribed {
                Subscribed::After(d) => Some(d.0),
                Subscribed::Receipt => None,
            },
            Speaks::Frames(f) => match f.confirm() {
                crate::scenario::FrameConfirm::After(d) => Some(d.0),
                crate::scenario::FrameConfirm::Frame => None,
            },
            Speaks::SocketIo(s) => s.settle(),
            Speaks::Json => None,
        }
    }

    /// Whether the first message is answered before anything else may be
    /// sent (STOMP CONNECTED, Socket.IO CONNECT, a declared `connected`).
    pub(crate) fn hello_answered(&self) -> bool {
        match &self.protocol {
            Speaks::Frames(f) => f.hello_answered(),
            _ => true,
        }
    }

    /// Query parameters the protocol needs on the upgrade URL (Engine.IO's).
    pub(crate) fn upgrade_query(&self) -> &'static [(&'static str, &'static str)] {
        match self.protocol {
            Speaks::SocketIo(_) => &[("EIO", "4"), ("transport", "websocket")],
            _ => &[],
        }
    }

    pub(crate) fn is_stomp(&self) -> bool {
        matches!(self.protocol, Speaks::Stomp(_))
    }

    fn slot_of(&self, room: &str) -> Option<usize> {
        self.rooms.iter().position(|r| r == room)
    }

    /// The first message of a session (STOMP `CONNECT`), if the protocol has one.
    pub(crate) fn hello(&self, host: &str) -> Option<Message> {
        if let Speaks::SocketIo(s) = &self.protocol {
            return Some(Message::text(s.connect()));
        }
        if let Speaks::Frames(f) = &self.protocol {
            return f.hello().map(Message::text);
        }
        let Speaks::Stomp(s) = &self.protocol else { return None };
        let mut f = StompFrame::new(Command::Connect)
            .header("accept-version", "1.2,1.1")
            .header("host", s.settings.host.as_deref().unwrap_or(host))
            .header("heart-beat", format!("{},0", s.settings.heartbeat_ms));
        for (k, v) in &s.connect_headers {
            f = f.header(k.clone(), v.clone());
        }
        Some(stomp_message(&f))
    }

    pub(crate) fn subscribe(&self, slot: usize, after: Option<u64>, attempt: u64) -> Message {
        let room = &self.rooms[slot];
        match &self.protocol {
            Speaks::Json => {
                let mut frame = serde_json::json!({"op": "subscribe", "room": room});
                if let Some(after) = after {
                    frame["after"] = after.into();
                }
                Message::text(frame.to_string())
            }
            Speaks::Frames(f) => Message::text(f.join(room, after)),
            Speaks::SocketIo(s) => Message::text(s.join(slot, attempt, room)),
            Speaks::Stomp(s) => {
                let mut f = StompFrame::new(Command::Subscribe)
                    .header("id", subscription_id(slot))
                    .header("destination", s.settings.subscribe.replace("{room}", room))
                    .header("ack", "auto");
                if s.settings.subscribed == Subscribed::Receipt {
                    f = f.header("receipt", format!("sub-{slot}-{attempt}"));
                }
                if let Some(after) = after {
                    f = f.header("after", after.to_string());
                }
                stomp_message(&f)
            }
        }
    }

    pub(crate) fn unsubscribe(&self, slot: usize, attempt: u64) -> Message {
        match &self.protocol {
            Speaks::Json => Message::text(serde_json::json!({"op": "unsubscribe", "room": self.rooms[slot]}).to_string()),
            // A declaration without `leave` is refused with churn.
            Speaks::Frames(f) => Message::text(f.leave(&self.rooms[slot]).unwrap_or_default()),
            Speaks::SocketIo(s) => Message::text(s.leave(slot, attempt, &self.rooms[slot])),
            Speaks::Stomp(s) => {
                let mut f = StompFrame::new(Command::Unsubscribe).header("id", subscription_id(slot));
                if s.settings.subscribed == Subscribed::Receipt {
                    f = f.header("receipt", format!("unsub-{slot}-{attempt}"));
                }
                stomp_message(&f)
            }
        }
    }

    /// A send of `text` to a room slot, and the digest of what every
    /// subscriber must receive (the text; on STOMP with `text: body`, the
    /// whole SEND body).
    pub(crate) fn send(&self, slot: usize, msg: MsgNo, text: &str) -> (Message, BodyDigest) {
        let room = &self.rooms[slot];
        let id = wire_id(msg);
        match &self.protocol {
            Speaks::Json => (
                Message::text(serde_json::json!({"op": "send", "room": room, "id": id, "body": text}).to_string()),
                BodyDigest::of(text.as_bytes()),
            ),
            Speaks::Frames(f) => {
                let (frame, digest) = f.send(room, msg, text);
                (Message::text(frame), digest)
            }
            Speaks::SocketIo(s) => {
                let (packet, digest) = s.send(msg, room, text);
                (Message::text(packet), digest)
            }
            Speaks::Stomp(s) => {
                let body = fill_body(&s.settings.body, s.json_body, &id, text);
                let digest = match &s.settings.text {
                    TextLocation::Body => BodyDigest::of(body.as_bytes()),
                    TextLocation::Json(_) => s.expected.digest(room, &id, text),
                };
                let mut f = StompFrame::new(Command::Send)
                    .header("destination", s.settings.send.replace("{room}", room))
                    .header("content-type", if s.json_body { "application/json" } else { "text/plain;charset=UTF-8" });
                if s.send_receipts {
                    f = f.header("receipt", id.clone());
                }
                if let IdLocation::Header { header } = &s.settings.id {
                    f = f.header(header.clone(), id);
                }
                (stomp_message(&f.body(body.into_bytes())), digest)
            }
        }
    }

    /// A heart-beat (STOMP: an end-of-line).
    pub(crate) fn heartbeat(&self) -> Option<Message> {
        self.is_stomp().then(|| Message::text("\n"))
    }

    /// What a text or binary server message means.
    pub(crate) fn read(&self, message: &Message) -> Incoming {
        let bytes: &[u8] = match message {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
            _ => return Incoming::Nothing,
        };
        match &self.protocol {
            Speaks::Json => self.read_json(bytes),
            Speaks::Frames(f) => f.read(bytes, |r| self.slot_of(r), self.rooms.len() == 1),
            Speaks::SocketIo(s) => match std::str::from_utf8(bytes) {
                Ok(text) => s.read(text, |r| self.slot_of(r), self.rooms.len() == 1),
                Err(_) => Incoming::Unmatched,
            },
            Speaks::Stomp(s) => self.read_stomp(s, bytes),
        }
    }

    fn read_json(&self, bytes: &[u8]) -> Incoming {
        let Ok(frame) = serde_json::from_slice::<JsonFrame>(bytes) else { return Incoming::Nothing };
        let msg = frame.id.as_deref().and_then(parse_wire_id);
        let slot = frame.room.as_deref().and_then(|r| self.slot_of(r));
        match (&*frame.op, msg, frame.seq) {
            ("ack", Some(msg), Some(seq)) => Incoming::Ack { msg, seq },
            ("msg", msg, seq) => {
                let label = room_label(frame.room.as_deref(), slot, false);
                Incoming::Msg(Delivered {
                    msg,
                    seq: seq.unwrap_or(0),
                    slot: slot.unwrap_or(0),
                    label,
                    body: frame.body.as_deref().map(|b| BodyDigest::of(b.as_bytes())),
                    message_id: 0,
                })
            }
            ("subscribed", _, _) => Incoming::Subscribed { slot, head: frame.head.unwrap_or(0) },
            ("unsubscribed", _, _) => Incoming::Unsubscribed { slot },
            ("error", msg, _) => Incoming::Error { msg, slot, code: frame.code.as_deref().unwrap_or("").to_owned() },
            _ => Incoming::Nothing,
        }
    }

    fn read_stomp(&self, s: &Stomp, bytes: &[u8]) -> Incoming {
        let frame = match chatbench_stomp::parse(bytes) {
            Ok(StompIncoming::Frame(f)) => f,
            Ok(StompIncoming::HeartBeat) | Err(_) => return Incoming::Nothing,
        };
        let seq = || frame.get(&s.settings.seq_header).and_then(|v| v.parse().ok()).unwrap_or(0);
        // `sub-{slot}-{attempt}` / `unsub-{slot}-{attempt}`.
        let receipt_slot = |r: &str, prefix: &str| -> Option<usize> {
            r.strip_prefix(prefix)?.split('-').next()?.parse().ok().filter(|&slot: &usize| slot < self.rooms.len())
        };
        match frame.command {
            Command::Connected => {
                // heart-beat sx,sy: the server wants one from us every sy ms.
                let wants =
                    frame.get("heart-beat").and_then(|h| h.split(',').nth(1)).and_then(|y| y.trim().parse::<u64>().ok()).unwrap_or(0);
                let heartbeat =
                    (wants > 0 && s.settings.heartbeat_ms > 0).then(|| Duration::from_millis(wants.max(s.settings.heartbeat_ms)));
                Incoming::Connected { heartbeat }
            }
            Command::Message => {
                let doc = || frame.body_text().and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok());
                let parsed = match (&s.id, &s.settings.text) {
                    (IdReader::Header(_), TextLocation::Body) => None,
                    _ => doc(),
                };
                let id = match &s.id {
                    IdReader::Header(name) => frame.get(name).map(str::to_owned),
                    json => parsed.as_ref().and_then(|d| json.id_in(d)),
                };
                let body = match &s.settings.text {
                    TextLocation::Body => Some(BodyDigest::of(&frame.body)),
                    TextLocation::Json(path) => {
                        parsed.as_ref().and_then(|d| json_path(d, path)).and_then(|v| v.as_str()).map(|t| BodyDigest::of(t.as_bytes()))
                    }
                };
                let by_destination = frame.get("destination").map(|d| {
                    d.strip_prefix(s.destination.0.as_str())
                        .and_then(|r| r.strip_suffix(s.destination.1.as_str()))
                        .and_then(|r| self.slot_of(r))
                });
                let by_subscription = frame
                    .get("subscription")
                    .map(|id| id.strip_prefix("sub-").and_then(|n| n.parse::<usize>().ok()).filter(|&slot| slot < self.rooms.len()));
                let (slot, label) = match (by_destination, by_subscription) {
                    (Some(Some(d)), Some(Some(sub))) if d == sub => (d, Label::Ok),
                    (Some(Some(d)), Some(_)) => (d, Label::WrongSubscription),
                    (Some(Some(d)), None) => (d, Label::Missing),
                    (Some(None), sub) => (sub.flatten().unwrap_or(0), Label::UnknownRoom),
                    (None, sub) => (sub.flatten().unwrap_or(0), Label::Missing),
                };
                let message_id = frame.get("message-id").map_or(0, |m| id_hash(m.as_bytes()));
                Incoming::Msg(Delivered { msg: id.as_deref().and_then(parse_wire_id), seq: seq(), slot, label, body, message_id })
            }
            Command::Receipt => {
                let receipt = frame.get("receipt-id").unwrap_or("");
                if receipt.starts_with("sub-") {
                    Incoming::Subscribed {
                        slot: receipt_slot(receipt, "sub-"),
                        head: frame.get("head").and_then(|h| h.parse().ok()).unwrap_or(0),
                    }
                } else if receipt.starts_with("unsub-") {
                    Incoming::Unsubscribed { slot: receipt_slot(receipt, "unsub-") }
                } else {
                    match parse_wire_id(receipt) {
                        Some(msg) => Incoming::Ack { msg, seq: seq() },
                        None => Incoming::Nothing,
                    }
                }
            }
            Command::Error => {
                let receipt = frame.get("receipt-id");
                let named = receipt.filter(|r| !r.starts_with("sub-") && !r.starts_with("unsub-")).or(match &s.id {
                    IdReader::Header(name) => frame.get(name),
                    IdReader::Json { .. } => None,
                });
                let slot = receipt.and_then(|r| receipt_slot(r, "sub-").or_else(|| receipt_slot(r, "unsub-")));
                let code = frame.get("message").unwrap_or("").to_owned();
                let detail = frame.body_text().unwrap_or("").trim().to_owned();
                Incoming::Error {
                    msg: named.and_then(parse_wire_id),
                    slot,
                    code: if detail.is_empty() { code } else { format!("{code}: {detail}") },
                }
            }
            _ => Incoming::Nothing,
        }
    }
}

fn stomp_message(f: &StompFrame) -> Message {
    // Every header and body the harness writes is UTF-8 text.
    Message::text(f.encode_text().ok().flatten().expect("harness STOMP frames are UTF-8 and escapable"))
}

/// A protocol-v1 server frame (lenient: unknown fields ignored). Strings
/// borrow from the frame text where they need no unescaping.
#[derive(Debug, serde::Deserialize)]
struct JsonFrame<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    body: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    head: Option<u64>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
}

/// Name-value pairs (headers, query parameters).
pub(crate) type Pairs = Vec<(String, String)>;

/// Upgrade headers and query parameters of one client's credentials.
pub(crate) fn upgrade_credentials(c: &Credentials, client: u32, room: &str, token: &str) -> (Pairs, Pairs) {
    let filled = |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| (k.clone(), fill(v, client, room, token))).collect();
    (filled(&c.headers), filled(&c.query))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::msg_no;

    fn stomp() -> Wire {
        let system = System { protocol: Protocol::Stomp, ..Default::default() };
        Wire::new(&system, 3, vec!["room-1".into(), "room-2".into()], "tok")
    }

    fn json() -> Wire {
        Wire::new(&System::default(), 3, vec!["room-1".into(), "room-2".into()], "tok")
    }

    fn text(m: Message) -> String {
        m.into_text().unwrap().to_string()
    }

    /// The seed's kind of server: no receipts, the id only inside the
    /// echoed `content`, the body the server's own DTO around it.
    fn seed_like() -> Wire {
        let mut system = System { protocol: Protocol::Stomp, ..Default::default() };
        system.guarantees.ack = AckGuarantee::None;
        system.stomp.subscribed = Subscribed::After(crate::scenario::HumanDuration(Duration::from_millis(300)));
        system.stomp.body = r#"{"content":"{text} [{id}]"}"#.into();
        system.stomp.id = IdLocation::Json(JsonId { json: "payload.content".into(), pattern: Some(r"\[(m\d+)\]$".into()) });
        system.stomp.text = TextLocation::Json("payload.content".into());
        Wire::new(&system, 3, vec!["room-1".into()], "")
    }

    #[test]
    fn without_receipts_frames_ask_for_none_and_subscriptions_count_after_the_wait() {
        let w = seed_like();
        assert_eq!(w.done_after(), Some(Duration::from_millis(300)));
        assert!(!text(w.subscribe(0, None, 1)).contains("receipt:"));
        assert!(!text(w.unsubscribe(0, 2)).contains("receipt:"));
        let (send, _) = w.send(0, msg_no(3, 1), "hi");
        let send = text(send);
        assert!(!send.contains("receipt:") && send.contains("content-type:application/json\n"), "{send}");
        assert_eq!(stomp().done_after(), None);
    }

    #[test]
    fn ids_and_text_are_found_in_nested_fields_and_inside_text() {
        let w = seed_like();
        let msg = msg_no(3, 9);
        let (send, digest) = w.send(0, msg, "say \"hi\"");
        let send = text(send);
        let body = send.split("\n\n").nth(1).unwrap().trim_end_matches('\0');
        let sent: serde_json::Value = serde_json::from_str(body).unwrap();
        let content = sent["content"].as_str().unwrap();
        assert_eq!(content, format!("say \"hi\" [{}]", wire_id(msg)));
        // The expected digest is what went into that path, id included.
        assert_eq!(digest, BodyDigest::of(content.as_bytes()));
        let dto = serde_json::json!({"id": "65f0c0ffee", "payload": {"content": content, "groupId": "room-1"}});
        let frame = format!("MESSAGE\ndestination:/sub/room-1\nsubscription:sub-0\nmessage-id:1\n\n{dto}\0");
        let Incoming::Msg(d) = w.read(&Message::text(frame)) else { panic!("not a delivery") };
        assert_eq!((d.msg, d.body), (Some(msg), Some(digest)));
        // A pattern that does not match, or a missing path: no id, so a
        // foreign message (a phantom), never a guess.
        let other = serde_json::json!({"payload": {"content": "say hi"}});
        let frame = format!("MESSAGE\ndestination:/sub/room-1\nsubscription:sub-0\nmessage-id:2\n\n{other}\0");
        let Incoming::Msg(d) = w.read(&Message::text(frame)) else { panic!("not a delivery") };
        assert_eq!(d.msg, None);
    }

    /// One rule for every adapter: what the harness wrote at the text
    /// path (id and room included), else under the path's last name
    /// anywhere in the send, else the text; worked out once, not per send.
    #[test]
    fn the_expected_text_is_what_was_written_where_deliveries_carry_it() {
        let (room, id, text) = ExpectedText::marks();
        let with = |template: &str, path: Option<&str>| {
            ExpectedText::new(&crate::client::frames::fill(template, room, id, text), path).digest("r1", "m7", "hi \"x\"")
        };
        let of = |s: &str| BodyDigest::of(s.as_bytes());
        assert_eq!(with(r#"{"c":"{text}"}"#, Some("c")), of("hi \"x\""));
        assert_eq!(with(r#"{"c":"{room}: {text} [{id}]"}"#, Some("c")), of("r1: hi \"x\" [m7]"));
        assert_eq!(with(r#"{"c":"{text} [{id}]"}"#, Some("payload.c")), of("hi \"x\" [m7]"), "a server that wraps it");
        assert_eq!(with(r#"[{"m":{"c":"<{text}>"}}]"#, Some("0.m.c")), of("<hi \"x\">"), "Socket.IO arguments");
        assert_eq!(with(r#"{"c":"{text}"}"#, None), of("hi \"x\""), "no path: the text");
        assert_eq!(with("not json {text}", Some("c")), of("hi \"x\""));
    }

    #[test]
    fn json_paths_walk_nested_objects_only() {
        let v = serde_json::json!({"a": {"b": {"c": "x"}}, "n": 1, "l": [{"k": "y"}]});
        assert_eq!(json_path(&v, "a.b.c"), Some(&serde_json::json!("x")));
        assert_eq!(json_path(&v, "a.x"), None);
        assert_eq!(json_path(&v, "n.b"), None);
        assert_eq!(json_path(&v, "l.0.k"), Some(&serde_json::json!("y")), "a number indexes an array");
        assert_eq!(json_path(&v, "l.1.k"), None);
        let reader = IdReader::json(&JsonId { json: "n".into(), pattern: None }).unwrap();
        assert_eq!(reader.id_in(&v), None, "a number is not an id");
    }

    #[test]
    fn stomp_frames_carry_receipts_ids_per_room_and_the_message_id() {
        let w = stomp();
        let sub = text(w.subscribe(1, Some(7), 2));
        assert!(
            sub.starts_with("SUBSCRIBE\n")
                && sub.contains("destination:/sub/room-2\n")
                && sub.contains("id:sub-1\n")
                && sub.contains("receipt:sub-1-2\n"),
            "{sub}"
        );
        assert!(sub.contains("after:7\n"), "{sub}");
        let unsub = text(w.unsubscribe(1, 3));
        assert!(unsub.starts_with("UNSUBSCRIBE\n") && unsub.contains("id:sub-1\n") && unsub.contains("receipt:unsub-1-3\n"), "{unsub}");
        let msg = msg_no(3, 9);
        let (send, digest) = w.send(0, msg, "hello");
        let send = text(send);
        let id = wire_id(msg);
        assert!(
            send.contains(&format!("msg-id:{id}\n")) && send.contains(&format!("receipt:{id}\n")) && send.ends_with("hello\0"),
            "{send}"
        );
        assert_eq!(digest, BodyDigest::of(b"hello"));
    }

    #[test]
    fn stomp_server_frames_mean_what_protocol_v1_frames_mean() {
        let w = stomp();
        let msg = msg_no(3, 9);
        let id = wire_id(msg);
        let read = |s: &str| w.read(&Message::text(s.to_owned()));
        assert_eq!(read(&format!("RECEIPT\nreceipt-id:{id}\nseq:12\n\n\0")), Incoming::Ack { msg, seq: 12 });
        assert_eq!(read("RECEIPT\nreceipt-id:sub-1-0\nhead:4\n\n\0"), Incoming::Subscribed { slot: Some(1), head: 4 });
        assert_eq!(read("RECEIPT\nreceipt-id:unsub-0-3\n\n\0"), Incoming::Unsubscribed { slot: Some(0) });
        let message = |dest: &str, sub: &str| {
            read(&format!("MESSAGE\ndestination:{dest}\nsubscription:{sub}\nmessage-id:x\nmsg-id:{id}\nseq:13\n\nhello\0"))
        };
        let delivered = |slot, label| {
            Incoming::Msg(Delivered {
                msg: Some(msg),
                seq: 13,
                slot,
                label,
                body: Some(BodyDigest::of(b"hello")),
                message_id: id_hash(b"x"),
            })
        };
        assert_eq!(message("/sub/room-2", "sub-1"), delivered(1, Label::Ok));
        assert_eq!(message("/sub/room-2", "sub-0"), delivered(1, Label::WrongSubscription));
        assert_eq!(message("/sub/room-2", "0"), delivered(1, Label::WrongSubscription));
        assert_eq!(message("/sub/room-9", "sub-1"), delivered(1, Label::UnknownRoom));
        assert_eq!(
            read(&format!("MESSAGE\nmessage-id:x\nmsg-id:{id}\nseq:13\n\nhello\0")),
            delivered(0, Label::Missing),
            "no destination, no subscription"
        );
        assert_eq!(
            read(&format!("ERROR\nmessage:store_unavailable\nmsg-id:{id}\n\ndown\0")),
            Incoming::Error { msg: Some(msg), slot: None, code: "store_unavailable: down".into() }
        );
        assert_eq!(
            read("ERROR\nmessage:bad_room\nreceipt-id:sub-1-4\n\n\0"),
            Incoming::Error { msg: None, slot: Some(1), code: "bad_room".into() }
        );
        assert_eq!(
            read("CONNECTED\nversion:1.2\nheart-beat:0,20000\n\n\0"),
            Incoming::Connected { heartbeat: Some(Duration::from_secs(20)) }
        );
        assert_eq!(read("\n"), Incoming::Nothing);
    }

    #[test]
    fn json_deliveries_carry_the_room_label_and_the_body_digest() {
        let w = json();
        let msg = msg_no(3, 9);
        let read = |s: String| w.read(&Message::text(s));
        let frame =
            |room: &str| format!(r#"{{"op":"msg","room":"{room}","seq":4,"id":"{}","body":"a \"b\"\nc","node":"n0"}}"#, wire_id(msg));
        let Incoming::Msg(d) = read(frame("room-2")) else { panic!("a msg frame") };
        assert_eq!((d.slot, d.label, d.body), (1, Label::Ok, Some(BodyDigest::of("a \"b\"\nc".as_bytes()))));
        let Incoming::Msg(d) = read(frame("room-7")) else { panic!("a msg frame") };
        assert_eq!((d.slot, d.label), (0, Label::UnknownRoom));
        assert_eq!(read(r#"{"op":"subscribed","room":"room-2","head":3}"#.into()), Incoming::Subscribed { slot: Some(1), head: 3 });
        assert_eq!(read(r#"{"op":"unsubscribed","room":"room-1"}"#.into()), Incoming::Unsubscribed { slot: Some(0) });
    }

    #[test]
    fn json_body_templates_get_escaped_text_and_others_raw_text() {
        let text = "say \"hi\"\\\n";
        let template = r#"{"msgId":"{id}","content":"{text}"}"#;
        assert!(is_json_template(template));
        let filled = fill_body(template, true, "m1", text);
        let v: serde_json::Value = serde_json::from_str(&filled).unwrap();
        assert_eq!(v["content"], text);
        assert!(!is_json_template("{text}") && !is_json_template("{text} ({id})"));
        assert_eq!(fill_body("{text}", false, "m1", text), text, "a bare {{text}} template is the text itself");
    }

    #[test]
    fn credentials_are_filled_per_client() {
        let mut c = Credentials::default();
        c.headers.insert("Authorization".into(), "Bearer {token}".into());
        c.query.insert("user".into(), "u{client}-{room}".into());
        let (headers, query) = upgrade_credentials(&c, 5, "r", "T");
        assert_eq!(headers, vec![("Authorization".to_owned(), "Bearer T".to_owned())]);
        assert_eq!(query, vec![("user".to_owned(), "u5-r".to_owned())]);
    }
}
