//! Checker throughput: every checker over a synthetic trace of ~1.1M events
//! (50k messages, 20 subscribers per room), reported in events/s.

use chatbench::check::synthetic::{TraceShape, correct_trace};
use chatbench::check::{TraceIndex, all_findings, latency};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn checkers(c: &mut Criterion) {
    // Trouble on: reconnects, resends, refused subscribes, late subscribers
    // and a fault, so every checker (liveness and recovery too) has work.
    let shape = TraceShape { trouble: true, ..TraceShape::plain(10, 5, 20, 1000) };
    let trace = correct_trace(&shape, 42);
    let events = trace.events.len() as u64;
    let mut group = c.benchmark_group("checkers");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events));
    group.bench_function(format!("all_findings/{events}_events"), |b| {
        b.iter(|| {
            let findings = all_findings(std::hint::black_box(&trace), &trace.meta.checks);
            assert!(findings.is_empty(), "a correct trace has no findings");
        })
    });
    group.bench_function(format!("latency/{events}_events"), |b| {
        b.iter(|| {
            let index = TraceIndex::build(std::hint::black_box(&trace));
            latency::measure(&index).delivery.len()
        })
    });
    group.finish();
}

criterion_group!(benches, checkers);
criterion_main!(benches);
