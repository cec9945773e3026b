//! `chatbench run --metrics-listen ADDR`: the clients' live counters, for
//! a Prometheus to scrape at `http://ADDR/metrics` while the run lasts
//! (OpenMetrics text, by the `prometheus-client` crate). The trace stays
//! the record; these are what a dashboard watches meanwhile.
//!
//! Counters (labels `scenario`, `mode`): `chatbench_sends_total`,
//! `chatbench_acks_total`, `chatbench_deliveries_total`,
//! `chatbench_errors_total`, `chatbench_closed_connections_total`,
//! `chatbench_gave_up_clients_total`; gauges `chatbench_outstanding_sends`
//! (sent, not acked yet) and `chatbench_ready_clients` (up at least once).
//! Each mode of a run starts its counters again, under its `mode` label.
//! The endpoint answers from when the run starts until the process ends;
//! between modes it keeps the last mode's figures.
//! `examples/grafana/chatbench-live.json` is a Grafana dashboard of them
//! (its queries are checked against these names here, and run against a
//! real Prometheus in `harness/tests/prometheus_scrape.rs`).

use crate::client::Shared;
use axum::response::IntoResponse;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// What the endpoint reports: the mode being driven, its counters.
#[derive(Debug, Default)]
struct Current {
    labels: Vec<(String, String)>,
    shared: Option<Arc<Shared>>,
}

#[derive(Debug, Clone, Default)]
struct Live(Arc<Mutex<Current>>);

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let current = self.0.lock().expect("the live metrics lock is never held across a panic");
        let Some(shared) = &current.shared else { return Ok(()) };
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let counters = [
            ("sends", "Sends made (resends included)", get(&shared.sent)),
            ("acks", "Sends acked", get(&shared.acked)),
            ("deliveries", "Messages delivered to subscribers", get(&shared.delivered)),
            ("errors", "Error answers to sends", get(&shared.errors)),
            ("closed_connections", "Client connections that closed", get(&shared.closed)),
            ("gave_up_clients", "Clients that gave up for good", get(&shared.gave_up)),
        ];
        for (name, help, value) in counters {
            let metric = ConstCounter::new(value);
            let mut family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(family.encode_family(&current.labels)?)?;
        }
        let gauges = [
            ("outstanding_sends", "Sends not acked yet", get(&shared.outstanding)),
            ("ready_clients", "On-time clients that were up at least once", get(&shared.ready)),
        ];
        for (name, help, value) in gauges {
            let metric = ConstGauge::new(value as i64);
            let mut family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(family.encode_family(&current.labels)?)?;
        }
        Ok(())
    }
}

/// The endpoint, serving until dropped.
pub(crate) struct LiveMetrics {
    live: Live,
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for LiveMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveMetrics").field("addr", &self.addr).finish()
    }
}

impl LiveMetrics {
    /// Bind `addr` (a clear error when it is taken) and serve `/metrics`.
    pub(crate) async fn start(addr: SocketAddr) -> std::io::Result<LiveMetrics> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let live = Live::default();
        let mut registry = Registry::with_prefix("chatbench");
        registry.register_collector(Box::new(live.clone()));
        let registry = Arc::new(registry);
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move {
                    let mut text = String::new();
                    match prometheus_client::encoding::text::encode(&mut text, &registry) {
                        Ok(()) => {
                            ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                                .into_response()
                        }
                        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                    }
                }
            }),
        );
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "live metrics endpoint stopped");
            }
        });
        Ok(LiveMetrics { live, addr, server })
    }

    /// From now on report `shared`, labelled with the scenario and mode.
    pub(crate) fn watch(&self, scenario: &str, mode: &str, shared: Arc<Shared>) {
        let mut current = self.live.0.lock().expect("the live metrics lock is never held across a panic");
        current.labels = vec![("scenario".to_owned(), scenario.to_owned()), ("mode".to_owned(), mode.to_owned())];
        current.shared = Some(shared);
    }
}

impl Drop for LiveMetrics {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DASHBOARD: &str = include_str!("../../examples/grafana/chatbench-live.json");

    /// The endpoint serves the live counters with their labels, parsed
    /// here as a scraper would (by name and labels).
    #[tokio::test]
    async fn the_endpoint_serves_the_counters_of_the_mode_being_driven() {
        let metrics = LiveMetrics::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let url = format!("http://{}/metrics", metrics.addr);
        let empty = reqwest::get(&url).await.unwrap().text().await.unwrap();
        assert_eq!(empty.trim(), "# EOF", "nothing before a mode is driven");
        let shared = Arc::new(Shared::new(1, &[], std::time::Duration::from_secs(1)));
        shared.sent.store(7, Ordering::Relaxed);
        shared.acked.store(5, Ordering::Relaxed);
        shared.outstanding.store(2, Ordering::Relaxed);
        metrics.watch("smoke", "changestream", shared.clone());
        let response = reqwest::get(&url).await.unwrap();
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
        let text = response.text().await.unwrap();
        for line in [
            "chatbench_sends_total{scenario=\"smoke\",mode=\"changestream\"} 7",
            "chatbench_acks_total{scenario=\"smoke\",mode=\"changestream\"} 5",
            "chatbench_outstanding_sends{scenario=\"smoke\",mode=\"changestream\"} 2",
            "# TYPE chatbench_deliveries counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        // The shipped Grafana dashboard queries exactly what is exported.
        let exported: std::collections::BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| match l.split_once(' ') {
                Some((name, "counter")) => format!("{name}_total"),
                Some((name, _)) => name.to_owned(),
                None => l.to_owned(),
            })
            .collect();
        let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
        let names = regex::Regex::new("chatbench_[a-z_]+").unwrap();
        let queried: std::collections::BTreeSet<String> = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().unwrap().iter())
            .flat_map(|t| names.find_iter(t["expr"].as_str().unwrap()).map(|m| m.as_str().to_owned()).collect::<Vec<_>>())
            .collect();
        assert_eq!(queried, exported, "the dashboard's panels and the endpoint's metrics");
        shared.acked.store(6, Ordering::Relaxed);
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        assert!(text.contains("chatbench_acks_total{scenario=\"smoke\",mode=\"changestream\"} 6"), "live: {text}");
    }
}
