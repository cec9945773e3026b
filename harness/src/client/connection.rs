//! One client connection: a sender (open- or closed-loop schedule, records
//! sends and acks) or a subscriber (records subscriptions and deliveries).

use super::{ClientPlan, Shared, Window};
use crate::scenario::{Load, MessageBytes, Workload};
use crate::trace::{Clock, Event, EventKind, FOREIGN_MSG, MsgNo, Recorder, Role, msg_no};
use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

pub(super) struct Context {
    pub plan: ClientPlan,
    pub url: String,
    pub room: String,
    pub workload: Workload,
    pub clock: Clock,
    pub start: watch::Receiver<Option<super::Window>>,
    pub senders_total: usize,
    pub seed: u64,
    pub shared: Arc<Shared>,
    pub stop: watch::Receiver<bool>,
}

/// A server frame as the client reads it (lenient: unknown fields ignored).
#[derive(Debug, Deserialize)]
pub struct Frame {
    pub op: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub head: Option<u64>,
    #[serde(default)]
    pub code: Option<String>,
}

pub(super) async fn run(ctx: Context) -> Vec<Event> {
    let capacity = match ctx.plan.role {
        Role::Sender => 2 * expected_sends(&ctx) + 8,
        Role::Subscriber => {
            expected_sends(&ctx) * ctx.senders_total / ctx.workload.rooms.max(1) as usize + 8
        }
    };
    let mut rec = Recorder::new(ctx.plan.id, ctx.clock, capacity.min(1 << 22));
    let result = match ctx.plan.role {
        Role::Sender => sender(&ctx, &mut rec).await,
        Role::Subscriber => subscriber(&ctx, &mut rec).await,
    };
    if let Err(code) = result {
        rec.record(EventKind::Closed { code });
        ctx.shared.closed.fetch_add(1, Ordering::Relaxed);
        // A closed subscriber no longer holds up the drain.
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

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Err(close code) means the connection ended before the run did.
type Outcome = Result<(), Option<u16>>;

async fn connect(url: &str) -> Result<Ws, Option<u16>> {
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Ok(ws),
        Err(e) => {
            tracing::warn!(%url, error = %e, "client could not connect");
            Err(None)
        }
    }
}

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

async fn sender(ctx: &Context, rec: &mut Recorder) -> Outcome {
    let ws = connect(&ctx.url).await?;
    ctx.shared.ready.fetch_add(1, Ordering::Relaxed);
    let Some(Window { start_ns, end_ns }) = window(ctx).await else {
        return Ok(());
    };
    let (mut write, mut read) = ws.split();
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ (u64::from(ctx.plan.id) << 20));
    let room = ctx.plan.room;
    let mut outstanding: HashSet<MsgNo> = HashSet::new();
    let mut k = 0u32;
    // Open loop: each sender owns every `senders_total`-th slot of the
    // global schedule, so the total rate is exact and phases are spread.
    let (period_ns, in_flight) = match ctx.workload.load {
        Load::Open { rate_per_s } => (
            (1e9 * ctx.senders_total as f64 / rate_per_s) as u64,
            usize::MAX,
        ),
        Load::Closed { in_flight } => (0, in_flight as usize),
    };
    let offset_ns = period_ns / ctx.senders_total as u64 * u64::from(ctx.plan.sender_index);
    let mut stop = ctx.stop.clone();
    let drain_deadline = end_ns + ctx.workload.drain_timeout.0.as_nanos() as u64;
    loop {
        let next_ns = if period_ns > 0 {
            start_ns + offset_ns + u64::from(k) * period_ns
        } else {
            ctx.clock.now_ns()
        };
        let may_send = next_ns < end_ns && outstanding.len() < in_flight;
        if !may_send && next_ns >= end_ns && outstanding.is_empty() {
            return Ok(());
        }
        let wake = if may_send { next_ns } else { drain_deadline };
        tokio::select! {
            _ = tokio::time::sleep_until(ctx.clock.instant_at(wake).into()), if may_send || ctx.clock.now_ns() < drain_deadline => {
                if !may_send {
                    return Ok(()); // drain deadline: outstanding sends stay unacked
                }
                let msg = msg_no(ctx.plan.id, k);
                k += 1;
                let frame = serde_json::json!({"op": "send", "room": ctx.room, "id": msg.to_string(), "body": body(&mut rng, &ctx.workload.message_bytes)});
                rec.record(EventKind::Send { room, msg, scheduled_ns: next_ns });
                if write.send(Message::text(frame.to_string())).await.is_err() {
                    return Err(None);
                }
                ctx.shared.sent.fetch_add(1, Ordering::Relaxed);
                outstanding.insert(msg);
            }
            incoming = read.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else { continue };
                    let msg = frame.id.as_deref().and_then(|id| id.parse::<MsgNo>().ok());
                    match (frame.op.as_str(), msg, frame.seq) {
                        ("ack", Some(msg), Some(seq)) => {
                            rec.record(EventKind::Ack { room, msg, seq });
                            if outstanding.remove(&msg) {
                                ctx.shared.acked.fetch_add(1, Ordering::Relaxed);
                            }
                            ctx.shared.room_max_acked[room as usize].fetch_max(seq, Ordering::Relaxed);
                        }
                        ("error", msg, _) => {
                            rec.record(EventKind::Error { msg });
                            ctx.shared.errors.fetch_add(1, Ordering::Relaxed);
                            if let Some(m) = msg {
                                outstanding.remove(&m);
                            }
                        }
                        _ => {}
                    }
                }
                Some(Ok(other @ Message::Close(_))) => return Err(close_code(&other)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err(None),
            },
            _ = stop.changed() => return Ok(()),
        }
    }
}

async fn subscriber(ctx: &Context, rec: &mut Recorder) -> Outcome {
    if !ctx.plan.join_at.is_zero() {
        let Some(Window { start_ns, .. }) = window(ctx).await else {
            return Ok(());
        };
        let join_ns = start_ns + ctx.plan.join_at.as_nanos() as u64;
        tokio::time::sleep_until(ctx.clock.instant_at(join_ns).into()).await;
    }
    let ws = connect(&ctx.url).await?;
    let (mut write, mut read) = ws.split();
    let room = ctx.plan.room;
    let mut subscribe = serde_json::json!({"op": "subscribe", "room": ctx.room});
    if let Some(after) = ctx.plan.after {
        subscribe["after"] = after.into();
    }
    if write
        .send(Message::text(subscribe.to_string()))
        .await
        .is_err()
    {
        return Err(None);
    }
    let mut stop = ctx.stop.clone();
    let last_seq = &ctx.shared.client_last_seq[ctx.plan.id as usize];
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = write.send(Message::Close(None)).await;
                return Ok(());
            }
            incoming = read.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else { continue };
                    match frame.op.as_str() {
                        "msg" => {
                            let msg = frame.id.as_deref().and_then(|id| id.parse::<MsgNo>().ok()).unwrap_or(FOREIGN_MSG);
                            let seq = frame.seq.unwrap_or(0);
                            rec.record(EventKind::Deliver { room, msg, seq });
                            ctx.shared.delivered.fetch_add(1, Ordering::Relaxed);
                            last_seq.fetch_max(seq, Ordering::Relaxed);
                        }
                        "subscribed" => {
                            let head = frame.head.unwrap_or(0);
                            rec.record(EventKind::Subscribed { room, head, after: ctx.plan.after });
                            if ctx.plan.join_at.is_zero() {
                                ctx.shared.ready.fetch_add(1, Ordering::Relaxed);
                            }
                            if ctx.plan.after.is_none() {
                                last_seq.fetch_max(head, Ordering::Relaxed);
                            }
                        }
                        "error" => {
                            rec.record(EventKind::Error { msg: None });
                            ctx.shared.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
                Some(Ok(other @ Message::Close(_))) => return Err(close_code(&other)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err(None),
            },
        }
    }
}
