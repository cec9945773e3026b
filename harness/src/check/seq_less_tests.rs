//! Checkers on systems that declare no `seq` (guarantees.order is
//! `per_sender`, `total` or `none`; history `none`), on crafted traces:
//! each asserts the exact findings.

use super::{FindingKind, all_findings};
use crate::scenario::{Checks, Guarantees, HistoryGuarantee, OrderGuarantee};
use crate::trace::{ClientInfo, Event, EventKind, Role, RoomHistory, Trace, TraceMeta, msg_no};

const MS: u64 = 1_000_000;

/// Client 0 and 1 send, 2 and 3 subscribe, one room; sending from 10 ms.
fn base(order: OrderGuarantee) -> Trace {
    let guarantees = Guarantees { order, history: HistoryGuarantee::None, ..Guarantees::default() };
    let checks = guarantees.narrow(&Checks::default());
    let client = |role| ClientInfo { role, node: 0, room: 0, join_at_ns: 0, after: None, planned_sends: None };
    let mut t = Trace {
        version: crate::trace::TRACE_VERSION,
        meta: TraceMeta {
            guarantees,
            checks,
            warmup_ns: 10 * MS,
            sending_started_ns: 10 * MS,
            sending_ended_ns: 500 * MS,
            ended_ns: 600 * MS,
            nodes: 1,
            ..Default::default()
        },
        rooms: vec!["r".into()],
        clients: vec![client(Role::Sender), client(Role::Sender), client(Role::Subscriber), client(Role::Subscriber)],
        events: Vec::new(),
        history: vec![RoomHistory::default()],
    };
    for c in 0..4 {
        t.events.push(Event { t_ns: MS, client: c, kind: EventKind::Connected { node: 0 } });
    }
    for c in 2..4 {
        t.events.push(Event { t_ns: 2 * MS, client: c, kind: EventKind::Subscribed { room: 0, head: 0, after: None } });
    }
    t
}

fn send(t: &mut Trace, at_ms: u64, sender: u32, k: u32) -> u64 {
    let msg = msg_no(sender, k);
    t.events.push(Event { t_ns: at_ms * MS, client: sender, kind: EventKind::Send { room: 0, msg, scheduled_ns: at_ms * MS } });
    t.events.push(Event { t_ns: (at_ms + 1) * MS, client: sender, kind: EventKind::Ack { room: 0, msg, seq: 0 } });
    msg
}

fn deliver(t: &mut Trace, at_ms: u64, sub: u32, msg: u64) {
    t.events.push(Event { t_ns: at_ms * MS, client: sub, kind: EventKind::Deliver { room: 0, msg, seq: 0 } });
}

fn kinds(mut t: Trace) -> Vec<(FindingKind, Option<u32>)> {
    t.events.sort_by_key(|e| e.t_ns);
    let checks = t.meta.checks.clone();
    let mut v: Vec<_> = all_findings(&t, &checks).into_iter().filter(|f| !is_liveness(f.kind)).map(|f| (f.kind, f.client)).collect();
    v.sort();
    v
}

/// Crafted traces skip liveness bookkeeping (schedules, progress): judge
/// delivery and order only.
fn is_liveness(kind: FindingKind) -> bool {
    use FindingKind::*;
    matches!(
        kind,
        NotReady | Unattempted | GaveUp | ShardMissing | Unanswered | Unresolved | DrainIncomplete | NoProgress | Outage | NotRecovered
    )
}

#[test]
fn everything_owed_delivered_once_in_send_order_passes() {
    let mut t = base(OrderGuarantee::PerSender);
    let (a, b) = (send(&mut t, 20, 0, 0), send(&mut t, 30, 0, 1));
    for sub in 2..4 {
        deliver(&mut t, 40, sub, a);
        deliver(&mut t, 41, sub, b);
    }
    assert_eq!(kinds(t), vec![]);
}

#[test]
fn a_message_sent_and_acked_while_subscribed_and_never_delivered_is_lost() {
    let mut t = base(OrderGuarantee::PerSender);
    let a = send(&mut t, 20, 0, 0);
    deliver(&mut t, 40, 2, a);
    assert_eq!(kinds(t), vec![(FindingKind::Lost, Some(3))]);
}

#[test]
fn a_message_sent_while_a_subscriber_was_away_is_not_owed_to_it() {
    let mut t = base(OrderGuarantee::PerSender);
    t.events.push(Event { t_ns: 15 * MS, client: 3, kind: EventKind::Closed { code: None } });
    let a = send(&mut t, 20, 0, 0);
    t.events.push(Event { t_ns: 25 * MS, client: 3, kind: EventKind::Connected { node: 0 } });
    t.events.push(Event { t_ns: 26 * MS, client: 3, kind: EventKind::Subscribed { room: 0, head: 0, after: None } });
    let b = send(&mut t, 30, 0, 1);
    deliver(&mut t, 40, 2, a);
    deliver(&mut t, 41, 2, b);
    deliver(&mut t, 41, 3, b);
    assert_eq!(kinds(t.clone()), vec![]);
    // ...but what is sent after it is back still is.
    let mut t2 = t;
    t2.events.retain(|e| !(e.client == 3 && matches!(e.kind, EventKind::Deliver { .. })));
    assert_eq!(kinds(t2), vec![(FindingKind::Lost, Some(3))]);
}

#[test]
fn a_second_copy_is_a_duplicate_and_an_unsent_message_a_phantom() {
    let mut t = base(OrderGuarantee::PerSender);
    let a = send(&mut t, 20, 0, 0);
    for sub in 2..4 {
        deliver(&mut t, 40, sub, a);
    }
    deliver(&mut t, 42, 3, a);
    deliver(&mut t, 43, 2, msg_no(1, 77));
    assert_eq!(kinds(t), vec![(FindingKind::Duplicated, Some(3)), (FindingKind::Phantom, Some(2))]);
}

#[test]
fn one_senders_messages_out_of_send_order_violate_per_sender_fifo() {
    let mut t = base(OrderGuarantee::PerSender);
    let (a, b, c) = (send(&mut t, 20, 0, 0), send(&mut t, 30, 0, 1), send(&mut t, 31, 1, 0));
    deliver(&mut t, 40, 2, a);
    deliver(&mut t, 41, 2, b);
    deliver(&mut t, 42, 2, c);
    deliver(&mut t, 40, 3, c);
    deliver(&mut t, 41, 3, b);
    deliver(&mut t, 42, 3, a);
    // Two senders interleaved differently is fine per sender: only b/a is not.
    assert_eq!(kinds(t), vec![(FindingKind::FifoViolation, Some(3))]);
}

#[test]
fn subscribers_disagreeing_on_a_rooms_order_violate_declared_total_order() {
    let mut t = base(OrderGuarantee::Total);
    let (a, c) = (send(&mut t, 20, 0, 0), send(&mut t, 21, 1, 0));
    deliver(&mut t, 40, 2, a);
    deliver(&mut t, 41, 2, c);
    deliver(&mut t, 40, 3, c);
    deliver(&mut t, 41, 3, a);
    let found = kinds(t);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, FindingKind::OrderViolation);
}

#[test]
fn declared_order_none_checks_no_order() {
    let mut t = base(OrderGuarantee::None);
    let (a, b) = (send(&mut t, 20, 0, 0), send(&mut t, 30, 0, 1));
    for sub in 2..4 {
        deliver(&mut t, 40, sub, b);
        deliver(&mut t, 41, sub, a);
    }
    let checks = t.meta.checks.clone();
    t.events.sort_by_key(|e| e.t_ns);
    let fifo: Vec<_> = all_findings(&t, &checks).into_iter().filter(|f| f.kind == FindingKind::FifoViolation).collect();
    // Found, but the check is off with the declaration as its reason.
    assert!(!fifo.is_empty());
    assert_eq!(super::Check::PerSenderFifo.off_reason(&checks), Some("declared order: none"));
}

#[test]
fn a_subscriber_that_left_just_after_the_ack_is_not_owed_one_that_stayed_is() {
    for (left_after_ms, expected) in [(500, vec![]), (1500, vec![(FindingKind::Lost, Some(3))])] {
        let mut t = base(OrderGuarantee::PerSender);
        let a = send(&mut t, 20, 0, 0);
        deliver(&mut t, 40, 2, a);
        t.events.push(Event { t_ns: (21 + left_after_ms) * MS, client: 3, kind: EventKind::Closed { code: None } });
        assert_eq!(kinds(t), expected, "left {left_after_ms} ms after the ack");
    }
}
