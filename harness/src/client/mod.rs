//! The workload: which client connections exist, where they connect, and
//! running them. One tokio task per connection; each records into its own
//! trace buffer. Shared atomics only feed the progress bar and the drain.

mod connection;
mod intruder;
mod plan;
pub(crate) mod text;

pub(crate) use connection::CLIENTS_PER_SOURCE;
pub(crate) use plan::{ClientPlan, Schedule, plan_clients, plan_intruders, rooms_of, shard_plans};

use crate::scenario::Workload;
use crate::trace::{Clock, Event};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Live counters shared by the clients (progress and drain only; the trace
/// is the record).
#[derive(Debug)]
pub(crate) struct Shared {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub delivered: AtomicU64,
    pub errors: AtomicU64,
    /// Sends not yet acked, over all senders.
    pub outstanding: AtomicU64,
    pub closed: AtomicU64,
    /// On-time clients that were up (connected, and subscribed if they
    /// subscribe) at least once.
    pub ready: AtomicU64,
    /// Clients that gave up for good.
    pub gave_up: AtomicU64,
    /// Per room: highest acked `seq`.
    pub room_max_acked: Vec<AtomicU64>,
    /// Per client and room slot: highest delivered `seq` (subscribers), or
    /// u64::MAX once it gave up.
    pub client_last_seq: Vec<Box<[AtomicU64]>>,
    /// Per client: up right now (connected, and subscribed if it subscribes),
    /// or gave up. The drain waits for every client to be settled.
    pub settled: Vec<AtomicBool>,
    /// Clients the server refused for good, with its answer.
    pub refusals: std::sync::Mutex<Vec<(u32, String)>>,
    /// json_frames: server frames no matcher took, and the first of them
    /// (a declaration that does not fit the server shows up here).
    pub unmatched: AtomicU64,
    pub unmatched_example: std::sync::Mutex<Option<String>>,
    /// The first sends' texts and delivered frames, for saying where a
    /// declaration should read the text when every delivery differs.
    pub samples: std::sync::Mutex<Samples>,
    /// Per client: open-loop sends its schedule still holds (it has not
    /// attempted yet). The drain waits for every one of them, so the run
    /// never stops a client before its last due slot.
    pub sends_left: Vec<AtomicU64>,
    /// Trace time of the latest delivery (the drain of a seq-less system
    /// waits for deliveries to stop).
    pub last_delivery_ns: AtomicU64,
    /// `workload.connect_rate`: every connection attempt waits its turn.
    pub connect_pacer: Option<Pacer>,
}

/// Turns at a fixed rate, handed out first come, first served: the n-th
/// caller since an idle spell goes n periods later. Nothing is saved up
/// while nobody asks, so a reconnect storm after a quiet minute is paced
/// too. (A GCRA with no burst, as the `governor` crate has; ten lines here
/// rather than a dependency with features this does not use.)
#[derive(Debug)]
pub(crate) struct Pacer {
    period: Duration,
    next: std::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    pub(crate) fn per_second(rate: f64) -> Self {
        Self { period: Duration::from_secs_f64(1.0 / rate), next: std::sync::Mutex::new(tokio::time::Instant::now()) }
    }

    /// The instant of the caller's turn (reserved on return).
    pub(crate) fn reserve(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let mut next = self.next.lock().expect("pacer lock");
        let at = (*next).max(now);
        *next = at + self.period;
        at
    }
}

impl Shared {
    pub(crate) fn new(rooms: usize, plans: &[ClientPlan], duration: Duration) -> Self {
        let clients = plans.len();
        Self {
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            ready: AtomicU64::new(0),
            gave_up: AtomicU64::new(0),
            room_max_acked: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            client_last_seq: plans.iter().map(|p| p.rooms().map(|_| AtomicU64::new(0)).collect()).collect(),
            settled: (0..clients).map(|_| AtomicBool::new(false)).collect(),
            refusals: std::sync::Mutex::new(Vec::new()),
            unmatched: AtomicU64::new(0),
            unmatched_example: std::sync::Mutex::new(None),
            samples: std::sync::Mutex::default(),
            sends_left: plans.iter().map(|p| AtomicU64::new(p.schedule.and_then(|s| s.planned(duration)).unwrap_or(0))).collect(),
            last_delivery_ns: AtomicU64::new(0),
            connect_pacer: None,
        }
    }

    /// Pace connection attempts at `rate` per second (None: no pacing).
    pub(crate) fn with_connect_rate(mut self, rate: Option<f64>) -> Self {
        self.connect_pacer = rate.map(Pacer::per_second);
        self
    }

    /// Has the system settled: every scheduled send attempted and acked,
    /// every client settled, and (with `seq`) every subscriber caught up to
    /// its room's highest acked `seq`?
    pub(crate) fn drained(&self, plans: &[ClientPlan], seq: bool) -> bool {
        // `sends_left` is read before `outstanding` (both SeqCst), and
        // [`Shared::send_attempted`] counts a send as outstanding before it
        // leaves `sends_left`: a send in between is seen in one or the other.
        // (Was: the other order, both Relaxed; a sender preempted between
        // the two let the drain end with its last send unacked.)
        plans.iter().all(|p| {
            let id = p.id as usize;
            self.settled[id].load(Ordering::Relaxed)
                && self.sends_left[id].load(Ordering::SeqCst) == 0
                && (!p.role.subscribes()
                    || !seq
                    || p.rooms()
                        .zip(self.client_last_seq[id].iter())
                        .all(|(room, last)| last.load(Ordering::Relaxed) >= self.room_max_acked[room as usize].load(Ordering::Relaxed)))
        }) && self.outstanding.load(Ordering::SeqCst) == 0
    }

    /// Client `id` attempted a send: it is owed an ack (when the system
    /// acks) before it leaves the open-loop schedule's count, so the drain
    /// never sees it in neither.
    pub(crate) fn send_attempted(&self, id: usize, open_loop: bool, acks: bool) {
        if acks {
            self.outstanding.fetch_add(1, Ordering::SeqCst);
        }
        if open_loop {
            self.sends_left[id].fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// When the drain may stop waiting for what is still on its way.
struct Settle {
    seq: bool,
    acks: bool,
    confirm_after: Duration,
    sending_ended_ns: u64,
}

impl Settle {
    /// With `seq` and acks, the counters say what is missing: no wait.
    /// Without `seq`, deliveries must have stopped for [`QUIET`]; without
    /// acks also at least `confirm_after` past the end of sending (so the
    /// last sends can be confirmed by a delivery).
    fn quiet(&self, now_ns: u64, last_delivery_ns: u64) -> bool {
        if self.seq && self.acks {
            return true;
        }
        let (since, wait) = if self.acks {
            (last_delivery_ns, QUIET)
        } else {
            (last_delivery_ns.max(self.sending_ended_ns), QUIET.max(self.confirm_after))
        };
        now_ns.saturating_sub(since) >= wait.as_nanos() as u64
    }
}

/// The sending window, fixed once every client is ready.
/// Seq-less systems: the drain ends once no delivery came for this long.
const QUIET: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

/// Channels the nemesis shares with the clients: the sending window (so
/// faults are timed from its start) and the `drop_clients` signal.
pub(crate) struct Controls {
    pub window: watch::Sender<Option<Window>>,
    pub drops: watch::Receiver<(u64, f64)>,
}

impl Controls {
    pub(crate) fn new() -> (Self, watch::Sender<(u64, f64)>) {
        let (drops_tx, drops) = watch::channel((0, 0.0));
        (Self { window: watch::channel(None).0, drops }, drops_tx)
    }
}

/// What a finished workload hands back.
pub(crate) struct WorkloadOutcome {
    pub start_ns: u64,
    pub buffers: Vec<Vec<Event>>,
    pub sending_ended_ns: u64,
    pub drained: bool,
    pub drain_took: Duration,
    /// Clients the server refused for good, with its answer.
    pub refusals: Vec<(u32, String)>,
    /// json_frames: frames no matcher took, with the first one.
    pub unmatched: (u64, Option<String>),
    pub samples: Samples,
}

/// The first [`Samples::MAX`] sends (message, generated text) and text
/// frames that delivered a message (message, the frame, cut to
/// [`Samples::FRAME_CHARS`]): taken while they are few, one lock each.
#[derive(Debug, Default, Clone)]
pub(crate) struct Samples {
    pub sent: Vec<(crate::message::MsgNo, String)>,
    pub delivered: Vec<(crate::message::MsgNo, String)>,
}

impl Samples {
    pub(crate) const MAX: usize = 64;
    pub(crate) const FRAME_CHARS: usize = 4096;
}

/// What the clients run against: the plan, the nodes and the rooms.
pub(crate) struct Workforce<'a> {
    pub plans: &'a [ClientPlan],
    /// Every node's WebSocket URL.
    pub urls: &'a [String],
    pub rooms: &'a [String],
    pub workload: &'a Workload,
    pub seed: u64,
    pub clock: Clock,
    pub shared: Arc<Shared>,
    /// Open the sending window no earlier than this wall-clock instant (ns
    /// since the Unix epoch): shards start together.
    pub start_at_unix_ns: Option<u64>,
    /// The protocol and credentials clients use.
    pub system: &'a crate::scenario::System,
    /// Per client id: its `{token}` (empty without a token command).
    pub tokens: &'a [String],
    /// With `ack: none`: how long a send is given to show up somewhere
    /// (the drain lasts at least this long after sending ends).
    pub confirm_after: Duration,
    /// What intruders try (None: the scenario has no `auth`).
    pub auth: Option<&'a crate::scenario::Auth>,
    /// Every node's HTTP base, where intruders try the history API (empty:
    /// the system has none).
    pub http_bases: &'a [String],
    /// Signs `expiring` intruders' tokens when sending starts (the harness
    /// mints the credentials).
    pub signer: Option<crate::auth::Signer>,
}

/// The room an intruder with `other_room` credentials may use: its own,
/// outside the run (no traffic, so nothing of it can be taken for a leak).
/// It joins it first on every connection, as a member of one room who
/// then tries another would: a server that checks only a connection's
/// first room lets the next one through.
pub(crate) fn other_room(target: &str) -> String {
    format!("{target}-other")
}

/// The name an intruder puts where its wire writes the room it tries:
/// the room's own, for `wildcard` a pattern that covers it, for
/// `spelling` the spelling its credentials grant.
fn tried_as(credential: crate::trace::Credential, target: &str, client: u32) -> String {
    match credential {
        crate::trace::Credential::Wildcard => crate::scenario::wildcard_pattern(target, client),
        crate::trace::Credential::Spelling => granted_room(credential, target, client).unwrap_or_else(|| target.to_owned()),
        _ => target.to_owned(),
    }
}

/// An intruder's [`tried_as`], where that is not its room's own name
/// (recorded in the trace, so a finding can name what got through).
pub(crate) fn tried_as_other_name(plan: &ClientPlan, rooms: &[String]) -> Option<String> {
    let credential = plan.role.intruder()?;
    let target = rooms.get(plan.room as usize)?;
    Some(tried_as(credential, target, plan.msg_client)).filter(|t| t != target)
}

/// The room an intruder's credentials grant (None: they grant none):
/// `other_room`'s and `wildcard`'s [`other_room`], `confusable`'s
/// [`crate::scenario::confusable_room`], `spelling`'s
/// [`crate::scenario::room_spelling`] (by its message-number client, so
/// token and wire agree). It may be one of the run's rooms (`r1` for
/// `r10` where rooms are named `r{n}`): that room's messages are then
/// its own (see [`granted_run_room`]).
pub(crate) fn granted_room(credential: crate::trace::Credential, target: &str, client: u32) -> Option<String> {
    use crate::trace::Credential;
    match credential {
        Credential::OtherRoom | Credential::Wildcard => Some(other_room(target)),
        Credential::Confusable => Some(crate::scenario::confusable_room(target, client)),
        Credential::Spelling => Some(crate::scenario::room_spelling(target, client)),
        Credential::Expired | Credential::Forged | Credential::None | Credential::Expiring => None,
    }
}

/// The run's room an intruder's credentials grant, where its granted
/// name is one (recorded in the trace: what of it reaches the intruder
/// is its own, not a leak).
pub(crate) fn granted_run_room(plan: &ClientPlan, rooms: &[String]) -> Option<crate::trace::RoomIdx> {
    let target = rooms.get(plan.room as usize)?;
    let granted = granted_room(plan.role.intruder()?, target, plan.msg_client)?;
    rooms.iter().position(|r| *r == granted).map(|i| i as crate::trace::RoomIdx)
}

/// Run every client against its node until the sending window ends, then
/// drain until the system settles (or `drain_timeout`).
pub(crate) async fn run(force: Workforce<'_>, controls: Controls) -> WorkloadOutcome {
    let Workforce {
        plans,
        urls,
        rooms,
        workload,
        seed,
        clock,
        shared,
        start_at_unix_ns,
        system,
        tokens,
        confirm_after,
        auth,
        http_bases,
        signer,
    } = force;
    let seq = system.guarantees.seq();
    let acks = system.guarantees.ack != crate::scenario::AckGuarantee::None;
    let (stop_tx, stop_rx) = watch::channel(false);
    let Controls { window: start_tx, drops } = controls;
    let start_rx = start_tx.subscribe();
    let mut sender_rooms: Vec<Vec<crate::trace::RoomIdx>> =
        vec![Vec::new(); plans.iter().map(|p| p.msg_client as usize + 1).max().unwrap_or(0)];
    for p in plans.iter().filter(|p| p.role.sends()) {
        sender_rooms[p.msg_client as usize] = p.rooms().collect();
    }
    let sender_rooms = Arc::new(sender_rooms);
    let mut tasks = Vec::with_capacity(plans.len());
    // An intruder without credentials presents none of the declared ones.
    let anonymous = crate::scenario::System { credentials: Default::default(), ..system.clone() };
    for plan in plans {
        let room = &rooms[plan.room as usize];
        let token = tokens.get(plan.id as usize).map_or("", String::as_str);
        if let (Some(credential), Some(auth)) = (plan.role.intruder(), auth) {
            let system = if credential == crate::trace::Credential::None { &anonymous } else { system };
            let (upgrade_headers, upgrade_query) = upgrade_credentials(&system.credentials, plan.msg_client, room, token);
            let node = plan.node as usize % urls.len().max(1);
            let ctx = intruder::Context {
                plan: plan.clone(),
                urls: urls.iter().cycle().skip(node).take(urls.len()).cloned().collect(),
                http_bases: http_bases.iter().cycle().skip(node).take(http_bases.len()).cloned().collect(),
                room: tried_as(credential, room, plan.msg_client),
                // A spelling is tried, not joined first.
                own_room: granted_room(credential, room, plan.msg_client).filter(|_| credential != crate::trace::Credential::Spelling),
                wire: wire_of(
                    system,
                    plan.msg_client,
                    token,
                    vec![
                        tried_as(credential, room, plan.msg_client),
                        granted_room(credential, room, plan.msg_client).unwrap_or_else(|| other_room(room)),
                    ],
                ),
                upgrade_headers,
                upgrade_query,
                // A pattern is subscribed to, not sent into or read; a
                // spelling is subscribed to and read, not sent into.
                attempts: auth
                    .attempts
                    .iter()
                    .copied()
                    .filter(|a| match credential {
                        crate::trace::Credential::Wildcard => {
                            matches!(a, crate::trace::Attempt::Subscribe | crate::trace::Attempt::Resubscribe)
                        }
                        crate::trace::Credential::Spelling => *a != crate::trace::Attempt::Send,
                        _ => true,
                    })
                    .collect(),
                answer_within: auth.answer_within.0,
                seq,
                expiring: (credential == crate::trace::Credential::Expiring).then(|| {
                    let (system, room, client) = (system.clone(), room.clone(), plan.msg_client);
                    let signer = signer.clone();
                    intruder::Expiring {
                        after: auth.expire_after.0,
                        renew: Arc::new(move |exp: u64| {
                            let token = signer
                                .as_ref()
                                .map_or_else(String::new, |sign| sign(&format!("client-{client}"), std::slice::from_ref(&room), exp));
                            let (headers, query) = upgrade_credentials(&system.credentials, client, &room, &token);
                            let wire = wire_of(&system, client, &token, vec![room.clone(), other_room(&room)]);
                            (headers, query, wire)
                        }),
                    }
                }),
                clock,
                start: start_rx.clone(),
                stop: stop_rx.clone(),
            };
            // Nothing waits for an intruder: it is never part of the drain.
            shared.settled[plan.id as usize].store(true, Ordering::Relaxed);
            tasks.push(tokio::spawn(intruder::run(ctx)));
            continue;
        }
        let (upgrade_headers, mut upgrade_query) = upgrade_credentials(&system.credentials, plan.msg_client, room, token);
        let client_rooms: Vec<(crate::trace::RoomIdx, String)> = plan.rooms().map(|r| (r, rooms[r as usize].clone())).collect();
        let wire = wire_of(system, plan.msg_client, token, client_rooms.iter().map(|(_, name)| name.clone()).collect());
        for &(k, v) in wire.upgrade_query() {
            if !urls.iter().any(|u| u.contains(&format!("{k}="))) {
                upgrade_query.push((k.to_owned(), v.to_owned()));
            }
        }
        // A seq is resumed from only where the protocol can ask for it.
        let resumes = seq && wire.resumes();
        let ctx = connection::Context {
            wire,
            seq: resumes,
            acks,
            echo: system.guarantees.echo,
            upgrade_headers,
            upgrade_query,
            plan: plan.clone(),
            urls: urls.to_vec(),
            drops: drops.clone(),
            rooms: client_rooms,
            workload: workload.clone(),
            clock,
            start: start_rx.clone(),
            seed,
            shared: shared.clone(),
            stop: stop_rx.clone(),
            sender_rooms: sender_rooms.clone(),
        };
        tasks.push(tokio::spawn(connection::run(ctx)));
    }
    // Everyone connects (and subscribes) first, so no subscriber misses the
    // first sends and connection set-up is not measured as latency. A client
    // not ready by `connect_timeout` is a finding, not a reason to wait on.
    let on_time = plans.iter().filter(|p| p.join_at.is_zero() && p.role.intruder().is_none()).count() as u64;
    let ready_deadline = tokio::time::Instant::now() + workload.connect_timeout.0;
    while shared.ready.load(Ordering::Relaxed) + shared.gave_up.load(Ordering::Relaxed) < on_time
        && tokio::time::Instant::now() < ready_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut start_ns = clock.now_ns() + 20_000_000;
    if let Some(at) = start_at_unix_ns {
        let at_ns = clock.ns_of_unix_ns(at);
        if at_ns < start_ns {
            tracing::warn!(late_ms = (start_ns - at_ns) / 1_000_000, "ready after --start-at: sending starts now");
        }
        start_ns = start_ns.max(at_ns);
    }
    let end_ns = start_ns + workload.duration.0.as_nanos() as u64;
    let _ = start_tx.send(Some(Window { start_ns, end_ns }));
    tokio::time::sleep_until(clock.instant_at(end_ns).into()).await;
    let sending_ended_ns = clock.now_ns();
    let drain_started = tokio::time::Instant::now();
    let deadline = drain_started + workload.drain_timeout.0;
    let mut drained = false;
    while tokio::time::Instant::now() < deadline {
        // An error frame does not settle a send (it is resent); only an ack does.
        // Without `seq` nothing says what a subscriber still lacks: the drain
        // also waits until deliveries have stopped for QUIET.
        let settle = Settle { seq, acks, confirm_after, sending_ended_ns };
        if settle.quiet(clock.now_ns(), shared.last_delivery_ns.load(Ordering::Relaxed)) && shared.drained(plans, seq) {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_took = drain_started.elapsed();
    let _ = stop_tx.send(true);
    let mut buffers = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(events) => buffers.push(events),
            Err(e) => tracing::error!(error = %e, "a client task failed"),
        }
    }
    let refusals = std::mem::take(&mut *shared.refusals.lock().expect("refusals lock"));
    let unmatched = (shared.unmatched.load(Ordering::Relaxed), shared.unmatched_example.lock().expect("unmatched lock").take());
    let samples = std::mem::take(&mut *shared.samples.lock().expect("samples lock"));
    WorkloadOutcome { start_ns, buffers, sending_ended_ns, drained, drain_took, refusals, unmatched, samples }
}

/// A client's way of speaking the system's protocol, rooms home first.
fn wire_of(system: &crate::scenario::System, client: u32, token: &str, rooms: Vec<String>) -> crate::protocol::Wire {
    let who = crate::protocol::Who { client, token, connect_headers: &system.credentials.connect_headers };
    let promises = crate::protocol::Promises {
        acks: system.guarantees.ack != crate::scenario::AckGuarantee::None,
        recovery: system.guarantees.history == crate::scenario::HistoryGuarantee::Recovery,
    };
    system.protocol.wire(&who, promises, rooms)
}

/// Name-value pairs (headers, query parameters).
pub(crate) type Pairs = Vec<(String, String)>;

/// Upgrade headers and query parameters of one client's credentials.
pub(crate) fn upgrade_credentials(c: &crate::scenario::Credentials, client: u32, room: &str, token: &str) -> (Pairs, Pairs) {
    let filled = |m: &std::collections::BTreeMap<String, String>| {
        m.iter().map(|(k, v)| (k.clone(), crate::protocol::fill_credentials(v, client, room, token))).collect()
    };
    (filled(&c.headers), filled(&c.query))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_pacer_hands_out_turns_at_its_rate_and_saves_none_up() {
        let period = Duration::from_millis(10);
        let pacer = super::Pacer::per_second(100.0);
        let before = tokio::time::Instant::now();
        let turns: Vec<tokio::time::Instant> = (0..5).map(|_| pacer.reserve()).collect();
        assert!(turns[0] >= before);
        // Never closer than a period (a preempted caller only widens a gap).
        assert!(turns.windows(2).all(|w| w[1] - w[0] >= period), "{turns:?}");
        assert!(turns[4] - turns[0] >= 4 * period);
        // After a quiet spell longer than the turns handed out, the next
        // turn is now and the one after a full period later: nothing saved
        // up, no burst.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = tokio::time::Instant::now();
        let (a, b) = (pacer.reserve(), pacer.reserve());
        assert!(a >= now && b - a >= period, "{now:?} {a:?} {b:?}");
    }

    #[test]
    fn credentials_are_filled_per_client() {
        let mut c = crate::scenario::Credentials::default();
        c.headers.insert("Authorization".into(), "Bearer {token}".into());
        c.query.insert("user".into(), "u{client}-{room}".into());
        let (headers, query) = upgrade_credentials(&c, 5, "r", "T");
        assert_eq!(headers, vec![("Authorization".to_owned(), "Bearer T".to_owned())]);
        assert_eq!(query, vec![("user".to_owned(), "u5-r".to_owned())]);
    }

    use super::*;
    use crate::trace::Role;

    fn sender(id: u32, schedule: Schedule) -> ClientPlan {
        ClientPlan {
            id,
            msg_client: id,
            role: Role::Sender,
            node: 0,
            room: 0,
            also: Vec::new(),
            join_at: Duration::ZERO,
            after: None,
            schedule: Some(schedule),
        }
    }

    /// The run must not stop a client before its last due slot: the drain
    /// is not done while an open-loop schedule still holds a send, even
    /// when everything sent so far is acked.
    #[test]
    fn without_acks_the_drain_outlasts_confirm_after() {
        let s = |seq, acks| Settle { seq, acks, confirm_after: Duration::from_secs(2), sending_ended_ns: 10 * SEC };
        const SEC: u64 = 1_000_000_000;
        assert!(s(true, true).quiet(10 * SEC, 0), "seq and acks: the counters say it all");
        assert!(!s(false, true).quiet(10 * SEC, 9_500_000_000), "seq-less: deliveries stopped under 1 s ago");
        assert!(s(false, true).quiet(10 * SEC, 9 * SEC));
        // No acks: 2 s past the end of sending, however quiet deliveries are.
        assert!(!s(true, false).quiet(11 * SEC, 0));
        assert!(!s(false, false).quiet(11_900_000_000, 5 * SEC));
        assert!(s(false, false).quiet(12 * SEC, 5 * SEC));
        assert!(!s(false, false).quiet(12 * SEC, 11 * SEC), "and deliveries still arriving keep it waiting");
    }

    #[test]
    fn the_drain_waits_for_every_scheduled_send() {
        let plans = [sender(0, Schedule::Open { period_ns: 133_333_333, offset_ns: 0 }), sender(1, Schedule::Closed { in_flight: 1 })];
        let shared = Shared::new(1, &plans, Duration::from_secs(8));
        for s in &shared.settled {
            s.store(true, Ordering::Relaxed);
        }
        assert_eq!(shared.sends_left[0].load(Ordering::Relaxed), 61);
        assert_eq!(shared.sends_left[1].load(Ordering::Relaxed), 0, "a closed loop has no schedule to wait for");
        shared.sends_left[0].store(1, Ordering::Relaxed);
        assert!(!shared.drained(&plans, true), "one slot is still due");
        shared.sends_left[0].store(0, Ordering::Relaxed);
        assert!(shared.drained(&plans, true));
    }

    /// Whatever the interleaving, the drain never sees a client's last send
    /// attempted and not yet acked as settled: a reader checking `drained`
    /// while a sender attempts its last send and is then acked may see
    /// `drained` only after the ack. Many rounds, two threads.
    #[test]
    fn the_drain_never_ends_between_a_last_send_and_its_ack() {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Barrier};
        let plans = Arc::new([sender(0, Schedule::Open { period_ns: 1_000_000_000, offset_ns: 0 })]);
        const ROUNDS: usize = 20_000;
        let barrier = Arc::new(Barrier::new(2));
        let shareds: Arc<Vec<Shared>> = Arc::new((0..ROUNDS).map(|_| Shared::new(1, &plans[..], Duration::from_secs(1))).collect());
        let acked: Arc<Vec<AtomicBool>> = Arc::new((0..ROUNDS).map(|_| AtomicBool::new(false)).collect());
        for s in shareds.iter() {
            s.settled[0].store(true, Ordering::SeqCst);
        }
        let writer = {
            let (barrier, shareds, acked) = (barrier.clone(), shareds.clone(), acked.clone());
            std::thread::spawn(move || {
                for r in 0..ROUNDS {
                    barrier.wait();
                    shareds[r].send_attempted(0, true, true);
                    acked[r].store(true, Ordering::SeqCst);
                    shareds[r].outstanding.fetch_sub(1, Ordering::SeqCst);
                }
            })
        };
        let mut early = 0;
        for r in 0..ROUNDS {
            barrier.wait();
            while !shareds[r].drained(&plans[..], false) {
                std::hint::spin_loop();
            }
            if !acked[r].load(Ordering::SeqCst) {
                early += 1;
            }
        }
        writer.join().unwrap();
        assert_eq!(early, 0, "the drain ended before the last send was acked in {early} of {ROUNDS} rounds");
    }
}
