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

pub fn check(index: &TraceIndex, checks: &Checks) -> Vec<Finding> {
    let fresh = checks.fresh_within.0.as_nanos() as u64;
    let faults = &index.trace.meta.faults;
    let mut findings = Vec::new();
    for sub in &index.subscribers {
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
            let during_fault = faults
                .iter()
                .any(|f| f.error.is_none() && f.concerns(sub.client) && f.start_ns.saturating_sub(fresh) <= due && due <= f.end_ns);
            if during_fault {
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
