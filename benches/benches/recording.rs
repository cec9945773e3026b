//! Trace recording cost: what a client pays per event on the hot path
//! (a monotonic clock read and a push into a pre-sized buffer).

use chatbench::trace::{Clock, EventKind, Recorder};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn recording(c: &mut Criterion) {
    const EVENTS: usize = 100_000;
    let clock = Clock::start();
    let mut group = c.benchmark_group("recording");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("record_deliver_event", |b| {
        b.iter_batched(
            || Recorder::new(0, clock, EVENTS),
            |mut rec| {
                for i in 0..EVENTS as u64 {
                    rec.record(EventKind::Deliver { room: 0, msg: i, seq: i + 1 });
                }
                rec.into_events()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, recording);
criterion_main!(benches);
