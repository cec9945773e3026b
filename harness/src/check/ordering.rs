//! Ordering: every subscriber sees a room in one total order (`seq` order,
//! and one message per `seq`), and each sender's messages are stored in the
//! order it sent them.

use super::{Finding, FindingKind, TraceIndex};
use crate::scenario::OrderGuarantee;
use crate::trace::{ClientId, EventKind, FOREIGN_MSG, MsgNo, RoomIdx};
use std::collections::{HashMap, HashSet};

/// Declared `order: total` without `seq`: every subscriber of a room sees
/// the messages it got in one agreed order. The room's subscriber with the
/// most deliveries is the reference; in every other subscriber's stream
/// the messages the reference also got must come in the reference's order
/// (a message arriving after one the reference got later is a violation).
fn check_agreed_order(index: &TraceIndex) -> Vec<Finding> {
    let mut reference: HashMap<RoomIdx, &super::SubscriberView> = HashMap::new();
    for sub in &index.subscribers {
        let entry = reference.entry(sub.room).or_insert(sub);
        if sub.deliveries.len() > entry.deliveries.len() {
            *entry = sub;
        }
    }
    let positions: HashMap<RoomIdx, HashMap<MsgNo, usize>> = reference
        .iter()
        .map(|(&room, sub)| {
            let firsts = sub.deliveries.iter().filter(|d| d.first_copy && d.msg != FOREIGN_MSG);
            (room, firsts.enumerate().map(|(i, d)| (d.msg, i)).collect())
        })
        .collect();
    let mut findings = Vec::new();
    for sub in &index.subscribers {
        let Some(order) = positions.get(&sub.room) else { continue };
        let mut last: Option<(usize, MsgNo)> = None;
        for d in sub.deliveries.iter().filter(|d| d.first_copy) {
            let Some(&pos) = order.get(&d.msg) else { continue };
            match last {
                Some((top, top_msg)) if pos < top => {
                    let detail = format!("arrived after message {top_msg}; the room's other subscribers got it before that one");
                    findings.push(
                        Finding::new(FindingKind::OrderViolation, detail)
                            .room(d.room)
                            .msg(d.msg)
                            .client(sub.client, sub.node)
                            .observed(d.t_ns),
                    );
                }
                _ => last = Some((pos, d.msg)),
            }
        }
    }
    findings
}

/// Declared `order: per_sender` or `total` without `seq`: each subscriber
/// gets each sender's messages in the order they were first sent.
fn check_delivered_fifo(index: &TraceIndex) -> Vec<Finding> {
    let rank: HashMap<MsgNo, usize> = index.send_order.iter().enumerate().map(|(i, &m)| (m, i)).collect();
    let mut findings = Vec::new();
    for sub in &index.subscribers {
        let mut highest: HashMap<ClientId, (usize, MsgNo)> = HashMap::new();
        for d in sub.deliveries.iter().filter(|d| d.first_copy) {
            let (Some(send), Some(&r)) = (index.sends.get(&d.msg), rank.get(&d.msg)) else { continue };
            match highest.get(&send.sender) {
                Some(&(top, top_msg)) if r < top => {
                    let detail = format!("sent before message {top_msg} of the same sender, delivered after it");
                    findings.push(
                        Finding::new(FindingKind::FifoViolation, detail)
                            .room(d.room)
                            .msg(d.msg)
                            .client(sub.client, sub.node)
                            .sent(send.first_sent_ns)
                            .observed(d.t_ns),
                    );
                }
                _ => {
                    highest.insert(send.sender, (r, d.msg));
                }
            }
        }
    }
    findings
}

/// Per subscriber and room, `seq` must rise with every new message; and all
/// observations (every ack, every delivery) must agree on which message has
/// which `seq`.
pub fn check_total_order(index: &TraceIndex) -> Vec<Finding> {
    match index.trace.meta.guarantees.order {
        OrderGuarantee::Seq => {}
        OrderGuarantee::Total => return check_agreed_order(index),
        OrderGuarantee::PerSender | OrderGuarantee::None => return Vec::new(),
    }
    let mut findings = Vec::new();
    for sub in &index.subscribers {
        let mut highest: HashMap<RoomIdx, (u64, MsgNo)> = HashMap::new();
        // Repeats are duplicates and unrequested copies are before-start
        // findings, not order violations.
        for d in sub.deliveries.iter().filter(|d| d.first_copy && !d.unrequested) {
            match highest.get(&d.room) {
                Some(&(top, top_msg)) if d.seq <= top => {
                    let detail = format!("seq {} arrived after seq {top} (message {top_msg})", d.seq);
                    findings.push(
                        Finding::new(FindingKind::OrderViolation, detail)
                            .room(d.room)
                            .msg(d.msg)
                            .seq(d.seq)
                            .client(sub.client, sub.node)
                            .observed(d.t_ns),
                    );
                }
                _ => {
                    highest.insert(d.room, (d.seq, d.msg));
                }
            }
        }
    }
    // One message per seq and one seq per message, across every observation:
    // every ack (a second ack with another seq conflicts), then deliveries.
    let mut msg_of: HashMap<(RoomIdx, u64), MsgNo> = HashMap::new();
    let mut seq_of: HashMap<MsgNo, u64> = HashMap::new();
    let mut reported: HashSet<(RoomIdx, u64, MsgNo)> = HashSet::new();
    let acks = index.trace.events.iter().filter_map(|e| match e.kind {
        EventKind::Ack { room, msg, seq } => Some((room, msg, seq, e.t_ns, e.client)),
        _ => None,
    });
    let deliveries = index.subscribers.iter().flat_map(|s| s.deliveries.iter().map(move |d| (d.room, d.msg, d.seq, d.t_ns, s.client)));
    for (room, msg, seq, t, who) in acks.chain(deliveries) {
        if msg == FOREIGN_MSG {
            continue;
        }
        let other_msg = *msg_of.entry((room, seq)).or_insert(msg);
        let other_seq = *seq_of.entry(msg).or_insert(seq);
        if (other_msg != msg || other_seq != seq) && reported.insert((room, seq, msg)) {
            let detail = if other_msg != msg {
                format!("seq {seq} is message {other_msg} elsewhere")
            } else {
                format!("message has seq {other_seq} elsewhere")
            };
            findings.push(
                Finding::new(FindingKind::SeqConflict, detail).room(room).msg(msg).seq(seq).client(who, index.node_of(who)).observed(t),
            );
        }
    }
    findings
}

/// A sender's stored messages (acked, or resolved as stored from history)
/// in one room must have rising `seq` in the order it first sent them.
pub fn check_sender_fifo(index: &TraceIndex) -> Vec<Finding> {
    if !index.trace.meta.guarantees.seq() {
        return check_delivered_fifo(index);
    }
    let mut findings = Vec::new();
    let mut highest: HashMap<(ClientId, RoomIdx), (u64, MsgNo)> = HashMap::new();
    for &msg in &index.send_order {
        let send = &index.sends[&msg];
        let Some(seq) = send.fate.owed_seq() else { continue };
        match highest.get(&(send.sender, send.room)) {
            Some(&(top, top_msg)) if seq <= top => {
                let detail = format!("sent after message {top_msg} (seq {top}) but stored as seq {seq}");
                findings.push(
                    Finding::new(FindingKind::FifoViolation, detail)
                        .room(send.room)
                        .msg(msg)
                        .seq(seq)
                        .client(send.sender, index.node_of(send.sender))
                        .sent(send.first_sent_ns),
                );
            }
            _ => {
                highest.insert((send.sender, send.room), (seq, msg));
            }
        }
    }
    findings
}
