//! Freshness: every owed delivery arrives within `checks.fresh_within`
//! (default 2 s) of when it was due — when its successful send left the
//! sender, or, for a catch-up, when the subscription it followed was
//! confirmed. A server that fans everything out seconds late loses nothing
//! and keeps order, and still fails its users: `stale`.
//!
//! A delivery due during a fault (from `fresh_within` before the fault
//! starts until it ends) is left to the `recovery` check, which bounds how
//! long a system may take to come back; every other delivery is judged
//! here, so a fault in the middle of a run excuses only what it can have
//! held up.

use super::{Finding, FindingKind, TraceIndex};
use crate::scenario::Checks;
use crate::trace::MsgNo;
use std::collections::HashSet;

pub fn check(index: &TraceIndex, checks: &Checks) -> Vec<Finding> {
    let fresh = checks.fresh_within.0.as_nanos() as u64;
    let faults = &index.trace.meta.faults;
    let during_fault = |client, due: u64| {
        faults.iter().any(|f| f.error.is_none() && f.concerns(client) && f.start_ns.saturating_sub(fresh) <= due && due <= f.end_ns)
    };
    let mut by_room: Vec<Vec<MsgNo>> = vec![Vec::new(); index.trace.rooms.len()];
    for msg in &index.send_order {
        if let Some(list) = by_room.get_mut(index.sends[msg].room as usize) {
            list.push(*msg);
        }
    }
    let mut findings = Vec::new();
    for sub in &index.subscribers {
        // Owed because it stayed in the room the freshness window past the
        // ack, and left without it: it did not come in time. (Only a
        // membership that ended by leaving owes anything that way.)
        let left = sub.epochs.iter().any(|e| matches!(e.end, super::EpochEnd::Left(_)));
        let got: HashSet<MsgNo> = if left { sub.deliveries.iter().map(|d| d.msg).collect() } else { HashSet::new() };
        for msg in by_room.get(sub.room as usize).filter(|_| left).into_iter().flatten() {
            let send = &index.sends[msg];
            let Some(seq) = send.fate.owed_seq() else { continue };
            if got.contains(msg) || !sub.owes(send, seq) || sub.owes_surely(send, seq) {
                continue;
            }
            if during_fault(sub.client, send.last_sent_ns) {
                continue;
            }
            let detail = format!("not delivered in the {:.2}s the subscriber stayed in the room after it was sent", fresh as f64 / 1e9);
            findings.push(
                Finding::new(FindingKind::Stale, detail)
                    .room(send.room)
                    .msg(*msg)
                    .seq(seq)
                    .client(sub.client, sub.node)
                    .sent(send.first_sent_ns),
            );
        }
        for d in sub.deliveries.iter().filter(|d| d.first_copy && !d.unrequested) {
            let Some(send) = index.sends.get(&d.msg) else { continue };
            let Some(seq) = send.fate.owed_seq() else { continue };
            if !sub.owes(send, seq) {
                continue;
            }
            let due = send.last_sent_ns.max(sub.confirmed_before(d.t_ns).unwrap_or(0));
            let late = d.t_ns.saturating_sub(due);
            if late <= fresh {
                continue;
            }
            if during_fault(sub.client, due) {
                continue;
            }
            let detail = format!("delivered {:.2}s after it was due (limit {:.2}s)", late as f64 / 1e9, fresh as f64 / 1e9);
            findings.push(
                Finding::new(FindingKind::Stale, detail)
                    .room(d.room)
                    .msg(d.msg)
                    .seq(d.seq)
                    .client(sub.client, sub.node)
                    .sent(send.first_sent_ns)
                    .observed(d.t_ns),
            );
        }
    }
    findings
}
