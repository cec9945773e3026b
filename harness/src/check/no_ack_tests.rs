//! Checkers on systems that send no acks (`guarantees.ack: none`, e.g.
//! Spring's simple broker): every send is resolved by the store oracle
//! when the system declares one, else by evidence — delivered somewhere,
//! so owed to every covering subscriber; delivered nowhere although its
//! connection stayed open `confirm_after`, so lost (*unconfirmed*). Each
//! test asserts the exact findings.

use super::synthetic::{body_of, delivery};
use super::{Check, Fate, FindingKind, TraceIndex, all_findings};
use crate::scenario::{AckGuarantee, Guarantees, HistoryGuarantee, OrderGuarantee};
use crate::trace::{Event, EventKind, RoomHistory, Stored, Trace, msg_no};

const MS: u64 = 1_000_000;

/// Client 0 and 1 send, 2 and 3 subscribe, one room; sending 10–500 ms,
/// the drain ran 3 s (past `confirm_after`, 2 s).
fn base(store: bool) -> Trace {
    let guarantees =
        Guarantees { ack: AckGuarantee::None, order: OrderGuarantee::PerSender, history: HistoryGuarantee::None, ..Guarantees::default() };
    let mut t = super::seq_less_tests::base_with(guarantees, store);
    t.meta.ended_ns = 3_600 * MS;
    t.meta.drain = crate::trace::DrainRecord { completed: true, took_ns: 3_000 * MS };
    t
}

/// A fire-and-forget send: no ack follows.
fn send(t: &mut Trace, at_ms: u64, sender: u32, k: u32) -> u64 {
    let msg = msg_no(sender, k);
    t.events.push(Event {
        t_ns: at_ms * MS,
        client: sender,
        kind: EventKind::Send { room: 0, msg, scheduled_ns: at_ms * MS, body: body_of(msg) },
    });
    msg
}

fn deliver(t: &mut Trace, at_ms: u64, sub: u32, msg: u64) {
    t.events.push(Event { t_ns: at_ms * MS, client: sub, kind: delivery(0, msg, 0) });
}

/// Judged findings (checks the declaration leaves on): kind, client, msg.
fn found(mut t: Trace) -> Vec<(FindingKind, Option<u32>, Option<u64>)> {
    t.events.sort_by_key(|e| e.t_ns);
    let checks = t.meta.checks.clone();
    let judged = all_findings(&t, &checks).into_iter().filter(|f| f.kind.check().off_reason(&checks).is_none());
    let mut v: Vec<_> = judged.map(|f| (f.kind, f.client, f.msg)).collect();
    v.sort();
    v
}

#[test]
fn without_acks_answers_are_not_waited_for_and_the_evidence_rule_replaces_agreement() {
    let checks = base(false).meta.checks;
    assert!(Check::Answered.off_reason(&checks).is_some_and(|r| r.contains("ack: none")));
    assert!(Check::Resolved.off_reason(&checks).is_some_and(|r| r.contains("evidence")));
    // A store resolves every send: then unresolved ones are findings again.
    assert_eq!(Check::Resolved.off_reason(&base(true).meta.checks), None);
}

#[test]
fn delivered_to_everyone_passes_and_to_one_is_a_loss_for_the_other() {
    let mut t = base(false);
    let (a, b) = (send(&mut t, 20, 0, 0), send(&mut t, 30, 1, 0));
    for sub in 2..4 {
        deliver(&mut t, 40, sub, a);
    }
    deliver(&mut t, 41, 2, b);
    assert_eq!(found(t), vec![(FindingKind::Lost, Some(3), Some(b))]);
}

#[test]
fn a_send_that_reached_no_one_on_an_open_connection_is_unconfirmed_and_lost_by_every_subscriber() {
    let mut t = base(false);
    let (a, b) = (send(&mut t, 20, 0, 0), send(&mut t, 30, 1, 0));
    for sub in 2..4 {
        deliver(&mut t, 40, sub, a);
    }
    let mut sorted = t.clone();
    sorted.events.sort_by_key(|e| e.t_ns);
    assert_eq!(TraceIndex::build(&sorted).sends[&b].fate, Fate::Unconfirmed);
    assert_eq!(found(t), vec![(FindingKind::Lost, Some(2), Some(b)), (FindingKind::Lost, Some(3), Some(b))]);
}

/// A send whose connection broke within `confirm_after` and that reached
/// no one may never have left the client: indeterminate, excused (and
/// counted as unresolved).
#[test]
fn a_send_that_reached_no_one_before_its_connection_broke_is_indeterminate() {
    for (closed_after_ms, lost) in [(100u64, false), (2_500, true)] {
        let mut t = base(false);
        let a = send(&mut t, 20, 0, 0);
        t.events.push(Event { t_ns: (20 + closed_after_ms) * MS, client: 0, kind: EventKind::Closed { code: None } });
        let expected = if lost { vec![(FindingKind::Lost, Some(2), Some(a)), (FindingKind::Lost, Some(3), Some(a))] } else { vec![] };
        // (The room's lack of progress and the sender's outage are liveness's.)
        let judged: Vec<_> = found(t).into_iter().filter(|f| f.0.check() == Check::ExactlyOnce).collect();
        assert_eq!(judged, expected, "closed {closed_after_ms} ms after the send");
    }
}

/// The drain must outlast `confirm_after`: a send the run stopped
/// watching too early is not judged lost.
#[test]
fn a_send_not_watched_for_confirm_after_is_not_judged_lost() {
    let mut t = base(false);
    t.meta.drain.took_ns = 100 * MS;
    let a = send(&mut t, 450, 0, 0);
    let index = TraceIndex::build(&t);
    assert_eq!(index.sends[&a].fate, Fate::Unknown);
}

/// A cluster that does nothing fails: every send unconfirmed, and the room
/// made no progress.
#[test]
fn a_system_that_delivers_nothing_fails() {
    let mut t = base(false);
    let (a, b) = (send(&mut t, 20, 0, 0), send(&mut t, 30, 1, 0));
    t.clients[0].planned_sends = Some(1);
    t.clients[1].planned_sends = Some(1);
    let f = found(t);
    for m in [a, b] {
        for sub in 2..4 {
            assert!(f.contains(&(FindingKind::Lost, Some(sub), Some(m))), "{f:?}");
        }
    }
    assert!(f.iter().any(|k| k.0 == FindingKind::NoProgress), "{f:?}");
}

#[test]
fn a_healthy_room_without_acks_makes_progress() {
    let mut t = base(false);
    let a = send(&mut t, 20, 0, 0);
    t.clients[0].planned_sends = Some(1);
    t.clients[1].planned_sends = Some(0);
    for sub in 2..4 {
        deliver(&mut t, 40, sub, a);
    }
    assert_eq!(found(t), vec![]);
}

/// With a store: stored means owed to every covering subscriber, not
/// stored means it must reach no one (a phantom if it does).
#[test]
fn the_store_resolves_sends_without_acks() {
    let mut t = base(true);
    let (a, b, c) = (send(&mut t, 20, 0, 0), send(&mut t, 30, 1, 0), send(&mut t, 40, 0, 1));
    t.history = vec![RoomHistory { entries: vec![Stored::new(1, a, None), Stored::new(2, b, None)], complete: true }];
    deliver(&mut t, 50, 2, a);
    deliver(&mut t, 50, 3, a);
    deliver(&mut t, 51, 2, c);
    assert_eq!(
        found(t),
        vec![(FindingKind::Lost, Some(2), Some(b)), (FindingKind::Lost, Some(3), Some(b)), (FindingKind::Phantom, Some(2), Some(c)),]
    );
}

/// An unreadable store falls back to evidence; what evidence cannot
/// settle is then a finding (the store was declared to resolve it).
#[test]
fn an_unreadable_store_leaves_what_evidence_cannot_settle_unresolved() {
    let mut t = base(true);
    let (a, b) = (send(&mut t, 20, 0, 0), send(&mut t, 30, 1, 0));
    t.history = vec![RoomHistory { entries: Vec::new(), complete: false }];
    deliver(&mut t, 50, 2, a);
    deliver(&mut t, 50, 3, a);
    t.events.push(Event { t_ns: 40 * MS, client: 1, kind: EventKind::Closed { code: None } });
    let f: Vec<_> = found(t).into_iter().filter(|f| f.0 != FindingKind::Outage).collect();
    assert_eq!(f, vec![(FindingKind::Unresolved, Some(1), Some(b))]);
}

/// Generated traces (reconnects, resends, errors, unacked sends) as a
/// fire-and-forget system records them: no acks at all.
mod generated {
    use super::*;
    use crate::check::seq_less_tests::generated::shape;
    use crate::check::synthetic::correct_trace;
    use proptest::prelude::*;

    fn fire_and_forget(mut t: Trace) -> Trace {
        t.meta.guarantees = Guarantees {
            ack: AckGuarantee::None,
            order: OrderGuarantee::PerSender,
            history: HistoryGuarantee::None,
            ..Guarantees::default()
        };
        t.meta.checks = t.meta.guarantees.narrow(&t.meta.checks, false);
        t.events.retain(|e| !matches!(e.kind, EventKind::Ack { .. }));
        for e in &mut t.events {
            match &mut e.kind {
                EventKind::Deliver { seq, .. } => *seq = 0,
                EventKind::Subscribed { head, after, .. } => {
                    *head = 0;
                    *after = None;
                }
                _ => {}
            }
        }
        t.history = vec![RoomHistory::default(); t.rooms.len()];
        // Watched long enough for every send to be confirmed or not.
        t.meta.drain.took_ns = t.meta.drain.took_ns.max(10_000 * MS);
        t
    }

    fn judged(t: &Trace) -> Vec<(FindingKind, Option<u32>, Option<u64>)> {
        found(t.clone())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn correct_fire_and_forget_traces_have_no_findings(shape in shape(), seed in any::<u64>()) {
            let t = fire_and_forget(correct_trace(&shape, seed));
            prop_assert_eq!(judged(&t), vec![]);
        }

        /// Drop every delivery of one message (a server that lost it):
        /// exactly the subscribers that were owed it report it lost.
        #[test]
        fn a_message_delivered_to_no_one_is_lost_by_exactly_its_covering_subscribers(
            shape in shape(), seed in any::<u64>(), pick in any::<prop::sample::Index>()
        ) {
            let mut t = fire_and_forget(correct_trace(&shape, seed));
            let index = TraceIndex::build(&t);
            // Messages each of whose receivers got a later message too (so
            // the loss does not also stall a room or a recovery).
            let candidates: Vec<u64> = index.send_order.iter().copied().filter(|m| {
                let got: Vec<_> = index.subscribers.iter().filter(|s| s.deliveries.iter().any(|d| d.msg == *m)).collect();
                !got.is_empty() && got.iter().all(|s| {
                    let at = s.deliveries.iter().filter(|d| d.msg == *m).map(|d| d.t_ns).max().unwrap_or(0);
                    s.deliveries.iter().any(|d| d.msg != *m && d.t_ns > at && !d.ignored)
                })
            }).collect();
            prop_assume!(!candidates.is_empty());
            let m = candidates[pick.index(candidates.len())];
            let send = index.sends[&m];
            drop(index);
            t.events.retain(|e| !matches!(e.kind, EventKind::Deliver { msg, .. } if msg == m));
            let index = TraceIndex::build(&t);
            let fate = index.sends[&m].fate;
            let mut expected: Vec<_> = match fate {
                Fate::Unconfirmed => index.subscribers.iter().filter(|s| s.owes_surely(&send, 0)).map(|s| (FindingKind::Lost, Some(s.client), Some(m))).collect(),
                // Its connection broke within confirm_after: indeterminate.
                _ => { prop_assert_eq!(fate, Fate::Unknown); Vec::new() }
            };
            expected.sort();
            drop(index);
            prop_assert_eq!(judged(&t), expected);
        }
    }
}
