//! From a trace and the scenario's checks to a [`ModeReport`]: findings,
//! one result per check of the two tables ([`Check::ALL`], judged on
//! findings; [`Threshold::ALL`], judged on a measured figure), latency and
//! throughput. Pure: no I/O.

use super::{CheckResult, Counts, LatencyReport, MAX_LISTED_FINDINGS, ModeReport};
use crate::check::latency::{self, LatencySummary};
use crate::check::threshold::{Measured, Threshold};
use crate::check::{Check, Fate, FindingKind, TraceIndex, findings_of, throughput};
use crate::scenario::Checks;
use crate::trace::{EventKind, Role, Trace};
use std::collections::BTreeMap;

/// What the trace does not carry: counters scraped from the nodes, notes.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub server: super::ServerCounters,
    pub notes: Vec<String>,
}

pub fn evaluate(trace: &Trace, checks: &Checks, ctx: Context) -> ModeReport {
    let index = TraceIndex::build(trace);
    // Findings of a check that is off are not judged (the check's detail counts them).
    let (findings, unjudged): (Vec<_>, Vec<_>) =
        findings_of(&index, checks).into_iter().partition(|f| f.kind.check().off_reason(checks).is_none());
    let mut findings_by_kind: BTreeMap<FindingKind, u64> = BTreeMap::new();
    for f in &findings {
        *findings_by_kind.entry(f.kind).or_default() += 1;
    }
    let mut results: Vec<CheckResult> = Check::ALL
        .iter()
        .map(|&check| match check.off_reason(checks) {
            Some(why) => {
                let n = unjudged.iter().filter(|f| f.kind.check() == check).count();
                let unjudged = if n > 0 { format!(" ({n} findings not judged)") } else { String::new() };
                CheckResult {
                    name: check.name().to_owned(),
                    passed: true,
                    off: Some(why.to_owned()),
                    detail: format!("off: {why}{unjudged}"),
                }
            }
            None => {
                let failing: Vec<String> =
                    findings_by_kind.iter().filter(|(k, _)| k.check() == check).map(|(k, n)| format!("{n} {}", k.as_str())).collect();
                let detail = if failing.is_empty() { "no violations".to_owned() } else { failing.join(", ") };
                CheckResult { name: check.name().to_owned(), passed: failing.is_empty(), off: None, detail }
            }
        })
        .collect();
    let lat = latency::measure(&index);
    let latency = LatencyReport {
        ack: LatencySummary::from_histogram(&lat.ack),
        delivery: LatencySummary::from_histogram(&lat.delivery),
        stable: LatencySummary::from_histogram(&lat.stable),
        incomplete_acks: lat.incomplete_acks,
        incomplete_deliveries: lat.incomplete_deliveries,
        incomplete_percent: lat.incomplete_percent(),
        connect: connect_times(trace),
    };
    let throughput = throughput::measure(&index);
    // The second table: checks judged on a figure against a threshold.
    let measured = Measured { ack: &latency.ack, delivery: &latency.delivery, throughput: &throughput };
    results.extend(Threshold::ALL.iter().filter_map(|t| t.judge(checks, &measured)).map(|j| CheckResult {
        name: j.name.to_owned(),
        passed: j.passed,
        off: None,
        detail: j.detail,
    }));
    // What the generator's lateness is judged against: the delivery p99 it measured.
    let generator_reference_us = latency.delivery.p99_us;
    let counts = count(trace, &index);
    let timeline = timeline(trace, &index);
    let delivery_curve =
        CURVE_PERCENTILES.iter().filter(|_| !lat.delivery.is_empty()).map(|&p| (p, lat.delivery.value_at_percentile(p))).collect();
    let meta = &trace.meta;
    let causes = super::cause::diagnose(trace, &findings);
    let findings = listed(findings, MAX_LISTED_FINDINGS);
    let room_names = findings.iter().filter_map(|f| Some((f.room?, trace.rooms.get(f.room? as usize)?.clone()))).collect();
    ModeReport {
        mode: meta.mode,
        provider: meta.provider.clone(),
        backend: meta.backend.clone(),
        backend_is_real: meta.backend_is_real,
        protocol: if meta.protocol.is_empty() { "json".to_owned() } else { meta.protocol.clone() },
        nodes: meta.nodes,
        load: meta.load.map(|l| l.label()).unwrap_or_default(),
        history_source: meta.history_source.clone(),
        guarantees: meta.guarantees.label(),
        counts,
        findings_by_kind,
        findings,
        room_names,
        checks: results,
        latency,
        throughput,
        drain: super::Drain { completed: meta.drain.completed, took_ms: meta.drain.took_ns / 1_000_000 },
        server: ctx.server,
        timeline,
        delivery_curve,
        unseen: lat.unseen,
        message_text: meta.message_text.clone(),
        faults: fault_figures(trace, &index),
        generator: crate::check::generator::measure(&index, generator_reference_us, &throughput),
        resources: super::ResourceSummary::from_samples(&meta.resources),
        resource_samples: meta.resources.clone(),
        notes: ctx.notes,
        causes,
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

fn count(trace: &Trace, index: &TraceIndex) -> Counts {
    let role = |r: Role| trace.clients.iter().filter(|c| c.role == r).count() as u64;
    let mut c = Counts {
        clients: trace.clients.len() as u64,
        senders: role(Role::Sender),
        subscribers: role(Role::Subscriber),
        chatters: role(Role::Chatter),
        intruders: trace.clients.iter().filter(|c| c.role.intruder().is_some()).count() as u64,
        sent: index.sends.len() as u64,
        acked: index.sends.values().filter(|s| s.ack.is_some()).count() as u64,
        ..Default::default()
    };
    c.unacked = c.sent - c.acked;
    for send in index.sends.values() {
        match send.fate {
            Fate::Stored(_) => c.resolved_stored += 1,
            Fate::NotStored => c.resolved_not_stored += 1,
            Fate::Delivered(_) => c.resolved_delivered += 1,
            Fate::Unconfirmed => c.unconfirmed += 1,
            Fate::Unknown => c.unresolved += 1,
            Fate::Acked(_) => {}
        }
    }
    let mut connects = 0u64;
    for e in &trace.events {
        match e.kind {
            EventKind::Deliver { .. } => c.delivered += 1,
            EventKind::Error { .. } | EventKind::SubscribeRefused { .. } => c.error_frames += 1,
            EventKind::Closed { .. } => c.closed_early += 1,
            EventKind::Connected { .. } => connects += 1,
            EventKind::Probe { answer, .. } => {
                c.intruder_attempts += 1;
                c.intruder_refused += u64::from(answer == crate::trace::Answer::Refused);
            }
            _ => {}
        }
    }
    let first_connects = index
        .events_of
        .iter()
        .filter(|ev| ev.iter().any(|&i| matches!(trace.events[i as usize].kind, EventKind::Connected { .. })))
        .count() as u64;
    c.reconnects = connects - first_connects;
    c
}

/// How long connections took to open, first attempt to open session
/// (each `Connected`, reconnects too), in microseconds.
pub(crate) fn connect_times(trace: &Trace) -> LatencySummary {
    // Bounded to what `took_us` holds (a u32): `saturating_record` on an
    // auto-resizing histogram clamps to its initial top, 2 µs (seen).
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, u64::from(u32::MAX), 3).expect("valid histogram bounds");
    for e in &trace.events {
        if let EventKind::Connected { took_us, .. } = e.kind {
            h.saturating_record(u64::from(took_us));
        }
    }
    LatencySummary::from_histogram(&h)
}

/// At most `max` of `findings`, every kind among them: taken in turn
/// from each kind, each in its order, then listed in the order they came
/// (a flood of one kind, 900 leaks, would otherwise hide the ten
/// `unrefused` behind it).
fn listed(findings: Vec<crate::check::Finding>, max: usize) -> Vec<crate::check::Finding> {
    if findings.len() <= max {
        return findings;
    }
    let mut queues: BTreeMap<crate::check::FindingKind, std::collections::VecDeque<usize>> = BTreeMap::new();
    for (i, f) in findings.iter().enumerate() {
        queues.entry(f.kind).or_default().push_back(i);
    }
    let mut keep = vec![false; findings.len()];
    let mut taken = 0;
    while taken < max {
        for queue in queues.values_mut() {
            if taken < max
                && let Some(i) = queue.pop_front()
            {
                keep[i] = true;
                taken += 1;
            }
        }
    }
    findings.into_iter().zip(keep).filter_map(|(f, k)| k.then_some(f)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flood of one kind leaves room for every other kind, in order.
    #[test]
    fn listed_findings_keep_every_kind() {
        use crate::check::{Finding, FindingKind};
        let mut all: Vec<Finding> = (0..600).map(|i| Finding::new(FindingKind::Leak, format!("leak {i}"))).collect();
        all.insert(10, Finding::new(FindingKind::Unrefused, "u0"));
        all.push(Finding::new(FindingKind::Unrefused, "u1"));
        let kept = listed(all.clone(), 500);
        assert_eq!(kept.len(), 500);
        assert_eq!(kept.iter().filter(|f| f.kind == FindingKind::Unrefused).count(), 2);
        assert_eq!(kept[10].detail, "u0", "in the order they came");
        assert_eq!(listed(all[..400].to_vec(), 500).len(), 400, "under the cap, all of them");
    }
    /// Connect times as recorded, seconds included (an auto-resizing
    /// histogram once clamped every one to 2 µs).
    #[test]
    fn connect_times_are_the_recorded_ones() {
        let mut trace = Trace::default();
        for (client, took_us) in [(0, 150), (1, 300), (2, 4_000_000), (3, u32::MAX)] {
            trace.events.push(crate::trace::Event { t_ns: 0, client, kind: EventKind::Connected { node: 0, took_us } });
        }
        let c = connect_times(&trace);
        assert_eq!(c.count, 4);
        assert_eq!(c.p50_us / 10, 30, "{c:?}");
        assert!(c.max_us >= u64::from(u32::MAX) * 999 / 1000, "{c:?}");
        assert_eq!(connect_times(&Trace::default()), LatencySummary::default());
    }

    use crate::check::synthetic::{TraceShape, correct_trace};
    use crate::scenario::HumanDuration;
    use std::time::Duration;

    fn ctx() -> Context {
        Context::default()
    }

    #[test]
    fn a_clean_trace_passes_and_a_dropped_delivery_fails_exactly_once() {
        let shape = TraceShape::plain(2, 2, 2, 5);
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
        let shape = TraceShape::plain(1, 1, 1, 10);
        let trace = correct_trace(&shape, 3);
        let mut checks = Checks::default();
        // The generator delivers 0.6 ms after each send and acks after 0.4 ms.
        checks.latency.delivery.p99 = Some(HumanDuration(Duration::from_millis(5)));
        checks.latency.ack.p50 = Some(HumanDuration(Duration::from_micros(300)));
        let report = evaluate(&trace, &checks, ctx());
        let by_name: BTreeMap<&str, bool> = report.checks.iter().map(|c| (c.name.as_str(), c.passed)).collect();
        assert!(by_name["latency.delivery.p99"]);
        assert!(!by_name["latency.ack.p50"]);
    }

    #[test]
    fn a_check_turned_off_does_not_fail_and_says_why() {
        let mut trace = correct_trace(&TraceShape::plain(1, 1, 2, 5), 3);
        trace.meta.drain.completed = false;
        let report = evaluate(&trace, &Checks::default(), ctx());
        assert_eq!(report.failed_checks().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["liveness.drained"]);
        let mut checks = Checks::default();
        checks.liveness.drained = crate::scenario::Switch::Off("the drain is not under test here".into());
        let report = evaluate(&trace, &checks, ctx());
        assert!(report.failed_checks().next().is_none());
        assert!(report.findings_by_kind.is_empty());
        let drained = report.checks.iter().find(|c| c.name == "liveness.drained").unwrap();
        assert_eq!(drained.off.as_deref(), Some("the drain is not under test here"));
        assert!(drained.detail.contains("1 findings not judged"), "{}", drained.detail);
    }

    #[test]
    fn every_check_of_the_table_is_reported_once() {
        let report = evaluate(&correct_trace(&TraceShape::plain(1, 1, 1, 2), 1), &Checks::default(), ctx());
        let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
        let table: Vec<&str> = Check::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names, table);
        assert!(FindingKind::ALL.iter().all(|k| Check::ALL.contains(&k.check())));
    }
}
