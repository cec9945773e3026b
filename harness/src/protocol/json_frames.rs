//! `protocol: json_frames`: a team's own JSON-over-WebSocket protocol,
//! declared in the scenario (see [`JsonFrames`]) instead of written in
//! Rust. Outgoing frames are filled templates; incoming frames are read by
//! the first matcher whose `match` holds, which says what the frame means
//! and where its room, id, seq and text are. Frameworks' shapes fit it:
//! ActionCable (JSON documents inside string fields), SignalR's JSON hub
//! protocol (record-separated frames, invocation ids), Phoenix Channels
//! (per-connection refs and join refs, answered heartbeats); the shipped
//! declarations are under `scenarios/protocols/`.

use super::incoming::{Delivered, Incoming, Rooms, room_label};
use super::json_doc::{IdReader, JsonId, json_u64, json_value};
use super::template::{ExpectedText, Slot, Template, check_is_json, id_found};
use super::{Declaration, Demands, Problem, Promises, Speak, Who};
use crate::duration::HumanDuration;
use crate::message::{BodyDigest, MsgNo, parse_wire_id, wire_id};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// A JSON-over-WebSocket protocol declared in YAML (`protocol:
/// json_frames`). Templates are JSON with placeholders: `{room}`, `{id}`,
/// `{text}` (written JSON-escaped: once inside a string, twice inside a
/// JSON document that is itself a string value), `{after}` (a number),
/// `{ref}` (the connection's next frame number: 1, 2, ...) and
/// `{join_ref}` (the `{ref}` of the room's join). Matchers say which
/// server frames are acks, deliveries, join and leave confirmations,
/// replies and errors, and at which (dotted) JSON paths they carry the
/// room, id, seq and text; a path reads on into a string holding a JSON
/// document (`identifier.room`). The first matcher whose `match` holds
/// wins; a frame no matcher takes is counted and ignored.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonFrames {
    /// WebSocket path on nodes the harness starts.
    #[serde(default = "default_path")]
    pub path: String,
    /// A first frame on every connection, e.g. an authentication
    /// `'{"type":"auth","token":"{token}"}'` (`{token}`, `{client}` (both
    /// in every template), and `{room}`: the home room). With an `is: connected` matcher the client
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
    /// frame, or a `reply` to its `{ref}`, answers it: the default) or
    /// `{after: DURATION}`.
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
    /// A frame the client writes at an interval (Phoenix's `heartbeat`,
    /// SignalR's ping), from the start of each connection.
    #[serde(default)]
    pub heartbeat: Option<Heartbeat>,
    /// The server takes a send only in a room this connection joined
    /// (ActionCable, Phoenix): a workload with pure senders
    /// (`senders_per_room`) is refused when the scenario is read. Implied
    /// by a `send` template with `{join_ref}`.
    #[serde(default)]
    pub sends_need_join: bool,
    /// Server frames, tried in order.
    pub frames: Vec<FrameMatcher>,
}

/// A client heartbeat: `frame` every `every`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub every: HumanDuration,
    /// The frame, e.g. `'[null,"{ref}","phoenix","heartbeat",{}]'`.
    pub frame: String,
    /// The server answers each heartbeat (a `reply` to its `{ref}`); one
    /// still unanswered when the next is due ends the connection, which
    /// the client then reopens (as Phoenix's JavaScript client does).
    #[serde(default)]
    pub answered: bool,
}

/// When a json_frames join or leave counts as done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum FrameConfirm {
    /// A `joined` (or `left`) frame names it, or a `reply` answers its `{ref}`.
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
    /// Path of the `{ref}` of the client frame this one answers (a string
    /// of digits or a number): an ack, reply or error then needs no id or
    /// room of its own.
    #[serde(default, rename = "ref")]
    pub answers: Option<String>,
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
    /// A send was accepted (`id`, or the send's `ref`; optional `seq`).
    Ack,
    /// A chat message (`id`, `room`, optional `seq`, `text`).
    Delivery,
    /// A join took effect (`room`, or the join's `ref`; optional `head`).
    Joined,
    /// A leave took effect (`room`, or the leave's `ref`).
    Left,
    /// The answer to the client frame whose `{ref}` it carries (`ref`):
    /// an ack of a send, the confirmation of a join or leave, or a
    /// heartbeat's answer, by what that frame was (Phoenix's `phx_reply`,
    /// SignalR's completion).
    Reply,
    /// A refusal (`id` or `ref` for a send, `room` or `ref` for a join,
    /// `code`).
    Error,
    /// Nothing for the client (pings, presence).
    Ignore,
}

fn default_path() -> String {
    chatbench_wire::paths::WS.into()
}

/// The sample values templates are checked with.
fn sample(slot: Slot) -> Cow<'static, str> {
    match slot {
        Slot::Room => "room-1".into(),
        Slot::Id => "m4294967297".into(),
        Slot::Text => "hello [x] 42".into(),
        Slot::After => "7".into(),
        Slot::Ref | Slot::JoinRef => "1".into(),
        Slot::Client => "0".into(),
        Slot::Token => "token".into(),
    }
}

impl JsonFrames {
    /// Whether frames answering a `{ref}` can tell what `template` did.
    fn answered_by_ref(&self, template: Option<&str>, kinds: &[FrameKind]) -> bool {
        template.is_some_and(|t| Template::new(t).has(Slot::Ref))
            && self.frames.iter().any(|m| m.answers.is_some() && kinds.contains(&m.is))
    }
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
        let templates = [
            ("hello", f.hello.as_deref()),
            ("join", Some(f.join.as_str())),
            ("join_after", f.join_after.as_deref()),
            ("leave", f.leave.as_deref()),
            ("send", Some(f.send.as_str())),
            ("heartbeat.frame", f.heartbeat.as_ref().map(|h| h.frame.as_str())),
        ];
        for (name, t) in templates {
            if let Some(t) = t {
                check_is_json(name, &Template::new(t).fill(sample))?;
            }
        }
        if f.hello.is_none() && f.frames.iter().any(|m| m.is == FrameKind::Connected) {
            return Err("a matcher with is: connected answers the hello frame: declare hello".into());
        }
        if let Some(t) = &f.join_after
            && !t.contains("{after}")
        {
            return Err(Problem::from(format!("join_after {t:?} has no {{after}}")));
        }
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
        id_found(id, &f.send, &Template::new(&f.send).fill(sample))
            .map_err(|p| Problem::from(format!("the delivery matcher's id: {}", p.why)))?;
        let refs = templates.iter().any(|(_, t)| t.is_some_and(|t| Template::new(t).has(Slot::Ref)));
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
            if m.is == FrameKind::Reply && m.answers.is_none() {
                return Err(Problem::from(format!(
                    "frames[{i}]: is: reply needs ref: PATH (where the frame carries the {{ref}} it answers)"
                )));
            }
            if m.answers.is_some() && !refs {
                return Err(Problem::from(format!("frames[{i}].ref: no template writes {{ref}}, so no frame can answer one")));
            }
        }
        let acked = f.frames.iter().any(|m| m.is == FrameKind::Ack && m.id.is_some())
            || f.answered_by_ref(Some(&f.send), &[FrameKind::Ack, FrameKind::Reply]);
        if asked.acks && !acked {
            return Err("the system declares acks: add a matcher with is: ack and id: {json: PATH}, or one with is: reply and ref: PATH \
                        with {ref} in the send template (or declare guarantees.ack: none)"
                .into());
        }
        let joins = [Some(f.join.as_str()), f.join_after.as_deref()];
        let join_answered = of(FrameKind::Joined).is_some()
            || joins.iter().all(|t| t.is_none() || f.answered_by_ref(*t, &[FrameKind::Joined, FrameKind::Reply]));
        if f.confirmed == FrameConfirm::Frame && !join_answered {
            return Err("confirmed: frame needs a matcher with is: joined, or is: reply with ref: PATH and {ref} in the join template \
                        (or confirmed: {after: DURATION})"
                .into());
        }
        if let FrameConfirm::After(d) = f.confirmed
            && d.0.is_zero()
        {
            return Err("confirmed: after must be longer than 0s".into());
        }
        let leave_answered = of(FrameKind::Left).is_some() || f.answered_by_ref(f.leave.as_deref(), &[FrameKind::Left, FrameKind::Reply]);
        if asked.churn {
            if f.leave.is_none() {
                return Err("workload.churn needs a leave template".into());
            }
            if f.leave_confirmed.unwrap_or(f.confirmed) == FrameConfirm::Frame && !leave_answered {
                return Err("workload.churn with confirmed: frame needs a matcher with is: left, or is: reply with ref: PATH and {ref} \
                            in the leave template (or leave_confirmed: {after: DURATION})"
                    .into());
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
        if f.leave_confirmed == Some(FrameConfirm::Frame) && !leave_answered {
            return Err("leave_confirmed: frame needs a matcher with is: left (or is: reply answering the leave's {ref})".into());
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
        if let Some(h) = &f.heartbeat {
            if h.every.0.is_zero() {
                return Err(Problem::at("heartbeat", "every must be longer than 0s"));
            }
            if h.answered && !f.answered_by_ref(Some(&h.frame), &[FrameKind::Reply, FrameKind::Ignore, FrameKind::Error]) {
                return Err(Problem::at(
                    "heartbeat",
                    "answered: true needs {ref} in the frame and a matcher with is: reply and ref: PATH to read the answer's ref",
                ));
            }
        }
        if asked.pure_senders && f.needs_join() {
            return Err(Problem::from(
                "sends here need the room joined first (sends_need_join, or {join_ref} in send), but the workload has pure senders \
                 (workload.senders_per_room): use chatters_per_room, who join the rooms they send to"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    fn speaker(&self, who: &Who<'_>, _: Promises, rooms: &Rooms) -> Box<dyn Speak> {
        Box::new(Frames::new(self, who.client, who.token, rooms.home()).expect("id patterns are checked when the scenario is read"))
    }
}

impl JsonFrames {
    fn needs_join(&self) -> bool {
        self.sends_need_join || Template::new(&self.send).has(Slot::JoinRef)
    }
}

/// A declaration, ready to use (templates read, id patterns compiled).
#[derive(Debug)]
pub(crate) struct Frames {
    decl: JsonFrames,
    ids: Vec<Option<IdReader>>,
    /// The `hello` frame, filled for this client.
    hello: Option<String>,
    join: Template,
    join_after: Option<Template>,
    leave: Option<Template>,
    send: Template,
    beat: Option<Template>,
    /// What subscribers must get at the delivery matcher's `text` path.
    expected: ExpectedText,
    /// `Sec-WebSocket-Protocol`, the declared subprotocols joined.
    subprotocols: Option<String>,
    /// Sends only into joined rooms (read on every send: worked out once).
    needs_join: bool,
    /// `{client}` and `{token}`, in any template.
    client: String,
    token: String,
    /// This connection's state (one task uses a client's frames; cleared
    /// at each hello).
    conn: Mutex<Conn>,
}

/// What one connection has said that its answers refer to.
#[derive(Debug, Default)]
struct Conn {
    /// With a separator: the start of a record the last frame cut.
    partial: String,
    /// The last `{ref}` written.
    last_ref: u64,
    /// Refs not yet answered, and what each was for.
    refs: BTreeMap<u64, Purpose>,
    /// Each room slot's join ref.
    join_refs: BTreeMap<usize, u64>,
    /// The ref of the heartbeat last written, while unanswered.
    beat: Option<u64>,
}

/// What a template is filled with, besides refs.
#[derive(Debug, Clone, Copy, Default)]
struct Values<'a> {
    room: &'a str,
    id: &'a str,
    text: &'a str,
    after: u64,
}

/// What a client frame with a `{ref}` was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Join(usize),
    Leave(usize),
    Send(MsgNo),
    Beat,
}

/// Unanswered refs kept per connection: a server that answers none must
/// not grow a client without bound.
const MAX_REFS: usize = 1 << 14;

impl Conn {
    /// The next ref, remembered as `purpose`.
    fn next_ref(&mut self, purpose: Purpose) -> u64 {
        self.last_ref += 1;
        self.refs.insert(self.last_ref, purpose);
        if self.refs.len() > MAX_REFS {
            self.refs.pop_first();
        }
        self.last_ref
    }
}

impl Frames {
    /// For `client` with its `token`, whose home room is `home`.
    /// Err: an id pattern that does not compile (refused when the scenario is read).
    fn new(decl: &JsonFrames, client: u32, token: &str, home: &str) -> Result<Self, regex::Error> {
        let client = client.to_string();
        let hello = decl.hello.as_deref().map(|t| {
            Template::new(t).fill(|slot| match slot {
                Slot::Client => Cow::Borrowed(client.as_str()),
                Slot::Token => Cow::Borrowed(token),
                Slot::Room => Cow::Borrowed(home),
                _ => Cow::Borrowed(""),
            })
        });
        let ids = decl.frames.iter().map(|m| m.id.as_ref().map(IdReader::json).transpose()).collect::<Result<_, _>>()?;
        let send = Template::new(&decl.send);
        let (room, id, text) = ExpectedText::marks();
        let path = decl.frames.iter().find(|m| m.is == FrameKind::Delivery).and_then(|m| m.text.as_deref());
        let marked = send.fill(|slot| match slot {
            Slot::Room => room.into(),
            Slot::Id => id.into(),
            Slot::Text => text.into(),
            other => sample(other),
        });
        let expected = ExpectedText::new(&marked, path);
        let subprotocols = (!decl.subprotocols.is_empty()).then(|| decl.subprotocols.join(", "));
        Ok(Self {
            decl: decl.clone(),
            ids,
            hello,
            join: Template::new(&decl.join),
            join_after: decl.join_after.as_deref().map(Template::new),
            leave: decl.leave.as_deref().map(Template::new),
            send,
            beat: decl.heartbeat.as_ref().map(|h| Template::new(&h.frame)),
            expected,
            subprotocols,
            needs_join: decl.needs_join(),
            token: token.to_owned(),
            client,
            conn: Mutex::default(),
        })
    }

    /// A template filled for a room slot: `{ref}` a new ref for `purpose`,
    /// `{join_ref}` the slot's join ref.
    fn fill(&self, t: &Template, slot: Option<usize>, purpose: Purpose, v: Values<'_>) -> String {
        let mut conn = self.conn();
        let this = t.has(Slot::Ref).then(|| conn.next_ref(purpose));
        let join_ref = match (purpose, slot) {
            (Purpose::Join(s), _) => {
                let r = this.or_else(|| t.has(Slot::JoinRef).then(|| conn.next_ref(purpose)));
                if let Some(r) = r {
                    conn.join_refs.insert(s, r);
                }
                r
            }
            (_, Some(s)) => conn.join_refs.get(&s).copied(),
            _ => None,
        };
        if purpose == Purpose::Beat {
            conn.beat = this;
        }
        drop(conn);
        let num = |n: Option<u64>| n.map_or(Cow::Borrowed(""), |n| Cow::Owned(n.to_string()));
        t.fill(|s| match s {
            Slot::Room => Cow::Borrowed(v.room),
            Slot::Id => Cow::Borrowed(v.id),
            Slot::Text => Cow::Borrowed(v.text),
            Slot::After => Cow::Owned(v.after.to_string()),
            Slot::Ref => num(this),
            Slot::JoinRef => num(join_ref),
            Slot::Client => Cow::Borrowed(&self.client),
            Slot::Token => Cow::Borrowed(&self.token),
        })
    }
}

impl Speak for Frames {
    fn hello(&self, _: &str) -> Option<Message> {
        *self.conn() = Conn::default();
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
        let (t, after) = match (after, &self.join_after) {
            (Some(after), Some(t)) => (t, after),
            _ => (&self.join, 0),
        };
        self.frame(self.fill(t, Some(slot), Purpose::Join(slot), Values { room, after, ..Values::default() }))
    }

    /// A declaration without `leave` is refused with churn.
    fn leave(&self, rooms: &Rooms, slot: usize, _: u64) -> Message {
        let room = rooms.name(slot);
        let text = self.leave.as_ref().map(|t| self.fill(t, Some(slot), Purpose::Leave(slot), Values { room, ..Values::default() }));
        self.frame(text.unwrap_or_default())
    }

    fn send(&self, rooms: &Rooms, slot: usize, msg: MsgNo, text: &str) -> (Message, BodyDigest) {
        let room = rooms.name(slot);
        let id = wire_id(msg);
        let frame = self.fill(&self.send, Some(slot), Purpose::Send(msg), Values { room, id: &id, text, after: 0 });
        (self.frame(frame), self.expected.digest(room, &id, text))
    }

    fn heartbeat(&self) -> Option<Message> {
        let beat = self.beat.as_ref()?;
        Some(self.frame(self.fill(beat, None, Purpose::Beat, Values::default())))
    }

    fn heartbeat_every(&self) -> Option<Duration> {
        self.decl.heartbeat.as_ref().map(|h| h.every.0)
    }

    fn heartbeat_unanswered(&self) -> bool {
        self.decl.heartbeat.as_ref().is_some_and(|h| h.answered) && self.conn().beat.is_some()
    }

    fn done_after(&self) -> Option<Duration> {
        self.decl.confirmed.after()
    }

    fn resumes(&self) -> bool {
        self.decl.join_after.is_some()
    }

    fn sends_need_join(&self) -> bool {
        self.needs_join
    }

    fn leave_done_after(&self) -> Option<Duration> {
        self.decl.leave_confirmed.unwrap_or(self.decl.confirmed).after()
    }

    /// A delivery whose matcher declares no room path is the room of a
    /// client in one room.
    fn read(&self, rooms: &Rooms, bytes: &[u8], out: &mut Vec<Incoming>) {
        let Some(separator) = self.decl.separator.as_deref() else { return out.push(self.meaning(rooms, bytes)) };
        let Ok(text) = std::str::from_utf8(bytes) else { return out.push(Incoming::Unmatched) };
        let mut conn = self.conn();
        conn.partial.push_str(text);
        // Whole records end with the separator; what follows the last one waits.
        let Some(end) = conn.partial.rfind(separator) else { return };
        let rest = conn.partial.split_off(end + separator.len());
        let records = std::mem::replace(&mut conn.partial, rest);
        drop(conn);
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
        let at = |p: &Option<String>| p.as_deref().and_then(|p| json_value(&doc, p));
        let num_at = |p: &Option<String>| at(p).as_deref().and_then(json_u64);
        let msg: Option<MsgNo> = self.ids[i].as_ref().and_then(|r| r.id_in(&doc)).as_deref().and_then(parse_wire_id);
        let room_value = at(&m.room);
        let room = room_value.as_deref().and_then(|v| v.as_str());
        let named = room.and_then(|r| rooms.slot_of(r));
        // The client frame this one answers, by its ref (taken: answered once).
        let answered = num_at(&m.answers).and_then(|r| {
            let mut conn = self.conn();
            if conn.beat == Some(r) {
                conn.beat = None;
            }
            conn.refs.remove(&r)
        });
        let slot = named.or(match answered {
            Some(Purpose::Join(s) | Purpose::Leave(s)) => Some(s),
            _ => None,
        });
        let sent = msg.or(match answered {
            Some(Purpose::Send(msg)) => Some(msg),
            _ => None,
        });
        match m.is {
            FrameKind::Ack => match sent {
                Some(msg) => Incoming::Ack { msg, seq: num_at(&m.seq).unwrap_or(0) },
                None => Incoming::Nothing,
            },
            FrameKind::Reply => match answered {
                Some(Purpose::Send(msg)) => Incoming::Ack { msg, seq: num_at(&m.seq).unwrap_or(0) },
                Some(Purpose::Join(slot)) => Incoming::Subscribed { slot: Some(slot), head: num_at(&m.head).unwrap_or(0) },
                Some(Purpose::Leave(slot)) => Incoming::Unsubscribed { slot: Some(slot) },
                Some(Purpose::Beat) | None => Incoming::Nothing,
            },
            FrameKind::Delivery => Incoming::Msg(Delivered {
                msg,
                seq: num_at(&m.seq).unwrap_or(0),
                slot: named.unwrap_or(0),
                label: room_label(room, named, m.room.is_none() && rooms.single()),
                body: at(&m.text).as_deref().and_then(|v| v.as_str()).map(|t| BodyDigest::of(t.as_bytes())),
                message_id: 0,
            }),
            FrameKind::Connected => Incoming::Connected { heartbeat: None },
            FrameKind::Joined => Incoming::Subscribed { slot, head: num_at(&m.head).unwrap_or(0) },
            FrameKind::Left => Incoming::Unsubscribed { slot },
            FrameKind::Error if answered == Some(Purpose::Beat) => Incoming::Nothing,
            FrameKind::Error => Incoming::Error {
                msg: sent,
                slot,
                code: at(&m.code).as_deref().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).unwrap_or_default(),
            },
            FrameKind::Ignore => Incoming::Nothing,
        }
    }

    /// A frame the client writes (with the separator, if declared).
    fn frame(&self, mut text: String) -> Message {
        if let Some(separator) = &self.decl.separator {
            text.push_str(separator);
        }
        Message::text(text)
    }

    fn conn(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().expect("one task uses a client's frames")
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
    let present = |path: &String| json_value(doc, path).is_some_and(|v| !v.is_null());
    m.when.iter().all(|(path, want)| json_value(doc, path).as_deref() == Some(want))
        && m.present.iter().all(present)
        && !m.absent.iter().any(present)
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

    fn shipped(name: &str) -> crate::scenario::Scenario {
        let path = format!("{}/../scenarios/protocols/{name}", env!("CARGO_MANIFEST_DIR"));
        crate::scenario::parse_str(&std::fs::read_to_string(&path).unwrap(), name).unwrap()
    }

    /// Phoenix Channels: refs count frames per connection, a topic's
    /// pushes carry its join's ref, and `phx_reply` means what the frame
    /// with that ref was: a join confirmed or refused, a push acked or
    /// refused, a leave done, a heartbeat answered. A new connection
    /// counts from 1 again and forgets the old refs.
    #[test]
    fn refs_and_join_refs_are_per_connection_and_replies_mean_what_their_ref_was() {
        let scenario = shipped("phoenix.yaml");
        let f = wire(&scenario.system.protocol, true, &["room:1", "room:2"], "");
        assert!(f.sends_need_join());
        assert_eq!(f.heartbeat_every(), Some(Duration::from_secs(5)));
        assert!(f.hello("h").is_none());
        let frame = |m: Message| serde_json::from_str::<serde_json::Value>(&text(m)).unwrap();
        assert_eq!(frame(f.subscribe(1, None, 0)), serde_json::json!(["1", "1", "room:2", "phx_join", {}]));
        assert_eq!(frame(f.subscribe(0, None, 0)), serde_json::json!(["2", "2", "room:1", "phx_join", {}]));
        let msg = msg_no(4, 1);
        let push = frame(f.send(1, msg, "hi \"there\"").0);
        assert_eq!((&push[0], &push[1], &push[2], &push[4]["body"]), (&"1".into(), &"3".into(), &"room:2".into(), &"hi \"there\"".into()));
        assert_eq!(frame(f.heartbeat().unwrap()), serde_json::json!([null, "4", "phoenix", "heartbeat", {}]));
        assert!(f.heartbeat_unanswered(), "no answer yet");
        assert_eq!(frame(f.unsubscribe(0, 0)), serde_json::json!(["2", "5", "room:1", "phx_leave", {}]));
        let reply = |r: &str, topic: &str, status: &str| {
            f.read_one(&Message::text(
                serde_json::json!(["1", r, topic, "phx_reply", {"status": status, "response": {"reason": "unauthorized"}}]).to_string(),
            ))
        };
        assert_eq!(reply("1", "room:2", "ok"), Incoming::Subscribed { slot: Some(1), head: 0 });
        assert_eq!(reply("2", "room:1", "error"), Incoming::Error { msg: None, slot: Some(0), code: "unauthorized".into() });
        assert_eq!(reply("3", "room:2", "ok"), Incoming::Ack { msg, seq: 0 });
        assert_eq!(reply("3", "room:2", "ok"), Incoming::Nothing, "a ref is answered once");
        assert_eq!(reply("4", "phoenix", "ok"), Incoming::Nothing);
        assert!(!f.heartbeat_unanswered(), "answered");
        assert_eq!(reply("5", "room:1", "ok"), Incoming::Unsubscribed { slot: Some(0) });
        assert_eq!(reply("99", "room:1", "ok"), Incoming::Nothing, "a ref never written");
        let (push2, _) = f.send(0, msg_no(4, 2), "x");
        assert_eq!(frame(push2)[1], "6");
        assert_eq!(reply("6", "room:1", "error"), Incoming::Error { msg: Some(msg_no(4, 2)), slot: None, code: "unauthorized".into() });
        let broadcast = format!(r#"[null,null,"room:2","new_msg",{{"id":"{}","body":"hi"}}]"#, wire_id(msg));
        let Incoming::Msg(d) = f.read_one(&Message::text(broadcast)) else { panic!("a delivery") };
        assert_eq!((d.msg, d.slot, d.label, d.body), (Some(msg), 1, Label::Ok, Some(BodyDigest::of(b"hi"))));
        // A new connection.
        f.heartbeat();
        assert!(f.hello("h").is_none());
        assert!(!f.heartbeat_unanswered(), "a new connection owes no answer");
        assert_eq!(reply("1", "room:2", "ok"), Incoming::Nothing, "old refs are forgotten");
        assert_eq!(frame(f.subscribe(0, None, 0))[1], "1");
    }

    /// ActionCable: `identifier` and `data` are JSON documents inside
    /// strings; any room name and text survive being escaped twice, and
    /// the room is read back out of the identifier a frame carries.
    #[test]
    fn json_documents_inside_strings_are_written_and_read() {
        let scenario = shipped("actioncable.yaml");
        let room = "lobby \"7\" \\ é";
        let f = wire(&scenario.system.protocol, false, &[room, "other"], "");
        assert_eq!(f.subprotocols(), Some("actioncable-v1-json, actioncable-unsupported"));
        let doc = |m: Message| serde_json::from_str::<serde_json::Value>(&text(m)).unwrap();
        let inner = |v: &serde_json::Value, k: &str| serde_json::from_str::<serde_json::Value>(v[k].as_str().unwrap()).unwrap();
        let join = doc(f.subscribe(0, None, 0));
        assert_eq!(inner(&join, "identifier"), serde_json::json!({"channel": "ChatChannel", "room": room}));
        let msg = msg_no(2, 5);
        let body = "say \"hi\"\n\\ {text} ✓";
        let (send, digest) = f.send(0, msg, body);
        let send = doc(send);
        assert_eq!(inner(&send, "data"), serde_json::json!({"action": "speak", "id": wire_id(msg), "body": body}));
        assert_eq!(digest, BodyDigest::of(body.as_bytes()), "the text is what subscribers get at message.body");
        let identifier = join["identifier"].as_str().unwrap();
        let read = |v: serde_json::Value| f.read_one(&Message::text(v.to_string()));
        assert_eq!(
            read(serde_json::json!({"identifier": identifier, "type": "confirm_subscription"})),
            Incoming::Subscribed { slot: Some(0), head: 0 }
        );
        assert_eq!(
            read(serde_json::json!({"identifier": identifier, "type": "reject_subscription"})),
            Incoming::Error { msg: None, slot: Some(0), code: "reject_subscription".into() }
        );
        let Incoming::Msg(d) = read(serde_json::json!({"identifier": identifier, "message": {"id": wire_id(msg), "body": body}})) else {
            panic!("a delivery")
        };
        assert_eq!((d.msg, d.slot, d.label, d.body), (Some(msg), 0, Label::Ok, Some(digest)));
        assert_eq!(read(serde_json::json!({"type": "ping", "message": 1})), Incoming::Nothing);
        assert_eq!(read(serde_json::json!({"type": "welcome"})), Incoming::Nothing);
    }

    /// SignalR: invocation ids count per connection; a completion acks the
    /// send or confirms the join it answers, with `error` it refuses it.
    #[test]
    fn completions_answer_invocations_by_id() {
        let scenario = shipped("signalr.yaml");
        let f = wire(&scenario.system.protocol, true, &["room-1", "room-2"], "");
        assert!(!f.sends_need_join());
        assert_eq!(text(f.hello("h").unwrap()), "{\"protocol\":\"json\",\"version\":1}\u{1e}");
        let record = |m: Message| serde_json::from_str::<serde_json::Value>(text(m).trim_end_matches('\u{1e}')).unwrap();
        assert_eq!(record(f.subscribe(1, None, 0))["invocationId"], "1");
        let msg = msg_no(1, 1);
        assert_eq!(record(f.send(1, msg, "x").0)["invocationId"], "2");
        assert_eq!(text(f.heartbeat().unwrap()), "{\"type\":6}\u{1e}");
        assert!(!f.heartbeat_unanswered(), "SignalR pings are not answered");
        let got = f.read(&Message::text(
            "{}\u{1e}{\"type\":3,\"invocationId\":\"1\"}\u{1e}{\"type\":3,\"invocationId\":\"2\",\"error\":\"full\"}\u{1e}",
        ));
        assert_eq!(
            got,
            vec![
                Incoming::Connected { heartbeat: None },
                Incoming::Subscribed { slot: Some(1), head: 0 },
                Incoming::Error { msg: Some(msg), slot: None, code: "full".into() }
            ]
        );
        assert_eq!(
            f.read(&Message::text("{\"error\":\"Requested protocol 'x' is not available.\"}\u{1e}")),
            vec![Incoming::Error { msg: None, slot: None, code: "Requested protocol 'x' is not available.".into() }]
        );
    }

    /// What each framework feature needs is asked for when the scenario is
    /// read, naming the key.
    #[test]
    fn refs_replies_heartbeats_and_joins_are_checked_when_read() {
        let base = shipped("phoenix.yaml");
        let Declared::JsonFrames(decl) = &base.system.protocol else { panic!() };
        let asked = Demands {
            rooms_per_client: 2,
            churn: true,
            acks: true,
            seq: false,
            reference_history: false,
            reference_server: false,
            pure_senders: false,
        };
        assert_eq!(decl.validate(&asked), Ok(()));
        let why = |change: &dyn Fn(&mut JsonFrames), asked: Demands| {
            let mut d = decl.clone();
            change(&mut d);
            d.validate(&asked).err().map(|p| (p.key, p.why))
        };
        let has = |got: Option<(Option<&'static str>, String)>, key: Option<&str>, words: &str| {
            let (k, w) = got.expect("refused");
            assert!(k == key && w.contains(words), "{k:?}: {w}");
        };
        has(why(&|_| {}, Demands { pure_senders: true, ..asked }), None, "chatters_per_room");
        has(why(&|d| d.frames[0].answers = None, asked), None, "is: reply needs ref");
        has(why(&|d| d.send = d.send.replace("\"{ref}\"", "\"x\""), asked), None, "acks");
        has(
            why(
                &|d| {
                    d.join = d.join.replace("{ref}", "x");
                    d.leave = d.leave.as_ref().map(|l| l.replace("{ref}", "x"));
                    d.send = d.send.replace("{ref}", "x");
                    d.heartbeat = None;
                },
                asked,
            ),
            None,
            "no template writes {ref}",
        );
        has(why(&|d| d.join = d.join.replace("\"{ref}\",\"{ref}\"", "null,null"), asked), None, "confirmed: frame");
        has(why(&|d| d.leave = d.leave.as_ref().map(|l| l.replace("\"{ref}\"", "null")), asked), None, "is: left");
        has(
            why(&|d| d.heartbeat.as_mut().unwrap().frame = "[null,null,\"phoenix\",\"heartbeat\",{}]".into(), asked),
            Some("heartbeat"),
            "answered",
        );
        has(why(&|d| d.heartbeat.as_mut().unwrap().every = HumanDuration(Duration::ZERO), asked), Some("heartbeat"), "longer than 0s");
        has(why(&|d| d.heartbeat.as_mut().unwrap().frame = "[null,\"{ref}\"".into(), asked), None, "heartbeat.frame is not JSON");
        // Without churn, no leave confirmation is needed.
        assert_eq!(why(&|d| d.leave = None, Demands { churn: false, ..asked }), None);
        // A send that needs no join, with pure senders.
        assert_eq!(why(&|d| d.send = d.send.replace("{join_ref}", "1"), Demands { pure_senders: true, ..asked }), None);
    }

    /// A server that answers no ref cannot grow a client without bound.
    #[test]
    fn unanswered_refs_are_bounded() {
        let Declared::JsonFrames(decl) = shipped("phoenix.yaml").system.protocol else { panic!() };
        let f = Frames::new(&decl, 0, "", "room:1").unwrap();
        let rooms = Rooms::new(vec!["room:1".into()]);
        for k in 0..(MAX_REFS as u32 + 100) {
            f.send(&rooms, 0, msg_no(1, k), "x");
        }
        let conn = f.conn();
        assert_eq!((conn.refs.len(), conn.last_ref), (MAX_REFS, MAX_REFS as u64 + 100));
        assert_eq!(conn.refs.first_key_value().map(|(r, _)| *r), Some(101), "the oldest go first");
    }

    /// `{client}` and `{token}` are filled in every template, not only hello.
    #[test]
    fn client_and_token_fill_every_template() {
        let decl: JsonFrames = serde_saphyr::from_str(
            r#"
hello: '{"auth":"{token}","user":"c{client}","home":"{room}"}'
join: '{"join":"{room}","user":"c{client}"}'
send: '{"room":"{room}","id":"{id}","text":"{text}","user":"c{client}","auth":"{token}"}'
confirmed: {after: 100ms}
frames:
  - {match: {t: m}, is: delivery, id: {json: id}}
"#,
        )
        .unwrap();
        let f = wire(&Declared::JsonFrames(decl), false, &["room-1"], "tok\"en");
        let doc = |m: Message| serde_json::from_str::<serde_json::Value>(&text(m)).unwrap();
        assert_eq!(doc(f.hello("h").unwrap()), serde_json::json!({"auth": "tok\"en", "user": "c3", "home": "room-1"}));
        assert_eq!(doc(f.subscribe(0, None, 0))["user"], "c3");
        let send = doc(f.send(0, msg_no(3, 0), "x").0);
        assert_eq!((&send["user"], &send["auth"]), (&"c3".into(), &"tok\"en".into()));
    }
}
