//! `report.html`: one self-contained page (no scripts, no external files,
//! works offline) with SVG plots drawn by plotters — delivery-latency
//! percentile curves per mode (log scale), latency and throughput over time
//! in 1 s buckets per mode — the side-by-side table and the findings.

use super::{COMPAT_WARNING, ModeReport, RunReport};
use plotters::coord::Shift;
use plotters::prelude::*;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 380;
const PALETTE: [RGBColor; 4] = [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];
/// Percentile curves stop at five nines (p100 would be infinitely far right).
const MAX_NINES: f64 = 5.0;

/// An HTML table of `header` and `rows`, every cell escaped.
fn push_table<const N: usize>(html: &mut String, header: &[&str; N], rows: &[[String; N]]) {
    html.push_str("<table><tr>");
    for h in header {
        html.push_str(&format!("<th>{}</th>", escape(h)));
    }
    html.push_str("</tr>\n");
    for row in rows {
        html.push_str("<tr>");
        for cell in row {
            html.push_str(&format!("<td>{}</td>", escape(cell)));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// x position of a percentile on a "nines" axis: 90 → 1, 99 → 2, 99.9 → 3.
fn nines(percentile: f64) -> f64 {
    let rest = (100.0 - percentile) / 100.0;
    if rest <= 0.0 { MAX_NINES } else { (-rest.log10()).min(MAX_NINES) }
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draw one chart on a white SVG canvas and return the SVG text.
fn svg_chart(draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(&root).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// A legend entry: a short line in the series' colour.
fn legend(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
}

fn percentile_chart(modes: &[ModeReport]) -> Result<String, String> {
    svg_chart(|root| {
        let max_ms = modes.iter().flat_map(|m| m.delivery_curve.iter().map(|p| p.1 as f64 / 1000.0)).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(root)
            .caption("Delivery latency by percentile (log scale)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..MAX_NINES, (0.01f64..max_ms * 1.5).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_labels(6)
            .x_label_formatter(&|x| match x.round() as i32 {
                0 => "0%".into(),
                1 => "90%".into(),
                2 => "99%".into(),
                3 => "99.9%".into(),
                4 => "99.99%".into(),
                _ => "99.999%".into(),
            })
            .draw()?;
        for (i, mode) in modes.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points: Vec<(f64, f64)> = mode.delivery_curve.iter().map(|&(p, us)| (nines(p), (us as f64 / 1000.0).max(0.01))).collect();
            chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?.label(mode.mode.clone()).legend(legend(color));
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
        Ok(())
    })
}

/// A named line: its label and how it reads y from a bucket.
type Series<'a> = (&'a str, fn(&super::TimelineBucket) -> f64);

/// A per-second series for every mode: `value` picks the y of a bucket.
fn timeline_chart(modes: &[ModeReport], title: &str, y_desc: &str, series: &[Series]) -> Result<String, String> {
    svg_chart(|root| {
        let max_t = modes.iter().map(|m| m.timeline.len()).max().unwrap_or(1).max(1) as f64;
        let max_y = modes.iter().flat_map(|m| m.timeline.iter().flat_map(|b| series.iter().map(move |(_, f)| f(b)))).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..max_t, 0f64..max_y * 1.1)?;
        chart.configure_mesh().x_desc("seconds from start of sending").y_desc(y_desc).draw()?;
        // Faults: a shaded band while each lasted and a line where it began.
        for f in modes.first().map_or(&[][..], |m| &m.faults[..]) {
            let (from, to) = (f.at_s, f.at_s + (f.duration_ms as f64 / 1000.0).max(0.05));
            chart.draw_series(std::iter::once(Rectangle::new(
                [(from, 0.0), (to, max_y * 1.1)],
                RGBColor(255, 200, 120).mix(0.35).filled(),
            )))?;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(from, 0.0), (from, max_y * 1.1)],
                RGBColor(230, 120, 0).stroke_width(1),
            )))?;
            chart.draw_series(std::iter::once(Text::new(f.action.clone(), (from, max_y * 1.05), ("sans-serif", 12))))?;
        }
        for (i, mode) in modes.iter().enumerate() {
            for (j, (name, value)) in series.iter().enumerate() {
                let color = PALETTE[(i * series.len() + j) % PALETTE.len()];
                let points: Vec<(f64, f64)> = mode.timeline.iter().map(|b| (b.t_s as f64 + 0.5, value(b))).collect();
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                    .label(format!("{} {name}", mode.mode))
                    .legend(legend(color));
            }
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
        Ok(())
    })
}

fn chart_or_note(result: Result<String, String>) -> String {
    match result {
        Ok(svg) => format!("<figure>{svg}</figure>"),
        Err(e) => format!("<p class=\"warn\">chart could not be drawn: {}</p>", escape(&e)),
    }
}

pub fn render(report: &RunReport) -> String {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>chatbench report</title>\n<style>\
         body{font-family:sans-serif;margin:2em;max-width:1000px;color:#222}\
         table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
         td:first-child,th:first-child{text-align:left}.pass{color:#1a7f37}.off{color:#9a6700}.fail{color:#cf222e;font-weight:bold}\
         .warn{background:#fff8c5;border:1px solid #d4a72c;padding:.5em}figure{margin:1em 0}\
         </style></head><body>\n",
    );
    html.push_str(&format!("<h1>chatbench: {}</h1>\n", escape(&report.scenario)));
    if !report.description.is_empty() {
        html.push_str(&format!("<p>{}</p>\n", escape(&report.description)));
    }
    let verdict = if report.passed { "<span class=\"pass\">PASS</span>" } else { "<span class=\"fail\">FAIL</span>" };
    html.push_str(&format!("<p>Result: {verdict} — seed {}, started {}</p>\n", report.seed, escape(&report.started_at)));
    if report.any_compat() {
        html.push_str(&format!("<p class=\"warn\">{}.</p>\n", escape(COMPAT_WARNING)));
    }
    let two = report.modes.len() == 2;
    html.push_str("<h2>Side by side</h2>\n<table><tr><th>metric</th>");
    for m in &report.modes {
        html.push_str(&format!("<th>{}</th>", escape(&m.mode)));
    }
    if two {
        html.push_str("<th>Δ</th>");
    }
    html.push_str("</tr>\n");
    for row in super::table::rows(report) {
        let diff = super::table::fmt_diff(row.diff_percent());
        html.push_str(&format!("<tr><td>{}</td>", row.label));
        for v in &row.values {
            html.push_str(&format!("<td>{}</td>", escape(v)));
        }
        if two {
            html.push_str(&format!("<td>{diff}</td>"));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n<h2>Latency</h2>\n");
    html.push_str(&chart_or_note(percentile_chart(&report.modes)));
    html.push_str(&chart_or_note(timeline_chart(
        &report.modes,
        "Delivery latency over time (1 s buckets)",
        "latency (ms)",
        &[("p50", |b| b.delivery_p50_us as f64 / 1000.0), ("p99", |b| b.delivery_p99_us as f64 / 1000.0)],
    )));
    html.push_str("<h2>Throughput</h2>\n");
    html.push_str(&chart_or_note(timeline_chart(
        &report.modes,
        "Throughput over time (1 s buckets)",
        "per second",
        &[("acked", |b| b.acked as f64), ("deliveries", |b| b.delivered as f64)],
    )));
    let faults = super::table::fault_rows(report);
    if !faults.is_empty() {
        html.push_str("<h2>Faults</h2>\n");
        push_table(&mut html, &super::table::FAULT_HEADER, &faults);
    }
    html.push_str("<h2>Checks</h2>\n<table><tr><th>mode</th><th>check</th><th>result</th><th>detail</th></tr>\n");
    for m in &report.modes {
        for c in &m.checks {
            let (class, label) = match (&c.off, c.passed) {
                (Some(_), _) => ("off", "off"),
                (None, true) => ("pass", "pass"),
                (None, false) => ("fail", "FAIL"),
            };
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{label}</td><td>{}</td></tr>\n",
                escape(&m.mode),
                escape(&c.name),
                escape(&c.detail)
            ));
        }
    }
    html.push_str("</table>\n<h2>Findings</h2>\n");
    let findings = super::table::finding_rows(report, 200);
    if findings.is_empty() {
        html.push_str("<p class=\"pass\">No findings.</p>\n");
    } else {
        push_table(&mut html, &super::table::FINDING_HEADER, &findings);
    }
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis_places_percentiles() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), MAX_NINES);
        assert_eq!(nines(0.0), 0.0);
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<a href=\"x\">&</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;");
    }
}
