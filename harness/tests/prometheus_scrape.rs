//! `chatbench run --metrics-listen` scraped by a real Prometheus (Debian's
//! 2.42, installed pinned by `ci/setup prometheus`), not a mock of the
//! format: while a run lasts, Prometheus must take the endpoint's
//! OpenMetrics text and store the counters under their names and labels,
//! rising to at most what the report counted at the end.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_chatbench");

/// Kills the process when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file());
    found.expect("prometheus is missing: run `ci/setup prometheus` (the README's test command does)")
}

fn scenario(dir: &Path) -> PathBuf {
    let text = "name: prom\ntopology:\n  nodes: 2\n  provider: compat\nworkload:\n  rooms: 2\n  subscribers_per_room: 2\n  \
                senders_per_room: 1\n  load: {open: {rate_per_s: 40}}\n  duration: 8s\n  drain_timeout: 5s\n";
    let path = dir.join("prom.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Prometheus's HTTP API: the first value of an instant query, now or at
/// `at` (seconds since the epoch); None: no series.
fn query_at(base: &str, promql: &str, at: Option<f64>) -> Option<f64> {
    let time = at.map(|t| format!("&time={t}")).unwrap_or_default();
    let url = format!("{base}/api/v1/query?query={}{time}", form_urlencoded::byte_serialize(promql.as_bytes()).collect::<String>());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    let body: serde_json::Value = rt.block_on(async { reqwest::get(&url).await.ok()?.json().await.ok() })?;
    let result = body["data"]["result"].as_array()?.first()?.clone();
    result["value"][1].as_str()?.parse().ok()
}

fn query(base: &str, promql: &str) -> Option<f64> {
    query_at(base, promql, None)
}

#[test]
fn a_real_prometheus_scrapes_the_live_counters_during_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut run = Command::new(BIN)
        .args(["run", scenario(dir.path()).to_str().unwrap(), "--quiet", "--metrics-listen", "127.0.0.1:0", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(run.stderr.take().unwrap());
    let mut run = Killed(run);
    let started = std::time::SystemTime::now();
    let mut line = String::new();
    let target = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "chatbench said no metrics address");
        if let Some(url) = line.trim().strip_prefix("metrics: http://") {
            break url.trim_end_matches("/metrics").to_owned();
        }
    };
    // Keep reading what it says, so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    // Prometheus on a port outside the ephemeral range, scraping every second.
    let port = chatbench::process::stable_port().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\nscrape_configs:\n  - job_name: chatbench\n    static_configs: [{{targets: [\"{target}\"]}}]\n"
        ),
    )
    .unwrap();
    let prometheus = Killed(
        Command::new(prometheus())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    // The run ends on its own; meanwhile Prometheus scrapes it.
    let status = run.0.wait().unwrap();
    let ended = std::time::SystemTime::now();
    let log = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "the run passes");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let counts = &report["modes"][0]["counts"];
    let (sent, acked) = (counts["sent"].as_f64().unwrap(), counts["acked"].as_f64().unwrap());
    // What Prometheus stored (queried until its head block answers).
    let labels = "{job=\"chatbench\",scenario=\"prom\",mode=\"changestream\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    let (scraped_acks, scraped_sends) = loop {
        let acks = query(&base, &format!("max_over_time(chatbench_acks_total{labels}[10m])"));
        let sends = query(&base, &format!("max_over_time(chatbench_sends_total{labels}[10m])"));
        if let (Some(a), Some(s)) = (acks, sends) {
            break (a, s);
        }
        assert!(Instant::now() < deadline, "Prometheus stored no chatbench series; its log:\n{}", log());
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(scraped_acks > 0.0 && scraped_acks <= acked, "acks: scraped {scraped_acks}, report {acked}");
    assert!(scraped_sends >= scraped_acks && scraped_sends <= sent, "sends: scraped {scraped_sends}, report {sent}");
    let scrapes = query(&base, "count_over_time(up{job=\"chatbench\"}[10m])").unwrap_or(0.0);
    assert!(scrapes >= 3.0, "Prometheus scraped the run {scrapes} times");
    // Every panel of the shipped Grafana dashboard, at a moment of the
    // run (2 s before it ended), returns a series from what was stored.
    let at = ended.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() - 2.0;
    assert!(at > started.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64());
    let dashboard: serde_json::Value = serde_json::from_str(include_str!("../../examples/grafana/chatbench-live.json")).unwrap();
    for target in dashboard["panels"].as_array().unwrap().iter().flat_map(|p| p["targets"].as_array().unwrap().iter()) {
        let expr = target["expr"].as_str().unwrap().replace("$scenario", "prom").replace("$mode", "changestream");
        let value = query_at(&base, &expr, Some(at));
        assert!(value.is_some(), "the dashboard's {expr:?} returned nothing at {at}; Prometheus's log:\n{}", log());
    }
    drop(prometheus);
}
