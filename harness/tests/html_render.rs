//! `report.html` renders in headless Chromium (Debian's `chromium`, which
//! ci/setup installs): the DOM after load holds the four SVG charts with
//! drawn series (latency by percentile and over time, unseen over time,
//! throughput), and a screenshot is taken.

use chatbench::check::synthetic::{TraceShape, correct_trace};
use chatbench::report::RunReport;
use chatbench::report::evaluate::{Context, evaluate};
use chatbench::scenario::Checks;
use std::process::Command;

fn chromium() -> std::path::PathBuf {
    chatbench::process::which("chromium")
        .or_else(|| chatbench::process::which("chromium-browser"))
        .expect("Debian's chromium is installed (ci/setup chromium installs it: apt-get install chromium)")
}

fn headless(args: &[&str], profile: &std::path::Path) -> std::process::Output {
    Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium runs")
}

#[test]
fn report_html_renders_its_charts_in_headless_chromium() {
    let shape = TraceShape { chatters_per_room: 1, trouble: true, ..TraceShape::plain(3, 2, 3, 400) };
    let modes = chatbench::scenario::Mode::ALL
        .iter()
        .enumerate()
        .map(|(i, mode)| {
            let mut trace = correct_trace(&shape, i as u64);
            trace.meta.mode = (*mode).into();
            trace.meta.provider = "compat".into();
            trace.meta.backend = "synthetic".into();
            trace.meta.nodes = 2;
            evaluate(&trace, &Checks::default(), Context::default())
        })
        .collect();
    let report = RunReport {
        schema_version: chatbench::report::REPORT_SCHEMA_VERSION,
        chatbench_version: "test".into(),
        scenario: "render-test".into(),
        description: "synthetic traces".into(),
        seed: 1,
        started_at: "now".into(),
        passed: true,
        modes,
    };
    let dir = tempfile::tempdir().unwrap();
    report.write_all(dir.path()).unwrap();
    let page = format!("file://{}", dir.path().join("report.html").display());

    let dom = headless(&["--dump-dom", &page], &dir.path().join("profile-dom"));
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom.matches("<svg").count(), 4, "four charts in the rendered DOM");
    for title in ["Delivery latency by percentile", "Delivery latency over time", "Unseen: owed deliveries", "Throughput over time"] {
        assert!(dom.contains(title), "chart {title:?} missing");
    }
    assert!(dom.matches("<polyline").count() >= 2 + 4 + 2 + 4, "every mode's series is drawn");
    assert!(dom.contains("not MongoDB"), "the compat warning is on the page");

    let shot = dir.path().join("report.png");
    let out = headless(&["--window-size=1100,2400", &format!("--screenshot={}", shot.display()), &page], &dir.path().join("profile-shot"));
    let png = std::fs::read(&shot).unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a real screenshot ({} bytes)", png.len());
}
