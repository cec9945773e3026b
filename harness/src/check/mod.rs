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

pub mod delivery;
pub mod generator;
pub mod history;
pub mod latency;
pub mod liveness;
pub mod ordering;
pub mod throughput;

pub mod synthetic;

#[cfg(test)]
mod seq_less_tests;

use crate::scenario::Checks;
use crate::trace::{ClientId, EventKind, FOREIGN_MSG, MsgNo, RoomIdx, Trace};
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
}

impl Check {
    pub const ALL: [Check; 11] = [
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
}

impl FindingKind {
    pub const ALL: [FindingKind; 22] = [
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
        }
    }

    /// The check this kind of finding fails.
    pub fn check(self) -> Check {
        use FindingKind::*;
        match self {
            Lost | Duplicated | Phantom | Agreement | BeforeStart | StoredTwice => Check::ExactlyOnce,
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
    /// Never acked and its room's history could not be read.
    Unknown,
}

impl Fate {
    /// The `seq` the message is owed at, if it is owed.
    pub fn owed_seq(self) -> Option<u64> {
        match self {
            Fate::Acked(seq) | Fate::Stored(seq) => Some(seq),
            Fate::NotStored | Fate::Unknown => None,
        }
    }
}

/// A send as the checkers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendInfo {
    pub sender: ClientId,
    pub room: RoomIdx,
    pub first_sent_ns: u64,
    pub scheduled_ns: u64,
    /// `(seq, t_ns)` of the first ack.
    pub ack: Option<(u64, u64)>,
    pub fate: Fate,
}

/// A delivery as the checkers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub room: RoomIdx,
    pub msg: MsgNo,
    pub seq: u64,
    pub t_ns: u64,
    /// The first copy of this message to this subscriber.
    pub first_copy: bool,
    /// A first copy the subscriber was never owed (see [`FindingKind::BeforeStart`]).
    pub unrequested: bool,
}

/// What one subscriber (or chatter) was owed and what it got.
/// Systems without `seq`: a subscriber that stayed subscribed this long
/// after a message's ack is owed it (1 s).
pub const SEQ_LESS_GRACE_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Default)]
pub struct SubscriberView {
    pub client: ClientId,
    pub node: u32,
    pub room: RoomIdx,
    /// Owed every `seq` above this: its first subscription's `after` or
    /// `head`; without any subscription, the plan's `after` (else 0).
    pub start: u64,
    /// When its first subscription was confirmed. Anything sent after that
    /// is owed to it whatever `seq` it gets (so a bogus `head` cannot excuse a loss).
    pub subscribed_ns: Option<u64>,
    pub deliveries: Vec<Delivery>,
    /// When it gave up, if it did: it is then owed only up to the highest
    /// `seq` it got (and giving up is a finding of its own).
    pub gave_up_ns: Option<u64>,
    /// The system declared no `seq` (guarantees.order is not `seq`): what is
    /// owed is decided by time alone, by the subscription intervals.
    pub seq_less: bool,
    /// Seq-less systems: from each confirmed subscription to the end of its
    /// connection (u64::MAX while open).
    pub intervals: Vec<(u64, u64)>,
}

impl SubscriberView {
    /// Whether this subscriber is owed `send`, stored at `seq`.
    pub fn owes(&self, send: &SendInfo, seq: u64) -> bool {
        if send.room != self.room {
            return false;
        }
        if self.seq_less {
            // Owed when it was sent within one subscription that lasted at
            // least SEQ_LESS_GRACE past its ack: a system without `seq`
            // cannot replay what a subscriber missed while it was away (and
            // does not promise to), and a broker delivers a moment after
            // its receipt, so a subscriber that left right then may miss it.
            let acked_ns = send.ack.map_or(send.first_sent_ns, |(_, t)| t);
            return self.intervals.iter().any(|&(from, to)| send.first_sent_ns >= from && acked_ns.saturating_add(SEQ_LESS_GRACE_NS) <= to);
        }
        let by_seq = seq > self.start;
        let by_time = self.subscribed_ns.is_some_and(|t| send.first_sent_ns > t);
        if !(by_seq || by_time) {
            return false;
        }
        match self.gave_up_ns {
            None => true,
            Some(_) => self.deliveries.iter().any(|d| d.seq >= seq),
        }
    }
}

/// The trace, indexed once for all checkers.
pub struct TraceIndex<'a> {
    pub trace: &'a Trace,
    pub sends: HashMap<MsgNo, SendInfo>,
    /// Messages in the order they were first sent.
    pub send_order: Vec<MsgNo>,
    pub subscribers: Vec<SubscriberView>,
    /// Per client: indexes of its events, in time order.
    pub events_of: Vec<Vec<u32>>,
}

impl<'a> TraceIndex<'a> {
    pub fn build(trace: &'a Trace) -> Self {
        let mut sends: HashMap<MsgNo, SendInfo> = HashMap::new();
        let mut send_order = Vec::new();
        let mut events_of: Vec<Vec<u32>> = vec![Vec::new(); trace.clients.len()];
        for (i, event) in trace.events.iter().enumerate() {
            if let Some(list) = events_of.get_mut(event.client as usize) {
                list.push(i as u32);
            }
            match event.kind {
                EventKind::Send { room, msg, scheduled_ns } => {
                    sends.entry(msg).or_insert_with(|| {
                        send_order.push(msg);
                        SendInfo { sender: event.client, room, first_sent_ns: event.t_ns, scheduled_ns, ack: None, fate: Fate::Unknown }
                    });
                }
                EventKind::Ack { msg, seq, .. } => {
                    if let Some(send) = sends.get_mut(&msg) {
                        send.ack.get_or_insert((seq, event.t_ns));
                    }
                }
                _ => {}
            }
        }
        resolve(trace, &mut sends);
        let subscribers = trace
            .clients
            .iter()
            .enumerate()
            .filter(|(_, info)| info.role.subscribes())
            .map(|(id, _)| subscriber_view(trace, id as ClientId, &events_of[id], &sends))
            .collect();
        Self { trace, sends, send_order, subscribers, events_of }
    }

    /// The node a client was planned on (for findings).
    pub fn node_of(&self, client: ClientId) -> u32 {
        self.trace.clients.get(client as usize).map_or(0, |c| c.node)
    }
}

/// Settle every send's [`Fate`]: acked, or else whatever the history of its
/// room says (a message's first stored `seq`), or unknown without history.
fn resolve(trace: &Trace, sends: &mut HashMap<MsgNo, SendInfo>) {
    let mut stored: HashMap<MsgNo, u64> = HashMap::new();
    for history in trace.history.iter().filter(|h| h.complete) {
        for &(seq, msg) in &history.entries {
            stored.entry(msg).or_insert(seq);
        }
    }
    for (msg, send) in sends.iter_mut() {
        send.fate = match send.ack {
            Some((seq, _)) => Fate::Acked(seq),
            // `stored` spans every room; message numbers are unique per run.
            None if trace.history.get(send.room as usize).is_some_and(|h| h.complete) => {
                stored.get(msg).map_or(Fate::NotStored, |&seq| Fate::Stored(seq))
            }
            None => Fate::Unknown,
        };
    }
}

/// One subscriber's view: its starting point and its deliveries, each
/// classified once (first copy, unrequested) for every checker.
fn subscriber_view(trace: &Trace, client: ClientId, events: &[u32], sends: &HashMap<MsgNo, SendInfo>) -> SubscriberView {
    let info = &trace.clients[client as usize];
    let seq_less = !trace.meta.guarantees.seq();
    let mut view =
        SubscriberView { client, node: info.node, room: info.room, start: info.after.unwrap_or(0), seq_less, ..Default::default() };
    let close = |view: &mut SubscriberView, t: u64| {
        if let Some(last) = view.intervals.last_mut().filter(|i| i.1 == u64::MAX) {
            last.1 = t;
        }
    };
    let mut seen: std::collections::HashSet<MsgNo> = std::collections::HashSet::new();
    for &i in events {
        let event = &trace.events[i as usize];
        match event.kind {
            EventKind::Subscribed { head, after, .. } => {
                if view.subscribed_ns.is_none() {
                    view.start = after.unwrap_or(head);
                    view.subscribed_ns = Some(event.t_ns);
                }
                if view.intervals.last().is_none_or(|i| i.1 != u64::MAX) {
                    view.intervals.push((event.t_ns, u64::MAX));
                }
            }
            EventKind::Closed { .. } => close(&mut view, event.t_ns),
            EventKind::Deliver { room, msg, seq } => {
                let first_copy = seen.insert(msg);
                let owed = match (view.subscribed_ns, sends.get(&msg)) {
                    // Without `seq` nothing tells a stray copy from one routed
                    // just before the confirmation: only duplicates count.
                    _ if seq_less => true,
                    (None, _) => false,
                    (Some(t), Some(send)) => seq > view.start || send.first_sent_ns > t,
                    // Foreign or unsent: judged as a phantom instead.
                    (Some(_), None) => true,
                };
                view.deliveries.push(Delivery { room, msg, seq, t_ns: event.t_ns, first_copy, unrequested: first_copy && !owed });
            }
            EventKind::GaveUp { .. } => {
                view.gave_up_ns = Some(event.t_ns);
                close(&mut view, event.t_ns);
            }
            _ => {}
        }
    }
    view
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
    findings.sort_by_key(|f| (f.kind, f.room, f.seq, f.msg, f.client, f.fault));
    findings
}
