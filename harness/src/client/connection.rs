//! One client connection, whatever its role: one loop, with the role
//! deciding what it does (a sender sends on its schedule, a subscriber
//! subscribes, a chatter does both on the same connection, as real chat
//! clients do). A connection may be in several rooms
//! (`rooms_per_client`): it subscribes to each, sends into them in turn,
//! and, with `churn`, leaves one now and then and joins it again after a
//! while, resuming with `after` or live from the new head.
//!
//! Clients recover like real ones and never silently give up:
//! - connecting (also the first time) retries with backoff — first the
//!   planned node, then the others in turn — until the run stops; only an
//!   upgrade refused with a 4xx status (wrong path, credentials) ends the
//!   client, recorded as `GaveUp`;
//! - a `subscribe` answered with `error` is retried with backoff; until it
//!   succeeds the subscriber is still owed everything from its start;
//! - after a reconnect a subscriber resubscribes with `after` = the last
//!   `seq` it saw, and a sender resends every unacked message with the same
//!   `id`, oldest first, before anything new;
//! - a send answered with `error` pauses new sends, then *all* unacked
//!   messages are resent in their original order (the server refuses later
//!   sends until the failed one is back), so FIFO survives failures.

use super::{ClientPlan, Samples, Schedule, Shared, Window, text};
use crate::protocol::{Delivered, Incoming, Wire};
use crate::scenario::{MessageBytes, Rejoin, Workload};
use crate::trace::{Clock, Event, EventKind, FOREIGN_MSG, MsgNo, Recorder, RoomIdx, msg_no, msg_parts, send_slot};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_tungstenite::tungstenite::{self, Message};

pub(super) struct Context {
    pub plan: ClientPlan,
    /// Every node's WebSocket URL (reconnects may go elsewhere).
    pub urls: Vec<String>,
    /// Its rooms, home first: (trace index, name). A room's position here
    /// is its slot.
    pub rooms: Vec<(RoomIdx, String)>,
    pub workload: Workload,
    pub clock: Clock,
    pub start: watch::Receiver<Option<Window>>,
    pub seed: u64,
    pub shared: Arc<Shared>,
    pub stop: watch::Receiver<bool>,
    /// Bumped by the `drop_clients` fault; `drop_share` says who goes.
    pub drops: watch::Receiver<(u64, f64)>,
    /// The protocol this client speaks.
    pub wire: Wire,
    /// The system has a per-room `seq` and the protocol can resume from one
    /// (subscriptions resume with `after`).
    pub seq: bool,
    /// Sends are answered (not `ack: none`): unanswered ones are resent
    /// after a reconnect or an error, and the drain waits for them.
    pub acks: bool,
    /// The system sends a client its own messages (`echo`); without, the
    /// drain counts a chatter's own acks as seen.
    pub echo: bool,
    /// Credentials on the WebSocket upgrade: headers, query parameters.
    pub upgrade_headers: Vec<(String, String)>,
    pub upgrade_query: Vec<(String, String)>,
    /// Every sender's rooms, by its message-number client (`msg_client`):
    /// a delivery's own room is known from its message id, whatever its
    /// labels say, so a mislabelled delivery still counts where it belongs
    /// (the labels are judged from the trace).
    pub sender_rooms: Arc<Vec<Vec<RoomIdx>>>,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// How long a STOMP CONNECT may wait for CONNECTED.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Pause before resending a send that got an `error` frame; it doubles
/// while errors keep coming without an ack in between (a server shedding
/// load, `overloaded`, is not answered with a resend storm), up to
/// [`MAX_RESEND_AFTER_ERROR_NS`], and is reset by an ack.
const RESEND_AFTER_ERROR_NS: u64 = 200_000_000;
const MAX_RESEND_AFTER_ERROR_NS: u64 = 800_000_000;

pub(super) type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type Writer = SplitSink<Ws, Message>;

/// Why a session ended: the run stopped, or the connection broke (with
/// the close code the server sent, if any).
enum SessionEnd {
    Stopped,
    Broken(Option<u16>),
}

/// Err(close code): the connection broke.
type Step = Result<(), Option<u16>>;

struct Outstanding {
    scheduled_ns: u64,
    slot: usize,
    text: String,
}

/// Where a connection is with one of its rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// To subscribe on this connection; nothing sent yet.
    Idle,
    /// Subscribe sent, no answer yet.
    Requested,
    /// Subscribe refused; retried at `retry_at`.
    Refused,
    Joined,
    /// Unsubscribe sent (churn), confirmation not yet seen.
    Leaving,
    /// Left; joins again at `rejoin_at`.
    Away,
}

/// Where the next subscribe to a room starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinFrom {
    /// The plan's `after` (the first join).
    Plan,
    /// After the last `seq` seen: a resubscribe within a membership, or a
    /// rejoin that resumes.
    LastSeen,
    /// No `after`: a rejoin live from the new head.
    Head,
}

/// One room of the connection: its subscription's state.
struct Room {
    phase: Phase,
    join_from: JoinFrom,
    /// The `after` of the subscribe in flight.
    pending_after: Option<u64>,
    /// Resume from here: the last `seq` seen (or the start).
    resume_after: Option<u64>,
    retry_at: Option<u64>,
    backoff: Duration,
    rejoin_at: Option<u64>,
    /// A server without receipts: when the subscribe (or unsubscribe) in
    /// flight counts as done.
    done_at: Option<u64>,
}

impl Room {
    /// When this room next needs a subscribe: a refused one's retry, or a
    /// rejoin after leaving.
    fn subscribe_due(&self) -> Option<u64> {
        match self.phase {
            Phase::Refused => self.retry_at,
            Phase::Leaving | Phase::Away => self.rejoin_at,
            _ => None,
        }
    }

    fn new() -> Self {
        Self {
            phase: Phase::Idle,
            join_from: JoinFrom::Plan,
            pending_after: None,
            resume_after: None,
            retry_at: None,
            backoff: FIRST_BACKOFF,
            rejoin_at: None,
            done_at: None,
        }
    }
}

pub(super) async fn run(ctx: Context) -> Vec<Event> {
    let expected = expected_sends(&ctx);
    // Pre-sized from the plan (a delivery per message of its rooms, with
    // room for reconnects); an idle connection keeps a small buffer.
    let capacity = if ctx.plan.role.subscribes() { expected * 2 * ctx.rooms.len() + 16 } else { 2 * expected + 16 };
    let mut rec = Recorder::new(ctx.plan.id, ctx.clock, capacity.min(1 << 22));
    Client::new(&ctx).run(&mut rec).await;
    rec.into_events()
}

/// Sends this client's room will see (for pre-sizing its buffer).
fn expected_sends(ctx: &Context) -> usize {
    let w = &ctx.workload;
    let per_room = f64::from(w.senders_per_room + w.chatters_per_room);
    match ctx.plan.schedule {
        Some(s) => s.planned(w.duration.0).map_or(1024, |n| n as usize) * per_room as usize,
        None => match w.load {
            crate::scenario::Load::Open { rate_per_s } => (rate_per_s * w.duration.0.as_secs_f64() / f64::from(w.rooms)) as usize,
            crate::scenario::Load::Closed { .. } => 1024,
        },
    }
}

/// A client's WebSocket buffers: 2 KiB to read into (it grows for a larger
/// frame), writes go out as they are made (no write buffer to fill), and a
/// server frame over [`MAX_SERVER_MESSAGE`] ends the connection. The
/// library's defaults (128 KiB each way) made the harness's memory per
/// idle connection ~150 KiB; thousands of connections are the point.
fn ws_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_SERVER_MESSAGE))
        .max_frame_size(Some(MAX_SERVER_MESSAGE))
}

/// Initial read buffer per connection.
const READ_BUFFER: usize = 2 * 1024;
/// The largest server message a client accepts (a history page of the
/// reference server is about 1 MiB at most).
const MAX_SERVER_MESSAGE: usize = 4 << 20;

fn text_of(rng: &mut StdRng, workload: &Workload) -> String {
    let n = match workload.message_bytes {
        MessageBytes::Fixed(n) => n,
        MessageBytes::Range { min, max } => rng.random_range(min..=max),
    };
    text::generate(rng, n as usize, workload.message_text)
}

pub(super) fn close_code(message: &Message) -> Option<u16> {
    match message {
        Message::Close(Some(frame)) => Some(frame.code.into()),
        _ => None,
    }
}

/// An upgrade refused with a status no retry will change (4xx but 408/429).
fn permanent_refusal(e: &tungstenite::Error) -> Option<u16> {
    match e {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            ((400..500).contains(&status) && status != 408 && status != 429).then_some(status)
        }
        _ => None,
    }
}

/// Clients per loopback source address: a destination (address, port)
/// takes at most one connection per source port from each source address,
/// and the ephemeral range has 28,232 ports (32768–60999), so past this
/// many clients a run spreads its connections over 127.0.0.2, .3, ...
pub(crate) const CLIENTS_PER_SOURCE: u32 = 16_384;

/// The loopback address client `n` (its run-wide number, unique across
/// shards) connects from, when not the default 127.0.0.1.
pub(super) fn source_address(n: u32) -> Option<std::net::Ipv4Addr> {
    let block = n / CLIENTS_PER_SOURCE;
    (block > 0).then(|| std::net::Ipv4Addr::from(0x7f00_0001 + block))
}

/// A WebSocket upgrade to `url` with these query parameters and headers
/// (STOMP: the STOMP subprotocols offered). `source`: connect from this
/// loopback address (bound before connecting) when the URL's host is a
/// loopback IPv4 address; else as the system picks.
pub(super) async fn open(
    url: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    subprotocols: Option<&str>,
    source: Option<std::net::Ipv4Addr>,
) -> Result<Ws, tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut url = url.to_owned();
    if !query.is_empty() {
        let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish();
        url = format!("{url}{}{query}", if url.contains('?') { '&' } else { '?' });
    }
    let mut request = url.into_client_request()?;
    if let Some(subprotocols) = subprotocols {
        let value = tungstenite::http::HeaderValue::from_str(subprotocols).map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", value);
    }
    for (name, value) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
        let value = tungstenite::http::HeaderValue::from_str(value).map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
        request.headers_mut().insert(name, value);
    }
    if let Some(source) = source
        && request.uri().scheme_str() == Some("ws")
        && let Some(target) = loopback_target(request.uri()).await
    {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind((source, 0).into())?;
        let stream = socket.connect(target).await?;
        stream.set_nodelay(true)?;
        let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
        return tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())).await.map(|(ws, _)| ws);
    }
    tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), true).await.map(|(ws, _)| ws)
}

/// The loopback IPv4 address and port a `ws://` URI names, if it names one.
async fn loopback_target(uri: &tungstenite::http::Uri) -> Option<std::net::SocketAddr> {
    let host = uri.host()?;
    let port = uri.port_u16().unwrap_or(80);
    tokio::net::lookup_host((host, port)).await.ok()?.find(|a| matches!(a.ip(), std::net::IpAddr::V4(ip) if ip.is_loopback()))
}

struct Client<'a> {
    ctx: &'a Context,
    rng: StdRng,
    // Sending.
    outstanding: BTreeMap<MsgNo, Outstanding>,
    /// When set: new sends wait, and at this time every unacked message is
    /// resent in order.
    resend_at: Option<u64>,
    /// The pause before the next resend after an error (see [`RESEND_AFTER_ERROR_NS`]).
    resend_backoff_ns: u64,
    next_k: u32,
    // Subscribing: one per room slot (empty for a pure sender).
    rooms: Vec<Room>,
    subscribe_attempts: u64,
    ready_reported: bool,
    /// Churn: the next time this client considers leaving a room, and
    /// which tick that is.
    next_churn: Option<(u64, u64)>,
    /// STOMP: send a heart-beat this often (the server asked for them).
    heartbeat: Option<Duration>,
    next_heartbeat: Option<u64>,
    /// Frames to write back (Engine.IO pongs), sent after the frame that asked.
    replies: Vec<Message>,
    /// What a frame meant, reused frame after frame.
    meanings: Vec<Incoming>,
    /// What came with the handshake's answer, for the session to handle.
    early: Vec<Incoming>,
}

impl<'a> Client<'a> {
    fn new(ctx: &'a Context) -> Self {
        let rooms = if ctx.plan.role.subscribes() { ctx.rooms.iter().map(|_| Room::new()).collect() } else { Vec::new() };
        Self {
            ctx,
            rng: StdRng::seed_from_u64(ctx.seed ^ (u64::from(ctx.plan.id) << 20)),
            outstanding: BTreeMap::new(),
            resend_at: None,
            resend_backoff_ns: RESEND_AFTER_ERROR_NS,
            next_k: 0,
            rooms,
            subscribe_attempts: 0,
            ready_reported: false,
            next_churn: None,
            heartbeat: None,
            next_heartbeat: None,
            replies: Vec::new(),
            meanings: Vec::new(),
            early: Vec::new(),
        }
    }

    fn shared(&self) -> &Shared {
        &self.ctx.shared
    }

    fn now(&self) -> u64 {
        self.ctx.clock.now_ns()
    }

    fn room_idx(&self, slot: usize) -> RoomIdx {
        self.ctx.rooms[slot].0
    }

    /// The room slot one of its own sends goes to.
    fn slot_of_send(&self, msg: MsgNo) -> usize {
        send_slot(msg, self.ctx.rooms.len())
    }

    async fn run(&mut self, rec: &mut Recorder) {
        if !self.ctx.plan.join_at.is_zero() {
            let Some(window) = self.window().await else { return };
            let join = self.ctx.clock.instant_at(window.start_ns + self.ctx.plan.join_at.as_nanos() as u64);
            let mut stop = self.ctx.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep_until(join.into()) => {}
                _ = stop.changed() => return,
            }
        }
        loop {
            let Some((ws, node, took_us)) = self.connect(rec).await else { return };
            rec.record(EventKind::Connected { node, took_us });
            match self.session(ws, rec).await {
                SessionEnd::Stopped => return,
                SessionEnd::Broken(code) => {
                    rec.record(EventKind::Closed { code });
                    self.shared().closed.fetch_add(1, Ordering::Relaxed);
                    self.set_settled(false);
                    for room in &mut self.rooms {
                        room.phase = match room.phase {
                            Phase::Leaving | Phase::Away => Phase::Away,
                            _ => Phase::Idle,
                        };
                        room.retry_at = None;
                        room.done_at = None;
                    }
                }
            }
        }
    }

    /// Wait for the runner to fix the sending window (None: the run is over).
    async fn window(&self) -> Option<Window> {
        let mut start = self.ctx.start.clone();
        let mut stop = self.ctx.stop.clone();
        loop {
            if let Some(w) = *start.borrow_and_update() {
                return Some(w);
            }
            tokio::select! {
                changed = start.changed() => if changed.is_err() { return None },
                _ = stop.changed() => return None,
            }
        }
    }

    /// Connect with backoff: the planned node first, then the others in
    /// turn. None when the run stopped, or the client gave up (recorded).
    async fn connect(&mut self, rec: &mut Recorder) -> Option<(Ws, u32, u32)> {
        let nodes = self.ctx.urls.len();
        let mut backoff = FIRST_BACKOFF;
        let mut stop = self.ctx.stop.clone();
        let mut first_try = None;
        for attempt in 0usize.. {
            if *stop.borrow_and_update() {
                return None;
            }
            if let Some(pacer) = &self.shared().connect_pacer {
                tokio::select! {
                    _ = tokio::time::sleep_until(pacer.reserve()) => {}
                    _ = stop.changed() => return None,
                }
            }
            let tried = *first_try.get_or_insert_with(tokio::time::Instant::now);
            let node = (self.ctx.plan.node as usize + attempt) % nodes;
            match self.open(&self.ctx.urls[node]).await {
                Ok(ws) => match self.handshake(ws).await {
                    Ok(ws) => {
                        let took_us = u32::try_from(tried.elapsed().as_micros()).unwrap_or(u32::MAX);
                        return Some((ws, node as u32, took_us));
                    }
                    Err(Some(refusal)) => {
                        tracing::warn!(client = self.ctx.plan.id, node, %refusal, "session refused; giving up");
                        self.give_up(rec, None, refusal);
                        return None;
                    }
                    Err(None) => tracing::debug!(client = self.ctx.plan.id, node, "session handshake failed"),
                },
                Err(e) => {
                    if let Some(status) = permanent_refusal(&e) {
                        tracing::warn!(client = self.ctx.plan.id, node, status, "WebSocket upgrade refused; giving up");
                        let why = match &e {
                            tungstenite::Error::Http(r) => {
                                let body = r.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                                format!(
                                    "the WebSocket upgrade was refused with HTTP {status}: {}",
                                    body.chars().take(200).collect::<String>()
                                )
                            }
                            _ => format!("the WebSocket upgrade was refused with HTTP {status}"),
                        };
                        self.give_up(rec, Some(status), why);
                        return None;
                    }
                    tracing::debug!(client = self.ctx.plan.id, node, error = %e, "connect failed");
                }
            }
            // Jittered (half to all of it), so clients that failed together
            // do not all come back together.
            let wait = backoff.mul_f64(rand::random_range(0.5..=1.0));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return None,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        None
    }

    /// Stop for good: recorded, with the server's answer, and the drain
    /// no longer waits for this client (nothing will change).
    fn give_up(&self, rec: &mut Recorder, http_status: Option<u16>, why: String) {
        rec.record(EventKind::GaveUp { http_status });
        let id = self.ctx.plan.id as usize;
        self.shared().gave_up.fetch_add(1, Ordering::Relaxed);
        self.shared().refusals.lock().expect("refusals lock").push((self.ctx.plan.id, why));
        self.set_settled(true);
        self.shared().sends_left[id].store(0, Ordering::Relaxed);
        for last in self.shared().client_last_seq[id].iter() {
            last.store(u64::MAX, Ordering::Relaxed);
        }
    }

    /// The WebSocket upgrade, with this client's credentials.
    async fn open(&self, url: &str) -> Result<Ws, tungstenite::Error> {
        let source = source_address(self.ctx.plan.msg_client);
        open(url, &self.ctx.upgrade_query, &self.ctx.upgrade_headers, self.ctx.wire.subprotocols(), source).await
    }

    /// Open the protocol session (STOMP: CONNECT, then CONNECTED). Err(Some)
    /// is a refusal (the server's answer), Err(None) a failure to retry.
    async fn handshake(&mut self, mut ws: Ws) -> Result<Ws, Option<String>> {
        let host = self.ctx.urls.first().and_then(|u| u.split("//").nth(1)).and_then(|h| h.split([':', '/']).next()).unwrap_or("localhost");
        let Some(hello) = self.ctx.wire.hello(host) else { return Ok(ws) };
        ws.send(hello).await.map_err(|_| None)?;
        if !self.ctx.wire.hello_answered() {
            return Ok(ws);
        }
        let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
        loop {
            let message = match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(m))) => m,
                _ => return Err(None),
            };
            let mut meanings = self.ctx.wire.read(&message).into_iter();
            while let Some(meaning) = meanings.next() {
                match meaning {
                    Incoming::Connected { heartbeat } => {
                        self.heartbeat = heartbeat;
                        // What came with the answer (a session's queued
                        // messages) is handled when the session starts.
                        self.early.extend(meanings);
                        return Ok(ws);
                    }
                    Incoming::Error { code, .. } => return Err(Some(self.ctx.wire.hello_refused(&code))),
                    Incoming::Reply(reply) => self.replies.push(reply),
                    _ => {}
                }
            }
            if message.is_close() {
                return Err(None);
            }
        }
    }

    /// Connected and, if it subscribes, subscribed to every room it is in:
    /// the drain waits for it.
    fn set_settled(&self, settled: bool) {
        self.shared().settled[self.ctx.plan.id as usize].store(settled, Ordering::Relaxed);
    }

    fn all_joined(&self) -> bool {
        self.rooms.iter().all(|r| r.phase == Phase::Joined)
    }

    /// Settled when fully up; the first time, before sending starts, it
    /// counts as ready.
    fn update_settled(&mut self) {
        let up = self.all_joined();
        self.set_settled(up);
        if up && !self.ready_reported && self.ctx.plan.join_at.is_zero() {
            self.ready_reported = true;
            self.shared().ready.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn session(&mut self, ws: Ws, rec: &mut Recorder) -> SessionEnd {
        let (mut write, mut read) = ws.split();
        self.heartbeat = self.heartbeat.or_else(|| self.ctx.wire.heartbeat_every());
        self.next_heartbeat = self.heartbeat.map(|h| self.now() + h.as_nanos() as u64);
        for slot in 0..self.rooms.len() {
            if self.rooms[slot].phase != Phase::Idle {
                continue;
            }
            if self.ctx.wire.session_keeps(slot) {
                // The connection's answer confirmed the subscription.
                rec.record(EventKind::Subscribing { room: self.ctx.rooms[slot].0, after: None });
                self.rooms[slot].phase = Phase::Requested;
                self.rooms[slot].pending_after = None;
                self.on_subscribed(Some(slot), 0, rec);
            } else if let Err(code) = self.subscribe(&mut write, slot, rec).await {
                return SessionEnd::Broken(code);
            }
        }
        self.update_settled();
        for meaning in std::mem::take(&mut self.early) {
            self.on_incoming(meaning, None, rec);
        }
        // Resend everything unacked with the same id, oldest first, before
        // anything new (the same path as after an error frame).
        if !self.outstanding.is_empty() {
            self.resend_at = Some(self.now());
        }
        // The stop and drop signals are watched by every connection. Their
        // change futures live as long as the session (registered once), not
        // one per loop turn: re-registering them on every frame contended
        // their shared locks across worker threads.
        let mut stop = WatchStream::from_changes(self.ctx.stop.clone());
        // A drop that happened before this connection existed is not for it.
        let mut drops = self.ctx.drops.clone();
        drops.mark_unchanged();
        let mut drops = WatchStream::from_changes(drops);
        let mut start = self.ctx.start.clone();
        let clock = self.ctx.clock;
        // One timer for the session, moved only when the next wake moves.
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<u64> = None;
        loop {
            let window = *start.borrow_and_update();
            let now = self.now();
            let wake = [self.next_send(window, now), self.resend_at, self.next_heartbeat, self.next_room_timer(), self.churn_due(window)]
                .into_iter()
                .flatten()
                .min();
            if wake != armed
                && let Some(t) = wake
            {
                timer.as_mut().reset(clock.instant_at(t).into());
            }
            armed = wake;
            let step = tokio::select! {
                _ = &mut timer, if wake.is_some() => {
                    // Fired: the same wake again must be re-armed.
                    armed = None;
                    self.on_timer(&mut write, window, rec).await
                }
                incoming = read.next() => self.on_frame(incoming, rec),
                changed = start.changed(), if window.is_none() => if changed.is_err() { return SessionEnd::Stopped } else { Ok(()) },
                Some((epoch, share)) = drops.next() => {
                    if self.picked(epoch, share) {
                        let _ = write.send(Message::Close(None)).await;
                        Err(None)
                    } else {
                        Ok(())
                    }
                }
                _ = stop.next() => {
                    let _ = write.send(Message::Close(None)).await;
                    return SessionEnd::Stopped;
                }
            };
            if let Err(code) = step {
                return SessionEnd::Broken(code);
            }
            for reply in std::mem::take(&mut self.replies) {
                if write.send(reply).await.is_err() {
                    return SessionEnd::Broken(None);
                }
            }
        }
    }

    /// When the next new send is due, as of `now` (None: none now). A
    /// closed loop's next send is due `now` whenever it has room in flight.
    fn next_send(&self, window: Option<Window>, now: u64) -> Option<u64> {
        let window = window?;
        let schedule = self.ctx.plan.schedule?;
        if self.resend_at.is_some() {
            return None;
        }
        // A protocol whose sends need the room joined: none into a room
        // this client is away from (churn) or not yet in; it catches up
        // when it is back.
        if self.ctx.wire.sends_need_join()
            && self
                .rooms
                .get(send_slot(msg_no(self.ctx.plan.msg_client, self.next_k), self.ctx.rooms.len()))
                .is_some_and(|r| r.phase != Phase::Joined)
        {
            return None;
        }
        match schedule {
            Schedule::Open { .. } => {
                let duration = Duration::from_nanos(window.end_ns - window.start_ns);
                Some(window.start_ns + schedule.due_in(self.next_k, duration)?)
            }
            Schedule::Closed { in_flight } => (self.outstanding.len() < in_flight as usize && now < window.end_ns).then_some(now),
        }
    }

    /// The earliest subscribe retry, rejoin or receipt-less confirmation due.
    fn next_room_timer(&self) -> Option<u64> {
        self.rooms.iter().flat_map(|r| [r.subscribe_due(), r.done_at]).flatten().min()
    }

    /// When this client next considers leaving a room (churn), while
    /// sending runs.
    fn churn_due(&mut self, window: Option<Window>) -> Option<u64> {
        let churn = self.ctx.workload.churn.as_ref()?;
        let window = window?;
        if self.rooms.is_empty() {
            return None;
        }
        let every = churn.every.0.as_nanos().max(1) as u64;
        let (at, _) = *self.next_churn.get_or_insert((window.start_ns + every, 1));
        (at < window.end_ns).then_some(at)
    }

    async fn on_timer(&mut self, write: &mut Writer, window: Option<Window>, rec: &mut Recorder) -> Step {
        let now = self.now();
        if let (Some(due), Some(every)) = (self.next_heartbeat, self.heartbeat)
            && due <= now
        {
            self.next_heartbeat = Some(now + every.as_nanos() as u64);
            if self.ctx.wire.heartbeat_unanswered() {
                tracing::info!(client = self.ctx.plan.id, "the last heartbeat went unanswered: reconnecting");
                let _ = write.send(Message::Close(None)).await;
                return Err(None);
            }
            if let Some(beat) = self.ctx.wire.heartbeat() {
                write.send(beat).await.map_err(|_| None)?;
            }
        }
        for slot in 0..self.rooms.len() {
            if self.rooms[slot].done_at.is_some_and(|t| t <= now) {
                self.rooms[slot].done_at = None;
                match self.rooms[slot].phase {
                    Phase::Requested => self.on_subscribed(Some(slot), 0, rec),
                    Phase::Leaving => self.on_unsubscribed(Some(slot), rec),
                    _ => {}
                }
            }
            if self.rooms[slot].subscribe_due().is_some_and(|t| t <= now) {
                self.subscribe(write, slot, rec).await?;
            }
        }
        if let Some(at) = self.churn_due(window)
            && at <= now
        {
            self.churn(write, rec).await?;
        }
        if let Some(due) = self.resend_at
            && due <= now
        {
            self.resend_at = None;
            for (&msg, o) in &self.outstanding {
                let (frame, body) = self.ctx.wire.send(o.slot, msg, &o.text);
                rec.record(EventKind::Send { room: self.room_idx(o.slot), msg, scheduled_ns: o.scheduled_ns, body });
                write.send(frame).await.map_err(|_| None)?;
            }
        } else if let Some(due) = self.next_send(window, now)
            && due <= now
        {
            let msg = msg_no(self.ctx.plan.msg_client, self.next_k);
            self.next_k += 1;
            let slot = self.slot_of_send(msg);
            let open_loop = matches!(self.ctx.plan.schedule.expect("only a client with a schedule sends"), Schedule::Open { .. });
            // Backpressure (`workload.max_pending`): a send due while that
            // many wait for their ack is dropped, not queued behind them.
            if self.ctx.acks && self.ctx.workload.max_pending.is_some_and(|max| self.outstanding.len() >= max as usize) {
                rec.record(EventKind::Dropped { room: self.room_idx(slot), msg, scheduled_ns: due });
                self.shared().send_attempted(self.ctx.plan.id as usize, open_loop, false);
                return Ok(());
            }
            let text = text_of(&mut self.rng, &self.ctx.workload);
            let (frame, body) = self.ctx.wire.send(slot, msg, &text);
            rec.record(EventKind::Send { room: self.room_idx(slot), msg, scheduled_ns: due, body });
            if self.shared().sent.fetch_add(1, Ordering::Relaxed) < Samples::MAX as u64 {
                let mut samples = self.shared().samples.lock().expect("samples lock");
                if samples.sent.len() < Samples::MAX {
                    samples.sent.push((msg, text.clone()));
                }
            }
            self.shared().send_attempted(self.ctx.plan.id as usize, open_loop, self.ctx.acks);
            // Fire-and-forget (`ack: none`): nothing to wait for or resend.
            if self.ctx.acks {
                self.outstanding.insert(msg, Outstanding { scheduled_ns: due, slot, text });
            }
            write.send(frame).await.map_err(|_| None)?;
        }
        Ok(())
    }

    /// A churn tick: with probability `share`, leave one joined room; it
    /// joins again after `away`.
    async fn churn(&mut self, write: &mut Writer, rec: &mut Recorder) -> Step {
        let ctx = self.ctx;
        let churn = ctx.workload.churn.as_ref().expect("churn_due only fires with churn");
        let (at, tick) = self.next_churn.expect("churn_due set it");
        self.next_churn = Some((at + churn.every.0.as_nanos().max(1) as u64, tick + 1));
        let mut rng = StdRng::seed_from_u64(self.ctx.seed ^ 0x6368_7572_6e00 ^ (u64::from(self.ctx.plan.id) << 24) ^ tick);
        if !rng.random_bool(churn.share.clamp(0.0, 1.0)) {
            return Ok(());
        }
        let joined: Vec<usize> = (0..self.rooms.len()).filter(|&s| self.rooms[s].phase == Phase::Joined).collect();
        if joined.is_empty() {
            return Ok(());
        }
        let slot = joined[rng.random_range(0..joined.len())];
        let with_after = self.ctx.seq
            && match churn.rejoin {
                Rejoin::After => true,
                Rejoin::Head => false,
                Rejoin::Either => rng.random_bool(0.5),
            };
        let now = self.now();
        let room = &mut self.rooms[slot];
        room.phase = Phase::Leaving;
        room.join_from = if with_after { JoinFrom::LastSeen } else { JoinFrom::Head };
        room.rejoin_at = Some(now + churn.away.0.as_nanos() as u64);
        room.done_at = self.ctx.wire.leave_done_after().map(|d| now + d.as_nanos() as u64);
        self.subscribe_attempts += 1;
        rec.record(EventKind::Leaving { room: self.room_idx(slot) });
        self.set_settled(false);
        write.send(self.ctx.wire.unsubscribe(slot, self.subscribe_attempts)).await.map_err(|_| None)
    }

    async fn subscribe(&mut self, write: &mut Writer, slot: usize, rec: &mut Recorder) -> Step {
        let room = &self.rooms[slot];
        let after = match room.join_from {
            _ if !self.ctx.seq => None,
            JoinFrom::Plan => self.ctx.plan.after,
            JoinFrom::LastSeen => room.resume_after,
            JoinFrom::Head => None,
        };
        self.subscribe_attempts += 1;
        let done_at = self.ctx.wire.done_after().map(|d| self.now() + d.as_nanos() as u64);
        let room = &mut self.rooms[slot];
        room.pending_after = after;
        room.phase = Phase::Requested;
        room.retry_at = None;
        room.rejoin_at = None;
        room.done_at = done_at;
        rec.record(EventKind::Subscribing { room: self.ctx.rooms[slot].0, after });
        write.send(self.ctx.wire.subscribe(slot, after, self.subscribe_attempts)).await.map_err(|_| None)
    }

    fn on_frame(&mut self, incoming: Option<Result<Message, tungstenite::Error>>, rec: &mut Recorder) -> Step {
        let message = match incoming {
            Some(Ok(other @ Message::Close(_))) => return Err(close_code(&other)),
            Some(Ok(m)) => m,
            Some(Err(_)) | None => return Err(None),
        };
        let mut meanings = std::mem::take(&mut self.meanings);
        self.ctx.wire.read_into(&message, &mut meanings);
        for meaning in meanings.drain(..) {
            self.on_incoming(meaning, Some(&message), rec);
        }
        self.meanings = meanings;
        Ok(())
    }

    /// `message`: the frame it came in (None: it came with the handshake's answer).
    fn on_incoming(&mut self, incoming: Incoming, message: Option<&Message>, rec: &mut Recorder) {
        match incoming {
            Incoming::Ack { msg, seq } => self.on_ack(msg, seq, rec),
            Incoming::Msg(d) => {
                if let (Some(msg), Some(Message::Text(frame))) = (d.msg, message)
                    && self.shared().delivered.load(Ordering::Relaxed) < Samples::MAX as u64
                {
                    let mut samples = self.shared().samples.lock().expect("samples lock");
                    if samples.delivered.len() < Samples::MAX {
                        samples.delivered.push((msg, frame.chars().take(Samples::FRAME_CHARS).collect()));
                    }
                }
                self.on_msg(d, rec)
            }
            Incoming::Subscribed { slot, head } => self.on_subscribed(slot, head, rec),
            Incoming::Unsubscribed { slot } => self.on_unsubscribed(slot, rec),
            Incoming::Error { msg: Some(msg), .. } => {
                rec.record(EventKind::Error { msg: Some(msg) });
                self.shared().errors.fetch_add(1, Ordering::Relaxed);
                if self.outstanding.contains_key(&msg) && self.resend_at.is_none() {
                    self.resend_at = Some(self.now() + self.resend_backoff_ns);
                    self.resend_backoff_ns = (self.resend_backoff_ns * 2).min(MAX_RESEND_AFTER_ERROR_NS);
                }
            }
            Incoming::Error { msg: None, slot, code } => {
                self.shared().errors.fetch_add(1, Ordering::Relaxed);
                // An error without an id answers the subscribe in flight
                // (of the room it names, else the first one waiting).
                let requested = |s: &usize| self.rooms.get(*s).is_some_and(|r| r.phase == Phase::Requested);
                let target = slot.filter(requested).or_else(|| (0..self.rooms.len()).find(requested));
                match target {
                    Some(slot) => {
                        tracing::debug!(client = self.ctx.plan.id, code, "subscribe refused; retrying");
                        rec.record(EventKind::SubscribeRefused { room: self.room_idx(slot) });
                        let now = self.now();
                        let room = &mut self.rooms[slot];
                        room.phase = Phase::Refused;
                        room.retry_at = Some(now + room.backoff.as_nanos() as u64);
                        room.backoff = (room.backoff * 2).min(MAX_BACKOFF);
                    }
                    None => {
                        rec.record(EventKind::Error { msg: None });
                        // An unsubscribe the server does not know: left all the same.
                        if let Some(slot) = slot.filter(|&s| self.rooms.get(s).is_some_and(|r| r.phase == Phase::Leaving)) {
                            self.rooms[slot].phase = Phase::Away;
                        }
                    }
                }
            }
            Incoming::Reply(reply) => self.replies.push(reply),
            Incoming::Unmatched => {
                let shared = self.shared();
                if shared.unmatched.fetch_add(1, Ordering::Relaxed) == 0
                    && let Some(message) = message
                {
                    let text = match message {
                        Message::Text(t) => t.chars().take(300).collect(),
                        other => format!("{} bytes of {}", other.len(), if other.is_binary() { "binary" } else { "control" }),
                    };
                    *shared.unmatched_example.lock().expect("unmatched lock") = Some(text);
                }
            }
            Incoming::Connected { .. } | Incoming::Nothing => {}
        }
    }

    fn on_unsubscribed(&mut self, slot: Option<usize>, rec: &mut Recorder) {
        if let Some(slot) = slot.filter(|&s| self.rooms.get(s).is_some_and(|r| r.phase == Phase::Leaving)) {
            rec.record(EventKind::Left { room: self.room_idx(slot) });
            self.rooms[slot].phase = Phase::Away;
            self.rooms[slot].done_at = None;
        }
    }

    fn on_ack(&mut self, msg: MsgNo, seq: u64, rec: &mut Recorder) {
        let room = self.room_idx(self.slot_of_send(msg));
        rec.record(EventKind::Ack { room, msg, seq });
        let shared = &self.ctx.shared;
        if self.outstanding.remove(&msg).is_some() {
            self.resend_backoff_ns = RESEND_AFTER_ERROR_NS;
            shared.acked.fetch_add(1, Ordering::Relaxed);
            shared.outstanding.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(max) = shared.room_max_acked.get(room as usize) {
            max.fetch_max(seq, Ordering::Relaxed);
        }
        // A server that never echoes a sender's own messages: its own acks
        // are as far as it will get (the drain waits for nothing more).
        if !self.ctx.echo
            && let Some(last) = shared.client_last_seq[self.ctx.plan.id as usize].get(self.slot_of_send(msg))
        {
            last.fetch_max(seq, Ordering::Relaxed);
        }
    }

    /// The slot of the room a message was sent to (from its id), if this
    /// client is in that room; else the slot its labels name.
    fn own_slot(&self, msg: Option<MsgNo>, label_slot: usize) -> Option<usize> {
        let Some(msg) = msg else { return Some(label_slot) };
        let sender_rooms = self.ctx.sender_rooms.get(msg_parts(msg).0 as usize).filter(|r| !r.is_empty());
        let Some(rooms) = sender_rooms else { return Some(label_slot) };
        let room = rooms[send_slot(msg, rooms.len())];
        self.ctx.rooms.iter().position(|&(r, _)| r == room)
    }

    fn on_msg(&mut self, d: Delivered, rec: &mut Recorder) {
        let Delivered { msg, seq, slot, label, body, message_id } = d;
        rec.record(EventKind::Deliver { room: self.room_idx(slot), msg: msg.unwrap_or(FOREIGN_MSG), seq, body, label, message_id });
        let shared = &self.ctx.shared;
        shared.delivered.fetch_add(1, Ordering::Relaxed);
        shared.last_delivery_ns.fetch_max(self.ctx.clock.now_ns(), Ordering::Relaxed);
        let Some(slot) = self.own_slot(msg, slot) else { return };
        // A room it left is not its business any more (what still arrives
        // is recorded, and judged, but does not move where it resumes).
        let Some(room) = self.rooms.get_mut(slot).filter(|r| !matches!(r.phase, Phase::Leaving | Phase::Away)) else { return };
        room.resume_after = Some(room.resume_after.map_or(seq, |a| a.max(seq)));
        if let Some(last) = shared.client_last_seq[self.ctx.plan.id as usize].get(slot) {
            last.fetch_max(seq, Ordering::Relaxed);
        }
    }

    fn on_subscribed(&mut self, slot: Option<usize>, head: u64, rec: &mut Recorder) {
        // An answer that names no room (a server without room labels on
        // it) answers the first subscribe in flight.
        let requested = |s: &usize| self.rooms.get(*s).is_some_and(|r| matches!(r.phase, Phase::Requested | Phase::Refused));
        let Some(slot) = slot.filter(requested).or_else(|| (0..self.rooms.len()).find(requested)) else { return };
        let room_idx = self.room_idx(slot);
        let room = &mut self.rooms[slot];
        let after = room.pending_after;
        rec.record(EventKind::Subscribed { room: room_idx, head, after });
        match after {
            None => {
                room.resume_after = Some(room.resume_after.map_or(head, |a| a.max(head)));
                if let Some(last) = self.ctx.shared.client_last_seq[self.ctx.plan.id as usize].get(slot) {
                    last.fetch_max(head, Ordering::Relaxed);
                }
            }
            Some(a) => {
                room.resume_after.get_or_insert(a);
            }
        }
        room.phase = Phase::Joined;
        room.done_at = None;
        // Resubscribes within this membership resume where it got to.
        room.join_from = JoinFrom::LastSeen;
        room.backoff = FIRST_BACKOFF;
        self.update_settled();
    }

    /// Whether the current `drop_clients` fault picks this client.
    fn picked(&self, epoch: u64, share: f64) -> bool {
        let mut rng = StdRng::seed_from_u64(self.ctx.seed ^ epoch.rotate_left(17) ^ u64::from(self.ctx.plan.id));
        rng.random::<f64>() < share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past 16,384 clients, connections come from 127.0.0.2, .3, ...:
    /// the server sees that address.
    #[tokio::test]
    async fn clients_past_a_block_connect_from_the_next_loopback_address() {
        assert_eq!(source_address(0), None);
        assert_eq!(source_address(CLIENTS_PER_SOURCE - 1), None);
        assert_eq!(source_address(CLIENTS_PER_SOURCE), Some(std::net::Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source_address(100_000), Some(std::net::Ipv4Addr::new(127, 0, 0, 7)));
        assert_eq!(source_address(u32::MAX), Some(std::net::Ipv4Addr::new(127, 4, 0, 0)), "always inside 127.0.0.0/8");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let peers = tokio::spawn(async move {
            let mut peers = Vec::new();
            for _ in 0..2 {
                let (socket, peer) = listener.accept().await.unwrap();
                peers.push(peer.ip());
                tokio::spawn(async move {
                    let _ws = tokio_tungstenite::accept_async(socket).await;
                });
            }
            peers
        });
        for url in [format!("ws://127.0.0.1:{port}/ws"), format!("ws://localhost:{port}/ws")] {
            open(&url, &[], &[], None, source_address(40_000)).await.expect("connects");
        }
        let third = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(peers.await.unwrap(), vec![third, third]);
    }

    /// A server message over the client's limit ends the connection with
    /// an error instead of being buffered (a hostile or broken server
    /// cannot make the harness hold megabytes per connection).
    #[tokio::test]
    async fn a_server_message_over_the_limit_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
            let _ = ws.send(Message::text("x".repeat(MAX_SERVER_MESSAGE / 2))).await;
            let _ = ws.send(Message::text("x".repeat(MAX_SERVER_MESSAGE + 1))).await;
        });
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true).await.unwrap();
        assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))), "a message under the limit is read");
        assert!(matches!(ws.next().await, Some(Err(tungstenite::Error::Capacity(_)))), "one over it is an error");
    }
}
