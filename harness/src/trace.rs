//! The recorded history of a run: every send, ack, subscription, delivery,
//! error and close, with nanosecond offsets from the harness's one monotonic
//! clock, plus each room's history as read back at the end.
//!
//! Clients record into their own pre-sized buffers during the run; the
//! buffers are merged, sorted by time and written once afterwards (postcard,
//! compact), so recording costs a `Vec::push`. Checkers read only this.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

pub use crate::message::{BodyDigest, ClientId, FOREIGN_MSG, Label, MsgNo, id_hash, msg_no, msg_parts, parse_wire_id, send_slot, wire_id};
pub use crate::scenario::{Attempt, Credential};

/// Index of a room in [`Trace::rooms`].
pub type RoomIdx = u32;

/// Bump when the trace layout changes; `chatbench check` refuses others.
pub const TRACE_VERSION: u32 = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Only sends.
    Sender,
    /// Only subscribes.
    #[default]
    Subscriber,
    /// Subscribes to its room and sends into it on one connection.
    Chatter,
    /// Not a member: tries to read and write a room its credentials do
    /// not grant (`auth.intruders`). Judged only by `authorization`
    /// (every attempt refused) and `routing` (nothing delivered to it);
    /// what it managed to send is owed to the members like any message.
    Intruder(Credential),
}

/// How the system answered an intruder's attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// A definite refusal: the upgrade refused with an HTTP status, an
    /// error frame (STOMP `ERROR`), a close frame with a code, HTTP 401/403.
    Refused,
    /// It was done: subscribed, acked, served (`served`: messages a history read returned).
    Accepted { served: u32 },
    /// No definite answer within `auth.answer_within` (a silent drop, a
    /// connection cut without a close frame).
    NoAnswer,
}

impl Role {
    pub fn sends(self) -> bool {
        matches!(self, Role::Sender | Role::Chatter)
    }

    pub fn subscribes(self) -> bool {
        matches!(self, Role::Subscriber | Role::Chatter)
    }

    /// The credentials an intruder presents (None: a member).
    pub fn intruder(self) -> Option<Credential> {
        match self {
            Role::Intruder(c) => Some(c),
            _ => None,
        }
    }
}

/// One planned client connection: what it is, where it connects, and what
/// the plan expects of it (so liveness can be judged from the trace alone).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub role: Role,
    /// Node index the client connects to first.
    pub node: u32,
    /// Its home room (the first it joins; credentials templates use it).
    pub room: RoomIdx,
    /// The other rooms it joins on the same connection (and sends into,
    /// in turn with its home room), `workload.rooms_per_client`.
    #[serde(default)]
    pub also: Vec<RoomIdx>,
    /// When it joins, in ns from the start of sending (0: before sending starts).
    pub join_at_ns: u64,
    /// The `after` of its first subscription (late subscribers).
    pub after: Option<u64>,
    /// Open loop: how many sends its schedule holds. None: closed loop.
    pub planned_sends: Option<u64>,
    /// An intruder's: the name it tried its room under, where that is not
    /// the room's own (a wildcard pattern, a spelling).
    #[serde(default)]
    pub tried_as: Option<String>,
    /// An intruder's: the run's room its credentials grant, where they
    /// grant one (a confusable pair such as `r1`/`r10`): its messages are
    /// the intruder's own.
    #[serde(default)]
    pub granted: Option<RoomIdx>,
}

impl ClientInfo {
    /// ` (asked as "<name>")` where an intruder tried its room under
    /// another name (for findings), else nothing.
    pub fn tried_as_text(&self) -> String {
        self.tried_as.as_ref().map(|t| format!(" (asked as {t:?})")).unwrap_or_default()
    }

    /// Every room it joins or sends into: its home room first.
    pub fn rooms(&self) -> impl Iterator<Item = RoomIdx> + '_ {
        std::iter::once(self.room).chain(self.also.iter().copied())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub t_ns: u64,
    pub client: ClientId,
    pub kind: EventKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A WebSocket connection (the first, or a reconnect) is open (and its
    /// protocol session, e.g. STOMP's CONNECTED). `took_us`: from its first
    /// attempt (after waiting for a `workload.connect_rate` turn) to here,
    /// failed attempts and their back-off included; saturates at u32::MAX.
    Connected {
        node: u32,
        took_us: u32,
    },
    /// A send left the client; `scheduled_ns` is when the schedule wanted it
    /// (latency counts from there). A resend repeats the event.
    Send {
        room: RoomIdx,
        msg: MsgNo,
        scheduled_ns: u64,
        /// What every subscriber must receive (the chat text, or the whole
        /// STOMP body the harness wrote; see `system.stomp.text`).
        body: BodyDigest,
    },
    Ack {
        room: RoomIdx,
        msg: MsgNo,
        seq: u64,
    },
    /// A subscribe request left the client (the room is "on the wire" for
    /// this connection from here until `Left`).
    Subscribing {
        room: RoomIdx,
        after: Option<u64>,
    },
    /// The server confirmed a subscription; the client is owed every
    /// message with `seq > after.unwrap_or(head)` from here on.
    Subscribed {
        room: RoomIdx,
        head: u64,
        after: Option<u64>,
    },
    /// A `subscribe` was answered with an `error` frame (the client retries).
    SubscribeRefused {
        room: RoomIdx,
    },
    /// A chat message arrived. `room` is the room its labels name (the
    /// home room when they name none; `label` says so).
    Deliver {
        room: RoomIdx,
        msg: MsgNo,
        seq: u64,
        /// None: this protocol's settings give no way to read the body.
        body: Option<BodyDigest>,
        label: Label,
        /// STOMP `message-id`, hashed ([`id_hash`]); 0: none.
        message_id: u64,
    },
    /// The client left a room (unsubscribe sent): nothing sent from here
    /// on is owed to it in that room.
    Leaving {
        room: RoomIdx,
    },
    /// The server confirmed the unsubscribe: from here until the next
    /// `Subscribing`, a delivery of that room is a leak.
    Left {
        room: RoomIdx,
    },
    /// An `error` frame; `msg` when it names one of our sends.
    Error {
        msg: Option<MsgNo>,
    },
    /// The connection closed (close code if the server sent one); the
    /// client reconnects.
    Closed {
        code: Option<u16>,
    },
    /// The client stopped trying for good before the run ended (e.g. the
    /// WebSocket upgrade was refused with this HTTP status).
    GaveUp {
        http_status: Option<u16>,
    },
    /// An intruder's attempt on a room it may not use, and the system's
    /// answer (recorded when it came; the attempt began at `started_ns`).
    Probe {
        room: RoomIdx,
        attempt: Attempt,
        answer: Answer,
        started_ns: u64,
    },
    /// A send was due but not made: the client already had
    /// `workload.max_pending` sends waiting for their ack. It never left the
    /// client (nothing is owed for it); throughput counts it as dropped.
    Dropped {
        room: RoomIdx,
        msg: MsgNo,
        scheduled_ns: u64,
    },
    /// An `expiring` intruder's credentials expired here: nothing of the
    /// room sent from here on may reach it.
    RightsEnded {
        room: RoomIdx,
    },
}

impl EventKind {
    /// The same event with its room mapped by `f` (None when `f` has no
    /// room for it); events without a room pass unchanged. The one place
    /// that knows which events carry a room (merging and splitting shards
    /// renumber them).
    pub fn with_room(self, f: impl FnOnce(RoomIdx) -> Option<RoomIdx>) -> Option<Self> {
        use EventKind::*;
        Some(match self {
            Send { room, msg, scheduled_ns, body } => Send { room: f(room)?, msg, scheduled_ns, body },
            Ack { room, msg, seq } => Ack { room: f(room)?, msg, seq },
            Subscribing { room, after } => Subscribing { room: f(room)?, after },
            Subscribed { room, head, after } => Subscribed { room: f(room)?, head, after },
            SubscribeRefused { room } => SubscribeRefused { room: f(room)? },
            Deliver { room, msg, seq, body, label, message_id } => Deliver { room: f(room)?, msg, seq, body, label, message_id },
            Leaving { room } => Leaving { room: f(room)? },
            Left { room } => Left { room: f(room)? },
            Probe { room, attempt, answer, started_ns } => Probe { room: f(room)?, attempt, answer, started_ns },
            Dropped { room, msg, scheduled_ns } => Dropped { room: f(room)?, msg, scheduled_ns },
            RightsEnded { room } => RightsEnded { room: f(room)? },
            Connected { .. } | Error { .. } | Closed { .. } | GaveUp { .. } => self,
        })
    }
}

/// One stored message as history shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub seq: u64,
    pub msg: MsgNo,
    /// None where the source gives no body.
    pub body: Option<BodyDigest>,
}

impl Stored {
    pub fn new(seq: u64, msg: MsgNo, body: Option<BodyDigest>) -> Self {
        Self { seq, msg, body }
    }
}

/// One room's stored messages as read back after the run, in `seq` order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomHistory {
    pub entries: Vec<Stored>,
    /// False when history could not be read (a finding, `history_unavailable`).
    pub complete: bool,
}

/// How the workload's sending ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    /// Every send acked, every client connected and subscribed, every
    /// subscriber caught up, before `drain_timeout`.
    pub completed: bool,
    pub took_ns: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceMeta {
    pub scenario: String,
    pub mode: crate::subject::Subject,
    pub seed: u64,
    pub provider: String,
    pub backend: String,
    /// Sends scheduled before this are left out of latency figures.
    pub warmup_ns: u64,
    /// When the workload's sending window started.
    pub sending_started_ns: u64,
    /// When the workload's sending window ended.
    pub sending_ended_ns: u64,
    /// When recording stopped (after draining).
    pub ended_ns: u64,
    /// The scenario's checks, so `chatbench check` re-judges the trace
    /// offline with the same switches and thresholds.
    pub checks: crate::scenario::Checks,
    /// The workload's load (open rate or closed loop), for offered rates
    /// and report labels.
    pub load: Option<crate::scenario::Load>,
    pub drain: DrainRecord,
    /// Where `history` was read from (the oracle).
    pub history_source: String,
    pub backend_is_real: bool,
    pub nodes: u32,
    /// The faults the nemesis applied, in order.
    pub faults: Vec<FaultRecord>,
    /// How late the harness's event loop woke (is the generator keeping up?).
    pub loop_lag: crate::resources::LoopLag,
    /// CPU and memory of the harness, the nodes and the backends, per second.
    pub resources: Vec<crate::resources::ResourceSample>,
    /// Cores of the machine the run was on.
    pub cores: u32,
    /// This trace is shard `index` of `count` (room-affine), if sharded.
    pub shard: Option<ShardOf>,
    /// Wall-clock time of trace ns 0, ns since the Unix epoch.
    pub origin_unix_ns: u64,
    /// Merged traces: the shards that never reported.
    pub missing_shards: Vec<u32>,
    /// Clients whose connection the server refused for good, with its
    /// answer (e.g. a STOMP ERROR to CONNECT), by client id.
    pub refusals: Vec<(ClientId, String)>,
    /// The wire the clients spoke (`json`, `stomp`).
    pub protocol: String,
    /// What the system under test declared it promises (what is checked).
    pub guarantees: crate::scenario::Guarantees,
    /// What the generated message text looked like (`workload.message_text`).
    pub message_text: String,
}

/// One shard of a sharded run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardOf {
    pub index: u32,
    pub count: u32,
}

/// Not `I/N` with 0 <= I < N.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shard {spec:?}: {why}")]
pub struct BadShard {
    pub spec: String,
    pub why: &'static str,
}

impl std::str::FromStr for ShardOf {
    type Err = BadShard;

    /// `I/N`, 0 <= I < N.
    fn from_str(s: &str) -> Result<Self, BadShard> {
        let bad = |why| BadShard { spec: s.to_owned(), why };
        let (i, n) = s.split_once('/').ok_or_else(|| bad("expected I/N, e.g. 0/3"))?;
        let (index, count) = (i.trim().parse::<u32>(), n.trim().parse::<u32>());
        match (index, count) {
            (Ok(index), Ok(count)) if count >= 1 && index < count => Ok(ShardOf { index, count }),
            _ => Err(bad("need 0 <= I < N")),
        }
    }
}

impl ShardOf {
    /// Whether room `room` (its index in the whole workload) is this shard's.
    pub fn owns_room(self, room: u32) -> bool {
        room % self.count == self.index
    }
}

/// One applied fault: what, where, and when it started and ended (trace ns).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub action: String,
    pub node: Option<u32>,
    pub start_ns: u64,
    /// When the fault was over (node back and healthy, backend answering, …);
    /// equal to `start_ns` for instantaneous faults.
    pub end_ns: u64,
    /// Set when applying the fault failed.
    pub error: Option<String>,
    /// The clients it concerns, `[first, first + count)`; None: all. A
    /// merged trace scopes each shard's faults to that shard's clients
    /// (each shard faults its own nodes).
    pub clients: Option<(u32, u32)>,
}

impl FaultRecord {
    /// Whether the fault concerns client `client`.
    pub fn concerns(&self, client: ClientId) -> bool {
        self.clients.is_none_or(|(first, count)| client >= first && client - first < count)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub version: u32,
    pub meta: TraceMeta,
    pub rooms: Vec<String>,
    pub clients: Vec<ClientInfo>,
    pub events: Vec<Event>,
    /// Indexed like `rooms`.
    pub history: Vec<RoomHistory>,
    /// Each room's history as the system's own history API served it
    /// (paged), indexed like `rooms`; empty when the system declares none.
    #[serde(default)]
    pub api_history: Vec<RoomHistory>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("trace {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("trace {path}: not a chatbench trace or corrupt: {source}")]
    Decode {
        path: String,
        #[source]
        source: postcard::Error,
    },
    #[error("trace {path}: version {found}, this chatbench reads version {TRACE_VERSION}")]
    Version { path: String, found: u32 },
}

impl Trace {
    pub fn write(&self, path: &Path) -> Result<(), TraceError> {
        let bytes = postcard::to_stdvec(self).expect("a trace always serializes: plain integers and strings");
        std::fs::write(path, bytes).map_err(|source| TraceError::Io { path: path.display().to_string(), source })
    }

    pub fn read(path: &Path) -> Result<Self, TraceError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| TraceError::Io { path: shown.clone(), source })?;
        let trace: Trace = postcard::from_bytes(&bytes).map_err(|source| TraceError::Decode { path: shown.clone(), source })?;
        if trace.version != TRACE_VERSION {
            return Err(TraceError::Version { path: shown, found: trace.version });
        }
        Ok(trace)
    }

    /// Merge per-client buffers into one time-ordered event list.
    pub fn merge(buffers: Vec<Vec<Event>>) -> Vec<Event> {
        let mut events: Vec<Event> = Vec::with_capacity(buffers.iter().map(Vec::len).sum());
        for buffer in buffers {
            events.extend(buffer);
        }
        events.sort_by_key(|e| (e.t_ns, e.client));
        events
    }
}

/// The harness's one clock: nanoseconds since the run started.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    /// Wall-clock time at `origin`, ns since the Unix epoch: lines up the
    /// traces of shards that ran on different machines.
    origin_unix_ns: u64,
}

impl Clock {
    pub fn start() -> Self {
        let origin_unix_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Self { origin: Instant::now(), origin_unix_ns }
    }

    pub fn origin_unix_ns(&self) -> u64 {
        self.origin_unix_ns
    }

    /// Trace ns of a wall-clock instant (0 if it is before the origin).
    pub fn ns_of_unix_ns(&self, unix_ns: u64) -> u64 {
        unix_ns.saturating_sub(self.origin_unix_ns)
    }

    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    pub fn instant_at(&self, ns: u64) -> Instant {
        self.origin + std::time::Duration::from_nanos(ns)
    }
}

/// A client's event buffer.
pub struct Recorder {
    client: ClientId,
    clock: Clock,
    events: Vec<Event>,
}

impl Recorder {
    pub fn new(client: ClientId, clock: Clock, capacity: usize) -> Self {
        Self { client, clock, events: Vec::with_capacity(capacity) }
    }

    #[inline]
    pub fn record(&mut self, kind: EventKind) -> u64 {
        let t_ns = self.clock.now_ns();
        self.events.push(Event { t_ns, client: self.client, kind });
        t_ns
    }

    pub fn into_events(self) -> Vec<Event> {
        self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_file_and_rejects_garbage() {
        let trace = Trace {
            version: TRACE_VERSION,
            rooms: vec!["r0".into()],
            clients: vec![ClientInfo { role: Role::Sender, planned_sends: Some(1), ..Default::default() }],
            events: vec![Event { t_ns: 5, client: 0, kind: EventKind::Ack { room: 0, msg: 1, seq: 1 } }],
            history: vec![RoomHistory { entries: vec![Stored::new(1, 1, Some(BodyDigest::of(b"hi")))], complete: true }],
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.bin");
        trace.write(&path).unwrap();
        assert_eq!(Trace::read(&path).unwrap(), trace);
        std::fs::write(&path, b"not a trace").unwrap();
        assert!(Trace::read(&path).is_err());
    }

    #[test]
    fn wire_ids_round_trip_and_foreign_ids_do_not_parse() {
        assert_eq!(wire_id(77309411352), "m77309411352");
        assert_eq!(parse_wire_id(&wire_id(77309411352)), Some(77309411352));
        assert_eq!(parse_wire_id("77309411352"), None);
        assert_eq!(parse_wire_id("hello"), None);
    }

    #[test]
    fn merge_orders_by_time() {
        let e = |t, c| Event { t_ns: t, client: c, kind: EventKind::Closed { code: None } };
        let merged = Trace::merge(vec![vec![e(3, 0), e(9, 0)], vec![e(1, 1), e(5, 1)]]);
        assert_eq!(merged.iter().map(|e| e.t_ns).collect::<Vec<_>>(), vec![1, 3, 5, 9]);
    }
}
