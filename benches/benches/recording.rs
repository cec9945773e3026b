//! Trace recording cost: what a client pays per event on the hot path
//! (a monotonic clock read and a push into a pre-sized buffer), and per
//! delivery for the body check (a CRC-32 of the body), with the bytes one
//! recorded event takes.

use chatbench::trace::{BodyDigest, Clock, Event, EventKind, Label, Recorder};
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
                    rec.record(EventKind::Deliver {
                        room: 0,
                        msg: i,
                        seq: i + 1,
                        body: Some(BodyDigest { len: 64, crc: i as u32, ..BodyDigest::default() }),
                        label: Label::Ok,
                        message_id: i,
                    });
                }
                rec.into_events()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
    let body = "안녕하세요 \"chat\" 😀 ".repeat(16);
    let mut group = c.benchmark_group("body_digest");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function(format!("crc32_{}_bytes", body.len()), |b| b.iter(|| BodyDigest::of(std::hint::black_box(body.as_bytes()))));
    group.finish();
    println!("one recorded event: {} bytes", std::mem::size_of::<Event>());
}

criterion_group!(benches, recording);
criterion_main!(benches);
