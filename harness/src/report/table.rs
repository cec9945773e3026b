//! The terminal table: one column per mode, side by side.

use super::{COMPAT_WARNING, RunReport, fmt_us};
use crate::check::FindingKind;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

/// Rows as (label, one value per mode); shared with the Markdown report.
pub fn rows(report: &RunReport) -> Vec<(String, Vec<String>)> {
    let modes = &report.modes;
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |label: &str, f: &dyn Fn(&super::ModeReport) -> String| {
        rows.push((label.to_owned(), modes.iter().map(f).collect()));
    };
    row("provider", &|m| m.provider.clone());
    row("backend", &|m| {
        if m.backend_is_real {
            m.backend.clone()
        } else {
            format!("{} (compat)", m.backend)
        }
    });
    row("nodes / clients", &|m| {
        format!("{} / {}", m.nodes, m.counts.clients)
    });
    row("sent", &|m| m.counts.sent.to_string());
    row("acked", &|m| m.counts.acked.to_string());
    row("delivered", &|m| m.counts.delivered.to_string());
    row("lost", &|m| m.count(FindingKind::Lost).to_string());
    row("duplicated", &|m| {
        m.count(FindingKind::Duplicated).to_string()
    });
    row("phantom / agreement", &|m| {
        format!(
            "{} / {}",
            m.count(FindingKind::Phantom),
            m.count(FindingKind::Agreement)
        )
    });
    row("order violations", &|m| {
        (m.count(FindingKind::OrderViolation)
            + m.count(FindingKind::SeqConflict)
            + m.count(FindingKind::FifoViolation))
        .to_string()
    });
    row("live ≠ history", &|m| {
        (m.count(FindingKind::HistoryMismatch) + m.count(FindingKind::HistoryGap)).to_string()
    });
    let l = |m: &super::ModeReport, ack: bool| {
        if ack {
            m.latency.ack
        } else {
            m.latency.delivery
        }
    };
    row("ack p50 / p99", &|m| {
        format!(
            "{} / {}",
            fmt_us(l(m, true).p50_us),
            fmt_us(l(m, true).p99_us)
        )
    });
    row("delivery p50", &|m| fmt_us(l(m, false).p50_us));
    row("delivery p99", &|m| fmt_us(l(m, false).p99_us));
    row("delivery p999", &|m| fmt_us(l(m, false).p999_us));
    row("delivery max", &|m| fmt_us(l(m, false).max_us));
    row("msgs/s (acked)", &|m| {
        format!("{:.1}", m.throughput.acked_per_s)
    });
    row("deliveries/s", &|m| {
        format!("{:.1}", m.throughput.delivered_per_s)
    });
    row("checks", &|m| {
        let failed = m.failed_checks().count();
        if failed == 0 {
            format!("PASS ({})", m.checks.len())
        } else {
            format!("FAIL ({failed} of {})", m.checks.len())
        }
    });
    rows
}

pub fn render(report: &RunReport) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    let mut header = vec![report.scenario.clone()];
    header.extend(report.modes.iter().map(|m| m.mode.clone()));
    table.set_header(header);
    for (label, values) in rows(report) {
        let mut cells = vec![label];
        cells.extend(values);
        table.add_row(cells);
    }
    let mut out = table.to_string();
    out.push('\n');
    for m in &report.modes {
        for c in m.failed_checks() {
            out.push_str(&format!("FAILED {}: {} — {}\n", m.mode, c.name, c.detail));
        }
    }
    if report.any_compat() {
        out.push_str(&format!("note: {COMPAT_WARNING}\n"));
    }
    out.push_str(if report.passed {
        "result: PASS\n"
    } else {
        "result: FAIL\n"
    });
    out
}
