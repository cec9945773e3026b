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
    for m in &report.modes {
        if let Some(warning) = super::table::generator_warning(m) {
            out.push_str(&format!("> **{warning}**\n\n"));
        }
        for cause in &m.causes {
            out.push_str(&format!("> **Why** (`{}`): {cause}\n\n", m.mode));
        }
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
        out.push_str("\n## Faults\n\n");
        push_table(&mut out, &super::table::FAULT_HEADER, &faults);
    }
    out.push_str("\n## Checks\n\n");
    for m in &report.modes {
        for c in &m.checks {
            let mark = if c.off.is_some() {
                "⏸"
            } else if c.passed {
                "✅"
            } else {
                "❌"
            };
            out.push_str(&format!("- {mark} `{}` {}: {}\n", m.mode, c.name, c.detail));
        }
    }
    let findings = super::table::finding_rows(report, 20);
    if !findings.is_empty() {
        out.push_str("\n## Findings, grouped\n\n");
        push_table(&mut out, &super::table::FINDING_HEADER, &findings);
    }
    out
}

/// A Markdown table of `header` and `rows` (`|` in a cell is escaped).
fn push_table<const N: usize>(out: &mut String, header: &[&str; N], rows: &[[String; N]]) {
    out.push_str(&format!("| {} |\n|{}\n", header.join(" | "), "---|".repeat(N)));
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
}
