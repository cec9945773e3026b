//! Per-sender FIFO across store failures, as a pure rule (guarantee 6).
//!
//! A connection's sends are stored one at a time in the order received.
//! Once a send to a room fails, later sends of that connection to that room
//! are refused (`resend_required`) until the failed `id` is sent again and
//! stored: nothing sent after it can be stored before it. The gate remembers
//! at most `max_rooms` blocked rooms; past that, a send to another room is
//! refused as `store_unavailable` without being tried (a client that keeps
//! failing into ever more rooms cannot grow the connection's memory).

use crate::protocol::{MsgId, RoomId};
use std::collections::HashMap;

/// What to do with a send before storing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Store it.
    Store,
    /// Refuse it: this earlier send to the room failed and must come first.
    ResendFirst(MsgId),
    /// Refuse it: too many rooms are blocked already.
    TooManyBlocked,
}

#[derive(Debug, Default)]
pub(crate) struct SendGate {
    blocked: HashMap<RoomId, MsgId>,
    max_rooms: usize,
}

impl SendGate {
    pub(crate) fn new(max_rooms: usize) -> Self {
        Self { blocked: HashMap::new(), max_rooms: max_rooms.max(1) }
    }

    pub(crate) fn admit(&self, room: &RoomId, id: &MsgId) -> Admit {
        match self.blocked.get(room) {
            Some(failed) if failed != id => Admit::ResendFirst(failed.clone()),
            Some(_) => Admit::Store,
            None if self.blocked.len() >= self.max_rooms => Admit::TooManyBlocked,
            None => Admit::Store,
        }
    }

    /// The outcome of a send that was admitted.
    pub(crate) fn stored(&mut self, room: &RoomId, ok: bool, id: &MsgId) {
        if ok {
            self.blocked.remove(room);
        } else {
            self.blocked.entry(room.clone()).or_insert_with(|| id.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn room(r: u8) -> RoomId {
        RoomId::parse(&format!("r{r}")).unwrap()
    }

    fn id(n: u32) -> MsgId {
        MsgId::parse(&format!("m{n}")).unwrap()
    }

    #[test]
    fn a_failure_blocks_later_sends_of_the_room_until_it_is_stored() {
        let mut gate = SendGate::new(8);
        assert_eq!(gate.admit(&room(1), &id(1)), Admit::Store);
        gate.stored(&room(1), false, &id(1));
        assert_eq!(gate.admit(&room(1), &id(2)), Admit::ResendFirst(id(1)));
        assert_eq!(gate.admit(&room(2), &id(3)), Admit::Store, "other rooms are not blocked");
        assert_eq!(gate.admit(&room(1), &id(1)), Admit::Store);
        gate.stored(&room(1), true, &id(1));
        assert_eq!(gate.admit(&room(1), &id(2)), Admit::Store);
    }

    #[test]
    fn blocked_rooms_are_bounded() {
        let mut gate = SendGate::new(2);
        gate.stored(&room(1), false, &id(1));
        gate.stored(&room(2), false, &id(2));
        assert_eq!(gate.admit(&room(3), &id(3)), Admit::TooManyBlocked);
        assert_eq!(gate.admit(&room(1), &id(1)), Admit::Store);
    }

    proptest! {
        /// A client that resends every unacked send in order after any
        /// failure (as PROTOCOL.md asks) gets its sends stored in send order,
        /// whatever fails when.
        #[test]
        fn stored_order_is_send_order(failures in proptest::collection::vec(any::<bool>(), 1..60)) {
            let mut gate = SendGate::new(4);
            let r = room(0);
            let mut failures = failures.into_iter();
            let mut unacked: Vec<u32> = Vec::new();
            let mut stored: Vec<u32> = Vec::new();
            for next in 0..200u32 {
                // Send everything unacked (in order), then one new message.
                let mut batch = unacked.clone();
                batch.push(next);
                unacked.push(batch[batch.len() - 1]);
                for n in batch {
                    if gate.admit(&r, &id(n)) != Admit::Store {
                        continue;
                    }
                    let ok = !failures.next().unwrap_or(false);
                    gate.stored(&r, ok, &id(n));
                    if ok && !stored.contains(&n) {
                        stored.push(n);
                        unacked.retain(|&u| u != n);
                    }
                }
            }
            prop_assert!(stored.windows(2).all(|w| w[0] < w[1]), "{stored:?}");
        }
    }
}
