//! A sweep's results: the model written to `sweep.json` (points, their
//! runs and spreads, knees), how a point is trusted and a knee found from
//! them, the table, and the comparison of two sweeps. Pure functions over
//! data; running the points is `crate::sweep`'s.

use serde::{Deserialize, Serialize};
use std::path::Path;

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
    pub(crate) fn parse(name: &str) -> Option<Param> {
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub(crate) fn of(values: &[f64]) -> Spread {
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
    /// Every ack in the window, backlog included (see `Throughput`).
    #[serde(default)]
    pub sustained_per_s: f64,
    /// Sends the clients dropped (`workload.max_pending`), per second.
    #[serde(default)]
    pub dropped_per_s: f64,
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
    #[serde(default)]
    pub sustained_per_s: Spread,
    #[serde(default)]
    pub dropped_per_s: Spread,
    pub p50_us: Spread,
    pub p99_us: Spread,
    /// Every repeat passed every check.
    pub passed: bool,
    /// The generator kept up here and at every lower rate of the series.
    pub trusted: bool,
}

impl PointMode {
    /// One mode's point from its repeats: spreads over the runs; trusted
    /// until `mark_trust` says otherwise.
    pub(crate) fn of(mode: crate::subject::Subject, runs: Vec<PointRun>) -> PointMode {
        let f = |get: fn(&PointRun) -> f64| Spread::of(&runs.iter().map(get).collect::<Vec<_>>());
        PointMode {
            achieved_per_s: f(|r| r.achieved_per_s),
            sustained_per_s: f(|r| r.sustained_per_s),
            dropped_per_s: f(|r| r.dropped_per_s),
            p50_us: f(|r| r.p50_us as f64),
            p99_us: f(|r| r.p99_us as f64),
            passed: runs.iter().all(|r| r.passed),
            trusted: true,
            mode,
            runs,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The varied parameters' values (`rate` first when varied).
    pub values: Vec<(Param, f64)>,
    pub label: String,
    pub modes: Vec<PointMode>,
}

impl SweepPoint {
    pub(crate) fn value(&self, p: Param) -> Option<f64> {
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
    pub fn read(path: &Path) -> Result<SweepReport, super::ReadError> {
        let report: SweepReport = super::read_json(path, "sweep.json")?;
        if report.schema_version != SWEEP_SCHEMA_VERSION {
            return Err(super::ReadError::Schema {
                path: path.to_owned(),
                what: "sweep",
                found: report.schema_version,
                reads: SWEEP_SCHEMA_VERSION,
            });
        }
        Ok(report)
    }
}

/// Along each series (rising rate), the first point whose generator fell
/// behind and every point above it are untrusted.
pub(crate) fn mark_trust(points: &mut [SweepPoint]) {
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
pub(crate) fn meets(m: &PointMode, rate: f64, rule: &KneeRule, only: Option<u32>) -> bool {
    let (achieved, p99, passed) = match only {
        Some(r) => match m.runs.iter().find(|x| x.repeat == r) {
            Some(x) => (x.achieved_per_s, x.p99_us as f64, x.passed && !x.generator_behind),
            None => return false,
        },
        None => (m.achieved_per_s.median, m.p99_us.median, m.passed),
    };
    m.trusted && passed && achieved >= rule.min_achieved_share * rate && p99 <= rule.max_p99_us as f64
}

pub(crate) fn knees(points: &[SweepPoint], rule: &KneeRule, repeat: u32) -> Vec<Knee> {
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
        "sustained/s",
        "dropped/s",
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
                format!("{:.0}", m.sustained_per_s.median),
                format!("{:.0}", m.dropped_per_s.median),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn point(rate: f64, runs: &[(f64, u64, bool, bool)]) -> SweepPoint {
        let runs: Vec<PointRun> = runs
            .iter()
            .enumerate()
            .map(|(i, &(achieved, p99, passed, behind))| PointRun {
                repeat: i as u32,
                offered_per_s: Some(rate),
                achieved_per_s: achieved,
                sustained_per_s: achieved,
                dropped_per_s: 0.0,
                delivered_per_s: achieved,
                p50_us: p99 / 2,
                p99_us: p99,
                passed,
                generator_behind: behind,
                report: String::new(),
            })
            .collect();
        SweepPoint {
            values: vec![(Param::Rate, rate)],
            label: format!("rate={rate}"),
            modes: vec![PointMode::of(crate::scenario::Mode::Changestream.into(), runs)],
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
