//! Checker throughput: every checker over a synthetic trace of ~1.1M events
//! (50k messages, 20 subscribers per room), reported in events/s; and the
//! cost of merging the same trace from 4 shards (`chatbench merge`, in
//! memory: renumbering, re-timing, sorting).

use chatbench::check::synthetic::{TraceShape, correct_trace};
use chatbench::check::{TraceIndex, all_findings, latency};
use chatbench::merge::{merge, split};
use chatbench::trace::ShardOf;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

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

    // Shard clocks started up to 3 ms apart, as on separate machines.
    let mut whole = trace.clone();
    whole.meta.origin_unix_ns = 1_800_000_000_000_000_000;
    let shards: Vec<_> = (0..4).map(|i| split(&whole, ShardOf { index: i, count: 4 }, u64::from(i) * 1_000_000)).collect();
    let mut group = c.benchmark_group("merge");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events));
    group.bench_function(format!("4_shards/{events}_events"), |b| {
        b.iter_batched(|| shards.clone(), |s| merge(s).expect("the shards fit together").events.len(), BatchSize::LargeInput)
    });
    group.finish();
}

criterion_group!(benches, checkers);
criterion_main!(benches);
