//! One WebSocket connection: reads requests, writes replies and messages,
//! and keeps each subscribed room gap-free, duplicate-free and in order.
//!
//! Per room the connection remembers the next `seq` it owes the client.
//! A live message below it is a duplicate and is skipped; one above it means
//! something was missed (a stream resume, the `after` seam), and the gap is
//! filled from history before the live message is written. `subscribe` with
//! `after` is the same mechanism started at `after + 1`. Sends go to a
//! per-connection worker so that they are stored in the order the client
//! sent them while deliveries keep flowing.

use crate::AppState;
use crate::hub::{ConnHandle, ConnId, Outbound};
use crate::protocol::{ErrorCode, FrameError, MsgId, Request, RoomId, Seq, ServerFrame, parse_request};
use crate::sabotage::{Saboteur, Verdict};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// Close code sent to a client whose queue overflowed (documented in PROTOCOL.md).
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code on server shutdown ("going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Messages fetched per history query while filling a gap.
const HISTORY_PAGE: u32 = 500;
/// Unacknowledged sends one connection may queue before reading pauses.
const SEND_QUEUE: usize = 256;

struct SendJob {
    room: RoomId,
    id: MsgId,
    body: String,
}

/// Why writing stopped: the socket failed, or the client is too slow.
#[derive(Debug)]
enum Stop {
    Socket,
    Slow,
}

impl From<axum::Error> for Stop {
    fn from(_: axum::Error) -> Self {
        Stop::Socket
    }
}

/// How long a close frame may wait for a client that is not reading.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the connection ended.
#[derive(Debug)]
enum End {
    ClientClosed,
    SocketError,
    SlowConsumer,
    Shutdown,
}

struct Connection {
    state: Arc<AppState>,
    conn_id: ConnId,
    handle: ConnHandle,
    sink: SplitSink<WebSocket, Message>,
    /// Next `seq` owed to the client, per subscribed room.
    next_seq: HashMap<RoomId, u64>,
    /// Rooms whose gap could not be filled yet (history unavailable).
    behind: HashSet<RoomId>,
    saboteur: Saboteur,
    held_back: Option<Utf8Bytes>,
}

pub async fn handle(socket: WebSocket, state: Arc<AppState>) {
    state.metrics.connections.inc();
    let conn_id = state.hub.new_conn_id();
    let (tx, rx) = mpsc::channel(state.queue_capacity);
    let slow = Arc::new(Notify::new());
    let (sink, stream) = socket.split();
    let (sends_tx, sends_rx) = mpsc::channel(SEND_QUEUE);
    let worker = tokio::spawn(send_worker(state.clone(), sends_rx, tx.clone()));
    let mut conn = Connection {
        saboteur: Saboteur::new(state.sabotage, state.sabotage_seed ^ conn_id),
        state: state.clone(),
        conn_id,
        handle: ConnHandle { tx, slow: slow.clone() },
        sink,
        next_seq: HashMap::new(),
        behind: HashSet::new(),
        held_back: None,
    };
    let end = conn.run(stream, rx, sends_tx, slow).await;
    tracing::debug!(conn_id, ?end, "connection ended");
    for room in conn.next_seq.keys() {
        if state.hub.unsubscribe(room.as_str(), conn_id) {
            state.metrics.subscriptions.dec();
        }
    }
    worker.abort();
    state.metrics.connections.dec();
}

impl Connection {
    async fn run(
        &mut self,
        mut stream: SplitStream<WebSocket>,
        mut rx: mpsc::Receiver<Outbound>,
        sends: mpsc::Sender<SendJob>,
        slow: Arc<Notify>,
    ) -> End {
        let mut shutdown = self.state.shutdown.subscribe();
        let mut resync = self.state.hub.resync_signal();
        let mut retry = tokio::time::interval(Duration::from_millis(500));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                biased;
                _ = shutdown.recv() => return self.close(CLOSE_GOING_AWAY, "server shutting down").await,
                _ = slow.notified() => Err(Stop::Slow),
                Some(out) = rx.recv() => self.outbound(out).await,
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.request(text.as_str(), &sends).await,
                    Some(Ok(Message::Binary(_))) => {
                        let err = FrameError::new(ErrorCode::BinaryNotSupported, "binary frames are not supported; send JSON text frames");
                        self.frame_error(err).await
                    }
                    Some(Ok(Message::Close(_))) | None => return End::ClientClosed,
                    Some(Ok(_)) => Ok(()), // ping/pong are answered by the WebSocket layer
                    Some(Err(_)) => return End::SocketError,
                },
                _ = resync.changed() => self.resync_all().await,
                _ = retry.tick() => self.retry_behind().await,
            };
            match step {
                Ok(()) => {}
                Err(Stop::Socket) => return End::SocketError,
                Err(Stop::Slow) => {
                    self.state.metrics.slow_consumer_closes.inc();
                    tracing::warn!(conn_id = self.conn_id, "closing slow consumer");
                    self.close(CLOSE_SLOW_CONSUMER, "slow consumer: queue full, reconnect with after").await;
                    return End::SlowConsumer;
                }
            }
        }
    }

    /// Send a close frame; a client that is not reading gets CLOSE_TIMEOUT
    /// to take it before the socket is simply dropped.
    async fn close(&mut self, code: u16, reason: &str) -> End {
        let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.sink.send(Message::Close(Some(frame)))).await;
        End::Shutdown
    }

    /// Write one frame. A write blocked on a client that does not read is
    /// abandoned when the hub flags this connection as a slow consumer
    /// (the frame stays buffered whole; no partial frame is left behind).
    async fn write(&mut self, frame: Utf8Bytes) -> Result<(), Stop> {
        tokio::select! {
            biased;
            written = self.sink.send(Message::Text(frame)) => Ok(written?),
            _ = self.handle.slow.notified() => Err(Stop::Slow),
        }
    }

    async fn reply(&mut self, frame: ServerFrame<'_>) -> Result<(), Stop> {
        self.write(Utf8Bytes::from(frame.to_json())).await
    }

    async fn frame_error(&mut self, err: FrameError) -> Result<(), Stop> {
        self.state.metrics.frame_errors.inc();
        self.write(Utf8Bytes::from(err.to_frame())).await
    }

    /// Write a `msg` frame, through the saboteur (a no-op unless enabled).
    async fn write_msg(&mut self, frame: Utf8Bytes) -> Result<(), Stop> {
        self.state.metrics.deliveries.inc();
        match self.saboteur.judge() {
            Verdict::Write => self.write(frame).await?,
            Verdict::Drop => {}
            Verdict::Duplicate => {
                self.write(frame.clone()).await?;
                self.write(frame).await?;
            }
            Verdict::HoldBack if self.held_back.is_none() => {
                self.held_back = Some(frame);
                return Ok(());
            }
            Verdict::HoldBack => self.write(frame).await?,
        }
        if let Some(held) = self.held_back.take() {
            self.write(held).await?;
        }
        Ok(())
    }

    async fn outbound(&mut self, out: Outbound) -> Result<(), Stop> {
        match out {
            Outbound::Reply(frame) => self.write(frame).await,
            Outbound::Live { room, seq, frame } => {
                let Some(&next) = self.next_seq.get(&*room) else {
                    return Ok(()); // unsubscribed meanwhile
                };
                if seq < next {
                    return Ok(());
                }
                if seq > next {
                    // Rare (stream resume, Kafka produce order): fill the gap first.
                    let owned = self.next_seq.get_key_value(&*room).map(|(k, _)| k.clone()).expect("present: looked up above");
                    self.catch_up(&owned, Some(seq)).await?;
                    if self.next_seq.get(&owned) != Some(&seq) {
                        self.behind.insert(owned);
                        return Ok(());
                    }
                }
                self.write_msg(frame).await?;
                if let Some(owed) = self.next_seq.get_mut(&*room) {
                    *owed = seq + 1;
                }
                Ok(())
            }
        }
    }

    /// Write history messages from the room's next owed `seq` up to (not
    /// including) `until`, or to the end of history.
    async fn catch_up(&mut self, room: &RoomId, until: Option<u64>) -> Result<(), Stop> {
        loop {
            let Some(&next) = self.next_seq.get(room) else {
                return Ok(());
            };
            if until.is_some_and(|u| next >= u) {
                break;
            }
            let page = match self.state.store.history(room, Seq(next - 1), HISTORY_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(%room, error = %e, "history unavailable while filling a gap; will retry");
                    self.behind.insert(room.clone());
                    return Ok(());
                }
            };
            let full_page = page.len() == HISTORY_PAGE as usize;
            for message in page {
                let owed = self.next_seq.get(room).copied().unwrap_or(u64::MAX);
                if until.is_some_and(|u| message.seq >= u) {
                    self.behind.remove(room);
                    return Ok(());
                }
                if message.seq != owed {
                    // History itself has a hole (should never happen): stop
                    // rather than skip; the retry tick will look again.
                    tracing::error!(%room, owed, found = message.seq, "history is not gap-free");
                    self.behind.insert(room.clone());
                    return Ok(());
                }
                self.state.metrics.history_replays.inc();
                self.write_msg(Utf8Bytes::from(ServerFrame::Msg(&message).to_json())).await?;
                self.next_seq.insert(room.clone(), message.seq + 1);
            }
            if !full_page {
                break;
            }
        }
        self.behind.remove(room);
        Ok(())
    }

    async fn resync_all(&mut self) -> Result<(), Stop> {
        let rooms: Vec<RoomId> = self.next_seq.keys().cloned().collect();
        for room in rooms {
            self.catch_up(&room, None).await?;
        }
        Ok(())
    }

    async fn retry_behind(&mut self) -> Result<(), Stop> {
        if let Some(held) = self.held_back.take() {
            self.write(held).await?;
        }
        let rooms: Vec<RoomId> = self.behind.iter().cloned().collect();
        for room in rooms {
            self.catch_up(&room, None).await?;
        }
        Ok(())
    }

    async fn request(&mut self, text: &str, sends: &mpsc::Sender<SendJob>) -> Result<(), Stop> {
        let request = match parse_request(text) {
            Ok(r) => r,
            Err(e) => return self.frame_error(e).await,
        };
        match request {
            Request::Send { room, id, body } => {
                self.state.metrics.sends.inc();
                // Waiting here (not dropping) is what bounds a client that
                // sends faster than MongoDB stores: reading simply pauses.
                if sends.send(SendJob { room, id, body }).await.is_err() {
                    tracing::error!(conn_id = self.conn_id, "send worker is gone");
                }
                Ok(())
            }
            Request::Subscribe { room, after } => self.subscribe(room, after).await,
            Request::Unsubscribe { room } => {
                if self.next_seq.remove(&room).is_some() {
                    self.behind.remove(&room);
                    if self.state.hub.unsubscribe(room.as_str(), self.conn_id) {
                        self.state.metrics.subscriptions.dec();
                    }
                    self.reply(ServerFrame::Unsubscribed { room: room.as_str() }).await
                } else {
                    let mut err = FrameError::new(ErrorCode::NotSubscribed, format!("not subscribed to room {room}"));
                    err.room = Some(room.to_string());
                    self.frame_error(err).await
                }
            }
        }
    }

    async fn subscribe(&mut self, room: RoomId, after: Option<Seq>) -> Result<(), Stop> {
        if after.is_some() && self.state.sabotage.refuse_after {
            let mut err =
                FrameError::new(ErrorCode::StoreUnavailable, "sabotage refuse_after: subscribe with after is refused (test only)");
            err.room = Some(room.to_string());
            return self.frame_error(err).await;
        }
        // Register before reading the head: every message stored after the
        // head read then reaches us live, and everything up to it is history.
        if !self.next_seq.contains_key(&room) {
            self.state.hub.subscribe(&room, self.conn_id, self.handle.clone());
            self.state.metrics.subscriptions.inc();
        }
        let head = match self.state.store.head(&room).await {
            Ok(h) => h,
            Err(e) => {
                if self.state.hub.unsubscribe(room.as_str(), self.conn_id) {
                    self.state.metrics.subscriptions.dec();
                }
                self.next_seq.remove(&room);
                let mut err = FrameError::new(ErrorCode::StoreUnavailable, format!("could not read room head: {e}"));
                err.room = Some(room.to_string());
                return self.frame_error(err).await;
            }
        };
        let start = after.map_or(head.0 + 1, |a| a.0 + 1);
        self.next_seq.insert(room.clone(), start);
        self.reply(ServerFrame::Subscribed { room: room.as_str(), head: head.0 }).await?;
        if start <= head.0 {
            self.catch_up(&room, None).await?;
        }
        Ok(())
    }
}

/// Stores a connection's sends one at a time, in the order received, and
/// queues the ack (or error) for the connection's writer.
///
/// Per-sender FIFO across failures: once a send to a room fails, later
/// sends of this connection to that room are refused (`resend_required`)
/// until the failed `id` is sent again and stored, so nothing the client
/// sent after it can be stored before it.
async fn send_worker(state: Arc<AppState>, mut jobs: mpsc::Receiver<SendJob>, out: mpsc::Sender<Outbound>) {
    let mut blocked_on: HashMap<RoomId, MsgId> = HashMap::new();
    while let Some(job) = jobs.recv().await {
        let frame = match blocked_on.get(&job.room) {
            Some(failed) if *failed != job.id => refused(&job, failed),
            _ => match store_and_publish(&state, &job).await {
                Ok(_) if state.sabotage.no_ack => {
                    blocked_on.remove(&job.room);
                    continue; // stored and fanned out, never acked (test only)
                }
                Ok(frame) => {
                    blocked_on.remove(&job.room);
                    frame
                }
                Err(frame) => {
                    blocked_on.insert(job.room.clone(), job.id.clone());
                    frame
                }
            },
        };
        if out.send(Outbound::Reply(Utf8Bytes::from(frame))).await.is_err() {
            return;
        }
    }
}

/// Store (and in kafka mode publish) one send: Ok(ack frame) or Err(error frame).
async fn store_and_publish(state: &AppState, job: &SendJob) -> Result<String, String> {
    state.metrics.mongo_writes.inc();
    let stored = state.store.insert(&job.room, &job.id, &job.body, &state.node_id).await.map_err(|e| not_stored(job, &e.to_string()))?;
    publish(state, &stored.message).await.map_err(|why| not_stored(job, &why))?;
    state.metrics.acks.inc();
    if !stored.fresh {
        state.metrics.resends.inc();
    }
    Ok(ServerFrame::Ack { id: job.id.as_str(), room: job.room.as_str(), seq: stored.seq.0 }.to_json())
}

fn refused(job: &SendJob, failed: &MsgId) -> String {
    let why = format!("send {:?} to this room failed earlier; resend it (same id) before later messages", failed.as_str());
    send_error(job, ErrorCode::ResendRequired, why)
}

/// In kafka mode, produce the stored message's `msg` frame (also for a
/// resend: the first produce may be the one that failed).
async fn publish(state: &AppState, message: &crate::protocol::ChatMessage) -> Result<(), String> {
    let Some(kafka) = &state.kafka else {
        return Ok(());
    };
    state.metrics.kafka_produces.inc();
    kafka.publish(&message.room, &ServerFrame::Msg(message).to_json(), &state.metrics.kafka_producer_resets).await
}

fn not_stored(job: &SendJob, why: &str) -> String {
    tracing::warn!(room = %job.room, id = job.id.as_str(), error = why, "send not acked");
    send_error(job, ErrorCode::StoreUnavailable, format!("not acked, resend with the same id: {why}"))
}

/// An error frame answering `job` (its id and room, for correlation).
fn send_error(job: &SendJob, code: ErrorCode, message: String) -> String {
    let mut err = FrameError::new(code, message);
    err.id = Some(job.id.as_str().to_owned());
    err.room = Some(job.room.to_string());
    err.to_frame()
}
