//! STOMP 1.2 on `/stomp`: the same requests and guarantees as protocol v1,
//! in the shape of a Spring `@EnableWebSocketMessageBroker` chat server.
//!
//! Pure translation, no I/O: a client frame becomes a [`Request`] (or a
//! direct answer), and each protocol-v1 server frame the connection would
//! write (JSON) becomes the STOMP frame for this session (see PROTOCOL.md,
//! "STOMP"). The connection keeps one [`Session`] and writes what it says.
//!
//! - `SUBSCRIBE destination:/sub/{room} id:… [receipt:…] [after:N]`: the
//!   `RECEIPT` comes when the subscription is live (protocol v1's
//!   `subscribed`), with the room's `head`;
//! - `SEND destination:/pub/{room} msg-id:… [receipt:…]` + body: the
//!   `RECEIPT` (with `msg-id` and `seq`) only after the store;
//! - `MESSAGE destination:/sub/{room} subscription:… message-id:…
//!   msg-id:… seq:… node:…` + body;
//! - any error is an `ERROR` frame (`message` = the v1 error code, `msg-id`
//!   when it concerns a send, `receipt-id` of the frame that caused it),
//!   and the connection closes, as STOMP requires: the client reconnects,
//!   resubscribes with `after` and resends unacknowledged messages.

use crate::protocol::{ErrorCode, FrameError, MAX_FRAME_BYTES, MAX_SEQ, MsgId, Request, RoomId, Seq};
use chatbench_stomp::{Command, Frame, Incoming, parse};
use std::collections::HashMap;

/// WebSocket subprotocols `/stomp` accepts (as Spring and stomp.js offer them).
pub const SUBPROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];
/// Subscriptions go to `/sub/{room}`, sends to `/pub/{room}`.
pub use chatbench_wire::paths::{PUB_PREFIX, SUB_PREFIX};

/// A protocol-v1 server frame, as far as STOMP needs it.
#[derive(serde::Deserialize)]
struct V1Frame<'a> {
    #[serde(borrow)]
    op: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    room: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    body: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    node: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    head: Option<u64>,
}

/// What to do with one client message.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    /// A chat request, as if it came over protocol v1.
    Request(Request),
    /// Write this frame (CONNECTED, a RECEIPT).
    Reply(String),
    /// Write this ERROR frame, then close the connection.
    Fail(String),
    /// CONNECT carried a token that verified: write `reply` (CONNECTED);
    /// the connection may now do what `grant` allows.
    Granted { reply: String, grant: crate::auth::Grant },
    /// CONNECT carried no valid token: write this ERROR, then close.
    Refused(String),
    /// Write DISCONNECT's RECEIPT (empty: none asked for), then close.
    Disconnect(String),
    /// A heart-beat, or a frame with nothing to do (ACK, NACK in auto mode).
    Nothing,
}

/// What to write for one protocol-v1 server frame.
#[derive(Debug, PartialEq)]
pub enum Outbound {
    Write(String),
    WriteAndClose(String),
    /// Nothing to write (a receipt nobody asked for).
    Skip,
}

#[derive(Debug, Default)]
pub struct Session {
    /// CONNECT must carry this login and passcode.
    login: Option<(String, String)>,
    connected: bool,
    /// Subscription id → room, and room → (subscription id, its receipt).
    subs: HashMap<String, RoomId>,
    rooms: HashMap<RoomId, String>,
    sub_receipts: HashMap<RoomId, String>,
    unsub_receipts: HashMap<RoomId, String>,
    /// msg-id → the receipt its SEND asked for.
    send_receipts: HashMap<String, String>,
    /// `--sabotage mislabel` (test only): MESSAGE frames name a subscription
    /// id this client never used.
    wrong_subscription: bool,
    /// `--sabotage ignore_unsubscribe` (test only): UNSUBSCRIBE is receipted
    /// but the subscription stays.
    keep_on_unsubscribe: bool,
    /// `--sabotage leak` (test only): messages of rooms never subscribed
    /// are written too.
    leak: bool,
    /// With auth on and no token on the upgrade: CONNECT must carry one
    /// (`Authorization`, or `passcode`), verified here.
    verifier: Option<std::sync::Arc<crate::auth::Verifier>>,
}

fn encode(frame: Frame) -> String {
    // Every header and body here is UTF-8 text, and only CONNECTED is
    // unescaped: its headers are fixed strings.
    frame.encode_text().ok().flatten().unwrap_or_else(|| "ERROR\nmessage:internal\n\n\0".to_owned())
}

fn error_frame(code: &str, message: &str, msg_id: Option<&str>, receipt: Option<&str>) -> String {
    let mut f = Frame::new(Command::Error).header("message", code).header("content-type", "text/plain");
    if let Some(id) = msg_id {
        f = f.header("msg-id", id);
    }
    if let Some(r) = receipt {
        f = f.header("receipt-id", r);
    }
    encode(f.body(message.as_bytes()))
}

fn frame_error(e: &FrameError, msg_id: Option<&str>, receipt: Option<&str>) -> Inbound {
    Inbound::Fail(error_frame(e.code.as_str(), &e.message, msg_id, receipt))
}

fn room_of(frame: &Frame, prefix: &str) -> Result<RoomId, FrameError> {
    let destination = frame
        .get("destination")
        .ok_or_else(|| FrameError::new(ErrorCode::MissingField, format!("{} needs a destination header", frame.command)))?;
    let room = destination.strip_prefix(prefix).ok_or_else(|| {
        FrameError::new(ErrorCode::BadRoom, format!("{} destination {destination:?} must be {prefix}{{room}}", frame.command))
    })?;
    RoomId::parse(room)
}

impl Session {
    pub fn new(login: Option<(String, String)>, verifier: Option<std::sync::Arc<crate::auth::Verifier>>) -> Self {
        Self { login, verifier, ..Default::default() }
    }

    /// Test-only sabotage of what clients see (see `sabotage`).
    pub fn sabotage(&mut self, sabotage: crate::sabotage::Sabotage) {
        self.wrong_subscription = sabotage.mislabel;
        self.keep_on_unsubscribe = sabotage.ignore_unsubscribe;
        self.leak = sabotage.leak;
    }

    /// Translate one client WebSocket text message.
    pub fn inbound(&mut self, text: &str) -> Inbound {
        if text.len() > MAX_FRAME_BYTES {
            let e = FrameError::new(ErrorCode::FrameTooLarge, format!("frame is {} bytes; the limit is {MAX_FRAME_BYTES}", text.len()));
            return frame_error(&e, None, None);
        }
        let frame = match parse(text.as_bytes()) {
            Ok(Incoming::HeartBeat) => return Inbound::Nothing,
            Ok(Incoming::Frame(f)) => f,
            Err(e) => return frame_error(&FrameError::new(ErrorCode::BadJson, format!("not a STOMP frame: {e}")), None, None),
        };
        let receipt = frame.get("receipt").map(str::to_owned);
        match (self.connected, frame.command) {
            (false, Command::Connect | Command::Stomp) => {
                let versions = frame.get("accept-version").unwrap_or("1.0");
                if !versions.split(',').any(|v| v.trim() == "1.2" || v.trim() == "1.1") {
                    return frame_error(
                        &FrameError::new(ErrorCode::BadField, format!("accept-version {versions:?}: this server speaks STOMP 1.2 and 1.1")),
                        None,
                        None,
                    );
                }
                if let Some((login, passcode)) = &self.login
                    && (frame.get("login") != Some(login.as_str()) || frame.get("passcode") != Some(passcode.as_str()))
                {
                    let e = FrameError::new(ErrorCode::BadField, "access refused: CONNECT needs a valid login and passcode");
                    return Inbound::Fail(error_frame("access_refused", &e.message, None, None));
                }
                let grant = match &self.verifier {
                    Some(verifier) => {
                        let token = frame.get("Authorization").or_else(|| frame.get("authorization")).or_else(|| frame.get("passcode"));
                        match verifier.verify(token.unwrap_or_default()) {
                            Ok(grant) => Some(grant),
                            Err(e) => return Inbound::Refused(error_frame("unauthenticated", &e.to_string(), None, None)),
                        }
                    }
                    None => None,
                };
                self.connected = true;
                let version = if versions.split(',').any(|v| v.trim() == "1.2") { "1.2" } else { "1.1" };
                // heart-beat 0,0: the server neither sends nor requires STOMP
                // heart-beats (WebSocket pings and the idle timeout cover it).
                let reply = encode(
                    Frame::new(Command::Connected)
                        .header("version", version)
                        .header("heart-beat", "0,0")
                        .header("server", "chatbench-reference"),
                );
                match grant {
                    Some(grant) => Inbound::Granted { reply, grant },
                    None => Inbound::Reply(reply),
                }
            }
            (false, other) => frame_error(
                &FrameError::new(ErrorCode::UnknownOp, format!("{other} before CONNECT: send CONNECT first")),
                None,
                receipt.as_deref(),
            ),
            (true, Command::Connect | Command::Stomp) => {
                frame_error(&FrameError::new(ErrorCode::UnknownOp, "CONNECT on a connected session"), None, receipt.as_deref())
            }
            (true, Command::Subscribe) => self.subscribe(&frame, receipt),
            (true, Command::Unsubscribe) if self.keep_on_unsubscribe => {
                let Some(room) = frame.get("id").and_then(|id| self.subs.get(id)).cloned() else {
                    return frame_error(
                        &FrameError::new(ErrorCode::NotSubscribed, "UNSUBSCRIBE id names no subscription"),
                        None,
                        receipt.as_deref(),
                    );
                };
                if let Some(r) = receipt {
                    self.unsub_receipts.insert(room.clone(), r);
                }
                Inbound::Request(Request::Unsubscribe { room })
            }
            (true, Command::Unsubscribe) => {
                let Some(room) = frame.get("id").and_then(|id| self.subs.remove(id)) else {
                    return frame_error(
                        &FrameError::new(ErrorCode::NotSubscribed, "UNSUBSCRIBE id names no subscription"),
                        None,
                        receipt.as_deref(),
                    );
                };
                self.rooms.remove(&room);
                if let Some(r) = receipt {
                    self.unsub_receipts.insert(room.clone(), r);
                }
                Inbound::Request(Request::Unsubscribe { room })
            }
            (true, Command::Send) => self.send(frame, receipt),
            (true, Command::Disconnect) => match receipt {
                Some(r) => Inbound::Disconnect(encode(Frame::new(Command::Receipt).header("receipt-id", r))),
                None => Inbound::Disconnect(String::new()),
            },
            // Subscriptions are ack:auto; transactions are not offered.
            (true, Command::Ack | Command::Nack) => Inbound::Nothing,
            (true, other) => frame_error(
                &FrameError::new(
                    ErrorCode::UnknownOp,
                    format!("{other} is not supported here (no transactions; server frames come from the server)"),
                ),
                None,
                receipt.as_deref(),
            ),
        }
    }

    fn subscribe(&mut self, frame: &Frame, receipt: Option<String>) -> Inbound {
        let room = match room_of(frame, SUB_PREFIX) {
            Ok(r) => r,
            Err(e) => return frame_error(&e, None, receipt.as_deref()),
        };
        let Some(id) = frame.get("id").filter(|id| !id.is_empty()) else {
            return frame_error(&FrameError::new(ErrorCode::MissingField, "SUBSCRIBE needs an id header"), None, receipt.as_deref());
        };
        let after = match frame.get("after") {
            None => None,
            Some(a) => match a.parse::<u64>().ok().filter(|&a| a <= MAX_SEQ) {
                Some(a) => Some(Seq(a)),
                None => {
                    let e = FrameError::new(ErrorCode::BadField, format!("header after {a:?} must be an integer from 0 to {MAX_SEQ}"));
                    return frame_error(&e, None, receipt.as_deref());
                }
            },
        };
        if let Some(old) = self.rooms.insert(room.clone(), id.to_owned()) {
            self.subs.remove(&old);
        }
        self.subs.insert(id.to_owned(), room.clone());
        match receipt {
            Some(r) => self.sub_receipts.insert(room.clone(), r),
            None => self.sub_receipts.remove(&room),
        };
        Inbound::Request(Request::Subscribe { room, after })
    }

    fn send(&mut self, frame: Frame, receipt: Option<String>) -> Inbound {
        let msg_id = frame.get("msg-id").map(str::to_owned);
        let request = (|| {
            let room = room_of(&frame, PUB_PREFIX)?;
            let id =
                MsgId::parse(msg_id.as_deref().ok_or_else(|| {
                    FrameError::new(ErrorCode::MissingField, "SEND needs a msg-id header (the message's idempotency key)")
                })?)?;
            let body = String::from_utf8(frame.body).map_err(|_| FrameError::new(ErrorCode::BadField, "the SEND body is not UTF-8"))?;
            if body.is_empty() {
                return Err(FrameError::new(ErrorCode::EmptyField, "the SEND body is empty"));
            }
            Ok(Request::Send { room, id, body })
        })();
        match request {
            Ok(request) => {
                if let (Some(id), Some(r)) = (&msg_id, receipt) {
                    self.send_receipts.insert(id.clone(), r);
                }
                Inbound::Request(request)
            }
            Err(e) => frame_error(&e, msg_id.as_deref(), receipt.as_deref()),
        }
    }

    /// Translate one protocol-v1 server frame (JSON) for this session.
    pub fn outbound(&mut self, json: &str) -> Outbound {
        // Typed and borrowing (this runs once per delivery per subscriber):
        // no JSON tree, no copies of fields that are not written.
        let Ok(v) = serde_json::from_str::<V1Frame>(json) else {
            return Outbound::WriteAndClose(error_frame("internal", "the server built a frame it cannot translate", None, None));
        };
        let field = |f: &Option<std::borrow::Cow<'_, str>>| f.as_deref().unwrap_or_default().to_owned();
        let s = |k: &str| match k {
            "room" => field(&v.room),
            "id" => field(&v.id),
            "body" => field(&v.body),
            "node" => field(&v.node),
            "code" => field(&v.code),
            _ => field(&v.message),
        };
        let n = |k: &str| if k == "head" { v.head } else { v.seq }.unwrap_or_default();
        let room_of = |room: &str| RoomId::parse(room).ok();
        match &*v.op {
            "msg" => {
                let (room, seq) = (s("room"), n("seq"));
                // Test only (`--sabotage auth_wildcard`): a pattern subscription covers it.
                let by_pattern = || {
                    self.rooms
                        .iter()
                        .find(|(p, _)| crate::protocol::is_room_pattern(p.as_str()) && crate::protocol::pattern_covers(p.as_str(), &room))
                        .map(|(_, sub)| sub)
                };
                let Some(sub) = room_of(&room).and_then(|r| self.rooms.get(&r)).or_else(by_pattern) else {
                    if !self.leak {
                        return Outbound::Skip;
                    }
                    // `--sabotage leak` (test only) writes rooms never subscribed.
                    return Outbound::Write(encode(
                        Frame::new(Command::Message)
                            .header("destination", format!("{SUB_PREFIX}{room}"))
                            .header("subscription", "none")
                            .header("message-id", format!("{room}-{seq}"))
                            .header("msg-id", s("id"))
                            .header("seq", seq.to_string())
                            .body(s("body").into_bytes()),
                    ));
                };
                let sub = if self.wrong_subscription { format!("{sub}-mislabelled") } else { sub.clone() };
                Outbound::Write(encode(
                    Frame::new(Command::Message)
                        .header("destination", format!("{SUB_PREFIX}{room}"))
                        .header("subscription", sub.as_str())
                        .header("message-id", format!("{room}-{seq}"))
                        .header("msg-id", s("id"))
                        .header("seq", seq.to_string())
                        .header("node", s("node"))
                        .header("content-type", "text/plain;charset=UTF-8")
                        .body(s("body").into_bytes()),
                ))
            }
            "ack" => match self.send_receipts.remove(&s("id")) {
                Some(r) => Outbound::Write(encode(
                    Frame::new(Command::Receipt).header("receipt-id", r).header("msg-id", s("id")).header("seq", n("seq").to_string()),
                )),
                None => Outbound::Skip,
            },
            "subscribed" => match room_of(&s("room")).and_then(|r| self.sub_receipts.remove(&r)) {
                Some(r) => {
                    Outbound::Write(encode(Frame::new(Command::Receipt).header("receipt-id", r).header("head", n("head").to_string())))
                }
                None => Outbound::Skip,
            },
            "unsubscribed" => match room_of(&s("room")).and_then(|r| self.unsub_receipts.remove(&r)) {
                Some(r) => Outbound::Write(encode(Frame::new(Command::Receipt).header("receipt-id", r))),
                None => Outbound::Skip,
            },
            "error" => {
                let id = v.id.as_deref();
                let receipt = id.and_then(|id| self.send_receipts.remove(id));
                let receipt = receipt.or_else(|| room_of(&s("room")).and_then(|r| self.sub_receipts.remove(&r)));
                Outbound::WriteAndClose(error_frame(&s("code"), &s("message"), id, receipt.as_deref()))
            }
            _ => Outbound::Skip,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Frame {
        match parse(text.as_bytes()).unwrap() {
            Incoming::Frame(f) => f,
            Incoming::HeartBeat => panic!("heart-beat"),
        }
    }

    fn reply(i: Inbound) -> Frame {
        match i {
            Inbound::Reply(t) | Inbound::Fail(t) | Inbound::Disconnect(t) | Inbound::Refused(t) | Inbound::Granted { reply: t, .. } => {
                frame(&t)
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn with_auth_connect_must_carry_a_token_that_verifies() {
        use jsonwebtoken::{EncodingKey, Header, encode};
        let secret = b"0123456789abcdef0123456789abcdef";
        let verifier = std::sync::Arc::new(crate::auth::Verifier::new(secret).unwrap());
        let exp = crate::auth::now_s() + 60;
        let token =
            encode(&Header::default(), &serde_json::json!({"sub": "s", "rooms": ["r"], "exp": exp}), &EncodingKey::from_secret(secret))
                .unwrap();
        let mut s = Session::new(None, Some(verifier.clone()));
        let i = s.inbound("CONNECT\naccept-version:1.2\nhost:x\n\n\0");
        assert!(matches!(&i, Inbound::Refused(t) if frame(t).get("message") == Some("unauthenticated")), "{i:?}");
        for header in [format!("Authorization:Bearer {token}"), format!("passcode:{token}")] {
            let mut s = Session::new(None, Some(verifier.clone()));
            let Inbound::Granted { reply, grant } = s.inbound(&format!("CONNECT\naccept-version:1.2\nhost:x\n{header}\n\n\0")) else {
                panic!("not granted with {header}")
            };
            assert_eq!(frame(&reply).command, Command::Connected, "{header}");
            assert!(grant.may("r") && !grant.may("other"));
        }
        // Without a verifier (auth off, or the token came on the upgrade) CONNECT needs none.
        assert!(matches!(Session::new(None, None).inbound("CONNECT\naccept-version:1.2\nhost:x\n\n\0"), Inbound::Reply(_)));
    }

    fn connected() -> Session {
        let mut s = Session::default();
        let f = reply(s.inbound("CONNECT\naccept-version:1.1,1.2\nhost:x\nheart-beat:10000,10000\n\n\0"));
        assert_eq!((f.command, f.get("version")), (Command::Connected, Some("1.2")));
        s
    }

    #[test]
    fn a_connect_without_the_required_login_is_refused() {
        let mut s = Session::new(Some(("u".into(), "p".into())), None);
        let f = reply(s.inbound("CONNECT\naccept-version:1.2\nlogin:u\npasscode:wrong\n\n\0"));
        assert_eq!((f.command, f.get("message")), (Command::Error, Some("access_refused")));
        let mut s = Session::new(Some(("u".into(), "p".into())), None);
        let f = reply(s.inbound("CONNECT\naccept-version:1.2\nlogin:u\npasscode:p\n\n\0"));
        assert_eq!(f.command, Command::Connected);
    }

    #[test]
    fn frames_before_connect_are_an_error_that_closes() {
        let mut s = Session::default();
        let i = s.inbound("SEND\ndestination:/pub/r\nmsg-id:a\n\nhi\0");
        assert!(matches!(&i, Inbound::Fail(t) if frame(t).command == Command::Error), "{i:?}");
    }

    #[test]
    fn a_subscribe_is_receipted_when_live_with_the_head() {
        let mut s = connected();
        let i = s.inbound("SUBSCRIBE\ndestination:/sub/r1\nid:0\nreceipt:sub-0\nafter:7\n\n\0");
        assert_eq!(i, Inbound::Request(Request::Subscribe { room: RoomId::parse("r1").unwrap(), after: Some(Seq(7)) }));
        let Outbound::Write(t) = s.outbound(r#"{"op":"subscribed","room":"r1","head":9}"#) else { panic!() };
        let f = frame(&t);
        assert_eq!((f.command, f.get("receipt-id"), f.get("head")), (Command::Receipt, Some("sub-0"), Some("9")));
        let Outbound::Write(t) = s.outbound(r#"{"op":"msg","room":"r1","seq":8,"id":"m1","body":"hey","node":"n0","ts_ms":1}"#) else {
            panic!()
        };
        let f = frame(&t);
        assert_eq!(
            (f.command, f.get("subscription"), f.get("msg-id"), f.get("seq"), f.body_text()),
            (Command::Message, Some("0"), Some("m1"), Some("8"), Some("hey"))
        );
        // Another room's messages are not for this session.
        assert_eq!(s.outbound(r#"{"op":"msg","room":"r2","seq":1,"id":"m","body":"x","node":"n","ts_ms":1}"#), Outbound::Skip);
    }

    #[test]
    fn a_send_is_receipted_after_the_store_and_a_failure_is_an_error_naming_it() {
        let mut s = connected();
        let i = s.inbound("SEND\ndestination:/pub/r1\nmsg-id:m1\nreceipt:m1\n\nhello\0");
        assert_eq!(
            i,
            Inbound::Request(Request::Send { room: RoomId::parse("r1").unwrap(), id: MsgId::parse("m1").unwrap(), body: "hello".into() })
        );
        let Outbound::Write(t) = s.outbound(r#"{"op":"ack","id":"m1","room":"r1","seq":3}"#) else { panic!() };
        let f = frame(&t);
        assert_eq!((f.get("receipt-id"), f.get("seq")), (Some("m1"), Some("3")));
        s.inbound("SEND\ndestination:/pub/r1\nmsg-id:m2\nreceipt:m2\n\nhello\0");
        let Outbound::WriteAndClose(t) = s.outbound(r#"{"op":"error","code":"store_unavailable","message":"down","id":"m2","room":"r1"}"#)
        else {
            panic!()
        };
        let f = frame(&t);
        assert_eq!(
            (f.command, f.get("message"), f.get("msg-id"), f.get("receipt-id")),
            (Command::Error, Some("store_unavailable"), Some("m2"), Some("m2"))
        );
    }

    #[test]
    fn bad_frames_get_an_error_naming_the_problem() {
        for (text, needle) in [
            ("SEND\ndestination:/pub/r1\n\nhello\0", "msg-id"),
            ("SEND\ndestination:/queue/r1\nmsg-id:a\n\nhello\0", "/pub/"),
            ("SEND\ndestination:/pub/r1\nmsg-id:a\n\n\0", "empty"),
            ("SUBSCRIBE\ndestination:/sub/r1\n\n\0", "id header"),
            ("SUBSCRIBE\ndestination:/sub/r1\nid:1\nafter:-1\n\n\0", "after"),
            ("BEGIN\ntransaction:t\n\n\0", "not supported"),
            ("garbage", "not a STOMP frame"),
        ] {
            let mut s = connected();
            let f = reply(s.inbound(text));
            assert_eq!(f.command, Command::Error, "{text:?}");
            assert!(f.body_text().unwrap().contains(needle), "{text:?}: {:?}", f.body_text());
        }
    }

    #[test]
    fn heart_beats_and_acks_need_nothing_and_disconnect_is_receipted() {
        let mut s = connected();
        assert_eq!(s.inbound("\n"), Inbound::Nothing);
        assert_eq!(s.inbound("ACK\nid:1\n\n\0"), Inbound::Nothing);
        let Inbound::Disconnect(t) = s.inbound("DISCONNECT\nreceipt:bye\n\n\0") else { panic!() };
        assert_eq!(frame(&t).get("receipt-id"), Some("bye"));
    }
}
