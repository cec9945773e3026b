//! Child processes the harness owns (backends and server nodes).
//!
//! Each child runs in its own process group, so killing the group takes its
//! grandchildren too, and gets SIGKILL if the harness dies (PR_SET_PDEATHSIG).
//! Descendants that left the group (a start script that runs its server
//! through `su` or `setsid`, as Debian's rabbitmq-server does) are found
//! through /proc, by their parent chain, and signalled with it. A command
//! must therefore stay in the foreground: a daemon whose parent already
//! exited has no chain back to its node.
//! A [`ChildGuard`] kills the group when dropped — on success, on error, on
//! Ctrl-C (the run future is dropped) and on panic (unwinding, plus a panic
//! hook that kills every registered group).

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::io;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::process::{Child, Command};

fn registry() -> &'static Mutex<HashSet<i32>> {
    static LIVE: OnceLock<Mutex<HashSet<i32>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

/// Kill every process group the harness still owns. Safe to call twice.
pub fn kill_all_children() {
    let groups: Vec<i32> = registry().lock().map(|mut g| g.drain().collect()).unwrap_or_default();
    for pgid in groups {
        let _ = signal_tree(pgid, Signal::SIGKILL);
    }
}

/// Every live descendant of `root` (children, their children, ...), read
/// from /proc. Empty where /proc is not available.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut children: std::collections::HashMap<i32, Vec<i32>> = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|p| p.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            found.push(child);
            stack.push(child);
        }
    }
    found
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next().map(|st| st != "Z")))
        .unwrap_or(false)
}

/// Signal the group led by `pgid` and every descendant of its leader, also
/// those in other groups or sessions (looked up before anything is signalled,
/// while they are still reachable from the leader).
fn signal_tree(pgid: i32, signal: Signal) -> nix::Result<()> {
    let strays = descendants(pgid);
    let result = killpg(Pid::from_raw(pgid), signal);
    for pid in strays {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
    }
    result
}

/// Make a panic anywhere kill all children, then run `also` (the
/// provider's container cleanup: unwinding may not get to their handles'
/// drops), before the default hook runs.
pub fn install_panic_hook(also: fn()) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_all_children();
        also();
        default(info);
    }));
}

pub struct ChildGuard {
    name: String,
    child: Child,
    pgid: i32,
    /// The group was killed and the child reaped: its pgid may be reused,
    /// so it must not be signalled again.
    reaped: bool,
}

impl ChildGuard {
    /// Spawn `cmd` in a new process group that dies with the harness.
    pub fn spawn(name: impl Into<String>, cmd: &mut Command) -> io::Result<Self> {
        let name = name.into();
        cmd.process_group(0).kill_on_drop(true);
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pgid = child.id().ok_or_else(|| io::Error::other(format!("{name} exited before its pid could be read")))? as i32;
        registry().lock().map(|mut g| g.insert(pgid)).ok();
        Ok(Self { name, child, pgid, reaped: false })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> i32 {
        self.pgid
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Signal the whole group, and descendants that left it.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        signal_tree(self.pgid, signal).map_err(io::Error::from)
    }

    /// Has it exited? Returns the exit status if so.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status.
    /// Descendants in other sessions are looked up first and waited for
    /// too: their parent (e.g. `su`) may exit before they do.
    pub async fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let strays = descendants(self.pgid);
        let _ = self.signal(Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        let status = match tokio::time::timeout_at(deadline, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => None,
        };
        while strays.iter().any(|&pid| alive(pid)) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        for &pid in strays.iter().filter(|&&pid| alive(pid)) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        self.forget_group();
        status
    }

    /// SIGKILL the whole group (a crash, not a shutdown) and reap the child.
    pub async fn kill(&mut self) {
        let _ = self.signal(Signal::SIGKILL);
        let _ = self.child.wait().await;
        self.forget_group();
    }

    fn forget_group(&mut self) {
        registry().lock().map(|mut g| g.remove(&self.pgid)).ok();
        self.reaped = true;
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = signal_tree(self.pgid, Signal::SIGKILL);
            registry().lock().map(|mut g| g.remove(&self.pgid)).ok();
        }
    }
}

/// A free TCP port on 127.0.0.1 *outside* the kernel's ephemeral range, for
/// a backend the nemesis restarts on the same port: a port from
/// [`stable_port`] lies in the ephemeral range, where any client socket may
/// take it while the backend is down (seen as `address already in use`).
/// Tries random ports in [`STABLE_PORTS`] until one binds.
pub fn stable_port() -> io::Result<u16> {
    use rand::Rng;
    let (low, high) = ephemeral_range();
    let mut rng = rand::rng();
    for _ in 0..200 {
        let port = rng.random_range(STABLE_PORTS);
        if (low..=high).contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other(format!("no free port in {STABLE_PORTS:?} outside the ephemeral range {low}-{high}")))
}

/// Where [`stable_port`] looks: below Linux's default ephemeral range
/// (32768-60999) and above the well-known services.
pub const STABLE_PORTS: std::ops::Range<u16> = 20_000..32_768;

/// The kernel's ephemeral port range (Linux's default when unreadable).
pub(crate) fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// Find an executable on PATH.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        use std::os::unix::fs::PermissionsExt;
        candidate.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The last `lines` lines of a log file, for error messages.
pub fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stable_port_is_outside_the_ephemeral_range() {
        let (low, high) = ephemeral_range();
        for _ in 0..20 {
            let port = stable_port().unwrap();
            assert!(!(low..=high).contains(&port) && STABLE_PORTS.contains(&port), "{port} (ephemeral {low}-{high})");
        }
    }

    #[tokio::test]
    async fn dropping_the_guard_kills_the_whole_group() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("sleep 300 & echo $!; wait");
        cmd.stdout(std::process::Stdio::piped());
        let mut guard = ChildGuard::spawn("sleeper", &mut cmd).unwrap();
        let stdout = guard.child_mut().stdout.take().unwrap();
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let grandchild: i32 = lines.next_line().await.unwrap().unwrap().trim().parse().unwrap();
        let parent = guard.pid();
        drop(guard);
        let gone = |pid: i32| {
            // A killed child may linger as a zombie until reaped; treat that as gone.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.split_whitespace().nth(2) == Some("Z")).unwrap_or(true)
        };
        for _ in 0..100 {
            if gone(grandchild) && gone(parent) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("process group survived its guard: parent {parent}, grandchild {grandchild}");
    }

    /// A start script that runs its server in a new session (setsid, su):
    /// killing the node must still take the server.
    #[tokio::test]
    async fn a_descendant_in_another_session_is_killed_and_paused_with_its_node() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("setsid sleep 300 & echo $!; wait");
        cmd.stdout(std::process::Stdio::piped());
        let mut guard = ChildGuard::spawn("setsid", &mut cmd).unwrap();
        let stdout = guard.child_mut().stdout.take().unwrap();
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let stray: i32 = lines.next_line().await.unwrap().unwrap().trim().parse().unwrap();
        let state = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim().chars().next().unwrap_or('?')))
        };
        // It left the group: a group signal alone would miss it.
        let sid = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(3).map(str::to_owned)))
        };
        for _ in 0..100 {
            if sid(stray) == Some(stray.to_string()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(sid(stray), Some(stray.to_string()), "setsid made it a session leader");
        guard.signal(Signal::SIGSTOP).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(state(stray), Some('T'), "paused with its node");
        guard.signal(Signal::SIGCONT).unwrap();
        guard.kill().await;
        for _ in 0..100 {
            if matches!(state(stray), None | Some('Z')) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{stray} in its own session outlived its node");
    }

    /// A graceful stop reaches the stray too, and one that ignores SIGTERM
    /// is killed at the end of the grace period, though its parent is gone.
    #[tokio::test]
    async fn terminate_takes_a_stray_that_ignores_sigterm() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("setsid sh -c 'trap \"\" TERM; exec sleep 300' & echo $!; wait");
        cmd.stdout(std::process::Stdio::piped());
        let mut guard = ChildGuard::spawn("stubborn", &mut cmd).unwrap();
        let stdout = guard.child_mut().stdout.take().unwrap();
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let stray: i32 = lines.next_line().await.unwrap().unwrap().trim().parse().unwrap();
        // Wait until the trap is set and sleep runs (it ignores SIGTERM then).
        for _ in 0..100 {
            if std::fs::read_to_string(format!("/proc/{stray}/comm")).is_ok_and(|c| c.trim() == "sleep") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(alive(stray));
        // Its parent shell dies of the SIGTERM at once; the stray does not.
        let _ = guard.terminate(Duration::from_millis(300)).await;
        for _ in 0..100 {
            if !alive(stray) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{stray} ignored SIGTERM and outlived terminate()");
    }
}
