//! Checkers on systems that declare no `seq` (guarantees.order is
//! `per_sender`, `total` or `none`; history `none`), on crafted traces:
//! each asserts the exact findings.

use super::synthetic::{body_of, delivery};
use super::{FindingKind, all_findings};
use crate::scenario::{Checks, Guarantees, HistoryGuarantee, OrderGuarantee};
use crate::trace::{ClientInfo, Event, EventKind, Role, RoomHistory, Trace, TraceMeta, msg_no};

const MS: u64 = 1_000_000;

/// Client 0 and 1 send, 2 and 3 subscribe, one room; sending from 10 ms.
fn base(order: OrderGuarantee) -> Trace {
    base_with(Guarantees { order, history: HistoryGuarantee::None, ..Guarantees::default() }, false)
}

/// [`base`] for any declaration (`store`: a store oracle is declared).
pub(super) fn base_with(guarantees: Guarantees, store: bool) -> Trace {
    let checks = guarantees.narrow(&Checks::default(), store);
    let client = |role| ClientInfo {
        role,
        node: 0,
        room: 0,
        also: Vec::new(),
        join_at_ns: 0,
        after: None,
        planned_sends: None,
        tried_as: None,
        granted: None,
    };
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
        api_history: Vec::new(),
    };
    for c in 0..4 {
        t.events.push(Event { t_ns: MS, client: c, kind: EventKind::Connected { node: 0, took_us: 0 } });
    }
    for c in 2..4 {
        t.events.push(Event { t_ns: 2 * MS, client: c, kind: EventKind::Subscribing { room: 0, after: None } });
        t.events.push(Event { t_ns: 2 * MS, client: c, kind: EventKind::Subscribed { room: 0, head: 0, after: None } });
    }
    t
}

fn send(t: &mut Trace, at_ms: u64, sender: u32, k: u32) -> u64 {
    let msg = msg_no(sender, k);
    t.events.push(Event {
        t_ns: at_ms * MS,
        client: sender,
        kind: EventKind::Send { room: 0, msg, scheduled_ns: at_ms * MS, body: body_of(msg) },
    });
    t.events.push(Event { t_ns: (at_ms + 1) * MS, client: sender, kind: EventKind::Ack { room: 0, msg, seq: 0 } });
    msg
}

fn deliver(t: &mut Trace, at_ms: u64, sub: u32, msg: u64) {
    t.events.push(Event { t_ns: at_ms * MS, client: sub, kind: delivery(0, msg, 0) });
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
    t.events.push(Event { t_ns: 25 * MS, client: 3, kind: EventKind::Connected { node: 0, took_us: 0 } });
    t.events.push(Event { t_ns: 26 * MS, client: 3, kind: EventKind::Subscribing { room: 0, after: None } });
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

/// With connection state recovery declared (`history: recovery`), a
/// subscription outlives its connection: what was sent while it was away
/// is owed after it reconnects (the server replays it).
#[test]
fn with_recovery_a_message_sent_while_a_subscriber_was_away_is_owed() {
    for (history, owed) in [(HistoryGuarantee::None, false), (HistoryGuarantee::Recovery, true)] {
        let mut t = base(OrderGuarantee::PerSender);
        t.meta.guarantees.history = history;
        t.events.push(Event { t_ns: 15 * MS, client: 3, kind: EventKind::Closed { code: None } });
        let a = send(&mut t, 20, 0, 0);
        t.events.push(Event { t_ns: 25 * MS, client: 3, kind: EventKind::Connected { node: 0, took_us: 0 } });
        t.events.push(Event { t_ns: 26 * MS, client: 3, kind: EventKind::Subscribing { room: 0, after: None } });
        t.events.push(Event { t_ns: 26 * MS, client: 3, kind: EventKind::Subscribed { room: 0, head: 0, after: None } });
        deliver(&mut t, 40, 2, a);
        let expected = if owed { vec![(FindingKind::Lost, Some(3))] } else { vec![] };
        assert_eq!(kinds(t.clone()), expected, "{history:?}");
        // Replayed after the reconnect: nothing to find either way.
        deliver(&mut t, 30, 3, a);
        assert_eq!(kinds(t), vec![], "{history:?}");
    }
}

/// `echo: false` (the server broadcasts to everyone but the sender): a
/// subscribed sender is not owed its own message; with echo it is.
#[test]
fn without_echo_a_sender_is_not_owed_its_own_message() {
    for (echo, expected) in [(true, vec![(FindingKind::Lost, Some(2))]), (false, vec![])] {
        let mut t = base(OrderGuarantee::PerSender);
        t.meta.guarantees.echo = echo;
        // Client 2 subscribes and sends (a chatter).
        let a = send(&mut t, 20, 2, 0);
        deliver(&mut t, 40, 3, a);
        assert_eq!(kinds(t), expected, "echo {echo}");
    }
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

/// Generated traces (the property tests' correct traces, trouble included:
/// reconnects, resends, errors, stored-but-unacked sends) turned into what
/// a seq-less system without history records.
pub(super) mod generated {
    use super::*;
    use crate::check::TraceIndex;
    use crate::check::synthetic::{TraceShape, correct_trace};
    use proptest::prelude::*;

    fn seq_less(mut t: Trace, order: OrderGuarantee) -> Trace {
        t.meta.guarantees = Guarantees { order, history: HistoryGuarantee::None, ..Guarantees::default() };
        t.meta.checks = t.meta.guarantees.narrow(&t.meta.checks, false);
        for e in &mut t.events {
            match &mut e.kind {
                EventKind::Ack { seq, .. } | EventKind::Deliver { seq, .. } => *seq = 0,
                EventKind::Subscribed { head, after, .. } => {
                    *head = 0;
                    *after = None;
                }
                _ => {}
            }
        }
        t.history = vec![RoomHistory::default(); t.rooms.len()];
        t
    }

    type Key = (FindingKind, Option<u32>, Option<u64>);

    /// Judged findings: those of checks the declaration leaves on (an
    /// unacked send is still listed `unresolved` without history, but that
    /// check is off and the agreement rule judges it).
    fn found(t: &Trace) -> Vec<Key> {
        let checks = &t.meta.checks;
        let judged = all_findings(t, checks).into_iter().filter(|f| f.kind.check().off_reason(checks).is_none());
        let mut v: Vec<Key> = judged.map(|f| (f.kind, f.client, f.msg)).collect();
        v.sort();
        v
    }

    pub(in crate::check) fn shape() -> impl Strategy<Value = TraceShape> {
        (1u32..3, 1u32..3, 1u32..3, 0u32..2, 2u32..8, any::<bool>()).prop_map(|(rooms, s, r, c, m, trouble)| TraceShape {
            rooms,
            senders_per_room: s,
            subscribers_per_room: r,
            chatters_per_room: c,
            messages_per_sender: m,
            trouble,
        })
    }

    /// Event indexes of first-copy deliveries of acked messages that the
    /// subscriber was owed (and got once), and after which it got another
    /// message (removing its last one would also stall its room or its
    /// recovery, which liveness rightly reports).
    fn owed_deliveries(t: &Trace) -> Vec<usize> {
        let index = TraceIndex::build(t);
        let mut out = Vec::new();
        for (i, e) in t.events.iter().enumerate() {
            let EventKind::Deliver { msg, .. } = e.kind else { continue };
            let Some(send) = index.sends.get(&msg) else { continue };
            let Some(sub) = index.subscribers.iter().find(|s| s.client == e.client && s.room == send.room) else { continue };
            // Deliveries in flight after an unsubscribe are not the view's.
            let copies = sub.deliveries.iter().filter(|d| d.msg == msg).count();
            if sub.deliveries.iter().any(|d| d.msg == msg && d.ignored) {
                continue;
            }
            let later = sub.deliveries.iter().any(|d| d.msg != msg && d.t_ns > e.t_ns && !d.ignored);
            if copies == 1 && later && send.ack.is_some() && sub.owes(send, 0) {
                out.push(i);
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn correct_seq_less_traces_have_no_findings(shape in shape(), seed in any::<u64>(), total in any::<bool>()) {
            let order = if total { OrderGuarantee::Total } else { OrderGuarantee::PerSender };
            let t = seq_less(correct_trace(&shape, seed), order);
            prop_assert_eq!(found(&t), vec![]);
        }

        #[test]
        fn a_dropped_owed_delivery_is_exactly_one_loss(shape in shape(), seed in any::<u64>(), pick in any::<prop::sample::Index>()) {
            let mut t = seq_less(correct_trace(&shape, seed), OrderGuarantee::PerSender);
            let owed = owed_deliveries(&t);
            prop_assume!(!owed.is_empty());
            let i = owed[pick.index(owed.len())];
            let e = t.events.remove(i);
            let EventKind::Deliver { msg, .. } = e.kind else { unreachable!() };
            prop_assert_eq!(found(&t), vec![(FindingKind::Lost, Some(e.client), Some(msg))]);
        }

        #[test]
        fn a_second_copy_is_exactly_one_duplicate(shape in shape(), seed in any::<u64>(), pick in any::<prop::sample::Index>()) {
            let mut t = seq_less(correct_trace(&shape, seed), OrderGuarantee::PerSender);
            let owed = owed_deliveries(&t);
            prop_assume!(!owed.is_empty());
            let i = owed[pick.index(owed.len())];
            let e = t.events[i];
            t.events.insert(i + 1, Event { t_ns: e.t_ns, ..e });
            let EventKind::Deliver { msg, .. } = e.kind else { unreachable!() };
            prop_assert_eq!(found(&t), vec![(FindingKind::Duplicated, Some(e.client), Some(msg))]);
        }

        #[test]
        fn one_senders_two_messages_swapped_is_exactly_one_fifo_violation(
            shape in shape(), seed in any::<u64>(), pick in any::<prop::sample::Index>()
        ) {
            let mut t = seq_less(correct_trace(&shape, seed), OrderGuarantee::PerSender);
            // Adjacent (in the subscriber's stream) first copies from one sender.
            let index = TraceIndex::build(&t);
            let mut pairs = Vec::new();
            for sub in &index.subscribers {
                let judged = |m: u64| sub.deliveries.iter().any(|d| d.msg == m && !d.ignored);
                let mine: Vec<usize> = t.events.iter().enumerate()
                    .filter(|(_, e)| e.client == sub.client && matches!(e.kind, EventKind::Deliver { msg, .. } if judged(msg)))
                    .map(|(i, _)| i).collect();
                for w in mine.windows(2) {
                    let (EventKind::Deliver { msg: a, .. }, EventKind::Deliver { msg: b, .. }) = (t.events[w[0]].kind, t.events[w[1]].kind) else { continue };
                    let (Some(sa), Some(sb)) = (index.sends.get(&a), index.sends.get(&b)) else { continue };
                    let once = |m| sub.deliveries.iter().filter(|d| d.msg == m).count() == 1 && judged(m);
                    if a != b && sa.sender == sb.sender && once(a) && once(b) {
                        pairs.push((w[0], w[1], a));
                    }
                }
            }
            prop_assume!(!pairs.is_empty());
            let (i, j, first) = pairs[pick.index(pairs.len())];
            let (ki, kj) = (t.events[i].kind, t.events[j].kind);
            t.events[i].kind = kj;
            t.events[j].kind = ki;
            let client = t.events[i].client;
            prop_assert_eq!(found(&t), vec![(FindingKind::FifoViolation, Some(client), Some(first))]);
        }
    }
}
