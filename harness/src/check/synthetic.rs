//! Synthetic traces: a correct run of any shape, generated without a
//! server, for property tests (inject known violations, expect exactly
//! them) and for the checker benchmarks.
//!
//! In a correct trace each room's senders interleave at random, every send
//! is acked 1 ms after it goes out and delivered to every subscriber of the
//! room 2 ms after, `seq` follows send order, and history holds everything.

use crate::trace::msg_no;
use crate::trace::{ClientInfo, Event, EventKind, Role, RoomHistory, TRACE_VERSION, Trace, TraceMeta};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy)]
pub struct TraceShape {
    pub rooms: u32,
    pub senders_per_room: u32,
    pub subscribers_per_room: u32,
    pub messages_per_sender: u32,
}

const MS: u64 = 1_000_000;

pub fn correct_trace(shape: &TraceShape, seed: u64) -> Trace {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut clients = Vec::new();
    let mut events = Vec::new();
    let mut history = Vec::new();
    let mut end = 0u64;
    for room in 0..shape.rooms {
        let subscribers: Vec<u32> = (0..shape.subscribers_per_room)
            .map(|_| {
                clients.push(ClientInfo { role: Role::Subscriber, node: clients.len() as u32 % 3, room });
                clients.len() as u32 - 1
            })
            .collect();
        let senders: Vec<u32> = (0..shape.senders_per_room)
            .map(|_| {
                clients.push(ClientInfo { role: Role::Sender, node: clients.len() as u32 % 3, room });
                clients.len() as u32 - 1
            })
            .collect();
        for &s in &subscribers {
            events.push(Event { t_ns: 0, client: s, kind: EventKind::Subscribed { room, head: 0, after: None } });
        }
        let mut next_k = vec![0u32; senders.len()];
        let mut entries = Vec::new();
        let total = shape.senders_per_room * shape.messages_per_sender;
        for i in 0..total {
            let open: Vec<usize> = (0..senders.len()).filter(|&j| next_k[j] < shape.messages_per_sender).collect();
            let j = open[rng.random_range(0..open.len())];
            let sender = senders[j];
            let msg = msg_no(sender, next_k[j]);
            next_k[j] += 1;
            let seq = u64::from(i) + 1;
            let t = MS + u64::from(i) * MS;
            events.push(Event { t_ns: t, client: sender, kind: EventKind::Send { room, msg, scheduled_ns: t } });
            events.push(Event { t_ns: t + MS, client: sender, kind: EventKind::Ack { room, msg, seq } });
            for &s in &subscribers {
                events.push(Event { t_ns: t + 2 * MS, client: s, kind: EventKind::Deliver { room, msg, seq } });
            }
            entries.push((seq, msg));
            end = end.max(t + 3 * MS);
        }
        history.push(RoomHistory { entries, complete: true });
    }
    events.sort_by_key(|e| (e.t_ns, e.client));
    Trace {
        version: TRACE_VERSION,
        meta: TraceMeta {
            scenario: "synthetic".into(),
            mode: "changestream".into(),
            seed,
            sending_ended_ns: end,
            ended_ns: end + MS,
            ..Default::default()
        },
        rooms: (0..shape.rooms).map(|r| format!("room-{r}")).collect(),
        clients,
        events,
        history,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{FindingKind, all_findings};
    use crate::trace::MsgNo;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// What a finding is identified by in these tests: history findings by
    /// room and seq, the rest by message and client.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum Key {
        Msg(FindingKind, MsgNo, Option<u32>),
        Seq(FindingKind, u32, u64),
    }

    fn key(f: &crate::check::Finding) -> Key {
        match f.kind {
            FindingKind::HistoryGap | FindingKind::HistoryMismatch => Key::Seq(f.kind, f.room, f.seq.unwrap_or(0)),
            _ => Key::Msg(f.kind, f.msg.unwrap_or(u64::MAX), f.client),
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Injection {
        DropDelivery,
        DuplicateDelivery,
        Phantom,
        Agreement,
        SwapAdjacent,
        FifoSwap,
        HistoryDrop,
        SeqConflict,
    }

    fn injection() -> impl Strategy<Value = (Injection, u64)> {
        let kind = prop_oneof![
            Just(Injection::DropDelivery),
            Just(Injection::DuplicateDelivery),
            Just(Injection::Phantom),
            Just(Injection::Agreement),
            Just(Injection::SwapAdjacent),
            Just(Injection::FifoSwap),
            Just(Injection::HistoryDrop),
            Just(Injection::SeqConflict),
        ];
        (kind, any::<u64>())
    }

    struct Injector {
        trace: Trace,
        reserved: HashSet<MsgNo>,
        expected: Vec<Key>,
        next_phantom: u64,
        next_bogus_seq: u64,
    }

    impl Injector {
        fn deliveries_of(&self, client: u32) -> Vec<usize> {
            (0..self.trace.events.len())
                .filter(|&i| self.trace.events[i].client == client && matches!(self.trace.events[i].kind, EventKind::Deliver { .. }))
                .collect()
        }

        fn deliver(&self, i: usize) -> (u32, MsgNo, u64) {
            match self.trace.events[i].kind {
                EventKind::Deliver { room, msg, seq } => (room, msg, seq),
                _ => unreachable!("index points at a delivery"),
            }
        }

        fn subscribers(&self) -> Vec<u32> {
            (0..self.trace.clients.len() as u32).filter(|&c| self.trace.clients[c as usize].role == Role::Subscriber).collect()
        }

        /// A delivery (event index) of a message nobody else has touched.
        fn pick_delivery(&self, pick: u64) -> Option<usize> {
            let subs = self.subscribers();
            let sub = subs[(pick % subs.len() as u64) as usize];
            let free: Vec<usize> = self.deliveries_of(sub).into_iter().filter(|&i| !self.reserved.contains(&self.deliver(i).1)).collect();
            (!free.is_empty()).then(|| free[((pick >> 8) % free.len() as u64) as usize])
        }

        fn end(&self) -> u64 {
            self.trace.meta.ended_ns
        }

        fn apply(&mut self, injection: Injection, pick: u64) {
            match injection {
                Injection::DropDelivery => {
                    let Some(i) = self.pick_delivery(pick) else {
                        return;
                    };
                    let (_, msg, _) = self.deliver(i);
                    let client = self.trace.events[i].client;
                    self.reserved.insert(msg);
                    self.trace.events.remove(i);
                    self.expected.push(Key::Msg(FindingKind::Lost, msg, Some(client)));
                }
                Injection::DuplicateDelivery => {
                    let Some(i) = self.pick_delivery(pick) else {
                        return;
                    };
                    let (_, msg, _) = self.deliver(i);
                    let mut copy = self.trace.events[i];
                    self.reserved.insert(msg);
                    copy.t_ns += 1;
                    self.trace.events.insert(i + 1, copy);
                    self.expected.push(Key::Msg(FindingKind::Duplicated, msg, Some(copy.client)));
                }
                Injection::Phantom => {
                    let subs = self.subscribers();
                    let client = subs[(pick % subs.len() as u64) as usize];
                    let room = self.trace.clients[client as usize].room;
                    let msg = self.next_phantom;
                    let seq = self.next_bogus_seq;
                    self.next_phantom += 1;
                    self.next_bogus_seq += 1;
                    self.reserved.insert(msg);
                    let t = self.end();
                    self.trace.events.push(Event { t_ns: t, client, kind: EventKind::Deliver { room, msg, seq } });
                    self.expected.push(Key::Msg(FindingKind::Phantom, msg, Some(client)));
                    self.expected.push(Key::Seq(FindingKind::HistoryMismatch, room, seq));
                }
                Injection::Agreement => {
                    if self.trace.clients.iter().filter(|c| c.role == Role::Subscriber && c.room == 0).count() < 2 {
                        return;
                    }
                    let Some(i) = self.pick_delivery(pick) else {
                        return;
                    };
                    let (_, msg, _) = self.deliver(i);
                    let client = self.trace.events[i].client;
                    self.reserved.insert(msg);
                    self.trace.events.remove(i);
                    self.trace.events.retain(|e| !matches!(e.kind, EventKind::Ack { msg: m, .. } if m == msg));
                    self.expected.push(Key::Msg(FindingKind::Agreement, msg, Some(client)));
                }
                Injection::SwapAdjacent => {
                    let subs = self.subscribers();
                    let sub = subs[(pick % subs.len() as u64) as usize];
                    let ds = self.deliveries_of(sub);
                    let pairs: Vec<(usize, usize)> = ds
                        .windows(2)
                        .map(|w| (w[0], w[1]))
                        .filter(|&(a, b)| !self.reserved.contains(&self.deliver(a).1) && !self.reserved.contains(&self.deliver(b).1))
                        .collect();
                    if pairs.is_empty() {
                        return;
                    }
                    let (a, b) = pairs[((pick >> 8) % pairs.len() as u64) as usize];
                    let (msg_a, msg_b) = (self.deliver(a).1, self.deliver(b).1);
                    self.reserved.extend([msg_a, msg_b]);
                    let (ta, tb) = (self.trace.events[a].t_ns, self.trace.events[b].t_ns);
                    self.trace.events[a].t_ns = tb;
                    self.trace.events[b].t_ns = ta;
                    // Now b arrives first; a (the lower seq) arrives after it.
                    self.expected.push(Key::Msg(FindingKind::OrderViolation, msg_a, Some(sub)));
                }
                Injection::FifoSwap => {
                    // Two consecutive, untouched messages of one sender: make
                    // the world consistent with the later one stored first.
                    let senders: Vec<u32> =
                        (0..self.trace.clients.len() as u32).filter(|&c| self.trace.clients[c as usize].role == Role::Sender).collect();
                    let sender = senders[(pick % senders.len() as u64) as usize];
                    let sent: Vec<MsgNo> = self
                        .trace
                        .events
                        .iter()
                        .filter_map(|e| match e.kind {
                            EventKind::Send { msg, .. } if e.client == sender => Some(msg),
                            _ => None,
                        })
                        .collect();
                    let pairs: Vec<(MsgNo, MsgNo)> = sent
                        .windows(2)
                        .map(|w| (w[0], w[1]))
                        .filter(|(a, b)| !self.reserved.contains(a) && !self.reserved.contains(b))
                        .collect();
                    if pairs.is_empty() {
                        return;
                    }
                    let (a, b) = pairs[((pick >> 8) % pairs.len() as u64) as usize];
                    self.reserved.extend([a, b]);
                    let seq_of = |trace: &Trace, m: MsgNo| {
                        trace.events.iter().find_map(|e| match e.kind {
                            EventKind::Ack { msg, seq, .. } if msg == m => Some(seq),
                            _ => None,
                        })
                    };
                    let (Some(sa), Some(sb)) = (seq_of(&self.trace, a), seq_of(&self.trace, b)) else {
                        return;
                    };
                    let delivery_times = |trace: &Trace, m: MsgNo| -> Vec<(u32, u64)> {
                        trace
                            .events
                            .iter()
                            .filter_map(|e| match e.kind {
                                EventKind::Deliver { msg, .. } if msg == m => Some((e.client, e.t_ns)),
                                _ => None,
                            })
                            .collect()
                    };
                    let (ta, tb) = (delivery_times(&self.trace, a), delivery_times(&self.trace, b));
                    for e in &mut self.trace.events {
                        match &mut e.kind {
                            EventKind::Ack { msg, seq, .. } | EventKind::Deliver { msg, seq, .. } if *msg == a || *msg == b => {
                                let is_a = *msg == a;
                                *seq = if is_a { sb } else { sa };
                                if matches!(e.kind, EventKind::Deliver { .. }) {
                                    let times = if is_a { &tb } else { &ta };
                                    if let Some(&(_, t)) = times.iter().find(|(c, _)| *c == e.client) {
                                        e.t_ns = t;
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    for h in &mut self.trace.history {
                        for entry in &mut h.entries {
                            if entry.1 == a {
                                entry.1 = b;
                            } else if entry.1 == b {
                                entry.1 = a;
                            }
                        }
                    }
                    self.expected.push(Key::Msg(FindingKind::FifoViolation, b, Some(sender)));
                }
                Injection::HistoryDrop => {
                    let room = (pick % self.trace.history.len() as u64) as usize;
                    let entries = &self.trace.history[room].entries;
                    // Not the last entry (that would be no gap), nor a touched message.
                    let free: Vec<usize> =
                        (0..entries.len().saturating_sub(1)).filter(|&i| !self.reserved.contains(&entries[i].1)).collect();
                    if free.is_empty() {
                        return;
                    }
                    let i = free[((pick >> 8) % free.len() as u64) as usize];
                    let (seq, msg) = self.trace.history[room].entries.remove(i);
                    self.reserved.insert(msg);
                    self.expected.push(Key::Seq(FindingKind::HistoryGap, room as u32, seq));
                    self.expected.push(Key::Seq(FindingKind::HistoryMismatch, room as u32, seq));
                }
                Injection::SeqConflict => {
                    let Some(i) = self.pick_delivery(pick) else {
                        return;
                    };
                    let (room, msg, _) = self.deliver(i);
                    let client = self.trace.events[i].client;
                    self.reserved.insert(msg);
                    let seq = self.next_bogus_seq;
                    self.next_bogus_seq += 1;
                    let t = self.end();
                    self.trace.events.push(Event { t_ns: t, client, kind: EventKind::Deliver { room, msg, seq } });
                    self.expected.push(Key::Msg(FindingKind::Duplicated, msg, Some(client)));
                    self.expected.push(Key::Msg(FindingKind::SeqConflict, msg, Some(client)));
                    self.expected.push(Key::Seq(FindingKind::HistoryMismatch, room, seq));
                }
            }
            self.trace.events.sort_by_key(|e| (e.t_ns, e.client));
        }
    }

    fn shape() -> impl Strategy<Value = TraceShape> {
        (1u32..4, 1u32..4, 2u32..5, 2u32..12).prop_map(|(rooms, senders_per_room, subscribers_per_room, messages_per_sender)| TraceShape {
            rooms,
            senders_per_room,
            subscribers_per_room,
            messages_per_sender,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn correct_traces_have_no_findings(shape in shape(), seed in any::<u64>()) {
            let trace = correct_trace(&shape, seed);
            let findings = all_findings(&trace);
            prop_assert!(findings.is_empty(), "{findings:#?}");
        }

        #[test]
        fn checkers_report_exactly_the_injected_violations(
            shape in shape(),
            seed in any::<u64>(),
            injections in proptest::collection::vec(injection(), 1..6),
        ) {
            let trace = correct_trace(&shape, seed);
            let mut injector = Injector {
                next_phantom: u64::MAX - 1_000,
                next_bogus_seq: 1_000_000,
                trace,
                reserved: HashSet::new(),
                expected: Vec::new(),
            };
            for (kind, pick) in injections {
                injector.apply(kind, pick);
            }
            let mut found: Vec<Key> = all_findings(&injector.trace).iter().map(key).collect();
            let mut expected = injector.expected.clone();
            found.sort();
            expected.sort();
            prop_assert_eq!(found, expected);
        }
    }

    #[test]
    fn each_injection_kind_alone_is_found() {
        let shape = TraceShape { rooms: 2, senders_per_room: 2, subscribers_per_room: 3, messages_per_sender: 6 };
        for kind in [
            Injection::DropDelivery,
            Injection::DuplicateDelivery,
            Injection::Phantom,
            Injection::Agreement,
            Injection::SwapAdjacent,
            Injection::FifoSwap,
            Injection::HistoryDrop,
            Injection::SeqConflict,
        ] {
            let mut injector = Injector {
                next_phantom: u64::MAX - 1_000,
                next_bogus_seq: 1_000_000,
                trace: correct_trace(&shape, 7),
                reserved: HashSet::new(),
                expected: Vec::new(),
            };
            injector.apply(kind, 12345);
            assert!(!injector.expected.is_empty(), "{kind:?} was not applied");
            let mut found: Vec<Key> = all_findings(&injector.trace).iter().map(key).collect();
            found.sort();
            injector.expected.sort();
            assert_eq!(found, injector.expected, "{kind:?}");
        }
    }
}
