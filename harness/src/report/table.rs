//! The terminal table: one column per mode, side by side, plus the
//! difference in percent when exactly two modes ran.

use super::{COMPAT_WARNING, ModeReport, RunReport, fmt_us};
use crate::check::FindingKind;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

/// One row: a label, a rendered value per mode, and the raw numbers where
/// a difference in percent means something.
pub struct Row {
    pub label: &'static str,
    pub values: Vec<String>,
    pub numbers: Option<Vec<f64>>,
}

impl Row {
    /// `(second - first) / first` in percent, when both are numbers.
    pub fn diff_percent(&self) -> Option<f64> {
        let n = self.numbers.as_ref()?;
        match n.as_slice() {
            [a, b] if *a != 0.0 => Some((b - a) / a * 100.0),
            _ => None,
        }
    }
}

pub fn fmt_diff(d: Option<f64>) -> String {
    d.map_or(String::new(), |d| format!("{d:+.1}%"))
}

/// Rows shared by the terminal, Markdown and HTML reports.
pub fn rows(report: &RunReport) -> Vec<Row> {
    let modes = &report.modes;
    let text = |label: &'static str, f: &dyn Fn(&ModeReport) -> String| Row { label, values: modes.iter().map(f).collect(), numbers: None };
    let num = |label: &'static str, f: &dyn Fn(&ModeReport) -> f64, show: &dyn Fn(f64) -> String| {
        let numbers: Vec<f64> = modes.iter().map(f).collect();
        Row { label, values: numbers.iter().map(|&v| show(v)).collect(), numbers: Some(numbers) }
    };
    let count = |v: f64| format!("{v:.0}");
    let us = |v: f64| fmt_us(v as u64);
    let rate = |v: f64| format!("{v:.1}");
    let kinds = |m: &ModeReport, ks: &[FindingKind]| ks.iter().map(|&k| m.count(k).to_string()).collect::<Vec<_>>().join(" / ");
    vec![
        text("provider", &|m| m.provider.clone()),
        text("backend", &|m| {
            if m.backend_is_real { m.backend.clone() } else { format!("{} (compat)", m.backend) }
        }),
        text("protocol", &|m| m.protocol.clone()),
        text("message text", &|m| match m.message_text.split(' ').next().unwrap_or_default() {
            "ascii" => "ascii (declared)".to_owned(),
            other => other.to_owned(),
        }),
        text("guarantees (declared)", &|m| m.guarantees.clone()),
        text("unacked sends resolved by", &|m| m.history_source.split([',', '(']).next().unwrap_or_default().trim().to_owned()),
        text("load", &|m| m.load.clone()),
        text("nodes / clients", &|m| format!("{} / {}", m.nodes, m.counts.clients)),
        num("sent", &|m| m.counts.sent as f64, &count),
        num("acked", &|m| m.counts.acked as f64, &count),
        text("unacked: stored / not stored / unresolved", &|m| {
            format!("{} / {} / {}", m.counts.resolved_stored, m.counts.resolved_not_stored, m.counts.unresolved)
        }),
        text("unacked by evidence: delivered / unconfirmed", &|m| format!("{} / {}", m.counts.resolved_delivered, m.counts.unconfirmed)),
        num("delivered", &|m| m.counts.delivered as f64, &count),
        text("lost", &|m| m.count(FindingKind::Lost).to_string()),
        text("duplicated", &|m| m.count(FindingKind::Duplicated).to_string()),
        text("phantom / agreement / before start", &|m| {
            kinds(m, &[FindingKind::Phantom, FindingKind::Agreement, FindingKind::BeforeStart])
        }),
        text("order violations", &|m| {
            (m.count(FindingKind::OrderViolation) + m.count(FindingKind::SeqConflict) + m.count(FindingKind::FifoViolation)).to_string()
        }),
        text("corrupted / leak / misrouted / stale", &|m| {
            kinds(m, &[FindingKind::Corrupted, FindingKind::Leak, FindingKind::Misrouted, FindingKind::Stale])
        }),
        text("intruder attempts refused / unrefused", &|m| {
            if m.counts.intruders == 0 {
                "- (no intruders)".to_owned()
            } else {
                format!("{} of {} / {}", m.counts.intruder_refused, m.counts.intruder_attempts, m.count(FindingKind::Unrefused))
            }
        }),
        text("live ≠ history", &|m| {
            [FindingKind::HistoryMismatch, FindingKind::HistoryGap, FindingKind::HistoryUnavailable, FindingKind::StoredTwice]
                .iter()
                .map(|&k| m.count(k))
                .sum::<u64>()
                .to_string()
        }),
        text("not ready / unattempted / gave up", &|m| kinds(m, &[FindingKind::NotReady, FindingKind::Unattempted, FindingKind::GaveUp])),
        text("unanswered / unresolved", &|m| kinds(m, &[FindingKind::Unanswered, FindingKind::Unresolved])),
        text("outages / not recovered / rooms without progress", &|m| {
            kinds(m, &[FindingKind::Outage, FindingKind::NotRecovered, FindingKind::NoProgress])
        }),
        text("drain", &|m| {
            if m.drain.completed { format!("done in {}ms", m.drain.took_ms) } else { format!("INCOMPLETE after {}ms", m.drain.took_ms) }
        }),
        num("ack p50", &|m| m.latency.ack.p50_us as f64, &us),
        num("ack p99", &|m| m.latency.ack.p99_us as f64, &us),
        num("delivery p50", &|m| m.latency.delivery.p50_us as f64, &us),
        num("delivery p99", &|m| m.latency.delivery.p99_us as f64, &us),
        num("delivery p999", &|m| m.latency.delivery.p999_us as f64, &us),
        num("delivery max", &|m| m.latency.delivery.max_us as f64, &us),
        num("last subscriber p50 (stable)", &|m| m.latency.stable.p50_us as f64, &us),
        num("last subscriber p99 (stable)", &|m| m.latency.stable.p99_us as f64, &us),
        num("incomplete (censored) %", &|m| m.latency.incomplete_percent, &|v| format!("{v:.2}")),
        num("connect p50", &|m| m.latency.connect.p50_us as f64, &us),
        num("connect p99", &|m| m.latency.connect.p99_us as f64, &us),
        num("connect max", &|m| m.latency.connect.max_us as f64, &us),
        text("msgs/s offered", &|m| m.throughput.offered_per_s.map_or("- (closed loop)".to_owned(), |r| format!("{r:.1}"))),
        num("msgs/s attempted", &|m| m.throughput.attempted_per_s, &rate),
        num("msgs/s dropped (max_pending unacked)", &|m| m.throughput.dropped_per_s, &rate),
        num("msgs/s acked (achieved)", &|m| m.throughput.acked_per_s, &rate),
        num("deliveries/s (achieved)", &|m| m.throughput.delivered_per_s, &rate),
        num("acks/s of warmup backlog", &|m| m.throughput.backlog_acked_per_s, &rate),
        num("msgs/s acked, backlog too (sustained)", &|m| m.throughput.sustained_per_s, &rate),
        num("generator lateness p99", &|m| m.generator.lateness_p99_us as f64, &us),
        num("harness loop lag p99", &|m| m.generator.loop_lag.p99_us as f64, &us),
        text("CPU max % (harness / nodes / backends)", &|m| {
            // A merged sharded run names processes "s<shard>/<process>".
            let role = |p: &str| p.rsplit('/').next().unwrap_or(p).to_owned();
            let sum = |f: &dyn Fn(&str) -> bool| {
                m.resources.iter().filter(|r| f(&role(&r.process))).map(|r| r.cpu_max_percent).fold(0.0, f64::max)
            };
            format!(
                "{:.0} / {:.0} / {:.0}",
                sum(&|p| p == "harness"),
                sum(&|p| p.starts_with("node")),
                sum(&|p| p != "harness" && !p.starts_with("node"))
            )
        }),
        num("external writes / msg", &|m| m.server.external_ops_per_ack().unwrap_or(0.0), &|v| format!("{v:.2}")),
        num("node reads / msg (fan-out source)", &|m| m.server.node_reads_per_ack().unwrap_or(0.0), &|v| format!("{v:.2}")),
        text("CPU ms / msg (nodes / MongoDB / broker)", &|m| {
            let role = |p: &str| p.rsplit('/').next().unwrap_or(p).to_owned();
            let ms = |f: &dyn Fn(&str) -> bool| {
                // `+ 0.0`: an empty f64 sum is -0.0, printed "-0.00".
                let s: f64 = m.resources.iter().filter(|r| f(&role(&r.process))).map(|r| r.cpu_seconds).sum::<f64>() + 0.0;
                if m.counts.acked > 0 { s * 1000.0 / m.counts.acked as f64 } else { 0.0 }
            };
            let broker = |p: &str| ["kafka", "kafka-link", "redis", "nats", "s3"].contains(&p);
            format!("{:.2} / {:.2} / {:.2}", ms(&|p| p.starts_with("node")), ms(&|p| p == "mongodb"), ms(&broker))
        }),
        num("seq clashes / msg", &|m| if m.server.acks > 0 { m.server.seq_clashes as f64 / m.server.acks as f64 } else { 0.0 }, &|v| {
            format!("{v:.2}")
        }),
        num("head reads / msg", &|m| if m.server.acks > 0 { m.server.head_reads as f64 / m.server.acks as f64 } else { 0.0 }, &|v| {
            format!("{v:.2}")
        }),
        num("from history (%)", &|m| m.server.history_share().unwrap_or(0.0) * 100.0, &|v| format!("{v:.1}")),
        text("fan-out re-opens / producer resets", &|m| format!("{} / {}", m.server.fanout_reopens, m.server.kafka_producer_resets)),
        text("backend: insert → node p50/p99 (≤, per node)", &|m| stages(m, |s| &s.insert_to_fanout)),
        text("server: node → socket p50/p99 (≤, per node)", &|m| stages(m, |s| &s.fanout_to_socket)),
        text("checks", &|m| {
            let failed = m.failed_checks().count();
            let off = m.checks.iter().filter(|c| c.off.is_some()).count();
            let off = if off > 0 { format!(", {off} off") } else { String::new() };
            if failed == 0 { format!("PASS ({}{off})", m.checks.len()) } else { format!("FAIL ({failed} of {}{off})", m.checks.len()) }
        }),
    ]
}

/// Per node, a stage histogram's p50/p99 bucket bounds: `n0 1ms/4ms  n1 …`.
fn stages(m: &ModeReport, pick: impl Fn(&super::NodeStages) -> &super::StageHistogram) -> String {
    let show = |s: Option<f64>| match s {
        None => "-".to_owned(),
        Some(v) if v.is_infinite() => "inf".to_owned(),
        Some(v) => fmt_us((v * 1e6) as u64),
    };
    let parts: Vec<String> = m
        .server
        .stages
        .iter()
        .map(|n| {
            let h = pick(n);
            format!("n{} {}/{}", n.node, show(h.quantile_le(0.5)), show(h.quantile_le(0.99)))
        })
        .collect();
    if parts.is_empty() { "-".to_owned() } else { parts.join("  ") }
}

/// The terminal summary: the table (rows that are zeros in every mode
/// folded away unless `verbose`), then per mode the failed checks and why,
/// the passed ones in a line, the ones turned off, the faults, the verdict.
pub fn render(report: &RunReport, verbose: bool) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    let two = report.modes.len() == 2;
    let mut header = vec![report.scenario.clone()];
    header.extend(report.modes.iter().map(|m| m.mode.to_string()));
    if two {
        header.push(format!("Δ {} vs {}", report.modes[1].mode, report.modes[0].mode));
    }
    table.set_header(header);
    let mut folded = 0;
    for row in rows(report) {
        if !verbose && row.values.iter().all(|v| is_zero(v)) {
            folded += 1;
            continue;
        }
        let diff = fmt_diff(row.diff_percent());
        let mut cells = vec![row.label.to_owned()];
        cells.extend(row.values);
        if two {
            cells.push(diff);
        }
        table.add_row(cells);
    }
    let mut out = table.to_string();
    out.push('\n');
    if folded > 0 {
        out.push_str(&format!("({folded} rows of zeros folded away; --verbose shows them)\n"));
    }
    for m in &report.modes {
        if let Some(warning) = generator_warning(m) {
            out.push_str(&format!("{warning}\n"));
        }
        for c in m.failed_checks() {
            out.push_str(&format!("FAILED {}: {} — {}\n", m.mode, c.name, c.detail));
        }
        for cause in &m.causes {
            out.push_str(&format!("why    {}: {cause}\n", m.mode));
        }
        let passed: Vec<&str> = m.checks.iter().filter(|c| c.passed && c.off.is_none()).map(|c| c.name.as_str()).collect();
        if !passed.is_empty() {
            out.push_str(&format!("passed {}: {}\n", m.mode, passed.join(", ")));
        }
        for c in m.checks.iter().filter(|c| c.off.is_some()) {
            out.push_str(&format!("off    {}: {} — {}\n", m.mode, c.name, c.detail));
        }
    }
    out.push_str(&faults_table(report));
    if report.any_compat() {
        out.push_str(&format!("note: {COMPAT_WARNING}\n"));
    }
    out.push_str(if report.passed { "result: PASS\n" } else { "result: FAIL\n" });
    out
}

/// A cell that says nothing happened: 0, 0.0, 0.00, "-" or "0 / 0 / ...".
fn is_zero(cell: &str) -> bool {
    cell.split(" / ").all(|v| {
        let v = v.trim();
        v == "-" || (!v.is_empty() && v.chars().all(|c| c == '0' || c == '.'))
    })
}

/// The warning every report format prints when the generator fell behind.
pub fn generator_warning(m: &ModeReport) -> Option<String> {
    m.generator.behind.then(|| {
        format!(
            "WARNING {}: the load generator fell behind ({}); latency and throughput understate the system under test",
            m.mode,
            m.generator.why.join("; ")
        )
    })
}

/// Rows of the per-fault table: shared by the terminal, Markdown and HTML.
pub fn fault_rows(report: &RunReport) -> Vec<[String; 7]> {
    let mut rows = Vec::new();
    for m in &report.modes {
        for f in &m.faults {
            rows.push([
                m.mode.to_string(),
                format!("{}{}", f.action, f.node.map_or(String::new(), |n| format!(" node {n}"))),
                format!("{:.1}s", f.at_s),
                format!("{}ms", f.duration_ms),
                f.recovery_ms.map_or("never".to_owned(), |ms| format!("{ms}ms")),
                format!("{} (>{})", f.delayed, fmt_us(f.baseline_p99_us)),
                fmt_us(f.max_delivery_us),
            ]);
        }
    }
    rows
}

/// Rows of the findings table, shared by the Markdown and HTML reports:
/// per mode, one row per kind and detail (numbers in the detail aside),
/// with how many of the listed findings it holds and three examples named
/// as the system saw them (the wire id, the client and its node); at most
/// `groups_per_mode` rows a mode.
pub fn finding_rows(report: &RunReport, groups_per_mode: usize) -> Vec<[String; 5]> {
    let mut rows = Vec::new();
    for m in &report.modes {
        // (kind, detail shape) → (count, first detail, examples), in first-seen order.
        type Group = ((crate::check::FindingKind, String), (usize, String, Vec<String>));
        let mut groups: Vec<Group> = Vec::new();
        for f in &m.findings {
            // Each run of digits stands for any number.
            let mut shape = String::with_capacity(f.detail.len());
            for c in f.detail.chars() {
                if !c.is_ascii_digit() {
                    shape.push(c);
                } else if !shape.ends_with('#') {
                    shape.push('#');
                }
            }
            let key = (f.kind, shape);
            let i = match groups.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None if groups.len() < groups_per_mode => {
                    groups.push((key, (0, f.detail.clone(), Vec::new())));
                    groups.len() - 1
                }
                None => continue,
            };
            let (count, _, examples) = &mut groups[i].1;
            *count += 1;
            if examples.len() < 3 {
                examples.push(example(f, &m.room_names));
            }
        }
        for ((kind, _), (count, detail, examples)) in groups {
            let total = m.count(kind);
            let of = if total as usize > count { format!("{count} listed of {total}") } else { count.to_string() };
            rows.push([m.mode.to_string(), kind.as_str().to_owned(), of, examples.join("; "), detail]);
        }
    }
    rows
}

/// One finding as the system saw it: the message's wire id, its room's
/// name and seq, the client and its node, when it was observed.
fn example(f: &crate::check::Finding, rooms: &std::collections::BTreeMap<u32, String>) -> String {
    let mut parts = Vec::new();
    if let Some(msg) = f.msg {
        parts.push(crate::message::wire_id(msg));
    }
    if let Some(name) = f.room.and_then(|r| rooms.get(&r)) {
        parts.push(format!("in `{name}`"));
    }
    if let Some(seq) = f.seq.filter(|s| *s > 0) {
        parts.push(format!("seq {seq}"));
    }
    if let Some(c) = f.client {
        parts.push(format!("client {c}{}", f.node.map_or_else(String::new, |n| format!(" (node {n})"))));
    }
    if let Some(t) = f.observed_ns {
        parts.push(format!("at {}", fmt_us(t / 1_000)));
    }
    if parts.is_empty() { "-".to_owned() } else { parts.join(", ") }
}

pub const FINDING_HEADER: [&str; 5] = ["mode", "kind", "findings", "examples (wire id, room, client, node, when)", "detail"];

pub const FAULT_HEADER: [&str; 7] =
    ["mode", "fault", "at", "lasted", "all receiving again", "msgs delayed (> pre-fault p99)", "max delivery"];

fn faults_table(report: &RunReport) -> String {
    let rows = fault_rows(report);
    if rows.is_empty() {
        return String::new();
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(FAULT_HEADER);
    for row in rows {
        table.add_row(row);
    }
    format!("{table}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difference_is_relative_to_the_first_mode() {
        let row = Row { label: "x", values: vec![], numbers: Some(vec![10.0, 15.0]) };
        assert_eq!(row.diff_percent(), Some(50.0));
        assert_eq!(fmt_diff(row.diff_percent()), "+50.0%");
        let zero = Row { label: "x", values: vec![], numbers: Some(vec![0.0, 3.0]) };
        assert_eq!(zero.diff_percent(), None);
    }

    /// Findings that differ only in their message or numbers make one row:
    /// its count (of how many in all) and three examples by wire id.
    #[test]
    fn findings_are_grouped_by_kind_and_detail_with_examples() {
        use crate::check::{Finding, FindingKind};
        let lost = (0..30u64)
            .map(|i| Finding::new(FindingKind::Lost, "never delivered to a subscriber that owed it").msg(i + 7).room(2).client(5, 1));
        let dup = [2, 13].map(|n| Finding::new(FindingKind::Duplicated, format!("delivery #{n} of the same message")).msg(9));
        let mut mode =
            ModeReport { mode: crate::scenario::Mode::Changestream.into(), findings: lost.chain(dup).collect(), ..Default::default() };
        mode.findings_by_kind.insert(FindingKind::Lost, 688);
        mode.room_names.insert(2, "lobby".into());
        mode.findings_by_kind.insert(FindingKind::Duplicated, 2);
        let report = RunReport { modes: vec![mode], ..Default::default() };
        let rows = finding_rows(&report, 20);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!((rows[0][1].as_str(), rows[0][2].as_str()), ("lost", "30 listed of 688"));
        assert_eq!(rows[0][3], "m7, in `lobby`, client 5 (node 1); m8, in `lobby`, client 5 (node 1); m9, in `lobby`, client 5 (node 1)");
        assert_eq!((rows[1][1].as_str(), rows[1][2].as_str(), rows[1][4].as_str()), ("duplicated", "2", "delivery #2 of the same message"));
        assert_eq!(finding_rows(&report, 1).len(), 1, "at most this many rows a mode");
    }

    #[test]
    fn rows_of_zeros_are_folded_unless_verbose() {
        for zero in ["0", "0.00", "0.0", "-", "0 / 0 / 0", "0 / 0"] {
            assert!(is_zero(zero), "{zero}");
        }
        for not in ["1", "0 / 1 / 0", "0.01", "PASS", "", "10"] {
            assert!(!is_zero(not), "{not}");
        }
        let report = RunReport { modes: vec![ModeReport::default()], ..Default::default() };
        let (short, long) = (render(&report, false), render(&report, true));
        assert!(short.contains("rows of zeros folded away") && !long.contains("folded"), "{short}");
        assert!(short.lines().count() < long.lines().count());
        assert!(long.contains("intruder attempts refused / unrefused"));
    }
}
