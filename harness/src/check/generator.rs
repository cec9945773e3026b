//! Was the load generator keeping up? Send lateness (each send's first
//! attempt minus its scheduled time, open loop), the harness's event-loop
//! lag, and its CPU. A run whose generator fell behind measured the harness,
//! not the system under test: reports say so prominently and `sweep` stops
//! trusting points past it (k6: dropped iterations; OMB: publish delay).

use super::TraceIndex;
use crate::resources::LoopLag;
use serde::{Deserialize, Serialize};

/// Send lateness p99 above this means the schedule slipped. Tokio's timers
/// tick in milliseconds, so ~1 ms is the floor, and on a 2-core machine
/// shared with the nodes and backends p99 reaches ~2.5 ms at rates where
/// the harness uses 10 % of a core (measured): 5 ms is a real slip.
pub const MAX_LATENESS_P99_US: u64 = 5_000;
/// Event-loop lag p99 above this means the harness was starved.
pub const MAX_LOOP_LAG_P99_US: u64 = 10_000;
/// Harness CPU above this share of all cores means it competed for them.
pub const MAX_HARNESS_CPU_SHARE: f64 = 0.9;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GeneratorReport {
    /// Open loop: first attempts behind their schedule, in µs.
    pub lateness_p50_us: u64,
    pub lateness_p99_us: u64,
    pub lateness_max_us: u64,
    pub loop_lag: LoopLag,
    /// Highest harness CPU in any second, percent of one core.
    pub harness_cpu_max_percent: f64,
    /// The generator fell behind: figures understate the system under test.
    pub behind: bool,
    pub why: Vec<String>,
}

pub fn measure(index: &TraceIndex) -> GeneratorReport {
    let meta = &index.trace.meta;
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
    let open_loop = matches!(meta.load, Some(crate::scenario::Load::Open { .. }));
    if open_loop {
        for send in index.sends.values() {
            h.saturating_record((send.first_sent_ns.saturating_sub(send.scheduled_ns) / 1_000).max(1));
        }
    }
    let q = |quantile: f64| if h.is_empty() { 0 } else { h.value_at_quantile(quantile) };
    let harness_cpu_max_percent = meta.resources.iter().filter(|s| s.process == "harness").map(|s| s.cpu_percent).fold(0.0, f64::max);
    let mut report = GeneratorReport {
        lateness_p50_us: q(0.5),
        lateness_p99_us: q(0.99),
        lateness_max_us: if h.is_empty() { 0 } else { h.max() },
        loop_lag: meta.loop_lag,
        harness_cpu_max_percent,
        ..Default::default()
    };
    if report.lateness_p99_us > MAX_LATENESS_P99_US {
        report.why.push(format!("send lateness p99 {} µs > {MAX_LATENESS_P99_US} µs", report.lateness_p99_us));
    }
    if report.loop_lag.p99_us > MAX_LOOP_LAG_P99_US {
        report.why.push(format!("event-loop lag p99 {} µs > {MAX_LOOP_LAG_P99_US} µs", report.loop_lag.p99_us));
    }
    let cores = f64::from(meta.cores.max(1));
    if harness_cpu_max_percent > MAX_HARNESS_CPU_SHARE * cores * 100.0 {
        report.why.push(format!("harness CPU {harness_cpu_max_percent:.0}% of {cores} cores"));
    }
    report.behind = !report.why.is_empty();
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::synthetic::{TraceShape, correct_trace};
    use crate::resources::ResourceSample;
    use crate::trace::EventKind;

    #[test]
    fn a_schedule_that_slipped_or_a_starved_harness_is_flagged() {
        let mut trace = correct_trace(&TraceShape::plain(1, 2, 1, 20), 1);
        trace.meta.cores = 2;
        let on_time = measure(&TraceIndex::build(&trace));
        assert!(!on_time.behind, "{on_time:?}");
        // Every send goes out 8 ms after its schedule.
        for e in &mut trace.events {
            if let EventKind::Send { scheduled_ns, .. } = &mut e.kind {
                *scheduled_ns = scheduled_ns.saturating_sub(8_000_000);
            }
        }
        let late = measure(&TraceIndex::build(&trace));
        assert!(late.behind && late.lateness_p99_us >= 7_900, "{late:?}");
        let mut starved = correct_trace(&TraceShape::plain(1, 1, 1, 5), 1);
        starved.meta.cores = 2;
        starved.meta.resources.push(ResourceSample { t_s: 1.0, process: "harness".into(), cpu_percent: 195.0, rss_kib: 1 });
        assert!(measure(&TraceIndex::build(&starved)).why.iter().any(|w| w.contains("CPU")));
        starved.meta.resources.clear();
        starved.meta.loop_lag.p99_us = 50_000;
        assert!(measure(&TraceIndex::build(&starved)).why.iter().any(|w| w.contains("lag")));
    }
}
