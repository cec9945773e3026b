//! Latency: send → ack and send → delivery (every subscriber's first copy),
//! measured from the *scheduled* send time so a stalled system cannot hide
//! its queueing (no coordinated omission). Sends scheduled during warmup are
//! left out. Values are recorded in microseconds in HDR histograms.

use super::TraceIndex;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

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
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("1µs..1h with 3 significant figures is a valid histogram")
}

pub fn measure(index: &TraceIndex) -> Latencies {
    let warmup = index.trace.meta.warmup_ns;
    let mut ack = histogram();
    let mut delivery = histogram();
    for send in index.sends.values() {
        if send.scheduled_ns < warmup {
            continue;
        }
        if let Some((_, t)) = send.ack {
            ack.saturating_record(micros(t.saturating_sub(send.scheduled_ns)));
        }
    }
    for sub in &index.subscribers {
        let mut seen = HashSet::with_capacity(sub.deliveries.len());
        for d in &sub.deliveries {
            if !seen.insert(d.msg) {
                continue;
            }
            if let Some(send) = index.sends.get(&d.msg).filter(|s| s.scheduled_ns >= warmup) {
                delivery.saturating_record(micros(d.t_ns.saturating_sub(send.scheduled_ns)));
            }
        }
    }
    Latencies { ack, delivery }
}

fn micros(ns: u64) -> u64 {
    (ns / 1_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::synthetic::{TraceShape, correct_trace};

    #[test]
    fn measures_from_the_scheduled_time_not_the_actual_send() {
        let shape = TraceShape { rooms: 1, senders_per_room: 1, subscribers_per_room: 1, messages_per_sender: 3 };
        let mut trace = correct_trace(&shape, 1);
        // The generator acks 1 ms and delivers 2 ms after each send. Shift
        // the run 20 ms later but schedule every send 10 ms before it went
        // out: latency must grow by those 10 ms.
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
        assert!((10_900..=11_100).contains(&ack.p50_us), "{ack:?}");
        assert!((11_900..=12_100).contains(&delivery.p50_us), "{delivery:?}");
    }
}
