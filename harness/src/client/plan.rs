//! Which connections a workload opens and where they go (placement).

use crate::scenario::{Placement, Workload};
use crate::trace::{ClientId, ClientInfo, Role, RoomIdx};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct ClientPlan {
    pub id: ClientId,
    pub role: Role,
    pub node: u32,
    pub room: RoomIdx,
    /// When the client connects, from the workload start.
    pub join_at: Duration,
    /// `after` for the subscription (late subscribers).
    pub after: Option<u64>,
    /// Index among all senders (spreads open-loop schedules).
    pub sender_index: u32,
}

impl ClientPlan {
    pub fn info(&self) -> ClientInfo {
        ClientInfo { role: self.role, node: self.node, room: self.room }
    }
}

/// Per room: subscribers, then senders, then late subscribers; placed on nodes.
pub fn plan_clients(workload: &Workload, nodes: u32, seed: u64) -> Vec<ClientPlan> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut plans: Vec<ClientPlan> = Vec::new();
    let (mut senders_placed, mut subscribers_placed) = (0usize, 0usize);
    let mut sender_index = 0u32;
    for room in 0..workload.rooms {
        let late = workload.late_subscribers.as_ref();
        let roles = std::iter::repeat_n((Role::Subscriber, Duration::ZERO, None), workload.subscribers_per_room as usize)
            .chain(std::iter::repeat_n((Role::Sender, Duration::ZERO, None), workload.senders_per_room as usize))
            .chain(late.into_iter().flat_map(|l| std::iter::repeat_n((Role::Subscriber, l.join_at.0, Some(l.after)), l.per_room as usize)));
        for (role, join_at, after) in roles {
            let id = plans.len() as ClientId;
            let node = match &workload.placement {
                Placement::RoundRobin => id % nodes,
                Placement::Random => rng.random_range(0..nodes),
                Placement::Pinned { senders, subscribers } => match role {
                    Role::Sender => {
                        senders_placed += 1;
                        senders[(senders_placed - 1) % senders.len()]
                    }
                    Role::Subscriber => {
                        subscribers_placed += 1;
                        subscribers[(subscribers_placed - 1) % subscribers.len()]
                    }
                },
            };
            let this_sender = sender_index;
            if role == Role::Sender {
                sender_index += 1;
            }
            plans.push(ClientPlan { id, role, node, room, join_at, after, sender_index: this_sender });
        }
    }
    plans
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse_str;

    fn workload(extra: &str) -> Workload {
        let text = format!(
            "name: t\ntopology:\n  nodes: 2\nworkload:\n  rooms: 2\n  subscribers_per_room: 2\n  senders_per_room: 1\n  load: {{closed: {{in_flight: 1}}}}\n  duration: 1s\n{extra}"
        );
        parse_str(&text, "t.yaml").unwrap().workload
    }

    #[test]
    fn round_robin_spreads_each_room_over_nodes() {
        let plans = plan_clients(&workload(""), 2, 1);
        assert_eq!(plans.len(), 6);
        let room0: Vec<(Role, u32)> = plans.iter().filter(|p| p.room == 0).map(|p| (p.role, p.node)).collect();
        assert_eq!(room0, vec![(Role::Subscriber, 0), (Role::Subscriber, 1), (Role::Sender, 0)]);
    }

    #[test]
    fn pinned_puts_senders_and_subscribers_where_told() {
        let plans = plan_clients(&workload("  placement: {pinned: {senders: [0], subscribers: [1]}}\n"), 2, 1);
        assert!(plans.iter().all(|p| (p.role == Role::Sender) == (p.node == 0)));
    }

    #[test]
    fn late_subscribers_join_later_with_after() {
        let plans = plan_clients(&workload("  late_subscribers: {per_room: 1, join_at: 500ms, after: 0}\n"), 2, 1);
        let late: Vec<&ClientPlan> = plans.iter().filter(|p| p.after.is_some()).collect();
        assert_eq!(late.len(), 2);
        assert!(late.iter().all(|p| p.join_at == Duration::from_millis(500) && p.role == Role::Subscriber));
    }
}
