//! Latency: send → ack and send → delivery (every subscriber's first copy),
//! measured from the *scheduled* send time. In an open loop that is the
//! intended time, so a stalled system cannot hide its queueing (no
//! coordinated omission); in a closed loop the schedule is the actual send
//! (coordinated omission by design), and reports label it so.
//!
//! Failing cannot improve the figures: a send never acked, and an owed
//! message never delivered to a subscriber that owed it, count as a sample
//! censored at the end of the run (and are counted as incomplete). Sends
//! scheduled during warmup are left out. Values are recorded in
//! microseconds in HDR histograms.

use super::TraceIndex;
use crate::trace::MsgNo;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Percentiles of one latency, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl LatencySummary {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }

    /// The value at a quantile label used in scenario ceilings.
    pub fn at(&self, quantile: f64) -> u64 {
        match quantile {
            q if q >= 1.0 => self.max_us,
            q if q >= 0.999 => self.p999_us,
            q if q >= 0.99 => self.p99_us,
            q if q >= 0.9 => self.p90_us,
            _ => self.p50_us,
        }
    }
}

pub struct Latencies {
    pub ack: Histogram<u64>,
    pub delivery: Histogram<u64>,
    /// Per owed message: until the *last* subscriber that owed it had it
    /// (Maelstrom's "stable latency"); censored at the end of the run when
    /// one never did.
    pub stable: Histogram<u64>,
    /// Sends never acked (their samples are censored at the end of the run).
    pub incomplete_acks: u64,
    /// Owed deliveries that never happened (censored likewise).
    pub incomplete_deliveries: u64,
    /// Owed (message, subscriber) pairs acked but not yet delivered, over
    /// time (Jepsen's "unseen"): (ms from the start of sending, count).
    pub unseen: Vec<(u64, u64)>,
}

/// At most this many points in the unseen-over-time series.
const UNSEEN_POINTS: u64 = 300;

impl Latencies {
    /// Share of all samples that are censored, in percent.
    pub fn incomplete_percent(&self) -> f64 {
        let total = self.ack.len() + self.delivery.len();
        if total == 0 { 0.0 } else { (self.incomplete_acks + self.incomplete_deliveries) as f64 * 100.0 / total as f64 }
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("1µs..1h with 3 significant figures is a valid histogram")
}

pub fn measure(index: &TraceIndex) -> Latencies {
    let warmup = index.trace.meta.warmup_ns;
    let end = index.trace.meta.ended_ns;
    let mut out = Latencies {
        ack: histogram(),
        delivery: histogram(),
        stable: histogram(),
        incomplete_acks: 0,
        incomplete_deliveries: 0,
        unseen: Vec::new(),
    };
    // Per owed message: when its last owing subscriber got it (None: one never did).
    let mut last_delivery: std::collections::HashMap<MsgNo, Option<u64>> = std::collections::HashMap::new();
    let mut unseen = Unseen::new(index.trace.meta.sending_started_ns, end);
    let mut owed_by_room: Vec<Vec<MsgNo>> = vec![Vec::new(); index.trace.rooms.len()];
    // Fire-and-forget sends (`ack: none`) have no ack latency to censor.
    let no_acks = index.trace.meta.guarantees.ack == crate::scenario::AckGuarantee::None;
    for (&msg, send) in &index.sends {
        if send.scheduled_ns < warmup {
            continue;
        }
        match send.ack {
            Some((_, t)) => out.ack.saturating_record(micros(t.saturating_sub(send.scheduled_ns))),
            None if no_acks => {}
            None => {
                out.ack.saturating_record(micros(end.saturating_sub(send.scheduled_ns)));
                out.incomplete_acks += 1;
            }
        }
        if send.fate.owed_seq().is_some() {
            owed_by_room[send.room as usize].push(msg);
        }
    }
    for sub in &index.subscribers {
        let mut got: HashMap<MsgNo, u64> = HashMap::with_capacity(sub.deliveries.len());
        for d in sub.deliveries.iter().filter(|d| d.first_copy && !d.unrequested) {
            got.insert(d.msg, d.t_ns);
            if let Some(send) = index.sends.get(&d.msg).filter(|s| s.scheduled_ns >= warmup) {
                out.delivery.saturating_record(micros(d.t_ns.saturating_sub(send.scheduled_ns)));
            }
        }
        let joined = sub.subscribed_ns().unwrap_or(0);
        for msg in &owed_by_room[sub.room as usize] {
            let send = &index.sends[msg];
            if !send.fate.owed_seq().is_some_and(|seq| sub.owes(send, seq)) {
                continue;
            }
            let delivered = got.get(msg).copied();
            let last = last_delivery.entry(*msg).or_insert(Some(0));
            *last = last.zip(delivered).map(|(a, b)| a.max(b));
            let appears = send.ack.map_or(send.last_sent_ns, |(_, t)| t).max(joined);
            unseen.add(appears, delivered);
            if delivered.is_none() {
                out.delivery.saturating_record(micros(end.saturating_sub(send.scheduled_ns)));
                out.incomplete_deliveries += 1;
            }
        }
    }
    for (msg, last) in &last_delivery {
        let send = &index.sends[msg];
        if send.scheduled_ns >= warmup {
            out.stable.saturating_record(micros(last.unwrap_or(end).saturating_sub(send.scheduled_ns)));
        }
    }
    out.unseen = unseen.series();
    out
}

/// Unseen pairs sampled at the end of each of at most [`UNSEEN_POINTS`]
/// equal steps from the start of sending to the end: a pair counts at
/// sample time `t` when it appeared at or before `t` and was not
/// delivered by `t`. Kept as a difference array, one slot per sample, so
/// it costs the same whatever the number of pairs.
struct Unseen {
    start: u64,
    step: u64,
    diff: Vec<i64>,
}

impl Unseen {
    fn new(start: u64, end: u64) -> Self {
        let span = end.saturating_sub(start);
        let step = (span / UNSEEN_POINTS).max(10_000_000);
        Self { start, step, diff: vec![0; span.div_ceil(step) as usize + 1] }
    }

    /// The first sample (time `start + (k + 1) * step`) at or after `t`.
    fn sample_at_or_after(&self, t: u64) -> usize {
        let k = t.saturating_sub(self.start).div_ceil(self.step).saturating_sub(1) as usize;
        k.min(self.diff.len() - 1)
    }

    fn add(&mut self, appears: u64, delivered: Option<u64>) {
        let from = self.sample_at_or_after(appears);
        let to = delivered.map_or(self.diff.len() - 1, |t| self.sample_at_or_after(t.max(appears)));
        if to > from {
            self.diff[from] += 1;
            self.diff[to] -= 1;
        }
    }

    fn series(self) -> Vec<(u64, u64)> {
        let samples = self.diff.len() - 1;
        let mut level = 0i64;
        (0..samples)
            .map(|k| {
                level += self.diff[k];
                ((k as u64 + 1) * self.step / 1_000_000, level.max(0) as u64)
            })
            .collect()
    }
}

fn micros(ns: u64) -> u64 {
    (ns / 1_000).max(1)
}

/// Microseconds as a short human figure.
pub fn fmt_us(us: u64) -> String {
    match us {
        0 => "-".into(),
        u if u < 1_000 => format!("{u}µs"),
        u if u < 10_000 => format!("{:.2}ms", u as f64 / 1e3),
        u if u < 1_000_000 => format!("{:.1}ms", u as f64 / 1e3),
        u => format!("{:.2}s", u as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::synthetic::{TraceShape, correct_trace};

    #[test]
    fn measures_from_the_scheduled_time_not_the_actual_send() {
        let shape = TraceShape::plain(1, 1, 1, 3);
        let mut trace = correct_trace(&shape, 1);
        // Shift the run 20 ms later but schedule every send 10 ms before it
        // went out: latency must grow by those 10 ms.
        trace.meta.ended_ns += 20_000_000;
        for e in &mut trace.events {
            e.t_ns += 20_000_000;
            if let crate::trace::EventKind::Send { scheduled_ns, .. } = &mut e.kind {
                *scheduled_ns += 10_000_000;
            }
        }
        let index = TraceIndex::build(&trace);
        let l = measure(&index);
        let ack = LatencySummary::from_histogram(&l.ack);
        let delivery = LatencySummary::from_histogram(&l.delivery);
        assert_eq!(ack.count, 3);
        // The generator acks 0.4 ms and delivers 0.6 ms after each send.
        assert!((10_350..=10_450).contains(&ack.p50_us), "{ack:?}");
        assert!((10_550..=10_650).contains(&delivery.p50_us), "{delivery:?}");
    }

    #[test]
    fn failures_make_latency_worse_not_better() {
        let shape = TraceShape::plain(1, 1, 2, 20);
        let trace = correct_trace(&shape, 1);
        let clean = measure(&TraceIndex::build(&trace));
        assert_eq!((clean.incomplete_acks, clean.incomplete_deliveries), (0, 0));
        let clean_p99 = LatencySummary::from_histogram(&clean.delivery).p99_us;
        // Drop every delivery of the last 5 messages and their acks: they
        // stay owed (history holds them) and are censored at the end.
        let mut broken = trace.clone();
        broken.meta.ended_ns += 1_000_000_000;
        let last: Vec<u64> = broken.history[0].entries.iter().rev().take(5).map(|e| e.msg).collect();
        broken.events.retain(|e| match e.kind {
            crate::trace::EventKind::Deliver { msg, .. } | crate::trace::EventKind::Ack { msg, .. } => !last.contains(&msg),
            _ => true,
        });
        let l = measure(&TraceIndex::build(&broken));
        assert_eq!((l.incomplete_acks, l.incomplete_deliveries), (5, 10));
        assert_eq!(l.delivery.len(), clean.delivery.len(), "censored samples keep the count");
        assert!(LatencySummary::from_histogram(&l.delivery).p99_us > clean_p99 * 100, "p99 grows when messages go missing");
        assert!(l.incomplete_percent() > 0.0);
        assert!(
            LatencySummary::from_histogram(&l.stable).max_us > LatencySummary::from_histogram(&clean.stable).max_us * 100,
            "the last subscriber's wait is censored at the end too"
        );
        assert!(l.unseen.last().is_some_and(|&(_, n)| n == 10), "10 owed pairs stay unseen: {:?}", l.unseen.last());
        assert!(clean.unseen.last().is_some_and(|&(_, n)| n == 0), "a clean run ends with nothing unseen");
    }

    #[test]
    fn stable_latency_is_the_last_subscribers_wait() {
        let shape = TraceShape::plain(1, 1, 3, 5);
        let mut trace = correct_trace(&shape, 1);
        // One subscriber gets everything 50 ms late.
        let late = trace.clients.iter().position(|c| c.role == crate::trace::Role::Subscriber).unwrap() as u32;
        for e in trace.events.iter_mut().filter(|e| e.client == late && matches!(e.kind, crate::trace::EventKind::Deliver { .. })) {
            e.t_ns += 50_000_000;
        }
        trace.meta.ended_ns += 100_000_000;
        trace.events.sort_by_key(|e| e.t_ns);
        let l = measure(&TraceIndex::build(&trace));
        let stable = LatencySummary::from_histogram(&l.stable);
        let delivery = LatencySummary::from_histogram(&l.delivery);
        assert!(stable.p50_us >= 50_000 && delivery.p50_us < 1_000, "stable {stable:?}, per delivery {delivery:?}");
    }
}
