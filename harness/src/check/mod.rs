//! Checkers: pure functions from a recorded [`Trace`] to findings. Nothing
//! here does I/O or talks to the system under test (Jepsen's rule), which is
//! what lets them be property-tested against traces with known violations.
//!
//! Checks are composed by name: [`Check`] is the one table of what a run is
//! judged on, every [`FindingKind`] belongs to exactly one check, and a
//! scenario turns a check off only with a reason (see `scenario::Switch`).
//!
//! A send that got no ack is *indeterminate* (Maelstrom's rule): it may or
//! may not be stored. [`TraceIndex`] resolves each one against the stored
//! history before anything is judged — stored means it is owed exactly like
//! an acked message, not stored means it must reach no one — and what
//! cannot be resolved is itself a finding.

pub mod authorization;
pub mod delivery;
pub mod freshness;
pub mod generator;
pub mod history;
pub mod latency;
pub mod liveness;
pub mod ordering;
pub mod routing;
pub mod threshold;
pub mod throughput;

pub mod synthetic;

#[cfg(test)]
mod no_ack_tests;
#[cfg(test)]
pub(crate) mod seq_less_tests;

use crate::scenario::Checks;
use crate::trace::{BodyDigest, ClientId, EventKind, FOREIGN_MSG, Label, MsgNo, RoomIdx, Trace};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The checks a run is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Check {
    ExactlyOnce,
    PerRoomTotal,
    PerSenderFifo,
    LiveEqualsHistory,
    Ready,
    Attempted,
    Answered,
    Resolved,
    Drained,
    Progress,
    Recovery,
    Routing,
    Authorization,
    Freshness,
}

impl Check {
    pub const ALL: [Check; 14] = [
        Check::ExactlyOnce,
        Check::PerRoomTotal,
        Check::PerSenderFifo,
        Check::LiveEqualsHistory,
        Check::Ready,
        Check::Attempted,
        Check::Answered,
        Check::Resolved,
        Check::Drained,
        Check::Progress,
        Check::Recovery,
        Check::Routing,
        Check::Authorization,
        Check::Freshness,
    ];

    /// The name reports and scenario files use (its key path under `checks`).
    pub fn name(self) -> &'static str {
        match self {
            Check::ExactlyOnce => "exactly_once",
            Check::PerRoomTotal => "ordering.per_room_total",
            Check::PerSenderFifo => "ordering.per_sender_fifo",
            Check::LiveEqualsHistory => "live_equals_history",
            Check::Ready => "liveness.ready",
            Check::Attempted => "liveness.attempted",
            Check::Answered => "liveness.answered",
            Check::Resolved => "liveness.resolved",
            Check::Drained => "liveness.drained",
            Check::Progress => "liveness.progress",
            Check::Recovery => "recovery",
            Check::Routing => "routing",
            Check::Authorization => "authorization",
            Check::Freshness => "freshness",
        }
    }

    /// Why the scenario turned this check off (None: it runs).
    pub fn off_reason(self, checks: &Checks) -> Option<&str> {
        let l = &checks.liveness;
        let switch = match self {
            Check::ExactlyOnce => &checks.exactly_once,
            Check::PerRoomTotal => &checks.ordering.per_room_total,
            Check::PerSenderFifo => &checks.ordering.per_sender_fifo,
            Check::LiveEqualsHistory => &checks.live_equals_history,
            Check::Ready => &l.ready,
            Check::Attempted => &l.attempted,
            Check::Answered => &l.answered,
            Check::Resolved => &l.resolved,
            Check::Drained => &l.drained,
            Check::Progress => &l.progress,
            Check::Recovery => return checks.recovery.off.as_deref(),
            Check::Routing => &checks.routing,
            Check::Authorization => &checks.authorization,
            Check::Freshness => &checks.freshness,
        };
        switch.off_reason()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Owed (acked, or stored though unacked), never delivered to a subscriber that covered it.
    Lost,
    /// Delivered more than once to one subscriber.
    Duplicated,
    /// Delivered, but never sent, or sent and never stored.
    Phantom,
    /// Never acked and history unknown: delivered to some covering subscribers but not all.
    Agreement,
    /// Delivered to a subscriber that was never owed it (at or below the
    /// head or `after` it subscribed at, sent before it subscribed).
    BeforeStart,
    /// One message stored at two `seq`s of its room.
    StoredTwice,
    /// A subscriber received a room's messages out of `seq` order.
    OrderViolation,
    /// Two observations disagree on a message's `seq` (or a `seq`'s message),
    /// e.g. a second ack with another `seq`.
    SeqConflict,
    /// A sender's messages were stored out of the order it sent them.
    FifoViolation,
    /// What was delivered, acked or stored differs from the room's history.
    HistoryMismatch,
    /// The stored history skips a `seq`.
    HistoryGap,
    /// A room's history could not be read back.
    HistoryUnavailable,
    /// A client was not connected (and subscribed) when sending started.
    NotReady,
    /// A sender attempted fewer sends than its schedule held.
    Unattempted,
    /// A client stopped trying before the run ended.
    GaveUp,
    /// A shard of a sharded run never reported: its clients' work is unknown.
    ShardMissing,
    /// A send got neither ack nor error while its connection stayed open.
    Unanswered,
    /// A send that got no ack could not be resolved against history.
    Unresolved,
    /// The drain did not finish within `drain_timeout`.
    DrainIncomplete,
    /// A room with senders and subscribers saw no ack or no delivery.
    NoProgress,
    /// A client was disconnected or unsubscribed for longer than `recovery.within`.
    Outage,
    /// After a fault, a client went without a delivery (subscribers) or an
    /// ack (senders) for longer than `recovery.within`.
    NotRecovered,
    /// A delivered (or stored, or served) body differs from the one sent:
    /// altered, truncated or another message's.
    Corrupted,
    /// A message reached a connection not subscribed to its room: it never
    /// joined it, or its unsubscribe was confirmed.
    Leak,
    /// A delivery's routing labels (room, STOMP destination, subscription,
    /// message-id) do not say the room it was sent to, as a real client
    /// that dispatches by them needs.
    Misrouted,
    /// An owed message arrived later than `checks.fresh_within` after it
    /// was due, outside any fault's window.
    Stale,
    /// An intruder's attempt on a room it may not use was not refused with
    /// a definite error: it was done, or it got no answer.
    Unrefused,
}

impl FindingKind {
    pub const ALL: [FindingKind; 27] = [
        FindingKind::Lost,
        FindingKind::Duplicated,
        FindingKind::Phantom,
        FindingKind::Agreement,
        FindingKind::BeforeStart,
        FindingKind::StoredTwice,
        FindingKind::OrderViolation,
        FindingKind::SeqConflict,
        FindingKind::FifoViolation,
        FindingKind::HistoryMismatch,
        FindingKind::HistoryGap,
        FindingKind::HistoryUnavailable,
        FindingKind::NotReady,
        FindingKind::Unattempted,
        FindingKind::GaveUp,
        FindingKind::ShardMissing,
        FindingKind::Unanswered,
        FindingKind::Unresolved,
        FindingKind::DrainIncomplete,
        FindingKind::NoProgress,
        FindingKind::Outage,
        FindingKind::NotRecovered,
        FindingKind::Corrupted,
        FindingKind::Leak,
        FindingKind::Misrouted,
        FindingKind::Stale,
        FindingKind::Unrefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Lost => "lost",
            FindingKind::Duplicated => "duplicated",
            FindingKind::Phantom => "phantom",
            FindingKind::Agreement => "agreement",
            FindingKind::BeforeStart => "before_start",
            FindingKind::StoredTwice => "stored_twice",
            FindingKind::OrderViolation => "order_violation",
            FindingKind::SeqConflict => "seq_conflict",
            FindingKind::FifoViolation => "fifo_violation",
            FindingKind::HistoryMismatch => "history_mismatch",
            FindingKind::HistoryGap => "history_gap",
            FindingKind::HistoryUnavailable => "history_unavailable",
            FindingKind::NotReady => "not_ready",
            FindingKind::Unattempted => "unattempted",
            FindingKind::GaveUp => "gave_up",
            FindingKind::ShardMissing => "shard_missing",
            FindingKind::Unanswered => "unanswered",
            FindingKind::Unresolved => "unresolved",
            FindingKind::DrainIncomplete => "drain_incomplete",
            FindingKind::NoProgress => "no_progress",
            FindingKind::Outage => "outage",
            FindingKind::NotRecovered => "not_recovered",
            FindingKind::Corrupted => "corrupted",
            FindingKind::Leak => "leak",
            FindingKind::Misrouted => "misrouted",
            FindingKind::Stale => "stale",
            FindingKind::Unrefused => "unrefused",
        }
    }

    /// The check this kind of finding fails.
    pub fn check(self) -> Check {
        use FindingKind::*;
        match self {
            Lost | Duplicated | Phantom | Agreement | BeforeStart | StoredTwice | Corrupted => Check::ExactlyOnce,
            OrderViolation | SeqConflict => Check::PerRoomTotal,
            FifoViolation => Check::PerSenderFifo,
            HistoryMismatch | HistoryGap | HistoryUnavailable => Check::LiveEqualsHistory,
            NotReady => Check::Ready,
            Unattempted | GaveUp | ShardMissing => Check::Attempted,
            Unanswered => Check::Answered,
            Unresolved => Check::Resolved,
            DrainIncomplete => Check::Drained,
            NoProgress => Check::Progress,
            Outage | NotRecovered => Check::Recovery,
            Leak | Misrouted => Check::Routing,
            Stale => Check::Freshness,
            Unrefused => Check::Authorization,
        }
    }
}

/// One violation, with everything needed to find it in the trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub msg: Option<MsgNo>,
    pub room: Option<RoomIdx>,
    pub seq: Option<u64>,
    /// The client concerned (subscriber, or sender for send findings).
    pub client: Option<ClientId>,
    pub node: Option<u32>,
    /// The fault concerned (index into the trace's faults).
    #[serde(default)]
    pub fault: Option<u32>,
    /// When it was sent / observed, in trace nanoseconds.
    pub sent_ns: Option<u64>,
    pub observed_ns: Option<u64>,
    pub detail: String,
}

impl Finding {
    /// The one constructor; the builder methods below fill in the rest.
    pub(crate) fn new(kind: FindingKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            msg: None,
            room: None,
            seq: None,
            client: None,
            node: None,
            fault: None,
            sent_ns: None,
            observed_ns: None,
            detail: detail.into(),
        }
    }

    pub(crate) fn room(mut self, room: RoomIdx) -> Self {
        self.room = Some(room);
        self
    }

    /// A message of ours (the foreign marker is left out).
    pub(crate) fn msg(mut self, msg: MsgNo) -> Self {
        self.msg = (msg != FOREIGN_MSG).then_some(msg);
        self
    }

    pub(crate) fn seq(mut self, seq: u64) -> Self {
        self.seq = Some(seq);
        self
    }

    pub(crate) fn client(mut self, client: ClientId, node: u32) -> Self {
        self.client = Some(client);
        self.node = Some(node);
        self
    }

    pub(crate) fn fault(mut self, fault: usize) -> Self {
        self.fault = Some(fault as u32);
        self
    }

    pub(crate) fn sent(mut self, t_ns: u64) -> Self {
        self.sent_ns = Some(t_ns);
        self
    }

    pub(crate) fn observed(mut self, t_ns: u64) -> Self {
        self.observed_ns = Some(t_ns);
        self
    }
}

/// What became of a send, after resolving the indeterminate ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Acked with this `seq` (the first ack).
    Acked(u64),
    /// Never acked, but history holds it at this `seq`: owed like an acked one.
    Stored(u64),
    /// Never acked and not in (complete) history: must reach no one.
    NotStored,
    /// Never acked (`ack: none`), no store to read, but delivered to some
    /// subscriber (with this `seq`): it happened, so it is owed like an
    /// acked one (the evidence rule).
    Delivered(u64),
    /// Never acked (`ack: none`), no store to read, delivered to no one
    /// although its connection stayed open `checks.confirm_after` past it:
    /// owed to every covering subscriber, so each of them lost it.
    Unconfirmed,
    /// Never acked and nothing tells whether it happened: its room's
    /// history could not be read, or (`ack: none`) it reached no one and
    /// its connection closed within `confirm_after`.
    Unknown,
}

impl Fate {
    /// The `seq` the message is owed at, if it is owed.
    pub fn owed_seq(self) -> Option<u64> {
        match self {
            Fate::Acked(seq) | Fate::Stored(seq) | Fate::Delivered(seq) => Some(seq),
            Fate::NotStored | Fate::Unconfirmed | Fate::Unknown => None,
        }
    }

    /// Owed to every covering subscriber (acked, stored, delivered
    /// somewhere, or unconfirmed).
    pub fn is_owed(self) -> bool {
        !matches!(self, Fate::NotStored | Fate::Unknown)
    }
}

/// A send as the checkers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendInfo {
    pub sender: ClientId,
    pub room: RoomIdx,
    pub first_sent_ns: u64,
    /// The last attempt before its first ack (or the last of all, if
    /// never acked): when the send that counted left the sender.
    pub last_sent_ns: u64,
    pub scheduled_ns: u64,
    /// `(seq, t_ns)` of the first ack.
    pub ack: Option<(u64, u64)>,
    pub fate: Fate,
    /// What every subscriber must receive.
    pub body: BodyDigest,
}

/// A delivery as the checkers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The room the message was sent to (its labels' room for messages
    /// no client sent).
    pub room: RoomIdx,
    /// The room its labels named.
    pub label_room: RoomIdx,
    pub msg: MsgNo,
    pub seq: u64,
    pub t_ns: u64,
    /// The first copy of this message to this subscriber.
    pub first_copy: bool,
    /// A first copy the subscriber was never owed (see [`FindingKind::BeforeStart`]).
    pub unrequested: bool,
    /// It came after the subscriber sent an unsubscribe and before its
    /// rejoin was confirmed (but not after the server confirmed the
    /// unsubscribe: that is a leak): in flight, allowed, and not its
    /// business (a copy the next membership gets again is not a
    /// duplicate). Bodies, labels and `seq`s are still judged.
    pub ignored: bool,
    pub body: Option<BodyDigest>,
    pub label: Label,
    pub message_id: u64,
}

/// Systems without `seq`: a subscriber that stayed subscribed this long
/// after a message's ack is owed it (1 s).
pub const SEQ_LESS_GRACE_NS: u64 = 1_000_000_000;

/// One membership of a subscriber in a room: from the confirmation of a
/// subscribe (after joining, or rejoining after it left) until it leaves.
/// Resubscribes after a reconnect continue the membership (they resume
/// with `after`), so what it is owed does not shrink when a connection
/// breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    /// Owed every `seq` above this: the `after`, else the `head`, of the
    /// confirmation that began it.
    pub start: u64,
    /// When that confirmation came. Anything first sent later is owed
    /// whatever `seq` it got (a bogus `head` cannot excuse a loss). None:
    /// never confirmed (the plan's start stands, and everything above it
    /// is owed).
    pub confirmed_ns: Option<u64>,
    pub end: EpochEnd,
    /// Highest `seq` delivered in it (with `seq`, everything owed up to
    /// it must have come: the room's sequence is gap-free).
    pub max_seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochEnd {
    /// Still a member at the end of the run.
    Open,
    /// Left (unsubscribe sent) at this time: owed what was acked at least
    /// the freshness window before, or is below `max_seq`.
    Left(u64),
    /// Gave up at this time: owed only up to `max_seq`.
    GaveUp(u64),
}

/// What one subscriber (or chatter) was owed in one of its rooms, and what
/// it got there.
#[derive(Debug, Clone, Default)]
pub struct SubscriberView {
    pub client: ClientId,
    pub node: u32,
    pub room: RoomIdx,
    /// Memberships in time order (at least one: a subscriber that never
    /// got a confirmation keeps the plan's start, owed everything above).
    pub epochs: Vec<Epoch>,
    /// Every subscription confirmation (resubscribes included), in time
    /// order: a catch-up is judged fresh from the confirmation it follows.
    pub confirmations: Vec<u64>,
    pub deliveries: Vec<Delivery>,
    /// When it gave up, if it did (a finding of its own).
    pub gave_up_ns: Option<u64>,
    /// The system declared no `seq` (guarantees.order is not `seq`): what is
    /// owed is decided by time alone, by the subscription intervals.
    pub seq_less: bool,
    /// Seq-less systems: from each confirmed subscription to the end of its
    /// connection or membership (u64::MAX while open).
    pub intervals: Vec<(u64, u64)>,
    /// How long before leaving a message must have been acked to be owed
    /// (the freshness window: a fresh system delivered it by then).
    pub leave_grace_ns: u64,
    /// The system declared `echo: false`: never owed its own messages.
    pub no_echo: bool,
}

impl SubscriberView {
    /// Owed every `seq` above this in its first membership.
    pub fn start(&self) -> u64 {
        self.epochs.first().map_or(0, |e| e.start)
    }

    /// When its first subscription was confirmed.
    pub fn subscribed_ns(&self) -> Option<u64> {
        self.epochs.first().and_then(|e| e.confirmed_ns)
    }

    /// Whether this subscriber is owed `send`, stored at `seq`: surely, or
    /// because it stayed in the room for the freshness window after the
    /// ack (see [`Self::owes_surely`]).
    pub fn owes(&self, send: &SendInfo, seq: u64) -> bool {
        self.owed(send, seq, true)
    }

    /// Owed whatever the system's speed: it was a member when the message
    /// was stored and still is at the end (or got a later `seq` in that
    /// membership). A message owed only because the subscriber stayed the
    /// freshness window past its ack, and then left without it, was not
    /// necessarily lost: it may have been on its way (a `stale` finding,
    /// not `lost`).
    pub fn owes_surely(&self, send: &SendInfo, seq: u64) -> bool {
        self.owed(send, seq, false)
    }

    fn owed(&self, send: &SendInfo, seq: u64, in_time: bool) -> bool {
        if send.room != self.room || (self.no_echo && send.sender == self.client) {
            return false;
        }
        let acked_ns = send.ack.map_or(send.first_sent_ns, |(_, t)| t);
        if self.seq_less {
            // Owed when it was sent within one subscription that lasted at
            // least SEQ_LESS_GRACE past its ack: a system without `seq`
            // cannot replay what a subscriber missed while it was away (and
            // does not promise to), and a broker delivers a moment after
            // its receipt, so a subscriber that left right then may miss it.
            return self.intervals.iter().any(|&(from, to)| send.first_sent_ns >= from && acked_ns.saturating_add(SEQ_LESS_GRACE_NS) <= to);
        }
        self.epochs.iter().any(|e| {
            let by_seq = seq > e.start;
            let by_time = e.confirmed_ns.is_some_and(|t| send.first_sent_ns > t);
            (by_seq || by_time)
                && match e.end {
                    EpochEnd::Open => true,
                    EpochEnd::GaveUp(_) => seq <= e.max_seq,
                    EpochEnd::Left(at) => seq <= e.max_seq || (in_time && acked_ns.saturating_add(self.leave_grace_ns) <= at),
                }
        })
    }

    /// The membership a delivery at `t_ns` is judged by: the latest one
    /// confirmed by then.
    fn epoch_at(&self, t_ns: u64) -> Option<&Epoch> {
        self.epochs.iter().rev().find(|e| e.confirmed_ns.is_some_and(|c| c <= t_ns))
    }

    /// The latest confirmation at or before `t_ns`.
    pub fn confirmed_before(&self, t_ns: u64) -> Option<u64> {
        let i = self.confirmations.partition_point(|&c| c <= t_ns);
        i.checked_sub(1).map(|i| self.confirmations[i])
    }
}

/// A delivery to a connection that was not subscribed to the message's
/// room: it never joined it, or its unsubscribe was confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leak {
    pub client: ClientId,
    pub node: u32,
    /// The message's room (where it was sent).
    pub room: RoomIdx,
    pub msg: MsgNo,
    pub seq: u64,
    pub t_ns: u64,
    /// The client had been subscribed and its unsubscribe was confirmed.
    pub after_left: bool,
}

/// The trace, indexed once for all checkers.
pub struct TraceIndex<'a> {
    pub trace: &'a Trace,
    pub sends: HashMap<MsgNo, SendInfo>,
    /// Messages in the order they were first sent.
    pub send_order: Vec<MsgNo>,
    /// One per subscribing client and room it joins.
    pub subscribers: Vec<SubscriberView>,
    pub leaks: Vec<Leak>,
    /// Per client: indexes of its events, in time order.
    pub events_of: Vec<Vec<u32>>,
}

impl<'a> TraceIndex<'a> {
    pub fn build(trace: &'a Trace) -> Self {
        let mut sends: HashMap<MsgNo, SendInfo> = HashMap::new();
        let mut send_order = Vec::new();
        // The first delivery of each message, to anyone: evidence it
        // happened (only a system without acks is judged by it).
        let no_acks = trace.meta.guarantees.ack == crate::scenario::AckGuarantee::None;
        let mut delivered: HashMap<MsgNo, u64> = HashMap::new();
        let mut events_of: Vec<Vec<u32>> = vec![Vec::new(); trace.clients.len()];
        // An intruder's send answered with an error was refused: definite.
        let mut refused: std::collections::HashSet<MsgNo> = std::collections::HashSet::new();
        let intruder = |c: ClientId| trace.clients.get(c as usize).is_some_and(|i| i.role.intruder().is_some());
        for (i, event) in trace.events.iter().enumerate() {
            if let Some(list) = events_of.get_mut(event.client as usize) {
                list.push(i as u32);
            }
            match event.kind {
                EventKind::Send { room, msg, scheduled_ns, body } => {
                    let send = sends.entry(msg).or_insert_with(|| {
                        send_order.push(msg);
                        SendInfo {
                            sender: event.client,
                            room,
                            first_sent_ns: event.t_ns,
                            last_sent_ns: event.t_ns,
                            scheduled_ns,
                            ack: None,
                            fate: Fate::Unknown,
                            body,
                        }
                    });
                    if send.ack.is_none() {
                        send.last_sent_ns = event.t_ns;
                    }
                }
                EventKind::Ack { msg, seq, .. } => {
                    if let Some(send) = sends.get_mut(&msg) {
                        send.ack.get_or_insert((seq, event.t_ns));
                    }
                }
                EventKind::Deliver { msg, seq, .. } if no_acks => {
                    delivered.entry(msg).or_insert(seq);
                }
                EventKind::Error { msg: Some(msg) } if intruder(event.client) => {
                    refused.insert(msg);
                }
                _ => {}
            }
        }
        resolve(trace, &mut sends, &delivered, &events_of, &refused);
        let mut subscribers = Vec::new();
        let mut leaks = Vec::new();
        for (id, events) in events_of.iter().enumerate() {
            let (views, leaked) = client_views(trace, id as ClientId, events, &sends);
            subscribers.extend(views);
            leaks.extend(leaked);
        }
        Self { trace, sends, send_order, subscribers, leaks, events_of }
    }

    /// Every intruder's events with its credentials and plan, in time
    /// order per intruder (nothing to walk in a trace without intruders).
    pub fn intruder_events(&self) -> impl Iterator<Item = (crate::trace::Credential, &crate::trace::ClientInfo, &crate::trace::Event)> {
        self.trace
            .clients
            .iter()
            .zip(&self.events_of)
            .filter_map(|(info, events)| Some((info.role.intruder()?, info, events)))
            .flat_map(move |(credential, info, events)| events.iter().map(move |&i| (credential, info, &self.trace.events[i as usize])))
    }

    /// The node a client was planned on (for findings).
    pub fn node_of(&self, client: ClientId) -> u32 {
        self.trace.clients.get(client as usize).map_or(0, |c| c.node)
    }
}

/// Settle every send's [`Fate`]: acked, or else whatever the history of its
/// room says (a message's first stored `seq`); without history, for a
/// system that sends no acks, the evidence rule (delivered somewhere, or
/// unconfirmed after `confirm_after` on an open connection); else unknown.
///
/// An intruder's send refused with an error did not happen (a definite
/// answer) unless complete history says it was stored anyway (which the
/// authorization check reports).
fn resolve(
    trace: &Trace,
    sends: &mut HashMap<MsgNo, SendInfo>,
    delivered: &HashMap<MsgNo, u64>,
    events_of: &[Vec<u32>],
    refused: &std::collections::HashSet<MsgNo>,
) {
    let mut stored: HashMap<MsgNo, u64> = HashMap::new();
    for history in trace.history.iter().filter(|h| h.complete) {
        for e in &history.entries {
            stored.entry(e.msg).or_insert(e.seq);
        }
    }
    let no_acks = trace.meta.guarantees.ack == crate::scenario::AckGuarantee::None;
    let confirm_ns = trace.meta.checks.confirm_after.0.as_nanos() as u64;
    // The end of what was observed: the run stopped when the drain ended.
    let observed_until = trace.meta.sending_ended_ns.saturating_add(trace.meta.drain.took_ns);
    for (msg, send) in sends.iter_mut() {
        send.fate = match send.ack {
            Some((seq, _)) => Fate::Acked(seq),
            // `stored` spans every room; message numbers are unique per run.
            None if trace.history.get(send.room as usize).is_some_and(|h| h.complete) => {
                stored.get(msg).map_or(Fate::NotStored, |&seq| Fate::Stored(seq))
            }
            None if refused.contains(msg) => Fate::NotStored,
            None if no_acks => match delivered.get(msg) {
                Some(&seq) => Fate::Delivered(seq),
                None => {
                    let until = send.last_sent_ns.saturating_add(confirm_ns);
                    let open_until = connection_end(trace, &events_of[send.sender as usize], send.last_sent_ns).min(observed_until);
                    if open_until >= until { Fate::Unconfirmed } else { Fate::Unknown }
                }
            },
            None => Fate::Unknown,
        };
    }
}

/// When the connection a client had at `t_ns` ended: its next close (or
/// giving up), else never (u64::MAX).
fn connection_end(trace: &Trace, events: &[u32], t_ns: u64) -> u64 {
    let from = events.partition_point(|&i| trace.events[i as usize].t_ns <= t_ns);
    events[from..]
        .iter()
        .map(|&i| &trace.events[i as usize])
        .find(|e| matches!(e.kind, EventKind::Closed { .. } | EventKind::GaveUp { .. }))
        .map_or(u64::MAX, |e| e.t_ns)
}

/// One client's views (one per room it joins, if it subscribes) and the
/// deliveries it got for rooms it was not subscribed to. Each delivery is
/// classified once (first copy, unrequested) for every checker, and
/// counted in the room it was *sent* to, whatever its labels say (a
/// wrong label is a finding of its own, not a loss).
fn client_views(trace: &Trace, client: ClientId, events: &[u32], sends: &HashMap<MsgNo, SendInfo>) -> (Vec<SubscriberView>, Vec<Leak>) {
    let info = &trace.clients[client as usize];
    let seq_less = !trace.meta.guarantees.seq();
    let recovers = trace.meta.guarantees.history == crate::scenario::HistoryGuarantee::Recovery;
    let plan_start = info.after.unwrap_or(0);
    let leave_grace_ns = trace.meta.checks.fresh_within.0.as_nanos() as u64;
    let rooms: Vec<RoomIdx> = if info.role.subscribes() { info.rooms().collect() } else { Vec::new() };
    let mut views: Vec<SubscriberView> = rooms
        .iter()
        .map(|&room| SubscriberView {
            client,
            node: info.node,
            room,
            seq_less,
            leave_grace_ns,
            no_echo: !trace.meta.guarantees.echo,
            ..Default::default()
        })
        .collect();
    // Per view: currently a member (confirmed, not left since), and
    // leaving (unsubscribe sent, not subscribing again yet).
    let mut member = vec![false; views.len()];
    let mut leaving = vec![false; views.len()];
    let mut seen: Vec<std::collections::HashSet<MsgNo>> = vec![Default::default(); views.len()];
    // Rooms subscribed on the current connection, and rooms whose
    // unsubscribe was confirmed (until they are joined again).
    let mut on_wire: Vec<RoomIdx> = Vec::new();
    let mut left: Vec<RoomIdx> = Vec::new();
    let mut leaks = Vec::new();
    // An `expiring` intruder's expiry: what its room sent before it was
    // still its own.
    let mut rights_end: Option<u64> = None;
    let slot = |room: RoomIdx| rooms.iter().position(|&r| r == room);
    let close_interval = |view: &mut SubscriberView, t: u64| {
        if let Some(last) = view.intervals.last_mut().filter(|i| i.1 == u64::MAX) {
            last.1 = t;
        }
    };
    for &i in events {
        let event = &trace.events[i as usize];
        let t = event.t_ns;
        match event.kind {
            EventKind::Connected { .. } => on_wire.clear(),
            EventKind::Subscribing { room, .. } => {
                if !on_wire.contains(&room) {
                    on_wire.push(room);
                }
                left.retain(|&r| r != room);
            }
            EventKind::Subscribed { room, head, after } => {
                let Some(v) = slot(room) else { continue };
                let view = &mut views[v];
                view.confirmations.push(t);
                // A rejoin is live from its confirmation: what came while it
                // was being requested was the old subscription's, in flight.
                leaving[v] = false;
                if !member[v] {
                    member[v] = true;
                    view.epochs.push(Epoch { start: after.unwrap_or(head), confirmed_ns: Some(t), end: EpochEnd::Open, max_seq: 0 });
                }
                if view.intervals.last().is_none_or(|i| i.1 != u64::MAX) {
                    view.intervals.push((t, u64::MAX));
                }
            }
            EventKind::Leaving { room } => {
                let Some(v) = slot(room) else { continue };
                leaving[v] = true;
                if std::mem::take(&mut member[v])
                    && let Some(e) = views[v].epochs.last_mut()
                {
                    e.end = EpochEnd::Left(t);
                }
                close_interval(&mut views[v], t);
            }
            EventKind::Left { room } => {
                on_wire.retain(|&r| r != room);
                if !left.contains(&room) {
                    left.push(room);
                }
            }
            // With connection state recovery a subscription outlives its
            // connection: what was sent while it was away is owed.
            EventKind::Closed { .. } if !recovers => {
                for view in &mut views {
                    close_interval(view, t);
                }
            }
            EventKind::GaveUp { .. } => {
                for (v, view) in views.iter_mut().enumerate() {
                    view.gave_up_ns = Some(t);
                    close_interval(view, t);
                    if std::mem::take(&mut member[v])
                        && let Some(e) = view.epochs.last_mut()
                    {
                        e.end = EpochEnd::GaveUp(t);
                    }
                }
            }
            EventKind::RightsEnded { .. } => rights_end = Some(t),
            EventKind::Deliver { room: label_room, msg, seq, body, label, message_id } => {
                let send = sends.get(&msg);
                let room = send.map_or(label_room, |s| s.room);
                let subscribed_here = on_wire.contains(&room);
                let v = slot(room).filter(|_| subscribed_here);
                let Some(v) = v else {
                    if rights_end.is_some_and(|end| send.is_some_and(|s| s.first_sent_ns < end)) {
                        continue;
                    }
                    // An intruder's own room (its credentials grant it).
                    if info.granted == Some(room) {
                        continue;
                    }
                    leaks.push(Leak { client, node: info.node, room, msg, seq, t_ns: t, after_left: left.contains(&room) });
                    continue;
                };
                let view = &mut views[v];
                let mut delivery = Delivery {
                    room,
                    label_room,
                    msg,
                    seq,
                    t_ns: t,
                    first_copy: false,
                    unrequested: false,
                    ignored: leaving[v],
                    body,
                    label,
                    message_id,
                };
                if delivery.ignored {
                    view.deliveries.push(delivery);
                    continue;
                }
                let first_copy = seen[v].insert(msg);
                let owed = match (view.epoch_at(t), send) {
                    // Without `seq` nothing tells a stray copy from one routed
                    // just before the confirmation: only duplicates count.
                    _ if seq_less => true,
                    (None, _) => false,
                    (Some(e), Some(send)) => seq > e.start || e.confirmed_ns.is_some_and(|c| send.first_sent_ns > c),
                    // Foreign or unsent: judged as a phantom instead.
                    (Some(_), None) => true,
                };
                // Only a current membership's deliveries say how far it got.
                if member[v]
                    && let Some(e) = view.epochs.last_mut()
                {
                    e.max_seq = e.max_seq.max(seq);
                }
                delivery.first_copy = first_copy;
                delivery.unrequested = first_copy && !owed;
                view.deliveries.push(delivery);
            }
            _ => {}
        }
    }
    for view in &mut views {
        if view.epochs.is_empty() {
            // Never confirmed: owed everything above the plan's start.
            let end = view.gave_up_ns.map_or(EpochEnd::Open, EpochEnd::GaveUp);
            view.epochs.push(Epoch { start: plan_start, confirmed_ns: None, end, max_seq: 0 });
        }
        if let Some(max) = view.deliveries.iter().map(|d| d.seq).max()
            && let Some(e) = view.epochs.iter_mut().rev().find(|e| matches!(e.end, EpochEnd::GaveUp(_)) && e.max_seq == 0)
        {
            // A subscriber that gave up before any confirmation is owed
            // what it got up to (as before memberships existed).
            e.max_seq = max;
        }
    }
    (views, leaks)
}

/// Every checker's findings over one trace, sorted for stable output.
pub fn all_findings(trace: &Trace, checks: &Checks) -> Vec<Finding> {
    let index = TraceIndex::build(trace);
    findings_of(&index, checks)
}

/// [`all_findings`] over an index already built.
pub fn findings_of(index: &TraceIndex, checks: &Checks) -> Vec<Finding> {
    let mut findings = delivery::check(index);
    findings.extend(ordering::check_total_order(index));
    findings.extend(ordering::check_sender_fifo(index));
    findings.extend(history::check(index));
    findings.extend(liveness::check(index, checks));
    findings.extend(routing::check(index));
    findings.extend(authorization::check(index));
    findings.extend(freshness::check(index, checks));
    findings.sort_by_key(|f| (f.kind, f.room, f.seq, f.msg, f.client, f.fault));
    findings
}
