//! Live equals history: the stored history (read back after the run from
//! the oracle, not through the server under test) is gap-free, holds each
//! message once, with the body that was sent, holds nothing no client sent,
//! and agrees with every ack and every delivery. At most one mismatch
//! finding per room and `seq`.
//!
//! When the system declares a history API (the reference server's
//! `GET /rooms/{room}/messages`), what it served — page by page, as a
//! client loading history reads it — must be the oracle's history, entry
//! for entry and body for body.

use super::{Finding, FindingKind, TraceIndex};
use crate::trace::{EventKind, FOREIGN_MSG, MsgNo, RoomHistory, RoomIdx};
use std::collections::{HashMap, HashSet};

/// Missing runs longer than this are reported as one finding.
const MAX_GAP_FINDINGS: u64 = 100;

pub fn check(index: &TraceIndex) -> Vec<Finding> {
    // A system that declares no history is not judged against one.
    if !index.trace.meta.guarantees.history.is_reference() {
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
        for e in &history.entries {
            let (seq, msg) = (e.seq, e.msg);
            if seq > expected {
                findings.extend(gap(room, expected, seq));
            }
            expected = expected.max(seq + 1);
            stored.insert((room, seq), msg);
            let Some(send) = index.sends.get(&msg).filter(|_| msg != FOREIGN_MSG) else {
                reported.insert((room, seq));
                findings.push(
                    Finding::new(FindingKind::HistoryMismatch, format!("history holds a message no client sent at seq {seq}"))
                        .room(room)
                        .seq(seq),
                );
                continue;
            };
            if let Some(body) = e.body.filter(|b| *b != send.body) {
                let detail = format!("stored with a body of {body}; the sender sent {}", send.body);
                findings.push(Finding::new(FindingKind::Corrupted, detail).room(room).msg(msg).seq(seq));
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
    for (room, served) in index.trace.api_history.iter().enumerate() {
        if let Some(oracle) = index.trace.history.get(room).filter(|h| h.complete) {
            findings.extend(api_disagreements(index, room as RoomIdx, served, oracle));
        }
    }
    findings
}

/// What the system's history API served for one room against the oracle's
/// history of it: every entry in the same order, each body the one sent.
fn api_disagreements(index: &TraceIndex, room: RoomIdx, served: &RoomHistory, oracle: &RoomHistory) -> Vec<Finding> {
    let name = &index.trace.rooms[room as usize];
    if !served.complete {
        let detail = format!("the system's history API could not be read for {name} (see the run log)");
        return vec![Finding::new(FindingKind::HistoryUnavailable, detail).room(room)];
    }
    let mut findings = Vec::new();
    let by_seq: HashMap<u64, MsgNo> = served.entries.iter().map(|e| (e.seq, e.msg)).collect();
    let mut reported: HashSet<u64> = HashSet::new();
    for e in &oracle.entries {
        match by_seq.get(&e.seq) {
            Some(&msg) if msg == e.msg => {}
            Some(&msg) => {
                reported.insert(e.seq);
                let detail = format!("the history API serves message {msg} as seq {}; MongoDB holds message {} there", e.seq, e.msg);
                findings.push(Finding::new(FindingKind::HistoryMismatch, detail).room(room).msg(msg).seq(e.seq));
            }
            None => {
                reported.insert(e.seq);
                let detail = format!("the history API left out seq {} (message {}), which MongoDB holds", e.seq, e.msg);
                findings.push(Finding::new(FindingKind::HistoryMismatch, detail).room(room).msg(e.msg).seq(e.seq));
            }
        }
    }
    let in_oracle: HashSet<u64> = oracle.entries.iter().map(|e| e.seq).collect();
    let mut last = 0u64;
    for e in &served.entries {
        if !in_oracle.contains(&e.seq) && reported.insert(e.seq) {
            let detail = format!("the history API serves seq {} (message {}), which MongoDB does not hold", e.seq, e.msg);
            findings.push(Finding::new(FindingKind::HistoryMismatch, detail).room(room).msg(e.msg).seq(e.seq));
        } else if e.seq <= last && reported.insert(e.seq) {
            let detail = format!("the history API serves seq {} after seq {last}", e.seq);
            findings.push(Finding::new(FindingKind::HistoryMismatch, detail).room(room).msg(e.msg).seq(e.seq));
        }
        last = last.max(e.seq);
        let sent = index.sends.get(&e.msg).map(|s| s.body);
        if let (Some(body), Some(sent)) = (e.body, sent)
            && body != sent
        {
            let detail = format!("the history API serves a body of {body}; the sender sent {sent}");
            findings.push(Finding::new(FindingKind::Corrupted, detail).room(room).msg(e.msg).seq(e.seq));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::synthetic::{TraceShape, body_of, correct_trace};
    use crate::trace::{BodyDigest, Stored};

    fn api_findings(edit: impl FnOnce(&mut Vec<Stored>, &mut bool)) -> Vec<(FindingKind, Option<u64>)> {
        let mut trace = correct_trace(&TraceShape::plain(1, 1, 1, 5), 1);
        let mut served = trace.history[0].clone();
        edit(&mut served.entries, &mut served.complete);
        trace.api_history = vec![served];
        let mut v: Vec<_> = check(&TraceIndex::build(&trace)).into_iter().map(|f| (f.kind, f.seq)).collect();
        v.sort();
        v
    }

    /// Every way a history API can disagree with MongoDB is a finding of
    /// its own, and serving exactly what MongoDB holds is none.
    #[test]
    fn the_history_api_must_serve_what_mongodb_holds() {
        use FindingKind::*;
        assert_eq!(api_findings(|_, _| {}), vec![]);
        assert_eq!(
            api_findings(|e, _| {
                e.remove(2);
            }),
            vec![(HistoryMismatch, Some(3))],
            "left out"
        );
        assert_eq!(
            api_findings(|e, _| {
                let other = e[0].msg;
                e[2].msg = other;
                e[2].body = Some(body_of(other));
            }),
            vec![(HistoryMismatch, Some(3))],
            "another message at a seq"
        );
        assert_eq!(api_findings(|e, _| e.push(Stored::new(99, e[0].msg, None))), vec![(HistoryMismatch, Some(99))], "a seq MongoDB lacks");
        assert_eq!(api_findings(|e, _| e.swap(1, 2)), vec![(HistoryMismatch, Some(2))], "out of order");
        assert_eq!(api_findings(|e, _| e[4].body = Some(BodyDigest::of(b"cut"))), vec![(Corrupted, Some(5))], "another body");
        assert_eq!(api_findings(|_, complete| *complete = false), vec![(HistoryUnavailable, None)], "unreadable");
    }
}
