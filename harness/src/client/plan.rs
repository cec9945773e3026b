//! Which connections a workload opens, where they go (placement), and each
//! sender's share of the send schedule.

use crate::scenario::{Load, Placement, Workload};
use crate::trace::{ClientId, ClientInfo, Role, RoomIdx};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClientPlan {
    /// Index in this run's trace.
    pub id: ClientId,
    /// Its index in the whole workload: message numbers are built from it,
    /// so they stay unique across the shards of a sharded run.
    pub msg_client: ClientId,
    pub role: Role,
    pub node: u32,
    /// Its home room.
    pub room: RoomIdx,
    /// The other rooms it joins and sends into (`rooms_per_client`).
    pub also: Vec<RoomIdx>,
    /// When the client connects, from the workload start.
    pub join_at: Duration,
    /// `after` for the subscription (late subscribers).
    pub after: Option<u64>,
    /// Senders and chatters: when to send.
    pub schedule: Option<Schedule>,
}

impl ClientPlan {
    /// Every room it joins or sends into: its home room first.
    pub(crate) fn rooms(&self) -> impl Iterator<Item = RoomIdx> + '_ {
        std::iter::once(self.room).chain(self.also.iter().copied())
    }

    pub(crate) fn info(&self, duration: Duration) -> ClientInfo {
        ClientInfo {
            role: self.role,
            node: self.node,
            room: self.room,
            also: self.also.clone(),
            join_at_ns: self.join_at.as_nanos() as u64,
            after: self.after,
            planned_sends: self.schedule.and_then(|s| s.planned(duration)),
            tried_as: None,
            granted: None,
        }
    }
}

/// `auth`'s intruders, numbered from `first` (after the members): the
/// `i`-th of the run tries room `i mod rooms` from node `i mod nodes`.
pub(crate) fn plan_intruders(auth: &crate::scenario::Auth, first: ClientId, rooms: u32, nodes: u32) -> Vec<ClientPlan> {
    auth.intruders
        .iter()
        .flat_map(|group| std::iter::repeat_n(group.credentials, group.count as usize))
        .enumerate()
        .map(|(i, credential)| {
            let id = first + i as ClientId;
            ClientPlan {
                id,
                msg_client: id,
                role: Role::Intruder(credential),
                node: i as u32 % nodes.max(1),
                room: i as u32 % rooms.max(1),
                also: Vec::new(),
                join_at: Duration::ZERO,
                after: None,
                schedule: None,
            }
        })
        .collect()
}

/// One sender's send schedule. Open loop: each sender owns every
/// `senders`-th slot of the global schedule, so the total rate is exact and
/// phases are spread. Closed loop: keep `in_flight` unacked sends out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Schedule {
    Open { period_ns: u64, offset_ns: u64 },
    Closed { in_flight: u32 },
}

impl Schedule {
    fn new(load: Load, senders: u32, index: u32) -> Self {
        match load {
            Load::Open { rate_per_s } => {
                let period_ns = ((1e9 * f64::from(senders) / rate_per_s) as u64).max(1);
                Schedule::Open { period_ns, offset_ns: period_ns / u64::from(senders) * u64::from(index) }
            }
            Load::Closed { in_flight } => Schedule::Closed { in_flight },
        }
    }

    /// The `k`-th send's time, in ns from the start of sending (open loop).
    pub(crate) fn slot_ns(&self, k: u32) -> Option<u64> {
        match *self {
            Schedule::Open { period_ns, offset_ns } => Some(offset_ns + u64::from(k) * period_ns),
            Schedule::Closed { .. } => None,
        }
    }

    /// The `k`-th send's time if it falls inside a sending window of
    /// `duration` (open loop). The one definition of "in the window": the
    /// client sends exactly these slots and `planned` counts exactly them,
    /// in integer nanoseconds, so a slot a few ns before the end is both
    /// due and counted.
    pub(crate) fn due_in(&self, k: u32, duration: Duration) -> Option<u64> {
        self.slot_ns(k).filter(|&t| t < duration.as_nanos() as u64)
    }

    /// How many sends an open loop schedules in `duration` (None: closed
    /// loop): the number of `k` for which `due_in` is `Some`.
    pub(crate) fn planned(&self, duration: Duration) -> Option<u64> {
        let duration_ns = duration.as_nanos() as u64;
        match *self {
            Schedule::Open { offset_ns, .. } if offset_ns >= duration_ns => Some(0),
            Schedule::Open { period_ns, offset_ns } => Some((duration_ns - offset_ns).div_ceil(period_ns.max(1))),
            Schedule::Closed { .. } => None,
        }
    }
}

/// The rooms a client with home room `home` also joins: the next ones of
/// the rooms that share its shard (`r % shard_count`), so a sharded run
/// keeps each client's rooms in one shard.
fn also_rooms(home: RoomIdx, rooms: u32, per_client: u32, shard_count: u32) -> Vec<RoomIdx> {
    let class: Vec<RoomIdx> = (0..rooms).filter(|r| r % shard_count == home % shard_count).collect();
    let at = class.iter().position(|&r| r == home).unwrap_or(0);
    let extra = (per_client.max(1) as usize - 1).min(class.len().saturating_sub(1));
    (1..=extra).map(|j| class[(at + j) % class.len()]).collect()
}

/// Per room: subscribers, then senders, then chatters, then late
/// subscribers; placed on nodes (chatters follow the senders' placement).
/// `shard_count`: how many shards the rooms will be split into (1: none).
pub(crate) fn plan_clients(workload: &Workload, nodes: u32, seed: u64, shard_count: u32) -> Vec<ClientPlan> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut plans: Vec<ClientPlan> = Vec::new();
    let (mut senders_placed, mut subscribers_placed) = (0usize, 0usize);
    let senders_total = workload.rooms * (workload.senders_per_room + workload.chatters_per_room);
    let mut sender_index = 0u32;
    for room in 0..workload.rooms {
        let late = workload.late_subscribers.as_ref();
        let roles = std::iter::repeat_n((Role::Subscriber, Duration::ZERO, None), workload.subscribers_per_room as usize)
            .chain(std::iter::repeat_n((Role::Sender, Duration::ZERO, None), workload.senders_per_room as usize))
            .chain(std::iter::repeat_n((Role::Chatter, Duration::ZERO, None), workload.chatters_per_room as usize))
            .chain(
                late.into_iter().flat_map(|l| std::iter::repeat_n((Role::Subscriber, l.join_at.0, l.after.after()), l.per_room as usize)),
            );
        for (role, join_at, after) in roles {
            let id = plans.len() as ClientId;
            let node = match &workload.placement {
                Placement::RoundRobin => id % nodes,
                Placement::Random => rng.random_range(0..nodes),
                Placement::ByRoom => room % nodes,
                Placement::Pinned { senders, subscribers } => {
                    if role.sends() {
                        senders_placed += 1;
                        senders[(senders_placed - 1) % senders.len()]
                    } else {
                        subscribers_placed += 1;
                        subscribers[(subscribers_placed - 1) % subscribers.len()]
                    }
                }
            };
            let schedule = role.sends().then(|| {
                sender_index += 1;
                Schedule::new(workload.load, senders_total, sender_index - 1)
            });
            let also = also_rooms(room, workload.rooms, workload.rooms_per_client, shard_count.max(1));
            plans.push(ClientPlan { id, msg_client: id, role, node, room, also, join_at, after, schedule });
        }
    }
    plans
}

/// Shard `shard` of a planned workload, room-affine: the clients of its
/// rooms (room `r` belongs to shard `r % N`), renumbered from 0 with their
/// rooms renumbered to the shard's list (`rooms_of`), keeping each one's
/// global number for its messages and its slot in the global send schedule.
pub(crate) fn shard_plans(plans: Vec<ClientPlan>, shard: crate::trace::ShardOf) -> Vec<ClientPlan> {
    plans
        .into_iter()
        .filter(|p| shard.owns_room(p.room))
        .enumerate()
        .map(|(i, mut p)| {
            p.id = i as ClientId;
            p.room /= shard.count;
            for r in &mut p.also {
                *r /= shard.count;
            }
            p
        })
        .collect()
}

/// The global room numbers of a shard, in its local order.
pub(crate) fn rooms_of(rooms: u32, shard: Option<crate::trace::ShardOf>) -> Vec<u32> {
    (0..rooms).filter(|r| shard.is_none_or(|s| s.owns_room(*r))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse_str;
    use proptest::strategy::Strategy;

    fn workload(extra: &str) -> Workload {
        let text = format!(
            "name: t\ntopology:\n  nodes: 2\nworkload:\n  rooms: 2\n  subscribers_per_room: 2\n  senders_per_room: 1\n  load: {{closed: {{in_flight: 1}}}}\n  duration: 1s\n{extra}"
        );
        parse_str(&text, "t.yaml").unwrap().workload
    }

    #[test]
    fn round_robin_spreads_each_room_over_nodes() {
        let plans = plan_clients(&workload(""), 2, 1, 1);
        assert_eq!(plans.len(), 6);
        let room0: Vec<(Role, u32)> = plans.iter().filter(|p| p.room == 0).map(|p| (p.role, p.node)).collect();
        assert_eq!(room0, vec![(Role::Subscriber, 0), (Role::Subscriber, 1), (Role::Sender, 0)]);
    }

    #[test]
    fn by_room_puts_every_client_of_a_room_on_one_node() {
        let mut w = workload("  placement: by_room\n");
        w.rooms = 5;
        let plans = plan_clients(&w, 2, 1, 1);
        assert!(plans.iter().all(|p| p.node == p.room % 2), "{plans:?}");
    }

    #[test]
    fn pinned_puts_senders_and_subscribers_where_told() {
        let plans = plan_clients(&workload("  placement: {pinned: {senders: [0], subscribers: [1]}}\n"), 2, 1, 1);
        assert!(plans.iter().all(|p| (p.role == Role::Sender) == (p.node == 0)));
    }

    #[test]
    fn open_loop_schedules_add_up_to_the_rate_and_chatters_send() {
        let w = workload("  chatters_per_room: 1\n").clone();
        let plans = plan_clients(&w, 2, 1, 1);
        assert_eq!(plans.iter().filter(|p| p.role == Role::Chatter).count(), 2);
        let mut open = w.clone();
        open.load = Load::Open { rate_per_s: 100.0 };
        let plans = plan_clients(&open, 2, 1, 1);
        // 4 senders (2 per room incl. chatters) at 100/s for 1 s: 100 sends.
        let planned: u64 = plans.iter().filter_map(|p| p.info(Duration::from_secs(1)).planned_sends).sum();
        assert_eq!(planned, 100);
        assert!(plans.iter().filter(|p| p.role == Role::Subscriber).all(|p| p.info(Duration::from_secs(1)).planned_sends.is_none()));
    }

    #[test]
    fn shards_split_by_room_and_keep_global_message_numbers_and_schedules() {
        let mut w = workload("");
        w.rooms = 5;
        w.rooms_per_client = 2;
        w.load = Load::Open { rate_per_s: 100.0 };
        let all = plan_clients(&w, 2, 1, 2);
        let mut seen = Vec::new();
        let mut planned = 0;
        for index in 0..2 {
            let shard = crate::trace::ShardOf { index, count: 2 };
            let rooms = rooms_of(5, Some(shard));
            let part = shard_plans(all.clone(), shard);
            assert!(part.iter().enumerate().all(|(i, p)| p.id == i as u32), "renumbered from 0");
            for p in &part {
                assert!(p.rooms().all(|r| shard.owns_room(rooms[r as usize])), "a client lives with its rooms");
                seen.push(p.msg_client);
                planned += p.info(Duration::from_secs(1)).planned_sends.unwrap_or(0);
            }
        }
        seen.sort();
        assert_eq!(seen, (0..all.len() as u32).collect::<Vec<_>>(), "every client in exactly one shard");
        assert_eq!(planned, 100, "the shards' schedules add up to the global rate");
    }

    proptest::proptest! {
        /// The one definition of "in the window": for any rate, sender
        /// count, sender index and duration — window edges included, where
        /// a slot falls a few ns before the end — the slots a client sends
        /// (`due_in`) are exactly the ones `planned` counts, so a healthy
        /// run is never `unattempted` at the edge.
        #[test]
        fn planned_counts_exactly_the_slots_a_client_sends(
            rate_per_s in 0.05f64..20_000.0,
            senders in 1u32..64,
            index_pick in 0u32..64,
            duration_ns in 1u64..20_000_000_000,
            edge in proptest::prop_oneof![proptest::strategy::Just(None), (0u64..3).prop_map(Some)],
        ) {
            let index = index_pick % senders;
            let schedule = Schedule::new(Load::Open { rate_per_s }, senders, index);
            // Half the cases put the window's end within a few ns of a slot.
            let duration_ns = match (edge, schedule.slot_ns(3)) {
                (Some(d), Some(slot)) => slot + d,
                _ => duration_ns,
            };
            let duration = Duration::from_nanos(duration_ns);
            let planned = schedule.planned(duration).expect("open loop");
            let sent = (0u32..).take_while(|&k| schedule.due_in(k, duration).is_some()).count() as u64;
            proptest::prop_assert_eq!(planned, sent);
            proptest::prop_assert!((0..sent as u32).all(|k| schedule.due_in(k, duration).is_some_and(|t| t < duration_ns)));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// A healthy run at any rate, sender count, duration and warmup,
        /// whose clients send exactly the slots `due_in` gives them (each
        /// acked and delivered), is judged clean: never `unattempted`,
        /// `unanswered` or `drain_incomplete` at the window's edges.
        #[test]
        fn a_healthy_trace_is_clean_at_window_edges(
            rate_per_s in 0.5f64..2_000.0,
            senders in 1u32..12,
            duration_ms in 50u64..3_000,
            edge_ns in 0u64..5,
            warmup_ms in 0u64..1_000,
        ) {
            use crate::trace::*;
            let load = Load::Open { rate_per_s };
            // End the window a few ns after some sender's slot, where the
            // false failure was.
            let probe = Schedule::new(load, senders, senders - 1);
            let k = (Duration::from_millis(duration_ms).as_nanos() as u64 / probe.slot_ns(1).unwrap().max(1)).max(1) as u32;
            let duration = Duration::from_nanos(probe.slot_ns(k).unwrap() + edge_ns + 1);
            let start = 1_000_000u64;
            let mut clients = vec![ClientInfo { role: Role::Subscriber, ..Default::default() }];
            let mut sends: Vec<(u64, ClientId, MsgNo)> = Vec::new();
            for index in 0..senders {
                let schedule = Schedule::new(load, senders, index);
                let id = clients.len() as ClientId;
                clients.push(ClientInfo { role: Role::Sender, planned_sends: schedule.planned(duration), ..Default::default() });
                for k in (0u32..).map_while(|k| schedule.due_in(k, duration).map(|t| (k, t))) {
                    sends.push((start + k.1, id, msg_no(id, k.0)));
                }
            }
            sends.sort();
            let mut events = Vec::new();
            for c in 0..clients.len() as ClientId {
                events.push(Event { t_ns: 0, client: c, kind: EventKind::Connected { node: 0, took_us: 0 } });
            }
            events.push(Event { t_ns: 10, client: 0, kind: EventKind::Subscribing { room: 0, after: None } });
            events.push(Event { t_ns: 20, client: 0, kind: EventKind::Subscribed { room: 0, head: 0, after: None } });
            let mut history = RoomHistory { entries: Vec::new(), complete: true };
            for (i, &(t, sender, msg)) in sends.iter().enumerate() {
                let seq = i as u64 + 1;
                let body = crate::check::synthetic::body_of(msg);
                events.push(Event { t_ns: t, client: sender, kind: EventKind::Send { room: 0, msg, scheduled_ns: t, body } });
                events.push(Event { t_ns: t + 100, client: sender, kind: EventKind::Ack { room: 0, msg, seq } });
                events.push(Event { t_ns: t + 200, client: 0, kind: crate::check::synthetic::delivery(0, msg, seq) });
                history.entries.push(Stored::new(seq, msg, Some(body)));
            }
            events.sort_by_key(|e| (e.t_ns, e.client));
            let end = start + duration.as_nanos() as u64;
            let trace = Trace {
                version: TRACE_VERSION,
                meta: TraceMeta {
                    warmup_ns: start + warmup_ms * 1_000_000,
                    sending_started_ns: start,
                    sending_ended_ns: end,
                    ended_ns: end + 1_000,
                    load: Some(load),
                    drain: DrainRecord { completed: true, took_ns: 1_000 },
                    ..Default::default()
                },
                rooms: vec!["r".into()],
                clients,
                events,
                history: vec![history],
                api_history: Vec::new(),
            };
            let findings = crate::check::all_findings(&trace, &crate::scenario::Checks::default());
            proptest::prop_assert!(findings.is_empty(), "{findings:#?}");
        }
    }

    #[test]
    fn a_slot_nanoseconds_before_the_end_is_planned_and_due() {
        // The reported false failure: 7.5 msgs/s from one sender for 8 s is
        // a period of 133,333,333 ns, so slot 60 is at 7,999,999,980 ns.
        let schedule = Schedule::new(Load::Open { rate_per_s: 7.5 }, 1, 0);
        let duration = Duration::from_secs(8);
        assert_eq!(schedule.planned(duration), Some(61));
        assert_eq!(schedule.due_in(60, duration), Some(7_999_999_980));
        assert_eq!(schedule.due_in(61, duration), None);
    }

    #[test]
    fn late_subscribers_join_later_with_after() {
        let plans = plan_clients(&workload("  late_subscribers: {per_room: 1, join_at: 500ms, after: 0}\n"), 2, 1, 1);
        let late: Vec<&ClientPlan> = plans.iter().filter(|p| p.after.is_some()).collect();
        assert_eq!(late.len(), 2);
        assert!(late.iter().all(|p| p.join_at == Duration::from_millis(500) && p.role == Role::Subscriber));
        let live = plan_clients(&workload("  late_subscribers: {per_room: 1, join_at: 500ms, after: head}\n"), 2, 1, 1);
        assert_eq!(live.iter().filter(|p| !p.join_at.is_zero() && p.after.is_none()).count(), 2, "after: head subscribes without after");
    }

    #[test]
    fn clients_in_several_rooms_take_the_next_rooms_of_their_shard() {
        assert_eq!(also_rooms(0, 5, 1, 1), Vec::<u32>::new());
        assert_eq!(also_rooms(3, 5, 3, 1), vec![4, 0]);
        assert_eq!(also_rooms(1, 6, 2, 2), vec![3], "rooms 1, 3, 5 are shard 1's of 2");
        assert_eq!(also_rooms(5, 6, 9, 2), vec![1, 3], "capped at the rooms a shard has");
    }
}
