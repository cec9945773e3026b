//! Routing: a message reaches only connections subscribed to its room, and
//! each delivery is labelled so that a real client files it under that
//! room.
//!
//! - `leak`: a delivery to a connection that was not subscribed to the
//!   message's room: it never sent a subscribe for it on that connection,
//!   or the server had confirmed its unsubscribe. (Between sending an
//!   unsubscribe and its confirmation deliveries are allowed.)
//! - `misrouted`: the labels a client dispatches by — protocol v1's
//!   `room`; STOMP's `destination`, `subscription` (the id this client
//!   gave that room's SUBSCRIBE) and `message-id` — are missing, name
//!   another room, or (`message-id`) were used before for another message.
//!   stomp.js and Spring clients route a MESSAGE by its `subscription`: a
//!   wrong one means the message shows up nowhere.
//!
//! - `leak` also: anything of a room that reached an intruder
//!   (`auth.intruders`), live or from a history read.
//!
//! A delivery is counted for exactly-once in the room it was sent to,
//! whatever its labels say, so one wrong label is one finding here and
//! not also a loss.

use super::{Finding, FindingKind, TraceIndex};
use crate::trace::{Answer, Attempt, ClientId, EventKind, Label, MsgNo};
use std::collections::HashMap;

pub fn check(index: &TraceIndex) -> Vec<Finding> {
    let rooms = &index.trace.rooms;
    let name = |r: u32| rooms.get(r as usize).map_or("?", String::as_str);
    let mut findings: Vec<Finding> = index
        .leaks
        .iter()
        .map(|l| {
            let info = index.trace.clients.get(l.client as usize);
            let detail = if let Some((credential, info)) = info.and_then(|c| Some((c.role.intruder()?, c))) {
                format!(
                    "delivered to an intruder with {} credentials, which may not read {}{}",
                    credential.as_str(),
                    name(l.room),
                    info.tried_as_text()
                )
            } else if l.after_left {
                format!("delivered after the server confirmed this connection's unsubscribe from {}", name(l.room))
            } else {
                format!("delivered to a connection that never subscribed to {}", name(l.room))
            };
            Finding::new(FindingKind::Leak, detail).room(l.room).msg(l.msg).seq(l.seq).client(l.client, l.node).observed(l.t_ns)
        })
        .collect();
    // A history read that served an intruder a room's messages.
    for (credential, info, e) in index.intruder_events() {
        // A spelling that is a room of the run is read as that room, its
        // own: what was served cannot be told from its history.
        let own = credential == crate::trace::Credential::Spelling && info.granted.is_some();
        if let EventKind::Probe { room, attempt: Attempt::History, answer: Answer::Accepted { served }, .. } = e.kind
            && served > 0
            && !own
        {
            let detail = format!(
                "the history of {}{} served {served} messages to an intruder with {} credentials, which may not read it",
                name(room),
                info.tried_as_text(),
                credential.as_str()
            );
            findings.push(Finding::new(FindingKind::Leak, detail).room(room).client(e.client, info.node).observed(e.t_ns));
        }
    }
    // Per client: which message each message-id was first used for.
    let mut ids: HashMap<(ClientId, u64), MsgNo> = HashMap::new();
    for sub in &index.subscribers {
        for d in &sub.deliveries {
            let mut wrong: Vec<String> = Vec::new();
            match d.label {
                Label::Ok if d.label_room != d.room => wrong.push(format!("labelled {} but sent to {}", name(d.label_room), name(d.room))),
                Label::Ok => {}
                Label::Missing => wrong.push("carries no room label (JSON room; STOMP destination and subscription)".to_owned()),
                Label::UnknownRoom => wrong.push("its room label names no room this client subscribed to".to_owned()),
                Label::WrongSubscription => {
                    wrong.push(format!("its STOMP subscription is not the id this client subscribed to {} with", name(d.label_room)))
                }
            }
            if d.message_id != 0 {
                let first = *ids.entry((sub.client, d.message_id)).or_insert(d.msg);
                if first != d.msg {
                    wrong.push("its message-id was already used for another message".to_owned());
                }
            }
            if !wrong.is_empty() {
                findings.push(
                    Finding::new(FindingKind::Misrouted, format!("delivery {}", wrong.join("; ")))
                        .room(d.room)
                        .msg(d.msg)
                        .seq(d.seq)
                        .client(sub.client, sub.node)
                        .observed(d.t_ns),
                );
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use crate::check::synthetic::{TraceShape, correct_trace, delivery};
    use crate::check::{FindingKind, TraceIndex};
    use crate::trace::{ClientInfo, Credential, Event, EventKind, Role};

    /// An intruder whose credentials grant one of the run's rooms (`r10`
    /// for the one trying `r1`): that room's messages are its own; any
    /// other room's is a leak.
    #[test]
    fn an_intruders_own_room_is_not_a_leak_but_every_other_room_is() {
        let mut t = correct_trace(&TraceShape::plain(2, 1, 1, 4), 2);
        let intruder = t.clients.len() as u32;
        t.clients.push(ClientInfo { role: Role::Intruder(Credential::Confusable), room: 0, granted: Some(1), ..Default::default() });
        let index = TraceIndex::build(&t);
        let mut sends: Vec<_> = index.sends.iter().map(|(&msg, s)| (msg, s.room)).collect();
        sends.sort();
        let end = t.meta.ended_ns;
        for (i, &(msg, room)) in sends.iter().enumerate() {
            t.events.push(Event { t_ns: end + i as u64, client: intruder, kind: delivery(room, msg, i as u64 + 1) });
        }
        let index = TraceIndex::build(&t);
        let mut leaked: Vec<_> = super::check(&index).into_iter().filter(|f| f.kind == FindingKind::Leak).filter_map(|f| f.msg).collect();
        leaked.sort();
        let expected: Vec<_> = sends.iter().filter(|s| s.1 == 0).map(|s| s.0).collect();
        assert!(!expected.is_empty());
        assert_eq!(leaked, expected);
        t.clients[intruder as usize].granted = None;
        assert_eq!(super::check(&TraceIndex::build(&t)).len(), sends.len(), "without the grant, every one leaks");
    }

    /// A served history read is a leak, except for a `spelling` intruder
    /// whose spelling is itself one of the run's rooms: it read its own
    /// room, and a count cannot tell whose messages were served.
    #[test]
    fn a_spelling_that_is_a_run_room_reads_its_own_history() {
        use crate::trace::{Answer, Attempt};
        let mut t = correct_trace(&TraceShape::plain(2, 1, 1, 4), 3);
        let intruder = t.clients.len() as u32;
        t.clients.push(ClientInfo { role: Role::Intruder(Credential::Spelling), room: 0, granted: Some(1), ..Default::default() });
        let end = t.meta.ended_ns;
        let answer = Answer::Accepted { served: 4 };
        t.events.push(Event {
            t_ns: end,
            client: intruder,
            kind: EventKind::Probe { room: 0, attempt: Attempt::History, answer, started_ns: end },
        });
        let leaks = |t: &crate::trace::Trace| super::check(&TraceIndex::build(t)).iter().filter(|f| f.kind == FindingKind::Leak).count();
        assert_eq!(leaks(&t), 0, "its own room's history");
        t.clients[intruder as usize].granted = None;
        assert_eq!(leaks(&t), 1, "a spelling of no run room: the target's history, a leak");
        t.clients[intruder as usize] =
            ClientInfo { role: Role::Intruder(Credential::Confusable), room: 0, granted: Some(1), ..Default::default() };
        assert_eq!(leaks(&t), 1, "a confusable intruder asked for the target by name: a leak");
    }

    /// An `expiring` intruder's deliveries of messages sent before its
    /// expiry were its own; each one sent after is exactly one leak.
    #[test]
    fn an_expired_members_deliveries_leak_only_for_messages_sent_after_the_expiry() {
        let mut t = correct_trace(&TraceShape::plain(1, 1, 1, 10), 1);
        let intruder = t.clients.len() as u32;
        t.clients.push(ClientInfo { role: Role::Intruder(Credential::Expiring), ..Default::default() });
        let index = TraceIndex::build(&t);
        let mut sends: Vec<_> = index.sends.iter().map(|(&msg, s)| (s.first_sent_ns, msg, s.room)).collect();
        sends.sort();
        let expiry = sends[5].0;
        let end = t.meta.ended_ns;
        t.events.push(Event { t_ns: expiry, client: intruder, kind: EventKind::RightsEnded { room: 0 } });
        for (i, &(_, msg, room)) in sends.iter().enumerate() {
            t.events.push(Event { t_ns: end + i as u64, client: intruder, kind: delivery(room, msg, i as u64 + 1) });
        }
        let index = TraceIndex::build(&t);
        let mut leaked: Vec<_> = super::check(&index).into_iter().filter(|f| f.kind == FindingKind::Leak).filter_map(|f| f.msg).collect();
        leaked.sort();
        let mut expected: Vec<_> = sends[5..].iter().map(|&(_, msg, _)| msg).collect();
        expected.sort();
        assert_eq!(leaked, expected);
    }
}
