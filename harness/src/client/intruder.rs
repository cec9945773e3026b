//! An intruder (`auth.intruders`): a client whose credentials do not grant
//! the room it tries. Once the sending window opens it makes each of
//! `auth.attempts` in turn on one connection (a new one when the server
//! closed the last, as STOMP does after an `ERROR`), records the answer of
//! each as a `Probe`, then listens until the run stops (on a new
//! connection if the server closed the last): anything of the room that
//! reaches it is recorded, and judged a leak. The history read
//! comes last, after the drain, when the room holds every message.
//!
//! Only a definite answer counts as a refusal: an upgrade refused with a
//! 4xx status, an error frame, a close frame with a code, HTTP 4xx. A
//! node that cannot be reached is tried again until `auth.answer_within`
//! has passed (a fault on the node is not a refusal), then the attempt
//! has no answer.

use super::connection::{Ws, close_code, open, source_address};
use super::{ClientPlan, Window};
use crate::protocol::{Incoming, Wire};
use crate::scenario::EXPIRY_GRACE;
use crate::trace::{Answer, Attempt, Clock, EventKind, FOREIGN_MSG, MsgNo, Recorder, RoomIdx, msg_no};
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};

pub(super) struct Context {
    pub plan: ClientPlan,
    /// Every node's WebSocket URL, its own first (a node that cannot be
    /// reached is not an answer: the next one is asked).
    pub urls: Vec<String>,
    /// Every node's HTTP base, its own first, for `history` (empty: the
    /// system has no history API to try).
    pub http_bases: Vec<String>,
    /// The room it tries (name): slot 0 of its wire.
    pub room: String,
    /// The room its credentials grant (`other_room`): slot 1, joined first
    /// on every connection.
    pub own_room: Option<String>,
    pub wire: Wire,
    /// Its credentials, as on the upgrade and on a history read.
    pub upgrade_headers: Vec<(String, String)>,
    pub upgrade_query: Vec<(String, String)>,
    pub attempts: Vec<Attempt>,
    pub answer_within: Duration,
    /// The system has `seq`: `resubscribe` (with `after`) means something.
    pub seq: bool,
    /// `expiring`: its credentials are made when sending starts, to expire
    /// `after` it.
    pub expiring: Option<Expiring>,
    pub clock: Clock,
    pub start: watch::Receiver<Option<Window>>,
    pub stop: watch::Receiver<bool>,
}

/// How an `expiring` intruder gets its credentials: `renew(exp)` gives the
/// upgrade headers, query and wire of a member token for its room that
/// expires at `exp` (seconds since the Unix epoch).
pub(crate) struct Expiring {
    pub after: Duration,
    pub renew: Renew,
}

/// Upgrade headers, upgrade query and wire for a token expiring at `exp`.
pub(crate) type Renew = std::sync::Arc<dyn Fn(u64) -> (Vec<(String, String)>, Vec<(String, String)>, Wire) + Send + Sync>;

/// How one attempt on a connection ended.
struct Outcome {
    answer: Answer,
    /// The connection is still usable.
    open: bool,
    /// Refused by the server closing the session (a close frame with a
    /// code, as RabbitMQ answers a forbidden SEND) rather than by an error frame.
    by_close: bool,
}

impl Outcome {
    fn of(answer: Answer, open: bool) -> Self {
        Self { answer, open, by_close: false }
    }
}

pub(super) async fn run(mut ctx: Context) -> Vec<crate::trace::Event> {
    let mut rec = Recorder::new(ctx.plan.id, ctx.clock, 16);
    let Some(_window) = window(&mut ctx).await else { return rec.into_events() };
    let room: RoomIdx = ctx.plan.room;
    let mut ws: Option<Ws> = match ctx.expiring.take() {
        Some(expiring) => member_until_expiry(&mut ctx, expiring, &mut rec).await,
        None => None,
    };
    let mut sends = 0u32;
    for (n, &attempt) in ctx.attempts.iter().enumerate() {
        let msg = match attempt {
            Attempt::History => continue,
            Attempt::Resubscribe if !ctx.seq => continue,
            Attempt::Send => {
                sends += 1;
                Some(msg_no(ctx.plan.msg_client, sends - 1))
            }
            Attempt::Subscribe | Attempt::Resubscribe => None,
        };
        let started_ns = ctx.clock.now_ns();
        let deadline = Instant::now() + ctx.answer_within;
        let mut backoff = Duration::from_millis(50);
        let answer = loop {
            let outcome = match ws.take() {
                Some(socket) => Ok(socket),
                None => connect(&ctx, deadline).await,
            };
            let outcome = match outcome {
                Err(answer) => Outcome::of(answer, false),
                Ok(mut socket) => {
                    let outcome = match msg {
                        Some(msg) => send(&ctx, &mut socket, msg, deadline, &mut rec).await,
                        None => subscribe(&ctx, &mut socket, attempt == Attempt::Resubscribe, n as u64, deadline, &mut rec).await,
                    };
                    if outcome.open {
                        ws = Some(socket);
                    }
                    outcome
                }
            };
            // Cut without a word (a node killed, a link broken): nothing was
            // said, so ask again on a new connection, as a client would,
            // until the deadline (a send again with the same id).
            let cut = outcome.answer == Answer::NoAnswer && !outcome.open;
            if cut && Instant::now() + backoff < deadline {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            break outcome.answer;
        };
        rec.record(EventKind::Probe { room, attempt, answer, started_ns });
    }
    // Stay on the line until the run stops: what still comes is a leak
    // (on a new connection if the server closed the last one, as STOMP
    // does after an ERROR; credentials it refuses leave nothing to hear).
    if ws.is_none() {
        ws = connect(&ctx, Instant::now() + ctx.answer_within).await.ok();
    }
    if let Some(mut socket) = ws {
        let mut stop = ctx.stop.clone();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                frame = socket.next() => match frame {
                    Some(Ok(message)) if !message.is_close() => deliver(&ctx, &message, &mut rec),
                    _ => break,
                },
            }
        }
        let _ = socket.close(None).await;
    }
    // The history read waits for the drain, whatever became of the connection.
    let mut stop = ctx.stop.clone();
    let _ = stop.wait_for(|&s| s).await;
    if ctx.attempts.contains(&Attempt::History) && !ctx.http_bases.is_empty() {
        let started_ns = ctx.clock.now_ns();
        let mut answer = Answer::NoAnswer;
        for base in &ctx.http_bases {
            answer = crate::history_api::probe(base, &ctx.room, &ctx.upgrade_headers, ctx.answer_within).await;
            if answer != Answer::NoAnswer {
                break;
            }
        }
        rec.record(EventKind::Probe { room, attempt: Attempt::History, answer, started_ns });
    }
    rec.into_events()
}

/// An `expiring` intruder's life as a member: a token that expires
/// `after` from now, the room joined with it (not judged: it may), and
/// everything it hears until the expiry plus [`EXPIRY_GRACE`] let be. The
/// expiry is recorded (`RightsEnded`): what the room sends from then on
/// must not reach it. Returns the connection if the server kept it open.
async fn member_until_expiry(ctx: &mut Context, expiring: Expiring, rec: &mut Recorder) -> Option<Ws> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    // JWT `exp` is whole seconds: the first second at least `after` from now.
    let exp = (now + expiring.after).as_secs() + u64::from((now + expiring.after).subsec_nanos() > 0);
    let until_expiry = Duration::from_secs(exp).saturating_sub(now);
    let (headers, query, wire) = (expiring.renew)(exp);
    (ctx.upgrade_headers, ctx.upgrade_query, ctx.wire) = (headers, query, wire);
    let expires_at = Instant::now() + until_expiry;
    let mut ws = connect(ctx, expires_at).await.ok();
    if let Some(socket) = ws.as_mut()
        && socket.send(ctx.wire.subscribe(0, None, 0)).await.is_err()
    {
        ws = None;
    }
    // Listen (and answer what the protocol asks) until the expiry, then
    // mark it, then until the grace has passed: nothing is judged yet.
    for (until, mark) in [(expires_at, true), (expires_at + EXPIRY_GRACE, false)] {
        while let Some(socket) = ws.as_mut() {
            match tokio::time::timeout_at(until, socket.next()).await {
                Err(_) => break,
                Ok(Some(Ok(message))) if !message.is_close() => {
                    for meaning in ctx.wire.read(&message) {
                        if let Incoming::Reply(reply) = meaning {
                            let _ = socket.send(reply).await;
                        }
                    }
                }
                Ok(_) => ws = None,
            }
        }
        tokio::time::sleep_until(until).await;
        if mark {
            rec.record(EventKind::RightsEnded { room: ctx.plan.room });
        }
    }
    ws
}

async fn window(ctx: &mut Context) -> Option<Window> {
    loop {
        if let Some(w) = *ctx.start.borrow_and_update() {
            return Some(w);
        }
        tokio::select! {
            changed = ctx.start.changed() => if changed.is_err() { return None },
            _ = ctx.stop.changed() => return None,
        }
    }
}

/// Open a session: the upgrade, then the protocol's hello (STOMP CONNECT).
/// Err: the definite refusal, or no answer by `deadline`.
async fn connect(ctx: &Context, deadline: Instant) -> Result<Ws, Answer> {
    let mut backoff = Duration::from_millis(50);
    for url in ctx.urls.iter().cycle() {
        match tokio::time::timeout_at(
            deadline,
            open(url, &ctx.upgrade_query, &ctx.upgrade_headers, ctx.wire.subprotocols(), source_address(ctx.plan.msg_client)),
        )
        .await
        {
            Err(_) => return Err(Answer::NoAnswer),
            Ok(Err(tungstenite::Error::Http(response))) if response.status().is_client_error() => return Err(Answer::Refused),
            Ok(Err(e)) => tracing::debug!(client = ctx.plan.id, error = %e, "intruder: no connection yet; trying again"),
            Ok(Ok(ws)) => match hello(ctx, url, ws, deadline).await {
                Ok(ws) if ctx.own_room.is_some() => return join_own_room(ctx, ws, deadline).await,
                Ok(ws) => return Ok(ws),
                Err(Some(answer)) => return Err(answer),
                Err(None) => {}
            },
        }
        if Instant::now() + backoff >= deadline {
            return Err(Answer::NoAnswer);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    Err(Answer::NoAnswer) // no node to ask
}

/// The protocol's first message and its answer. Err(Some): the server
/// answered (a refusal); Err(None): the connection broke, try again.
async fn hello(ctx: &Context, url: &str, mut ws: Ws, deadline: Instant) -> Result<Ws, Option<Answer>> {
    let host = url.split("//").nth(1).and_then(|h| h.split([':', '/']).next()).unwrap_or("localhost");
    let Some(hello) = ctx.wire.hello(host) else { return Ok(ws) };
    ws.send(hello).await.map_err(|_| None)?;
    if !ctx.wire.hello_answered() {
        return Ok(ws);
    }
    loop {
        let message = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err(Some(Answer::NoAnswer)),
            Ok(Some(Ok(m))) => m,
            Ok(_) => return Err(None),
        };
        if let Some(code) = close_code(&message) {
            tracing::debug!(client = ctx.plan.id, code, "intruder: the session was closed with a code");
            return Err(Some(Answer::Refused));
        }
        for meaning in ctx.wire.read(&message) {
            match meaning {
                Incoming::Connected { .. } => return Ok(ws),
                Incoming::Error { .. } => return Err(Some(Answer::Refused)),
                Incoming::Reply(reply) => {
                    let _ = ws.send(reply).await;
                }
                _ => {}
            }
        }
        if message.is_close() {
            return Err(None);
        }
    }
}

/// Join the room the credentials grant (slot 1), as a member would,
/// before trying the other one. Its answer is not judged (a refusal here
/// is the system's business with its members), but it must come.
async fn join_own_room(ctx: &Context, mut ws: Ws, deadline: Instant) -> Result<Ws, Answer> {
    if ws.send(ctx.wire.subscribe(1, None, 0)).await.is_err() {
        return Err(Answer::NoAnswer);
    }
    let settle = ctx.wire.done_after().map(|d| Instant::now() + d);
    let deadline = settle.unwrap_or(deadline);
    loop {
        let message = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) if settle.is_some() => return Ok(ws),
            Err(_) => return Err(Answer::NoAnswer),
            Ok(Some(Ok(m))) => m,
            Ok(_) => return Err(Answer::NoAnswer),
        };
        if close_code(&message).is_some() {
            return Err(Answer::Refused);
        }
        for meaning in ctx.wire.read(&message) {
            match meaning {
                Incoming::Subscribed { slot: Some(1), .. } => return Ok(ws),
                Incoming::Error { .. } if ctx.wire.error_ends_session() => return Err(Answer::Refused),
                Incoming::Error { .. } => return Ok(ws),
                Incoming::Reply(reply) => {
                    let _ = ws.send(reply).await;
                }
                _ => {}
            }
        }
        if message.is_close() {
            return Err(Answer::NoAnswer);
        }
    }
}

async fn subscribe(ctx: &Context, ws: &mut Ws, resume: bool, n: u64, deadline: Instant, rec: &mut Recorder) -> Outcome {
    let room = ctx.plan.room;
    let after = resume.then_some(0);
    rec.record(EventKind::Subscribing { room, after });
    if ws.send(ctx.wire.subscribe(0, after, n)).await.is_err() {
        return Outcome::of(Answer::NoAnswer, false);
    }
    // A protocol without confirmations: no error within its settling time is a yes.
    let settled = ctx.wire.done_after().map(|d| Instant::now() + d);
    let outcome = answer(ctx, ws, rec, settled.unwrap_or(deadline), settled.is_some(), |incoming| match incoming {
        Incoming::Subscribed { slot: Some(0), head } => Some(Verdict::Yes(EventKind::Subscribed { room, head: *head, after })),
        Incoming::Error { .. } => Some(Verdict::No(EventKind::SubscribeRefused { room })),
        _ => None,
    })
    .await;
    if let (Answer::Accepted { .. }, Some(_)) = (outcome.answer, settled) {
        rec.record(EventKind::Subscribed { room, head: 0, after });
    }
    if outcome.by_close {
        rec.record(EventKind::SubscribeRefused { room });
    }
    outcome
}

async fn send(ctx: &Context, ws: &mut Ws, msg: MsgNo, deadline: Instant, rec: &mut Recorder) -> Outcome {
    let room = ctx.plan.room;
    let text = format!("intruder {} was here", ctx.plan.id);
    let (message, body) = ctx.wire.send(0, msg, &text);
    let now = ctx.clock.now_ns();
    rec.record(EventKind::Send { room, msg, scheduled_ns: now, body });
    if ws.send(message).await.is_err() {
        return Outcome::of(Answer::NoAnswer, false);
    }
    let outcome = answer(ctx, ws, rec, deadline, false, |incoming| match incoming {
        Incoming::Ack { msg: m, seq } if *m == msg => Some(Verdict::Yes(EventKind::Ack { room, msg, seq: *seq })),
        Incoming::Error { msg: m, .. } if m.is_none_or(|m| m == msg) => Some(Verdict::No(EventKind::Error { msg: Some(msg) })),
        _ => None,
    })
    .await;
    // Refused is refused, however it was said: the message must reach no one.
    if outcome.by_close {
        rec.record(EventKind::Error { msg: Some(msg) });
    }
    outcome
}

enum Verdict {
    Yes(EventKind),
    No(EventKind),
}

/// Read until `judge` finds the answer, the connection ends, or
/// `deadline` passes (`silence_is_yes`: a protocol without confirmations,
/// whose settling time ends at `deadline`).
async fn answer(
    ctx: &Context,
    ws: &mut Ws,
    rec: &mut Recorder,
    deadline: Instant,
    silence_is_yes: bool,
    judge: impl Fn(&Incoming) -> Option<Verdict>,
) -> Outcome {
    loop {
        let message = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) if silence_is_yes => return Outcome::of(Answer::Accepted { served: 0 }, true),
            Err(_) => return Outcome::of(Answer::NoAnswer, true),
            Ok(Some(Ok(m))) => m,
            // Cut without a close frame: nothing definite was said.
            Ok(_) => return Outcome::of(Answer::NoAnswer, false),
        };
        if let Some(code) = close_code(&message) {
            tracing::debug!(client = ctx.plan.id, code, "intruder: closed with a code");
            return Outcome { answer: Answer::Refused, open: false, by_close: true };
        }
        if message.is_close() {
            return Outcome::of(Answer::NoAnswer, false);
        }
        let mut verdict = None;
        for incoming in ctx.wire.read(&message) {
            match (judge(&incoming), &verdict) {
                // The first answer counts; what else the frame carried is
                // still delivered (a leak must not hide behind it).
                (Some(v), None) => verdict = Some(v),
                (_, _) => match incoming {
                    Incoming::Reply(reply) => {
                        let _ = ws.send(reply).await;
                    }
                    other => deliver_incoming(ctx, other, rec),
                },
            }
        }
        match verdict {
            Some(Verdict::Yes(event)) => {
                rec.record(event);
                return Outcome::of(Answer::Accepted { served: 0 }, true);
            }
            Some(Verdict::No(event)) => {
                rec.record(event);
                // STOMP ends the session after an ERROR.
                return Outcome::of(Answer::Refused, !ctx.wire.error_ends_session());
            }
            None => {}
        }
    }
}

fn deliver(ctx: &Context, message: &Message, rec: &mut Recorder) {
    for incoming in ctx.wire.read(message) {
        deliver_incoming(ctx, incoming, rec);
    }
}

/// A chat message that reached the intruder, recorded as delivered.
fn deliver_incoming(ctx: &Context, incoming: Incoming, rec: &mut Recorder) {
    // Its own room's messages are its own (the labels say so).
    if let Incoming::Msg(d) = incoming
        && !(ctx.own_room.is_some() && d.slot == 1 && d.msg.is_none())
    {
        rec.record(EventKind::Deliver {
            room: ctx.plan.room,
            msg: d.msg.unwrap_or(FOREIGN_MSG),
            seq: d.seq,
            body: d.body,
            label: d.label,
            message_id: d.message_id,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Credential, Role};
    use tokio::net::TcpListener;

    /// How the fake server answers an intruder.
    #[derive(Clone, Copy)]
    enum Server {
        /// Upgrade refused with 401.
        Unauthorized,
        /// Takes every frame and says nothing.
        Silent,
        /// Drops the TCP connection at the first frame (no close frame).
        Cut,
        /// Answers each request with an `error` frame (protocol v1).
        ErrorFrame,
        /// Closes with 4003 at the first frame.
        CloseWithCode,
        /// Says yes: `subscribed`, `ack`.
        Yes,
    }

    async fn serve(kind: Server) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
                    // The shape tungstenite's callback has (its error is an HTTP response).
                    #[allow(clippy::result_large_err)]
                    let refuse = |_: &Request, r: Response| -> Result<Response, ErrorResponse> {
                        match kind {
                            Server::Unauthorized => {
                                let mut e = ErrorResponse::new(Some("unauthenticated".into()));
                                *e.status_mut() = tungstenite::http::StatusCode::UNAUTHORIZED;
                                Err(e)
                            }
                            _ => Ok(r),
                        }
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, refuse).await else { return };
                    while let Some(Ok(Message::Text(text))) = ws.next().await {
                        let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                        let reply = match (kind, frame["op"].as_str()) {
                            (Server::Silent, _) | (Server::Unauthorized, _) => continue,
                            (Server::Cut, _) => return,
                            (Server::CloseWithCode, _) => {
                                let close = tungstenite::protocol::CloseFrame { code: 4003.into(), reason: "forbidden".into() };
                                let _ = ws.send(Message::Close(Some(close))).await;
                                return;
                            }
                            (Server::ErrorFrame, _) => {
                                serde_json::json!({"op": "error", "code": "forbidden", "room": frame["room"], "id": frame["id"]})
                            }
                            (Server::Yes, Some("send")) => serde_json::json!({"op": "ack", "id": frame["id"], "seq": 1}),
                            (Server::Yes, _) => serde_json::json!({"op": "subscribed", "room": frame["room"], "head": 0}),
                        };
                        let _ = ws.send(Message::text(reply.to_string())).await;
                    }
                });
            }
        });
        url
    }

    /// Each attempt's answer, in order, from an intruder against `kind`.
    async fn answers(kind: Server) -> Vec<(Attempt, Answer)> {
        answers_at(vec![serve(kind).await]).await
    }

    async fn answers_at(urls: Vec<String>) -> Vec<(Attempt, Answer)> {
        let clock = Clock::start();
        let (_start_tx, start) = watch::channel(Some(Window { start_ns: 0, end_ns: 1 }));
        let (stop_tx, stop) = watch::channel(false);
        let plan = ClientPlan {
            id: 0,
            msg_client: 0,
            role: Role::Intruder(Credential::Forged),
            node: 0,
            room: 0,
            also: Vec::new(),
            join_at: Duration::ZERO,
            after: None,
            schedule: None,
        };
        let system = crate::scenario::System::default();
        let ctx = Context {
            plan,
            urls,
            http_bases: Vec::new(),
            room: "room-0".into(),
            own_room: None,
            wire: crate::protocol::testing::wire(&system.protocol, true, &["room-0", "room-0-other"], ""),
            upgrade_headers: Vec::new(),
            upgrade_query: Vec::new(),
            attempts: vec![Attempt::Send, Attempt::Subscribe, Attempt::Resubscribe],
            answer_within: Duration::from_millis(400),
            seq: true,
            expiring: None,
            clock,
            start,
            stop,
        };
        let task = tokio::spawn(run(ctx));
        // Every attempt is over in ~1.5 s (silence: 3 x 400 ms); the margin
        // is for a loaded machine.
        tokio::time::sleep(Duration::from_secs(8)).await;
        stop_tx.send(true).unwrap();
        let events = tokio::time::timeout(Duration::from_secs(5), task).await.expect("the intruder stops").unwrap();
        events
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::Probe { attempt, answer, .. } => Some((attempt, answer)),
                _ => None,
            })
            .collect()
    }

    fn every(answer: Answer) -> Vec<(Attempt, Answer)> {
        vec![(Attempt::Send, answer), (Attempt::Subscribe, answer), (Attempt::Resubscribe, answer)]
    }

    #[tokio::test]
    async fn only_a_definite_answer_is_a_refusal() {
        let (unauthorized, error, close, silent, cut, yes) = tokio::join!(
            answers(Server::Unauthorized),
            answers(Server::ErrorFrame),
            answers(Server::CloseWithCode),
            answers(Server::Silent),
            answers(Server::Cut),
            answers(Server::Yes),
        );
        assert_eq!(unauthorized, every(Answer::Refused), "a 401 upgrade");
        assert_eq!(error, every(Answer::Refused), "an error frame");
        assert_eq!(close, every(Answer::Refused), "a close frame with a code");
        assert_eq!(silent, every(Answer::NoAnswer), "silence is not a refusal");
        assert_eq!(cut, every(Answer::NoAnswer), "a cut connection is not a refusal");
        assert_eq!(yes, every(Answer::Accepted { served: 0 }), "a yes");
    }

    /// A node that cannot be reached is not an answer: the next is asked.
    #[tokio::test]
    async fn an_unreachable_node_is_not_an_answer() {
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_url = format!("ws://{}/ws", dead.local_addr().unwrap());
        drop(dead);
        let answers = answers_at(vec![dead_url, serve(Server::ErrorFrame).await]).await;
        assert_eq!(answers, every(Answer::Refused));
    }
}
