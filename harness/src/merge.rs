//! `chatbench merge`: the shards of a sharded run (`run --shard I/N`) into
//! one trace, judged by every check as if one process had run it — unlike
//! k6-operator, whose runners each report alone.
//!
//! Shards are room-affine, so every send and every delivery of a room were
//! timed by one clock; traces are lined up on the wall clock only for
//! timelines and fault windows (clocks on different machines may disagree
//! by ~100 ms, OMB issue 216, which shifts no latency here). Clients and
//! rooms are renumbered in shard order; message numbers are already global.
//! Latency percentiles come from the merged events themselves: exact, not
//! an approximation of merged summaries. A shard that never reported is a
//! finding (`shard_missing`) and fails the verdict.

use crate::report::{RunReport, ServerCounters};
use crate::trace::{Event, EventKind, FaultRecord, ShardOf, TRACE_VERSION, Trace};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MergeError {
    #[error("no shard traces to merge")]
    Empty,
    #[error("trace {index} is not a shard of a sharded run (run with --shard I/N)")]
    NotSharded { index: usize },
    #[error("the traces are of different runs: {why}")]
    Mismatch { why: String },
    #[error("shard {index} of {count} is there twice")]
    Duplicate { index: u32, count: u32 },
}

/// Why `chatbench merge` could not give a verdict.
#[derive(Debug, thiserror::Error)]
pub enum MergeRunError {
    #[error("no shard traces under {dirs} (a shard's run folder holds <mode>/trace.bin)")]
    NothingToMerge { dirs: String },
    #[error("{mode}: {source}")]
    Traces {
        mode: crate::subject::Subject,
        #[source]
        source: MergeError,
    },
    #[error("writing {path}: {source}")]
    Output {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What `chatbench merge` did, besides the report it wrote.
#[derive(Debug)]
pub struct Merged {
    pub report: RunReport,
    /// Events merged and the time it took (the merge's cost).
    pub events: u64,
    pub took: std::time::Duration,
}

/// Merge shard run folders (each from `run --shard I/N --out DIR`) mode by
/// mode, judge each merged trace with its recorded checks, and write the
/// reports and merged traces to `out`. A folder or trace that is missing
/// or unreadable is a note, and its shard a `shard_missing` finding.
pub fn merge_runs(dirs: &[PathBuf], out: &Path) -> Result<Merged, MergeRunError> {
    let output = |path: &Path| {
        let path = path.display().to_string();
        move |source| MergeRunError::Output { path, source }
    };
    let started = std::time::Instant::now();
    let mut modes = Vec::new();
    let mut events = 0u64;
    let (mut scenario, mut seed) = (String::new(), 0);
    // An external system's run is one run labelled `external` (issue: it
    // was never looked for, so its shards could not be merged).
    for mode in crate::subject::Subject::ALL {
        let mut notes = Vec::new();
        let mut shards = Vec::new();
        let mut server = ServerCounters::default();
        let mut present_anywhere = false;
        for dir in dirs {
            let path = dir.join(mode.as_str()).join("trace.bin");
            if !dir.is_dir() {
                notes.push(format!("{}: no such folder (a shard that never reported?)", dir.display()));
                continue;
            }
            if !path.exists() {
                continue;
            }
            present_anywhere = true;
            match Trace::read(&path) {
                Ok(t) => {
                    let counters = RunReport::read(&dir.join("report.json"))
                        .ok()
                        .and_then(|r| r.modes.into_iter().find(|m| m.mode == mode))
                        .map(|m| m.server);
                    match counters {
                        Some(c) => server.add(&c),
                        None => notes
                            .push(format!("{}: no report.json with {mode} counters; server counters leave this shard out", dir.display())),
                    }
                    let shard = t.meta.shard.map_or("not a shard".to_owned(), |s| format!("shard {}/{}", s.index, s.count));
                    notes.push(format!("{shard}: {} ({} events)", dir.display(), t.events.len()));
                    shards.push(t);
                }
                Err(e) => notes.push(format!("{}: unreadable, its shard counts as missing: {e}", path.display())),
            }
        }
        if !present_anywhere {
            continue;
        }
        if shards.is_empty() {
            return Err(MergeRunError::NothingToMerge {
                dirs: dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
            });
        }
        let starts: Vec<(u32, u64)> =
            shards.iter().map(|t| (t.meta.shard.map_or(0, |s| s.index), t.meta.origin_unix_ns + t.meta.sending_started_ns)).collect();
        let nodes_per_shard: BTreeSet<u32> = shards.iter().map(|t| t.meta.nodes).collect();
        let merged = merge(shards).map_err(|source| MergeRunError::Traces { mode, source })?;
        // Each shard ran its own nodes and placed its rooms' clients on them:
        // this is not the single-process topology with the same node count.
        notes.push(format!(
            "topology: each shard ran its own nodes ({} per shard) and put its rooms' clients only on them; messages crossed nodes only within a shard{}",
            nodes_per_shard.iter().map(u32::to_string).collect::<Vec<_>>().join("/"),
            if nodes_per_shard.iter().all(|&n| n < 2) { " (one node per shard: no message crossed nodes; give topology.nodes >= 2)" } else { "" }
        ));
        if let (Some(first), Some(last)) = (starts.iter().map(|s| s.1).min(), starts.iter().map(|s| s.1).max())
            && last - first > 100_000_000
        {
            let late: Vec<String> = starts
                .iter()
                .filter(|s| s.1 - first > 100_000_000)
                .map(|s| format!("shard {} +{} ms", s.0, (s.1 - first) / 1_000_000))
                .collect();
            notes.push(format!("shards did not start sending together (wall clock): {}", late.join(", ")));
        }
        if !merged.meta.missing_shards.is_empty() {
            notes.push(format!("missing shards: {:?}", merged.meta.missing_shards));
        }
        (scenario, seed) = (merged.meta.scenario.clone(), merged.meta.seed);
        events += merged.events.len() as u64;
        let dir = out.join(mode.as_str());
        std::fs::create_dir_all(&dir).map_err(output(&dir))?;
        // The run's stages 5 and 6, on the merged trace.
        let judged = crate::run::judge(&merged, &merged.meta.checks, &dir, server, notes).map_err(|e| MergeRunError::Output {
            path: dir.join("trace.bin").display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        modes.push(judged);
    }
    if modes.is_empty() {
        return Err(MergeRunError::NothingToMerge { dirs: dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ") });
    }
    let description = format!("merged from {} shard folders", dirs.len());
    let report = RunReport::new(&scenario, &description, seed, chrono::Utc::now().to_rfc3339(), modes);
    report.write_all(out).map_err(output(out))?;
    Ok(Merged { report, events, took: started.elapsed() })
}

/// Merge the shards of one mode of one run. Missing shards are recorded
/// in the merged trace's `missing_shards` (a finding), not an error.
pub fn merge(mut shards: Vec<Trace>) -> Result<Trace, MergeError> {
    if shards.is_empty() {
        return Err(MergeError::Empty);
    }
    let mut of: Vec<ShardOf> = Vec::with_capacity(shards.len());
    for (i, t) in shards.iter().enumerate() {
        of.push(t.meta.shard.ok_or(MergeError::NotSharded { index: i })?);
    }
    let count = of[0].count;
    let first = &shards[0].meta;
    for t in &shards[1..] {
        let m = &t.meta;
        let differs =
            |what: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| MergeError::Mismatch { why: format!("{what} {a:?} vs {b:?}") };
        if m.scenario != first.scenario {
            return Err(differs("scenario", &first.scenario, &m.scenario));
        }
        if m.mode != first.mode {
            return Err(differs("mode", &first.mode, &m.mode));
        }
        if m.seed != first.seed {
            return Err(differs("seed", &first.seed, &m.seed));
        }
        if m.shard.map(|s| s.count) != Some(count) {
            return Err(differs("shard count", &count, &m.shard.map(|s| s.count)));
        }
    }
    let mut order: Vec<usize> = (0..shards.len()).collect();
    order.sort_by_key(|&i| of[i].index);
    for w in order.windows(2) {
        if of[w[0]].index == of[w[1]].index {
            return Err(MergeError::Duplicate { index: of[w[0]].index, count });
        }
    }
    let present: Vec<u32> = order.iter().map(|&i| of[i].index).collect();
    let missing_shards: Vec<u32> = (0..count).filter(|i| !present.contains(i)).collect();
    // Line the shards up on the wall clock: trace ns 0 of the merge is the
    // earliest shard's origin.
    let origin = shards.iter().map(|t| t.meta.origin_unix_ns).min().unwrap_or(0);
    let mut merged = Trace { version: TRACE_VERSION, ..Default::default() };
    let base = shards[order[0]].meta.clone();
    merged.meta = base.clone();
    merged.meta.shard = None;
    merged.meta.origin_unix_ns = origin;
    merged.meta.missing_shards = missing_shards;
    merged.meta.faults = Vec::new();
    merged.meta.resources = Vec::new();
    let (mut started, mut warmup, mut ended_sending, mut ended) = (u64::MAX, u64::MAX, 0u64, 0u64);
    let mut drain = base.drain;
    // Every shard ran its own nodes (against the shared backends): they
    // are numbered on in shard order.
    let mut node_count = 0;
    drain.completed = true;
    for &i in &order {
        let shard = std::mem::take(&mut shards[i]);
        let shift = shard.meta.origin_unix_ns - origin;
        let (client_base, room_base, node_base) = (merged.clients.len() as u32, merged.rooms.len() as u32, node_count);
        let m = &shard.meta;
        node_count += m.nodes;
        started = started.min(m.sending_started_ns + shift);
        warmup = warmup.min(m.warmup_ns + shift);
        ended_sending = ended_sending.max(m.sending_ended_ns + shift);
        ended = ended.max(m.ended_ns + shift);
        drain.completed &= m.drain.completed;
        drain.took_ns = drain.took_ns.max(m.drain.took_ns);
        merged.meta.loop_lag.p99_us = merged.meta.loop_lag.p99_us.max(m.loop_lag.p99_us);
        merged.meta.loop_lag.max_us = merged.meta.loop_lag.max_us.max(m.loop_lag.max_us);
        // Each shard faulted its own nodes: its faults concern its clients.
        let own_clients = (client_base, shard.clients.len() as u32);
        merged.meta.faults.extend(m.faults.iter().map(|f| FaultRecord {
            action: format!("{} (shard {})", f.action, of[i].index),
            node: f.node.map(|n| n + node_base),
            start_ns: f.start_ns + shift,
            end_ns: f.end_ns + shift,
            error: f.error.clone(),
            clients: Some(match f.clients {
                Some((first, count)) => (first + client_base, count),
                None => own_clients,
            }),
        }));
        merged.meta.resources.extend(m.resources.iter().map(|r| {
            let mut r = r.clone();
            r.process = format!("s{}/{}", of[i].index, r.process);
            r
        }));
        merged.rooms.extend(shard.rooms);
        merged.history.extend(shard.history);
        merged.api_history.extend(shard.api_history);
        merged.clients.extend(shard.clients.into_iter().map(|mut c| {
            c.room += room_base;
            for r in &mut c.also {
                *r += room_base;
            }
            c.node += node_base;
            c
        }));
        merged.events.extend(shard.events.into_iter().map(|e| Event {
            t_ns: e.t_ns + shift,
            client: e.client + client_base,
            kind: remap(e.kind, room_base, node_base),
        }));
    }
    merged.meta.sending_started_ns = started;
    merged.meta.warmup_ns = warmup;
    merged.meta.sending_ended_ns = ended_sending;
    merged.meta.ended_ns = ended;
    merged.meta.drain = drain;
    merged.meta.nodes = node_count;
    merged.events.sort_by_key(|e| (e.t_ns, e.client));
    Ok(merged)
}

fn remap(kind: EventKind, room_base: u32, node_base: u32) -> EventKind {
    match kind {
        EventKind::Connected { node, took_us } => EventKind::Connected { node: node + node_base, took_us },
        other => other.with_room(|room| Some(room + room_base)).expect("every room maps"),
    }
}

/// A trace cut down to one shard's rooms and clients (renumbered), with its
/// own clock origin `shift_ns` earlier (so its trace times are `shift_ns`
/// later) — what `run --shard` would record.
/// For tests: splitting any trace and merging it must not change a finding.
pub fn split(trace: &Trace, shard: ShardOf, shift_ns: u64) -> Trace {
    let rooms: Vec<u32> = (0..trace.rooms.len() as u32).filter(|r| shard.owns_room(*r)).collect();
    let local_room = |r: u32| rooms.iter().position(|&x| x == r).map(|i| i as u32);
    let clients: Vec<u32> = (0..trace.clients.len() as u32).filter(|&c| shard.owns_room(trace.clients[c as usize].room)).collect();
    let local_client = |c: u32| clients.iter().position(|&x| x == c).map(|i| i as u32);
    let mut out = Trace { version: trace.version, meta: trace.meta.clone(), ..Default::default() };
    out.meta.shard = Some(shard);
    out.meta.origin_unix_ns = trace.meta.origin_unix_ns.checked_sub(shift_ns).expect("the origin is later than the shift");
    let later = |t: u64| t + shift_ns;
    for ns in [&mut out.meta.sending_started_ns, &mut out.meta.warmup_ns, &mut out.meta.sending_ended_ns, &mut out.meta.ended_ns] {
        *ns = later(*ns);
    }
    out.meta.faults =
        trace.meta.faults.iter().map(|f| FaultRecord { start_ns: later(f.start_ns), end_ns: later(f.end_ns), ..f.clone() }).collect();
    out.rooms = rooms.iter().map(|&r| trace.rooms[r as usize].clone()).collect();
    out.history = rooms.iter().map(|&r| trace.history[r as usize].clone()).collect();
    out.api_history = rooms.iter().filter_map(|&r| trace.api_history.get(r as usize).cloned()).collect();
    out.clients = clients
        .iter()
        .map(|&c| {
            let mut info = trace.clients[c as usize].clone();
            info.room = local_room(info.room).expect("the client's room is in the shard");
            info.also = info.also.iter().map(|&r| local_room(r).expect("a client's rooms are in its shard")).collect();
            info
        })
        .collect();
    out.events = trace
        .events
        .iter()
        .filter_map(|e| {
            let client = local_client(e.client)?;
            let kind = match e.kind.with_room(local_room)? {
                EventKind::Send { room, msg, scheduled_ns, body } => EventKind::Send { room, msg, scheduled_ns: later(scheduled_ns), body },
                other => other,
            };
            Some(Event { t_ns: later(e.t_ns), client, kind })
        })
        .collect();
    out
}

/// A trace's findings named by what they are about (kind, message, room
/// name, seq, the client as `room#nth`), not by trace indexes, sorted: what
/// must not change when a trace is split into shards and merged.
#[cfg(test)]
pub(crate) type FindingName = (String, Option<u64>, Option<String>, Option<u64>, String);

/// See [`FindingName`].
#[cfg(test)]
pub(crate) fn finding_names(trace: &Trace) -> Vec<FindingName> {
    let named = |f: &crate::check::Finding| {
        let room = f.room.map(|r| trace.rooms[r as usize].clone());
        let client = f.client.map(|c| {
            let info = &trace.clients[c as usize];
            let nth = (0..c).filter(|&o| trace.clients[o as usize].room == info.room).count();
            format!("{}#{nth}", trace.rooms[info.room as usize])
        });
        let detail = if f.kind == crate::check::FindingKind::ShardMissing { f.detail.clone() } else { String::new() };
        (f.kind.as_str().to_owned(), f.msg, room, f.seq, client.unwrap_or(detail))
    };
    let mut v: Vec<_> = crate::check::all_findings(trace, &trace.meta.checks).iter().map(named).collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::all_findings;
    use crate::check::synthetic::{TraceShape, correct_trace, without_guests};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Splitting any trace by room into shards (each on its own clock)
        /// and merging them gives exactly the findings of the whole.
        #[test]
        fn split_and_merge_keep_every_finding(
            rooms in 1u32..6, count in 1u32..4, seed in any::<u64>(), shifts in proptest::collection::vec(0u64..5_000_000, 4),
            drop_delivery in any::<bool>(), drain_fails in any::<bool>(),
        ) {
            let shape = TraceShape { rooms, senders_per_room: 2, subscribers_per_room: 2, chatters_per_room: 1, messages_per_sender: 4, trouble: true };
            let mut whole = without_guests(correct_trace(&shape, seed));
            whole.meta.origin_unix_ns = 1_700_000_000_000_000_000;
            if drop_delivery && let Some(i) = whole.events.iter().position(|e| matches!(e.kind, EventKind::Deliver { .. })) {
                whole.events.remove(i);
            }
            whole.meta.drain.completed = !drain_fails;
            let shards: Vec<Trace> = (0..count)
                .map(|index| {
                    let mut s = split(&whole, ShardOf { index, count }, shifts[index as usize]);
                    // Only a shard whose own drain failed says so.
                    s.meta.drain.completed = !(drain_fails && index == 0);
                    s
                })
                .collect();
            let merged = merge(shards).unwrap();
            prop_assert!(merged.meta.missing_shards.is_empty());
            prop_assert_eq!(merged.events.len(), whole.events.len());
            prop_assert_eq!(finding_names(&merged), finding_names(&whole));
        }
    }

    #[test]
    fn the_shards_of_an_external_systems_run_merge() {
        let mut whole = correct_trace(&TraceShape::plain(4, 1, 1, 3), 1);
        whole.meta.mode = crate::subject::Subject::External;
        whole.meta.origin_unix_ns = 1 << 60;
        let dir = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        for index in 0..2 {
            let shard_dir = dir.path().join(format!("shard-{index}"));
            std::fs::create_dir_all(shard_dir.join("external")).unwrap();
            split(&whole, ShardOf { index, count: 2 }, 1_000 * u64::from(index)).write(&shard_dir.join("external/trace.bin")).unwrap();
            dirs.push(shard_dir);
        }
        let merged = merge_runs(&dirs, &dir.path().join("merged")).expect("external shards merge");
        assert_eq!(merged.report.modes.len(), 1);
        assert_eq!(merged.report.modes[0].mode, crate::subject::Subject::External);
        assert!(merged.report.passed, "{:?}", merged.report.modes[0].findings_by_kind);
        assert!(dir.path().join("merged/external/trace.bin").exists());
    }

    #[test]
    fn a_missing_shard_is_recorded_and_bad_inputs_are_refused() {
        let whole = correct_trace(&TraceShape::plain(4, 1, 1, 3), 1);
        let shards: Vec<Trace> = (0..3).map(|index| split(&whole, ShardOf { index, count: 3 }, 0)).collect();
        let two = merge(vec![shards[0].clone(), shards[2].clone()]).unwrap();
        assert_eq!(two.meta.missing_shards, vec![1]);
        let kinds: Vec<&str> = all_findings(&two, &two.meta.checks).iter().map(|f| f.kind.as_str()).collect();
        assert!(kinds.contains(&"shard_missing"), "{kinds:?}");
        assert_eq!(merge(vec![]), Err(MergeError::Empty));
        assert_eq!(merge(vec![whole.clone()]), Err(MergeError::NotSharded { index: 0 }));
        assert!(matches!(merge(vec![shards[1].clone(), shards[1].clone()]), Err(MergeError::Duplicate { index: 1, .. })));
        let mut other = shards[1].clone();
        other.meta.seed = 99;
        assert!(matches!(merge(vec![shards[0].clone(), other]), Err(MergeError::Mismatch { .. })));
    }
}
