//! Exactly-once delivery: lost, duplicated, phantom and agreement findings.
//!
//! A send whose ack never came is indeterminate: it may be delivered at most
//! once, and if to anyone then to every subscriber that covered it.

use super::{Finding, FindingKind, TraceIndex};
use crate::trace::{FOREIGN_MSG, MsgNo};
use std::collections::HashMap;

pub fn check(index: &TraceIndex) -> Vec<Finding> {
    let mut findings = Vec::new();
    // For unacked messages: the seq they were delivered with, if any.
    let mut unacked_delivered: HashMap<MsgNo, (u32, u64)> = HashMap::new();
    for sub in &index.subscribers {
        let mut seen: HashMap<MsgNo, u32> = HashMap::with_capacity(sub.deliveries.len());
        for d in &sub.deliveries {
            let count = seen.entry(d.msg).or_insert(0);
            *count += 1;
            let send = index.sends.get(&d.msg);
            if d.msg == FOREIGN_MSG || send.is_none() {
                if *count == 1 {
                    let mut f = Finding::new(FindingKind::Phantom, d.room, format!("delivered seq {} that no client sent", d.seq));
                    f.msg = (d.msg != FOREIGN_MSG).then_some(d.msg);
                    f.seq = Some(d.seq);
                    f.client = Some(sub.client);
                    f.node = Some(sub.node);
                    f.observed_ns = Some(d.t_ns);
                    findings.push(f);
                }
                continue;
            }
            if *count > 1 {
                let mut f = Finding::new(FindingKind::Duplicated, d.room, format!("delivery #{count} of the same message"));
                f.msg = Some(d.msg);
                f.seq = Some(d.seq);
                f.client = Some(sub.client);
                f.node = Some(sub.node);
                f.sent_ns = send.map(|s| s.first_sent_ns);
                f.observed_ns = Some(d.t_ns);
                findings.push(f);
            }
            if send.is_some_and(|s| s.ack.is_none()) {
                unacked_delivered.entry(d.msg).or_insert((d.room, d.seq));
            }
        }
    }
    // Build per-subscriber sets once: membership tests below are per message.
    let sets: Vec<std::collections::HashSet<MsgNo>> =
        index.subscribers.iter().map(|s| s.deliveries.iter().map(|d| d.msg).collect()).collect();
    for &msg in &index.send_order {
        let send = &index.sends[&msg];
        let (kind, room, seq) = match (send.ack, unacked_delivered.get(&msg)) {
            (Some((seq, _)), _) => (FindingKind::Lost, send.room, seq),
            (None, Some(&(room, seq))) => (FindingKind::Agreement, room, seq),
            (None, None) => continue,
        };
        for (sub, got) in index.subscribers.iter().zip(&sets) {
            if sub.covers(room, seq) && !got.contains(&msg) {
                let detail = match kind {
                    FindingKind::Lost => {
                        format!("acked as seq {seq}, never delivered to this subscriber")
                    }
                    _ => format!("never acked, delivered to others as seq {seq}, not to this subscriber"),
                };
                let mut f = Finding::new(kind, room, detail);
                f.msg = Some(msg);
                f.seq = Some(seq);
                f.client = Some(sub.client);
                f.node = Some(sub.node);
                f.sent_ns = Some(send.first_sent_ns);
                findings.push(f);
            }
        }
    }
    findings
}
