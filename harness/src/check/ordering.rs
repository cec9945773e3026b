//! Ordering: every subscriber sees a room in one total order (`seq` order,
//! and one message per `seq`), and each sender's messages are stored in the
//! order it sent them.

use super::{Finding, FindingKind, TraceIndex};
use crate::trace::{FOREIGN_MSG, MsgNo, RoomIdx};
use std::collections::{HashMap, HashSet};

/// Per subscriber and room, `seq` must rise with every new message; and all
/// observations (acks, deliveries) must agree on which message has which `seq`.
pub fn check_total_order(index: &TraceIndex) -> Vec<Finding> {
    let mut findings = Vec::new();
    for sub in &index.subscribers {
        let mut highest: HashMap<RoomIdx, (u64, MsgNo)> = HashMap::new();
        let mut seen: HashSet<MsgNo> = HashSet::with_capacity(sub.deliveries.len());
        for d in &sub.deliveries {
            if !seen.insert(d.msg) {
                continue; // a repeat is a duplicate, not an order violation
            }
            match highest.get(&d.room) {
                Some(&(top, top_msg)) if d.seq <= top => {
                    let mut f = Finding::new(
                        FindingKind::OrderViolation,
                        d.room,
                        format!("seq {} arrived after seq {top} (message {top_msg})", d.seq),
                    );
                    f.msg = Some(d.msg);
                    f.seq = Some(d.seq);
                    f.client = Some(sub.client);
                    f.node = Some(sub.node);
                    f.observed_ns = Some(d.t_ns);
                    findings.push(f);
                }
                _ => {
                    highest.insert(d.room, (d.seq, d.msg));
                }
            }
        }
    }
    // One message per seq and one seq per message, across every observation.
    let mut msg_of: HashMap<(RoomIdx, u64), MsgNo> = HashMap::new();
    let mut seq_of: HashMap<MsgNo, u64> = HashMap::new();
    let mut reported: HashSet<(RoomIdx, u64, MsgNo)> = HashSet::new();
    let acks = index.send_order.iter().filter_map(|m| {
        let s = &index.sends[m];
        s.ack.map(|(seq, t)| (s.room, *m, seq, t, None))
    });
    let deliveries =
        index.subscribers.iter().flat_map(|s| s.deliveries.iter().map(move |d| (d.room, d.msg, d.seq, d.t_ns, Some((s.client, s.node)))));
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
            let mut f = Finding::new(FindingKind::SeqConflict, room, detail);
            f.msg = Some(msg);
            f.seq = Some(seq);
            f.client = who.map(|w| w.0);
            f.node = who.map(|w| w.1);
            f.observed_ns = Some(t);
            findings.push(f);
        }
    }
    findings
}

/// A sender's acked messages in one room must have rising `seq` in the order
/// it first sent them.
pub fn check_sender_fifo(index: &TraceIndex) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut highest: HashMap<(u32, RoomIdx), (u64, MsgNo)> = HashMap::new();
    for &msg in &index.send_order {
        let send = &index.sends[&msg];
        let Some((seq, _)) = send.ack else { continue };
        match highest.get(&(send.sender, send.room)) {
            Some(&(top, top_msg)) if seq <= top => {
                let mut f = Finding::new(
                    FindingKind::FifoViolation,
                    send.room,
                    format!("sent after message {top_msg} (seq {top}) but stored as seq {seq}"),
                );
                f.msg = Some(msg);
                f.seq = Some(seq);
                f.client = Some(send.sender);
                f.node = Some(index.trace.clients.get(send.sender as usize).map_or(0, |c| c.node));
                f.sent_ns = Some(send.first_sent_ns);
                findings.push(f);
            }
            _ => {
                highest.insert((send.sender, send.room), (seq, msg));
            }
        }
    }
    findings
}
