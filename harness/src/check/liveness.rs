//! Liveness and resolution: a cluster that does nothing, answers nothing or
//! never comes back must fail, however clean its few deliveries are.
//!
//! - `liveness.ready`: every on-time client connected (and subscribed)
//!   before sending started.
//! - `liveness.attempted`: every scheduled send was attempted; no client gave
//!   up; every shard of a sharded run reported.
//! - `liveness.answered`: every send was answered (ack or error) while its
//!   connection stayed open. A send whose connection closed first is
//!   indeterminate, not unanswered: it is resolved from history instead.
//! - `liveness.resolved`: every send without an ack was resolved (history read).
//! - `liveness.drained`: the drain finished.
//! - `liveness.progress`: every room with senders and subscribers saw an ack
//!   and a delivery.
//! - `recovery`: no client was disconnected or unsubscribed longer than
//!   `within`; after each fault, every subscriber received a message sent
//!   after the fault started, and every sender an ack, within `within` of
//!   the later of the fault's end and the first such message.

use super::{Fate, Finding, FindingKind, TraceIndex};
use crate::scenario::Checks;
use crate::trace::{ClientId, EventKind, MsgNo, RoomIdx};
use std::collections::HashMap;

pub fn check(index: &TraceIndex, checks: &Checks) -> Vec<Finding> {
    let within_ns = checks.recovery.within.0.as_nanos() as u64;
    let mut findings = ready(index);
    findings.extend(attempted(index));
    findings.extend(answered(index));
    findings.extend(resolved(index));
    findings.extend(drained(index));
    findings.extend(progress(index));
    findings.extend(outages(index, within_ns));
    findings.extend(fault_recovery(index, within_ns));
    findings
}

fn ms(ns: u64) -> String {
    format!("{:.0}ms", ns as f64 / 1e6)
}

fn client_finding(index: &TraceIndex, kind: FindingKind, client: ClientId, detail: String) -> Finding {
    let info = &index.trace.clients[client as usize];
    Finding::new(kind, detail).room(info.room).client(client, info.node)
}

/// Events of one client, in time order.
fn events<'a>(index: &'a TraceIndex, client: ClientId) -> impl Iterator<Item = &'a crate::trace::Event> + 'a {
    index.events_of[client as usize].iter().map(|&i| &index.trace.events[i as usize])
}

fn ready(index: &TraceIndex) -> Vec<Finding> {
    let start = index.trace.meta.sending_started_ns;
    let mut findings = Vec::new();
    for (id, info) in index.trace.clients.iter().enumerate() {
        if info.join_at_ns > 0 || info.role.intruder().is_some() {
            continue; // late subscribers are judged by `recovery`, intruders by `authorization`
        }
        let client = id as ClientId;
        let connected = events(index, client).find_map(|e| matches!(e.kind, EventKind::Connected { .. }).then_some(e.t_ns));
        // Subscribed to every room it is in: when the last of them was
        // first confirmed (None if one never was).
        let subscribed = info
            .rooms()
            .map(|room| {
                events(index, client).find_map(|e| matches!(e.kind, EventKind::Subscribed { room: r, .. } if r == room).then_some(e.t_ns))
            })
            .try_fold(0u64, |latest, t| t.map(|t| latest.max(t)));
        let problem = match (connected, subscribed) {
            (None, _) => Some("never connected".to_owned()),
            (Some(t), _) if t > start => Some(format!("connected {} after sending started", ms(t - start))),
            _ if !info.role.subscribes() => None,
            (_, None) => Some("connected, but no subscription was ever confirmed".to_owned()),
            (_, Some(t)) if t > start => Some(format!("subscribed {} after sending started", ms(t - start))),
            _ => None,
        };
        if let Some(problem) = problem {
            findings.push(client_finding(index, FindingKind::NotReady, client, problem));
        }
    }
    findings
}

fn attempted(index: &TraceIndex) -> Vec<Finding> {
    let meta = &index.trace.meta;
    let mut findings: Vec<Finding> = meta
        .missing_shards
        .iter()
        .map(|s| Finding::new(FindingKind::ShardMissing, format!("shard {s} of the run never reported; its rooms were not judged")))
        .collect();
    let mut sent: HashMap<ClientId, u64> = HashMap::new();
    for send in index.sends.values() {
        *sent.entry(send.sender).or_default() += 1;
    }
    // A send dropped under `workload.max_pending` was the system's
    // push-back, decided by the client: accounted for, not unattempted.
    for e in &index.trace.events {
        if let EventKind::Dropped { .. } = e.kind {
            *sent.entry(e.client).or_default() += 1;
        }
    }
    for (id, info) in index.trace.clients.iter().enumerate() {
        let client = id as ClientId;
        if let Some(planned) = info.planned_sends {
            let done = sent.get(&client).copied().unwrap_or(0);
            if done < planned {
                let detail = format!("attempted or dropped {done} of the {planned} sends its schedule held");
                findings.push(client_finding(index, FindingKind::Unattempted, client, detail));
            }
        }
        for e in events(index, client) {
            if let EventKind::GaveUp { http_status } = e.kind {
                let refusal = index.trace.meta.refusals.iter().find(|(c, _)| *c == client).map(|(_, why)| why.clone());
                let why = match (refusal, http_status) {
                    (Some(why), _) => why,
                    (None, Some(s)) => format!("the WebSocket upgrade was refused with HTTP {s}"),
                    (None, None) => "connecting kept failing".to_owned(),
                };
                findings.push(client_finding(index, FindingKind::GaveUp, client, format!("stopped trying: {why}")).observed(e.t_ns));
            }
        }
    }
    findings
}

/// Per connection, each send attempt must get an ack or an error before
/// the connection closes; attempts still open at the end are unanswered.
fn answered(index: &TraceIndex) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (id, info) in index.trace.clients.iter().enumerate() {
        if !info.role.sends() {
            continue;
        }
        let client = id as ClientId;
        // Attempts on the current connection without an answer yet, in order.
        let mut pending: Vec<(MsgNo, u64)> = Vec::new();
        for e in events(index, client) {
            match e.kind {
                EventKind::Send { msg, .. } => pending.push((msg, e.t_ns)),
                EventKind::Ack { msg, .. } | EventKind::Error { msg: Some(msg) } => {
                    if let Some(i) = pending.iter().position(|&(m, _)| m == msg) {
                        pending.remove(i);
                    }
                }
                // The connection ended: what is still open is indeterminate.
                EventKind::Closed { .. } | EventKind::Connected { .. } | EventKind::GaveUp { .. } => pending.clear(),
                _ => {}
            }
        }
        pending.sort_by_key(|&(m, _)| m);
        pending.dedup_by_key(|&mut (m, _)| m);
        for (msg, t) in pending {
            let detail = "sent on a connection that stayed open, and neither acked nor refused by the end of the run".to_owned();
            findings.push(client_finding(index, FindingKind::Unanswered, client, detail).msg(msg).sent(t));
        }
    }
    findings
}

fn resolved(index: &TraceIndex) -> Vec<Finding> {
    index
        .send_order
        .iter()
        .filter(|m| index.sends[*m].fate == Fate::Unknown)
        .map(|&msg| {
            let send = &index.sends[&msg];
            let detail = "never acked, and its room's history could not be read to tell whether it was stored".to_owned();
            client_finding(index, FindingKind::Unresolved, send.sender, detail).msg(msg).sent(send.first_sent_ns)
        })
        .collect()
}

fn drained(index: &TraceIndex) -> Vec<Finding> {
    let meta = &index.trace.meta;
    if meta.drain.completed {
        return Vec::new();
    }
    let detail = format!(
        "after sending ended, the system did not settle (every send acked, every client connected and subscribed, every subscriber caught up) within {}",
        ms(meta.drain.took_ns)
    );
    vec![Finding::new(FindingKind::DrainIncomplete, detail).observed(meta.sending_ended_ns + meta.drain.took_ns)]
}

fn progress(index: &TraceIndex) -> Vec<Finding> {
    let rooms = index.trace.rooms.len();
    let mut senders = vec![false; rooms];
    let mut subscribers = vec![false; rooms];
    for info in &index.trace.clients {
        // A sender's k-th send goes to its rooms in turn: room j gets one
        // when it plans more than j sends (or runs a closed loop).
        for (j, room) in info.rooms().enumerate() {
            let r = room as usize;
            senders[r] |= info.role.sends() && info.planned_sends.is_none_or(|n| n > j as u64);
            subscribers[r] |= info.role.subscribes();
        }
    }
    // Without acks (`ack: none`) a send has nothing to wait for: a room
    // progresses when its messages are delivered.
    let no_acks = index.trace.meta.guarantees.ack == crate::scenario::AckGuarantee::None;
    let mut acked = vec![false; rooms];
    for send in index.sends.values() {
        acked[send.room as usize] |= send.ack.is_some() || no_acks;
    }
    let mut delivered = vec![false; rooms];
    for sub in &index.subscribers {
        delivered[sub.room as usize] |= sub.deliveries.iter().any(|d| index.sends.contains_key(&d.msg));
    }
    (0..rooms)
        .filter(|&r| senders[r] && subscribers[r] && !(acked[r] && delivered[r]))
        .map(|r| {
            let missing = match (acked[r], delivered[r]) {
                (false, false) => "no ack and no delivery",
                (false, true) => "no ack",
                _ => "no delivery",
            };
            Finding::new(FindingKind::NoProgress, format!("{missing} in room {} all run", index.trace.rooms[r])).room(r as RoomIdx)
        })
        .collect()
}

/// How much of `[from, until]` lies outside every fault that concerns
/// `client` (while it lasted: a node down until it is healthy again, a
/// backend until it answers). The system is given `within` to recover
/// from a fault's end, however long the fault itself took: a third-party
/// node that needs 10 s to restart is not an outage of the clients'
/// making (the fault's duration is reported on its own).
fn down_outside_faults(index: &TraceIndex, client: ClientId, from: u64, until: u64) -> u64 {
    let mut spans: Vec<(u64, u64)> = index
        .trace
        .meta
        .faults
        .iter()
        .filter(|f| f.error.is_none() && f.concerns(client))
        .map(|f| (f.start_ns.max(from), f.end_ns.min(until)))
        .filter(|(a, b)| a < b)
        .collect();
    spans.sort_unstable();
    let (mut covered, mut reach) = (0u64, from);
    for (a, b) in spans {
        let a = a.max(reach);
        if b > a {
            covered += b - a;
            reach = b;
        }
    }
    (until - from).saturating_sub(covered)
}

/// Spans in which a client was disconnected (or, for a subscriber,
/// unsubscribed) after sending started; longer than `within` (not
/// counting time a fault concerning it still lasted) is a finding.
fn outages(index: &TraceIndex, within_ns: u64) -> Vec<Finding> {
    let start = index.trace.meta.sending_started_ns;
    let mut findings = Vec::new();
    for (id, info) in index.trace.clients.iter().enumerate() {
        if info.role.intruder().is_some() {
            continue; // judged by `authorization`
        }
        let client = id as ClientId;
        let subscribes = info.role.subscribes();
        // A late subscriber is "down" from the moment it was to join.
        let mut down_since = (info.join_at_ns > 0 && subscribes).then_some(start + info.join_at_ns);
        let mut report = |from: u64, until: Option<u64>| {
            let detail = match until {
                Some(t) => {
                    format!("{} for {} (limit {})", if subscribes { "not subscribed" } else { "disconnected" }, ms(t - from), ms(within_ns))
                }
                None => format!("{} from here to the end of the run", if subscribes { "not subscribed" } else { "disconnected" }),
            };
            findings.push(client_finding(index, FindingKind::Outage, client, detail).observed(from));
        };
        let mut gave_up = false;
        for e in events(index, client) {
            let (disrupts, restores) = match e.kind {
                EventKind::Closed { .. } => (true, false),
                EventKind::SubscribeRefused { .. } => (subscribes, false),
                EventKind::Subscribed { .. } => (false, subscribes),
                EventKind::Connected { .. } => (false, !subscribes),
                EventKind::GaveUp { .. } => {
                    gave_up = true; // a finding of its own
                    break;
                }
                _ => (false, false),
            };
            if disrupts && down_since.is_none() && e.t_ns >= start {
                down_since = Some(e.t_ns);
            } else if restores
                && let Some(from) = down_since.take()
                && down_outside_faults(index, client, from, e.t_ns) > within_ns
            {
                report(from, Some(e.t_ns));
            }
        }
        if let Some(from) = down_since.filter(|_| !gave_up) {
            report(from, None);
        }
    }
    findings
}

/// After each fault: every subscriber gets a message sent after the fault
/// started, and every sender an ack for a send it made after the fault
/// started, within `within` of the later of the fault's end and the first
/// such message or send.
fn fault_recovery(index: &TraceIndex, within_ns: u64) -> Vec<Finding> {
    let mut findings = Vec::new();
    // Per room: owed messages by first send time, so each subscriber finds
    // the first one after a fault's start by binary search.
    let mut owed_by_room: Vec<Vec<(u64, MsgNo)>> = vec![Vec::new(); index.trace.rooms.len()];
    for (&msg, send) in &index.sends {
        if send.fate.owed_seq().is_some() {
            owed_by_room[send.room as usize].push((send.first_sent_ns, msg));
        }
    }
    for list in &mut owed_by_room {
        list.sort_unstable();
    }
    for (fi, fault) in index.trace.meta.faults.iter().enumerate() {
        if fault.error.is_some() {
            continue;
        }
        let (s, e) = (fault.start_ns, fault.end_ns);
        let what = format!("{}{}", fault.action, fault.node.map_or(String::new(), |n| format!(" on node {n}")));
        for sub in index.subscribers.iter().filter(|sub| fault.concerns(sub.client)) {
            let owed = &owed_by_room[sub.room as usize];
            let from = owed.partition_point(|&(t, _)| t < s);
            let first_owed = owed[from..].iter().find(|(_, msg)| {
                let send = &index.sends[msg];
                send.fate.owed_seq().is_some_and(|seq| sub.owes(send, seq))
            });
            let Some(&(x, _)) = first_owed else { continue };
            let deadline = e.max(x) + within_ns;
            if sub.gave_up_ns.is_some_and(|t| t <= deadline) {
                continue;
            }
            let recovered = sub
                .deliveries
                .iter()
                .any(|d| !d.ignored && d.t_ns <= deadline && index.sends.get(&d.msg).is_some_and(|send| send.first_sent_ns >= s));
            if !recovered {
                let detail = format!("{what}: no message sent after it started was delivered within {} of its end", ms(within_ns));
                findings.push(
                    Finding::new(FindingKind::NotRecovered, detail).room(sub.room).client(sub.client, sub.node).fault(fi).observed(s),
                );
            }
        }
        // Senders recover by their acks; without acks (`ack: none`) only
        // the subscribers' deliveries tell.
        let no_acks = index.trace.meta.guarantees.ack == crate::scenario::AckGuarantee::None;
        for (id, info) in index.trace.clients.iter().enumerate() {
            let client = id as ClientId;
            if no_acks || !info.role.sends() || !fault.concerns(client) {
                continue;
            }
            let Some(x) =
                events(index, client).find_map(|ev| (matches!(ev.kind, EventKind::Send { .. }) && ev.t_ns >= s).then_some(ev.t_ns))
            else {
                continue;
            };
            let deadline = e.max(x) + within_ns;
            let recovered = events(index, client).any(|ev| matches!(ev.kind, EventKind::Ack { .. }) && ev.t_ns >= x && ev.t_ns <= deadline);
            let gave_up = events(index, client).any(|ev| matches!(ev.kind, EventKind::GaveUp { .. }) && ev.t_ns <= deadline);
            if !recovered && !gave_up {
                let detail = format!("{what}: none of its sends after it started was acked within {} of its end", ms(within_ns));
                findings.push(client_finding(index, FindingKind::NotRecovered, client, detail).fault(fi).observed(s));
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::synthetic::{TraceShape, correct_trace};
    use crate::trace::{Event, FaultRecord};

    /// Sends a client dropped under `max_pending` account for its schedule
    /// (the system pushed back); the same shortfall without them is
    /// `unattempted`.
    #[test]
    fn dropped_sends_are_not_unattempted_but_missing_ones_are() {
        let mut t = correct_trace(&TraceShape::plain(1, 1, 1, 3), 1);
        let sender = t.clients.iter().position(|c| c.planned_sends.is_some()).unwrap() as ClientId;
        *t.clients[sender as usize].planned_sends.as_mut().unwrap() += 2;
        let unattempted =
            |t: &crate::trace::Trace| attempted(&TraceIndex::build(t)).iter().filter(|f| f.kind == FindingKind::Unattempted).count();
        assert_eq!(unattempted(&t), 1);
        for k in 0..2 {
            let msg = crate::message::msg_no(0, 1_000 + k);
            t.events.push(Event {
                t_ns: t.meta.sending_ended_ns,
                client: sender,
                kind: EventKind::Dropped { room: 0, msg, scheduled_ns: 0 },
            });
        }
        assert_eq!(unattempted(&t), 0);
    }

    /// A subscriber down for 12 s while a node restart took 11 s of it:
    /// 1 s outside the fault, no outage; the same 12 s without the fault
    /// (or with a 1 s fault) is one.
    #[test]
    fn time_a_fault_still_lasted_does_not_count_toward_an_outage() {
        let ms = 1_000_000u64;
        for (fault_ms, outage) in [(11_000u64, false), (1_000, true), (0, true)] {
            let mut t = correct_trace(&TraceShape::plain(1, 1, 1, 3), 1);
            let sub = t.clients.iter().position(|c| c.role == crate::trace::Role::Subscriber).unwrap() as ClientId;
            let down = t.meta.sending_ended_ns + ms;
            t.events.push(Event { t_ns: down, client: sub, kind: EventKind::Closed { code: None } });
            t.events.push(Event { t_ns: down + 12_000 * ms, client: sub, kind: EventKind::Connected { node: 0, took_us: 0 } });
            t.events.push(Event { t_ns: down + 12_000 * ms + 1, client: sub, kind: EventKind::Subscribing { room: 0, after: Some(3) } });
            t.events.push(Event {
                t_ns: down + 12_000 * ms + 2,
                client: sub,
                kind: EventKind::Subscribed { room: 0, head: 3, after: Some(3) },
            });
            t.meta.ended_ns = down + 13_000 * ms;
            if fault_ms > 0 {
                t.meta.faults.push(FaultRecord {
                    action: "kill_node".into(),
                    node: Some(0),
                    start_ns: down,
                    end_ns: down + fault_ms * ms,
                    error: None,
                    clients: None,
                });
            }
            let index = TraceIndex::build(&t);
            let found = outages(&index, 10_000 * ms);
            assert_eq!(!found.is_empty(), outage, "fault of {fault_ms} ms: {found:?}");
        }
    }
}
