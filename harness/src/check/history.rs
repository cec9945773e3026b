//! Live equals history: the stored history (read back after the run) is
//! gap-free, holds every acked message at its acked `seq`, and every live
//! delivery matches it. At most one finding per room and `seq`.

use super::{Finding, FindingKind, TraceIndex};
use crate::trace::{FOREIGN_MSG, MsgNo, RoomIdx};
use std::collections::{HashMap, HashSet};

/// Missing runs longer than this are reported as one finding.
const MAX_GAP_FINDINGS: u64 = 100;

pub fn check(index: &TraceIndex) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut stored: HashMap<(RoomIdx, u64), MsgNo> = HashMap::new();
    for (room, history) in index.trace.history.iter().enumerate() {
        if !history.complete {
            continue;
        }
        let room = room as RoomIdx;
        let mut expected = 1u64;
        for &(seq, msg) in &history.entries {
            if seq > expected {
                // One finding per missing seq; a long run is one finding.
                let missing = seq - expected;
                let each = if missing <= MAX_GAP_FINDINGS { expected..seq } else { expected..expected + 1 };
                for gap in each {
                    let detail = if missing <= MAX_GAP_FINDINGS {
                        format!("history has no seq {gap}")
                    } else {
                        format!("history has no seq {expected}..{}", seq - 1)
                    };
                    let mut f = Finding::new(FindingKind::HistoryGap, room, detail);
                    f.seq = Some(gap);
                    findings.push(f);
                }
            }
            expected = expected.max(seq + 1);
            stored.insert((room, seq), msg);
        }
    }
    let complete = |room: RoomIdx| index.trace.history.get(room as usize).is_some_and(|h| h.complete);
    let mut reported: HashSet<(RoomIdx, u64)> = HashSet::new();
    let mut mismatch = |room: RoomIdx, seq: u64, msg: MsgNo, what: &str, client: Option<(u32, u32)>, t: u64| -> Option<Finding> {
        if !complete(room) {
            return None;
        }
        let found = stored.get(&(room, seq)).copied();
        if found == Some(msg) || !reported.insert((room, seq)) {
            return None;
        }
        let detail = match found {
            Some(other) => {
                format!("{what} message {msg} as seq {seq}; history has message {other} there")
            }
            None => format!("{what} message {msg} as seq {seq}; history has no seq {seq}"),
        };
        let mut f = Finding::new(FindingKind::HistoryMismatch, room, detail);
        f.msg = (msg != FOREIGN_MSG).then_some(msg);
        f.seq = Some(seq);
        f.client = client.map(|c| c.0);
        f.node = client.map(|c| c.1);
        f.observed_ns = Some(t);
        Some(f)
    };
    for &msg in &index.send_order {
        let send = &index.sends[&msg];
        if let Some((seq, t)) = send.ack {
            findings.extend(mismatch(send.room, seq, msg, "acked", None, t));
        }
    }
    for sub in &index.subscribers {
        for d in &sub.deliveries {
            findings.extend(mismatch(d.room, d.seq, d.msg, "delivered", Some((sub.client, sub.node)), d.t_ns));
        }
    }
    findings
}
