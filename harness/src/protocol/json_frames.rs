//! `protocol: json_frames`: a team's own JSON-over-WebSocket protocol,
//! declared in the scenario (see [`JsonFrames`]) instead of written in
//! Rust. Outgoing frames are filled templates; incoming frames are read by
//! the first matcher whose `match` holds, which says what the frame means
//! and where its room, id, seq and text are.

use super::incoming::{Delivered, Incoming, Rooms, room_label};
use super::json_doc::{IdReader, JsonId, json_path, json_u64};
use super::template::{ExpectedText, check_is_json, fill, fill_json, id_findable};
use super::{Declaration, Demands, Problem, Promises, Speak, Who};
use crate::duration::HumanDuration;
use crate::message::{BodyDigest, MsgNo, parse_wire_id, wire_id};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// A JSON-over-WebSocket protocol declared in YAML (`protocol:
/// json_frames`). Templates are JSON with placeholders: `{room}`, `{id}`,
/// `{text}` (written JSON-escaped), `{after}` (a number). Matchers say
/// which server frames are acks, deliveries, join and leave confirmations
/// and errors, and at which (dotted) JSON paths they carry the room, id,
/// seq and text. The first matcher whose `match` holds wins; a frame no
/// matcher takes is counted and ignored.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonFrames {
    /// WebSocket path on nodes the harness starts.
    #[serde(default = "default_path")]
    pub path: String,
    /// A first frame on every connection, e.g. an authentication
    /// `'{"type":"auth","token":"{token}"}'` (`{token}`, `{client}`, and
    /// `{room}`: the home room). With an `is: connected` matcher the client
    /// waits for that answer before joining (an `error` frame first is a
    /// refusal); without one it goes on at once.
    #[serde(default)]
    pub hello: Option<String>,
    /// Join a room, e.g. `'{"op":"subscribe","room":"{room}"}'`.
    pub join: String,
    /// Join resuming after a `seq` (`{after}`), for systems with `seq`.
    #[serde(default)]
    pub join_after: Option<String>,
    /// Leave a room (needed for `churn`).
    #[serde(default)]
    pub leave: Option<String>,
    /// Send a message: must carry `{id}` and `{text}`.
    pub send: String,
    /// When a join or leave counts as done: `frame` (a `joined` / `left`
    /// frame answers it, the default) or `{after: DURATION}`.
    #[serde(default)]
    pub confirmed: FrameConfirm,
    /// When a leave counts as done, where it differs from a join (some
    /// frameworks confirm a join and never a leave); default: `confirmed`.
    #[serde(default)]
    pub leave_confirmed: Option<FrameConfirm>,
    /// WebSocket subprotocols the client offers on the upgrade
    /// (`Sec-WebSocket-Protocol`), e.g. `[actioncable-v1-json]`.
    #[serde(default)]
    pub subprotocols: Vec<String>,
    /// A record separator: every frame the client writes ends with it, and
    /// a server frame is read as the records between separators (several
    /// in one frame, or one split over frames), e.g. `"\u001e"` for
    /// SignalR's JSON hub protocol.
    #[serde(default)]
    pub separator: Option<String>,
    /// Server frames, tried in order.
    pub frames: Vec<FrameMatcher>,
}

/// When a json_frames join or leave counts as done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum FrameConfirm {
    /// A `joined` (or `left`) frame names it.
    #[default]
    Frame,
    /// This long after it was sent.
    After(HumanDuration),
}

/// One kind of server frame: when it applies and where its parts are.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameMatcher {
    /// Dotted JSON path → the value it must have, e.g. `{op: msg}`; all
    /// must hold (empty: every frame).
    #[serde(rename = "match", default)]
    pub when: BTreeMap<String, serde_json::Value>,
    /// Dotted JSON paths that must be present (any value but null), e.g.
    /// `[invocationId]`; all must hold.
    #[serde(default)]
    pub present: Vec<String>,
    /// Dotted JSON paths that must be absent (or null).
    #[serde(default)]
    pub absent: Vec<String>,
    /// What such a frame means.
    pub is: FrameKind,
    /// Path of the room's name.
    #[serde(default)]
    pub room: Option<String>,
    /// Where the harness's message id is (deliveries, acks, errors).
    #[serde(default)]
    pub id: Option<JsonId>,
    /// Path of the room's `seq` (deliveries, acks).
    #[serde(default)]
    pub seq: Option<String>,
    /// Path of the head a join starts after (`joined`).
    #[serde(default)]
    pub head: Option<String>,
    /// Path of the delivered text, compared with what was sent there.
    #[serde(default)]
    pub text: Option<String>,
    /// Path of an error's code.
    #[serde(default)]
    pub code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// The server accepted the `hello` frame.
    Connected,
    /// A send was accepted (`id`, optional `seq`).
    Ack,
    /// A chat message (`id`, `room`, optional `seq`, `text`).
    Delivery,
    /// A join took effect (`room`, optional `head`).
    Joined,
    /// A leave took effect (`room`).
    Left,
    /// A refusal (`id` for a send, `room` for a join, `code`).
    Error,
    /// Nothing for the client (pings, presence).
    Ignore,
}

fn default_path() -> String {
    chatbench_wire::paths::WS.into()
}

impl Declaration for JsonFrames {
    fn path(&self) -> &str {
        &self.path
    }

    /// Templates that are JSON, a delivery matcher that finds the id the
    /// send template carries, and the confirmations, acks and `seq` the
    /// scenario relies on.
    fn validate(&self, asked: &Demands) -> Result<(), Problem> {
        let f = self;
        check_is_json("join", &fill(&f.join, "room-1", "", ""))?;
        if let Some(t) = &f.hello {
            check_is_json("hello", &fill_json(t, 0, "room-1", "token"))?;
        }
        if f.hello.is_none() && f.frames.iter().any(|m| m.is == FrameKind::Connected) {
            return Err("a matcher with is: connected answers the hello frame: declare hello".into());
        }
        if let Some(t) = &f.join_after {
            if !t.contains("{after}") {
                return Err(Problem::from(format!("join_after {t:?} has no {{after}}")));
            }
            check_is_json("join_after", &fill(t, "room-1", "", "").replace("{after}", "7"))?;
        }
        if let Some(t) = &f.leave {
            check_is_json("leave", &fill(t, "room-1", "", ""))?;
        }
        check_is_json("send", &fill(&f.send, "room-1", "m1", "hi"))?;
        if !f.send.contains("{id}") {
            return Err(Problem::from(format!("send {:?} has no {{id}}: deliveries could not be told apart", f.send)));
        }
        if !f.path.starts_with('/') {
            return Err(Problem::from(format!("path {:?} must start with /", f.path)));
        }
        let of = |kind: FrameKind| f.frames.iter().find(|m| m.is == kind);
        let Some(delivery) = of(FrameKind::Delivery) else {
            return Err("frames: declare which frames are deliveries (is: delivery)".into());
        };
        let Some(id) = &delivery.id else { return Err("frames: the delivery matcher needs id: {json: PATH}".into()) };
        id_findable(id, &f.send).map_err(|p| Problem::from(format!("the delivery matcher's id: {}", p.why)))?;
        for (i, m) in f.frames.iter().enumerate() {
            if let Some(id) = &m.id
                && let Some(p) = &id.pattern
            {
                regex::Regex::new(p).map_err(|e| format!("frames[{i}].id.pattern does not compile: {e}"))?;
            }
            if m.is == FrameKind::Delivery && m.room.is_none() && asked.rooms_per_client > 1 {
                return Err(Problem::from(format!(
                    "frames[{i}]: deliveries that do not name their room (no room: PATH) need one room per client (workload.rooms_per_client: 1)"
                )));
            }
        }
        if asked.acks && of(FrameKind::Ack).is_none_or(|m| m.id.is_none()) {
            return Err(
                "the system declares acks: add a matcher with is: ack and id: {json: PATH} (or declare guarantees.ack: none)".into()
            );
        }
        if f.confirmed == FrameConfirm::Frame && of(FrameKind::Joined).is_none() {
            return Err("confirmed: frame needs a matcher with is: joined (or confirmed: {after: DURATION})".into());
        }
        if let FrameConfirm::After(d) = f.confirmed
            && d.0.is_zero()
        {
            return Err("confirmed: after must be longer than 0s".into());
        }
        if asked.churn {
            if f.leave.is_none() {
                return Err("workload.churn needs a leave template".into());
            }
            if f.leave_confirmed.unwrap_or(f.confirmed) == FrameConfirm::Frame && of(FrameKind::Left).is_none() {
                return Err(
                    "workload.churn with confirmed: frame needs a matcher with is: left (or leave_confirmed: {after: DURATION})".into()
                );
            }
        }
        if asked.seq && delivery.seq.is_none() {
            return Err("order: seq needs the delivery matcher's seq: PATH (and a join_after template to resume after a reconnect)".into());
        }
        if let Some(FrameConfirm::After(d)) = f.leave_confirmed
            && d.0.is_zero()
        {
            return Err("leave_confirmed: after must be longer than 0s".into());
        }
        if f.leave_confirmed == Some(FrameConfirm::Frame) && of(FrameKind::Left).is_none() {
            return Err("leave_confirmed: frame needs a matcher with is: left".into());
        }
        for p in &f.subprotocols {
            // RFC 6455: a token (no separators or spaces).
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)) {
                return Err(Problem::from(format!("subprotocols: {p:?} is not a WebSocket subprotocol token")));
            }
        }
        if f.separator.as_deref() == Some("") {
            return Err("separator must not be empty (leave it out for one JSON document per frame)".into());
        }
        Ok(())
    }

    fn speaker(&self, who: &Who<'_>, _: Promises, rooms: &Rooms) -> Box<dyn Speak> {
        let hello = self.hello.as_deref().map(|t| fill_json(t, who.client, rooms.home(), who.token));
        Box::new(Frames::new(self, hello).expect("id patterns are checked when the scenario is read"))
    }
}

/// A declaration, ready to use (id patterns compiled).
#[derive(Debug)]
pub(crate) struct Frames {
    decl: JsonFrames,
    ids: Vec<Option<IdReader>>,
    /// The `hello` frame, filled for this client.
    hello: Option<String>,
    /// What subscribers must get at the delivery matcher's `text` path.
    expected: ExpectedText,
    /// `Sec-WebSocket-Protocol`, the declared subprotocols joined.
    subprotocols: Option<String>,
    /// With a separator: the start of a record the last frame cut (per
    /// connection, cleared at each hello).
    partial: std::sync::Mutex<String>,
}

impl Frames {
    /// `hello`: the declaration's hello frame, filled for this client.
    /// Err: an id pattern that does not compile (refused when the scenario is read).
    fn new(decl: &JsonFrames, hello: Option<String>) -> Result<Self, regex::Error> {
        let ids = decl.frames.iter().map(|m| m.id.as_ref().map(IdReader::json).transpose()).collect::<Result<_, _>>()?;
        let (room, id, text) = ExpectedText::marks();
        let path = decl.frames.iter().find(|m| m.is == FrameKind::Delivery).and_then(|m| m.text.as_deref());
        let expected = ExpectedText::new(&fill(&decl.send, room, id, text), path);
        let subprotocols = (!decl.subprotocols.is_empty()).then(|| decl.subprotocols.join(", "));
        Ok(Self { decl: decl.clone(), ids, hello, expected, subprotocols, partial: Default::default() })
    }
}

impl Speak for Frames {
    fn hello(&self, _: &str) -> Option<Message> {
        self.partial().clear();
        self.hello.as_deref().map(|h| self.frame(h.to_owned()))
    }

    fn subprotocols(&self) -> Option<&str> {
        self.subprotocols.as_deref()
    }

    /// The server answers `hello` (a `connected` matcher is declared).
    fn hello_answered(&self) -> bool {
        self.decl.frames.iter().any(|m| m.is == FrameKind::Connected)
    }

    /// The join frame of a room, resuming after `after` when the
    /// declaration has a `join_after`.
    fn join(&self, rooms: &Rooms, slot: usize, after: Option<u64>, _: u64) -> Message {
        let room = rooms.name(slot);
        self.frame(match (after, &self.decl.join_after) {
            (Some(after), Some(t)) => fill(t, room, "", "").replace("{after}", &after.to_string()),
            _ => fill(&self.decl.join, room, "", ""),
        })
    }

    /// A declaration without `leave` is refused with churn.
    fn leave(&self, rooms: &Rooms, slot: usize, _: u64) -> Message {
        self.frame(self.decl.leave.as_deref().map(|t| fill(t, rooms.name(slot), "", "")).unwrap_or_default())
    }

    fn send(&self, rooms: &Rooms, slot: usize, msg: MsgNo, text: &str) -> (Message, BodyDigest) {
        let room = rooms.name(slot);
        let id = wire_id(msg);
        (self.frame(fill(&self.decl.send, room, &id, text)), self.expected.digest(room, &id, text))
    }

    fn done_after(&self) -> Option<Duration> {
        self.decl.confirmed.after()
    }

    fn resumes(&self) -> bool {
        self.decl.join_after.is_some()
    }

    fn leave_done_after(&self) -> Option<Duration> {
        self.decl.leave_confirmed.unwrap_or(self.decl.confirmed).after()
    }

    /// A delivery whose matcher declares no room path is the room of a
    /// client in one room.
    fn read(&self, rooms: &Rooms, bytes: &[u8], out: &mut Vec<Incoming>) {
        let Some(separator) = self.decl.separator.as_deref() else { return out.push(self.meaning(rooms, bytes)) };
        let Ok(text) = std::str::from_utf8(bytes) else { return out.push(Incoming::Unmatched) };
        let mut partial = self.partial();
        partial.push_str(text);
        // Whole records end with the separator; what follows the last one waits.
        let Some(end) = partial.rfind(separator) else { return };
        let rest = partial.split_off(end + separator.len());
        let records = std::mem::replace(&mut *partial, rest);
        drop(partial);
        for record in records.split(separator).filter(|r| !r.trim().is_empty()) {
            out.push(self.meaning(rooms, record.as_bytes()));
        }
    }
}

impl Frames {
    fn meaning(&self, rooms: &Rooms, bytes: &[u8]) -> Incoming {
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(bytes) else { return Incoming::Unmatched };
        let Some(i) = self.decl.frames.iter().position(|m| matches(m, &doc)) else { return Incoming::Unmatched };
        let m = &self.decl.frames[i];
        let str_at = |p: &Option<String>| p.as_deref().and_then(|p| json_path(&doc, p)).and_then(|v| v.as_str());
        let num_at = |p: &Option<String>| p.as_deref().and_then(|p| json_path(&doc, p)).and_then(json_u64);
        let msg: Option<MsgNo> = self.ids[i].as_ref().and_then(|r| r.id_in(&doc)).as_deref().and_then(parse_wire_id);
        let room = str_at(&m.room);
        let slot = room.and_then(|r| rooms.slot_of(r));
        match m.is {
            FrameKind::Ack => match msg {
                Some(msg) => Incoming::Ack { msg, seq: num_at(&m.seq).unwrap_or(0) },
                None => Incoming::Nothing,
            },
            FrameKind::Delivery => Incoming::Msg(Delivered {
                msg,
                seq: num_at(&m.seq).unwrap_or(0),
                slot: slot.unwrap_or(0),
                label: room_label(room, slot, m.room.is_none() && rooms.single()),
                body: str_at(&m.text).map(|t| BodyDigest::of(t.as_bytes())),
                message_id: 0,
            }),
            FrameKind::Connected => Incoming::Connected { heartbeat: None },
            FrameKind::Joined => Incoming::Subscribed { slot, head: num_at(&m.head).unwrap_or(0) },
            FrameKind::Left => Incoming::Unsubscribed { slot },
            FrameKind::Error => Incoming::Error { msg, slot, code: str_at(&m.code).unwrap_or("").to_owned() },
            FrameKind::Ignore => Incoming::Nothing,
        }
    }
}

impl Frames {
    /// A frame the client writes (with the separator, if declared).
    fn frame(&self, mut text: String) -> Message {
        if let Some(separator) = &self.decl.separator {
            text.push_str(separator);
        }
        Message::text(text)
    }

    fn partial(&self) -> std::sync::MutexGuard<'_, String> {
        self.partial.lock().expect("one task uses a client's frames")
    }
}

impl FrameConfirm {
    fn after(self) -> Option<Duration> {
        match self {
            FrameConfirm::After(d) => Some(d.0),
            FrameConfirm::Frame => None,
        }
    }
}

fn matches(m: &FrameMatcher, doc: &serde_json::Value) -> bool {
    let present = |path: &String| json_path(doc, path).is_some_and(|v| !v.is_null());
    m.when.iter().all(|(path, want)| json_path(doc, path) == Some(want)) && m.present.iter().all(present) && !m.absent.iter().any(present)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{text, wire};
    use super::super::{Declared, Wire};
    use super::*;
    use crate::message::{Label, msg_no};

    /// Protocol v1 (server/PROTOCOL.md), declared: the shipped scenario's.
    fn v1() -> Wire {
        let scenario = crate::scenario::parse_str(include_str!("../../../scenarios/json-frames.yaml"), "json-frames.yaml").unwrap();
        assert!(matches!(scenario.system.protocol, Declared::JsonFrames(_)), "json-frames.yaml declares json_frames");
        wire(&scenario.system.protocol, true, &["room-1", "room \"2\""], "")
    }

    #[test]
    fn protocol_v1_declared_reads_and_writes_what_the_built_in_adapter_does() {
        let f = v1();
        let msg = msg_no(3, 9);
        let id = wire_id(msg);
        assert_eq!(text(f.subscribe(0, None, 0)), r#"{"op":"subscribe","room":"room-1"}"#);
        assert_eq!(text(f.subscribe(0, Some(7), 0)), r#"{"op":"subscribe","room":"room-1","after":7}"#);
        let (send, digest) = f.send(1, msg, "say \"hi\"\n");
        let v: serde_json::Value = serde_json::from_str(&text(send)).unwrap();
        assert_eq!(
            (v["room"].as_str(), v["id"].as_str(), v["body"].as_str()),
            (Some("room \"2\""), Some(id.as_str()), Some("say \"hi\"\n"))
        );
        assert_eq!(digest, BodyDigest::of(b"say \"hi\"\n"));
        let read = |s: String| f.read_one(&Message::text(s));
        assert_eq!(read(format!(r#"{{"op":"ack","id":"{id}","seq":12}}"#)), Incoming::Ack { msg, seq: 12 });
        assert_eq!(
            read(format!(r#"{{"op":"msg","room":"room-1","id":"{id}","seq":13,"body":"x"}}"#)),
            Incoming::Msg(Delivered {
                msg: Some(msg),
                seq: 13,
                slot: 0,
                label: Label::Ok,
                body: Some(BodyDigest::of(b"x")),
                message_id: 0
            })
        );
        assert_eq!(read(r#"{"op":"subscribed","room":"room \"2\"","head":4}"#.into()), Incoming::Subscribed { slot: Some(1), head: 4 });
        assert_eq!(read(r#"{"op":"unsubscribed","room":"room-1"}"#.into()), Incoming::Unsubscribed { slot: Some(0) });
        assert_eq!(
            read(format!(r#"{{"op":"error","id":"{id}","code":"busy"}}"#)),
            Incoming::Error { msg: Some(msg), slot: None, code: "busy".into() }
        );
        // A delivery naming a room the client is not in, or none.
        let Incoming::Msg(d) = read(format!(r#"{{"op":"msg","room":"elsewhere","id":"{id}","seq":1}}"#)) else { panic!() };
        assert_eq!((d.label, d.body), (Label::UnknownRoom, None));
        assert_eq!(read(r#"{"op":"pong"}"#.into()), Incoming::Unmatched, "no matcher takes it");
        assert_eq!(read("not json".into()), Incoming::Unmatched);
    }

    #[test]
    fn nested_shapes_and_string_seqs_are_read() {
        let decl: JsonFrames = serde_saphyr::from_str(
            r#"
join: '{"type":"join","channel":"{room}"}'
send: '{"type":"chat","channel":"{room}","message":{"text":"{text}","clientId":"{id}"}}'
confirmed: {after: 200ms}
frames:
  - {match: {type: event, event.kind: chat}, is: delivery, room: event.channel, id: {json: event.message.clientId}, seq: event.offset, text: event.message.text}
  - {match: {type: event}, is: ignore}
"#,
        )
        .unwrap();
        let f = wire(&Declared::JsonFrames(decl), true, &["room-1", "room \"2\""], "");
        let msg = msg_no(1, 2);
        let (_, digest) = f.send(0, msg, "hey");
        assert_eq!(digest, BodyDigest::of(b"hey"), "the text path's last name is where it was sent");
        let frame = format!(
            r#"{{"type":"event","event":{{"kind":"chat","channel":"room-1","offset":"41","message":{{"text":"hey","clientId":"{}"}}}}}}"#,
            wire_id(msg)
        );
        assert_eq!(
            f.read_one(&Message::text(frame)),
            Incoming::Msg(Delivered { msg: Some(msg), seq: 41, slot: 0, label: Label::Ok, body: Some(digest), message_id: 0 })
        );
        assert_eq!(f.read_one(&Message::text(r#"{"type":"event","event":{"kind":"typing"}}"#)), Incoming::Nothing);
        assert_eq!(f.done_after(), Some(Duration::from_millis(200)));
    }

    /// SignalR's JSON hub protocol, as far as records, presence matchers
    /// and separate confirmations go: several records per frame, a record
    /// split over frames, a completion with `error` present is a refusal,
    /// one without it an ack.
    #[test]
    fn record_separated_frames_presence_matchers_and_separate_confirmations() {
        let decl: JsonFrames = serde_saphyr::from_str(
            r#"
path: /chathub
subprotocols: [json, chat.v1]
separator: "\u001e"
hello: '{"protocol":"json","version":1}'
join: '{"type":1,"target":"JoinRoom","arguments":["{room}"]}'
leave: '{"type":1,"target":"LeaveRoom","arguments":["{room}"]}'
send: '{"type":1,"target":"Send","invocationId":"{id}","arguments":[{"room":"{room}","id":"{id}","text":"{text}"}]}'
confirmed: {after: 100ms}
leave_confirmed: {after: 50ms}
frames:
  - {match: {type: 3}, present: [error], is: error, id: {json: invocationId}, code: error}
  - {match: {type: 3}, absent: [error], is: ack, id: {json: invocationId}}
  - {match: {type: 1, target: Receive}, is: delivery, room: arguments.0.room, id: {json: arguments.0.id}, text: arguments.0.text}
  - {match: {type: 6}, is: ignore}
"#,
        )
        .unwrap();
        let f = wire(&Declared::JsonFrames(decl), true, &["room-1", "room-2"], "");
        assert_eq!(f.subprotocols(), Some("json, chat.v1"));
        assert_eq!((f.done_after(), f.leave_done_after()), (Some(Duration::from_millis(100)), Some(Duration::from_millis(50))));
        assert_eq!(text(f.hello("h").unwrap()), "{\"protocol\":\"json\",\"version\":1}\u{1e}", "every frame ends with the separator");
        let msg = msg_no(2, 3);
        let id = wire_id(msg);
        assert!(text(f.send(1, msg, "hi").0).ends_with("}]}\u{1e}"));
        let delivery = format!(r#"{{"type":1,"target":"Receive","arguments":[{{"room":"room-2","id":"{id}","text":"hi"}}]}}"#);
        let ack = format!(r#"{{"type":3,"invocationId":"{id}","result":null}}"#);
        let refused = format!(r#"{{"type":3,"invocationId":"{id}","error":"full"}}"#);
        let two = format!("{ack}\u{1e}{{\"type\":6}}\u{1e}");
        assert_eq!(f.read(&Message::text(two)), vec![Incoming::Ack { msg, seq: 0 }, Incoming::Nothing]);
        let (head, tail) = delivery.split_at(20);
        assert_eq!(f.read(&Message::text(head.to_owned())), vec![], "a record cut by the frame waits");
        let got = f.read(&Message::text(format!("{tail}\u{1e}{refused}\u{1e}")));
        let Incoming::Msg(d) = &got[0] else { panic!("a delivery: {got:?}") };
        assert_eq!((d.msg, d.slot, d.label), (Some(msg), 1, Label::Ok));
        assert_eq!(got[1], Incoming::Error { msg: Some(msg), slot: None, code: "full".into() });
        assert_eq!(got.len(), 2);
        // A new connection starts with nothing cut.
        assert_eq!(f.read(&Message::text(head.to_owned())), vec![]);
        f.hello("h");
        assert_eq!(f.read(&Message::text(format!("{ack}\u{1e}"))), vec![Incoming::Ack { msg, seq: 0 }]);
    }
}
