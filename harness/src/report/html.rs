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
fn svg_chart(draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        draw(&root).map_err(|e| anyhow::anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(svg)
}

/// A legend entry: a short line in the series' colour.
fn legend(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
}

fn percentile_chart(modes: &[ModeReport]) -> anyhow::Result<String> {
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
            chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?.label(mode.mode.to_string()).legend(legend(color));
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
        Ok(())
    })
}

/// A named line: its label and how it reads y from a bucket.
type Series<'a> = (&'a str, fn(&super::TimelineBucket) -> f64);

/// A per-second series for every mode: `value` picks the y of a bucket.
fn timeline_chart(modes: &[ModeReport], title: &str, y_desc: &str, series: &[Series]) -> anyhow::Result<String> {
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
            let from = shade_fault(&mut chart, f, max_y * 1.1)?;
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

/// A shaded band while a fault lasted (seconds from the start of
/// sending); returns where it began.
fn shade_fault<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>,
    f: &super::FaultFigures,
    top: f64,
) -> Result<f64, DrawingAreaErrorKind<DB::ErrorType>> {
    let (from, to) = (f.at_s, f.at_s + (f.duration_ms as f64 / 1000.0).max(0.05));
    chart.draw_series(std::iter::once(Rectangle::new([(from, 0.0), (to, top)], RGBColor(255, 200, 120).mix(0.35).filled())))?;
    Ok(from)
}

/// Owed deliveries acked but not yet delivered, over time, per mode
/// (Jepsen's "unseen"): a healthy run keeps it near zero between bursts;
/// a stall or a loss leaves it up.
fn unseen_chart(modes: &[ModeReport]) -> anyhow::Result<String> {
    svg_chart(|root| {
        let max_t = modes.iter().flat_map(|m| m.unseen.iter().map(|p| p.0 as f64 / 1000.0)).fold(1.0, f64::max);
        let max_y = modes.iter().flat_map(|m| m.unseen.iter().map(|p| p.1 as f64)).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(root)
            .caption("Unseen: owed deliveries acked but not yet delivered", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..max_t, 0f64..max_y * 1.1)?;
        chart.configure_mesh().x_desc("seconds from start of sending").y_desc("(message, subscriber) pairs").draw()?;
        for f in modes.first().map_or(&[][..], |m| &m.faults[..]) {
            shade_fault(&mut chart, f, max_y * 1.1)?;
        }
        for (i, mode) in modes.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points: Vec<(f64, f64)> = mode.unseen.iter().map(|&(ms, n)| (ms as f64 / 1000.0, n as f64)).collect();
            chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?.label(mode.mode.to_string()).legend(legend(color));
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
        Ok(())
    })
}

/// CPU per process over a mode's run (percent of one core).
fn resource_chart(mode: &ModeReport) -> anyhow::Result<String> {
    svg_chart(|root| {
        let max_t = mode.resource_samples.iter().map(|s| s.t_s).fold(1.0, f64::max);
        let max_y = mode.resource_samples.iter().map(|s| s.cpu_percent).fold(10.0, f64::max);
        let mut chart = ChartBuilder::on(root)
            .caption(format!("CPU by process, {} (percent of one core)", mode.mode), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..max_t, 0f64..max_y * 1.1)?;
        chart.configure_mesh().x_desc("seconds").y_desc("CPU %").draw()?;
        for (i, summary) in mode.resources.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points: Vec<(f64, f64)> =
                mode.resource_samples.iter().filter(|s| s.process == summary.process).map(|s| (s.t_s, s.cpu_percent)).collect();
            chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?.label(summary.process.clone()).legend(legend(color));
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
        Ok(())
    })
}

fn chart_or_note(result: anyhow::Result<String>) -> String {
    match result {
        Ok(svg) => format!("<figure>{svg}</figure>"),
        Err(e) => format!("<p class=\"warn\">chart could not be drawn: {}</p>", escape(&format!("{e:#}"))),
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
    for m in &report.modes {
        if let Some(warning) = super::table::generator_warning(m) {
            html.push_str(&format!("<p class=\"warn\"><strong>{}</strong></p>\n", escape(&warning)));
        }
        for cause in &m.causes {
            html.push_str(&format!("<p class=\"warn\"><strong>Why</strong> ({}): {}</p>\n", escape(m.mode.as_str()), escape(cause)));
        }
    }
    let two = report.modes.len() == 2;
    html.push_str("<h2>Side by side</h2>\n<table><tr><th>metric</th>");
    for m in &report.modes {
        html.push_str(&format!("<th>{}</th>", escape(m.mode.as_str())));
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
    if report.modes.iter().any(|m| !m.unseen.is_empty()) {
        html.push_str(&chart_or_note(unseen_chart(&report.modes)));
    }
    html.push_str("<h2>Throughput</h2>\n");
    html.push_str(&chart_or_note(timeline_chart(
        &report.modes,
        "Throughput over time (1 s buckets)",
        "per second",
        &[("acked", |b| b.acked as f64), ("deliveries", |b| b.delivered as f64)],
    )));
    html.push_str("<h2>Resources</h2>\n");
    for m in &report.modes {
        if !m.resource_samples.is_empty() {
            html.push_str(&chart_or_note(resource_chart(m)));
        }
    }
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
                escape(m.mode.as_str()),
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

/// `sweep.html`: per mode and series, delivery p50 and p99 against the
/// *achieved* rate (log latency), each point's repeats as min–max bars,
/// untrusted points hollow, the knee marked; then the sweep's table.
pub fn render_sweep(report: &super::sweep::SweepReport) -> String {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>chatbench sweep</title>\n<style>\
         body{font-family:sans-serif;margin:2em;max-width:1000px;color:#222}pre{font-size:12px}\
         .warn{background:#fff8c5;border:1px solid #d4a72c;padding:.5em}figure{margin:1em 0}\
         </style></head><body>\n",
    );
    html.push_str(&format!("<h1>chatbench sweep: {}</h1>\n", escape(&report.scenario)));
    html.push_str(&format!(
        "<p>{} repeat(s) per point. Knee: the highest offered rate with achieved ≥ {:.0}% of it, delivery p99 ≤ {}, every check passing and the generator keeping up.</p>\n",
        report.repeat,
        report.knee_rule.min_achieved_share * 100.0,
        escape(&super::fmt_us(report.knee_rule.max_p99_us))
    ));
    if report.points.iter().flat_map(|p| &p.modes).any(|m| !m.trusted) {
        html.push_str("<p class=\"warn\">Hollow points: the load generator fell behind there or at a lower rate; they measure the harness, not the system, and do not count toward the knee.</p>\n");
    }
    html.push_str(&chart_or_note(sweep_chart(report)));
    html.push_str(&format!("<h2>Points</h2>\n<pre>{}</pre>\n", escape(&super::sweep::render_table(report))));
    html.push_str("</body></html>\n");
    html
}

fn sweep_chart(report: &super::sweep::SweepReport) -> anyhow::Result<String> {
    // One curve per (mode, series): points as (achieved, p50, p99 spreads).
    type Curve = (String, Vec<(super::sweep::Spread, super::sweep::Spread, super::sweep::Spread, bool)>);
    let mut curves: Vec<Curve> = Vec::new();
    for p in &report.points {
        let series: Vec<String> =
            p.values.iter().filter(|(q, _)| *q != super::sweep::Param::Rate).map(|(q, v)| format!("{}={v}", q.name())).collect();
        for m in &p.modes {
            let name = if series.is_empty() { m.mode.to_string() } else { format!("{} {}", m.mode, series.join(",")) };
            let entry = (m.achieved_per_s, m.p50_us, m.p99_us, m.trusted);
            match curves.iter_mut().find(|(n, _)| *n == name) {
                Some((_, pts)) => pts.push(entry),
                None => curves.push((name, vec![entry])),
            }
        }
    }
    for (_, pts) in &mut curves {
        pts.sort_by(|a, b| a.0.median.total_cmp(&b.0.median));
    }
    svg_chart(|root| {
        let max_x = curves.iter().flat_map(|(_, p)| p.iter().map(|e| e.0.max)).fold(1.0, f64::max);
        let max_ms = curves.iter().flat_map(|(_, p)| p.iter().map(|e| e.2.max / 1000.0)).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(root)
            .caption("Delivery latency against achieved throughput", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..max_x * 1.1, (0.1f64..max_ms * 2.0).log_scale())?;
        chart.configure_mesh().x_desc("achieved msgs/s (acked)").y_desc("delivery latency (ms)").draw()?;
        for (i, (name, pts)) in curves.iter().enumerate() {
            for (j, (label, pick)) in [("p50", 1usize), ("p99", 2usize)].into_iter().enumerate() {
                let color = PALETTE[(i * 2 + j) % PALETTE.len()];
                let y = |e: &(super::sweep::Spread, super::sweep::Spread, super::sweep::Spread, bool)| if pick == 1 { e.1 } else { e.2 };
                let line: Vec<(f64, f64)> = pts.iter().map(|e| (e.0.median, (y(e).median / 1000.0).max(0.1))).collect();
                chart.draw_series(LineSeries::new(line, color.stroke_width(2)))?.label(format!("{name} {label}")).legend(legend(color));
                for e in pts {
                    let (x, s) = (e.0, y(e));
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(x.median, (s.min / 1000.0).max(0.1)), (x.median, (s.max / 1000.0).max(0.1))],
                        color.stroke_width(1),
                    )))?;
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(x.min, (s.median / 1000.0).max(0.1)), (x.max, (s.median / 1000.0).max(0.1))],
                        color.stroke_width(1),
                    )))?;
                    let style = if e.3 { color.filled() } else { color.stroke_width(1) };
                    chart.draw_series(std::iter::once(Circle::new((x.median, (s.median / 1000.0).max(0.1)), 4, style)))?;
                }
            }
        }
        for k in &report.knees {
            let Some(rate) = k.rate else { continue };
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(rate, 0.1), (rate, max_ms * 2.0)],
                RGBColor(120, 120, 120).stroke_width(1),
            )))?;
            chart.draw_series(std::iter::once(Text::new(format!("knee {} {rate:.0}/s", k.mode), (rate, max_ms), ("sans-serif", 12))))?;
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
        Ok(())
    })
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
