//! From a trace and the scenario's checks to a [`ModeReport`]: findings,
//! pass/fail per check, latency and throughput. Pure: no I/O.

use super::{CheckResult, Counts, Drain, LatencyReport, MAX_LISTED_FINDINGS, ModeReport, fmt_us};
use crate::check::latency::{self, LatencySummary};
use crate::check::{FindingKind, TraceIndex, all_findings, throughput};
use crate::scenario::{Checks, Percentiles};
use crate::trace::{EventKind, Role, Trace};
use std::collections::BTreeMap;

/// Which checks a finding kind fails.
fn check_of(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::Lost | FindingKind::Duplicated | FindingKind::Phantom | FindingKind::Agreement => "exactly_once",
        FindingKind::OrderViolation | FindingKind::SeqConflict => "ordering.per_room_total",
        FindingKind::FifoViolation => "ordering.per_sender_fifo",
        FindingKind::HistoryMismatch | FindingKind::HistoryGap => "live_equals_history",
    }
}

pub struct Context {
    pub provider: String,
    pub backend: String,
    pub backend_is_real: bool,
    pub nodes: u32,
    pub drain: Drain,
    pub server: super::ServerCounters,
    pub notes: Vec<String>,
}

pub fn evaluate(trace: &Trace, checks: &Checks, ctx: Context) -> ModeReport {
    let index = TraceIndex::build(trace);
    let findings = all_findings(trace);
    let mut findings_by_kind: BTreeMap<FindingKind, u64> = BTreeMap::new();
    for f in &findings {
        *findings_by_kind.entry(f.kind).or_default() += 1;
    }
    let enabled = |name: &str| match name {
        "exactly_once" => checks.exactly_once,
        "ordering.per_room_total" => checks.ordering.per_room_total,
        "ordering.per_sender_fifo" => checks.ordering.per_sender_fifo,
        "live_equals_history" => checks.live_equals_history,
        _ => false,
    };
    let mut results = Vec::new();
    for name in ["exactly_once", "ordering.per_room_total", "ordering.per_sender_fifo", "live_equals_history"] {
        if !enabled(name) {
            continue;
        }
        let failing: Vec<String> =
            findings_by_kind.iter().filter(|(k, _)| check_of(**k) == name).map(|(k, n)| format!("{n} {}", k.as_str())).collect();
        let history_missing = name == "live_equals_history" && trace.history.iter().any(|h| !h.complete);
        let passed = failing.is_empty() && !history_missing;
        let detail = if history_missing {
            "history could not be read back for every room".to_owned()
        } else if passed {
            "no violations".to_owned()
        } else {
            failing.join(", ")
        };
        results.push(CheckResult { name: name.to_owned(), passed, detail });
    }
    let lat = latency::measure(&index);
    let latency = LatencyReport { ack: LatencySummary::from_histogram(&lat.ack), delivery: LatencySummary::from_histogram(&lat.delivery) };
    ceiling_checks("latency.ack", &checks.latency.ack, &latency.ack, &mut results);
    ceiling_checks("latency.delivery", &checks.latency.delivery, &latency.delivery, &mut results);
    let throughput = throughput::measure(&index);
    if let Some(min) = &checks.min_throughput {
        for (name, floor, actual) in [
            ("min_throughput.acked_per_s", min.acked_per_s, throughput.acked_per_s),
            ("min_throughput.delivered_per_s", min.delivered_per_s, throughput.delivered_per_s),
        ] {
            if let Some(floor) = floor {
                results.push(CheckResult {
                    name: name.to_owned(),
                    passed: actual >= floor,
                    detail: format!("{actual:.1}/s (floor {floor:.1}/s)"),
                });
            }
        }
    }
    let counts = count(trace, &index);
    let timeline = timeline(trace, &index);
    let delivery_curve =
        CURVE_PERCENTILES.iter().filter(|_| !lat.delivery.is_empty()).map(|&p| (p, lat.delivery.value_at_percentile(p))).collect();
    ModeReport {
        mode: trace.meta.mode.clone(),
        provider: ctx.provider,
        backend: ctx.backend,
        backend_is_real: ctx.backend_is_real,
        nodes: ctx.nodes,
        counts,
        findings_by_kind,
        findings: findings.into_iter().take(MAX_LISTED_FINDINGS).collect(),
        checks: results,
        latency,
        throughput,
        drain: ctx.drain,
        server: ctx.server,
        timeline,
        delivery_curve,
        faults: fault_figures(trace, &index),
        notes: ctx.notes,
    }
}

/// How long after a fault ends its effects still count.
const FAULT_GRACE_NS: u64 = 2_000_000_000;

/// Per-fault recovery time, delayed messages and worst delivery latency.
fn fault_figures(trace: &Trace, index: &TraceIndex) -> Vec<super::FaultFigures> {
    let faults = &trace.meta.faults;
    if faults.is_empty() {
        return Vec::new();
    }
    let start = trace.meta.sending_started_ns;
    // Slowest delivery per message, and each subscriber's deliveries.
    let mut slowest: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for sub in &index.subscribers {
        for d in &sub.deliveries {
            if let Some(send) = index.sends.get(&d.msg) {
                let latency = d.t_ns.saturating_sub(send.scheduled_ns);
                let e = slowest.entry(d.msg).or_insert(0);
                *e = (*e).max(latency);
            }
        }
    }
    let first_fault = faults.iter().map(|f| f.start_ns).min().unwrap_or(u64::MAX);
    let mut baseline = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
    for (msg, &latency) in &slowest {
        let scheduled = index.sends[msg].scheduled_ns;
        if scheduled >= trace.meta.warmup_ns && scheduled < first_fault {
            baseline.saturating_record((latency / 1_000).max(1));
        }
    }
    let baseline_p99_us = if baseline.is_empty() { 0 } else { baseline.value_at_quantile(0.99) };
    faults
        .iter()
        .map(|f| {
            let until = f.end_ns + FAULT_GRACE_NS;
            let in_window: Vec<(&u64, &u64)> =
                slowest.iter().filter(|(msg, _)| (f.start_ns..until).contains(&index.sends[*msg].scheduled_ns)).collect();
            let max_delivery_us = in_window.iter().map(|(_, l)| **l / 1_000).max().unwrap_or(0);
            let delayed = in_window.iter().filter(|(_, l)| **l / 1_000 > baseline_p99_us).count() as u64;
            let recovery = index
                .subscribers
                .iter()
                .map(|sub| {
                    sub.deliveries
                        .iter()
                        .filter(|d| index.sends.get(&d.msg).is_some_and(|s| s.scheduled_ns >= f.start_ns))
                        .map(|d| d.t_ns)
                        .min()
                })
                .try_fold(0u64, |worst, first| first.map(|t| worst.max(t.saturating_sub(f.start_ns))));
            super::FaultFigures {
                action: f.action.clone(),
                node: f.node,
                at_s: f.start_ns.saturating_sub(start) as f64 / 1e9,
                duration_ms: f.end_ns.saturating_sub(f.start_ns) / 1_000_000,
                recovery_ms: recovery.map(|ns| ns / 1_000_000),
                delayed,
                max_delivery_us,
                baseline_p99_us,
                error: f.error.clone(),
            }
        })
        .collect()
}

/// Percentiles plotted in the latency curve.
const CURVE_PERCENTILES: [f64; 14] = [0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0];

/// Acks, deliveries and delivery latency per 1 s bucket from the start of sending.
fn timeline(trace: &Trace, index: &TraceIndex) -> Vec<super::TimelineBucket> {
    let start = trace.meta.sending_started_ns;
    let bucket_of = |t: u64| (t.saturating_sub(start) / 1_000_000_000) as usize;
    let mut acked: Vec<u64> = Vec::new();
    let mut delivered: Vec<hdrhistogram::Histogram<u64>> = Vec::new();
    let grow = |v: &mut Vec<hdrhistogram::Histogram<u64>>, i: usize| {
        while v.len() <= i {
            v.push(hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds"));
        }
    };
    for send in index.sends.values() {
        if let Some((_, t)) = send.ack {
            let i = bucket_of(t);
            if acked.len() <= i {
                acked.resize(i + 1, 0);
            }
            acked[i] += 1;
        }
    }
    for sub in &index.subscribers {
        let mut seen = std::collections::HashSet::with_capacity(sub.deliveries.len());
        for d in &sub.deliveries {
            let Some(send) = index.sends.get(&d.msg) else {
                continue;
            };
            if !seen.insert(d.msg) {
                continue;
            }
            let i = bucket_of(d.t_ns);
            grow(&mut delivered, i);
            delivered[i].saturating_record((d.t_ns.saturating_sub(send.scheduled_ns) / 1_000).max(1));
        }
    }
    let buckets = acked.len().max(delivered.len());
    (0..buckets)
        .map(|i| {
            let h = delivered.get(i);
            let q = |quantile: f64| h.filter(|h| !h.is_empty()).map_or(0, |h| h.value_at_quantile(quantile));
            super::TimelineBucket {
                t_s: i as u64,
                acked: acked.get(i).copied().unwrap_or(0),
                delivered: h.map_or(0, |h| h.len()),
                delivery_p50_us: q(0.5),
                delivery_p99_us: q(0.99),
                delivery_max_us: h.filter(|h| !h.is_empty()).map_or(0, |h| h.max()),
            }
        })
        .collect()
}

fn ceiling_checks(prefix: &str, ceilings: &Percentiles, summary: &LatencySummary, out: &mut Vec<CheckResult>) {
    for (label, quantile, limit) in ceilings.ceilings() {
        let limit_us = limit.as_micros() as u64;
        let actual = summary.at(quantile);
        let passed = summary.count > 0 && actual <= limit_us;
        let detail =
            if summary.count == 0 { "no samples".to_owned() } else { format!("{} (ceiling {})", fmt_us(actual), fmt_us(limit_us)) };
        out.push(CheckResult { name: format!("{prefix}.{label}"), passed, detail });
    }
}

fn count(trace: &Trace, index: &TraceIndex) -> Counts {
    let mut c = Counts {
        clients: trace.clients.len() as u64,
        senders: trace.clients.iter().filter(|c| c.role == Role::Sender).count() as u64,
        subscribers: trace.clients.iter().filter(|c| c.role == Role::Subscriber).count() as u64,
        sent: index.sends.len() as u64,
        acked: index.sends.values().filter(|s| s.ack.is_some()).count() as u64,
        ..Default::default()
    };
    c.unacked = c.sent - c.acked;
    for e in &trace.events {
        match e.kind {
            EventKind::Deliver { .. } => c.delivered += 1,
            EventKind::Error { .. } => c.error_frames += 1,
            EventKind::Closed { .. } => c.closed_early += 1,
            EventKind::Reconnected { .. } => c.reconnects += 1,
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::synthetic::{TraceShape, correct_trace};
    use crate::scenario::HumanDuration;
    use std::time::Duration;

    fn ctx() -> Context {
        Context {
            provider: "compat".into(),
            backend: "x".into(),
            backend_is_real: false,
            nodes: 2,
            drain: Drain::default(),
            server: Default::default(),
            notes: vec![],
        }
    }

    #[test]
    fn a_clean_trace_passes_and_a_dropped_delivery_fails_exactly_once() {
        let shape = TraceShape { rooms: 2, senders_per_room: 2, subscribers_per_room: 2, messages_per_sender: 5 };
        let mut trace = correct_trace(&shape, 3);
        let report = evaluate(&trace, &Checks::default(), ctx());
        assert!(report.checks.iter().all(|c| c.passed), "{:?}", report.checks);
        assert_eq!(report.counts.sent, 20);
        assert_eq!(report.counts.delivered, 40);
        let i = trace.events.iter().position(|e| matches!(e.kind, EventKind::Deliver { .. })).unwrap();
        trace.events.remove(i);
        let report = evaluate(&trace, &Checks::default(), ctx());
        let failed: Vec<&str> = report.failed_checks().map(|c| c.name.as_str()).collect();
        assert_eq!(failed, vec!["exactly_once"]);
        assert_eq!(report.count(FindingKind::Lost), 1);
    }

    #[test]
    fn latency_ceilings_pass_and_fail_on_the_measured_value() {
        let shape = TraceShape { rooms: 1, senders_per_room: 1, subscribers_per_room: 1, messages_per_sender: 10 };
        let trace = correct_trace(&shape, 3);
        let mut checks = Checks::default();
        // The generator delivers 2 ms after each send.
        checks.latency.delivery.p99 = Some(HumanDuration(Duration::from_millis(5)));
        checks.latency.ack.p50 = Some(HumanDuration(Duration::from_micros(500)));
        let report = evaluate(&trace, &checks, ctx());
        let by_name: BTreeMap<&str, bool> = report.checks.iter().map(|c| (c.name.as_str(), c.passed)).collect();
        assert!(by_name["latency.delivery.p99"]);
        assert!(!by_name["latency.ack.p50"]);
    }
}
