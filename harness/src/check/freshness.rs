//! Freshness: every owed delivery arrives within `checks.fresh_within`
//! (default 2 s) of when it was due — when its successful send left the
//! sender — and a catch-up (a late joiner replaying a room, a reconnect
//! resuming with `after`) within `recovery.within` of the confirmation of
//! the subscription it follows. A server that fans everything out seconds
//! late loses nothing and keeps order, and still fails its users: `stale`.
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
    let recovery = checks.recovery.within.0.as_nanos() as u64;
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
            let confirmed = sub.confirmed_before(d.t_ns).unwrap_or(0);
            let due = send.last_sent_ns.max(confirmed);
            // A catch-up (sent before the subscription it follows was
            // confirmed: a late joiner replaying a room, a reconnect) is
            // recovery, and gets its window: a big backlog is paged in.
            let limit = if send.last_sent_ns < confirmed { fresh.max(recovery) } else { fresh };
            let late = d.t_ns.saturating_sub(due);
            if late <= limit {
                continue;
            }
            if during_fault(sub.client, due) {
                continue;
            }
            let detail = format!("delivered {:.2}s after it was due (limit {:.2}s)", late as f64 / 1e9, limit as f64 / 1e9);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::synthetic::{TraceShape, correct_trace};
    use crate::trace::EventKind;

    fn stale(trace: &crate::trace::Trace) -> usize {
        check(&TraceIndex::build(trace), &Checks::default()).len()
    }

    /// A live delivery 3 s late is stale; a catch-up 3 s after its
    /// subscription was confirmed is recovery, and judged by its window.
    #[test]
    fn live_deliveries_get_the_freshness_window_and_catch_ups_the_recovery_window() {
        let trace = correct_trace(&TraceShape::plain(1, 1, 1, 6), 1);
        assert_eq!(stale(&trace), 0);
        let s = 1_000_000_000u64;
        let sub = trace.clients.iter().position(|c| c.role == crate::trace::Role::Subscriber).unwrap() as u32;
        let mut late = trace.clone();
        let last = late.events.iter().rposition(|e| e.client == sub && matches!(e.kind, EventKind::Deliver { .. })).unwrap();
        late.events[last].t_ns += 3 * s;
        late.meta.ended_ns += 4 * s;
        assert_eq!(stale(&late), 1, "3 s late, live");
        // The same delivery, but the subscriber reconnected and resubscribed
        // (after the send) just before it: a catch-up, 3 s < 10 s.
        let t = late.events[last].t_ns - 3 * s + 1;
        late.events.push(crate::trace::Event { t_ns: t, client: sub, kind: EventKind::Closed { code: None } });
        late.events.push(crate::trace::Event { t_ns: t + 1, client: sub, kind: EventKind::Connected { node: 0, took_us: 0 } });
        late.events.push(crate::trace::Event { t_ns: t + 2, client: sub, kind: EventKind::Subscribing { room: 0, after: Some(5) } });
        late.events.push(crate::trace::Event {
            t_ns: t + 3,
            client: sub,
            kind: EventKind::Subscribed { room: 0, head: 6, after: Some(5) },
        });
        late.events.sort_by_key(|e| (e.t_ns, e.client));
        assert_eq!(stale(&late), 0, "a catch-up 3 s after its confirmation is within the recovery window");
    }
}
