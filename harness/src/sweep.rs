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
use crate::run::{InfraError, RunOptions, run};
use crate::scenario::{Load, MessageBytes, Scenario, check_scenario};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bump when `sweep.json` changes incompatibly.
pub const SWEEP_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Param {
    /// Open-loop `rate_per_s`.
    Rate,
    Nodes,
    /// `subscribers_per_room`.
    Subscribers,
    /// Fixed `message_bytes`.
    MessageBytes,
    Rooms,
}

impl Param {
    fn parse(name: &str) -> Option<Param> {
        match name {
            "rate" => Some(Param::Rate),
            "nodes" => Some(Param::Nodes),
            "subscribers" => Some(Param::Subscribers),
            "message-bytes" | "message_bytes" => Some(Param::MessageBytes),
            "rooms" => Some(Param::Rooms),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Param::Rate => "rate",
            Param::Nodes => "nodes",
            Param::Subscribers => "subscribers",
            Param::MessageBytes => "message_bytes",
            Param::Rooms => "rooms",
        }
    }

    fn apply(self, s: &mut Scenario, value: f64) -> Result<(), String> {
        let whole = || {
            if value.fract() == 0.0 && value >= 1.0 && value <= f64::from(u32::MAX) {
                Ok(value as u32)
            } else {
                Err(format!("{} must be a whole number ≥ 1, not {value}", self.name()))
            }
        };
        match self {
            Param::Rate => match &mut s.workload.load {
                Load::Open { rate_per_s } => *rate_per_s = value,
                Load::Closed { .. } => return Err("rate varies an open-loop scenario; this one is a closed loop".into()),
            },
            Param::Nodes => s.topology.nodes = whole()?,
            Param::Subscribers => s.workload.subscribers_per_room = whole()?,
            Param::MessageBytes => s.workload.message_bytes = MessageBytes::Fixed(whole()?),
            Param::Rooms => s.workload.rooms = whole()?,
        }
        Ok(())
    }
}

/// One varied parameter and its values, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    pub param: Param,
    pub values: Vec<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
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
pub fn parse_axis(spec: &str) -> Result<Axis, SweepError> {
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

/// When a point counts toward the knee.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KneeRule {
    /// Achieved acks/s at least this share of the offered rate.
    pub min_achieved_share: f64,
    /// Delivery p99 at most this, in µs.
    pub max_p99_us: u64,
}

impl Default for KneeRule {
    fn default() -> Self {
        Self { min_achieved_share: 0.95, max_p99_us: 1_000_000 }
    }
}

/// How to search: walk a grid, or bisect the rate for the knee.
#[derive(Debug, Clone)]
pub enum Search {
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
pub struct SweepOptions {
    pub search: Search,
    pub repeat: u32,
    pub knee: KneeRule,
    /// The run options every point starts from (out_dir is the sweep's).
    pub run: RunOptions,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Spread {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        Spread { min: v[0], median: v[v.len() / 2], max: v[v.len() - 1] }
    }
}

/// One run of one point, one mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointRun {
    pub repeat: u32,
    pub offered_per_s: Option<f64>,
    pub achieved_per_s: f64,
    pub delivered_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub passed: bool,
    pub generator_behind: bool,
    /// The run's report.json, relative to the sweep folder.
    pub report: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointMode {
    pub mode: crate::subject::Subject,
    pub runs: Vec<PointRun>,
    pub achieved_per_s: Spread,
    pub p50_us: Spread,
    pub p99_us: Spread,
    /// Every repeat passed every check.
    pub passed: bool,
    /// The generator kept up here and at every lower rate of the series.
    pub trusted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The varied parameters' values (`rate` first when varied).
    pub values: Vec<(Param, f64)>,
    pub label: String,
    pub modes: Vec<PointMode>,
}

impl SweepPoint {
    fn value(&self, p: Param) -> Option<f64> {
        self.values.iter().find(|(q, _)| *q == p).map(|(_, v)| *v)
    }

    /// The other parameters' values: which curve the point is on.
    fn series(&self) -> String {
        let rest: Vec<String> = self.values.iter().filter(|(p, _)| *p != Param::Rate).map(|(p, v)| format!("{}={v}", p.name())).collect();
        if rest.is_empty() { "all".to_owned() } else { rest.join(",") }
    }
}

/// The knee of one mode's curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Knee {
    pub mode: crate::subject::Subject,
    pub series: String,
    /// Highest offered rate that met the rule (judged on each point's
    /// median run); None when even the lowest did not.
    pub rate: Option<f64>,
    /// The same, judged on each repeat alone (its spread).
    pub per_repeat: Vec<Option<f64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    pub schema_version: u32,
    pub scenario: String,
    pub started_at: String,
    pub repeat: u32,
    pub knee_rule: KneeRule,
    pub points: Vec<SweepPoint>,
    pub knees: Vec<Knee>,
}

impl SweepReport {
    pub fn read(path: &Path) -> Result<SweepReport, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let report: SweepReport =
            serde_json::from_str(&text).map_err(|e| format!("{}: not a chatbench sweep.json: {e}", path.display()))?;
        if report.schema_version != SWEEP_SCHEMA_VERSION {
            return Err(format!("{}: sweep schema {}, this chatbench reads {SWEEP_SCHEMA_VERSION}", path.display(), report.schema_version));
        }
        Ok(report)
    }
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
pub async fn sweep(
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
        param.apply(&mut variant, value).map_err(|why| SweepError::Point { point: label.clone(), why })?;
    }
    // A fixed throughput floor belongs to one rate; across rates the knee
    // rule (achieved share of offered) is the floor.
    if values.iter().any(|(p, _)| *p == Param::Rate) {
        variant.checks.min_throughput = None;
    }
    check_scenario(&variant).map_err(|why| SweepError::Point { point: label.clone(), why })?;
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
            let f = |get: fn(&PointRun) -> f64| Spread::of(&runs.iter().map(get).collect::<Vec<_>>());
            PointMode {
                achieved_per_s: f(|r| r.achieved_per_s),
                p50_us: f(|r| r.p50_us as f64),
                p99_us: f(|r| r.p99_us as f64),
                passed: runs.iter().all(|r| r.passed),
                trusted: true,
                mode,
                runs,
            }
        })
        .collect();
    Ok(SweepPoint { values, label, modes })
}

/// Along each series (rising rate), the first point whose generator fell
/// behind and every point above it are untrusted.
fn mark_trust(points: &mut [SweepPoint]) {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| points[a].value(Param::Rate).unwrap_or(0.0).total_cmp(&points[b].value(Param::Rate).unwrap_or(0.0)));
    let mut fell_behind: Vec<(String, crate::subject::Subject)> = Vec::new();
    for i in order {
        let series = points[i].series();
        for m in &mut points[i].modes {
            let key = (series.clone(), m.mode);
            if m.runs.iter().any(|r| r.generator_behind) {
                fell_behind.push(key.clone());
            }
            m.trusted = !fell_behind.contains(&key);
        }
    }
}

/// Whether one mode at one point meets the knee rule: on its median run, or
/// on repeat `only` alone.
fn meets(m: &PointMode, rate: f64, rule: &KneeRule, only: Option<u32>) -> bool {
    let (achieved, p99, passed) = match only {
        Some(r) => match m.runs.iter().find(|x| x.repeat == r) {
            Some(x) => (x.achieved_per_s, x.p99_us as f64, x.passed && !x.generator_behind),
            None => return false,
        },
        None => (m.achieved_per_s.median, m.p99_us.median, m.passed),
    };
    m.trusted && passed && achieved >= rule.min_achieved_share * rate && p99 <= rule.max_p99_us as f64
}

fn knees(points: &[SweepPoint], rule: &KneeRule, repeat: u32) -> Vec<Knee> {
    let mut out: Vec<Knee> = Vec::new();
    let mut keys: Vec<(crate::subject::Subject, String)> = Vec::new();
    for p in points.iter().filter(|p| p.value(Param::Rate).is_some()) {
        for m in &p.modes {
            let key = (m.mode, p.series());
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    for (mode, series) in keys {
        let on_curve: Vec<(f64, &PointMode)> = points
            .iter()
            .filter(|p| p.series() == series)
            .filter_map(|p| Some((p.value(Param::Rate)?, p.modes.iter().find(|m| m.mode == mode)?)))
            .collect();
        let highest = |only: Option<u32>| {
            on_curve
                .iter()
                .filter(|(rate, m)| meets(m, *rate, rule, only))
                .map(|(rate, _)| *rate)
                .fold(None, |a: Option<f64>, r| Some(a.map_or(r, |a| a.max(r))))
        };
        out.push(Knee { rate: highest(None), per_repeat: (0..repeat.max(1)).map(|r| highest(Some(r))).collect(), mode, series });
    }
    out
}

/// The sweep's table: one row per point and mode.
pub fn render_table(report: &SweepReport) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "point",
        "mode",
        "offered/s",
        "achieved/s (min–max)",
        "delivery p50",
        "delivery p99 (min–max)",
        "checks",
        "generator",
    ]);
    let us = |v: f64| crate::report::fmt_us(v as u64);
    for p in &report.points {
        for m in &p.modes {
            let offered = m.runs.first().and_then(|r| r.offered_per_s).map_or("-".to_owned(), |o| format!("{o:.0}"));
            table.add_row([
                p.label.clone(),
                m.mode.to_string(),
                offered,
                format!("{:.0} ({:.0}–{:.0})", m.achieved_per_s.median, m.achieved_per_s.min, m.achieved_per_s.max),
                us(m.p50_us.median),
                format!("{} ({}–{})", us(m.p99_us.median), us(m.p99_us.min), us(m.p99_us.max)),
                if m.passed { "PASS".to_owned() } else { "FAIL".to_owned() },
                if m.trusted { "kept up".to_owned() } else { "BEHIND: untrusted".to_owned() },
            ]);
        }
    }
    let mut out = format!("{table}\n");
    for k in &report.knees {
        let spread: Vec<String> = k.per_repeat.iter().map(|r| r.map_or("none".to_owned(), |r| format!("{r:.0}"))).collect();
        out.push_str(&format!(
            "knee {} [{}]: {} msgs/s (per repeat: {}; rule: achieved ≥ {:.0}% of offered, delivery p99 ≤ {}, checks pass, generator kept up)\n",
            k.mode,
            k.series,
            k.rate.map_or("none".to_owned(), |r| format!("{r:.0}")),
            spread.join(", "),
            report.knee_rule.min_achieved_share * 100.0,
            crate::report::fmt_us(report.knee_rule.max_p99_us)
        ));
    }
    out
}

/// Write sweep.json, sweep.md and sweep.html into `dir`.
pub fn write_all(report: &SweepReport, dir: &Path) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(report).expect("sweep reports serialize: plain data");
    std::fs::write(dir.join("sweep.json"), json + "\n")?;
    std::fs::write(dir.join("sweep.md"), format!("# chatbench sweep: {}\n\n```\n{}```\n", report.scenario, render_table(report)))?;
    std::fs::write(dir.join("sweep.html"), crate::report::html::render_sweep(report))?;
    Ok(())
}

/// A knee or curve that got worse than `tolerance_percent` between two sweeps.
pub fn compare(baseline: &SweepReport, candidate: &SweepReport, tolerance_percent: f64) -> (String, bool) {
    let mut lines = Vec::new();
    let mut regressed = false;
    for b in &baseline.knees {
        let Some(c) = candidate.knees.iter().find(|c| c.mode == b.mode && c.series == b.series) else {
            lines.push(format!("knee {} [{}]: only in the baseline", b.mode, b.series));
            continue;
        };
        let verdict = match (b.rate, c.rate) {
            (Some(x), Some(y)) if y < x * (1.0 - tolerance_percent / 100.0) => "REGRESSED",
            (Some(_), None) => "REGRESSED",
            _ => "ok",
        };
        regressed |= verdict == "REGRESSED";
        let show = |r: Option<f64>| r.map_or("none".to_owned(), |r| format!("{r:.0}"));
        lines.push(format!("knee {} [{}]: {} -> {} msgs/s {verdict}", b.mode, b.series, show(b.rate), show(c.rate)));
    }
    for bp in &baseline.points {
        let Some(cp) = candidate.points.iter().find(|c| c.label == bp.label) else { continue };
        for bm in &bp.modes {
            let Some(cm) = cp.modes.iter().find(|c| c.mode == bm.mode) else { continue };
            let worse_p99 = bm.p99_us.median > 0.0 && cm.p99_us.median > bm.p99_us.median * (1.0 + tolerance_percent / 100.0);
            let worse_rate = cm.achieved_per_s.median < bm.achieved_per_s.median * (1.0 - tolerance_percent / 100.0);
            if worse_p99 || worse_rate {
                regressed = true;
                lines.push(format!(
                    "curve {} at {}: p99 {} -> {}, achieved {:.0} -> {:.0}/s REGRESSED",
                    bm.mode,
                    bp.label,
                    crate::report::fmt_us(bm.p99_us.median as u64),
                    crate::report::fmt_us(cm.p99_us.median as u64),
                    bm.achieved_per_s.median,
                    cm.achieved_per_s.median
                ));
            }
        }
    }
    lines.push(if regressed { "result: REGRESSED".into() } else { "result: OK".into() });
    (lines.join("\n") + "\n", regressed)
}

/// A sweep folder's default name.
pub fn default_out(scenario: &Scenario) -> PathBuf {
    PathBuf::from("results").join(format!("{}-sweep-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S"), scenario.name))
}

/// Parse `LOW..HIGH` for `--bisect rate=LOW..HIGH`.
pub fn parse_bisect(spec: &str) -> Result<(f64, f64), SweepError> {
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
pub fn ceiling_us(d: Duration) -> u64 {
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

    fn point(rate: f64, runs: &[(f64, u64, bool, bool)]) -> SweepPoint {
        let runs: Vec<PointRun> = runs
            .iter()
            .enumerate()
            .map(|(i, &(achieved, p99, passed, behind))| PointRun {
                repeat: i as u32,
                offered_per_s: Some(rate),
                achieved_per_s: achieved,
                delivered_per_s: achieved,
                p50_us: p99 / 2,
                p99_us: p99,
                passed,
                generator_behind: behind,
                report: String::new(),
            })
            .collect();
        let f = |get: fn(&PointRun) -> f64| Spread::of(&runs.iter().map(get).collect::<Vec<_>>());
        SweepPoint {
            values: vec![(Param::Rate, rate)],
            label: format!("rate={rate}"),
            modes: vec![PointMode {
                mode: crate::scenario::Mode::Changestream.into(),
                achieved_per_s: f(|r| r.achieved_per_s),
                p50_us: f(|r| r.p50_us as f64),
                p99_us: f(|r| r.p99_us as f64),
                passed: runs.iter().all(|r| r.passed),
                trusted: true,
                runs,
            }],
        }
    }

    #[test]
    fn the_knee_is_the_highest_rate_kept_up_with_and_untrusted_points_do_not_count() {
        let rule = KneeRule { min_achieved_share: 0.95, max_p99_us: 100_000 };
        let mut points = vec![
            point(100.0, &[(99.0, 10_000, true, false), (100.0, 12_000, true, false)]),
            point(200.0, &[(199.0, 30_000, true, false), (150.0, 30_000, true, false)]),
            point(400.0, &[(300.0, 900_000, true, false), (310.0, 800_000, true, false)]),
        ];
        mark_trust(&mut points);
        let k = &knees(&points, &rule, 2)[0];
        // Median of 200 is 199 (>= 190): knee 200; repeat 1 alone only reached 150 there.
        assert_eq!(k.rate, Some(200.0));
        assert_eq!(k.per_repeat, vec![Some(200.0), Some(100.0)]);
        // The generator fell behind at 200: 200 and 400 are untrusted.
        points[1].modes[0].runs[0].generator_behind = true;
        mark_trust(&mut points);
        assert!(points[0].modes[0].trusted && !points[1].modes[0].trusted && !points[2].modes[0].trusted);
        assert_eq!(knees(&points, &rule, 2)[0].rate, Some(100.0));
        // A failed check disqualifies a point.
        let failing = vec![point(100.0, &[(100.0, 1_000, false, false)])];
        assert_eq!(knees(&failing, &rule, 1)[0].rate, None);
    }

    #[test]
    fn a_lower_knee_or_a_worse_curve_is_a_regression() {
        let rule = KneeRule::default();
        let base_points = vec![point(100.0, &[(100.0, 10_000, true, false)]), point(200.0, &[(200.0, 20_000, true, false)])];
        let base = SweepReport {
            schema_version: SWEEP_SCHEMA_VERSION,
            scenario: "s".into(),
            started_at: String::new(),
            repeat: 1,
            knee_rule: rule,
            knees: knees(&base_points, &rule, 1),
            points: base_points,
        };
        assert!(!compare(&base, &base, 10.0).1);
        let mut worse = base.clone();
        worse.points[1] = point(200.0, &[(120.0, 20_000, true, false)]);
        worse.knees = knees(&worse.points, &rule, 1);
        let (text, regressed) = compare(&base, &worse, 10.0);
        assert!(regressed, "{text}");
        assert!(text.contains("knee changestream") && text.contains("200 -> 100"), "{text}");
    }
}
