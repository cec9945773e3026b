//! `chatbench compare BASELINE CANDIDATE`: the same metrics of two earlier
//! runs side by side, per mode present in both, and a verdict: a metric
//! regressed when it got worse by more than the tolerance (latency up,
//! throughput down), or a check that passed in the baseline now fails.

use super::{ModeReport, RunReport, fmt_us};
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Metric {
    AckP99,
    DeliveryP50,
    DeliveryP99,
    DeliveryP999,
    AckedPerS,
    DeliveredPerS,
}

impl Metric {
    pub const ALL: [Metric; 6] =
        [Metric::AckP99, Metric::DeliveryP50, Metric::DeliveryP99, Metric::DeliveryP999, Metric::AckedPerS, Metric::DeliveredPerS];

    pub fn name(self) -> &'static str {
        match self {
            Metric::AckP99 => "ack p99",
            Metric::DeliveryP50 => "delivery p50",
            Metric::DeliveryP99 => "delivery p99",
            Metric::DeliveryP999 => "delivery p999",
            Metric::AckedPerS => "acked/s (achieved)",
            Metric::DeliveredPerS => "deliveries/s (achieved)",
        }
    }

    pub(crate) fn value(self, m: &ModeReport) -> f64 {
        match self {
            Metric::AckP99 => m.latency.ack.p99_us as f64,
            Metric::DeliveryP50 => m.latency.delivery.p50_us as f64,
            Metric::DeliveryP99 => m.latency.delivery.p99_us as f64,
            Metric::DeliveryP999 => m.latency.delivery.p999_us as f64,
            Metric::AckedPerS => m.throughput.acked_per_s,
            Metric::DeliveredPerS => m.throughput.delivered_per_s,
        }
    }

    /// Put `v` where [`Metric::value`] reads it (a baseline made of medians).
    pub(crate) fn set(self, m: &mut ModeReport, v: f64) {
        match self {
            Metric::AckP99 => m.latency.ack.p99_us = v.round() as u64,
            Metric::DeliveryP50 => m.latency.delivery.p50_us = v.round() as u64,
            Metric::DeliveryP99 => m.latency.delivery.p99_us = v.round() as u64,
            Metric::DeliveryP999 => m.latency.delivery.p999_us = v.round() as u64,
            Metric::AckedPerS => m.throughput.acked_per_s = v,
            Metric::DeliveredPerS => m.throughput.delivered_per_s = v,
        }
    }

    fn higher_is_better(self) -> bool {
        matches!(self, Metric::AckedPerS | Metric::DeliveredPerS)
    }

    fn show(self, v: f64) -> String {
        if self.higher_is_better() { format!("{v:.1}") } else { fmt_us(v as u64) }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub mode: crate::subject::Subject,
    pub metric: Metric,
    pub baseline: f64,
    pub candidate: f64,
    /// Change in percent, signed so that positive means worse.
    pub worse_by_percent: f64,
    pub gated: bool,
    pub regressed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub lines: Vec<Line>,
    /// Checks that passed in the baseline and fail in the candidate.
    pub newly_failing: Vec<String>,
    /// Modes in only one of the two reports.
    pub unmatched_modes: Vec<crate::subject::Subject>,
}

impl Comparison {
    pub fn regressed(&self) -> bool {
        self.lines.iter().any(|l| l.regressed) || !self.newly_failing.is_empty()
    }
}

pub fn compare(baseline: &RunReport, candidate: &RunReport, gate: &[Metric], tolerance_percent: f64) -> Comparison {
    let mut lines = Vec::new();
    let mut newly_failing = Vec::new();
    let mut unmatched_modes = Vec::new();
    for b in &baseline.modes {
        let Some(c) = candidate.modes.iter().find(|c| c.mode == b.mode) else {
            unmatched_modes.push(b.mode);
            continue;
        };
        for metric in Metric::ALL {
            let (before, after) = (metric.value(b), metric.value(c));
            let change = if before == 0.0 { 0.0 } else { (after - before) / before * 100.0 };
            let worse_by_percent = if metric.higher_is_better() { -change } else { change };
            let gated = gate.contains(&metric);
            lines.push(Line {
                mode: b.mode,
                metric,
                baseline: before,
                candidate: after,
                worse_by_percent,
                gated,
                regressed: gated && worse_by_percent > tolerance_percent,
            });
        }
        for check in c.failed_checks() {
            if b.checks.iter().any(|bc| bc.name == check.name && bc.passed && bc.off.is_none()) {
                newly_failing.push(format!("{}: {} ({})", c.mode, check.name, check.detail));
            }
        }
    }
    unmatched_modes.extend(candidate.modes.iter().filter(|c| !baseline.modes.iter().any(|b| b.mode == c.mode)).map(|c| c.mode));
    Comparison { lines, newly_failing, unmatched_modes }
}

pub fn render(comparison: &Comparison, tolerance_percent: f64) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(["mode", "metric", "baseline", "candidate", "change (+ = worse)", "verdict"]);
    for l in &comparison.lines {
        let verdict = match (l.gated, l.regressed) {
            (_, true) => "REGRESSED",
            (true, false) => "ok",
            (false, _) => "-",
        };
        table.add_row([
            l.mode.to_string(),
            l.metric.name().to_owned(),
            l.metric.show(l.baseline),
            l.metric.show(l.candidate),
            format!("{:+.1}%", l.worse_by_percent),
            verdict.to_owned(),
        ]);
    }
    let mut out = format!("{table}\ntolerance: {tolerance_percent}% (gated metrics marked ok/REGRESSED)\n");
    for f in &comparison.newly_failing {
        out.push_str(&format!("newly failing check: {f}\n"));
    }
    for m in &comparison.unmatched_modes {
        out.push_str(&format!("note: mode {m} is in only one of the reports\n"));
    }
    out.push_str(if comparison.regressed() { "result: REGRESSED\n" } else { "result: OK\n" });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{CheckResult, LatencyReport};

    fn report(p99_us: u64, acked_per_s: f64, exactly_once: bool) -> RunReport {
        let mut latency = LatencyReport::default();
        latency.delivery.p99_us = p99_us;
        let mode = ModeReport {
            mode: crate::scenario::Mode::Changestream.into(),
            checks: vec![CheckResult { name: "exactly_once".into(), passed: exactly_once, off: None, detail: "d".into() }],
            latency,
            throughput: crate::check::throughput::Throughput { acked_per_s, ..Default::default() },
            ..Default::default()
        };
        RunReport { scenario: "s".into(), passed: exactly_once, modes: vec![mode], ..Default::default() }
    }

    #[test]
    fn latency_up_past_tolerance_regresses_and_within_does_not() {
        let gate = [Metric::DeliveryP99, Metric::AckedPerS];
        assert!(compare(&report(1000, 100.0, true), &report(1200, 100.0, true), &gate, 10.0).regressed());
        assert!(!compare(&report(1000, 100.0, true), &report(1050, 100.0, true), &gate, 10.0).regressed());
        // Faster is never a regression.
        assert!(!compare(&report(1000, 100.0, true), &report(500, 100.0, true), &gate, 10.0).regressed());
    }

    #[test]
    fn throughput_down_regresses_and_ungated_metrics_do_not_count() {
        assert!(compare(&report(1000, 100.0, true), &report(1000, 80.0, true), &[Metric::AckedPerS], 10.0).regressed());
        assert!(!compare(&report(1000, 100.0, true), &report(1000, 80.0, true), &[Metric::DeliveryP99], 10.0).regressed());
    }

    #[test]
    fn a_check_that_starts_failing_is_a_regression() {
        let c = compare(&report(1000, 100.0, true), &report(1000, 100.0, false), &[], 10.0);
        assert!(c.regressed());
        assert_eq!(c.newly_failing.len(), 1);
    }
}
