//! The checkers at chat scale: one synthetic trace of about
//! `CHATBENCH_EVENTS` events (default 50,000,000: 1,000 rooms of 99
//! subscribers and 1 sender), judged by every checker, then measured for
//! latency. Prints events/s of each step and the process's peak resident
//! memory (VmHWM), next to what the trace itself holds. Asserts only that
//! a correct trace has no findings.
//!
//!   cargo bench -p chatbench-benches --bench checkers_scale
//!   CHATBENCH_EVENTS=5000000 cargo bench -p chatbench-benches --bench checkers_scale

use chatbench::check::synthetic::{TraceShape, correct_trace};
use chatbench::check::{TraceIndex, all_findings, latency};
use std::time::Instant;

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes --bench; nothing else is read from the command line.
    let target: u64 = std::env::var("CHATBENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000_000);
    let (rooms, subscribers) = (1_000u32, 99u32);
    // Per message: a send, an ack and a delivery to each subscriber.
    let per_message = u64::from(subscribers) + 2;
    let messages = (target / (u64::from(rooms) * per_message)).max(1) as u32;
    let shape = TraceShape::plain(rooms, 1, subscribers, messages);

    let t = Instant::now();
    let trace = correct_trace(&shape, 7);
    let events = trace.events.len() as u64;
    let event_bytes = std::mem::size_of::<chatbench::trace::Event>() as u64;
    println!(
        "trace: {events} events ({rooms} rooms x {subscribers} subscribers x {messages} messages), generated in {:.1} s; \
         {} MiB of events ({event_bytes} B each), RSS {} MiB",
        t.elapsed().as_secs_f64(),
        (events * event_bytes) >> 20,
        status_kib("VmRSS:") >> 10
    );

    let t = Instant::now();
    let findings = all_findings(&trace, &trace.meta.checks);
    let s = t.elapsed().as_secs_f64();
    assert!(findings.is_empty(), "a correct trace has no findings: {:?}", &findings[..findings.len().min(3)]);
    println!("all_findings: {:.1} s, {:.2} M events/s", s, events as f64 / s / 1e6);

    let t = Instant::now();
    let index = TraceIndex::build(&trace);
    let lat = latency::measure(&index);
    let s = t.elapsed().as_secs_f64();
    println!("index + latency: {:.1} s, {:.2} M events/s ({} delivery samples)", s, events as f64 / s / 1e6, lat.delivery.len());
    println!("peak RSS (VmHWM): {} MiB", status_kib("VmHWM:") >> 10);
}
