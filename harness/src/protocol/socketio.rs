//! `protocol: socketio`: Socket.IO v5 packets over Engine.IO v4 on a
//! WebSocket (no HTTP long-polling), as the official clients speak it with
//! `transports: ["websocket"]`. Written here (about 200 lines, with its own
//! tests) rather than taken from `rust_socketio`, whose client owns its
//! transport and event loop: the harness needs the packets inside its own
//! connection loop (reconnects, resends, churn are the same for every
//! protocol).
//!
//! - Engine.IO: `0{…}` open (server), `2` ping (server) answered by `3`
//!   pong, `1` close, `4` message carrying a Socket.IO packet.
//! - Socket.IO: `0` CONNECT (client `40/ns,{auth}`; server `40{sid}`),
//!   `4` CONNECT_ERROR, `2` EVENT `42/ns,ID["event",args…]`, `3` ACK
//!   `43/ns,ID[args…]`, `1` DISCONNECT. Binary packets (5, 6) are not
//!   chat messages here and are ignored.
//!
//! Acknowledgement ids say what they acknowledge: a send's id is its
//! message number; joins and leaves are numbered above 2^52 by room slot
//! (all below 2^53, exact in JavaScript).

use super::incoming::{Delivered, Incoming, Rooms, room_label};
use super::json_doc::{IdReader, JsonId, json_path, json_u64};
use super::template::{ExpectedText, check_is_json, fill, fill_json, id_findable};
use super::{Declaration, Demands, Problem, Promises, Speak, Who};
use crate::duration::HumanDuration;
use crate::message::{BodyDigest, MsgNo, parse_wire_id, wire_id};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// A Socket.IO server's events (Socket.IO v5 packets over Engine.IO v4
/// on a WebSocket). Arguments are JSON templates: `{room}`, `{id}`,
/// `{text}` written JSON-escaped (`'"{room}"'` is a bare string argument).
/// Delivery paths are dotted paths into the event's argument list
/// (`0.room`: the first argument's `room`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SocketIoSettings {
    /// Engine.IO path on nodes the harness starts (`?EIO=4&transport=websocket` is added).
    #[serde(default = "default_socketio_path")]
    pub path: String,
    /// The namespace clients connect to.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The CONNECT packet's auth payload, a JSON template taking
    /// `{token}`, `{client}` and `{room}` (none: no payload).
    #[serde(default)]
    pub auth: Option<String>,
    /// Joining a room, e.g. `{event: join, args: ['"{room}"']}`.
    pub join: SocketIoEmit,
    /// Leaving a room (needed for `churn`).
    #[serde(default)]
    pub leave: Option<SocketIoEmit>,
    /// Sending a message: an argument must carry `{id}`. With `ack: true`
    /// the server's acknowledgement is the send's ack (declare
    /// `guarantees.ack: receipt`); without, declare `ack: none`.
    pub send: SocketIoEmit,
    /// How messages arrive.
    pub delivery: SocketIoDelivery,
    /// For a join or leave emitted without `ack`: it counts as done this
    /// long after it was sent (default 300ms).
    #[serde(default = "default_socketio_settle")]
    pub settle: HumanDuration,
}

fn default_socketio_path() -> String {
    "/socket.io/".into()
}
fn default_namespace() -> String {
    "/".into()
}
fn default_socketio_settle() -> HumanDuration {
    HumanDuration(Duration::from_millis(300))
}

/// An event the client emits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SocketIoEmit {
    pub event: String,
    /// Arguments, each a JSON template.
    #[serde(default)]
    pub args: Vec<String>,
    /// Ask for an acknowledgement (the server calls the callback).
    #[serde(default = "yes")]
    pub ack: bool,
    /// With `ack`: a dotted path into the acknowledgement's arguments that
    /// is present (and not false or null) when the server refused, e.g.
    /// `0.error`.
    #[serde(default)]
    pub error: Option<String>,
}

fn yes() -> bool {
    true
}

/// The event that carries chat messages to clients.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SocketIoDelivery {
    pub event: String,
    /// Path of the room's name in the arguments (e.g. `0.room`).
    #[serde(default)]
    pub room: Option<String>,
    /// Where the harness's id is (e.g. `{json: 0.id}`).
    pub id: JsonId,
    /// Path of a per-room `seq`, if the server has one.
    #[serde(default)]
    pub seq: Option<String>,
    /// Path of the text, compared with what was sent there.
    #[serde(default)]
    pub text: Option<String>,
}

impl Declaration for SocketIoSettings {
    fn path(&self) -> &str {
        &self.path
    }

    fn validate(&self, asked: &Demands) -> Result<(), Problem> {
        let sio = self;
        let emits = [("join", Some(&sio.join)), ("leave", sio.leave.as_ref()), ("send", Some(&sio.send))];
        for (name, emit) in emits {
            let Some(emit) = emit else { continue };
            if emit.event.is_empty() {
                return Err(Problem::from(format!("{name}.event must name an event")));
            }
            for (i, t) in emit.args.iter().enumerate() {
                check_is_json(&format!("{name}.args[{i}]"), &fill(t, "room-1", "m1", "hi"))?;
            }
        }
        if let Some(auth) = &sio.auth {
            check_is_json("auth", &fill_json(auth, 0, "room-1", "token"))?;
        }
        if !sio.path.starts_with('/') {
            return Err(Problem::from(format!("path {:?} must start with /", sio.path)));
        }
        if !sio.namespace.starts_with('/') {
            return Err(Problem::from(format!("namespace {:?} must start with /", sio.namespace)));
        }
        let args = format!("[{}]", sio.send.args.join(","));
        id_findable(&sio.delivery.id, &args).map_err(|p| Problem::from(format!("delivery.id: {}", p.why)))?;
        let no_acks = !asked.acks;
        if sio.send.ack == no_acks {
            return Err(if no_acks {
                "send.ack asks for acknowledgements, but guarantees.ack is none: declare ack: receipt, or send.ack: false".into()
            } else {
                "send.ack is false: the server never acknowledges a send, so declare guarantees.ack: none".into()
            });
        }
        if let Some(leave) = &sio.leave
            && leave.ack != sio.join.ack
        {
            return Err("join.ack and leave.ack must agree (both acknowledged, or both settled after `settle`)".into());
        }
        if asked.churn && sio.leave.is_none() {
            return Err("workload.churn needs a leave event".into());
        }
        if asked.seq {
            return Err("Socket.IO rooms have no resumable per-room seq: declare guarantees.order: total, per_sender or none".into());
        }
        if sio.settle.0.is_zero() {
            return Err("settle must be longer than 0s".into());
        }
        if asked.reference_server {
            return Err("the reference server does not speak Socket.IO: give system.command (or system.external)".into());
        }
        if sio.delivery.room.is_none() && asked.rooms_per_client > 1 {
            return Err(
                "deliveries that do not name their room (no delivery.room) need one room per client (workload.rooms_per_client: 1)".into(),
            );
        }
        if asked.reference_history {
            return Err("a Socket.IO server keeps no history in the reference layout: declare guarantees.history: none, or recovery (connection state recovery)".into());
        }
        Ok(())
    }

    fn speaker(&self, who: &Who<'_>, promises: Promises, rooms: &Rooms) -> Box<dyn Speak> {
        let auth = self.auth.as_deref().map(|t| fill_json(t, who.client, rooms.home(), who.token));
        Box::new(SocketIo::new(self, auth, promises.recovery).expect("id patterns are checked when the scenario is read"))
    }
}

impl Speak for SocketIo {
    fn hello(&self, _: &str) -> Option<Message> {
        Some(Message::text(self.connect()))
    }

    fn upgrade_query(&self) -> &'static [(&'static str, &'static str)] {
        &[("EIO", "4"), ("transport", "websocket")]
    }

    fn join(&self, rooms: &Rooms, slot: usize, _: Option<u64>, attempt: u64) -> Message {
        Message::text(self.join_packet(slot, attempt, rooms.name(slot)))
    }

    fn leave(&self, rooms: &Rooms, slot: usize, attempt: u64) -> Message {
        Message::text(self.leave_packet(slot, attempt, rooms.name(slot)))
    }

    fn send(&self, rooms: &Rooms, slot: usize, msg: MsgNo, text: &str) -> (Message, BodyDigest) {
        let (packet, digest) = self.send_packet(msg, rooms.name(slot), text);
        (Message::text(packet), digest)
    }

    fn done_after(&self) -> Option<Duration> {
        self.settle()
    }

    fn read(&self, rooms: &Rooms, bytes: &[u8], out: &mut Vec<Incoming>) {
        out.push(self.meaning(rooms, bytes));
    }
}

impl SocketIo {
    fn meaning(&self, rooms: &Rooms, bytes: &[u8]) -> Incoming {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.read_packet(text, rooms),
            Err(_) => Incoming::Unmatched,
        }
    }
}

const JOIN_BASE: u64 = 1 << 52;
const LEAVE_BASE: u64 = JOIN_BASE + (1 << 51);
const SLOTS: u64 = 1 << 16;

#[derive(Debug)]
struct SocketIo {
    decl: SocketIoSettings,
    /// `/ns,` for a namespace other than `/`.
    ns: String,
    /// The CONNECT payload, filled for this client.
    auth: Option<String>,
    delivery_id: IdReader,
    /// What subscribers must get at the delivery's `text` path.
    expected: ExpectedText,
    /// Connection state recovery (`history: recovery`): the session's
    /// private id from the server's CONNECT answer, and the offset of the
    /// last broadcast received, sent back on the next CONNECT.
    recovery: Option<std::sync::Mutex<Recovery>>,
}

#[derive(Debug, Default, Clone)]
struct Recovery {
    pid: Option<String>,
    offset: Option<String>,
}

impl Clone for SocketIo {
    fn clone(&self) -> Self {
        Self {
            decl: self.decl.clone(),
            ns: self.ns.clone(),
            auth: self.auth.clone(),
            delivery_id: self.delivery_id.clone(),
            expected: self.expected.clone(),
            recovery: self.recovery.as_ref().map(|r| std::sync::Mutex::new(r.lock().expect("recovery lock").clone())),
        }
    }
}

impl SocketIo {
    /// Err: the delivery id pattern does not compile (refused when the scenario is read).
    /// `recovery`: the system declares connection state recovery.
    fn new(decl: &SocketIoSettings, auth: Option<String>, recovery: bool) -> Result<Self, regex::Error> {
        let ns = if decl.namespace == "/" || decl.namespace.is_empty() { String::new() } else { format!("{},", decl.namespace) };
        let (room, id, text) = ExpectedText::marks();
        let sent = format!("[{}]", decl.send.args.iter().map(|t| fill(t, room, id, text)).collect::<Vec<_>>().join(","));
        Ok(Self {
            delivery_id: IdReader::json(&decl.delivery.id)?,
            expected: ExpectedText::new(&sent, decl.delivery.text.as_deref()),
            decl: decl.clone(),
            ns,
            auth,
            recovery: recovery.then(Default::default),
        })
    }

    /// The client's CONNECT to its namespace (after a disconnection, with
    /// the `pid` and `offset` that recover its session).
    fn connect(&self) -> String {
        let resume = self.recovery.as_ref().map(|r| r.lock().expect("recovery lock").clone()).filter(|r| r.pid.is_some());
        let auth = match resume {
            Some(r) => {
                let mut payload = self
                    .auth
                    .as_deref()
                    .and_then(|a| serde_json::from_str::<serde_json::Value>(a).ok())
                    .filter(|v| v.is_object())
                    .unwrap_or_else(|| serde_json::json!({}));
                payload["pid"] = r.pid.into();
                if let Some(offset) = r.offset {
                    payload["offset"] = offset.into();
                }
                Some(payload.to_string())
            }
            None => self.auth.clone(),
        };
        format!("40{}{}", self.ns, auth.as_deref().unwrap_or(""))
    }

    /// How long a join or leave takes to count as done when they are
    /// emitted without `ack` (None: their acknowledgement says; the
    /// scenario check makes join and leave agree).
    fn settle(&self) -> Option<std::time::Duration> {
        (!self.decl.join.ack).then_some(self.decl.settle.0)
    }

    fn join_packet(&self, slot: usize, attempt: u64, room: &str) -> String {
        let id = self.decl.join.ack.then(|| JOIN_BASE + slot as u64 * SLOTS + attempt % SLOTS);
        self.event(&self.decl.join.event, &self.decl.join.args, id, room, "", "")
    }

    fn leave_packet(&self, slot: usize, attempt: u64, room: &str) -> String {
        let Some(leave) = &self.decl.leave else { return String::new() };
        let id = leave.ack.then(|| LEAVE_BASE + slot as u64 * SLOTS + attempt % SLOTS);
        self.event(&leave.event, &leave.args, id, room, "", "")
    }

    /// The send event, and the digest of the text subscribers must get.
    fn send_packet(&self, msg: MsgNo, room: &str, text: &str) -> (String, BodyDigest) {
        let send = &self.decl.send;
        let id = wire_id(msg);
        let packet = self.event(&send.event, &send.args, send.ack.then_some(msg), room, &id, text);
        (packet, self.expected.digest(room, &id, text))
    }

    fn event(&self, event: &str, args: &[String], ack: Option<u64>, room: &str, id: &str, text: &str) -> String {
        let mut list = vec![serde_json::Value::String(event.to_owned()).to_string()];
        list.extend(args.iter().map(|t| fill(t, room, id, text)));
        format!("42{}{}[{}]", self.ns, ack.map(|a| a.to_string()).unwrap_or_default(), list.join(","))
    }

    /// What an Engine.IO packet means.
    fn read_packet(&self, text: &str, rooms: &Rooms) -> Incoming {
        let mut chars = text.chars();
        match chars.next() {
            Some('2') => return Incoming::Reply(Message::text(format!("3{}", chars.as_str()))),
            Some('4') => {}
            // Open, close, pong, noop, upgrade: nothing for the client.
            _ => return Incoming::Nothing,
        }
        let Some(packet) = Packet::parse(chars.as_str()) else { return Incoming::Unmatched };
        if packet.ns != self.ns.trim_end_matches(',') && !(packet.ns.is_empty() && self.ns.is_empty()) {
            return Incoming::Nothing;
        }
        match packet.kind {
            '0' => {
                if let (Some(r), Some(pid)) = (&self.recovery, packet.data.as_ref().and_then(|d| d.get("pid")).and_then(|p| p.as_str())) {
                    r.lock().expect("recovery lock").pid = Some(pid.to_owned());
                }
                Incoming::Connected { heartbeat: None }
            }
            '4' => {
                let why = packet.data.as_ref().and_then(|d| d.get("message")).and_then(|m| m.as_str()).unwrap_or("refused");
                Incoming::Error { msg: None, slot: None, code: format!("CONNECT_ERROR {why}") }
            }
            '1' => Incoming::Error { msg: None, slot: None, code: "the server disconnected the namespace".into() },
            '3' => self.read_ack(packet.ack, packet.data),
            '2' => self.read_event(packet.data, rooms),
            _ => Incoming::Nothing,
        }
    }

    fn read_ack(&self, ack: Option<u64>, data: Option<serde_json::Value>) -> Incoming {
        let Some(id) = ack else { return Incoming::Nothing };
        let args = data.unwrap_or(serde_json::Value::Array(Vec::new()));
        let refused = |path: &Option<String>| {
            path.as_deref().and_then(|p| json_path(&args, p)).is_some_and(|v| !v.is_null() && v != &serde_json::Value::Bool(false))
        };
        let code = || args.to_string().chars().take(200).collect::<String>();
        if id >= LEAVE_BASE {
            let slot = Some(((id - LEAVE_BASE) / SLOTS) as usize);
            let leave = self.decl.leave.as_ref();
            return if refused(&leave.and_then(|l| l.error.clone())) {
                Incoming::Error { msg: None, slot, code: code() }
            } else {
                Incoming::Unsubscribed { slot }
            };
        }
        if id >= JOIN_BASE {
            let slot = Some(((id - JOIN_BASE) / SLOTS) as usize);
            return if refused(&self.decl.join.error) {
                Incoming::Error { msg: None, slot, code: code() }
            } else {
                Incoming::Subscribed { slot, head: 0 }
            };
        }
        if refused(&self.decl.send.error) {
            Incoming::Error { msg: Some(id), slot: None, code: code() }
        } else {
            Incoming::Ack { msg: id, seq: 0 }
        }
    }

    fn read_event(&self, data: Option<serde_json::Value>, rooms: &Rooms) -> Incoming {
        let Some(serde_json::Value::Array(mut list)) = data else { return Incoming::Unmatched };
        if list.first().and_then(|e| e.as_str()) != Some(self.decl.delivery.event.as_str()) {
            return Incoming::Unmatched;
        }
        let args = list.split_off(1);
        // With recovery, a broadcast's last argument is its offset.
        if let (Some(r), Some(serde_json::Value::String(offset))) = (&self.recovery, args.last())
            && args.len() > 1
        {
            r.lock().expect("recovery lock").offset = Some(offset.clone());
        }
        let args = serde_json::Value::Array(args);
        let d = &self.decl.delivery;
        let str_at = |p: &Option<String>| p.as_deref().and_then(|p| json_path(&args, p)).and_then(|v| v.as_str());
        let room = str_at(&d.room);
        let slot = room.and_then(|r| rooms.slot_of(r));
        let label = room_label(room, slot, d.room.is_none() && rooms.single());
        let seq = d.seq.as_deref().and_then(|p| json_path(&args, p)).and_then(json_u64);
        Incoming::Msg(Delivered {
            msg: self.delivery_id.id_in(&args).as_deref().and_then(parse_wire_id),
            seq: seq.unwrap_or(0),
            slot: slot.unwrap_or(0),
            label,
            body: str_at(&d.text).map(|t| BodyDigest::of(t.as_bytes())),
            message_id: 0,
        })
    }
}

/// A Socket.IO packet: type, namespace (`/chat`, or empty for `/`), ack
/// id, JSON data.
#[derive(Debug, PartialEq)]
struct Packet {
    kind: char,
    ns: String,
    ack: Option<u64>,
    data: Option<serde_json::Value>,
}

impl Packet {
    fn parse(s: &str) -> Option<Packet> {
        let mut chars = s.chars();
        let kind = chars.next()?;
        let mut rest = chars.as_str();
        // Binary packets carry an attachment count first: `51-…`.
        if matches!(kind, '5' | '6') {
            return Some(Packet { kind, ns: String::new(), ack: None, data: None });
        }
        let mut ns = String::new();
        if rest.starts_with('/') {
            let end = rest.find(',').unwrap_or(rest.len());
            ns = rest[..end].to_owned();
            rest = rest.get(end + 1..).unwrap_or("");
        }
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let ack = if digits > 0 { Some(rest[..digits].parse().ok()?) } else { None };
        let body = &rest[digits..];
        let data = if body.is_empty() { None } else { Some(serde_json::from_str(body).ok()?) };
        Some(Packet { kind, ns, ack, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Label, msg_no};

    fn decl(ns: &str) -> SocketIoSettings {
        serde_saphyr::from_str(&format!(
            r#"
namespace: {ns}
join: {{event: join, args: ['"{{room}}"']}}
leave: {{event: leave, args: ['"{{room}}"']}}
send: {{event: chat, args: ['{{"room":"{{room}}","id":"{{id}}","text":"{{text}}"}}'], error: 0.error}}
delivery: {{event: chat, room: 0.room, id: {{json: 0.id}}, text: 0.text}}
"#
        ))
        .unwrap()
    }

    fn rooms() -> Rooms {
        Rooms::new(vec!["room-1".into(), "room-2".into()])
    }

    /// Connection state recovery: the pid from CONNECT's answer and the
    /// last broadcast's offset go back on the next CONNECT, beside the auth.
    #[test]
    fn a_reconnect_carries_the_session_pid_and_last_offset() {
        let s = SocketIo::new(&decl("/"), Some(r#"{"token":"t"}"#.into()), true).unwrap();
        assert_eq!(s.connect(), r#"40{"token":"t"}"#, "nothing to recover yet");
        assert_eq!(s.read_packet(r#"40{"sid":"s1","pid":"p1"}"#, &rooms()), Incoming::Connected { heartbeat: None });
        let msg = msg_no(2, 5);
        let event = format!(r#"42["chat",{{"room":"room-2","id":"{}","text":"hey"}},"65f0aa"]"#, wire_id(msg));
        let Incoming::Msg(d) = s.read_packet(&event, &rooms()) else { panic!("a delivery") };
        assert_eq!(d.msg, Some(msg), "the offset argument does not disturb the paths");
        let again: serde_json::Value = serde_json::from_str(&s.connect()[2..]).unwrap();
        assert_eq!(again, serde_json::json!({"token": "t", "pid": "p1", "offset": "65f0aa"}));
    }

    #[test]
    fn packets_parse_with_and_without_namespace_ack_and_data() {
        assert_eq!(
            Packet::parse("0{\"sid\":\"x\"}"),
            Some(Packet { kind: '0', ns: String::new(), ack: None, data: Some(serde_json::json!({"sid":"x"})) })
        );
        assert_eq!(
            Packet::parse("3/chat,17[1]"),
            Some(Packet { kind: '3', ns: "/chat".into(), ack: Some(17), data: Some(serde_json::json!([1])) })
        );
        assert_eq!(Packet::parse("2[\"a\"]").map(|p| p.ack), Some(None));
        assert_eq!(Packet::parse("1/chat,"), Some(Packet { kind: '1', ns: "/chat".into(), ack: None, data: None }));
        assert_eq!(Packet::parse("2[broken"), None);
        assert_eq!(Packet::parse(""), None);
        assert_eq!(Packet::parse("299999999999999999999999[1]"), None, "an ack id past u64 is malformed, not a panic");
    }

    #[test]
    fn the_client_side_speaks_what_socket_io_clients_send() {
        let s = SocketIo::new(&decl("/"), Some(r#"{"token":"t"}"#.into()), false).unwrap();
        assert_eq!(s.connect(), r#"40{"token":"t"}"#);
        assert_eq!(s.join_packet(1, 3, "room-2"), format!(r#"42{}["join","room-2"]"#, JOIN_BASE + SLOTS + 3));
        let msg = msg_no(2, 5);
        let (packet, digest) = s.send_packet(msg, "room-1", "say \"hi\"");
        assert_eq!(packet, format!(r#"42{msg}["chat",{{"room":"room-1","id":"{}","text":"say \"hi\""}}]"#, wire_id(msg)));
        assert_eq!(digest, BodyDigest::of(b"say \"hi\""));
        let chat = SocketIo::new(&decl("/chat"), None, false).unwrap();
        assert_eq!(chat.connect(), "40/chat,");
        assert!(chat.join_packet(0, 0, "room-1").starts_with("42/chat,4503599627370496[\"join\""));
    }

    #[test]
    fn server_packets_mean_what_the_other_protocols_mean() {
        let s = SocketIo::new(&decl("/"), None, false).unwrap();
        let read = |t: &str| s.read_packet(t, &rooms());
        let msg = msg_no(2, 5);
        assert_eq!(read("2"), Incoming::Reply(Message::text("3")), "a ping is answered");
        assert_eq!(read("0{\"sid\":\"a\",\"pingInterval\":25000}"), Incoming::Nothing);
        assert_eq!(read("40{\"sid\":\"b\"}"), Incoming::Connected { heartbeat: None });
        assert!(matches!(read("44{\"message\":\"Not authorized\"}"), Incoming::Error { code, .. } if code.contains("Not authorized")));
        assert_eq!(read(&format!("43{msg}[{{\"ok\":true}}]")), Incoming::Ack { msg, seq: 0 });
        assert_eq!(
            read(&format!("43{msg}[{{\"error\":\"full\"}}]")),
            Incoming::Error { msg: Some(msg), slot: None, code: r#"[{"error":"full"}]"#.into() }
        );
        assert_eq!(read(&format!("43{}[{{\"ok\":true}}]", JOIN_BASE + SLOTS + 9)), Incoming::Subscribed { slot: Some(1), head: 0 });
        assert_eq!(read(&format!("43{}[]", LEAVE_BASE)), Incoming::Unsubscribed { slot: Some(0) });
        let event = format!(r#"42["chat",{{"room":"room-2","id":"{}","text":"hey"}}]"#, wire_id(msg));
        assert_eq!(
            read(&event),
            Incoming::Msg(Delivered {
                msg: Some(msg),
                seq: 0,
                slot: 1,
                label: Label::Ok,
                body: Some(BodyDigest::of(b"hey")),
                message_id: 0
            })
        );
        assert_eq!(read(r#"42["typing","room-1"]"#), Incoming::Unmatched, "another event is counted, not taken for a message");
        assert_eq!(read("42/other,[\"chat\",{}]"), Incoming::Nothing, "another namespace's packets are not ours");
        assert_eq!(read("4garbage"), Incoming::Unmatched);
    }
}
