//! One client connection, whatever its role: one loop, with the role
//! deciding what it does (a sender sends on its schedule, a subscriber
//! subscribes, a chatter does both on the same connection, as real chat
//! clients do).
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

use super::wire::{Incoming, Wire};
use super::{ClientPlan, Schedule, Shared, Window};
use crate::scenario::{MessageBytes, Workload};
use crate::trace::{Clock, Event, EventKind, FOREIGN_MSG, MsgNo, Recorder, msg_no};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{self, Message};

pub(super) struct Context {
    pub plan: ClientPlan,
    /// Every node's WebSocket URL (reconnects may go elsewhere).
    pub urls: Vec<String>,
    pub room: String,
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
    /// The system has a per-room `seq` (subscriptions resume with `after`).
    pub seq: bool,
    /// Credentials on the WebSocket upgrade: headers, query parameters.
    pub upgrade_headers: Vec<(String, String)>,
    pub upgrade_query: Vec<(String, String)>,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// How long a STOMP CONNECT may wait for CONNECTED.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Pause before resending a send that got an `error` frame.
const RESEND_AFTER_ERROR_NS: u64 = 200_000_000;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
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
    body: String,
}

pub(super) async fn run(ctx: Context) -> Vec<Event> {
    let expected = expected_sends(&ctx);
    let capacity = if ctx.plan.role.subscribes() { expected * 4 + 64 } else { 2 * expected + 16 };
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

fn body(rng: &mut StdRng, bytes: &MessageBytes) -> String {
    let n = match *bytes {
        MessageBytes::Fixed(n) => n,
        MessageBytes::Range { min, max } => rng.random_range(min..=max),
    };
    "x".repeat(n as usize)
}

fn close_code(message: &Message) -> Option<u16> {
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

struct Client<'a> {
    ctx: &'a Context,
    rng: StdRng,
    // Sending.
    outstanding: BTreeMap<MsgNo, Outstanding>,
    /// When set: new sends wait, and at this time every unacked message is
    /// resent in order.
    resend_at: Option<u64>,
    next_k: u32,
    // Subscribing.
    /// Confirmed on the current connection.
    subscribed: bool,
    ever_subscribed: bool,
    /// The `after` of the subscribe in flight.
    pending_after: Option<u64>,
    /// Resubscribe from here: the last `seq` seen (or the start).
    resume_after: Option<u64>,
    subscribe_retry_at: Option<u64>,
    subscribe_backoff: Duration,
    subscribe_attempts: u64,
    ready_reported: bool,
    /// STOMP: send a heart-beat this often (the server asked for them).
    heartbeat: Option<Duration>,
    next_heartbeat: Option<u64>,
}

impl<'a> Client<'a> {
    fn new(ctx: &'a Context) -> Self {
        Self {
            ctx,
            rng: StdRng::seed_from_u64(ctx.seed ^ (u64::from(ctx.plan.id) << 20)),
            outstanding: BTreeMap::new(),
            resend_at: None,
            next_k: 0,
            subscribed: false,
            ever_subscribed: false,
            pending_after: None,
            resume_after: None,
            subscribe_retry_at: None,
            subscribe_backoff: FIRST_BACKOFF,
            subscribe_attempts: 0,
            ready_reported: false,
            heartbeat: None,
            next_heartbeat: None,
        }
    }

    fn shared(&self) -> &Shared {
        &self.ctx.shared
    }

    fn now(&self) -> u64 {
        self.ctx.clock.now_ns()
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
            let Some((ws, node)) = self.connect(rec).await else { return };
            rec.record(EventKind::Connected { node });
            match self.session(ws, rec).await {
                SessionEnd::Stopped => return,
                SessionEnd::Broken(code) => {
                    rec.record(EventKind::Closed { code });
                    self.shared().closed.fetch_add(1, Ordering::Relaxed);
                    self.set_settled(false);
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
    async fn connect(&mut self, rec: &mut Recorder) -> Option<(Ws, u32)> {
        let nodes = self.ctx.urls.len();
        let mut backoff = FIRST_BACKOFF;
        let mut stop = self.ctx.stop.clone();
        for attempt in 0usize.. {
            if *stop.borrow_and_update() {
                return None;
            }
            let node = (self.ctx.plan.node as usize + attempt) % nodes;
            match self.open(&self.ctx.urls[node]).await {
                Ok(ws) => match self.handshake(ws).await {
                    Ok(ws) => return Some((ws, node as u32)),
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
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
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
        self.shared().gave_up.fetch_add(1, Ordering::Relaxed);
        self.shared().refusals.lock().expect("refusals lock").push((self.ctx.plan.id, why));
        self.set_settled(true);
        self.shared().sends_left[self.ctx.plan.id as usize].store(0, Ordering::Relaxed);
        self.shared().client_last_seq[self.ctx.plan.id as usize].store(u64::MAX, Ordering::Relaxed);
    }

    /// The WebSocket upgrade, with this client's credentials.
    async fn open(&self, url: &str) -> Result<Ws, tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut url = url.to_owned();
        if !self.ctx.upgrade_query.is_empty() {
            let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(&self.ctx.upgrade_query).finish();
            url = format!("{url}{}{query}", if url.contains('?') { '&' } else { '?' });
        }
        let mut request = url.into_client_request()?;
        if let Wire::Stomp(_) = self.ctx.wire {
            request.headers_mut().insert("Sec-WebSocket-Protocol", tungstenite::http::HeaderValue::from_static("v12.stomp, v11.stomp"));
        }
        for (name, value) in &self.ctx.upgrade_headers {
            let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
            let value = tungstenite::http::HeaderValue::from_str(value).map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
            request.headers_mut().insert(name, value);
        }
        tokio_tungstenite::connect_async(request).await.map(|(ws, _)| ws)
    }

    /// Open the protocol session (STOMP: CONNECT, then CONNECTED). Err(Some)
    /// is a refusal (the server's answer), Err(None) a failure to retry.
    async fn handshake(&mut self, mut ws: Ws) -> Result<Ws, Option<String>> {
        let host = self.ctx.urls.first().and_then(|u| u.split("//").nth(1)).and_then(|h| h.split([':', '/']).next()).unwrap_or("localhost");
        let Some(hello) = self.ctx.wire.hello(host) else { return Ok(ws) };
        ws.send(hello).await.map_err(|_| None)?;
        let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
        loop {
            let message = match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(m))) => m,
                _ => return Err(None),
            };
            match self.ctx.wire.read(&message) {
                Incoming::Connected { heartbeat } => {
                    self.heartbeat = heartbeat;
                    return Ok(ws);
                }
                Incoming::Error { code, .. } => return Err(Some(format!("the STOMP CONNECT was refused: ERROR {code}"))),
                _ if message.is_close() => return Err(None),
                _ => {}
            }
        }
    }

    /// Connected and, if it subscribes, subscribed: the drain waits for it.
    fn set_settled(&self, settled: bool) {
        self.shared().settled[self.ctx.plan.id as usize].store(settled, Ordering::Relaxed);
    }

    /// The first time this client is fully up, before sending starts.
    fn up(&mut self) {
        self.set_settled(true);
        if !self.ready_reported && self.ctx.plan.join_at.is_zero() {
            self.ready_reported = true;
            self.shared().ready.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn session(&mut self, ws: Ws, rec: &mut Recorder) -> SessionEnd {
        let (mut write, mut read) = ws.split();
        self.subscribed = false;
        self.subscribe_retry_at = None;
        self.next_heartbeat = self.heartbeat.map(|h| self.now() + h.as_nanos() as u64);
        if self.ctx.plan.role.subscribes() {
            if let Err(code) = self.subscribe(&mut write).await {
                return SessionEnd::Broken(code);
            }
        } else {
            self.up();
        }
        // Resend everything unacked with the same id, oldest first, before
        // anything new (the same path as after an error frame).
        if !self.outstanding.is_empty() {
            self.resend_at = Some(self.now());
        }
        let mut stop = self.ctx.stop.clone();
        // A drop that happened before this connection existed is not for it.
        let mut drops = self.ctx.drops.clone();
        drops.mark_unchanged();
        let mut start = self.ctx.start.clone();
        loop {
            let window = *start.borrow_and_update();
            let wake = [self.next_send(window, self.now()), self.resend_at, self.subscribe_retry_at, self.next_heartbeat]
                .into_iter()
                .flatten()
                .min();
            let clock = self.ctx.clock;
            let sleep = async move {
                match wake {
                    Some(t) => tokio::time::sleep_until(clock.instant_at(t).into()).await,
                    None => std::future::pending().await,
                }
            };
            let step = tokio::select! {
                _ = sleep => self.on_timer(&mut write, window, rec).await,
                incoming = read.next() => self.on_frame(incoming, rec),
                changed = start.changed(), if window.is_none() => if changed.is_err() { return SessionEnd::Stopped } else { Ok(()) },
                _ = drops.changed() => {
                    let (epoch, share) = *drops.borrow_and_update();
                    if self.picked(epoch, share) {
                        let _ = write.send(Message::Close(None)).await;
                        Err(None)
                    } else {
                        Ok(())
                    }
                }
                _ = stop.changed() => {
                    let _ = write.send(Message::Close(None)).await;
                    return SessionEnd::Stopped;
                }
            };
            if let Err(code) = step {
                return SessionEnd::Broken(code);
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
        match schedule {
            Schedule::Open { .. } => {
                let duration = Duration::from_nanos(window.end_ns - window.start_ns);
                Some(window.start_ns + schedule.due_in(self.next_k, duration)?)
            }
            Schedule::Closed { in_flight } => (self.outstanding.len() < in_flight as usize && now < window.end_ns).then_some(now),
        }
    }

    async fn on_timer(&mut self, write: &mut Writer, window: Option<Window>, rec: &mut Recorder) -> Step {
        let now = self.now();
        if let (Some(due), Some(every)) = (self.next_heartbeat, self.heartbeat)
            && due <= now
        {
            self.next_heartbeat = Some(now + every.as_nanos() as u64);
            if let Some(beat) = self.ctx.wire.heartbeat() {
                write.send(beat).await.map_err(|_| None)?;
            }
        }
        if let Some(due) = self.subscribe_retry_at
            && due <= now
        {
            self.subscribe_retry_at = None;
            self.subscribe(write).await?;
        }
        if let Some(due) = self.resend_at
            && due <= now
        {
            self.resend_at = None;
            let room = self.ctx.plan.room;
            for (&msg, o) in &self.outstanding {
                rec.record(EventKind::Send { room, msg, scheduled_ns: o.scheduled_ns });
                write.send(self.ctx.wire.send(&self.ctx.room, msg, &o.body)).await.map_err(|_| None)?;
            }
        } else if let Some(due) = self.next_send(window, now)
            && due <= now
        {
            let msg = msg_no(self.ctx.plan.msg_client, self.next_k);
            self.next_k += 1;
            let body = body(&mut self.rng, &self.ctx.workload.message_bytes);
            rec.record(EventKind::Send { room: self.ctx.plan.room, msg, scheduled_ns: due });
            self.shared().sent.fetch_add(1, Ordering::Relaxed);
            if let Schedule::Open { .. } = self.ctx.plan.schedule.expect("only a client with a schedule sends") {
                self.shared().sends_left[self.ctx.plan.id as usize].fetch_sub(1, Ordering::Relaxed);
            }
            self.shared().outstanding.fetch_add(1, Ordering::Relaxed);
            let frame = self.ctx.wire.send(&self.ctx.room, msg, &body);
            self.outstanding.insert(msg, Outstanding { scheduled_ns: due, body });
            write.send(frame).await.map_err(|_| None)?;
        }
        Ok(())
    }

    async fn subscribe(&mut self, write: &mut Writer) -> Step {
        let after = if !self.ctx.seq {
            None
        } else if self.ever_subscribed {
            self.resume_after
        } else {
            self.ctx.plan.after
        };
        self.pending_after = after;
        self.subscribe_attempts += 1;
        write.send(self.ctx.wire.subscribe(&self.ctx.room, after, self.subscribe_attempts)).await.map_err(|_| None)
    }

    fn on_frame(&mut self, incoming: Option<Result<Message, tungstenite::Error>>, rec: &mut Recorder) -> Step {
        let message = match incoming {
            Some(Ok(other @ Message::Close(_))) => return Err(close_code(&other)),
            Some(Ok(m)) => m,
            Some(Err(_)) | None => return Err(None),
        };
        let room = self.ctx.plan.room;
        let shared = &self.ctx.shared;
        match self.ctx.wire.read(&message) {
            Incoming::Ack { msg, seq } => {
                rec.record(EventKind::Ack { room, msg, seq });
                if self.outstanding.remove(&msg).is_some() {
                    shared.acked.fetch_add(1, Ordering::Relaxed);
                    shared.outstanding.fetch_sub(1, Ordering::Relaxed);
                }
                shared.room_max_acked[room as usize].fetch_max(seq, Ordering::Relaxed);
            }
            Incoming::Msg { msg, seq } => {
                rec.record(EventKind::Deliver { room, msg: msg.unwrap_or(FOREIGN_MSG), seq });
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                shared.last_delivery_ns.fetch_max(self.ctx.clock.now_ns(), Ordering::Relaxed);
                shared.client_last_seq[self.ctx.plan.id as usize].fetch_max(seq, Ordering::Relaxed);
                self.resume_after = Some(self.resume_after.map_or(seq, |a| a.max(seq)));
            }
            Incoming::Subscribed { head } if !self.subscribed && self.ctx.plan.role.subscribes() => {
                let after = self.pending_after;
                rec.record(EventKind::Subscribed { room, head, after });
                if after.is_none() {
                    shared.client_last_seq[self.ctx.plan.id as usize].fetch_max(head, Ordering::Relaxed);
                }
                self.resume_after.get_or_insert(after.unwrap_or(head));
                self.subscribed = true;
                self.ever_subscribed = true;
                self.subscribe_backoff = FIRST_BACKOFF;
                self.up();
            }
            Incoming::Error { msg: Some(msg), .. } => {
                rec.record(EventKind::Error { msg: Some(msg) });
                shared.errors.fetch_add(1, Ordering::Relaxed);
                if self.outstanding.contains_key(&msg) && self.resend_at.is_none() {
                    self.resend_at = Some(self.now() + RESEND_AFTER_ERROR_NS);
                }
            }
            // An error without an id while a subscribe is in flight answers the subscribe.
            Incoming::Error { msg: None, code }
                if self.ctx.plan.role.subscribes() && !self.subscribed && self.subscribe_retry_at.is_none() =>
            {
                tracing::debug!(client = self.ctx.plan.id, code, "subscribe refused; retrying");
                rec.record(EventKind::SubscribeRefused { room });
                shared.errors.fetch_add(1, Ordering::Relaxed);
                self.subscribe_retry_at = Some(self.now() + self.subscribe_backoff.as_nanos() as u64);
                self.subscribe_backoff = (self.subscribe_backoff * 2).min(MAX_BACKOFF);
            }
            Incoming::Error { msg: None, .. } => {
                rec.record(EventKind::Error { msg: None });
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
            Incoming::Subscribed { .. } | Incoming::Connected { .. } | Incoming::Nothing => {}
        }
        Ok(())
    }

    /// Whether the current `drop_clients` fault picks this client.
    fn picked(&self, epoch: u64, share: f64) -> bool {
        let mut rng = StdRng::seed_from_u64(self.ctx.seed ^ epoch.rotate_left(17) ^ u64::from(self.ctx.plan.id));
        rng.random::<f64>() < share
    }
}
