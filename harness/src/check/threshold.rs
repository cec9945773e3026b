//! Checks judged on a measured figure against a threshold the scenario
//! sets: latency ceilings (ack and delivery, at p50, p99, p99.9 and max) and
//! throughput floors. They complete [`super::Check`], the table of checks
//! judged on findings; `report::evaluate` composes a run's results from the
//! two tables, so every check a report can name is in one of them.
//!
//! A threshold that is not set is not a check (it is not reported).

use super::latency::LatencySummary;
use super::throughput::Throughput;
use crate::scenario::Checks;

/// The operation a latency ceiling measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Ack,
    Delivery,
}

/// Where on the latency distribution a ceiling applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantile {
    P50,
    P99,
    P999,
    Max,
}

impl Quantile {
    fn value(self) -> f64 {
        match self {
            Quantile::P50 => 0.5,
            Quantile::P99 => 0.99,
            Quantile::P999 => 0.999,
            Quantile::Max => 1.0,
        }
    }
}

/// What a throughput floor counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Acked,
    Delivered,
}

/// One threshold check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threshold {
    /// `checks.latency.<op>.<quantile>`: the measured latency at most this.
    Latency(Operation, Quantile),
    /// `checks.min_throughput.<rate>_per_s`: the achieved rate at least this.
    MinThroughput(Rate),
}

/// The figures thresholds are judged on.
pub struct Measured<'a> {
    pub ack: &'a LatencySummary,
    pub delivery: &'a LatencySummary,
    pub throughput: &'a Throughput,
}

/// A threshold's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

impl Threshold {
    /// Every threshold, in report order.
    pub const ALL: [Threshold; 10] = [
        Threshold::Latency(Operation::Ack, Quantile::P50),
        Threshold::Latency(Operation::Ack, Quantile::P99),
        Threshold::Latency(Operation::Ack, Quantile::P999),
        Threshold::Latency(Operation::Ack, Quantile::Max),
        Threshold::Latency(Operation::Delivery, Quantile::P50),
        Threshold::Latency(Operation::Delivery, Quantile::P99),
        Threshold::Latency(Operation::Delivery, Quantile::P999),
        Threshold::Latency(Operation::Delivery, Quantile::Max),
        Threshold::MinThroughput(Rate::Acked),
        Threshold::MinThroughput(Rate::Delivered),
    ];

    /// The name reports use (its key path under `checks`).
    pub fn name(self) -> &'static str {
        use {Operation::*, Quantile::*};
        match self {
            Threshold::Latency(Ack, P50) => "latency.ack.p50",
            Threshold::Latency(Ack, P99) => "latency.ack.p99",
            Threshold::Latency(Ack, P999) => "latency.ack.p999",
            Threshold::Latency(Ack, Max) => "latency.ack.max",
            Threshold::Latency(Delivery, P50) => "latency.delivery.p50",
            Threshold::Latency(Delivery, P99) => "latency.delivery.p99",
            Threshold::Latency(Delivery, P999) => "latency.delivery.p999",
            Threshold::Latency(Delivery, Max) => "latency.delivery.max",
            Threshold::MinThroughput(Rate::Acked) => "min_throughput.acked_per_s",
            Threshold::MinThroughput(Rate::Delivered) => "min_throughput.delivered_per_s",
        }
    }

    /// Judge the measured figure, if the scenario sets this threshold.
    pub fn judge(self, checks: &Checks, m: &Measured<'_>) -> Option<Judged> {
        let name = self.name();
        match self {
            Threshold::Latency(op, q) => {
                let ceilings = match op {
                    Operation::Ack => &checks.latency.ack,
                    Operation::Delivery => &checks.latency.delivery,
                };
                let limit = match q {
                    Quantile::P50 => ceilings.p50,
                    Quantile::P99 => ceilings.p99,
                    Quantile::P999 => ceilings.p999,
                    Quantile::Max => ceilings.max,
                }?;
                let summary = match op {
                    Operation::Ack => m.ack,
                    Operation::Delivery => m.delivery,
                };
                let limit_us = limit.0.as_micros() as u64;
                let actual = summary.at(q.value());
                // No samples is a failure: a ceiling nothing was measured against proves nothing.
                let passed = summary.count > 0 && actual <= limit_us;
                let detail = if summary.count == 0 {
                    "no samples".to_owned()
                } else {
                    format!(
                        "{} (ceiling {}; never-completed operations count at the end of the run)",
                        super::latency::fmt_us(actual),
                        super::latency::fmt_us(limit_us)
                    )
                };
                Some(Judged { name, passed, detail })
            }
            Threshold::MinThroughput(rate) => {
                let min = checks.min_throughput.as_ref()?;
                let (floor, actual) = match rate {
                    Rate::Acked => (min.acked_per_s?, m.throughput.acked_per_s),
                    Rate::Delivered => (min.delivered_per_s?, m.throughput.delivered_per_s),
                };
                Some(Judged { name, passed: actual >= floor, detail: format!("{actual:.1}/s achieved (floor {floor:.1}/s)") })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{HumanDuration, MinThroughput};
    use std::time::Duration;

    fn summary(count: u64, p99_us: u64) -> LatencySummary {
        LatencySummary { count, p50_us: p99_us / 2, p99_us, p999_us: p99_us, max_us: p99_us, ..LatencySummary::default() }
    }

    fn judged(checks: &Checks, ack: &LatencySummary, delivery: &LatencySummary, throughput: &Throughput) -> Vec<(&'static str, bool)> {
        let m = Measured { ack, delivery, throughput };
        Threshold::ALL.iter().filter_map(|t| t.judge(checks, &m)).map(|j| (j.name, j.passed)).collect()
    }

    #[test]
    fn only_the_thresholds_a_scenario_sets_are_judged_each_failing_on_its_own_figure() {
        let mut checks = Checks::default();
        let throughput = Throughput { acked_per_s: 90.0, delivered_per_s: 400.0, ..Throughput::default() };
        assert_eq!(judged(&checks, &summary(10, 1_000), &summary(10, 1_000), &throughput), vec![]);
        checks.latency.delivery.p99 = Some(HumanDuration(Duration::from_millis(5)));
        checks.latency.ack.max = Some(HumanDuration(Duration::from_micros(500)));
        checks.min_throughput = Some(MinThroughput { acked_per_s: Some(100.0), delivered_per_s: Some(400.0) });
        assert_eq!(
            judged(&checks, &summary(10, 1_000), &summary(10, 6_000), &throughput),
            vec![
                ("latency.ack.max", false),
                ("latency.delivery.p99", false),
                ("min_throughput.acked_per_s", false),
                ("min_throughput.delivered_per_s", true),
            ]
        );
        assert_eq!(
            judged(&checks, &summary(10, 400), &summary(10, 5_000), &Throughput { acked_per_s: 100.0, ..throughput }),
            vec![
                ("latency.ack.max", true),
                ("latency.delivery.p99", true),
                ("min_throughput.acked_per_s", true),
                ("min_throughput.delivered_per_s", true),
            ]
        );
    }

    #[test]
    fn a_ceiling_with_nothing_measured_fails() {
        let mut checks = Checks::default();
        checks.latency.ack.p50 = Some(HumanDuration(Duration::from_secs(1)));
        let throughput = Throughput::default();
        assert_eq!(judged(&checks, &summary(0, 0), &summary(0, 0), &throughput), vec![("latency.ack.p50", false)]);
    }

    #[test]
    fn names_are_unique() {
        let names: std::collections::BTreeSet<_> = Threshold::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names.len(), Threshold::ALL.len());
    }
}
