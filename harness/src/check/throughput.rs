//! Throughput over the measured window (warmup end → end of sending),
//! side by side: *offered* (what the schedule asked for), *attempted* (sends
//! scheduled in the window that left the clients in it) and *achieved*
//! (acks and deliveries of messages scheduled in the window, each counted
//! by its own timestamp inside the window), and *dropped* (sends a client
//! with `workload.max_pending` unacked sends did not make). Gates use
//! achieved rates: a
//! server that falls behind cannot pass on the load it was offered, and
//! achieved never exceeds offered because of work scheduled before the
//! window: that backlog (acks in the window of messages scheduled during
//! warmup) is reported on its own.

use super::TraceIndex;
use crate::scenario::Load;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub window_s: f64,
    /// The open loop's rate; None for a closed loop (no schedule to offer).
    #[serde(default)]
    pub offered_per_s: Option<f64>,
    /// First send attempts in the window, per second.
    #[serde(default)]
    pub attempted_per_s: f64,
    /// Sends due in the window that the clients dropped because
    /// `workload.max_pending` sends already waited for their ack: the
    /// system pushed back (not the generator falling behind).
    #[serde(default)]
    pub dropped_per_s: f64,
    /// Acks received in the window (first ack per message), per second.
    pub acked_per_s: f64,
    /// Deliveries received in the window (first copy per subscriber), per second.
    pub delivered_per_s: f64,
    /// Acks received in the window of messages scheduled before it (the
    /// warmup's backlog), per second: not counted as achieved.
    #[serde(default)]
    pub backlog_acked_per_s: f64,
    /// Every first ack received in the window, whenever its message was
    /// scheduled, per second: the rate the system actually stored at. Past
    /// capacity, clients that never drop a send and a per-sender order the
    /// server keeps make every ack go to the oldest unacked message first,
    /// so `acked_per_s` (window messages only) falls with the growing
    /// backlog however well the server holds up; this says whether it did.
    #[serde(default)]
    pub sustained_per_s: f64,
}

pub fn measure(index: &TraceIndex) -> Throughput {
    let meta = &index.trace.meta;
    let window = meta.warmup_ns..meta.sending_ended_ns;
    if window.is_empty() {
        return Throughput::default();
    }
    let window_s = (window.end - window.start) as f64 / 1e9;
    let scheduled_in = |msg: &crate::trace::MsgNo| index.sends.get(msg).is_some_and(|s| window.contains(&s.scheduled_ns));
    let in_window = index.sends.values().filter(|s| window.contains(&s.scheduled_ns));
    let attempted = in_window.clone().filter(|s| window.contains(&s.first_sent_ns)).count();
    let dropped = index
        .trace
        .events
        .iter()
        .filter(|e| matches!(e.kind, crate::trace::EventKind::Dropped { scheduled_ns, .. } if window.contains(&scheduled_ns)))
        .count();
    let acked = in_window.filter(|s| s.ack.is_some_and(|(_, t)| window.contains(&t))).count();
    let backlog = index.sends.values().filter(|s| s.scheduled_ns < window.start && s.ack.is_some_and(|(_, t)| window.contains(&t))).count();
    let delivered: usize = index
        .subscribers
        .iter()
        .map(|sub| sub.deliveries.iter().filter(|d| d.first_copy && window.contains(&d.t_ns) && scheduled_in(&d.msg)).count())
        .sum();
    Throughput {
        window_s,
        offered_per_s: match meta.load {
            Some(Load::Open { rate_per_s }) => Some(rate_per_s),
            _ => None,
        },
        attempted_per_s: attempted as f64 / window_s,
        dropped_per_s: dropped as f64 / window_s,
        acked_per_s: acked as f64 / window_s,
        delivered_per_s: delivered as f64 / window_s,
        backlog_acked_per_s: backlog as f64 / window_s,
        sustained_per_s: (acked + backlog) as f64 / window_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::synthetic::{TraceShape, correct_trace};
    use crate::trace::EventKind;

    #[test]
    fn achieved_rates_count_events_by_their_own_time() {
        let trace = correct_trace(&TraceShape::plain(1, 1, 1, 10), 1);
        let mut late = trace.clone();
        // The same sends, but every ack and delivery arrives after sending
        // ended: offered and attempted stay, achieved falls to zero.
        late.meta.load = Some(Load::Open { rate_per_s: 1000.0 });
        for e in &mut late.events {
            if matches!(e.kind, EventKind::Ack { .. } | EventKind::Deliver { .. }) {
                e.t_ns += late.meta.sending_ended_ns;
            }
        }
        let before = measure(&crate::check::TraceIndex::build(&trace));
        let after = measure(&crate::check::TraceIndex::build(&late));
        assert!(before.acked_per_s > 0.0 && before.delivered_per_s > 0.0);
        assert_eq!(after.attempted_per_s, before.attempted_per_s);
        assert_eq!(after.offered_per_s, Some(1000.0));
        assert_eq!((after.acked_per_s, after.delivered_per_s), (0.0, 0.0));
    }

    /// Sends dropped under `max_pending` count as dropped by their
    /// scheduled time, and with the attempted ones make up what was offered:
    /// the generator is not "behind" for them.
    #[test]
    fn dropped_sends_are_counted_in_the_window_and_are_not_the_generator_falling_behind() {
        let mut trace = correct_trace(&TraceShape::plain(1, 1, 1, 20), 1);
        let (start, end) = (trace.meta.warmup_ns, trace.meta.sending_ended_ns);
        let first = measure(&crate::check::TraceIndex::build(&trace));
        // As many sends again, dropped, inside the window (and one after it).
        let sender = trace.clients.iter().position(|c| c.planned_sends.is_some()).unwrap() as crate::trace::ClientId;
        for k in 0..21u64 {
            let at = if k == 20 { end + 1 } else { start + (end - start) * k / 20 };
            let msg = crate::message::msg_no(0, 1_000 + k as u32);
            trace.events.push(crate::trace::Event {
                t_ns: at,
                client: sender,
                kind: EventKind::Dropped { room: 0, msg, scheduled_ns: at },
            });
        }
        trace.meta.load = Some(Load::Open { rate_per_s: 2.0 * first.attempted_per_s });
        let t = measure(&crate::check::TraceIndex::build(&trace));
        assert_eq!(t.dropped_per_s * t.window_s, 20.0, "{t:?}");
        assert_eq!(t.attempted_per_s, first.attempted_per_s);
        let report = crate::check::generator::GeneratorReport::default();
        assert!(crate::check::generator::behind(&report, &t, 10_000, 2).is_empty(), "{t:?}");
        let without = Throughput { dropped_per_s: 0.0, ..t };
        assert!(!crate::check::generator::behind(&report, &without, 10_000, 2).is_empty(), "short of offered without the drops");
    }

    #[test]
    fn a_warmup_backlog_acked_in_the_window_is_not_achieved() {
        // Every ack arrives 5 slots late: the warmup's sends are acked in
        // the window. Achieved must not exceed attempted; the backlog is
        // reported apart.
        let mut trace = correct_trace(&TraceShape::plain(1, 1, 1, 40), 1);
        trace.meta.warmup_ns = 10_000_000;
        for e in &mut trace.events {
            if let EventKind::Ack { .. } = e.kind {
                e.t_ns += 5_000_000;
            }
        }
        let t = measure(&crate::check::TraceIndex::build(&trace));
        assert!(t.acked_per_s <= t.attempted_per_s, "{t:?}");
        assert!(t.backlog_acked_per_s > 0.0, "{t:?}");
        let expected = t.acked_per_s + t.backlog_acked_per_s;
        assert!((t.sustained_per_s - expected).abs() < 1e-9 && t.sustained_per_s > t.acked_per_s, "{t:?}");
    }
}
