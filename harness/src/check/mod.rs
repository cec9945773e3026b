//! Checkers: pure functions from a recorded [`Trace`] to findings. Nothing
//! here does I/O or talks to the system under test (Jepsen's rule), which is
//! what lets them be property-tested against traces with known violations.

pub mod delivery;
pub mod history;
pub mod latency;
pub mod ordering;
pub mod throughput;

pub mod synthetic;

use crate::trace::{ClientId, EventKind, MsgNo, Role, RoomIdx, Trace};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Acked, but never delivered to a subscriber that covered it.
    Lost,
    /// Delivered more than once to one subscriber.
    Duplicated,
    /// Delivered, never sent.
    Phantom,
    /// Never acked, delivered to some covering subscribers but not all.
    Agreement,
    /// A subscriber received a room's messages out of `seq` order.
    OrderViolation,
    /// Two observations disagree on a message's `seq` (or a `seq`'s message).
    SeqConflict,
    /// A sender's messages were stored out of the order it sent them.
    FifoViolation,
    /// What was delivered or acked differs from the room's stored history.
    HistoryMismatch,
    /// The stored history skips a `seq`.
    HistoryGap,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Lost => "lost",
            FindingKind::Duplicated => "duplicated",
            FindingKind::Phantom => "phantom",
            FindingKind::Agreement => "agreement",
            FindingKind::OrderViolation => "order_violation",
            FindingKind::SeqConflict => "seq_conflict",
            FindingKind::FifoViolation => "fifo_violation",
            FindingKind::HistoryMismatch => "history_mismatch",
            FindingKind::HistoryGap => "history_gap",
        }
    }
}

/// One violation, with everything needed to find it in the trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub msg: Option<MsgNo>,
    pub room: RoomIdx,
    pub seq: Option<u64>,
    /// The subscriber (or sender, for FIFO) concerned.
    pub client: Option<ClientId>,
    pub node: Option<u32>,
    /// When it was sent / observed, in trace nanoseconds.
    pub sent_ns: Option<u64>,
    pub observed_ns: Option<u64>,
    pub detail: String,
}

impl Finding {
    pub(crate) fn new(kind: FindingKind, room: RoomIdx, detail: impl Into<String>) -> Self {
        Self { kind, msg: None, room, seq: None, client: None, node: None, sent_ns: None, observed_ns: None, detail: detail.into() }
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
}

/// A delivery as the checkers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub room: RoomIdx,
    pub msg: MsgNo,
    pub seq: u64,
    pub t_ns: u64,
}

/// What one subscriber was owed and what it got.
#[derive(Debug, Clone, Default)]
pub struct SubscriberView {
    pub client: ClientId,
    pub node: u32,
    /// Per room: owed every `seq` above this (from its first subscription).
    pub start: HashMap<RoomIdx, u64>,
    pub deliveries: Vec<Delivery>,
    /// When its connection closed, if it did before the run ended.
    pub closed_ns: Option<u64>,
}

impl SubscriberView {
    /// Whether this subscriber was owed message `seq` of `room`. A subscriber
    /// whose connection closed is owed only up to the highest `seq` it got.
    pub fn covers(&self, room: RoomIdx, seq: u64) -> bool {
        let Some(&start) = self.start.get(&room) else {
            return false;
        };
        if seq <= start {
            return false;
        }
        match self.closed_ns {
            None => true,
            Some(_) => self.deliveries.iter().any(|d| d.room == room && d.seq >= seq),
        }
    }
}

/// The trace, indexed once for all checkers.
pub struct TraceIndex<'a> {
    pub trace: &'a Trace,
    pub sends: HashMap<MsgNo, SendInfo>,
    /// Senders' messages in the order they were first sent.
    pub send_order: Vec<MsgNo>,
    pub subscribers: Vec<SubscriberView>,
}

impl<'a> TraceIndex<'a> {
    pub fn build(trace: &'a Trace) -> Self {
        let mut sends: HashMap<MsgNo, SendInfo> = HashMap::new();
        let mut send_order = Vec::new();
        let mut by_client: HashMap<ClientId, usize> = HashMap::new();
        let mut subscribers: Vec<SubscriberView> = Vec::new();
        for (id, info) in trace.clients.iter().enumerate() {
            if info.role == Role::Subscriber {
                by_client.insert(id as ClientId, subscribers.len());
                subscribers.push(SubscriberView { client: id as ClientId, node: info.node, ..Default::default() });
            }
        }
        for event in &trace.events {
            match event.kind {
                EventKind::Send { room, msg, scheduled_ns } => {
                    sends.entry(msg).or_insert_with(|| {
                        send_order.push(msg);
                        SendInfo { sender: event.client, room, first_sent_ns: event.t_ns, scheduled_ns, ack: None }
                    });
                }
                EventKind::Ack { msg, seq, .. } => {
                    if let Some(send) = sends.get_mut(&msg) {
                        send.ack.get_or_insert((seq, event.t_ns));
                    }
                }
                EventKind::Subscribed { room, head, after } => {
                    if let Some(&i) = by_client.get(&event.client) {
                        subscribers[i].start.entry(room).or_insert(after.unwrap_or(head));
                        subscribers[i].closed_ns = None;
                    }
                }
                EventKind::Deliver { room, msg, seq } => {
                    if let Some(&i) = by_client.get(&event.client) {
                        subscribers[i].deliveries.push(Delivery { room, msg, seq, t_ns: event.t_ns });
                    }
                }
                // A subscriber that closed is owed nothing further until it
                // subscribes again (then `after` makes it whole).
                EventKind::Closed { .. } => {
                    if let Some(&i) = by_client.get(&event.client) {
                        subscribers[i].closed_ns = Some(event.t_ns);
                    }
                }
                EventKind::Error { .. } | EventKind::Reconnected { .. } => {}
            }
        }
        Self { trace, sends, send_order, subscribers }
    }
}

/// Every checker's findings over one trace, sorted for stable output.
pub fn all_findings(trace: &Trace) -> Vec<Finding> {
    let index = TraceIndex::build(trace);
    let mut findings = delivery::check(&index);
    findings.extend(ordering::check_total_order(&index));
    findings.extend(ordering::check_sender_fifo(&index));
    findings.extend(history::check(&index));
    findings.sort_by_key(|f| (f.kind, f.room, f.seq, f.msg, f.client));
    findings
}
