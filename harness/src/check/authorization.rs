//! Authorization: every attempt of an intruder (`auth.intruders`) on a
//! room its credentials do not grant is refused with a definite error.
//!
//! - `unrefused`: the attempt was done (subscribed, acked, history
//!   served), or got no definite answer within `auth.answer_within` (a
//!   client cannot tell a silent drop from a slow yes, and a real one
//!   would hang waiting).
//!
//! What reached an intruder anyway is a `leak` (see `routing`); what it
//! managed to send is owed to the members like any other message, so the
//! members' checks stay exact.

use super::{Finding, FindingKind, TraceIndex};
use crate::trace::{Answer, EventKind};

pub fn check(index: &TraceIndex) -> Vec<Finding> {
    let trace = index.trace;
    let name = |r: u32| trace.rooms.get(r as usize).map_or("?", String::as_str);
    trace
        .events
        .iter()
        .filter_map(|e| {
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
        })
        .collect()
}
