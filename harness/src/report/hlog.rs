//! Latency as an HdrHistogram interval log (`latency.hlog`, next to the
//! trace): one histogram per second of the run for acks and one for
//! deliveries, in microseconds, tagged `ack` and `delivery`. The format
//! HdrHistogram's own tools read (`HistogramLogProcessor -i latency.hlog
//! -tag delivery`, HdrHistogram_py's `HistogramLogReader`), written with
//! the `hdrhistogram` crate's interval log writer and V2 DEFLATE serializer
//! (compressed, `HISTF...`, as Java's `HistogramLogWriter` writes them;
//! HdrHistogram_py refuses the uncompressed form in a log).
//!
//! Samples are, as in the summary's histograms (`check::latency`), sends
//! scheduled after the warm-up: each first ack, and each client's first
//! copy of a message, measured from the send's scheduled time and filed
//! under the second it completed in (from the start of sending). Read
//! from the trace alone in one pass, so two differences: what never
//! completed has no interval (the summary counts it, censored), and a
//! copy a subscriber was not owed (before its subscription started, or
//! while it was leaving the room) is in the log, not in the summary.

use crate::check::latency::histogram;
use crate::trace::{EventKind, FOREIGN_MSG, MsgNo, Trace};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, UNIX_EPOCH};

/// The length of one interval.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The interval log of `trace`, as text. Events are in time order, so
/// one interval's two histograms are kept at a time (a histogram of
/// 1µs..1h at 3 significant figures is ~170 KB: an hour's worth kept at
/// once would be over a gigabyte).
pub fn render(trace: &Trace) -> std::io::Result<Vec<u8>> {
    let meta = &trace.meta;
    let start = UNIX_EPOCH + Duration::from_nanos(meta.origin_unix_ns.saturating_add(meta.sending_started_ns));
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let comment = format!(
        "chatbench {}: scenario {}, {}: latency in microseconds (the max column in milliseconds), one interval per {}s from the start of sending, tags ack and delivery",
        env!("CARGO_PKG_VERSION"),
        meta.scenario,
        meta.mode,
        INTERVAL.as_secs()
    );
    let mut writer = IntervalLogWriterBuilder::new()
        .add_comment(&comment)
        .with_start_time(start)
        .with_base_time(start)
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut out, &mut serializer)?;
    let tags = [Tag::new("ack").expect("a plain tag"), Tag::new("delivery").expect("a plain tag")];
    let slot = |t: u64| t.saturating_sub(meta.sending_started_ns) / INTERVAL.as_nanos() as u64;
    let micros = |ns: u64| (ns / 1_000).max(1);
    let mut scheduled: HashMap<MsgNo, u64> = HashMap::new();
    let mut acked: HashSet<MsgNo> = HashSet::new();
    let mut delivered: HashSet<(u32, MsgNo)> = HashSet::new();
    // The current interval and its ack and delivery histograms.
    let mut current = 0u64;
    let mut open = [histogram(), histogram()];
    let mut flush = |k: u64, open: &mut [Histogram<u64>; 2]| -> std::io::Result<()> {
        for (h, tag) in open.iter_mut().zip(tags) {
            if !h.is_empty() {
                writer.write_histogram(h, INTERVAL * k as u32, INTERVAL, Some(tag)).map_err(std::io::Error::other)?;
                h.reset();
            }
        }
        Ok(())
    };
    for e in &trace.events {
        let (which, msg) = match e.kind {
            EventKind::Send { msg, scheduled_ns, .. } => {
                scheduled.entry(msg).or_insert(scheduled_ns);
                continue;
            }
            EventKind::Ack { msg, .. } if acked.insert(msg) => (0, msg),
            EventKind::Deliver { msg, .. } if msg != FOREIGN_MSG && delivered.insert((e.client, msg)) => (1, msg),
            _ => continue,
        };
        let Some(&sent) = scheduled.get(&msg).filter(|&&s| s >= meta.warmup_ns) else { continue };
        let k = slot(e.t_ns);
        if k != current {
            flush(current, &mut open)?;
            current = k;
        }
        open[which].saturating_record(micros(e.t_ns.saturating_sub(sent)));
    }
    flush(current, &mut open)?;
    Ok(out)
}

/// Write `trace`'s interval log to `path`.
pub fn write(trace: &Trace, path: &std::path::Path) -> std::io::Result<()> {
    std::fs::write(path, render(trace)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::synthetic::{TraceShape, correct_trace};
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use std::collections::BTreeMap;

    /// Read back with the crate's parser: per tag, the histograms added up.
    fn read_back(trace: &Trace) -> BTreeMap<String, Histogram<u64>> {
        let text = render(trace).unwrap();
        let mut totals: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
        let mut starts = Vec::new();
        for entry in IntervalLogIterator::new(&text) {
            if let LogEntry::Interval(h) = entry.unwrap() {
                let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, h.encoded_histogram()).unwrap();
                let decoded: Histogram<u64> = Deserializer::new().deserialize(&mut bytes.as_slice()).unwrap();
                assert_eq!(h.duration(), INTERVAL);
                starts.push(h.start_timestamp());
                totals.entry(h.tag().unwrap().as_str().to_owned()).or_insert_with(histogram).add(&decoded).unwrap();
            }
        }
        assert!(starts.windows(2).all(|w| w[0] <= w[1]), "intervals in order: {starts:?}");
        totals
    }

    /// Every ack and first delivery after the warm-up is in exactly one
    /// interval, with its value: the summary's histograms, less what they
    /// censored (never completed), which the log leaves out.
    #[test]
    fn the_log_reads_back_as_the_summarys_histograms() {
        let plain = correct_trace(&TraceShape::plain(3, 2, 3, 8), 4);
        let latency = crate::check::latency::measure(&crate::check::TraceIndex::build(&plain));
        let totals = read_back(&plain);
        assert_eq!(latency.incomplete_acks + latency.incomplete_deliveries, 0);
        for (tag, summary) in [("ack", &latency.ack), ("delivery", &latency.delivery)] {
            assert_eq!(totals[tag].len(), summary.len(), "{tag}");
            assert_eq!(totals[tag].max(), summary.max(), "{tag}");
            assert_eq!(totals[tag].value_at_quantile(0.99), summary.value_at_quantile(0.99), "{tag}");
        }
        // Resends, duplicates, refused sends and replays: counted once, censored ones left out.
        let trouble = correct_trace(&TraceShape { trouble: true, ..TraceShape::plain(3, 2, 3, 8) }, 4);
        let latency = crate::check::latency::measure(&crate::check::TraceIndex::build(&trouble));
        let totals = read_back(&trouble);
        assert!(latency.incomplete_acks > 0, "the trouble trace has unacked sends");
        assert_eq!(totals["ack"].len(), latency.ack.len() - latency.incomplete_acks);
        // The summary also leaves out copies a subscriber was never owed
        // (before its subscription started) or got while leaving the
        // room; the log has them.
        let index = crate::check::TraceIndex::build(&trouble);
        let aside = index.subscribers.iter().flat_map(|s| &s.deliveries).filter(|d| d.unrequested || d.ignored).count() as u64;
        let completed = latency.delivery.len() - latency.incomplete_deliveries;
        assert!((completed..=completed + aside).contains(&totals["delivery"].len()), "{completed} + {aside}");
    }
}
