//! Who used the machine during a run: every second, the CPU and resident
//! memory of the harness and of each process it started (nodes, backends),
//! read from `/proc`; and the lag of the harness's own event loop. Both go
//! into the trace, so a report can say when the load generator, not the
//! system under test, was the bottleneck (k6's dropped iterations; OMB's
//! publish delay).
//!
//! Processes are found as descendants of the harness and named from their
//! command line (`node-1`, `mongodb`, `kafka`, …), so restarted nodes keep
//! their name. Linux only; elsewhere nothing is sampled.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One process's use over the last second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceSample {
    /// Seconds from the start of the sampling.
    pub t_s: f64,
    pub process: String,
    /// Percent of one core (200 = two cores busy).
    pub cpu_percent: f64,
    pub rss_kib: u64,
}

/// How late the harness's event loop woke up for a 10 ms tick, in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopLag {
    pub ticks: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

const TICK: Duration = Duration::from_millis(10);

/// Measure event-loop lag until the returned handle is stopped.
pub(crate) fn spawn_loop_lag() -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<LoopLag>) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).expect("valid histogram bounds");
        let mut next = Instant::now() + TICK;
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tokio::time::sleep_until(next.into()) => {}
            }
            let late = Instant::now().saturating_duration_since(next);
            h.saturating_record((late.as_micros() as u64).max(1));
            next = Instant::now() + TICK;
        }
        if h.is_empty() {
            return LoopLag::default();
        }
        LoopLag { ticks: h.len(), p50_us: h.value_at_quantile(0.5), p99_us: h.value_at_quantile(0.99), max_us: h.max() }
    });
    (stop, task)
}

/// Sample the harness and its descendants every second until stopped.
pub(crate) fn spawn_sampler() -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Vec<ResourceSample>>) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let mut samples = Vec::new();
        let mut last: HashMap<u32, (u64, Instant)> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => {}
            }
            // Read first, then stamp: on a loaded machine reading /proc takes
            // long, and ticks stamped with a time from before the read made a
            // process look busier than all cores (seen: 667 % on 2 cores).
            let tree = process_tree(std::process::id());
            let now = Instant::now();
            let mut by_name: HashMap<String, (f64, u64)> = HashMap::new();
            for p in tree {
                let Some((ticks, at)) = last.insert(p.pid, (p.cpu_ticks, now)) else { continue };
                let secs = now.duration_since(at).as_secs_f64();
                if secs <= 0.0 {
                    continue;
                }
                let cpu = cpu_percent(p.cpu_ticks.saturating_sub(ticks), secs);
                let entry = by_name.entry(p.name).or_default();
                entry.0 += cpu;
                entry.1 += p.rss_kib;
            }
            let t_s = now.duration_since(started).as_secs_f64();
            let mut round: Vec<ResourceSample> = by_name
                .into_iter()
                .map(|(process, (cpu_percent, rss_kib))| ResourceSample { t_s, process, cpu_percent, rss_kib })
                .collect();
            round.sort_by(|a, b| a.process.cmp(&b.process));
            samples.extend(round);
        }
        samples
    });
    (stop, task)
}

/// CPU use over `secs` from clock ticks, at most every core's worth (what
/// is left of the sampling skew).
fn cpu_percent(ticks: u64, secs: f64) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    (ticks as f64 / clock_ticks_per_s() / secs * 100.0).min(cores * 100.0)
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf reads a constant of the running system; no memory is touched.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

struct Proc {
    pid: u32,
    name: String,
    cpu_ticks: u64,
    rss_kib: u64,
}

/// `root` and every process below it.
fn process_tree(root: u32) -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut stats: HashMap<u32, (u64, String)> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // `pid (comm) state ppid ... utime stime`: comm may hold spaces.
        let Some(close) = stat.rfind(')') else { continue };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let (Some(ppid), Some(utime), Some(stime)) = (fields.get(1), fields.get(11), fields.get(12)) else { continue };
        let (Ok(ppid), Ok(utime), Ok(stime)) = (ppid.parse::<u32>(), utime.parse::<u64>(), stime.parse::<u64>()) else { continue };
        parent.insert(pid, ppid);
        stats.insert(pid, (utime + stime, stat[stat.find('(').map_or(0, |i| i + 1)..close].to_owned()));
    }
    let below = |mut pid: u32| {
        for _ in 0..64 {
            if pid == root {
                return true;
            }
            match parent.get(&pid) {
                Some(&p) if p != pid && p != 0 => pid = p,
                _ => return false,
            }
        }
        false
    };
    stats
        .into_iter()
        .filter(|(pid, _)| below(*pid))
        .map(|(pid, (cpu_ticks, comm))| {
            let cmdline =
                std::fs::read(format!("/proc/{pid}/cmdline")).map(|b| String::from_utf8_lossy(&b).replace('\0', " ")).unwrap_or_default();
            let name = if pid == root { "harness".to_owned() } else { name_of(&cmdline, &comm) };
            Proc { pid, name, cpu_ticks, rss_kib: rss_kib(pid) }
        })
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
}

/// A stable name for a process from its command line.
pub(crate) fn name_of(cmdline: &str, comm: &str) -> String {
    if cmdline.contains("chat-server") {
        if let Some(id) = cmdline.split("--node-id ").nth(1).and_then(|rest| rest.split_whitespace().next()) {
            return id.to_owned();
        }
        return "node".to_owned();
    }
    for (needle, name) in [
        ("nx_launcher", "mongodb"),
        ("mongod", "mongodb"),
        ("s3_launcher", "s3"),
        ("tansu proxy", "kafka-link"),
        ("tansu", "kafka"),
        ("kafka.Kafka", "kafka"),
        ("redis-server", "redis"),
        ("nats-server", "nats"),
    ] {
        if cmdline.contains(needle) {
            return name.to_owned();
        }
    }
    comm.to_owned()
}

/// Files one process may open: (soft, hard) `RLIMIT_NOFILE`.
fn fd_limits() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some((limit.rlim_cur, limit.rlim_max))
}

/// File descriptors the harness keeps besides its client sockets (logs,
/// pipes to nodes, proxies' listeners, MongoDB and HTTP clients).
pub(crate) const FD_MARGIN: u64 = 256;

/// The open-file limit cannot hold the run's connections.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FdLimitError {
    #[error(
        "{who} opens {sockets} client connections, but this process may open only {hard} files (hard RLIMIT_NOFILE); \
         raise it (e.g. `ulimit -Hn {need}` as root, or LimitNOFILE= for a service), or run fewer clients per process (`--shard`: {shards} or more shards)"
    )]
    HardLimit { who: String, sockets: u64, hard: u64, need: u64, shards: u64 },
    #[error("could not raise the open-file limit from {soft} to {to} (needed for {sockets} connections)")]
    CannotRaise { sockets: u64, soft: u64, to: u64 },
    #[error(
        "{who}'s {sockets} client connections over {nodes} node(s) are {per_node} or more per node, but a node may open only {hard} files \
         (hard RLIMIT_NOFILE, which the nodes inherit); raise topology.nodes to {need_nodes} or more (`--nodes {need_nodes}`), \
         or raise the limit (`ulimit -Hn` as root)"
    )]
    NodeLimit { who: String, sockets: u64, nodes: u64, per_node: u64, hard: u64, need_nodes: u64 },
}

/// Local ports one source address may need beside the clients' (the
/// nodes' own connections to backends, other programs).
pub(crate) const PORT_MARGIN: u64 = 1024;

/// Every client connection from one source address takes one of the
/// kernel's ephemeral ports; the harness moves to the next loopback source
/// every `per_source` clients. Fail before the run when the range cannot
/// hold one source's share (a narrowed `net.ipv4.ip_local_port_range`).
pub(crate) fn ensure_port_range(sockets: u64, per_source: u64) -> Result<(), String> {
    let (low, high) = crate::process::ephemeral_range();
    ports_fit(sockets, per_source, (low, high))
}

fn ports_fit(sockets: u64, per_source: u64, (low, high): (u16, u16)) -> Result<(), String> {
    let range = u64::from(high.saturating_sub(low)) + 1;
    let busiest = sockets.min(per_source);
    if busiest + PORT_MARGIN <= range {
        return Ok(());
    }
    Err(format!(
        "up to {busiest} client connections share one source address, but the ephemeral port range ({low}-{high}, \
         net.ipv4.ip_local_port_range) holds {range} ports, {PORT_MARGIN} of them kept for other sockets; \
         widen it (e.g. `sysctl -w net.ipv4.ip_local_port_range=\"32768 60999\"`) or run fewer clients"
    ))
}

/// File descriptors a node keeps besides its client sockets (its listener,
/// backend and broker connections, logs).
pub(crate) const NODE_FD_MARGIN: u64 = 128;

/// The nodes the harness starts inherit its hard open-file limit: fail
/// before the run when `sockets` connections spread evenly over `nodes`
/// nodes would not fit in it (an uneven placement needs more).
pub(crate) fn ensure_node_fd_limit(sockets: u64, nodes: u64, who: &str) -> Result<(), FdLimitError> {
    let Some((_, hard)) = fd_limits() else { return Ok(()) };
    node_fit(sockets, nodes, hard, who)
}

fn node_fit(sockets: u64, nodes: u64, hard: u64, who: &str) -> Result<(), FdLimitError> {
    let nodes = nodes.max(1);
    let per_node = sockets.div_ceil(nodes);
    if per_node + NODE_FD_MARGIN <= hard {
        return Ok(());
    }
    let room = hard.saturating_sub(NODE_FD_MARGIN).max(1);
    Err(FdLimitError::NodeLimit { who: who.to_owned(), sockets, nodes, per_node, hard, need_nodes: sockets.div_ceil(room) })
}

/// Make room for `sockets` client sockets: raise the soft open-file limit
/// toward the hard one when it is lower (child processes, the nodes,
/// inherit it), and fail with what to do when even the hard limit is too
/// low — before anything starts, not as refused connections mid-run.
/// `who`: what opens them ("the scenario", "shard 1/4"); `processes`:
/// how many processes share the scenario's clients now (1 unsharded).
pub(crate) fn ensure_fd_limit(sockets: u64, who: &str, processes: u64) -> Result<u64, FdLimitError> {
    let need = sockets + FD_MARGIN;
    let Some((soft, hard)) = fd_limits() else { return Ok(0) };
    if soft >= need {
        return Ok(soft);
    }
    if hard < need {
        // Shards that each fit: the whole scenario's sockets over what one
        // process may hold beside its margin.
        let room = hard.saturating_sub(FD_MARGIN).max(1);
        let shards = (sockets * processes.max(1)).div_ceil(room).max(processes + 1);
        return Err(FdLimitError::HardLimit { who: who.to_owned(), sockets, hard, need, shards });
    }
    let raised = libc::rlimit { rlim_cur: need.max(soft).min(hard), rlim_max: hard };
    // SAFETY: setrlimit reads the struct we own; lowering nothing.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(FdLimitError::CannotRaise { sockets, soft, to: raised.rlim_cur });
    }
    tracing::info!(from = soft, to = raised.rlim_cur, "raised the open-file soft limit for the client connections");
    Ok(raised.rlim_cur)
}

#[cfg(test)]
mod tests {
    #[test]
    fn more_connections_than_the_hard_file_limit_is_refused_up_front() {
        assert!(super::ensure_fd_limit(10, "the scenario", 1).is_ok());
        let e = super::ensure_fd_limit(u64::MAX / 8, "shard 1/4", 4).unwrap_err().to_string();
        assert!(e.contains("shard 1/4 opens") && e.contains("hard RLIMIT_NOFILE") && e.contains("ulimit"), "{e}");
        if let Some((_, hard)) = super::fd_limits()
            && hard < u64::MAX / 64
        {
            // 3 shards of what one process may just hold: 4 would not do, 3 + 1 is asked.
            let each = hard - super::FD_MARGIN + 1;
            let e = super::ensure_fd_limit(each, "shard 0/3", 3).unwrap_err().to_string();
            assert!(e.contains("--shard`: 4 or more shards"), "{e}");
        }
    }

    use super::*;

    #[test]
    fn cpu_is_at_most_every_core() {
        let cores = std::thread::available_parallelism().unwrap().get() as f64;
        let per_s = clock_ticks_per_s();
        assert_eq!(cpu_percent(per_s as u64, 1.0), 100.0_f64.min(cores * 100.0));
        assert_eq!(cpu_percent(per_s as u64 * 64, 0.5), cores * 100.0, "a late stamp cannot claim more than the machine has");
    }

    #[test]
    fn a_port_range_that_cannot_hold_one_source_is_refused() {
        // Linux's default range holds a full source's share.
        assert!(ports_fit(100_000, 16_384, (32_768, 60_999)).is_ok());
        let e = ports_fit(100_000, 16_384, (50_000, 60_000)).unwrap_err();
        assert!(e.contains("up to 16384 client connections") && e.contains("50000-60000") && e.contains("10001 ports"), "{e}");
        // Few clients fit a narrow range; the margin counts.
        assert!(ports_fit(10_001 - PORT_MARGIN, 16_384, (50_000, 60_000)).is_ok());
        assert!(ports_fit(10_001 - PORT_MARGIN + 1, 16_384, (50_000, 60_000)).is_err());
    }

    #[test]
    fn connections_past_what_a_node_may_hold_are_refused_with_the_nodes_needed() {
        assert!(node_fit(39_000, 2, 20_000, "the scenario").is_ok());
        let e = node_fit(60_032, 2, 20_000, "shard 0/4").unwrap_err();
        assert_eq!(
            e,
            FdLimitError::NodeLimit { who: "shard 0/4".into(), sockets: 60_032, nodes: 2, per_node: 30_016, hard: 20_000, need_nodes: 4 }
        );
        let text = e.to_string();
        assert!(text.contains("--nodes 4") && text.contains("30016 or more per node"), "{text}");
        // What it asks for fits.
        assert!(node_fit(60_032, 4, 20_000, "shard 0/4").is_ok());
        // Exactly at the edge: the margin counts.
        assert!(node_fit(20_000 - NODE_FD_MARGIN, 1, 20_000, "x").is_ok());
        assert!(node_fit(20_000 - NODE_FD_MARGIN + 1, 1, 20_000, "x").is_err());
    }

    #[test]
    fn processes_are_named_from_their_command_lines() {
        assert_eq!(name_of("target/debug/chat-server --listen 127.0.0.1:0 --node-id node-2 --mode kafka", "chat-server"), "node-2");
        assert_eq!(name_of("python /tmp/x/nx_launcher.py --db memory", "python"), "mongodb");
        assert_eq!(name_of("tansu proxy --listener-url tcp://x", "tansu"), "kafka-link");
        assert_eq!(name_of("tansu broker --storage-engine memory://", "tansu"), "kafka");
        assert_eq!(name_of("/usr/bin/redis-server 127.0.0.1:20001", "redis-server"), "redis");
        assert_eq!(name_of("nats-server -a 127.0.0.1 -p 20002 -js", "nats-server"), "nats");
        assert_eq!(name_of("something else", "bash"), "bash");
    }

    #[tokio::test]
    async fn the_sampler_sees_the_harness_and_a_busy_child() {
        let mut child = std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap();
        let (stop, task) = spawn_sampler();
        tokio::time::sleep(Duration::from_millis(2300)).await;
        let _ = stop.send(());
        let samples = task.await.unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(samples.iter().any(|s| s.process == "harness" && s.rss_kib > 0), "{samples:?}");
        let busy = samples.iter().filter(|s| s.process == "sh").map(|s| s.cpu_percent).fold(0.0, f64::max);
        // Not a figure for the child's speed: on a loaded 2-core machine a
        // spinning child got 23% (measured while a CI build ran beside it).
        // An idle process shows 0; a sampler that misses the child too.
        assert!(busy > 5.0, "a spinning child shows its CPU: {samples:?}");
    }

    #[tokio::test]
    async fn loop_lag_is_small_on_an_idle_loop_and_large_when_blocked() {
        let (stop, task) = spawn_loop_lag();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Block the runtime's thread (this test's runtime has one).
        std::thread::sleep(Duration::from_millis(120));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = stop.send(());
        let lag = task.await.unwrap();
        assert!(lag.ticks >= 10, "{lag:?}");
        assert!(lag.max_us >= 100_000, "a blocked loop shows as lag: {lag:?}");
    }
}
