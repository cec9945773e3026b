//! Live equals history: the stored history (read back after the run from
//! the oracle, not through the server under test) is gap-free, holds each
//! message once, holds nothing no client sent, and agrees with every ack and
//! every delivery. At most one mismatch finding per room and `seq`.

use super::{Finding, FindingKind, TraceIndex};
use crate::trace::{EventKind, FOREIGN_MSG, MsgNo, RoomIdx};
use std::collections::{HashMap, HashSet};

/// Missing runs longer than this are reported as one finding.
const MAX_GAP_FINDINGS: u64 = 100;

pub fn check(index: &TraceIndex) -> Vec<Finding> {
    // A system that declares no history is not judged against one.
    if index.trace.meta.guarantees.history == crate::scenario::HistoryGuarantee::None {
        return Vec::new();
    }
    let mut findings = Vec::new();
    let mut stored: HashMap<(RoomIdx, u64), MsgNo> = HashMap::new();
    let mut reported: HashSet<(RoomIdx, u64)> = HashSet::new();
    for (room, history) in index.trace.history.iter().enumerate() {
        let room = room as RoomIdx;
        if !history.complete {
            let detail = format!("history of {} could not be read back: live = history cannot be judged", index.trace.rooms[room as usize]);
            findings.push(Finding::new(FindingKind::HistoryUnavailable, detail).room(room));
            continue;
        }
        let mut expected = 1u64;
        let mut first_seq: HashMap<MsgNo, u64> = HashMap::new();
        for &(seq, msg) in &history.entries {
            if seq > expected {
                findings.extend(gap(room, expected, seq));
            }
            expected = expected.max(seq + 1);
            stored.insert((room, seq), msg);
            if msg == FOREIGN_MSG || !index.sends.contains_key(&msg) {
                reported.insert((room, seq));
                findings.push(
                    Finding::new(FindingKind::HistoryMismatch, format!("history holds a message no client sent at seq {seq}"))
                        .room(room)
                        .seq(seq),
                );
                continue;
            }
            if let Some(&earlier) = first_seq.get(&msg) {
                let detail = format!("stored at seq {earlier} and again at seq {seq}");
                findings.push(Finding::new(FindingKind::StoredTwice, detail).room(room).msg(msg).seq(seq));
            } else {
                first_seq.insert(msg, seq);
            }
        }
    }
    let complete = |room: RoomIdx| index.trace.history.get(room as usize).is_some_and(|h| h.complete);
    let mut mismatch = |room: RoomIdx, seq: u64, msg: MsgNo, what: &str, client: Option<(u32, u32)>, t: u64| -> Option<Finding> {
        if !complete(room) {
            return None;
        }
        let found = stored.get(&(room, seq)).copied();
        if found == Some(msg) || !reported.insert((room, seq)) {
            return None;
        }
        let detail = match found {
            Some(other) => format!("{what} message {msg} as seq {seq}; history has message {other} there"),
            None => format!("{what} message {msg} as seq {seq}; history has no seq {seq}"),
        };
        let mut f = Finding::new(FindingKind::HistoryMismatch, detail).room(room).msg(msg).seq(seq).observed(t);
        if let Some((client, node)) = client {
            f = f.client(client, node);
        }
        Some(f)
    };
    for e in &index.trace.events {
        if let EventKind::Ack { room, msg, seq } = e.kind {
            findings.extend(mismatch(room, seq, msg, "acked", None, e.t_ns));
        }
    }
    for sub in &index.subscribers {
        for d in &sub.deliveries {
            findings.extend(mismatch(d.room, d.seq, d.msg, "delivered", Some((sub.client, sub.node)), d.t_ns));
        }
    }
    findings
}

/// Findings for the missing `seq`s `from..to`: one each, or one for a long run.
fn gap(room: RoomIdx, from: u64, to: u64) -> Vec<Finding> {
    let missing = to - from;
    if missing > MAX_GAP_FINDINGS {
        return vec![Finding::new(FindingKind::HistoryGap, format!("history has no seq {from}..{}", to - 1)).room(room).seq(from)];
    }
    (from..to).map(|seq| Finding::new(FindingKind::HistoryGap, format!("history has no seq {seq}")).room(room).seq(seq)).collect()
}
