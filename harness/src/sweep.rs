//! `chatbench sweep`: one scenario over a grid of parameters (offered
//! rate, nodes, subscribers per room, message size), each point run
//! `repeat` times on fresh backends and nodes, for every mode. The result is
//! a latency–throughput curve per mode — delivery p50/p99 against the
//! *achieved* rate, repeats shown as spread — and the knee: the highest
//! offered rate at which the system still achieves ≥ 95 % of it with
//! delivery p99 under a ceiling and every check passing.
//!
//! When the rate is varied the scenario's `min_throughput` floor is dropped
//! (the knee rule's achieved share takes its place); every other check
//! applies at every point.
//!
//! A point whose load generator fell behind measured the harness, not the
//! system: it and every higher-rate point of its series are marked
//! untrusted and left out of the knee. `--bisect` searches the rate for the
//! knee instead of walking a list. Every point keeps its full run folder
//! (report.json, traces), so anything here can be recomputed.

use crate::report::RunReport;
use crate::report::sweep::{KneeRule, Param, PointMode, PointRun, SWEEP_SCHEMA_VERSION, SweepPoint, SweepReport, knees, mark_trust, meets};
use crate::run::{InfraError, RunOptions, run};
use crate::scenario::{Load, MessageBytes, Scenario, check_scenario};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Set one parameter of the scenario (for the point `label`).
fn apply(param: Param, s: &mut Scenario, value: f64, label: &str) -> Result<(), SweepError> {
    let bad = |why: String| SweepError::Point { point: label.to_owned(), why };
    let whole = || {
        if value.fract() == 0.0 && value >= 1.0 && value <= f64::from(u32::MAX) {
            Ok(value as u32)
        } else {
            Err(bad(format!("{} must be a whole number ≥ 1, not {value}", param.name())))
        }
    };
    match param {
        Param::Rate => match &mut s.workload.load {
            Load::Open { rate_per_s } => *rate_per_s = value,
            Load::Closed { .. } => return Err(bad("rate varies an open-loop scenario; this one is a closed loop".into())),
        },
        Param::Nodes => s.topology.nodes = whole()?,
        Param::Subscribers => s.workload.subscribers_per_room = whole()?,
        Param::MessageBytes => s.workload.message_bytes = MessageBytes::Fixed(whole()?),
        Param::Rooms => s.workload.rooms = whole()?,
    }
    Ok(())
}

/// One varied parameter and its values, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Axis {
    pub param: Param,
    pub values: Vec<f64>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SweepError {
    #[error("--vary {spec}: {why}")]
    Axis { spec: String, why: String },
    #[error("sweep point {point}: {why}")]
    Point { point: String, why: String },
    #[error(transparent)]
    Infra(#[from] InfraError),
    #[error("writing {path}: {source}")]
    Output {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// `rate=50,100,200` (a list) or `rate=25..800x2` (a geometric ladder from
/// 25 up to 800, times 2 each step).
pub(crate) fn parse_axis(spec: &str) -> Result<Axis, SweepError> {
    let bad = |why: String| SweepError::Axis { spec: spec.to_owned(), why };
    let (name, values) = spec.split_once('=').ok_or_else(|| bad("expected name=values, e.g. rate=50,100,200 or rate=25..800x2".into()))?;
    let param =
        Param::parse(name.trim()).ok_or_else(|| bad(format!("unknown parameter {name:?} (rate, nodes, subscribers, message-bytes)")))?;
    let number = |s: &str| {
        s.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0).ok_or_else(|| bad(format!("{s:?} is not a positive number")))
    };
    let values = match values.split_once("..") {
        Some((from, rest)) => {
            let (to, factor) = rest.split_once('x').ok_or_else(|| bad("a ladder is FROM..TOxFACTOR, e.g. 25..800x2".into()))?;
            let (from, to, factor) = (number(from)?, number(to)?, number(factor)?);
            if factor <= 1.0 || to < from {
                return Err(bad("a ladder needs FROM <= TO and a FACTOR above 1".into()));
            }
            let mut v = Vec::new();
            let mut x = from;
            while x <= to * (1.0 + 1e-9) && v.len() < 64 {
                v.push((x * 1000.0).round() / 1000.0);
                x *= factor;
            }
            v
        }
        None => values.split(',').map(number).collect::<Result<Vec<_>, _>>()?,
    };
    if values.is_empty() {
        return Err(bad("no values".into()));
    }
    Ok(Axis { param, values })
}

/// How to search: walk a grid, or bisect the rate for the knee.
#[derive(Debug, Clone)]
pub(crate) enum Search {
    Grid(Vec<Axis>),
    /// Bisect `rate` between two bounds (geometric midpoints) until they are
    /// within 10 %, at most `steps` evaluations past the two bounds.
    Bisect {
        low: f64,
        high: f64,
        steps: u32,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct SweepOptions {
    pub search: Search,
    pub repeat: u32,
    pub knee: KneeRule,
    /// The run options every point starts from (out_dir is the sweep's).
    pub run: RunOptions,
}

/// Every combination of the axes' values, the first axis varying slowest.
fn grid(axes: &[Axis]) -> Vec<Vec<(Param, f64)>> {
    axes.iter().fold(vec![Vec::new()], |acc, axis| {
        acc.into_iter().flat_map(|prefix| axis.values.iter().map(move |&v| [prefix.clone(), vec![(axis.param, v)]].concat())).collect()
    })
}

fn label(values: &[(Param, f64)]) -> String {
    values.iter().map(|(p, v)| format!("{}={v}", p.name())).collect::<Vec<_>>().join(",")
}

/// Run the sweep; progress goes to `on_point` (done, total, label).
pub(crate) async fn sweep(
    scenario: &Scenario,
    options: &SweepOptions,
    mut on_point: impl FnMut(usize, usize, &str),
) -> Result<SweepReport, SweepError> {
    let out = &options.run.out_dir;
    std::fs::create_dir_all(out).map_err(|source| SweepError::Output { path: out.display().to_string(), source })?;
    let started_at = chrono::Utc::now().to_rfc3339();
    let mut points = Vec::new();
    match &options.search {
        Search::Grid(axes) => {
            let all = grid(axes);
            for (i, values) in all.iter().enumerate() {
                on_point(i, all.len(), &label(values));
                points.push(run_point(scenario, options, values.clone()).await?);
            }
        }
        Search::Bisect { low, high, steps } => {
            let (mut lo, mut hi) = (*low, *high);
            let mut judge = async |rate: f64, points: &mut Vec<SweepPoint>| -> Result<bool, SweepError> {
                on_point(points.len(), (*steps as usize) + 2, &format!("rate={rate}"));
                let p = run_point(scenario, options, vec![(Param::Rate, rate)]).await?;
                let ok = p.modes.iter().all(|m| meets(m, rate, &options.knee, None));
                points.push(p);
                Ok(ok)
            };
            if judge(lo, &mut points).await? && !judge(hi, &mut points).await? {
                for _ in 0..*steps {
                    if hi / lo <= 1.1 {
                        break;
                    }
                    let mid = ((lo * hi).sqrt() * 10.0).round() / 10.0;
                    if judge(mid, &mut points).await? {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
            }
            points.sort_by(|a, b| a.value(Param::Rate).unwrap_or(0.0).total_cmp(&b.value(Param::Rate).unwrap_or(0.0)));
        }
    }
    mark_trust(&mut points);
    let knees = knees(&points, &options.knee, options.repeat);
    Ok(SweepReport {
        schema_version: SWEEP_SCHEMA_VERSION,
        scenario: scenario.name.clone(),
        started_at,
        repeat: options.repeat,
        knee_rule: options.knee,
        points,
        knees,
    })
}

async fn run_point(scenario: &Scenario, options: &SweepOptions, values: Vec<(Param, f64)>) -> Result<SweepPoint, SweepError> {
    let label = label(&values);
    let mut variant = scenario.clone();
    for &(param, value) in &values {
        apply(param, &mut variant, value, &label)?;
    }
    // A fixed throughput floor belongs to one rate; across rates the knee
    // rule (achieved share of offered) is the floor.
    if values.iter().any(|(p, _)| *p == Param::Rate) {
        variant.checks.min_throughput = None;
    }
    check_scenario(&variant).map_err(|why| SweepError::Point { point: label.clone(), why: why.to_string() })?;
    let mut reports: Vec<(u32, String, RunReport)> = Vec::new();
    for r in 0..options.repeat.max(1) {
        let rel = PathBuf::from("points").join(label.replace(['=', ','], "_")).join(format!("r{r}"));
        let mut run_options = options.run.clone();
        run_options.out_dir = options.run.out_dir.join(&rel);
        run_options.seed = options.run.seed.wrapping_add(u64::from(r));
        run_options.quiet = true;
        let report = run(&variant, &run_options).await?;
        reports.push((r, rel.join("report.json").display().to_string(), report));
    }
    let modes = reports
        .first()
        .map(|(_, _, first)| first.modes.iter().map(|m| m.mode).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|mode| {
            let runs: Vec<PointRun> = reports
                .iter()
                .filter_map(|(r, path, report)| {
                    let m = report.modes.iter().find(|m| m.mode == mode)?;
                    Some(PointRun {
                        repeat: *r,
                        offered_per_s: m.throughput.offered_per_s,
                        achieved_per_s: m.throughput.acked_per_s,
                        sustained_per_s: m.throughput.sustained_per_s,
                        dropped_per_s: m.throughput.dropped_per_s,
                        delivered_per_s: m.throughput.delivered_per_s,
                        p50_us: m.latency.delivery.p50_us,
                        p99_us: m.latency.delivery.p99_us,
                        passed: m.failed_checks().next().is_none(),
                        // Judged against the knee's ceiling, not this run's own p99.
                        generator_behind: !crate::check::generator::behind(
                            &m.generator,
                            &m.throughput,
                            options.knee.max_p99_us,
                            std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
                        )
                        .is_empty(),
                        report: path.clone(),
                    })
                })
                .collect();
            PointMode::of(mode, runs)
        })
        .collect();
    Ok(SweepPoint { values, label, modes })
}

/// A sweep folder's default name.
pub(crate) fn default_out(scenario: &Scenario) -> PathBuf {
    PathBuf::from("results").join(format!("{}-sweep-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S"), scenario.name))
}

/// Parse `LOW..HIGH` for `--bisect rate=LOW..HIGH`.
pub(crate) fn parse_bisect(spec: &str) -> Result<(f64, f64), SweepError> {
    let bad = |why: &str| SweepError::Axis { spec: spec.to_owned(), why: why.to_owned() };
    let range = spec.strip_prefix("rate=").ok_or_else(|| bad("bisection searches the rate: rate=LOW..HIGH"))?;
    let (lo, hi) = range.split_once("..").ok_or_else(|| bad("expected rate=LOW..HIGH"))?;
    let (lo, hi) = (
        lo.trim().parse::<f64>().map_err(|_| bad("LOW is not a number"))?,
        hi.trim().parse::<f64>().map_err(|_| bad("HIGH is not a number"))?,
    );
    if !(lo > 0.0 && hi > lo) {
        return Err(bad("need 0 < LOW < HIGH"));
    }
    Ok((lo, hi))
}

/// How long a knee ceiling string means, for the CLI.
pub(crate) fn ceiling_us(d: Duration) -> u64 {
    d.as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_parse_lists_and_geometric_ladders_and_refuse_nonsense() {
        assert_eq!(parse_axis("rate=50,100,200").unwrap(), Axis { param: Param::Rate, values: vec![50.0, 100.0, 200.0] });
        assert_eq!(parse_axis("rate=25..800x2").unwrap().values, vec![25.0, 50.0, 100.0, 200.0, 400.0, 800.0]);
        assert_eq!(parse_axis("nodes=1,2,3").unwrap().param, Param::Nodes);
        for bad in ["speed=1", "rate", "rate=a,b", "rate=10..5x2", "rate=1..10x1", "rate=-5"] {
            assert!(parse_axis(bad).is_err(), "{bad}");
        }
        assert_eq!(grid(&[parse_axis("nodes=1,2").unwrap(), parse_axis("rate=10,20").unwrap()]).len(), 4);
    }
}
