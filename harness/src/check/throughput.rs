//! Throughput over the measured window (warmup end → end of sending):
//! sends, acks and deliveries per second.

use super::TraceIndex;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub window_s: f64,
    pub sent_per_s: f64,
    pub acked_per_s: f64,
    pub delivered_per_s: f64,
}

pub fn measure(index: &TraceIndex) -> Throughput {
    let meta = &index.trace.meta;
    let window_ns = meta.sending_ended_ns.saturating_sub(meta.warmup_ns);
    if window_ns == 0 {
        return Throughput::default();
    }
    let window_s = window_ns as f64 / 1e9;
    let in_window = |scheduled: u64| scheduled >= meta.warmup_ns && scheduled < meta.sending_ended_ns;
    let sent = index.sends.values().filter(|s| in_window(s.scheduled_ns)).count();
    let acked = index.sends.values().filter(|s| in_window(s.scheduled_ns) && s.ack.is_some()).count();
    let mut delivered = 0usize;
    for sub in &index.subscribers {
        let mut seen = HashSet::with_capacity(sub.deliveries.len());
        delivered += sub
            .deliveries
            .iter()
            .filter(|d| seen.insert(d.msg) && index.sends.get(&d.msg).is_some_and(|s| in_window(s.scheduled_ns)))
            .count();
    }
    Throughput {
        window_s,
        sent_per_s: sent as f64 / window_s,
        acked_per_s: acked as f64 / window_s,
        delivered_per_s: delivered as f64 / window_s,
    }
}
