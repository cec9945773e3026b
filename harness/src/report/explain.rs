//! `chatbench explain RUN MSG`: one message's whole life in a run, as a
//! table: each send and resend, its ack or refusal, each delivery (with
//! whether its body was the one sent), each subscriber's connection
//! events around it, the faults near it, and the findings the checks made
//! about it. Pure: a trace in, text out.

use crate::check::{TraceIndex, findings_of};
use crate::message::{MsgNo, wire_id};
use crate::trace::{EventKind, Trace};
use std::fmt::Write;

/// How long around a message's life the subscribers' connection events
/// and the faults are shown.
const AROUND_NS: u64 = 2_000_000_000;

/// The message a command-line argument names: the wire id (`m…`) or its number.
pub fn parse_msg(arg: &str) -> Option<MsgNo> {
    crate::message::parse_wire_id(arg).or_else(|| arg.parse().ok())
}

/// The timeline of `msg` in `trace` (None: the trace never saw it).
pub fn explain(trace: &Trace, msg: MsgNo) -> Option<String> {
    let about = |k: &EventKind| match *k {
        EventKind::Send { msg: m, .. }
        | EventKind::Ack { msg: m, .. }
        | EventKind::Deliver { msg: m, .. }
        | EventKind::Dropped { msg: m, .. } => m == msg,
        EventKind::Error { msg: m } => m == Some(msg),
        _ => false,
    };
    let own: Vec<_> = trace.events.iter().filter(|e| about(&e.kind)).collect();
    let first_send = own.iter().find_map(|e| match e.kind {
        EventKind::Send { room, body, .. } => Some((e.t_ns, e.client, room, body)),
        _ => None,
    });
    if own.is_empty() {
        return None;
    }
    let start = trace.meta.sending_started_ns;
    let ms = |t: u64| (t as f64 - start as f64) / 1e6;
    let node = |c: u32| trace.clients.get(c as usize).map_or(0, |i| i.node);
    let room_name = |r: u32| trace.rooms.get(r as usize).cloned().unwrap_or_else(|| format!("#{r}"));
    let mut out = String::new();
    let _ = match first_send {
        Some((t, sender, room, body)) => writeln!(
            out,
            "message {} ({msg}): sent by client {sender} (node {}) to room `{}` at {:.1} ms, body {} B\n",
            wire_id(msg),
            node(sender),
            room_name(room),
            ms(t),
            body.len
        ),
        None => writeln!(out, "message {} ({msg}): never sent in this trace (delivered only)\n", wire_id(msg)),
    };
    let sent_at = first_send.map(|s| s.0);
    let body = first_send.map(|s| s.3);
    let (from, to) = (own.first().map_or(0, |e| e.t_ns), own.last().map_or(0, |e| e.t_ns));
    let window = (from.saturating_sub(AROUND_NS), to.saturating_add(AROUND_NS));
    // The subscribers it concerns: those it reached, and those the checks
    // say it should have.
    let index = TraceIndex::build(trace);
    let findings: Vec<_> = findings_of(&index, &trace.meta.checks).into_iter().filter(|f| f.msg == Some(msg)).collect();
    let mut concerned: Vec<u32> = own.iter().map(|e| e.client).chain(findings.iter().filter_map(|f| f.client)).collect();
    concerned.sort_unstable();
    concerned.dedup();
    let _ = writeln!(out, "{:>10}  {:>9}  {:>7}  {:>4}  what", "at ms", "+sent ms", "client", "node");
    for e in trace.events.iter().filter(|e| {
        about(&e.kind)
            || (concerned.contains(&e.client)
                && e.t_ns >= window.0
                && e.t_ns <= window.1
                && matches!(
                    e.kind,
                    EventKind::Connected { .. }
                        | EventKind::Closed { .. }
                        | EventKind::GaveUp { .. }
                        | EventKind::Subscribed { .. }
                        | EventKind::Leaving { .. }
                        | EventKind::Left { .. }
                ))
    }) {
        let what = match &e.kind {
            EventKind::Send { .. } if Some(e.t_ns) == sent_at => "send".to_owned(),
            EventKind::Send { .. } => "send again (same id)".to_owned(),
            EventKind::Ack { seq, .. } => format!("ack, seq {seq}"),
            EventKind::Error { .. } => "error frame naming it".to_owned(),
            EventKind::Dropped { .. } => "dropped by its client, never sent: max_pending sends already waited for their ack".to_owned(),
            EventKind::Deliver { room, seq, body: got, label, .. } => {
                let text = match (got, body) {
                    (Some(g), Some(b)) if *g == b => "body as sent",
                    (Some(_), Some(_)) => "ANOTHER BODY",
                    _ => "body not compared",
                };
                format!("delivered in `{}`, seq {seq}, {text}, label {label:?}", room_name(*room))
            }
            other => format!("{other:?}"),
        };
        let since = sent_at.map_or_else(String::new, |s| format!("{:+.1}", (e.t_ns as f64 - s as f64) / 1e6));
        let _ = writeln!(out, "{:>10.1}  {since:>9}  {:>7}  {:>4}  {what}", ms(e.t_ns), e.client, node(e.client));
    }
    let near: Vec<_> = trace.meta.faults.iter().filter(|f| f.end_ns >= window.0 && f.start_ns <= window.1).collect();
    if !near.is_empty() {
        let _ = writeln!(out, "\nfaults within 2 s:");
        for f in near {
            let on = f.node.map_or_else(String::new, |n| format!(" on node {n}"));
            let _ = writeln!(out, "  {}{on} from {:.1} ms to {:.1} ms", f.action, ms(f.start_ns), ms(f.end_ns));
        }
    }
    let _ = writeln!(out);
    if findings.is_empty() {
        let _ = writeln!(out, "findings: none");
    }
    for f in &findings {
        let at = f.client.map_or_else(String::new, |c| format!(" at client {c} (node {})", node(c)));
        let _ = writeln!(out, "finding: {}{at}: {}", f.kind.as_str(), f.detail);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::synthetic::{TraceShape, correct_trace};

    /// A message one subscriber never got: its send, ack and the other
    /// deliveries on the timeline, and the `lost` finding naming that
    /// subscriber; a message the trace never saw is None.
    #[test]
    fn a_lost_message_shows_its_timeline_and_the_subscriber_it_missed() {
        let mut trace = correct_trace(&TraceShape::plain(2, 1, 3, 5), 7);
        let (victim, msg) = trace
            .events
            .iter()
            .find_map(|e| match e.kind {
                EventKind::Deliver { msg, .. } => Some((e.client, msg)),
                _ => None,
            })
            .unwrap();
        trace.events.retain(|e| !(e.client == victim && matches!(e.kind, EventKind::Deliver { msg: m, .. } if m == msg)));
        let text = explain(&trace, msg).expect("the message is in the trace");
        assert!(text.starts_with(&format!("message {} ({msg}): sent by client", wire_id(msg))), "{text}");
        assert!(text.contains("  send\n") && text.contains("ack, seq") && text.contains("body as sent"), "{text}");
        assert_eq!(text.matches("delivered in").count(), 2, "the two subscribers that got it: {text}");
        assert!(text.contains(&format!("finding: lost at client {victim}")), "{text}");
        assert_eq!(explain(&trace, msg + 1_000_000), None);
        // Another body, said so.
        for e in &mut trace.events {
            if let EventKind::Deliver { msg: m, body, .. } = &mut e.kind
                && *m == msg
            {
                *body = Some(crate::message::BodyDigest::of(b"cut"));
            }
        }
        let text = explain(&trace, msg).unwrap();
        assert!(text.contains("ANOTHER BODY") && text.contains("finding: corrupted"), "{text}");
    }

    #[test]
    fn a_message_is_found_by_wire_id_or_number() {
        assert_eq!(parse_msg("m12884901928"), Some(12884901928));
        assert_eq!(parse_msg("12884901928"), Some(12884901928));
        assert_eq!(parse_msg("x"), None);
    }
}
