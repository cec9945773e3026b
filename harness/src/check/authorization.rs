//! Authorization: every attempt of an intruder (`auth.intruders`) on a
//! room its credentials do not grant is refused with a definite error.
//!
//! - `unrefused`: the attempt was done (subscribed, acked, history
//!   served), or got no definite answer within `auth.answer_within` (a
//!   client cannot tell a silent drop from a slow yes, and a real one
//!   would hang waiting).
//!
//! - `unrefused` also: an intruder's send that was refused with an error,
//!   yet history holds it (the server said no and stored it anyway).
//!
//! What reached an intruder anyway is a `leak` (see `routing`); what it
//! managed to send is owed to the members like any other message, so the
//! members' checks stay exact.

use super::{Fate, Finding, FindingKind, TraceIndex};
use crate::trace::{Answer, EventKind};

pub fn check(index: &TraceIndex) -> Vec<Finding> {
    let trace = index.trace;
    let name = |r: u32| trace.rooms.get(r as usize).map_or("?", String::as_str);
    // Refused, yet stored: the history holds an intruder's send it was told was refused.
    let mut stored_anyway: Vec<Finding> = index
        .sends
        .iter()
        .filter_map(|(&msg, send)| {
            let credential = trace.clients.get(send.sender as usize)?.role.intruder()?;
            let refused = index
                .events_of
                .get(send.sender as usize)?
                .iter()
                .any(|&i| matches!(trace.events[i as usize].kind, EventKind::Error { msg: Some(m) } if m == msg));
            let Fate::Stored(seq) = send.fate else { return None };
            refused.then(|| {
                let detail = format!(
                    "an intruder with {} credentials sent into {}: it was refused, yet stored at seq {seq}",
                    credential.as_str(),
                    name(send.room)
                );
                Finding::new(FindingKind::Unrefused, detail)
                    .room(send.room)
                    .msg(msg)
                    .seq(seq)
                    .client(send.sender, index.node_of(send.sender))
                    .sent(send.first_sent_ns)
            })
        })
        .collect();
    let probes = trace.events.iter().filter_map(|e| {
        let EventKind::Probe { room, attempt, answer } = e.kind else { return None };
        let credential = trace.clients.get(e.client as usize)?.role.intruder()?;
        let what = match answer {
            Answer::Refused => return None,
            Answer::Accepted { served } if attempt == crate::trace::Attempt::History => format!("was served ({served} messages)"),
            Answer::Accepted { .. } => "was accepted".to_owned(),
            Answer::NoAnswer => "got no definite answer (a refusal must be an error the client can see)".to_owned(),
        };
        let detail =
            format!("an intruder with {} credentials tried to {} {}: it {what}", credential.as_str(), attempt.as_str(), name(room));
        Some(Finding::new(FindingKind::Unrefused, detail).room(room).client(e.client, index.node_of(e.client)).observed(e.t_ns))
    });
    stored_anyway.extend(probes);
    stored_anyway
}

#[cfg(test)]
mod tests {
    use crate::check::synthetic::{TraceShape, body_of, correct_trace, delivery};
    use crate::check::{FindingKind, all_findings};
    use crate::trace::{Answer, Attempt, ClientInfo, Credential, Event, EventKind, Role, Stored, msg_no};

    /// A server that answers an intruder's send with an error but stores
    /// and fans it out anyway fails `authorization`, and nothing else: the
    /// members got what history holds.
    #[test]
    fn a_send_refused_yet_stored_is_unrefused_and_only_that() {
        let mut t = correct_trace(&TraceShape::plain(1, 1, 2, 4), 3);
        let intruder = t.clients.len() as u32;
        t.clients.push(ClientInfo { role: Role::Intruder(Credential::OtherRoom), ..Default::default() });
        let msg = msg_no(intruder, 0);
        let end = t.meta.sending_ended_ns;
        let seq = t.history[0].entries.last().unwrap().seq + 1;
        t.history[0].entries.push(Stored::new(seq, msg, Some(body_of(msg))));
        let at = |t_ns, client, kind| Event { t_ns, client, kind };
        t.events.extend([
            at(end - 1000, intruder, EventKind::Send { room: 0, msg, scheduled_ns: end - 1000, body: body_of(msg) }),
            at(end - 900, intruder, EventKind::Error { msg: Some(msg) }),
            at(end - 900, intruder, EventKind::Probe { room: 0, attempt: Attempt::Send, answer: Answer::Refused }),
        ]);
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

    /// Without history, a refused send did not happen: delivering it is a phantom.
    #[test]
    fn without_history_a_refused_send_that_is_delivered_is_a_phantom() {
        let mut t = correct_trace(&TraceShape::plain(1, 1, 1, 4), 5);
        let intruder = t.clients.len() as u32;
        t.clients.push(ClientInfo { role: Role::Intruder(Credential::Forged), ..Default::default() });
        let msg = msg_no(intruder, 0);
        let end = t.meta.sending_ended_ns;
        let seq = t.history[0].entries.last().unwrap().seq + 1;
        t.history[0].complete = false;
        let subscriber = t.clients.iter().position(|c| c.role.subscribes()).unwrap() as u32;
        t.events.extend([
            Event {
                t_ns: end - 1000,
                client: intruder,
                kind: EventKind::Send { room: 0, msg, scheduled_ns: end - 1000, body: body_of(msg) },
            },
            Event { t_ns: end - 900, client: intruder, kind: EventKind::Error { msg: Some(msg) } },
            Event { t_ns: end - 800, client: subscriber, kind: delivery(0, msg, seq) },
        ]);
        t.events.sort_by_key(|e| (e.t_ns, e.client));
        let index = crate::check::TraceIndex::build(&t);
        assert_eq!(index.sends[&msg].fate, crate::check::Fate::NotStored);
        let phantoms: Vec<_> = all_findings(&t, &t.meta.checks).into_iter().filter(|f| f.msg == Some(msg)).map(|f| f.kind).collect();
        assert_eq!(phantoms, [FindingKind::Phantom]);
    }
}
