//! Was the load generator keeping up? Send lateness (each send's first
//! attempt minus its scheduled time, open loop), the harness's event-loop
//! lag, and its CPU. A run whose generator fell behind measured the harness,
//! not the system under test: reports say so prominently and `sweep` stops
//! trusting points past it (k6: dropped iterations; OMB: publish delay).

use super::TraceIndex;
use crate::resources::LoopLag;
use serde::{Deserialize, Serialize};

/// Send lateness p99 at or below this is never material. Tokio's timers
/// tick in milliseconds, so ~1 ms is the floor, and on a 2-core machine
/// shared with the nodes and backends p99 reaches 2.5-10 ms at rates where
/// the harness uses 10-15 % of a core (measured).
pub const MAX_LATENESS_P99_US: u64 = 5_000;
/// Above the floor, lateness matters when its p99 is more than this share
/// of the latency being measured (the run's delivery p99; in a sweep, the
/// knee's p99 ceiling): latency counts from the schedule, so a generator
/// late by 1 % of what it measures changes nothing a reader decides.
pub const MATERIAL_SHARE: f64 = 0.05;
/// Open loop: attempting less than this share of the offered rate means
/// the generator did not offer the load (and more than [`EDGE_SENDS`]
/// sends short).
pub const MIN_ATTEMPTED_SHARE: f64 = 0.99;
/// Sends a window may lack at its edges without the generator being behind.
pub const EDGE_SENDS: f64 = 10.0;
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

/// Why the generator fell behind when `measured_us` (a p99 latency) is
/// what the run measures: none when it kept up.
pub fn behind(report: &GeneratorReport, throughput: &super::throughput::Throughput, measured_us: u64, cores: u32) -> Vec<String> {
    let mut why = Vec::new();
    let material = MAX_LATENESS_P99_US.max((measured_us as f64 * MATERIAL_SHARE) as u64);
    if report.lateness_p99_us > material {
        why.push(format!(
            "send lateness p99 {} µs > {material} µs (5 % of the {} µs measured, at least {MAX_LATENESS_P99_US} µs)",
            report.lateness_p99_us, measured_us
        ));
    }
    // A short window holds few sends: a handful at its edges (scheduled
    // just before its end, sent just after) are not a generator falling
    // behind.
    if let Some(offered) = throughput.offered_per_s.filter(|&o| o > 0.0)
        && throughput.window_s > 0.0
        && (offered - throughput.attempted_per_s - throughput.dropped_per_s) * throughput.window_s
            > ((1.0 - MIN_ATTEMPTED_SHARE) * offered * throughput.window_s).max(EDGE_SENDS)
    {
        why.push(format!("attempted {:.1}/s of {offered:.1}/s offered", throughput.attempted_per_s));
    }
    if report.loop_lag.p99_us > MAX_LOOP_LAG_P99_US.max((measured_us as f64 * MATERIAL_SHARE) as u64) {
        why.push(format!("event-loop lag p99 {} µs > {MAX_LOOP_LAG_P99_US} µs", report.loop_lag.p99_us));
    }
    let cores = f64::from(cores.max(1));
    if report.harness_cpu_max_percent > MAX_HARNESS_CPU_SHARE * cores * 100.0 {
        why.push(format!("harness CPU {:.0}% of {cores} cores", report.harness_cpu_max_percent));
    }
    why
}

/// The generator's figures, judged against the run's own delivery p99
/// (`measured_us`) and throughput.
pub fn measure(index: &TraceIndex, measured_us: u64, throughput: &super::throughput::Throughput) -> GeneratorReport {
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
    report.why = behind(&report, throughput, measured_us, meta.cores);
    report.behind = !report.why.is_empty();
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::synthetic::{TraceShape, correct_trace};
    use crate::resources::ResourceSample;
    use crate::trace::EventKind;

    fn judge(trace: &crate::trace::Trace, measured_us: u64) -> GeneratorReport {
        let index = TraceIndex::build(trace);
        let throughput = crate::check::throughput::measure(&index);
        measure(&index, measured_us, &throughput)
    }

    #[test]
    fn a_schedule_that_slipped_or_a_starved_harness_is_flagged() {
        let mut trace = correct_trace(&TraceShape::plain(1, 2, 1, 20), 1);
        trace.meta.cores = 2;
        let on_time = judge(&trace, 10_000);
        assert!(!on_time.behind, "{on_time:?}");
        // Every send goes out 8 ms after its schedule.
        for e in &mut trace.events {
            if let EventKind::Send { scheduled_ns, .. } = &mut e.kind {
                *scheduled_ns = scheduled_ns.saturating_sub(8_000_000);
            }
        }
        let late = judge(&trace, 10_000);
        assert!(late.behind && late.lateness_p99_us >= 7_900, "{late:?}");
        // The same 8 ms are immaterial next to a 1 s latency being measured.
        assert!(!judge(&trace, 1_000_000).behind, "8 ms late is 0.8 % of 1 s");
        let mut starved = correct_trace(&TraceShape::plain(1, 1, 1, 5), 1);
        starved.meta.cores = 2;
        starved.meta.resources.push(ResourceSample { t_s: 1.0, process: "harness".into(), cpu_percent: 195.0, rss_kib: 1 });
        assert!(judge(&starved, 10_000).why.iter().any(|w| w.contains("CPU")));
        starved.meta.resources.clear();
        starved.meta.loop_lag.p99_us = 50_000;
        assert!(judge(&starved, 10_000).why.iter().any(|w| w.contains("lag")));
    }

    #[test]
    fn attempting_less_than_offered_is_falling_behind() {
        let mut trace = correct_trace(&TraceShape::plain(1, 1, 1, 20), 1);
        // 20 sends in ~20 ms is 1000/s: offering 2000/s was not attempted.
        trace.meta.load = Some(crate::scenario::Load::Open { rate_per_s: 2_000.0 });
        assert!(judge(&trace, 10_000).why.iter().any(|w| w.contains("attempted")), "{:?}", judge(&trace, 10_000));
    }
}
