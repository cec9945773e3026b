//! One client connection: a sender (open- or closed-loop schedule, records
//! sends and acks) or a subscriber (records subscriptions and deliveries).
//!
//! Clients recover like real ones: when a connection closes (node killed,
//! dropped by a fault, slow-consumer close) they reconnect with backoff —
//! first to the same node, then to the others in turn — subscribers
//! resubscribe with `after` = the last `seq` they saw, and senders resend
//! every unacked message with the same `id`. A send answered with an
//! `error` frame makes the sender pause new sends, then resend *all* its
//! unacked messages in their original order (the server refuses later sends
//! until the failed one is back), so its own FIFO order survives failures.

use super::{ClientPlan, Shared, Window};
use crate::scenario::{Load, MessageBytes, Workload};
use crate::trace::{Clock, Event, EventKind, FOREIGN_MSG, MsgNo, Recorder, Role, msg_no, parse_wire_id, wire_id};
use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

pub(super) struct Context {
    pub plan: ClientPlan,
    /// Every node's WebSocket URL (reconnects may go elsewhere).
    pub urls: Vec<String>,
    pub room: String,
    pub workload: Workload,
    pub clock: Clock,
    pub start: watch::Receiver<Option<super::Window>>,
    pub senders_total: usize,
    pub seed: u64,
    pub shared: Arc<Shared>,
    pub stop: watch::Receiver<bool>,
    /// Bumped by the `drop_clients` fault; `drop_share` says who goes.
    pub drops: watch::Receiver<(u64, f64)>,
}

/// A server frame as the client reads it (lenient: unknown fields ignored).
/// Strings borrow from the frame text: no allocation per delivery.
#[derive(Debug, Deserialize)]
pub struct Frame<'a> {
    #[serde(borrow)]
    pub op: Cow<'a, str>,
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub head: Option<u64>,
    #[serde(borrow, default)]
    pub code: Option<Cow<'a, str>>,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Pause before resending a send that got an `error` frame.
const RESEND_AFTER_ERROR_NS: u64 = 200_000_000;

pub(super) async fn run(ctx: Context) -> Vec<Event> {
    let capacity = match ctx.plan.role {
        Role::Sender => 2 * expected_sends(&ctx) + 8,
        Role::Subscriber => expected_sends(&ctx) * ctx.senders_total / ctx.workload.rooms.max(1) as usize + 8,
    };
    let mut rec = Recorder::new(ctx.plan.id, ctx.clock, capacity.min(1 << 22));
    let result = match ctx.plan.role {
        Role::Sender => sender(&ctx, &mut rec).await,
        Role::Subscriber => subscriber(&ctx, &mut rec).await,
    };
    if let Err(code) = result {
        rec.record(EventKind::Closed { code });
        ctx.shared.closed.fetch_add(1, Ordering::Relaxed);
        // A client that gave up no longer holds up the drain.
        ctx.shared.client_last_seq[ctx.plan.id as usize].store(u64::MAX, Ordering::Relaxed);
    }
    rec.into_events()
}

/// Sends this sender will schedule (for pre-sizing its buffer).
fn expected_sends(ctx: &Context) -> usize {
    let secs = ctx.workload.duration.0.as_secs_f64();
    match ctx.workload.load {
        Load::Open { rate_per_s } => (rate_per_s * secs / ctx.senders_total as f64).ceil() as usize,
        Load::Closed { .. } => 1024,
    }
}

fn body(rng: &mut StdRng, bytes: &MessageBytes) -> String {
    let n = match *bytes {
        MessageBytes::Fixed(n) => n,
        MessageBytes::Range { min, max } => rng.random_range(min..=max),
    };
    "x".repeat(n as usize)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Err(close code) means the client gave up before the run ended.
type Outcome = Result<(), Option<u16>>;

fn close_code(message: &Message) -> Option<u16> {
    match message {
        Message::Close(Some(frame)) => Some(frame.code.into()),
        _ => None,
    }
}

/// Wait for the runner to fix the sending window (None: the run is over).
async fn window(ctx: &Context) -> Option<Window> {
    let mut start = ctx.start.clone();
    let mut stop = ctx.stop.clone();
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

/// Connect, retrying with backoff: the planned node first, then the others
/// in turn. None when the run stopped first. The first connection of a run
/// gets one attempt per node (a node that never came up is an error).
async fn connect(ctx: &Context, attempt_from: &mut usize, initial: bool) -> Option<(Ws, u32)> {
    let nodes = ctx.urls.len();
    let mut backoff = FIRST_BACKOFF;
    let mut stop = ctx.stop.clone();
    let tries = if initial { nodes } else { usize::MAX };
    for _ in 0..tries {
        let node = (ctx.plan.node as usize + *attempt_from) % nodes;
        match tokio_tungstenite::connect_async(&ctx.urls[node]).await {
            Ok((ws, _)) => return Some((ws, node as u32)),
            Err(e) => {
                tracing::debug!(client = ctx.plan.id, node, error = %e, "connect failed");
                *attempt_from += 1;
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

/// Whether the current `drop_clients` fault picks this client.
fn picked(ctx: &Context, epoch: u64, share: f64) -> bool {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ epoch.rotate_left(17) ^ u64::from(ctx.plan.id));
    rng.random::<f64>() < share
}

struct Outstanding {
    scheduled_ns: u64,
    body: String,
}

async fn sender(ctx: &Context, rec: &mut Recorder) -> Outcome {
    let mut attempt_from = 0usize;
    let Some((ws, _)) = connect(ctx, &mut attempt_from, true).await else { return Err(None) };
    ctx.shared.ready.fetch_add(1, Ordering::Relaxed);
    let Some(Window { start_ns, end_ns }) = window(ctx).await else { return Ok(()) };
    let (mut write, mut read) = ws.split();
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ (u64::from(ctx.plan.id) << 20));
    let room = ctx.plan.room;
    let mut outstanding: BTreeMap<MsgNo, Outstanding> = BTreeMap::new();
    // When set: new sends wait, and at this time every unacked message is
    // resent in order.
    let mut resend_at: Option<u64> = None;
    let mut k = 0u32;
    // Open loop: each sender owns every `senders_total`-th slot of the
    // global schedule, so the total rate is exact and phases are spread.
    let (period_ns, in_flight) = match ctx.workload.load {
        Load::Open { rate_per_s } => ((1e9 * ctx.senders_total as f64 / rate_per_s) as u64, usize::MAX),
        Load::Closed { in_flight } => (0, in_flight as usize),
    };
    let offset_ns = period_ns / ctx.senders_total as u64 * u64::from(ctx.plan.sender_index);
    let mut stop = ctx.stop.clone();
    let mut drops = ctx.drops.clone();
    let drain_deadline = end_ns + ctx.workload.drain_timeout.0.as_nanos() as u64;
    let frame_for =
        |msg: MsgNo, body: &str| serde_json::json!({"op": "send", "room": ctx.room, "id": wire_id(msg), "body": body}).to_string();
    loop {
        let now = ctx.clock.now_ns();
        let next_ns = if period_ns > 0 { start_ns + offset_ns + u64::from(k) * period_ns } else { now };
        let may_send = next_ns < end_ns && outstanding.len() < in_flight && resend_at.is_none();
        if next_ns >= end_ns && outstanding.is_empty() {
            return Ok(());
        }
        if now >= drain_deadline {
            return Ok(()); // outstanding sends stay unacked (indeterminate)
        }
        let wake = [may_send.then_some(next_ns), resend_at, Some(drain_deadline)].into_iter().flatten().min().unwrap_or(drain_deadline);
        let mut broken: Option<Option<u16>> = None;
        tokio::select! {
            _ = tokio::time::sleep_until(ctx.clock.instant_at(wake).into()) => {
                let now = ctx.clock.now_ns();
                if let Some(due) = resend_at && due <= now {
                    resend_at = None;
                    for (&msg, o) in &outstanding {
                        rec.record(EventKind::Send { room, msg, scheduled_ns: o.scheduled_ns });
                        if write.send(Message::text(frame_for(msg, &o.body))).await.is_err() {
                            broken = Some(None);
                            break;
                        }
                    }
                } else if may_send && next_ns <= now {
                    let msg = msg_no(ctx.plan.id, k);
                    k += 1;
                    let body = body(&mut rng, &ctx.workload.message_bytes);
                    rec.record(EventKind::Send { room, msg, scheduled_ns: next_ns });
                    ctx.shared.sent.fetch_add(1, Ordering::Relaxed);
                    ctx.shared.outstanding.fetch_add(1, Ordering::Relaxed);
                    let sent = write.send(Message::text(frame_for(msg, &body))).await;
                    outstanding.insert(msg, Outstanding { scheduled_ns: next_ns, body });
                    if sent.is_err() {
                        broken = Some(None);
                    }
                }
            }
            incoming = read.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else { continue };
                    let msg = frame.id.as_deref().and_then(parse_wire_id);
                    match (&*frame.op, msg, frame.seq) {
                        ("ack", Some(msg), Some(seq)) => {
                            rec.record(EventKind::Ack { room, msg, seq });
                            if outstanding.remove(&msg).is_some() {
                                ctx.shared.acked.fetch_add(1, Ordering::Relaxed);
                                ctx.shared.outstanding.fetch_sub(1, Ordering::Relaxed);
                            }
                            ctx.shared.room_max_acked[room as usize].fetch_max(seq, Ordering::Relaxed);
                        }
                        ("error", msg, _) => {
                            rec.record(EventKind::Error { msg });
                            ctx.shared.errors.fetch_add(1, Ordering::Relaxed);
                            if msg.is_some_and(|m| outstanding.contains_key(&m)) && resend_at.is_none() {
                                resend_at = Some(ctx.clock.now_ns() + RESEND_AFTER_ERROR_NS);
                            }
                        }
                        _ => {}
                    }
                }
                Some(Ok(other @ Message::Close(_))) => broken = Some(close_code(&other)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => broken = Some(None),
            },
            _ = drops.changed() => {
                let (epoch, share) = *drops.borrow_and_update();
                if picked(ctx, epoch, share) {
                    let _ = write.send(Message::Close(None)).await;
                    broken = Some(None);
                }
            }
            _ = stop.changed() => return Ok(()),
        }
        if let Some(code) = broken {
            rec.record(EventKind::Closed { code });
            ctx.shared.closed.fetch_add(1, Ordering::Relaxed);
            attempt_from = 0;
            let Some((ws, node)) = connect(ctx, &mut attempt_from, false).await else { return Ok(()) };
            rec.record(EventKind::Reconnected { node });
            (write, read) = ws.split();
            // Resend everything unacked with the same id, oldest first,
            // before anything new (the same path as after an error frame).
            if !outstanding.is_empty() {
                resend_at = Some(ctx.clock.now_ns());
            }
        }
    }
}

async fn subscriber(ctx: &Context, rec: &mut Recorder) -> Outcome {
    if !ctx.plan.join_at.is_zero() {
        let Some(Window { start_ns, .. }) = window(ctx).await else { return Ok(()) };
        let join_ns = start_ns + ctx.plan.join_at.as_nanos() as u64;
        tokio::time::sleep_until(ctx.clock.instant_at(join_ns).into()).await;
    }
    let room = ctx.plan.room;
    let mut stop = ctx.stop.clone();
    let mut drops = ctx.drops.clone();
    let last_seq = &ctx.shared.client_last_seq[ctx.plan.id as usize];
    let mut attempt_from = 0usize;
    // After the first subscription: resubscribe from the last seq seen.
    let mut resume_after: Option<u64> = None;
    let mut first = true;
    loop {
        let Some((ws, node)) = connect(ctx, &mut attempt_from, first).await else {
            return if first { Err(None) } else { Ok(()) };
        };
        if !first {
            rec.record(EventKind::Reconnected { node });
        }
        let (mut write, mut read) = ws.split();
        let after = if first { ctx.plan.after } else { resume_after };
        let mut subscribe = serde_json::json!({"op": "subscribe", "room": ctx.room});
        if let Some(after) = after {
            subscribe["after"] = after.into();
        }
        let mut broken: Option<Option<u16>> = None;
        if write.send(Message::text(subscribe.to_string())).await.is_err() {
            broken = Some(None);
        }
        while broken.is_none() {
            tokio::select! {
                _ = stop.changed() => {
                    let _ = write.send(Message::Close(None)).await;
                    return Ok(());
                }
                _ = drops.changed() => {
                    let (epoch, share) = *drops.borrow_and_update();
                    if picked(ctx, epoch, share) {
                        let _ = write.send(Message::Close(None)).await;
                        broken = Some(None);
                    }
                }
                incoming = read.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else { continue };
                        match &*frame.op {
                            "msg" => {
                                let msg = frame.id.as_deref().and_then(parse_wire_id).unwrap_or(FOREIGN_MSG);
                                let seq = frame.seq.unwrap_or(0);
                                rec.record(EventKind::Deliver { room, msg, seq });
                                ctx.shared.delivered.fetch_add(1, Ordering::Relaxed);
                                last_seq.fetch_max(seq, Ordering::Relaxed);
                                resume_after = Some(resume_after.map_or(seq, |a| a.max(seq)));
                            }
                            "subscribed" => {
                                let head = frame.head.unwrap_or(0);
                                rec.record(EventKind::Subscribed { room, head, after });
                                if after.is_none() {
                                    last_seq.fetch_max(head, Ordering::Relaxed);
                                }
                                resume_after.get_or_insert(after.unwrap_or(head));
                                if first && ctx.plan.join_at.is_zero() {
                                    ctx.shared.ready.fetch_add(1, Ordering::Relaxed);
                                }
                                first = false;
                            }
                            "error" => {
                                rec.record(EventKind::Error { msg: None });
                                ctx.shared.errors.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                    }
                    Some(Ok(other @ Message::Close(_))) => broken = Some(close_code(&other)),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => broken = Some(None),
                },
            }
        }
        rec.record(EventKind::Closed { code: broken.flatten() });
        ctx.shared.closed.fetch_add(1, Ordering::Relaxed);
        attempt_from = 0;
        if first {
            // Never subscribed: try again as if from the start.
            continue;
        }
    }
}
