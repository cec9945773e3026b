//! `report.md`: the table and the failed checks, for CI job summaries.

use super::{COMPAT_WARNING, RunReport};

pub fn render(report: &RunReport) -> String {
    let mut out = format!("# chatbench: {}\n\n", report.scenario);
    if !report.description.is_empty() {
        out.push_str(&format!("{}\n\n", report.description.trim()));
    }
    out.push_str(&format!("Result: **{}** (seed {})\n\n", if report.passed { "PASS" } else { "FAIL" }, report.seed));
    if report.any_compat() {
        out.push_str(&format!("> **Note:** {COMPAT_WARNING}.\n\n"));
    }
    let two = report.modes.len() == 2;
    out.push_str("| metric |");
    for m in &report.modes {
        out.push_str(&format!(" {} |", m.mode));
    }
    if two {
        out.push_str(" Δ |");
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(report.modes.len() + usize::from(two)));
    out.push('\n');
    for row in super::table::rows(report) {
        let diff = super::table::fmt_diff(row.diff_percent());
        out.push_str(&format!("| {} |", row.label));
        for v in row.values {
            out.push_str(&format!(" {} |", v.replace('|', "\\|")));
        }
        if two {
            out.push_str(&format!(" {diff} |"));
        }
        out.push('\n');
    }
    let faults = super::table::fault_rows(report);
    if !faults.is_empty() {
        out.push_str("\n## Faults\n\n| ");
        out.push_str(&super::table::FAULT_HEADER.join(" | "));
        out.push_str(" |\n|");
        out.push_str(&"---|".repeat(super::table::FAULT_HEADER.len()));
        out.push('\n');
        for row in faults {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
    }
    out.push_str("\n## Checks\n\n");
    for m in &report.modes {
        for c in &m.checks {
            out.push_str(&format!("- {} `{}` {}: {}\n", if c.passed { "✅" } else { "❌" }, m.mode, c.name, c.detail));
        }
    }
    let listed: Vec<_> = report.modes.iter().flat_map(|m| m.findings.iter().take(20).map(move |f| (m, f))).collect();
    if !listed.is_empty() {
        out.push_str(
            "\n## First findings\n\n| mode | kind | room | seq | msg | client | node | detail |\n|---|---|---|---|---|---|---|---|\n",
        );
        for (m, f) in listed {
            let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                m.mode,
                f.kind.as_str(),
                f.room,
                opt(f.seq),
                opt(f.msg),
                opt(f.client.map(u64::from)),
                opt(f.node.map(u64::from)),
                f.detail
            ));
        }
    }
    out
}
