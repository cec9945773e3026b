//! Authorization: every attempt of an intruder (`auth.intruders`) on a
//! room its credentials do not grant is refused with a definite error.
//!
//! - `unrefused`: the attempt was done (subscribed, acked, history
//!   served), or got no definite answer within `auth.answer_within` (a
//!   client cannot tell a silent drop from a slow yes, and a real one
//!   would hang waiting). No answer while a fault had the intruder's node
//!   down, paused or cut off is indeterminate and not judged here.
//!
//! - `unrefused` also: an intruder's send that was refused with an error,
//!   yet history holds it (the server said no and stored it anyway).
//!
//! - A `spelling` intruder's attempt that was accepted is not judged: the
//!   spelling its credentials grant may be a room of its own. What of the
//!   room it spelled reaches it is, as for every intruder.
//!
//! What reached an intruder anyway is a `leak` (see `routing`); what it
//! managed to send is owed to the members like any other message, so the
//! members' checks stay exact.

use super::{Fate, Finding, FindingKind, TraceIndex};
use crate::trace::{Answer, EventKind};

pub fn check(index: &TraceIndex) -> Vec<Finding> {
    let trace = index.trace;
    let name = |r: u32| trace.rooms.get(r as usize).map_or("?", String::as_str);
    index
        .intruder_events()
        .filter_map(|(credential, info, e)| {
            let at = |room, detail: String| Finding::new(FindingKind::Unrefused, detail).room(room).client(e.client, info.node);
            let (room, attempt, answer, started_ns) = match e.kind {
                EventKind::Probe { room, attempt, answer, started_ns } => (room, attempt, answer, started_ns),
                // Refused, yet stored: history holds a send it was told was refused.
                EventKind::Error { msg: Some(msg) } => {
                    let send = index.sends.get(&msg)?;
                    let Fate::Stored(seq) = send.fate else { return None };
                    let detail = format!(
                        "an intruder with {} credentials sent into {}: it was refused, yet stored at seq {seq}",
                        credential.as_str(),
                        name(send.room)
                    );
                    return Some(at(send.room, detail).msg(msg).seq(seq).sent(send.first_sent_ns));
                }
                _ => return None,
            };
            // Its node was down, cut off or paused by the nemesis meanwhile:
            // nobody could answer. Indeterminate, so not judged here; what it
            // let through is still judged (leak, phantom).
            let in_fault = |f: &crate::trace::FaultRecord| {
                f.node.is_none_or(|n| n == info.node) && f.concerns(e.client) && f.start_ns <= e.t_ns && f.end_ns >= started_ns
            };
            let what = match answer {
                Answer::Refused => return None,
                // A spelling its credentials grant may be a room of its own;
                // only what of the room reaches it is judged (`leak`).
                Answer::Accepted { .. } if credential == crate::trace::Credential::Spelling => return None,
                Answer::NoAnswer if trace.meta.faults.iter().any(in_fault) => return None,
                Answer::Accepted { served } if attempt == crate::trace::Attempt::History => format!("was served ({served} messages)"),
                Answer::Accepted { .. } => "was accepted".to_owned(),
                Answer::NoAnswer => "got no definite answer (a refusal must be an error the client can see)".to_owned(),
            };
            let detail = format!(
                "an intruder with {} credentials tried to {} {}{}: it {what}",
                credential.as_str(),
                attempt.as_str(),
                name(room),
                info.tried_as_text()
            );
            Some(at(room, detail).observed(e.t_ns))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::check::synthetic::{TraceShape, body_of, correct_trace, delivery};
    use crate::check::{FindingKind, all_findings};
    use crate::trace::{Answer, Attempt, ClientInfo, Credential, Event, EventKind, MsgNo, Role, Stored, Trace, msg_no};

    /// Add an intruder to room 0 whose send, just before sending ends, is
    /// answered with an error: (its id, the message, the `seq` the room
    /// would give it next).
    fn refused_send(t: &mut Trace, credential: Credential) -> (u32, MsgNo, u64) {
        let intruder = t.clients.len() as u32;
        t.clients.push(ClientInfo { role: Role::Intruder(credential), ..Default::default() });
        let (msg, end) = (msg_no(intruder, 0), t.meta.sending_ended_ns);
        t.events.extend([
            Event {
                t_ns: end - 1000,
                client: intruder,
                kind: EventKind::Send { room: 0, msg, scheduled_ns: end - 1000, body: body_of(msg) },
            },
            Event { t_ns: end - 900, client: intruder, kind: EventKind::Error { msg: Some(msg) } },
        ]);
        (intruder, msg, t.history[0].entries.last().unwrap().seq + 1)
    }

    /// A server that answers an intruder's send with an error but stores
    /// and fans it out anyway fails `authorization`, and nothing else: the
    /// members got what history holds.
    #[test]
    fn a_send_refused_yet_stored_is_unrefused_and_only_that() {
        let mut t = correct_trace(&TraceShape::plain(1, 1, 2, 4), 3);
        let (intruder, msg, seq) = refused_send(&mut t, Credential::OtherRoom);
        let end = t.meta.sending_ended_ns;
        t.history[0].entries.push(Stored::new(seq, msg, Some(body_of(msg))));
        let at = |t_ns, client, kind| Event { t_ns, client, kind };
        t.events.push(at(
            end - 900,
            intruder,
            EventKind::Probe { room: 0, attempt: Attempt::Send, answer: Answer::Refused, started_ns: end - 1000 },
        ));
        for (c, info) in t.clients.clone().iter().enumerate() {
            if info.role.subscribes() {
                t.events.push(at(end - 800, c as u32, delivery(0, msg, seq)));
            }
        }
        t.events.sort_by_key(|e| (e.t_ns, e.client));
        let findings = all_findings(&t, &t.meta.checks);
        let kinds: Vec<FindingKind> = findings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [FindingKind::Unrefused], "{findings:#?}");
        assert!(findings[0].detail.contains("refused, yet stored"), "{}", findings[0].detail);
        assert_eq!(findings[0].msg, Some(msg));
    }

    /// No answer is unrefused, except while a fault concerned the node.
    #[test]
    fn no_answer_is_unrefused_unless_a_fault_had_the_node() {
        let mut t = correct_trace(&TraceShape::plain(1, 1, 1, 4), 9);
        let intruder = t.clients.len() as u32;
        t.clients.push(ClientInfo { role: Role::Intruder(Credential::None), node: 1, ..Default::default() });
        let end = t.meta.sending_ended_ns;
        let probe = |started_ns| Event {
            t_ns: started_ns + 500,
            client: intruder,
            kind: EventKind::Probe { room: 0, attempt: Attempt::Subscribe, answer: Answer::NoAnswer, started_ns },
        };
        t.events.extend([probe(end - 3000), probe(end - 1000)]);
        t.events.sort_by_key(|e| (e.t_ns, e.client));
        let fault = |node| crate::trace::FaultRecord {
            action: "kill_node".into(),
            node: Some(node),
            start_ns: end - 1200,
            end_ns: end - 800,
            ..Default::default()
        };
        let unrefused = |t: &crate::trace::Trace| {
            let findings = all_findings(t, &t.meta.checks);
            findings.into_iter().filter(|f| f.kind == FindingKind::Unrefused).map(|f| f.observed_ns.unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(unrefused(&t), [end - 2500, end - 500]);
        t.meta.faults.push(fault(0));
        assert_eq!(unrefused(&t), [end - 2500, end - 500], "a fault on another node excuses nothing");
        t.meta.faults.push(fault(1));
        assert_eq!(unrefused(&t), [end - 2500], "the attempt during the fault on its node is not judged");
    }

    /// A `spelling` intruder whose spelling was taken (a room of its own,
    /// as a healthy server may) is not judged; the room's messages
    /// reaching it, live or from history, are leaks that name the
    /// spelling, and nothing else is found.
    #[test]
    fn an_accepted_spelling_is_judged_by_what_reaches_it_alone() {
        let mut t = correct_trace(&TraceShape::plain(1, 1, 1, 4), 11);
        let intruder = t.clients.len() as u32;
        t.clients.push(ClientInfo { role: Role::Intruder(Credential::Spelling), tried_as: Some("room-0/".into()), ..Default::default() });
        let end = t.meta.sending_ended_ns;
        let probe = |attempt, answer| Event {
            t_ns: end + 10,
            client: intruder,
            kind: EventKind::Probe { room: 0, attempt, answer, started_ns: end },
        };
        t.events.push(probe(Attempt::Subscribe, Answer::Accepted { served: 0 }));
        t.events.push(probe(Attempt::History, Answer::Accepted { served: 0 }));
        t.events.sort_by_key(|e| (e.t_ns, e.client));
        let none = all_findings(&t, &t.meta.checks);
        assert!(none.is_empty(), "a spelling of its own, taken, and nothing of the room reached it: {none:#?}");
        // The room reached it: one delivery, and a history page of it.
        let first = t.history[0].entries[0];
        t.events.push(Event { t_ns: end + 20, client: intruder, kind: delivery(0, first.msg, first.seq) });
        t.events.push(probe(Attempt::History, Answer::Accepted { served: 3 }));
        t.events.sort_by_key(|e| (e.t_ns, e.client));
        let findings = all_findings(&t, &t.meta.checks);
        let kinds: Vec<FindingKind> = findings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [FindingKind::Leak, FindingKind::Leak], "{findings:#?}");
        assert!(findings.iter().all(|f| f.detail.contains("(asked as \"room-0/\")")), "{findings:#?}");
        // The same delivery to an `other_room` intruder is a leak too, and
        // an accepted subscribe of its is unrefused.
        t.clients[intruder as usize] = ClientInfo { role: Role::Intruder(Credential::OtherRoom), ..Default::default() };
        let kinds: Vec<FindingKind> = all_findings(&t, &t.meta.checks).iter().map(|f| f.kind).collect();
        assert_eq!(kinds.iter().filter(|k| **k == FindingKind::Unrefused).count(), 3, "{kinds:?}");
    }

    /// Without history, a refused send did not happen: delivering it is a phantom.
    #[test]
    fn without_history_a_refused_send_that_is_delivered_is_a_phantom() {
        let mut t = correct_trace(&TraceShape::plain(1, 1, 1, 4), 5);
        let (_, msg, seq) = refused_send(&mut t, Credential::Forged);
        t.history[0].complete = false;
        let subscriber = t.clients.iter().position(|c| c.role.subscribes()).unwrap() as u32;
        t.events.push(Event { t_ns: t.meta.sending_ended_ns - 800, client: subscriber, kind: delivery(0, msg, seq) });
        t.events.sort_by_key(|e| (e.t_ns, e.client));
        let index = crate::check::TraceIndex::build(&t);
        assert_eq!(index.sends[&msg].fate, crate::check::Fate::NotStored);
        let phantoms: Vec<_> = all_findings(&t, &t.meta.checks).into_iter().filter(|f| f.msg == Some(msg)).map(|f| f.kind).collect();
        assert_eq!(phantoms, [FindingKind::Phantom]);
    }
}
