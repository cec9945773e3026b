//! One WebSocket connection: the socket I/O around the pure parts
//! (`protocol` for frames, `resequencer` for each room's order, `send_gate`
//! for per-sender FIFO).
//!
//! The connection loop never waits on anything but the socket it writes to:
//! - MongoDB reads (a subscription's head, history pages) run as futures the
//!   loop polls alongside everything else, one history fetch per room;
//! - sends go to a per-connection worker that stores them one at a time (in
//!   order) and answers on its own channel, which the loop always drains;
//!   when the worker is full (in count or bytes) the loop stops *reading*
//!   the socket, and only that;
//! - live frames come from the hub through a queue bounded in frames and
//!   bytes. It fills only when the loop is blocked writing, i.e. when the
//!   client does not read: that client is closed with 4008, and a write that
//!   blocks longer than the write timeout closes it too.
//!
//! A quiet connection is pinged; one that sends nothing (not even a pong)
//! for the idle timeout is closed with 4002.

use crate::AppState;
use crate::hub::{ConnHandle, ConnId, Outbound};
use crate::protocol::{ChatMessage, ErrorCode, FrameError, MsgId, Request, RoomId, Seq, ServerFrame, parse_request};
use crate::resequencer::PageStep;
use crate::sabotage::{Saboteur, Verdict};
use crate::send_gate::{Admit, SendGate};
use crate::stomp_dialect::{Inbound as StompIn, Outbound as StompOut, Session as StompSession};
use crate::store::{HistoryPage, StoreError};
use crate::subscriptions::{Fetch, Head, Live, PageDone, Subscriptions};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Close code sent to a client whose queue overflowed or that blocked a
/// write past the write timeout (documented in PROTOCOL.md).
pub(crate) const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code for a connection that sent nothing for the idle timeout.
pub(crate) const CLOSE_IDLE: u16 = 4002;
/// Close code on server shutdown ("going away").
pub(crate) const CLOSE_GOING_AWAY: u16 = 1001;
/// Messages per history page while catching a room up.
const HISTORY_PAGE: u32 = 500;
/// How often timers (retries, pings, idleness) are checked.
const TICK: Duration = Duration::from_millis(100);
/// When to look at a token with `left_s` whole seconds to live: at TICK's
/// pace in its last second, else a second before; at most an hour ahead
/// (a token that never expires, `exp` near u64::MAX, must not overflow
/// the clock).
fn expiry_wake(now: Instant, left_s: u64) -> Instant {
    if left_s <= 1 { now + TICK } else { now + Duration::from_secs((left_s - 1).min(3600)) }
}

/// `t + d`, or an hour from now when that is past what the clock holds
/// (`--idle-timeout` and `--ping-interval` take any duration; the old
/// tick compared elapsed times and never added them).
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
}

/// How long a close frame may wait for a client that is not reading.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Rooms whose sends may be blocked by an earlier failure at once.
const MAX_BLOCKED_ROOMS: usize = 64;

struct SendJob {
    room: RoomId,
    id: MsgId,
    body: String,
    /// When the frame was read: a send waits at most `--overload-wait` in
    /// the connection's queue and for a write slot together.
    received: Instant,
}

impl SendJob {
    fn bytes(&self) -> usize {
        self.body.len() + self.id.as_str().len() + self.room.as_str().len()
    }
}

/// The worker's answer to one send job.
struct Reply {
    bytes: usize,
    /// The ack or error frame (None only under `--sabotage no_ack`).
    frame: Option<Utf8Bytes>,
}

/// Why writing stopped: the socket failed, the client is too slow, or a
/// STOMP session ended (after an ERROR frame or DISCONNECT's receipt).
#[derive(Debug)]
enum Stop {
    Socket,
    Slow,
    Closing,
}

/// Why the connection ended.
#[derive(Debug)]
enum End {
    ClientClosed,
    SocketError,
    SlowConsumer,
    Idle,
    Shutdown,
    StompEnded,
    TokenExpired,
}

/// What woke the connection loop.
enum Event {
    Shutdown,
    Slow,
    Reply(Reply),
    Live(Outbound),
    Read(Read),
    Frame(Option<Result<Message, axum::Error>>),
    Resync,
    Tick,
}

/// A MongoDB read finished.
enum Read {
    Head { room: RoomId, generation: u64, result: Result<Seq, StoreError> },
    Page { room: RoomId, generation: u64, result: Result<HistoryPage, StoreError> },
}

struct Connection {
    state: Arc<AppState>,
    conn_id: ConnId,
    handle: ConnHandle,
    sink: SplitSink<WebSocket, Message>,
    subs: Subscriptions,
    reads: FuturesUnordered<BoxFuture<'static, Read>>,
    jobs: mpsc::Sender<SendJob>,
    /// A send read from the socket that the worker cannot take yet.
    pending_job: Option<SendJob>,
    /// Bytes of sends handed to the worker and not answered yet.
    queued_send_bytes: usize,
    last_heard: Instant,
    last_ping: Instant,
    saboteur: Saboteur,
    held_back: Option<Utf8Bytes>,
    codec: Codec,
    access: Access,
    /// Rooms authorized so far (`--sabotage auth_first_room_only`).
    rooms_checked: u64,
    /// TEST ONLY (`--sabotage auth_wildcard`): it subscribed to a pattern,
    /// so every room's messages are written to it.
    patterns: bool,
}

/// The definite refusal of a room the token does not grant (naming the
/// send it answers, if any).
fn forbidden(room: &RoomId, id: Option<&str>) -> FrameError {
    let mut err = FrameError::new(ErrorCode::Forbidden, format!("the token does not grant room {room}"));
    err.id = id.map(str::to_owned);
    err.room = Some(room.to_string());
    err
}

/// What a connection may do (`--auth-secret`).
#[derive(Debug)]
pub(crate) enum Access {
    /// Auth is off: any room.
    Open,
    /// STOMP with auth on: the token comes in CONNECT (nothing is asked of
    /// the session before CONNECT succeeds).
    Unproven,
    /// The rooms a verified token grants, until it expires.
    Granted(crate::auth::Grant),
}

/// What a connection speaks: protocol v1 (`/ws`), or STOMP 1.2 (`/stomp`),
/// whose frames are translated to and from protocol v1 at the socket's edge
/// by the connection's session.
#[derive(Debug)]
pub(crate) enum Codec {
    Json,
    Stomp(Box<StompSession>),
}

impl Codec {
    /// A STOMP session with the node's login and sabotage switches; with
    /// auth on and no token on the upgrade, CONNECT must carry one.
    pub(crate) fn stomp(state: &AppState, access: &Access) -> Codec {
        let verifier = matches!(access, Access::Unproven).then(|| state.auth.clone()).flatten();
        let mut session = StompSession::new(state.stomp_login.clone(), verifier);
        session.sabotage(state.sabotage);
        Codec::Stomp(Box::new(session))
    }

    fn is_stomp(&self) -> bool {
        matches!(self, Codec::Stomp(_))
    }
}

pub(crate) async fn handle(socket: WebSocket, state: Arc<AppState>, codec: Codec, access: Access) {
    state.metrics.connections.inc();
    let conn_id = state.hub.new_conn_id();
    let limits = state.limits;
    let (handle, inbox) = ConnHandle::channel(limits.queue_frames, limits.queue_bytes);
    let (jobs, jobs_rx) = mpsc::channel(limits.send_queue.max(1));
    // Room for every job's reply: the worker never waits on the loop.
    let (replies_tx, replies) = mpsc::channel(limits.send_queue.max(1) + 1);
    let worker = tokio::spawn(send_worker(state.clone(), jobs_rx, replies_tx));
    let (sink, stream) = socket.split();
    let now = Instant::now();
    let mut conn = Connection {
        saboteur: Saboteur::new(state.sabotage, state.sabotage_seed ^ conn_id),
        state: state.clone(),
        conn_id,
        handle,
        sink,
        subs: Subscriptions::new(limits.max_subscriptions),
        reads: FuturesUnordered::new(),
        jobs,
        pending_job: None,
        queued_send_bytes: 0,
        last_heard: now,
        last_ping: now,
        held_back: None,
        codec,
        access,
        rooms_checked: 0,
        patterns: false,
    };
    let end = conn.run(stream, inbox, replies).await;
    tracing::debug!(conn_id, ?end, "connection ended");
    for room in conn.subs.rooms() {
        if state.hub.unsubscribe(room.as_str(), conn_id) {
            state.metrics.subscriptions.dec();
            state.fanout.leave(room.as_str());
        }
    }
    worker.abort();
    state.metrics.connections.dec();
}

impl Connection {
    async fn run(
        &mut self,
        mut stream: SplitStream<WebSocket>,
        mut inbox: mpsc::Receiver<Outbound>,
        mut replies: mpsc::Receiver<Reply>,
    ) -> End {
        let mut shutdown = self.state.shutdown.subscribe();
        // Upgraded after the signal went out: it would never hear it.
        if self.state.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return self.close(CLOSE_GOING_AWAY, "server shutting down", End::Shutdown).await;
        }
        let mut resync = self.state.hub.resync_signal();
        // One timer, set to the next thing due (was: a 100 ms tick on every
        // connection, 1M wake-ups a second at 100k mostly idle ones).
        // Never moved later before it fires: a deadline paced from `now`
        // (a held-back frame, a token about to expire) would otherwise be
        // pushed back by every event and never come (seen: an expired token
        // kept its room while messages flowed). Firing early is harmless:
        // nothing is due, and it is set again.
        let mut armed = self.next_wake();
        let mut fired = false;
        let timer = tokio::time::sleep_until(armed);
        tokio::pin!(timer);
        let slow = self.handle.slow.clone();
        loop {
            let wake = self.next_wake();
            if fired || wake < armed {
                timer.as_mut().reset(wake);
                armed = wake;
                fired = false;
            }
            self.enqueue_pending_job();
            // Reading pauses while a send waits for room in the worker's queue.
            let reading = self.pending_job.is_none();
            let has_reads = !self.reads.is_empty();
            // The select only picks what happened; handling it comes after,
            // when no branch future borrows anything any more.
            let event = tokio::select! {
                biased;
                _ = shutdown.recv() => Event::Shutdown,
                _ = slow.notified() => Event::Slow,
                Some(reply) = replies.recv() => Event::Reply(reply),
                Some(out) = inbox.recv() => Event::Live(out),
                Some(read) = self.reads.next(), if has_reads => Event::Read(read),
                frame = stream.next(), if reading => Event::Frame(frame),
                _ = resync.changed() => Event::Resync,
                _ = &mut timer => Event::Tick,
            };
            let step = match event {
                Event::Shutdown => return self.close(CLOSE_GOING_AWAY, "server shutting down", End::Shutdown).await,
                Event::Slow => Err(Stop::Slow),
                Event::Reply(reply) => self.on_reply(reply).await,
                Event::Live(out) => {
                    self.handle.taken(&out);
                    self.on_live(out).await
                }
                Event::Read(read) => self.on_read(read).await,
                Event::Frame(frame) => {
                    self.last_heard = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) if self.codec.is_stomp() => self.stomp_request(text.as_str()).await,
                        Some(Ok(Message::Text(text))) => self.request(text.as_str()).await,
                        // STOMP clients may send frames as binary messages.
                        Some(Ok(Message::Binary(bytes))) if self.codec.is_stomp() => match std::str::from_utf8(&bytes) {
                            Ok(text) => self.stomp_request(text).await,
                            Err(_) => self.stomp_request("\u{0}not UTF-8").await,
                        },
                        Some(Ok(Message::Binary(_))) => {
                            let err =
                                FrameError::new(ErrorCode::BinaryNotSupported, "binary frames are not supported; send JSON text frames");
                            self.frame_error(err).await
                        }
                        Some(Ok(Message::Close(_))) | None => return End::ClientClosed,
                        Some(Ok(_)) => Ok(()), // ping/pong: the WebSocket layer answers pings
                        Some(Err(_)) => return End::SocketError,
                    }
                }
                Event::Resync => {
                    self.resync_all();
                    Ok(())
                }
                Event::Tick => {
                    fired = true;
                    match self.on_tick().await {
                        Ok(Some(end)) => return end,
                        Ok(None) => Ok(()),
                        Err(stop) => Err(stop),
                    }
                }
            };
            match step {
                Ok(()) => {}
                Err(Stop::Socket) => return End::SocketError,
                Err(Stop::Closing) => return self.close(1000, "STOMP session ended", End::StompEnded).await,
                Err(Stop::Slow) => {
                    self.state.metrics.slow_consumer_closes.inc();
                    tracing::warn!(conn_id = self.conn_id, "closing slow consumer");
                    return self.close(CLOSE_SLOW_CONSUMER, "slow consumer: queue full, reconnect with after", End::SlowConsumer).await;
                }
            }
        }
    }

    /// Hand the waiting send to the worker if its queue has room in count
    /// and bytes. The worker's reply to an earlier job (which the loop
    /// always takes) is what frees room, so nothing waits forever.
    fn enqueue_pending_job(&mut self) {
        let Some(job) = self.pending_job.take() else { return };
        let bytes = job.bytes();
        let fits = self.queued_send_bytes == 0 || self.queued_send_bytes + bytes <= self.state.limits.send_queue_bytes;
        if !fits {
            self.pending_job = Some(job);
            return;
        }
        match self.jobs.try_send(job) {
            Ok(()) => self.queued_send_bytes += bytes,
            Err(mpsc::error::TrySendError::Full(job)) => self.pending_job = Some(job),
            Err(mpsc::error::TrySendError::Closed(_)) => tracing::error!(conn_id = self.conn_id, "send worker is gone"),
        }
    }

    /// Send a close frame; a client that is not reading gets CLOSE_TIMEOUT
    /// to take it before the socket is simply dropped.
    async fn close(&mut self, code: u16, reason: &str, end: End) -> End {
        let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.sink.send(Message::Close(Some(frame)))).await;
        end
    }

    /// Write one frame. A write blocked on a client that does not read is
    /// abandoned at the write timeout, or as soon as the hub flags this
    /// connection as a slow consumer.
    async fn write(&mut self, message: Message) -> Result<(), Stop> {
        let slow = self.handle.slow.clone();
        tokio::select! {
            biased;
            written = tokio::time::timeout(self.state.limits.write_timeout, self.sink.send(message)) => match written {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Stop::Socket),
                Err(_) => Err(Stop::Slow),
            },
            _ = slow.notified() => Err(Stop::Slow),
        }
    }

    /// Write a protocol-v1 frame (translated on a STOMP session).
    async fn write_text(&mut self, frame: Utf8Bytes) -> Result<(), Stop> {
        let Codec::Stomp(stomp) = &mut self.codec else {
            return self.write(Message::Text(frame)).await;
        };
        match stomp.outbound(frame.as_str()) {
            StompOut::Write(text) => self.write(Message::Text(Utf8Bytes::from(text))).await,
            StompOut::WriteAndClose(text) => {
                self.write(Message::Text(Utf8Bytes::from(text))).await?;
                Err(Stop::Closing)
            }
            StompOut::Skip => Ok(()),
        }
    }

    /// One client message on a STOMP session.
    async fn stomp_request(&mut self, text: &str) -> Result<(), Stop> {
        let Codec::Stomp(stomp) = &mut self.codec else { return Ok(()) };
        match stomp.inbound(text) {
            StompIn::Granted { reply, grant } => {
                self.access = Access::Granted(grant);
                self.write(Message::Text(Utf8Bytes::from(reply))).await
            }
            StompIn::Refused(frame) => {
                self.state.metrics.auth_refusals.inc();
                self.state.metrics.frame_errors.inc();
                self.write(Message::Text(Utf8Bytes::from(frame))).await?;
                Err(Stop::Closing)
            }
            StompIn::Request(request) => self.dispatch(request).await,
            StompIn::Reply(frame) => self.write(Message::Text(Utf8Bytes::from(frame))).await,
            StompIn::Fail(frame) => {
                self.state.metrics.frame_errors.inc();
                self.write(Message::Text(Utf8Bytes::from(frame))).await?;
                Err(Stop::Closing)
            }
            StompIn::Disconnect(receipt) => {
                if !receipt.is_empty() {
                    self.write(Message::Text(Utf8Bytes::from(receipt))).await?;
                }
                Err(Stop::Closing)
            }
            StompIn::Nothing => Ok(()),
        }
    }

    async fn reply(&mut self, frame: ServerFrame<'_>) -> Result<(), Stop> {
        self.write_text(Utf8Bytes::from(frame.to_json())).await
    }

    async fn frame_error(&mut self, err: FrameError) -> Result<(), Stop> {
        self.state.metrics.frame_errors.inc();
        self.write_text(Utf8Bytes::from(err.to_frame())).await
    }

    /// Write a `msg` frame, through the saboteur (a no-op unless enabled).
    async fn write_msg(&mut self, frame: Utf8Bytes) -> Result<(), Stop> {
        self.state.metrics.deliveries.inc();
        let frame = self.altered(frame);
        match self.saboteur.judge() {
            Verdict::Write => self.write_text(frame).await?,
            Verdict::Drop => {}
            Verdict::Duplicate => {
                self.write_text(frame.clone()).await?;
                self.write_text(frame).await?;
            }
            Verdict::HoldBack if self.held_back.is_none() => {
                self.held_back = Some(frame);
                return Ok(());
            }
            Verdict::HoldBack => self.write_text(frame).await?,
        }
        if let Some(held) = self.held_back.take() {
            self.write_text(held).await?;
        }
        Ok(())
    }

    /// `--sabotage truncate` / `mislabel` (test only): the body cut short, or
    /// protocol v1's `room` label wrong (STOMP's session mislabels the
    /// `subscription` instead).
    fn altered(&self, frame: Utf8Bytes) -> Utf8Bytes {
        let sabotage = self.state.sabotage;
        let mislabel = sabotage.mislabel && !self.codec.is_stomp();
        if !sabotage.truncate && !mislabel {
            return frame;
        }
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(frame.as_str()) else { return frame };
        if sabotage.truncate
            && let Some(body) = v.get("body").and_then(|b| b.as_str()).map(|b| crate::sabotage::truncated(b).to_owned())
        {
            v["body"] = body.into();
        }
        if mislabel && let Some(room) = v.get("room").and_then(|r| r.as_str()).map(|r| format!("{r}-mislabelled")) {
            v["room"] = room.into();
        }
        Utf8Bytes::from(v.to_string())
    }

    async fn on_reply(&mut self, reply: Reply) -> Result<(), Stop> {
        self.queued_send_bytes = self.queued_send_bytes.saturating_sub(reply.bytes);
        match reply.frame {
            Some(frame) => self.write_text(frame).await,
            None => Ok(()),
        }
    }

    async fn on_live(&mut self, out: Outbound) -> Result<(), Stop> {
        match self.subs.on_live(&out.room, out.seq) {
            // Test only: a room it never joined (`leak`), or one a pattern covers (`auth_wildcard`).
            Live::NotSubscribed if self.state.sabotage.leak || self.patterns => self.write_msg(out.frame).await,
            Live::NotSubscribed | Live::Drop => Ok(()),
            Live::Write => {
                self.write_msg(out.frame).await?;
                self.state.metrics.fanout_to_socket_seconds.observe(out.at.elapsed().as_secs_f64());
                Ok(())
            }
            Live::Fetch(fetch) => {
                self.fetch(fetch);
                Ok(())
            }
        }
    }

    /// Start reading one history page.
    fn fetch(&mut self, Fetch { room, generation, after }: Fetch) {
        let store = self.state.store.clone();
        let max_bytes = self.state.limits.history_page_bytes;
        self.reads.push(
            async move {
                let result = store.history(&room, Seq(after), HISTORY_PAGE, max_bytes).await;
                Read::Page { room, generation, result }
            }
            .boxed(),
        );
    }

    async fn on_read(&mut self, read: Read) -> Result<(), Stop> {
        match read {
            Read::Head { room, generation, result } => self.on_head(room, generation, result).await,
            Read::Page { room, generation, result } => self.on_page(room, generation, result).await,
        }
    }

    async fn on_head(&mut self, room: RoomId, generation: u64, result: Result<Seq, StoreError>) -> Result<(), Stop> {
        match self.subs.on_head(&room, generation, result.map(|head| head.0)) {
            Head::Stale => Ok(()),
            Head::Failed(err) => {
                self.leave_hub(&room);
                self.frame_error(err).await
            }
            Head::Subscribed { head, fetch } => {
                self.reply(ServerFrame::Subscribed { room: room.as_written(), head }).await?;
                if let Some(fetch) = fetch {
                    self.fetch(fetch);
                }
                Ok(())
            }
        }
    }

    async fn on_page(&mut self, room: RoomId, generation: u64, result: Result<HistoryPage, StoreError>) -> Result<(), Stop> {
        let page = match result {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(%room, error = %e, "history unavailable while filling a gap; will retry");
                self.subs.on_page_failed(&room, generation, Instant::now());
                return Ok(());
            }
        };
        let mut hole = false;
        for message in &page.messages {
            match self.subs.on_page_message(&room, generation, message.seq) {
                None => return Ok(()),
                Some(PageStep::Write) => {
                    self.state.metrics.history_replays.inc();
                    self.write_msg(msg_frame(message)).await?;
                }
                Some(PageStep::Skip) => {}
                Some(PageStep::Hole) => {
                    tracing::error!(%room, owed = ?self.subs.owed(&room), found = message.seq, "history is not gap-free; will look again");
                    hole = true;
                    break;
                }
            }
        }
        if let PageDone::Fetch(fetch) = self.subs.on_page_done(&room, generation, page.more, hole, Instant::now()) {
            self.fetch(fetch);
        }
        Ok(())
    }

    fn resync_all(&mut self) {
        for fetch in self.subs.resync_all() {
            self.fetch(fetch);
        }
    }

    /// Leave the hub's room (the subscription is gone).
    fn leave_hub(&self, room: &RoomId) {
        if self.state.hub.unsubscribe(room.as_str(), self.conn_id) {
            self.state.metrics.subscriptions.dec();
            self.state.fanout.leave(room.as_str());
        }
    }

    /// When [`Self::on_tick`] has something to do next: a held-back frame
    /// or a token about to expire at the old tick's pace, else the next
    /// history retry, idle deadline or ping.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let limits = self.state.limits;
        let mut wake = later(self.last_heard, limits.idle_timeout).min(later(self.last_ping, limits.ping_interval));
        if let Some(retry) = self.subs.next_retry() {
            wake = wake.min(retry);
        }
        if let Access::Granted(grant) = &self.access {
            // Expiry is in whole seconds of wall time: watched at TICK's
            // pace from a second before, slept through until then.
            wake = wake.min(expiry_wake(now, grant.exp.saturating_sub(crate::auth::now_s())));
        }
        if self.held_back.is_some() {
            wake = wake.min(now + TICK);
        }
        wake
    }

    /// Retries that are due, pings, idleness. Some(end) closes the connection.
    async fn on_tick(&mut self) -> Result<Option<End>, Stop> {
        let now = Instant::now();
        if let Some(held) = self.held_back.take() {
            self.write_text(held).await?;
        }
        for fetch in self.subs.due(now) {
            self.fetch(fetch);
        }
        // TEST ONLY: `--sabotage auth_expiry_at_connect` never looks again.
        if let Access::Granted(grant) = &self.access
            && !self.state.sabotage.auth_expiry_at_connect
            && grant.expired_at(crate::auth::now_s())
        {
            return Ok(Some(self.close(crate::auth::CLOSE_TOKEN_EXPIRED, "token expired", End::TokenExpired).await));
        }
        let limits = self.state.limits;
        if now.duration_since(self.last_heard) >= limits.idle_timeout {
            self.state.metrics.idle_closes.inc();
            return Ok(Some(self.close(CLOSE_IDLE, "idle: nothing received, not even a pong", End::Idle).await));
        }
        if now.duration_since(self.last_ping) >= limits.ping_interval {
            self.last_ping = now;
            self.write(Message::Ping(Default::default())).await?;
        }
        Ok(None)
    }

    async fn request(&mut self, text: &str) -> Result<(), Stop> {
        match parse_request(text) {
            Ok(request) => self.dispatch(request).await,
            Err(e) => self.frame_error(e).await,
        }
    }

    async fn dispatch(&mut self, request: Request) -> Result<(), Stop> {
        match request {
            Request::Send { room, id, .. } if !self.authorized(&room, false) => self.frame_error(forbidden(&room, Some(id.as_str()))).await,
            Request::Subscribe { room, after } if !self.authorized(&room, after.is_some()) => {
                self.frame_error(forbidden(&room, None)).await
            }
            Request::Send { room, id, body } => {
                self.state.metrics.sends.inc();
                // The loop's select hands it to the worker when there is
                // room; until then the socket is not read (back-pressure).
                self.pending_job = Some(SendJob { room, id, body, received: Instant::now() });
                Ok(())
            }
            Request::Subscribe { room, after } => self.subscribe(room, after).await,
            Request::Unsubscribe { room } if self.state.sabotage.ignore_unsubscribe && self.subs.contains(room.as_str()) => {
                // Test only: confirm, and keep delivering.
                self.reply(ServerFrame::Unsubscribed { room: room.as_str() }).await
            }
            Request::Unsubscribe { room } => match self.subs.unsubscribe(&room) {
                Ok(()) => {
                    self.leave_hub(&room);
                    self.reply(ServerFrame::Unsubscribed { room: room.as_str() }).await
                }
                Err(err) => self.frame_error(err).await,
            },
        }
    }

    /// May this connection use `room`? (`with_after`: a subscribe with
    /// `after`, as a client resubscribes after a reconnect.)
    fn authorized(&mut self, room: &RoomId, with_after: bool) -> bool {
        let grant = match &self.access {
            Access::Open => return true,
            // The session passes no request before CONNECT proved a token.
            Access::Unproven => return false,
            Access::Granted(grant) => grant,
        };
        let sabotage = self.state.sabotage;
        self.rooms_checked += 1;
        // TEST ONLY: authorization broken on purpose.
        if (sabotage.auth_skip_after && with_after) || (sabotage.auth_first_room_only && self.rooms_checked > 1) {
            return true;
        }
        if sabotage.auth_wildcard && crate::protocol::is_room_pattern(room.as_str()) {
            self.patterns = true;
            return true;
        }
        let allowed = grant.may_loosely(room.as_written(), sabotage.loose());
        if !allowed {
            self.state.metrics.auth_refusals.inc();
        }
        allowed
    }

    async fn subscribe(&mut self, room: RoomId, after: Option<Seq>) -> Result<(), Stop> {
        if after.is_some() && self.state.sabotage.refuse_after {
            let mut err =
                FrameError::new(ErrorCode::StoreUnavailable, "sabotage refuse_after: subscribe with after is refused (test only)");
            err.room = Some(room.to_string());
            return self.frame_error(err).await;
        }
        let subscribing = match self.subs.subscribe(&room, after.map(|a| a.0)) {
            Ok(s) => s,
            Err(err) => return self.frame_error(err).await,
        };
        // Register before reading the head: every message stored after the
        // head read then reaches us live, and everything up to it is history.
        let heard = if subscribing.join {
            self.state.hub.subscribe(&room, self.conn_id, self.handle.clone());
            self.state.metrics.subscriptions.inc();
            self.state.fanout.join(room.as_str())
        } else {
            Box::pin(std::future::ready(()))
        };
        let (store, generation) = (self.state.store.clone(), subscribing.generation);
        self.reads.push(
            async move {
                // Only once this node hears the room live (redis mode
                // subscribes per room): nothing stored after the head read
                // can then pass it by.
                heard.await;
                let result = store.head(&room).await;
                Read::Head { room, generation, result }
            }
            .boxed(),
        );
        Ok(())
    }
}

fn msg_frame(message: &ChatMessage) -> Utf8Bytes {
    Utf8Bytes::from(ServerFrame::Msg(message).to_json())
}

/// Stores a connection's sends one at a time, in the order received, and
/// answers each on `replies` (which the connection always drains).
async fn send_worker(state: Arc<AppState>, mut jobs: mpsc::Receiver<SendJob>, replies: mpsc::Sender<Reply>) {
    let mut gate = SendGate::new(MAX_BLOCKED_ROOMS);
    while let Some(job) = jobs.recv().await {
        let frame = match gate.admit(&job.room, &job.id) {
            Admit::ResendFirst(failed) => {
                let why = format!("send {:?} to this room failed earlier; resend it (same id) before later messages", failed.as_str());
                Some(send_error(&job, ErrorCode::ResendRequired, why))
            }
            Admit::TooManyBlocked => {
                let why = format!("sends to {MAX_BLOCKED_ROOMS} other rooms failed and were not resent yet; resend those first");
                Some(send_error(&job, ErrorCode::StoreUnavailable, why))
            }
            Admit::Store => {
                // Queued work the node cannot start in time is shed, not
                // stored late: past capacity, latency stays bounded and the
                // backend's time goes to sends it can still answer promptly.
                let budget = state.limits.overload_wait.saturating_sub(job.received.elapsed());
                let slot = match budget.is_zero() {
                    true => None,
                    false => tokio::time::timeout(budget, state.writes.acquire()).await.ok().and_then(Result::ok),
                };
                // No slot: the wait ran out (a closed semaphore never happens).
                let result = match slot {
                    Some(_slot) => store_and_publish(&state, &job).await,
                    None => Err(SendError::Overloaded),
                };
                gate.stored(&job.room, result.is_ok(), &job.id);
                match result {
                    Err(SendError::Overloaded) => {
                        state.metrics.overloaded_sends.inc();
                        let why = format!(
                            "waited {:?} in this connection's queue and for one of the node's {} write slots: not stored, resend it (same id) later",
                            state.limits.overload_wait, state.limits.max_inflight_writes
                        );
                        Some(send_error(&job, ErrorCode::Overloaded, why))
                    }
                    Ok(_) if state.sabotage.no_ack => None, // stored and fanned out, never acked (test only)
                    Ok(ack) => Some(ack),
                    Err(e) => {
                        tracing::warn!(room = %job.room, id = job.id.as_str(), error = %e, "send not acked");
                        Some(send_error(&job, ErrorCode::StoreUnavailable, format!("not acked, resend with the same id: {e}")))
                    }
                }
            }
        };
        if replies.send(Reply { bytes: job.bytes(), frame }).await.is_err() {
            return;
        }
    }
}

/// Why a send was not acked.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] crate::fanout::PublishError),
    #[error("overloaded")]
    Overloaded,
}

/// Store (and in the broker modes publish) one send: the ack frame.
async fn store_and_publish(state: &AppState, job: &SendJob) -> Result<Utf8Bytes, SendError> {
    let stored = state.store.insert(&job.room, &job.id, &job.body, &state.node_id).await?;
    state.metrics.mongo_writes.inc_by(u64::from(stored.clashes) + 1);
    state.metrics.head_reads.inc_by(u64::from(stored.head_reads));
    state.fanout.publish(state, &stored.message).await?;
    state.metrics.acks.inc();
    state.metrics.seq_clashes.inc_by(u64::from(stored.clashes));
    if !stored.fresh {
        state.metrics.resends.inc();
    }
    Ok(Utf8Bytes::from(ServerFrame::Ack { id: job.id.as_str(), room: job.room.as_str(), seq: stored.seq.0 }.to_json()))
}

/// An error frame answering `job` (its id and room, for correlation).
fn send_error(job: &SendJob, code: ErrorCode, message: String) -> Utf8Bytes {
    let mut err = FrameError::new(code, message);
    err.id = Some(job.id.as_str().to_owned());
    err.room = Some(job.room.to_string());
    Utf8Bytes::from(err.to_frame())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_watched_at_the_tick_in_its_last_second_and_never_overflows_the_clock() {
        let now = Instant::now();
        assert_eq!(expiry_wake(now, 0), now + TICK);
        assert_eq!(expiry_wake(now, 1), now + TICK);
        assert_eq!(expiry_wake(now, 30), now + Duration::from_secs(29));
        assert_eq!(expiry_wake(now, u64::MAX), now + Duration::from_secs(3600), "a token that never expires");
    }

    #[test]
    fn a_limit_past_what_the_clock_holds_does_not_overflow_it() {
        let now = Instant::now();
        assert_eq!(later(now, Duration::from_secs(15)), now + Duration::from_secs(15));
        let far = later(now, Duration::MAX);
        assert!(far > now && far <= Instant::now() + Duration::from_secs(3600), "{far:?}");
    }
}
