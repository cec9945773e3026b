//! A run history: `chatbench run --history FILE` appends one JSON line per
//! run (when, which commit, the run's report without its per-event
//! detail), and `chatbench compare --history FILE` judges the newest run of
//! a scenario against the ones before it, as `compare` judges two reports:
//! a gated metric worse than the baseline by more than the tolerance, or a
//! check that passed there and fails now, is a regression (exit 1). The
//! baseline is the median, per metric, of the `--window` runs before the
//! newest (default 5): one noisy run does not move it, a real step does.

use super::RunReport;
use super::compare::{Comparison, Metric, compare};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// One line of the history file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// When the run was recorded (RFC 3339).
    pub at: String,
    /// The commit under test: `CHATBENCH_COMMIT`, else `git rev-parse
    /// --short HEAD` where the run was started, else none.
    pub commit: Option<String>,
    /// The run's report, without findings, curves, timelines and samples.
    pub report: RunReport,
}

impl Entry {
    /// The entry for `report`, trimmed to what a comparison reads.
    pub fn of(report: &RunReport, commit: Option<String>) -> Entry {
        let mut report = report.clone();
        for m in &mut report.modes {
            m.findings.clear();
            m.timeline.clear();
            m.delivery_curve.clear();
            m.unseen.clear();
            m.resource_samples.clear();
            m.room_names.clear();
        }
        Entry { at: chrono::Utc::now().to_rfc3339(), commit, report }
    }
}

/// The commit under test, as [`Entry::commit`] says.
pub fn current_commit() -> Option<String> {
    if let Some(c) = std::env::var("CHATBENCH_COMMIT").ok().filter(|c| !c.is_empty()) {
        return Some(c);
    }
    let out = std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).stderr(std::process::Stdio::null()).output().ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}

/// Append `entry` as one line (the file is made if missing).
pub fn append(path: &Path, entry: &Entry) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
    writeln!(file, "{line}")
}

/// Every entry, in file order; an unreadable line is an error naming it.
pub fn read(path: &Path) -> Result<Vec<Entry>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("{}:{}: not a chatbench history entry: {e}", path.display(), i + 1)))
        .collect()
}

/// The newest entry of `scenario` (default: the newest entry's) against
/// the median of the `window` before it: (the comparison, the candidate,
/// the baseline entries).
pub fn judge<'a>(
    entries: &'a [Entry],
    scenario: Option<&str>,
    window: usize,
    gate: &[Metric],
    tolerance_percent: f64,
) -> Result<(Comparison, &'a Entry, Vec<&'a Entry>), String> {
    let scenario = match scenario {
        Some(s) => s.to_owned(),
        None => entries.last().map(|e| e.report.scenario.clone()).ok_or("the history is empty")?,
    };
    let runs: Vec<&Entry> = entries.iter().filter(|e| e.report.scenario == scenario).collect();
    let Some((candidate, before)) = runs.split_last() else { return Err(format!("no run of scenario {scenario:?} in the history")) };
    if before.is_empty() {
        return Err(format!("scenario {scenario:?} has one run in the history: nothing to compare it with yet"));
    }
    let baseline: Vec<&Entry> = before.iter().rev().take(window.max(1)).rev().copied().collect();
    Ok((compare(&median(&baseline), &candidate.report, gate, tolerance_percent), candidate, baseline))
}

/// The newest of `entries`' reports with each metric replaced, per mode,
/// by its median over the entries that have the mode (checks: the newest's).
fn median(entries: &[&Entry]) -> RunReport {
    let mut out = entries.last().expect("a baseline has at least one run").report.clone();
    for mode in &mut out.modes {
        for metric in Metric::ALL {
            let mut values: Vec<f64> =
                entries.iter().filter_map(|e| e.report.modes.iter().find(|m| m.mode == mode.mode)).map(|m| metric.value(m)).collect();
            values.sort_by(f64::total_cmp);
            let n = values.len();
            let mid = if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 };
            metric.set(mode, mid);
        }
    }
    out
}

/// What `compare --history` prints above the comparison's table.
pub fn describe(candidate: &Entry, baseline: &[&Entry]) -> String {
    let commit = |e: &Entry| e.commit.clone().unwrap_or_else(|| "?".into());
    let commits: Vec<String> = baseline.iter().map(|e| commit(e)).collect();
    format!(
        "scenario {}: run at {} (commit {}) against the median of {} run(s) before it (commits {})\n",
        candidate.report.scenario,
        candidate.at,
        commit(candidate),
        baseline.len(),
        commits.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{CheckResult, ModeReport};

    fn entry(scenario: &str, p99_us: u64, commit: &str, fifo_passes: bool) -> Entry {
        let mut mode = ModeReport::default();
        mode.latency.delivery.p99_us = p99_us;
        mode.throughput.acked_per_s = 100.0;
        mode.checks = vec![CheckResult { name: "ordering.per_sender_fifo".into(), passed: fifo_passes, off: None, detail: String::new() }];
        mode.findings = vec![crate::check::Finding::new(crate::check::FindingKind::Lost, "x")];
        let report = RunReport { scenario: scenario.into(), modes: vec![mode], ..Default::default() };
        Entry::of(&report, Some(commit.into()))
    }

    /// Written, read back, trimmed; the newest run against the median of
    /// the window: one slow run in the baseline does not make a normal one
    /// look fine or bad, a real step up regresses, another scenario's
    /// runs do not count.
    #[test]
    fn the_newest_run_is_judged_against_the_median_of_the_ones_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let runs = [
            entry("chat", 10_000, "a1", true),
            entry("other", 99_000, "zz", true),
            entry("chat", 50_000, "a2", true),
            entry("chat", 11_000, "a3", true),
            entry("chat", 10_500, "a4", true),
        ];
        for e in &runs {
            append(&path, e).unwrap();
        }
        let read_back = read(&path).unwrap();
        assert_eq!(read_back.len(), 5);
        assert!(read_back[0].report.modes[0].findings.is_empty(), "trimmed");
        let gate = [Metric::DeliveryP99];
        let (c, candidate, baseline) = judge(&read_back, Some("chat"), 5, &gate, 10.0).unwrap();
        assert_eq!(candidate.commit.as_deref(), Some("a4"));
        assert_eq!(baseline.iter().map(|e| e.commit.as_deref().unwrap()).collect::<Vec<_>>(), ["a1", "a2", "a3"]);
        let p99 = c.lines.iter().find(|l| l.metric == Metric::DeliveryP99).unwrap();
        assert_eq!(p99.baseline, 11_000.0, "the median, not the 50 ms outlier");
        assert!(!c.regressed(), "{c:?}");
        // A step up past the tolerance, and a check that starts failing.
        append(&path, &entry("chat", 20_000, "a5", false)).unwrap();
        let (c, _, _) = judge(&read(&path).unwrap(), None, 3, &gate, 10.0).unwrap();
        assert!(c.lines.iter().any(|l| l.regressed && l.metric == Metric::DeliveryP99), "{c:?}");
        assert_eq!(c.newly_failing.len(), 1, "{c:?}");
    }

    #[test]
    fn too_little_history_or_a_bad_line_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        append(&path, &entry("chat", 1, "a", true)).unwrap();
        let err = judge(&read(&path).unwrap(), None, 5, &[Metric::DeliveryP99], 10.0).unwrap_err();
        assert!(err.contains("one run"), "{err}");
        assert!(judge(&read(&path).unwrap(), Some("nope"), 5, &[], 10.0).unwrap_err().contains("no run of scenario \"nope\""));
        std::fs::write(&path, "{\"at\": 1}\n").unwrap();
        let err = read(&path).unwrap_err();
        assert!(err.contains("h.jsonl:1: not a chatbench history entry"), "{err}");
    }
}
