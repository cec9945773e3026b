//! Synthetic traces: a correct run of any shape, generated without a
//! server, for property tests (inject known violations, expect exactly
//! them) and for the checker benchmarks.
//!
//! Each room runs in 1 ms slots, one message per slot from a random sender
//! (senders and chatters): sent at the slot's start, acked 0.4 ms later and
//! delivered to every receiver (subscribers, chatters, joined late
//! subscribers) 0.6 ms after the send, with the body that was sent and
//! labels naming its room. `seq` follows slot order, and history holds
//! every stored message with its body.
//!
//! With [`TraceShape::trouble`] the trace also carries what real runs
//! have and a correct checker must accept: sends answered with `error` and
//! resent, sender connections that close and resend, a sender's last send
//! left indeterminate (its connection closed; stored and delivered, or never
//! stored and delivered to no one), subscribers that reconnect and resubscribe
//! with `after`, subscribes refused and retried, late subscribers that catch
//! up from `after`, subscribers in two rooms on one connection, subscribers
//! that leave a room and rejoin it (resuming with `after`, or live from the
//! head), chatters (one connection sending and receiving), closed-loop
//! senders (no planned count), one fault, and an intruder per room that is
//! refused everything it tries (`auth.intruders`).

use crate::trace::{
    BodyDigest, ClientId, ClientInfo, DrainRecord, Event, EventKind, FaultRecord, Label, MsgNo, Role, RoomHistory, RoomIdx, Stored,
    TRACE_VERSION, Trace, TraceMeta, id_hash, msg_no,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy)]
pub struct TraceShape {
    pub rooms: u32,
    pub senders_per_room: u32,
    pub subscribers_per_room: u32,
    pub chatters_per_room: u32,
    pub messages_per_sender: u32,
    /// Add the recoverable trouble of real runs (see the module docs).
    pub trouble: bool,
}

impl TraceShape {
    /// Senders and subscribers only, no trouble.
    pub fn plain(rooms: u32, senders_per_room: u32, subscribers_per_room: u32, messages_per_sender: u32) -> Self {
        Self { rooms, senders_per_room, subscribers_per_room, chatters_per_room: 0, messages_per_sender, trouble: false }
    }
}

const US: u64 = 1_000;
const MS: u64 = 1_000_000;
/// When sending starts (every client is ready before it).
pub const SENDING_STARTS_NS: u64 = 500 * US;
/// Slot 0 of every room.
const FIRST_SLOT_NS: u64 = MS;
const SLOT_NS: u64 = MS;

/// The body every synthetic message is sent (and delivered) with.
pub fn body_of(msg: MsgNo) -> BodyDigest {
    BodyDigest::of(format!("message {msg} ✓").as_bytes())
}

/// The `message-id` a synthetic delivery carries (one per message).
pub fn message_id_of(room: RoomIdx, msg: MsgNo) -> u64 {
    id_hash(format!("{room}-{msg}").as_bytes())
}

/// A correct delivery of `msg` at `seq` in `room`.
pub fn delivery(room: RoomIdx, msg: MsgNo, seq: u64) -> EventKind {
    EventKind::Deliver { room, msg, seq, body: Some(body_of(msg)), label: Label::Ok, message_id: message_id_of(room, msg) }
}

/// How one send goes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Acked,
    /// Answered with `error`, resent, acked.
    ErrorThenAck,
    /// The connection closed before the answer; reconnect, resend, acked.
    CloseThenAck,
    /// The connection closed before the answer and nothing was resent:
    /// indeterminate. `stored`: history holds it (and it was delivered).
    Indeterminate {
        stored: bool,
    },
}

/// A subscriber that leaves the room after slot `leave` and joins again
/// after slot `back`, resuming with `after` or live from the head.
#[derive(Debug, Clone, Copy)]
struct Churn {
    leave: u32,
    back: u32,
    with_after: bool,
}

struct Receiver {
    client: ClientId,
    /// Highest seq delivered so far.
    last_seq: u64,
    joined: bool,
    /// Left the room (churn) and not back yet.
    away: bool,
    reconnect_at: Option<u32>,
    refused_at: Option<u32>,
    churn: Option<Churn>,
}

/// Who takes part in one room.
#[derive(Default)]
struct Cast {
    subscribers: Vec<ClientId>,
    senders: Vec<ClientId>,
    chatters: Vec<ClientId>,
    /// Subscribers of another room that also join this one on the same
    /// connection (connected by their home room).
    guests: Vec<ClientId>,
}

struct Gen {
    rng: StdRng,
    clients: Vec<ClientInfo>,
    events: Vec<Event>,
    history: Vec<RoomHistory>,
    end_ns: u64,
}

impl Gen {
    fn push(&mut self, t_ns: u64, client: ClientId, kind: EventKind) {
        self.events.push(Event { t_ns, client, kind });
        self.end_ns = self.end_ns.max(t_ns);
    }

    fn client(&mut self, role: Role, room: RoomIdx) -> ClientId {
        let id = self.clients.len() as ClientId;
        self.clients.push(ClientInfo { role, node: id % 3, room, ..Default::default() });
        id
    }

    /// Subscribe (request, then confirmation `gap` later).
    fn subscribe(&mut self, t: u64, client: ClientId, room: RoomIdx, head: u64, after: Option<u64>, gap: u64) {
        self.push(t, client, EventKind::Subscribing { room, after });
        self.push(t + gap, client, EventKind::Subscribed { room, head, after });
    }

    /// Everyone's clients first (a subscriber may also join the next room,
    /// so every room's cast is known before any is generated).
    fn casts(&mut self, shape: &TraceShape) -> Vec<Cast> {
        let mut casts: Vec<Cast> = (0..shape.rooms).map(|_| Cast::default()).collect();
        for room in 0..shape.rooms {
            for _ in 0..shape.subscribers_per_room {
                let c = self.client(Role::Subscriber, room);
                casts[room as usize].subscribers.push(c);
                if shape.trouble && shape.rooms >= 2 && self.rng.random_bool(0.3) {
                    let other = (room + 1) % shape.rooms;
                    self.clients[c as usize].also.push(other);
                    casts[other as usize].guests.push(c);
                }
            }
            for _ in 0..shape.senders_per_room {
                let c = self.client(Role::Sender, room);
                casts[room as usize].senders.push(c);
            }
            for _ in 0..shape.chatters_per_room {
                let c = self.client(Role::Chatter, room);
                casts[room as usize].chatters.push(c);
            }
        }
        casts
    }

    fn room(&mut self, room: RoomIdx, shape: &TraceShape, cast: &Cast) {
        let trouble = shape.trouble;
        let total = (shape.senders_per_room + shape.chatters_per_room) * shape.messages_per_sender;
        let mut receivers: Vec<Receiver> = Vec::new();
        // Multi-room subscribers keep their connection (no reconnects): a
        // reconnect would take both rooms down at once.
        let mut new_receiver = |client: ClientId, g: &mut Gen, simple: bool| {
            let plain = trouble && !simple && g.clients[client as usize].also.is_empty();
            let churn =
                (plain && g.clients[client as usize].role == Role::Subscriber && total >= 4 && g.rng.random_bool(0.25)).then(|| {
                    let leave = g.rng.random_range(0..total - 2);
                    let back = g.rng.random_range(leave + 1..total - 1);
                    Churn { leave, back, with_after: g.rng.random_bool(0.5) }
                });
            let plain = plain && churn.is_none();
            receivers.push(Receiver {
                client,
                last_seq: 0,
                joined: true,
                away: false,
                reconnect_at: (plain && g.rng.random_bool(0.3)).then(|| g.rng.random_range(0..total)),
                refused_at: (plain && g.rng.random_bool(0.2)).then(|| g.rng.random_range(0..total)),
                churn,
            });
        };
        for &c in &cast.subscribers {
            new_receiver(c, self, false);
        }
        for &c in &cast.chatters {
            new_receiver(c, self, true);
        }
        for &c in &cast.guests {
            new_receiver(c, self, true);
        }
        let senders: Vec<ClientId> = cast.senders.iter().chain(&cast.chatters).copied().collect();
        // A late subscriber joins at a slot and catches up from `after`.
        let late = (trouble && total >= 3 && self.rng.random_bool(0.5)).then(|| {
            let c = self.client(Role::Subscriber, room);
            let slot = self.rng.random_range(1..total);
            let t = FIRST_SLOT_NS + u64::from(slot) * SLOT_NS;
            self.clients[c as usize].join_at_ns = t - SENDING_STARTS_NS;
            receivers.push(Receiver {
                client: c,
                last_seq: 0,
                joined: false,
                away: false,
                reconnect_at: None,
                refused_at: None,
                churn: None,
            });
            (receivers.len() - 1, slot)
        });
        for r in receivers.iter().filter(|r| r.joined) {
            if self.clients[r.client as usize].room == room {
                self.push(0, r.client, EventKind::Connected { node: r.client % 3, took_us: 0 });
            }
            self.subscribe(50 * US, r.client, room, 0, None, 50 * US);
        }
        for &s in &cast.senders {
            self.push(0, s, EventKind::Connected { node: s % 3, took_us: 0 });
        }
        // Outcomes per sender: trouble in the middle, maybe an
        // indeterminate last send.
        let mut plans: Vec<Vec<Outcome>> = Vec::new();
        for &s in &senders {
            let n = shape.messages_per_sender;
            let mut plan: Vec<Outcome> = (0..n)
                .map(|_| match self.rng.random_range(0..20) {
                    0..=2 if trouble => Outcome::ErrorThenAck,
                    3..=5 if trouble => Outcome::CloseThenAck,
                    _ => Outcome::Acked,
                })
                .collect();
            if trouble && n >= 2 {
                match self.rng.random_range(0..4) {
                    0 => plan[n as usize - 1] = Outcome::Indeterminate { stored: true },
                    1 => plan[n as usize - 1] = Outcome::Indeterminate { stored: false },
                    _ => {}
                }
            }
            let closed_loop = trouble && self.rng.random_bool(0.25);
            self.clients[s as usize].planned_sends = (!closed_loop).then_some(u64::from(n));
            plans.push(plan);
        }
        let mut next_k = vec![0u32; senders.len()];
        let mut entries: Vec<Stored> = Vec::new();
        for slot in 0..total {
            let t = FIRST_SLOT_NS + u64::from(slot) * SLOT_NS;
            if let Some((i, join_slot)) = late
                && join_slot == slot
            {
                self.join_late(room, &mut receivers[i], t, &entries);
            }
            let open: Vec<usize> = (0..senders.len()).filter(|&j| next_k[j] < shape.messages_per_sender).collect();
            let j = open[self.rng.random_range(0..open.len())];
            let (sender, k) = (senders[j], next_k[j]);
            next_k[j] += 1;
            let msg = msg_no(sender, k);
            let body = body_of(msg);
            let outcome = plans[j][k as usize];
            let head = entries.len() as u64;
            let stored = !matches!(outcome, Outcome::Indeterminate { stored: false });
            let seq = head + u64::from(stored);
            self.push(t, sender, EventKind::Send { room, msg, scheduled_ns: t, body });
            match outcome {
                Outcome::Acked => self.push(t + 400 * US, sender, EventKind::Ack { room, msg, seq }),
                Outcome::ErrorThenAck => {
                    self.push(t + 100 * US, sender, EventKind::Error { msg: Some(msg) });
                    self.push(t + 200 * US, sender, EventKind::Send { room, msg, scheduled_ns: t, body });
                    self.push(t + 400 * US, sender, EventKind::Ack { room, msg, seq });
                }
                Outcome::CloseThenAck | Outcome::Indeterminate { .. } => {
                    self.push(t + 100 * US, sender, EventKind::Closed { code: None });
                    self.push(t + 150 * US, sender, EventKind::Connected { node: (sender + 1) % 3, took_us: 0 });
                    // A chatter resubscribes from the last seq it saw.
                    if let Some(r) = receivers.iter().find(|r| r.client == sender) {
                        self.subscribe(t + 170 * US, sender, room, head, Some(r.last_seq), 10 * US);
                    }
                    if outcome == Outcome::CloseThenAck {
                        self.push(t + 200 * US, sender, EventKind::Send { room, msg, scheduled_ns: t, body });
                        self.push(t + 400 * US, sender, EventKind::Ack { room, msg, seq });
                    }
                }
            }
            // A churner sends its unsubscribe just before this slot's
            // delivery, which is then in flight: it arrives, is ignored,
            // and a rejoin with `after` gets it again.
            let mut before_leaving: Vec<(ClientId, u64)> = Vec::new();
            for r in receivers.iter().filter(|r| r.joined && r.churn.is_some_and(|c| c.leave == slot)) {
                self.events.push(Event { t_ns: t + 550 * US, client: r.client, kind: EventKind::Leaving { room } });
                before_leaving.push((r.client, r.last_seq));
            }
            if stored {
                entries.push(Stored::new(seq, msg, Some(body)));
                for r in receivers.iter_mut().filter(|r| r.joined && !r.away) {
                    self.events.push(Event { t_ns: t + 600 * US, client: r.client, kind: delivery(room, msg, seq) });
                    r.last_seq = seq;
                }
            }
            let head = entries.len() as u64;
            for r in receivers.iter_mut().filter(|r| r.joined) {
                if r.reconnect_at == Some(slot) {
                    self.events.push(Event { t_ns: t + 700 * US, client: r.client, kind: EventKind::Closed { code: Some(1001) } });
                    self.events.push(Event {
                        t_ns: t + 750 * US,
                        client: r.client,
                        kind: EventKind::Connected { node: (r.client + 1) % 3, took_us: 0 },
                    });
                    let (client, last) = (r.client, r.last_seq);
                    self.subscribe(t + 780 * US, client, room, head, Some(last), 20 * US);
                } else if r.refused_at == Some(slot) {
                    self.events.push(Event { t_ns: t + 700 * US, client: r.client, kind: EventKind::Closed { code: None } });
                    self.events.push(Event {
                        t_ns: t + 750 * US,
                        client: r.client,
                        kind: EventKind::Connected { node: r.client % 3, took_us: 0 },
                    });
                    let (client, last) = (r.client, r.last_seq);
                    self.push(t + 760 * US, client, EventKind::Subscribing { room, after: Some(last) });
                    self.push(t + 780 * US, client, EventKind::SubscribeRefused { room });
                    self.subscribe(t + 800 * US, client, room, head, Some(last), 50 * US);
                }
                match r.churn {
                    Some(c) if c.leave == slot => {
                        self.events.push(Event { t_ns: t + 660 * US, client: r.client, kind: EventKind::Left { room } });
                        r.away = true;
                        r.last_seq = before_leaving.iter().find(|(c, _)| *c == r.client).map_or(r.last_seq, |&(_, seq)| seq);
                    }
                    Some(c) if c.back == slot => {
                        let client = r.client;
                        let after = c.with_after.then_some(r.last_seq);
                        self.events.push(Event { t_ns: t + 650 * US, client, kind: EventKind::Subscribing { room, after } });
                        self.events.push(Event { t_ns: t + 680 * US, client, kind: EventKind::Subscribed { room, head, after } });
                        if let Some(after) = after {
                            for (n, e) in entries.iter().filter(|e| e.seq > after).enumerate() {
                                let kind = delivery(room, e.msg, e.seq);
                                self.events.push(Event { t_ns: t + 690 * US + n as u64 * US, client, kind });
                            }
                        }
                        r.last_seq = head;
                        r.away = false;
                    }
                    _ => {}
                }
            }
            self.end_ns = self.end_ns.max(t + SLOT_NS);
        }
        self.history.push(RoomHistory { entries, complete: true });
    }

    /// A late subscriber connects at `t`, subscribes with `after` below the
    /// head and gets the missing history first.
    fn join_late(&mut self, room: RoomIdx, r: &mut Receiver, t: u64, entries: &[Stored]) {
        let head = entries.len() as u64;
        let after = if head == 0 { 0 } else { self.rng.random_range(0..head) };
        self.push(t, r.client, EventKind::Connected { node: r.client % 3, took_us: 0 });
        self.clients[r.client as usize].after = Some(after);
        self.subscribe(t + 20 * US, r.client, room, head, Some(after), 30 * US);
        for (n, e) in entries.iter().filter(|e| e.seq > after).enumerate() {
            self.push(t + 60 * US + n as u64 * US, r.client, delivery(room, e.msg, e.seq));
        }
        r.last_seq = head;
        r.joined = true;
    }
}

impl Gen {
    /// An intruder in `room` (credentials cycling through every kind, by
    /// room and client, so shapes of few rooms see them all) that is
    /// refused everything: a send answered with `error` (never stored), a
    /// subscribe refused, a resubscribe and a history read refused.
    fn intruder(&mut self, room: RoomIdx) {
        use crate::trace::{Answer, Attempt, Credential};
        let client = self.clients.len() as ClientId;
        let credential = Credential::ALL[(room as usize + client as usize) % Credential::ALL.len()];
        self.clients.push(ClientInfo { role: Role::Intruder(credential), room, ..Default::default() });
        let msg = msg_no(client, 0);
        let at = SENDING_STARTS_NS + 100 * US;
        let refused = Answer::Refused;
        let events = [
            (at, EventKind::Send { room, msg, scheduled_ns: at, body: body_of(msg) }),
            (at + 10 * US, EventKind::Error { msg: Some(msg) }),
            (at + 10 * US, EventKind::Probe { room, attempt: Attempt::Send, answer: refused, started_ns: at }),
            (at + 20 * US, EventKind::Subscribing { room, after: None }),
            (at + 30 * US, EventKind::SubscribeRefused { room }),
            (at + 30 * US, EventKind::Probe { room, attempt: Attempt::Subscribe, answer: refused, started_ns: at + 20 * US }),
            (at + 40 * US, EventKind::Probe { room, attempt: Attempt::Resubscribe, answer: refused, started_ns: at + 35 * US }),
            (
                self.end_ns.max(at + 50 * US),
                EventKind::Probe { room, attempt: Attempt::History, answer: refused, started_ns: self.end_ns.max(at + 50 * US) },
            ),
        ];
        self.events.extend(events.into_iter().map(|(t_ns, kind)| Event { t_ns, client, kind }));
    }
}

/// The trace without its multi-room subscribers' other rooms (their
/// membership events and deliveries there): what a room-affine split into
/// shards can represent when the rooms a generated client shares fall in
/// different shards (a planned sharded run keeps them in one).
pub fn without_guests(mut trace: Trace) -> Trace {
    let clients = trace.clients.clone();
    let home = |c: ClientId| clients[c as usize].room;
    trace.events.retain(|e| {
        let room = match e.kind {
            EventKind::Subscribing { room, .. } | EventKind::Subscribed { room, .. } | EventKind::Deliver { room, .. } => room,
            _ => return true,
        };
        clients[e.client as usize].also.is_empty() || room == home(e.client)
    });
    for c in &mut trace.clients {
        c.also.clear();
    }
    trace
}

pub fn correct_trace(shape: &TraceShape, seed: u64) -> Trace {
    let mut g = Gen { rng: StdRng::seed_from_u64(seed), clients: Vec::new(), events: Vec::new(), history: Vec::new(), end_ns: 0 };
    let casts = g.casts(shape);
    for (room, cast) in casts.iter().enumerate() {
        g.room(room as RoomIdx, shape, cast);
    }
    if shape.trouble {
        for room in 0..shape.rooms {
            g.intruder(room);
        }
    }
    g.events.sort_by_key(|e| (e.t_ns, e.client));
    let faults = if shape.trouble {
        vec![FaultRecord { action: "drop_clients".into(), node: None, start_ns: 300 * US, end_ns: 400 * US, error: None, clients: None }]
    } else {
        Vec::new()
    };
    Trace {
        version: TRACE_VERSION,
        meta: TraceMeta {
            scenario: "synthetic".into(),
            mode: crate::scenario::Mode::Changestream.into(),
            seed,
            warmup_ns: SENDING_STARTS_NS,
            sending_started_ns: SENDING_STARTS_NS,
            sending_ended_ns: g.end_ns,
            ended_ns: g.end_ns + MS,
            load: Some(crate::scenario::Load::Open { rate_per_s: 1000.0 }),
            drain: DrainRecord { completed: true, took_ns: MS },
            history_source: "synthetic".into(),
            faults,
            ..Default::default()
        },
        rooms: (0..shape.rooms).map(|r| format!("room-{r}")).collect(),
        clients: g.clients,
        events: g.events,
        history: g.history,
        api_history: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Finding, FindingKind, all_findings};
    use crate::scenario::Checks;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// What a finding is identified by in these tests.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum Key {
        Msg(FindingKind, MsgNo, Option<u32>),
        Seq(FindingKind, u32, u64),
        Client(FindingKind, u32, Option<u32>),
        Room(FindingKind, u32),
        Global(FindingKind),
    }

    /// The shard a `shard_missing` finding names (its detail is the only place).
    fn pick_shard(f: &Finding) -> u64 {
        f.detail.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(u64::MAX)
    }

    fn key(f: &Finding) -> Key {
        use FindingKind::*;
        match f.kind {
            HistoryGap | HistoryMismatch | StoredTwice => Key::Seq(f.kind, f.room.unwrap_or(u32::MAX), f.seq.unwrap_or(0)),
            HistoryUnavailable | NoProgress => Key::Room(f.kind, f.room.unwrap_or(u32::MAX)),
            NotReady | Unattempted | GaveUp | Outage | NotRecovered => Key::Client(f.kind, f.client.unwrap_or(u32::MAX), f.fault),
            DrainIncomplete => Key::Global(f.kind),
            ShardMissing => Key::Seq(f.kind, u32::MAX, pick_shard(f)),
            _ => Key::Msg(f.kind, f.msg.unwrap_or(u64::MAX), f.client),
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Injection {
        DropDelivery,
        DuplicateDelivery,
        Phantom,
        SwapAdjacent,
        FifoSwap,
        HistoryDrop,
        SeqConflict,
        Unanswered,
        ConflictingAck,
        StoredTwice,
        BeforeStart,
        Unattempted,
        NotReady,
        NoProgress,
        DrainIncomplete,
        ShardMissing,
        GaveUp,
        Outage,
        NotRecovered,
        HistoryUnavailable,
        UnknownAgreement,
        UnstoredDelivered,
        BogusHead,
        SubscriberGivesUp,
        CorruptDelivery,
        CorruptStored,
        Mislabel,
        ReusedMessageId,
        Leak,
        Stale,
        ApiLeavesOut,
        ApiCorrupt,
        /// An intruder's subscribe, resubscribe or send is let in, or
        /// gets no answer.
        IntruderLetIn,
        /// A message of its room reaches an intruder.
        IntruderLeak,
        /// An intruder's history read is served.
        IntruderServedHistory,
    }

    const INJECTIONS: [Injection; 35] = [
        Injection::DropDelivery,
        Injection::DuplicateDelivery,
        Injection::Phantom,
        Injection::SwapAdjacent,
        Injection::FifoSwap,
        Injection::HistoryDrop,
        Injection::SeqConflict,
        Injection::Unanswered,
        Injection::ConflictingAck,
        Injection::StoredTwice,
        Injection::BeforeStart,
        Injection::Unattempted,
        Injection::NotReady,
        Injection::NoProgress,
        Injection::DrainIncomplete,
        Injection::ShardMissing,
        Injection::GaveUp,
        Injection::Outage,
        Injection::NotRecovered,
        Injection::HistoryUnavailable,
        Injection::UnknownAgreement,
        Injection::UnstoredDelivered,
        Injection::BogusHead,
        Injection::SubscriberGivesUp,
        Injection::CorruptDelivery,
        Injection::CorruptStored,
        Injection::Mislabel,
        Injection::ReusedMessageId,
        Injection::Leak,
        Injection::Stale,
        Injection::ApiLeavesOut,
        Injection::ApiCorrupt,
        Injection::IntruderLetIn,
        Injection::IntruderLeak,
        Injection::IntruderServedHistory,
    ];

    fn injection() -> impl Strategy<Value = (Injection, u64)> {
        (0..INJECTIONS.len(), any::<u64>()).prop_map(|(i, pick)| (INJECTIONS[i], pick))
    }

    /// Applies violations to a correct trace and keeps the exact set of
    /// findings they must produce. Each injection touches messages, clients
    /// or rooms no other injection touched, and never removes the last
    /// delivery of a subscriber or the last ack of a sender (which would
    /// add liveness findings it did not inject).
    struct Injector {
        trace: Trace,
        reserved: HashSet<MsgNo>,
        reserved_clients: HashSet<ClientId>,
        reserved_rooms: HashSet<RoomIdx>,
        /// Clients in several rooms or that leave and rejoin: reserved
        /// from the injections that remove or move deliveries (whose
        /// owed-ness depends on one room and one membership); the
        /// injections that only relabel or alter deliveries use them too.
        special: HashSet<ClientId>,
        /// Edits of the served history (the history API), applied to the
        /// oracle's history after every injection.
        api_edits: Vec<ApiEdit>,
        expected: Vec<Key>,
        next_phantom: u64,
        next_bogus_seq: u64,
    }

    #[derive(Debug, Clone, Copy)]
    enum ApiEdit {
        LeaveOut(RoomIdx, u64),
        Corrupt(RoomIdx, u64),
    }

    fn pick_from<T: Copy>(items: &[T], pick: u64) -> Option<T> {
        (!items.is_empty()).then(|| items[(pick % items.len() as u64) as usize])
    }

    impl Injector {
        fn new(trace: Trace) -> Self {
            let churners = trace.events.iter().filter(|e| matches!(e.kind, EventKind::Leaving { .. })).map(|e| e.client);
            let guests = (0..trace.clients.len() as ClientId).filter(|&c| !trace.clients[c as usize].also.is_empty());
            let special: HashSet<ClientId> = churners.chain(guests).collect();
            // Intruders are only for the intruder injections.
            let intruders = (0..trace.clients.len() as ClientId).filter(|&c| trace.clients[c as usize].role.intruder().is_some());
            let reserved_clients = special.iter().copied().chain(intruders).collect();
            Self {
                trace,
                reserved: HashSet::new(),
                reserved_clients,
                reserved_rooms: HashSet::new(),
                special,
                api_edits: Vec::new(),
                expected: Vec::new(),
                next_phantom: u64::MAX - 1_000,
                next_bogus_seq: 1_000_000,
            }
        }

        fn end(&self) -> u64 {
            self.trace.meta.ended_ns
        }

        fn clients_where(&self, test: impl Fn(&ClientInfo) -> bool) -> Vec<ClientId> {
            (0..self.trace.clients.len() as ClientId)
                .filter(|&c| test(&self.trace.clients[c as usize]) && !self.reserved_clients.contains(&c))
                .collect()
        }

        /// Deliver a stored message of `room` that no injection touched to
        /// `client` at `t`: a leak. False when there is none to take.
        fn leak(&mut self, client: ClientId, room: RoomIdx, t: u64, pick: u64) -> bool {
            let entries: Vec<Stored> = self.trace.history[room as usize].entries.iter().copied().filter(|e| self.msg_free(e.msg)).collect();
            let Some(e) = pick_from(&entries, pick >> 9) else { return false };
            if !self.trace.history[room as usize].complete || self.sends_of(e.msg) == 0 {
                return false;
            }
            self.reserved.insert(e.msg);
            self.trace.events.push(Event { t_ns: t, client, kind: delivery(room, e.msg, e.seq) });
            self.expected.push(Key::Msg(FindingKind::Leak, e.msg, Some(client)));
            true
        }

        /// Intruders no injection touched yet.
        fn free_intruders(&self) -> Vec<ClientId> {
            let touched: HashSet<ClientId> =
                self.expected.iter().filter_map(|k| if let Key::Msg(_, _, Some(c)) = k { Some(*c) } else { None }).collect();
            (0..self.trace.clients.len() as ClientId)
                .filter(|&c| self.trace.clients[c as usize].role.intruder().is_some() && !touched.contains(&c))
                .collect()
        }

        fn receivers(&self) -> Vec<ClientId> {
            self.clients_where(|c| c.role.subscribes())
        }

        fn room_msgs(&self, room: RoomIdx) -> Vec<MsgNo> {
            self.trace
                .events
                .iter()
                .filter_map(|e| match e.kind {
                    EventKind::Send { room: r, msg, .. } if r == room => Some(msg),
                    _ => None,
                })
                .collect()
        }

        fn room_free(&self, room: RoomIdx) -> bool {
            !self.reserved_rooms.contains(&room) && self.room_msgs(room).iter().all(|m| !self.reserved.contains(m))
        }

        fn reserve_room(&mut self, room: RoomIdx) {
            self.reserved_rooms.insert(room);
            let msgs = self.room_msgs(room);
            self.reserved.extend(msgs);
            let clients = self.clients_where(|c| c.room == room);
            self.reserved_clients.extend(clients);
        }

        fn msg_free(&self, msg: MsgNo) -> bool {
            !self.reserved.contains(&msg)
        }

        fn deliveries_of(&self, client: ClientId) -> Vec<usize> {
            (0..self.trace.events.len())
                .filter(|&i| self.trace.events[i].client == client && matches!(self.trace.events[i].kind, EventKind::Deliver { .. }))
                .collect()
        }

        fn deliver(&self, i: usize) -> (RoomIdx, MsgNo, u64) {
            match self.trace.events[i].kind {
                EventKind::Deliver { room, msg, seq, .. } => (room, msg, seq),
                _ => unreachable!("index points at a delivery"),
            }
        }

        /// A delivery of a message nobody else touched, from a subscriber
        /// that keeps at least one other such delivery when `removing`.
        fn pick_delivery(&self, pick: u64, removing: bool) -> Option<usize> {
            let sub = pick_from(&self.receivers(), pick)?;
            let free: Vec<usize> = self.deliveries_of(sub).into_iter().filter(|&i| self.msg_free(self.deliver(i).1)).collect();
            if removing && free.len() < 2 {
                return None;
            }
            pick_from(&free, pick >> 8)
        }

        fn stored_seq(&self, msg: MsgNo) -> Option<u64> {
            self.trace.history.iter().flat_map(|h| &h.entries).find(|e| e.msg == msg).map(|e| e.seq)
        }

        fn acks_of(&self, sender: ClientId) -> Vec<usize> {
            (0..self.trace.events.len())
                .filter(|&i| self.trace.events[i].client == sender && matches!(self.trace.events[i].kind, EventKind::Ack { .. }))
                .collect()
        }

        fn ack(&self, i: usize) -> (RoomIdx, MsgNo, u64) {
            match self.trace.events[i].kind {
                EventKind::Ack { room, msg, seq } => (room, msg, seq),
                _ => unreachable!("index points at an ack"),
            }
        }

        /// Every message acked at least once.
        fn acked(&self) -> HashSet<MsgNo> {
            self.trace
                .events
                .iter()
                .filter_map(|e| match e.kind {
                    EventKind::Ack { msg, .. } => Some(msg),
                    _ => None,
                })
                .collect()
        }

        /// Never-acked messages (by first send order) of a room.
        /// A room's members' sends that were never acked (an intruder's
        /// refused send is settled by its refusal).
        fn unacked_in(&self, room: RoomIdx) -> Vec<MsgNo> {
            let acked = self.acked();
            let member = |m: &MsgNo| self.trace.clients.get(self.sender_of(*m) as usize).is_some_and(|c| c.role.intruder().is_none());
            let mut out: Vec<MsgNo> = self.room_msgs(room).into_iter().filter(|m| !acked.contains(m) && member(m)).collect();
            out.dedup();
            out
        }

        /// How many times `msg` was sent.
        fn sends_of(&self, msg: MsgNo) -> usize {
            self.trace.events.iter().filter(|e| matches!(e.kind, EventKind::Send { msg: m, .. } if m == msg)).count()
        }

        fn sender_of(&self, msg: MsgNo) -> ClientId {
            crate::trace::msg_parts(msg).0
        }

        /// Whether the connection `msg` was last sent on stays open to the
        /// end (so removing its answer leaves it unanswered, not indeterminate).
        fn last_send_stays_open(&self, msg: MsgNo) -> bool {
            let sender = self.sender_of(msg);
            let Some(last) =
                self.trace.events.iter().rposition(|e| e.client == sender && matches!(e.kind, EventKind::Send { msg: m, .. } if m == msg))
            else {
                return false;
            };
            !self.trace.events[last..].iter().any(|e| {
                e.client == sender && matches!(e.kind, EventKind::Closed { .. } | EventKind::Connected { .. } | EventKind::GaveUp { .. })
            })
        }

        /// Receivers that may be relabelled or altered (every subscribing
        /// client not reserved by another injection, special ones too).
        fn any_receivers(&self) -> Vec<ClientId> {
            (0..self.trace.clients.len() as ClientId)
                .filter(|&c| {
                    self.trace.clients[c as usize].role.subscribes() && (!self.reserved_clients.contains(&c) || self.special.contains(&c))
                })
                .collect()
        }

        /// Deliveries of untouched, sent messages to `clients`.
        fn free_deliveries(&self, clients: &[ClientId]) -> Vec<usize> {
            (0..self.trace.events.len())
                .filter(|&i| {
                    let e = &self.trace.events[i];
                    clients.contains(&e.client)
                        && matches!(e.kind, EventKind::Deliver { msg, .. } if self.msg_free(msg) && msg < self.next_phantom - 1_000)
                })
                .collect()
        }

        /// The served history: the oracle's, with the bodies that were
        /// sent, and the API edits.
        fn serve_history(&mut self) {
            if self.api_edits.is_empty() {
                return;
            }
            let mut served: Vec<RoomHistory> = self
                .trace
                .history
                .iter()
                .map(|h| RoomHistory {
                    entries: h.entries.iter().map(|e| Stored::new(e.seq, e.msg, Some(body_of(e.msg)))).collect(),
                    complete: true,
                })
                .collect();
            for edit in &self.api_edits {
                match *edit {
                    ApiEdit::LeaveOut(room, seq) => served[room as usize].entries.retain(|e| e.seq != seq),
                    ApiEdit::Corrupt(room, seq) => {
                        for e in served[room as usize].entries.iter_mut().filter(|e| e.seq == seq) {
                            e.body = Some(BodyDigest::of(b"not what was sent"));
                        }
                    }
                }
            }
            self.trace.api_history = served;
        }

        fn apply(&mut self, injection: Injection, pick: u64) {
            self.inject(injection, pick);
            self.serve_history();
            self.trace.events.sort_by_key(|e| (e.t_ns, e.client));
            self.trace.meta.ended_ns = self.trace.meta.ended_ns.max(self.trace.events.last().map_or(0, |e| e.t_ns));
        }

        fn inject(&mut self, injection: Injection, pick: u64) {
            match injection {
                Injection::DropDelivery => {
                    let Some(i) = self.pick_delivery(pick, true) else { return };
                    let (_, msg, _) = self.deliver(i);
                    let client = self.trace.events[i].client;
                    self.reserved.insert(msg);
                    // Giving up later would stop owing it the message.
                    self.reserved_clients.insert(client);
                    self.trace.events.remove(i);
                    self.expected.push(Key::Msg(FindingKind::Lost, msg, Some(client)));
                }
                Injection::DuplicateDelivery => {
                    let Some(i) = self.pick_delivery(pick, false) else { return };
                    let (_, msg, _) = self.deliver(i);
                    let mut copy = self.trace.events[i];
                    self.reserved.insert(msg);
                    copy.t_ns += 1;
                    self.trace.events.insert(i + 1, copy);
                    self.expected.push(Key::Msg(FindingKind::Duplicated, msg, Some(copy.client)));
                }
                Injection::Phantom => {
                    let Some(client) = pick_from(&self.receivers(), pick) else { return };
                    let room = self.trace.clients[client as usize].room;
                    let (msg, seq) = (self.next_phantom, self.next_bogus_seq);
                    self.next_phantom += 1;
                    self.next_bogus_seq += 1;
                    self.reserved.insert(msg);
                    // Its history finding needs the room's history to stay readable.
                    self.reserved_rooms.insert(room);
                    let t = self.end();
                    self.trace.events.push(Event { t_ns: t, client, kind: delivery(room, msg, seq) });
                    self.expected.push(Key::Msg(FindingKind::Phantom, msg, Some(client)));
                    self.expected.push(Key::Seq(FindingKind::HistoryMismatch, room, seq));
                }
                Injection::SwapAdjacent => {
                    let Some(sub) = pick_from(&self.receivers(), pick) else { return };
                    let ds = self.deliveries_of(sub);
                    let pairs: Vec<(usize, usize)> = ds
                        .windows(2)
                        .map(|w| (w[0], w[1]))
                        .filter(|&(a, b)| self.msg_free(self.deliver(a).1) && self.msg_free(self.deliver(b).1))
                        .collect();
                    let Some((a, b)) = pick_from(&pairs, pick >> 8) else { return };
                    let (msg_a, msg_b) = (self.deliver(a).1, self.deliver(b).1);
                    self.reserved.extend([msg_a, msg_b]);
                    let (ta, tb) = (self.trace.events[a].t_ns, self.trace.events[b].t_ns);
                    self.trace.events[a].t_ns = tb;
                    self.trace.events[b].t_ns = ta;
                    // Now b arrives first; a (the lower seq) arrives after it.
                    self.expected.push(Key::Msg(FindingKind::OrderViolation, msg_a, Some(sub)));
                }
                Injection::FifoSwap => self.fifo_swap(pick),
                Injection::HistoryDrop => {
                    let acked = self.acked();
                    let room = (pick % self.trace.history.len() as u64) as usize;
                    if !self.trace.history[room].complete {
                        return;
                    }
                    let entries = &self.trace.history[room].entries;
                    // Not the last entry (that would be no gap); an acked, untouched message.
                    let free: Vec<usize> = (0..entries.len().saturating_sub(1))
                        .filter(|&i| self.msg_free(entries[i].msg) && acked.contains(&entries[i].msg))
                        .collect();
                    let Some(i) = pick_from(&free, pick >> 8) else { return };
                    let Stored { seq, msg, .. } = self.trace.history[room].entries.remove(i);
                    self.reserved.insert(msg);
                    self.expected.push(Key::Seq(FindingKind::HistoryGap, room as u32, seq));
                    self.expected.push(Key::Seq(FindingKind::HistoryMismatch, room as u32, seq));
                }
                Injection::SeqConflict => {
                    let Some(i) = self.pick_delivery(pick, false) else { return };
                    let (room, msg, _) = self.deliver(i);
                    let client = self.trace.events[i].client;
                    self.reserved.insert(msg);
                    let seq = self.next_bogus_seq;
                    self.next_bogus_seq += 1;
                    let t = self.end();
                    self.trace.events.push(Event { t_ns: t, client, kind: delivery(room, msg, seq) });
                    self.expected.push(Key::Msg(FindingKind::Duplicated, msg, Some(client)));
                    self.expected.push(Key::Msg(FindingKind::SeqConflict, msg, Some(client)));
                    self.expected.push(Key::Seq(FindingKind::HistoryMismatch, room, seq));
                }
                Injection::Unanswered => {
                    // An ack removed from a connection that stays open: the
                    // message is still stored, so it stays owed.
                    let Some(sender) = pick_from(&self.clients_where(|c| c.role.sends()), pick) else { return };
                    let acks: Vec<usize> = self.acks_of(sender).into_iter().filter(|&i| self.msg_free(self.ack(i).1)).collect();
                    if acks.len() < 2 {
                        return;
                    }
                    let Some(i) = pick_from(&acks, pick >> 8) else { return };
                    let (_, msg, _) = self.ack(i);
                    if !self.last_send_stays_open(msg) {
                        return;
                    }
                    self.reserved.insert(msg);
                    self.reserved_clients.insert(sender);
                    self.trace.events.remove(i);
                    self.expected.push(Key::Msg(FindingKind::Unanswered, msg, Some(sender)));
                }
                Injection::ConflictingAck => {
                    let Some(sender) = pick_from(&self.clients_where(|c| c.role.sends()), pick) else { return };
                    let acks: Vec<usize> = self.acks_of(sender).into_iter().filter(|&i| self.msg_free(self.ack(i).1)).collect();
                    let Some(i) = pick_from(&acks, pick >> 8) else { return };
                    let (room, msg, _) = self.ack(i);
                    self.reserved.insert(msg);
                    let seq = self.next_bogus_seq;
                    self.next_bogus_seq += 1;
                    let t = self.end();
                    self.trace.events.push(Event { t_ns: t, client: sender, kind: EventKind::Ack { room, msg, seq } });
                    self.expected.push(Key::Msg(FindingKind::SeqConflict, msg, Some(sender)));
                    self.expected.push(Key::Seq(FindingKind::HistoryMismatch, room, seq));
                }
                Injection::StoredTwice => {
                    let room = (pick % self.trace.history.len() as u64) as usize;
                    let h = &self.trace.history[room];
                    if !h.complete {
                        return;
                    }
                    let free: Vec<MsgNo> = h.entries.iter().map(|e| e.msg).filter(|&m| self.msg_free(m)).collect();
                    let Some(msg) = pick_from(&free, pick >> 8) else { return };
                    let seq = h.entries.last().map_or(1, |e| e.seq + 1);
                    self.reserved.insert(msg);
                    self.trace.history[room].entries.push(Stored::new(seq, msg, Some(body_of(msg))));
                    self.expected.push(Key::Seq(FindingKind::StoredTwice, room as u32, seq));
                }
                Injection::BeforeStart => {
                    // A late subscriber gets a message at or below its `after`.
                    let late = self.clients_where(|c| c.after.is_some_and(|a| a >= 1));
                    let Some(client) = pick_from(&late, pick) else { return };
                    let info = self.trace.clients[client as usize].clone();
                    let after = info.after.unwrap_or(0);
                    let entries = &self.trace.history[info.room as usize].entries;
                    let below: Vec<(u64, MsgNo)> =
                        entries.iter().filter(|e| e.seq <= after && self.msg_free(e.msg)).map(|e| (e.seq, e.msg)).collect();
                    let Some((seq, msg)) = pick_from(&below, pick >> 8) else { return };
                    let Some(t) = self
                        .trace
                        .events
                        .iter()
                        .find_map(|e| (e.client == client && matches!(e.kind, EventKind::Subscribed { .. })).then_some(e.t_ns))
                    else {
                        return;
                    };
                    self.reserved.insert(msg);
                    self.reserved_clients.insert(client);
                    // At the end, below everything it got: not an order violation too.
                    let end = self.end().max(t);
                    self.trace.events.push(Event { t_ns: end, client, kind: delivery(info.room, msg, seq) });
                    self.expected.push(Key::Msg(FindingKind::BeforeStart, msg, Some(client)));
                }
                Injection::Unattempted => {
                    let planned = self.clients_where(|c| c.planned_sends.is_some());
                    let Some(client) = pick_from(&planned, pick) else { return };
                    self.reserved_clients.insert(client);
                    if let Some(n) = self.trace.clients[client as usize].planned_sends.as_mut() {
                        *n += 1;
                    }
                    self.expected.push(Key::Client(FindingKind::Unattempted, client, None));
                }
                Injection::NotReady => {
                    // A sender that connects, or a subscriber whose
                    // subscription is confirmed, just after sending started.
                    let (role, what): (Role, fn(&EventKind) -> bool) = if pick.is_multiple_of(2) {
                        (Role::Sender, |k| matches!(k, EventKind::Connected { .. }))
                    } else {
                        (Role::Subscriber, |k| matches!(k, EventKind::Subscribed { .. }))
                    };
                    let candidates = self.clients_where(|c| c.role == role && c.join_at_ns == 0);
                    let Some(client) = pick_from(&candidates, pick >> 1) else { return };
                    let Some(i) = self.trace.events.iter().position(|e| e.client == client && what(&e.kind)) else { return };
                    self.reserved_clients.insert(client);
                    self.trace.events[i].t_ns = SENDING_STARTS_NS + US;
                    self.expected.push(Key::Client(FindingKind::NotReady, client, None));
                }
                Injection::NoProgress => {
                    // A room whose sender never got to send.
                    let room = self.trace.rooms.len() as RoomIdx;
                    self.trace.rooms.push(format!("room-{room}"));
                    self.trace.history.push(RoomHistory { entries: Vec::new(), complete: true });
                    for role in [Role::Sender, Role::Subscriber] {
                        let client = self.trace.clients.len() as ClientId;
                        self.trace.clients.push(ClientInfo { role, room, node: 0, ..Default::default() });
                        self.reserved_clients.insert(client);
                        self.trace.events.push(Event { t_ns: 0, client, kind: EventKind::Connected { node: 0, took_us: 0 } });
                        if role == Role::Subscriber {
                            self.trace.events.push(Event { t_ns: 50 * US, client, kind: EventKind::Subscribing { room, after: None } });
                            self.trace.events.push(Event {
                                t_ns: 100 * US,
                                client,
                                kind: EventKind::Subscribed { room, head: 0, after: None },
                            });
                        }
                    }
                    self.reserved_rooms.insert(room);
                    self.expected.push(Key::Room(FindingKind::NoProgress, room));
                }
                Injection::DrainIncomplete => {
                    if !self.trace.meta.drain.completed {
                        return;
                    }
                    self.trace.meta.drain.completed = false;
                    self.expected.push(Key::Global(FindingKind::DrainIncomplete));
                }
                Injection::ShardMissing => {
                    // A merged trace that lacks a shard (whose rooms are
                    // simply absent): one finding per missing shard.
                    let shard = 1 + (pick % 7) as u32;
                    if self.trace.meta.missing_shards.contains(&shard) {
                        return;
                    }
                    self.trace.meta.missing_shards.push(shard);
                    self.expected.push(Key::Seq(FindingKind::ShardMissing, u32::MAX, shard as u64));
                }
                Injection::GaveUp => {
                    // A pure sender (a subscriber that gives up is owed less,
                    // which would hide other injected losses).
                    let Some(client) = pick_from(&self.clients_where(|c| c.role == Role::Sender), pick) else { return };
                    self.reserved_clients.insert(client);
                    let t = self.end();
                    self.trace.events.push(Event { t_ns: t, client, kind: EventKind::GaveUp { http_status: Some(403) } });
                    self.expected.push(Key::Client(FindingKind::GaveUp, client, None));
                }
                Injection::Outage => self.outage(pick),
                Injection::NotRecovered => {
                    if self.trace.meta.faults.is_empty() {
                        return;
                    }
                    let subs = self.clients_where(|c| c.role == Role::Subscriber && c.join_at_ns == 0);
                    let Some(client) = pick_from(&subs, pick) else { return };
                    // Every delivery arrives long after the fault, in order
                    // (and each, long after it was due, is stale).
                    // Past the recovery window even for a catch-up (which
                    // freshness judges by it), so every one is stale.
                    let checks = &self.trace.meta.checks;
                    let delay = (checks.recovery.within.0 + checks.fresh_within.0).as_nanos() as u64 + 5 * MS;
                    let acked = self.acked();
                    let owed = |inj: &Self, msg: MsgNo, room: RoomIdx| {
                        acked.contains(&msg)
                            || inj.trace.history[room as usize].complete
                                && inj.trace.history[room as usize].entries.iter().any(|e| e.msg == msg)
                    };
                    let mut stale = Vec::new();
                    let mut seen = HashSet::new();
                    for i in self.deliveries_of(client) {
                        let (room, msg, _) = self.deliver(i);
                        if seen.insert(msg) && owed(self, msg, room) {
                            stale.push(msg);
                        }
                        self.trace.events[i].t_ns += delay;
                    }
                    self.reserved_clients.insert(client);
                    self.reserved.extend(stale.iter().copied());
                    self.expected.push(Key::Client(FindingKind::NotRecovered, client, Some(0)));
                    self.expected.extend(stale.into_iter().map(|m| Key::Msg(FindingKind::Stale, m, Some(client))));
                }
                Injection::HistoryUnavailable => {
                    let room = (pick % self.trace.history.len() as u64) as RoomIdx;
                    if !self.room_free(room) {
                        return;
                    }
                    let unacked = self.unacked_in(room);
                    self.reserve_room(room);
                    self.trace.history[room as usize].complete = false;
                    self.expected.push(Key::Room(FindingKind::HistoryUnavailable, room));
                    for msg in unacked {
                        self.expected.push(Key::Msg(FindingKind::Unresolved, msg, Some(self.sender_of(msg))));
                    }
                }
                Injection::UnknownAgreement => {
                    // History unknown, an ack lost on an open connection, and
                    // one covering subscriber missing the message.
                    let room = (pick % self.trace.history.len() as u64) as RoomIdx;
                    if !self.room_free(room) {
                        return;
                    }
                    let subs: Vec<ClientId> = self.clients_where(|c| c.room == room && c.role.subscribes());
                    let candidates: Vec<usize> = subs
                        .iter()
                        .flat_map(|&s| self.deliveries_of(s))
                        .filter(|&i| {
                            let (_, msg, _) = self.deliver(i);
                            let sender = self.sender_of(msg);
                            let acked = self.acks_of(sender);
                            acked.len() >= 2 && acked.iter().any(|&a| self.ack(a).1 == msg)
                        })
                        .collect();
                    let Some(i) = pick_from(&candidates, pick >> 8) else { return };
                    let (_, msg, _) = self.deliver(i);
                    let sub = self.trace.events[i].client;
                    let copies =
                        self.trace.events.iter().filter(|e| matches!(e.kind, EventKind::Deliver { msg: m, .. } if m == msg)).count();
                    if self.deliveries_of(sub).len() < 2 || copies < 2 || !self.last_send_stays_open(msg) {
                        return;
                    }
                    let sender = self.sender_of(msg);
                    let ack = self.acks_of(sender).into_iter().find(|&a| self.ack(a).1 == msg).expect("candidate has an ack");
                    let mut unacked = self.unacked_in(room);
                    self.reserve_room(room);
                    self.trace.history[room as usize].complete = false;
                    self.trace.events.remove(i.max(ack));
                    self.trace.events.remove(i.min(ack));
                    unacked.push(msg);
                    self.expected.push(Key::Room(FindingKind::HistoryUnavailable, room));
                    self.expected.push(Key::Msg(FindingKind::Agreement, msg, Some(sub)));
                    self.expected.push(Key::Msg(FindingKind::Unanswered, msg, Some(sender)));
                    for m in unacked {
                        self.expected.push(Key::Msg(FindingKind::Unresolved, m, Some(self.sender_of(m))));
                    }
                }
                Injection::SubscriberGivesUp => {
                    // A subscriber gives up after one of its deliveries: it
                    // is owed nothing later (giving up is the finding).
                    let subs = self.clients_where(|c| c.role == Role::Subscriber);
                    let Some(client) = pick_from(&subs, pick) else { return };
                    let ds = self.deliveries_of(client);
                    let Some(&i) = ds[..ds.len().saturating_sub(1)].get((pick >> 8) as usize % ds.len().max(1)) else { return };
                    let t = self.trace.events[i].t_ns + US;
                    let later: Vec<MsgNo> = ds.iter().filter(|&&j| self.trace.events[j].t_ns > t).map(|&j| self.deliver(j).1).collect();
                    if later.iter().any(|&m| !self.msg_free(m)) {
                        return;
                    }
                    self.reserved.extend(later);
                    self.reserved_clients.insert(client);
                    self.trace.events.retain(|e| e.client != client || e.t_ns <= t);
                    self.trace.events.push(Event { t_ns: t, client, kind: EventKind::GaveUp { http_status: None } });
                    self.expected.push(Key::Client(FindingKind::GaveUp, client, None));
                }
                Injection::BogusHead => {
                    // The server claims a head far above the room's: messages
                    // sent after the subscription are owed all the same.
                    let subs = self.clients_where(|c| c.role == Role::Subscriber && c.join_at_ns == 0);
                    let Some(client) = pick_from(&subs, pick) else { return };
                    let free: Vec<usize> = self.deliveries_of(client).into_iter().filter(|&i| self.msg_free(self.deliver(i).1)).collect();
                    if free.len() < 2 {
                        return;
                    }
                    let Some(i) = pick_from(&free, pick >> 8) else { return };
                    let (_, msg, _) = self.deliver(i);
                    let bogus = self.next_bogus_seq * 10;
                    let Some(sub) =
                        self.trace.events.iter_mut().find(|e| e.client == client && matches!(e.kind, EventKind::Subscribed { .. }))
                    else {
                        return;
                    };
                    if let EventKind::Subscribed { head, after: None, .. } = &mut sub.kind {
                        *head = bogus;
                    } else {
                        return;
                    }
                    self.reserved.insert(msg);
                    self.reserved_clients.insert(client);
                    self.trace.events.remove(i);
                    self.expected.push(Key::Msg(FindingKind::Lost, msg, Some(client)));
                }
                Injection::CorruptDelivery => {
                    // One delivery arrives with another body (truncated).
                    let ds = self.free_deliveries(&self.any_receivers());
                    let Some(i) = pick_from(&ds, pick) else { return };
                    let client = self.trace.events[i].client;
                    let EventKind::Deliver { msg, body: Some(body), .. } = &mut self.trace.events[i].kind else { return };
                    *body = BodyDigest::of(format!("message {msg}").as_bytes());
                    let msg = *msg;
                    self.reserved.insert(msg);
                    self.expected.push(Key::Msg(FindingKind::Corrupted, msg, Some(client)));
                }
                Injection::CorruptStored => {
                    let room = (pick % self.trace.history.len() as u64) as usize;
                    if !self.trace.history[room].complete {
                        return;
                    }
                    let free: Vec<usize> = (0..self.trace.history[room].entries.len())
                        .filter(|&i| self.msg_free(self.trace.history[room].entries[i].msg))
                        .collect();
                    let Some(i) = pick_from(&free, pick >> 8) else { return };
                    let entry = &mut self.trace.history[room].entries[i];
                    entry.body = Some(BodyDigest::of(b"stored wrong"));
                    let msg = entry.msg;
                    self.reserved.insert(msg);
                    self.reserved_rooms.insert(room as RoomIdx);
                    self.expected.push(Key::Msg(FindingKind::Corrupted, msg, None));
                }
                Injection::Mislabel => {
                    // A delivery whose labels do not name its room: the
                    // wrong subscription, none, an unknown room, or (with
                    // two rooms) another room.
                    let ds = self.free_deliveries(&self.any_receivers());
                    let Some(i) = pick_from(&ds, pick) else { return };
                    let client = self.trace.events[i].client;
                    // Labels resolve to one of the client's own rooms (or
                    // are flagged): another room only for a multi-room client.
                    let other: Vec<RoomIdx> = self.trace.clients[client as usize].rooms().collect();
                    let EventKind::Deliver { msg, room, label, .. } = &mut self.trace.events[i].kind else { return };
                    let other = other.into_iter().find(|r| r != room);
                    match ((pick >> 8) % 4, other) {
                        (0, _) => *label = Label::WrongSubscription,
                        (1, _) => *label = Label::Missing,
                        (2, _) => *label = Label::UnknownRoom,
                        (_, Some(other)) => *room = other,
                        (_, None) => *label = Label::WrongSubscription,
                    }
                    let msg = *msg;
                    self.reserved.insert(msg);
                    self.expected.push(Key::Msg(FindingKind::Misrouted, msg, Some(client)));
                }
                Injection::ReusedMessageId => {
                    // A later delivery carries the message-id of an earlier
                    // one of another message (same client and room).
                    let Some(client) = pick_from(&self.any_receivers(), pick) else { return };
                    let ds = self.free_deliveries(&[client]);
                    let pairs: Vec<(usize, usize)> = ds
                        .iter()
                        .flat_map(|&a| ds.iter().map(move |&b| (a, b)))
                        .filter(|&(a, b)| a < b && self.deliver(a).0 == self.deliver(b).0 && self.deliver(a).1 != self.deliver(b).1)
                        .collect();
                    let Some((a, b)) = pick_from(&pairs, pick >> 8) else { return };
                    let EventKind::Deliver { message_id: first, .. } = self.trace.events[a].kind else { return };
                    let EventKind::Deliver { msg, message_id, .. } = &mut self.trace.events[b].kind else { return };
                    *message_id = first;
                    let msg = *msg;
                    self.reserved.extend([msg, self.deliver(a).1]);
                    self.expected.push(Key::Msg(FindingKind::Misrouted, msg, Some(client)));
                }
                Injection::Leak => {
                    // A message reaches a connection not subscribed to its
                    // room: a pure sender of that room, or a subscriber
                    // between its confirmed unsubscribe and its rejoin.
                    let after_left: Vec<(ClientId, u64, u64)> = self
                        .trace
                        .events
                        .iter()
                        .filter(|e| self.special.contains(&e.client))
                        .filter_map(|e| match e.kind {
                            EventKind::Left { room } => Some((e.client, e.t_ns, u64::from(room))),
                            _ => None,
                        })
                        .collect();
                    let (client, t, room) = if pick.is_multiple_of(2) && !after_left.is_empty() {
                        let Some((client, t, room)) = pick_from(&after_left, pick >> 1) else { return };
                        (client, t + US, room as RoomIdx)
                    } else {
                        let Some(client) = pick_from(&self.clients_where(|c| c.role == Role::Sender), pick >> 1) else { return };
                        (client, self.end(), self.trace.clients[client as usize].room)
                    };
                    self.leak(client, room, t, pick);
                }
                Injection::IntruderLetIn | Injection::IntruderServedHistory => {
                    use crate::trace::{Answer, Attempt};
                    let history = matches!(injection, Injection::IntruderServedHistory);
                    let Some(client) = pick_from(&self.free_intruders(), pick) else { return };
                    let probes: Vec<usize> = (0..self.trace.events.len())
                        .filter(|&i| self.trace.events[i].client == client)
                        .filter(|&i| matches!(self.trace.events[i].kind, EventKind::Probe { attempt, .. } if (attempt == Attempt::History) == history))
                        .collect();
                    let Some(i) = pick_from(&probes, pick >> 8) else { return };
                    let EventKind::Probe { room, attempt, started_ns, .. } = self.trace.events[i].kind else { return };
                    let answer = match (history, pick >> 16 & 1) {
                        (true, _) => Answer::Accepted { served: 3 },
                        // An accepted send would be acked and owed to the
                        // members: here it goes unanswered (not stored).
                        (false, _) if attempt == Attempt::Send => Answer::NoAnswer,
                        (false, 0) => Answer::Accepted { served: 0 },
                        (false, _) => Answer::NoAnswer,
                    };
                    self.reserved_clients.insert(client);
                    self.trace.events[i].kind = EventKind::Probe { room, attempt, answer, started_ns };
                    // A spelling taken is a room of its own: only what of
                    // the room reaches it (a served history) is found.
                    let spelling = self.trace.clients[client as usize].role.intruder() == Some(crate::trace::Credential::Spelling);
                    if !(spelling && matches!(answer, Answer::Accepted { .. })) {
                        self.expected.push(Key::Msg(FindingKind::Unrefused, u64::MAX, Some(client)));
                    }
                    if history {
                        self.expected.push(Key::Msg(FindingKind::Leak, u64::MAX, Some(client)));
                    }
                }
                Injection::IntruderLeak => {
                    let Some(client) = pick_from(&self.free_intruders(), pick) else { return };
                    let room = self.trace.clients[client as usize].room;
                    if self.leak(client, room, self.end(), pick) {
                        self.reserved_clients.insert(client);
                    }
                }
                Injection::Stale => {
                    // A subscriber's last delivery arrives seconds after it was due.
                    let Some(client) = pick_from(&self.receivers(), pick) else { return };
                    let Some(&i) = self.deliveries_of(client).last() else { return };
                    let (_, msg, _) = self.deliver(i);
                    let copies = self
                        .trace
                        .events
                        .iter()
                        .filter(|e| e.client == client && matches!(e.kind, EventKind::Deliver { msg: m, .. } if m == msg))
                        .count();
                    if !self.msg_free(msg) || copies != 1 || self.deliveries_of(client).len() < 2 {
                        return;
                    }
                    // Past the recovery window too: a catch-up is judged by it.
                    let checks = &self.trace.meta.checks;
                    let late = (checks.fresh_within.0 + checks.recovery.within.0).as_nanos() as u64 + 500 * MS;
                    self.trace.events[i].t_ns = self.end() + late;
                    self.reserved.insert(msg);
                    self.reserved_clients.insert(client);
                    self.expected.push(Key::Msg(FindingKind::Stale, msg, Some(client)));
                }
                Injection::ApiLeavesOut | Injection::ApiCorrupt => {
                    let room = (pick % self.trace.history.len() as u64) as RoomIdx;
                    if !self.trace.history[room as usize].complete {
                        return;
                    }
                    let free: Vec<Stored> =
                        self.trace.history[room as usize].entries.iter().copied().filter(|e| self.msg_free(e.msg)).collect();
                    let Some(e) = pick_from(&free, pick >> 8) else { return };
                    self.reserved.insert(e.msg);
                    self.reserved_rooms.insert(room);
                    if matches!(injection, Injection::ApiLeavesOut) {
                        self.api_edits.push(ApiEdit::LeaveOut(room, e.seq));
                        self.expected.push(Key::Seq(FindingKind::HistoryMismatch, room, e.seq));
                    } else {
                        self.api_edits.push(ApiEdit::Corrupt(room, e.seq));
                        self.expected.push(Key::Msg(FindingKind::Corrupted, e.msg, None));
                    }
                }
                Injection::UnstoredDelivered => {
                    // A send that was never stored reaches a subscriber anyway.
                    let stored: HashSet<MsgNo> = self.trace.history.iter().flat_map(|h| h.entries.iter().map(|e| e.msg)).collect();
                    let unstored: Vec<(RoomIdx, MsgNo)> = (0..self.trace.rooms.len() as RoomIdx)
                        .filter(|r| self.trace.history[*r as usize].complete)
                        .flat_map(|r| self.unacked_in(r).into_iter().map(move |m| (r, m)))
                        .filter(|(_, m)| !stored.contains(m) && self.msg_free(*m))
                        .collect();
                    let Some((room, msg)) = pick_from(&unstored, pick) else { return };
                    let Some(client) = pick_from(&self.clients_where(|c| c.room == room && c.role.subscribes()), pick >> 8) else { return };
                    self.reserved.insert(msg);
                    let seq = self.next_bogus_seq;
                    self.next_bogus_seq += 1;
                    let t = self.end();
                    self.trace.events.push(Event { t_ns: t, client, kind: delivery(room, msg, seq) });
                    self.expected.push(Key::Msg(FindingKind::Phantom, msg, Some(client)));
                    self.expected.push(Key::Seq(FindingKind::HistoryMismatch, room, seq));
                }
            }
        }

        /// Two consecutive, untouched, stored messages of one sender: make
        /// the world consistent with the later one stored first.
        fn fifo_swap(&mut self, pick: u64) {
            let Some(sender) = pick_from(&self.clients_where(|c| c.role.sends()), pick) else { return };
            let mut sent: Vec<MsgNo> = self
                .trace
                .events
                .iter()
                .filter_map(|e| match e.kind {
                    EventKind::Send { msg, .. } if e.client == sender => Some(msg),
                    _ => None,
                })
                .collect();
            sent.dedup();
            let receivers_of = |inj: &Self, m: MsgNo| -> Vec<(ClientId, u64)> {
                let mut v: Vec<(ClientId, u64)> = inj
                    .trace
                    .events
                    .iter()
                    .filter_map(|e| match e.kind {
                        EventKind::Deliver { msg, .. } if msg == m => Some((e.client, e.t_ns)),
                        _ => None,
                    })
                    .collect();
                v.sort();
                v
            };
            let pairs: Vec<(MsgNo, MsgNo)> = sent
                .windows(2)
                .map(|w| (w[0], w[1]))
                .filter(|&(a, b)| {
                    let same_receivers = receivers_of(self, a).iter().map(|r| r.0).eq(receivers_of(self, b).iter().map(|r| r.0));
                    self.msg_free(a) && self.msg_free(b) && self.stored_seq(a).is_some() && self.stored_seq(b).is_some() && same_receivers
                })
                .collect();
            let Some((a, b)) = pick_from(&pairs, pick >> 8) else { return };
            self.reserved.extend([a, b]);
            let (sa, sb) = (self.stored_seq(a).expect("filtered"), self.stored_seq(b).expect("filtered"));
            let (ta, tb) = (receivers_of(self, a), receivers_of(self, b));
            for e in &mut self.trace.events {
                match &mut e.kind {
                    EventKind::Ack { msg, seq, .. } | EventKind::Deliver { msg, seq, .. } if *msg == a || *msg == b => {
                        let is_a = *msg == a;
                        *seq = if is_a { sb } else { sa };
                        if matches!(e.kind, EventKind::Deliver { .. }) {
                            let times = if is_a { &tb } else { &ta };
                            if let Some(&(_, t)) = times.iter().find(|(c, _)| *c == e.client) {
                                e.t_ns = t;
                            }
                        }
                    }
                    _ => {}
                }
            }
            for h in &mut self.trace.history {
                for entry in &mut h.entries {
                    if entry.msg == a {
                        entry.msg = b;
                        entry.body = Some(body_of(b));
                    } else if entry.msg == b {
                        entry.msg = a;
                        entry.body = Some(body_of(a));
                    }
                }
            }
            self.expected.push(Key::Msg(FindingKind::FifoViolation, b, Some(sender)));
        }

        /// A subscriber drops off after one of its deliveries, reconnects at
        /// once but is refused its subscription until after `within`;
        /// everything after arrives that much later.
        fn outage(&mut self, pick: u64) {
            let subs = self.clients_where(|c| c.role == Role::Subscriber && c.join_at_ns == 0);
            let Some(client) = pick_from(&subs, pick) else { return };
            let ds = self.deliveries_of(client);
            if ds.len() < 2 {
                return;
            }
            let Some(i) = pick_from(&ds[..ds.len() - 1], pick >> 8) else { return };
            let (room, _, last_seq) = self.deliver(i);
            let t = self.trace.events[i].t_ns + US;
            let within = self.trace.meta.checks.recovery.within.0.as_nanos() as u64;
            let shift = within + 2 * MS;
            for e in self.trace.events.iter_mut().filter(|e| e.client == client && e.t_ns > t) {
                e.t_ns += shift;
            }
            let back = t + within + MS;
            // Reconnected at once, but its subscription is answered (refused) only at `back`.
            self.trace.events.push(Event { t_ns: t, client, kind: EventKind::Closed { code: None } });
            self.trace.events.push(Event { t_ns: t + 200 * US, client, kind: EventKind::Connected { node: 0, took_us: 0 } });
            self.trace.events.push(Event { t_ns: t + 300 * US, client, kind: EventKind::Subscribing { room, after: Some(last_seq) } });
            self.trace.events.push(Event { t_ns: back, client, kind: EventKind::SubscribeRefused { room } });
            self.trace.events.push(Event { t_ns: back + 100 * US, client, kind: EventKind::Subscribing { room, after: Some(last_seq) } });
            self.trace.events.push(Event {
                t_ns: back + 500 * US,
                client,
                kind: EventKind::Subscribed { room, head: last_seq, after: Some(last_seq) },
            });
            self.reserved_clients.insert(client);
            self.expected.push(Key::Client(FindingKind::Outage, client, None));
        }
    }

    fn found(trace: &Trace) -> Vec<Key> {
        let mut keys: Vec<Key> = all_findings(trace, &trace.meta.checks).iter().map(key).collect();
        keys.sort();
        keys
    }

    fn shape() -> impl Strategy<Value = TraceShape> {
        (1u32..4, 0u32..3, 0u32..4, 0u32..3, 2u32..10, any::<bool>()).prop_filter_map(
            "a room needs a sender and a receiver",
            |(rooms, senders_per_room, subscribers_per_room, chatters_per_room, messages_per_sender, trouble)| {
                (senders_per_room + chatters_per_room >= 1 && subscribers_per_room + chatters_per_room >= 1).then_some(TraceShape {
                    rooms,
                    senders_per_room,
                    subscribers_per_room,
                    chatters_per_room,
                    messages_per_sender,
                    trouble,
                })
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn correct_traces_have_no_findings(shape in shape(), seed in any::<u64>()) {
            let trace = correct_trace(&shape, seed);
            let findings = all_findings(&trace, &Checks::default());
            prop_assert!(findings.is_empty(), "{findings:#?}");
        }

        #[test]
        fn checkers_report_exactly_the_injected_violations(
            shape in shape(),
            seed in any::<u64>(),
            injections in proptest::collection::vec(injection(), 1..6),
        ) {
            let mut injector = Injector::new(correct_trace(&shape, seed));
            for (kind, pick) in injections {
                injector.apply(kind, pick);
            }
            let mut expected = injector.expected.clone();
            expected.sort();
            prop_assert_eq!(found(&injector.trace), expected);
        }

        /// Sharding is invisible to the checks: any trace with injected
        /// violations, split by room into shards on clocks of their own and
        /// merged, gives exactly the findings of the whole.
        #[test]
        fn injected_violations_survive_split_and_merge(
            shape in shape(),
            seed in any::<u64>(),
            injections in proptest::collection::vec(injection(), 1..6),
            count in 1u32..4,
        ) {
            use crate::merge::{finding_names, merge, split};
            let mut injector = Injector::new(without_guests(correct_trace(&shape, seed)));
            for (kind, pick) in injections {
                injector.apply(kind, pick);
            }
            let mut whole = injector.trace;
            whole.meta.origin_unix_ns = 1 << 60;
            let shards = (0..count).map(|index| split(&whole, crate::trace::ShardOf { index, count }, 7_000 * index as u64)).collect();
            let mut merged = merge(shards).unwrap();
            merged.meta.missing_shards = whole.meta.missing_shards.clone(); // an injection of its own
            prop_assert_eq!(finding_names(&merged), finding_names(&whole));
        }
    }

    /// The shapes the properties draw (1-3 rooms) give intruders of every
    /// credential kind, so each kind meets every intruder injection.
    #[test]
    fn trouble_traces_carry_intruders_of_every_credential_kind() {
        let mut seen = HashSet::new();
        for rooms in 1..4 {
            for subscribers_per_room in 0..4 {
                let shape = TraceShape { trouble: true, ..TraceShape::plain(rooms, 1, subscribers_per_room, 2) };
                seen.extend(correct_trace(&shape, 0).clients.iter().filter_map(|c| c.role.intruder()));
            }
        }
        assert_eq!(seen.len(), crate::trace::Credential::ALL.len(), "{seen:?}");
    }

    #[test]
    fn trouble_traces_carry_every_recoverable_event_kind() {
        let shape = TraceShape {
            rooms: 3,
            senders_per_room: 2,
            subscribers_per_room: 3,
            chatters_per_room: 2,
            messages_per_sender: 8,
            trouble: true,
        };
        let mut seen: HashSet<&'static str> = HashSet::new();
        for seed in 0..20 {
            let trace = correct_trace(&shape, seed);
            assert!(all_findings(&trace, &Checks::default()).is_empty(), "seed {seed}");
            for e in &trace.events {
                seen.insert(match e.kind {
                    EventKind::Closed { .. } => "closed",
                    EventKind::Connected { .. } => "connected",
                    EventKind::Error { .. } => "error",
                    EventKind::SubscribeRefused { .. } => "subscribe_refused",
                    EventKind::Subscribed { after: Some(_), .. } => "after",
                    EventKind::Left { .. } => "left",
                    EventKind::Subscribed { room, .. } if trace.clients[e.client as usize].room != room => "second_room",
                    _ => "other",
                });
            }
            if trace.clients.iter().any(|c| c.role.intruder().is_some()) {
                seen.insert("intruder");
            }
            let resent = trace.events.iter().filter(|e| matches!(e.kind, EventKind::Send { .. })).count()
                > crate::check::TraceIndex::build(&trace).sends.len();
            if resent {
                seen.insert("resend");
            }
            let index = crate::check::TraceIndex::build(&trace);
            for s in index.sends.values() {
                seen.insert(match s.fate {
                    crate::check::Fate::Stored(_) => "stored_unacked",
                    crate::check::Fate::NotStored => "unstored",
                    _ => "acked",
                });
            }
        }
        for kind in [
            "closed",
            "connected",
            "error",
            "subscribe_refused",
            "after",
            "resend",
            "stored_unacked",
            "unstored",
            "left",
            "second_room",
            "intruder",
        ] {
            assert!(seen.contains(kind), "no {kind} in 20 trouble traces");
        }
    }

    #[test]
    fn each_injection_kind_alone_is_found() {
        let shape = TraceShape {
            rooms: 2,
            senders_per_room: 2,
            subscribers_per_room: 3,
            chatters_per_room: 1,
            messages_per_sender: 6,
            trouble: true,
        };
        for kind in INJECTIONS {
            // Some injections need a feature only some seeds generate.
            let applied = (0..64).find_map(|seed| {
                let mut injector = Injector::new(correct_trace(&shape, seed));
                injector.apply(kind, 12345 + seed);
                (!injector.expected.is_empty()).then_some(injector)
            });
            let mut injector = applied.unwrap_or_else(|| panic!("{kind:?} was never applied"));
            injector.expected.sort();
            assert_eq!(found(&injector.trace), injector.expected, "{kind:?}");
        }
    }
}
