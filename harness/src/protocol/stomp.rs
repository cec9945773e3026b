//! `protocol: stomp`: STOMP 1.2 over WebSocket. `CONNECT` is answered by
//! `CONNECTED` before anything else is sent (an `ERROR` is a refusal,
//! recorded with the server's words); `SUBSCRIBE` and `SEND` carry a
//! `receipt`, and only the `RECEIPT` counts (a subscriber is subscribed
//! when its receipt arrives, a send acked when its receipt arrives);
//! heart-beats are sent when the server asks for them. Servers without
//! receipts are declared with `subscribed: {after: …}` and `ack: none`.

use super::incoming::{Delivered, Incoming, Rooms};
use super::json_doc::{IdReader, JsonId, json_path};
use super::template::{ExpectedText, fill_body, fill_credentials, id_findable, is_json_template};
use super::{Declaration, Demands, Problem, Promises, Speak, Who};
use crate::duration::HumanDuration;
use crate::message::{BodyDigest, Label, MsgNo, id_hash, parse_wire_id, wire_id};
use chatbench_stomp::{Command, Frame as StompFrame, Incoming as StompIncoming};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Templates take `{room}` (the room name) and, for bodies, `{id}` (the
/// harness's message id) and `{text}` (the generated text).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StompSettings {
    /// WebSocket path (SockJS servers: `<endpoint>/websocket`).
    #[serde(default = "default_stomp_path")]
    pub path: String,
    /// SUBSCRIBE destination.
    #[serde(default = "default_sub_destination")]
    pub subscribe: String,
    /// SEND destination.
    #[serde(default = "default_pub_destination")]
    pub send: String,
    /// Where the message id travels: a header (sent on SEND, read from
    /// MESSAGE) or a JSON field of the body.
    #[serde(default)]
    pub id: IdLocation,
    /// SEND body template. Default `{text}`; with `id: {json: field}` give a
    /// JSON body carrying `{id}`, e.g. `'{"msgId":"{id}","content":"{text}"}'`.
    /// In a template that is JSON (it starts with `{`), `{text}` is written
    /// JSON-escaped, so quotes, backslashes and newlines stay valid JSON.
    #[serde(default = "default_body")]
    pub body: String,
    /// Where a MESSAGE carries the text the body check compares: `body`
    /// (default: the whole MESSAGE body must equal the SEND body the
    /// harness wrote) or `{json: PATH}` (a string field, dotted for nested
    /// ones, must equal what the harness wrote at that path of its SEND
    /// body; else at the path's last name, top level, for a server that
    /// wraps what it echoes (`payload.content` ← `content`); else the
    /// generated text).
    #[serde(default)]
    pub text: TextLocation,
    /// The MESSAGE (and SEND RECEIPT) header carrying the room's gap-free
    /// sequence number. Required: the checks judge order and resumption by
    /// it (servers without one need declared guarantees, not built yet).
    #[serde(default = "default_seq_header")]
    pub seq_header: String,
    /// When a SUBSCRIBE (and UNSUBSCRIBE) counts as done: `receipt` (the
    /// default: its RECEIPT arrived) or `{after: DURATION}` for servers
    /// that send no receipts (Spring's simple broker): that long after it
    /// was sent. A subscription is owed messages from then on.
    #[serde(default)]
    pub subscribed: Subscribed,
    /// The `host` header of CONNECT (RabbitMQ: the virtual host, `/`).
    #[serde(default)]
    pub host: Option<String>,
    /// Heart-beats the client offers to send, in ms (0: none). A server
    /// that asks for them gets them.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
}

fn default_stomp_path() -> String {
    chatbench_wire::paths::STOMP.into()
}
fn default_seq_header() -> String {
    "seq".into()
}
fn default_sub_destination() -> String {
    chatbench_wire::paths::SUB_TEMPLATE.into()
}
fn default_pub_destination() -> String {
    chatbench_wire::paths::PUB_TEMPLATE.into()
}
fn default_body() -> String {
    "{text}".into()
}
fn default_heartbeat_ms() -> u64 {
    10_000
}

impl Default for StompSettings {
    fn default() -> Self {
        Self {
            path: default_stomp_path(),
            subscribe: default_sub_destination(),
            send: default_pub_destination(),
            id: IdLocation::default(),
            body: default_body(),
            text: TextLocation::default(),
            seq_header: default_seq_header(),
            subscribed: Subscribed::default(),
            host: None,
            heartbeat_ms: default_heartbeat_ms(),
        }
    }
}

/// When a STOMP SUBSCRIBE or UNSUBSCRIBE counts as done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Subscribed {
    /// Its RECEIPT arrived.
    #[default]
    Receipt,
    /// This long after it was sent (the server sends no receipts).
    After(HumanDuration),
}

/// Where the harness's message id travels: `{header: NAME}` (sent on SEND,
/// read from MESSAGE) or `{json: PATH}` / `{json: PATH, pattern: REGEX}`
/// inside a JSON body (the SEND body template must carry `{id}` there).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum IdLocation {
    /// A header, e.g. `msg-id`.
    Header {
        /// The header's name.
        header: String,
    },
    /// A string field of a JSON body, or a pattern inside it.
    Json(JsonId),
}

/// Where a delivered STOMP MESSAGE carries the text it is checked by.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum TextLocation {
    /// The whole body, compared with the whole SEND body.
    #[default]
    Body,
    /// A string field of a JSON body (dotted path), compared with what the
    /// harness sent there (else with the generated text).
    Json(String),
}

impl Default for IdLocation {
    fn default() -> Self {
        IdLocation::Header { header: "msg-id".into() }
    }
}

impl Declaration for StompSettings {
    fn path(&self) -> &str {
        &self.path
    }

    fn validate(&self, _: &Demands) -> Result<(), Problem> {
        if let IdLocation::Json(id) = &self.id {
            id_findable(id, &self.body).map_err(|p| Problem::at("id", p.why))?;
        }
        if let Subscribed::After(d) = self.subscribed
            && d.0.is_zero()
        {
            return Err(Problem::at("subscribed", "after: must be longer than 0s"));
        }
        Ok(())
    }

    fn speaker(&self, who: &Who<'_>, promises: Promises, rooms: &Rooms) -> Box<dyn Speak> {
        let template = &self.subscribe;
        let destination = match template.split_once("{room}") {
            Some((before, after)) => (before.to_owned(), after.to_owned()),
            None => (template.clone(), String::new()),
        };
        Box::new(Stomp {
            settings: self.clone(),
            connect_headers: who
                .connect_headers
                .iter()
                .map(|(k, v)| (k.clone(), fill_credentials(v, who.client, rooms.home(), who.token)))
                .collect(),
            destination,
            json_body: is_json_template(&self.body),
            expected: match &self.text {
                TextLocation::Json(path) => {
                    let (_, id, text) = ExpectedText::marks();
                    ExpectedText::new(&fill_body(&self.body, true, id, text), Some(path))
                }
                TextLocation::Body => ExpectedText::TEXT,
            },
            send_receipts: promises.acks,
            id: match &self.id {
                IdLocation::Header { header } => IdReader::Header(header.clone()),
                IdLocation::Json(id) => IdReader::json(id).expect("id patterns are checked when the scenario is read"),
            },
        })
    }
}

/// A STOMP client's settings, filled for one client.
#[derive(Debug, Clone)]
struct Stomp {
    settings: StompSettings,
    /// CONNECT headers, templates already filled in for this client.
    connect_headers: BTreeMap<String, String>,
    /// The SUBSCRIBE destination template split around `{room}`.
    destination: (String, String),
    /// The SEND body template is JSON.
    json_body: bool,
    /// With `text: {json: PATH}`: what subscribers must get there.
    expected: ExpectedText,
    /// SENDs ask for a RECEIPT (not with `ack: none`).
    send_receipts: bool,
    /// Where MESSAGE frames carry the harness's id.
    id: IdReader,
}

/// The STOMP `id` of a room slot's subscription (as stomp.js numbers them).
fn subscription_id(slot: usize) -> String {
    format!("sub-{slot}")
}

fn stomp_message(f: &StompFrame) -> Message {
    // Every header and body the harness writes is UTF-8 text.
    Message::text(f.encode_text().ok().flatten().expect("harness STOMP frames are UTF-8 and escapable"))
}

impl Speak for Stomp {
    fn hello(&self, host: &str) -> Option<Message> {
        let mut f = StompFrame::new(Command::Connect)
            .header("accept-version", "1.2,1.1")
            .header("host", self.settings.host.as_deref().unwrap_or(host))
            .header("heart-beat", format!("{},0", self.settings.heartbeat_ms));
        for (k, v) in &self.connect_headers {
            f = f.header(k.clone(), v.clone());
        }
        Some(stomp_message(&f))
    }

    fn hello_refused(&self, code: &str) -> String {
        format!("the STOMP CONNECT was refused: ERROR {code}")
    }

    fn subprotocols(&self) -> Option<&str> {
        Some("v12.stomp, v11.stomp")
    }

    fn error_ends_session(&self) -> bool {
        true
    }

    /// SUBSCRIBE carries `after`.
    fn resumes(&self) -> bool {
        true
    }

    fn join(&self, rooms: &Rooms, slot: usize, after: Option<u64>, attempt: u64) -> Message {
        let mut f = StompFrame::new(Command::Subscribe)
            .header("id", subscription_id(slot))
            .header("destination", self.settings.subscribe.replace("{room}", rooms.name(slot)))
            .header("ack", "auto");
        if self.settings.subscribed == Subscribed::Receipt {
            f = f.header("receipt", format!("sub-{slot}-{attempt}"));
        }
        if let Some(after) = after {
            f = f.header("after", after.to_string());
        }
        stomp_message(&f)
    }

    fn leave(&self, _: &Rooms, slot: usize, attempt: u64) -> Message {
        let mut f = StompFrame::new(Command::Unsubscribe).header("id", subscription_id(slot));
        if self.settings.subscribed == Subscribed::Receipt {
            f = f.header("receipt", format!("unsub-{slot}-{attempt}"));
        }
        stomp_message(&f)
    }

    /// The digest is of the text; with `text: body`, of the whole SEND body.
    fn send(&self, rooms: &Rooms, slot: usize, msg: MsgNo, text: &str) -> (Message, BodyDigest) {
        let room = rooms.name(slot);
        let id = wire_id(msg);
        let body = fill_body(&self.settings.body, self.json_body, &id, text);
        let digest = match &self.settings.text {
            TextLocation::Body => BodyDigest::of(body.as_bytes()),
            TextLocation::Json(_) => self.expected.digest(room, &id, text),
        };
        let mut f = StompFrame::new(Command::Send)
            .header("destination", self.settings.send.replace("{room}", room))
            .header("content-type", if self.json_body { "application/json" } else { "text/plain;charset=UTF-8" });
        if self.send_receipts {
            f = f.header("receipt", id.clone());
        }
        if let IdLocation::Header { header } = &self.settings.id {
            f = f.header(header.clone(), id);
        }
        (stomp_message(&f.body(body.into_bytes())), digest)
    }

    /// An end-of-line.
    fn heartbeat(&self) -> Option<Message> {
        Some(Message::text("\n"))
    }

    fn done_after(&self) -> Option<Duration> {
        match self.settings.subscribed {
            Subscribed::After(d) => Some(d.0),
            Subscribed::Receipt => None,
        }
    }

    fn read(&self, rooms: &Rooms, bytes: &[u8], out: &mut Vec<Incoming>) {
        out.push(self.meaning(rooms, bytes));
    }
}

impl Stomp {
    fn meaning(&self, rooms: &Rooms, bytes: &[u8]) -> Incoming {
        let frame = match chatbench_stomp::parse(bytes) {
            Ok(StompIncoming::Frame(f)) => f,
            Ok(StompIncoming::HeartBeat) | Err(_) => return Incoming::Nothing,
        };
        let seq = || frame.get(&self.settings.seq_header).and_then(|v| v.parse().ok()).unwrap_or(0);
        // `sub-{slot}-{attempt}` / `unsub-{slot}-{attempt}`.
        let receipt_slot = |r: &str, prefix: &str| -> Option<usize> {
            r.strip_prefix(prefix)?.split('-').next()?.parse().ok().filter(|&slot: &usize| slot < rooms.len())
        };
        match frame.command {
            Command::Connected => {
                // heart-beat sx,sy: the server wants one from us every sy ms.
                let wants =
                    frame.get("heart-beat").and_then(|h| h.split(',').nth(1)).and_then(|y| y.trim().parse::<u64>().ok()).unwrap_or(0);
                let heartbeat =
                    (wants > 0 && self.settings.heartbeat_ms > 0).then(|| Duration::from_millis(wants.max(self.settings.heartbeat_ms)));
                Incoming::Connected { heartbeat }
            }
            Command::Message => {
                let doc = || frame.body_text().and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok());
                let parsed = match (&self.id, &self.settings.text) {
                    (IdReader::Header(_), TextLocation::Body) => None,
                    _ => doc(),
                };
                let id = match &self.id {
                    IdReader::Header(name) => frame.get(name).map(str::to_owned),
                    json => parsed.as_ref().and_then(|d| json.id_in(d)),
                };
                let body = match &self.settings.text {
                    TextLocation::Body => Some(BodyDigest::of(&frame.body)),
                    TextLocation::Json(path) => {
                        parsed.as_ref().and_then(|d| json_path(d, path)).and_then(|v| v.as_str()).map(|t| BodyDigest::of(t.as_bytes()))
                    }
                };
                let by_destination = frame.get("destination").map(|d| {
                    d.strip_prefix(self.destination.0.as_str())
                        .and_then(|r| r.strip_suffix(self.destination.1.as_str()))
                        .and_then(|r| rooms.slot_of(r))
                });
                let by_subscription = frame
                    .get("subscription")
                    .map(|id| id.strip_prefix("sub-").and_then(|n| n.parse::<usize>().ok()).filter(|&slot| slot < rooms.len()));
                let (slot, label) = match (by_destination, by_subscription) {
                    (Some(Some(d)), Some(Some(sub))) if d == sub => (d, Label::Ok),
                    (Some(Some(d)), Some(_)) => (d, Label::WrongSubscription),
                    (Some(Some(d)), None) => (d, Label::Missing),
                    (Some(None), sub) => (sub.flatten().unwrap_or(0), Label::UnknownRoom),
                    (None, sub) => (sub.flatten().unwrap_or(0), Label::Missing),
                };
                let message_id = frame.get("message-id").map_or(0, |m| id_hash(m.as_bytes()));
                Incoming::Msg(Delivered { msg: id.as_deref().and_then(parse_wire_id), seq: seq(), slot, label, body, message_id })
            }
            Command::Receipt => {
                let receipt = frame.get("receipt-id").unwrap_or("");
                if receipt.starts_with("sub-") {
                    Incoming::Subscribed {
                        slot: receipt_slot(receipt, "sub-"),
                        head: frame.get("head").and_then(|h| h.parse().ok()).unwrap_or(0),
                    }
                } else if receipt.starts_with("unsub-") {
                    Incoming::Unsubscribed { slot: receipt_slot(receipt, "unsub-") }
                } else {
                    match parse_wire_id(receipt) {
                        Some(msg) => Incoming::Ack { msg, seq: seq() },
                        None => Incoming::Nothing,
                    }
                }
            }
            Command::Error => {
                let receipt = frame.get("receipt-id");
                let named = receipt.filter(|r| !r.starts_with("sub-") && !r.starts_with("unsub-")).or(match &self.id {
                    IdReader::Header(name) => frame.get(name),
                    IdReader::Json { .. } => None,
                });
                let slot = receipt.and_then(|r| receipt_slot(r, "sub-").or_else(|| receipt_slot(r, "unsub-")));
                let code = frame.get("message").unwrap_or("").to_owned();
                let detail = frame.body_text().unwrap_or("").trim().to_owned();
                Incoming::Error {
                    msg: named.and_then(parse_wire_id),
                    slot,
                    code: if detail.is_empty() { code } else { format!("{code}: {detail}") },
                }
            }
            _ => Incoming::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{text, wire};
    use super::super::{Declared, Wire};
    use super::*;
    use crate::message::msg_no;

    fn stomp() -> Wire {
        wire(&Declared::Stomp(StompSettings::default()), true, &["room-1", "room-2"], "tok")
    }

    /// The seed's kind of server: no receipts, the id only inside the
    /// echoed `content`, the body the server's own DTO around it.
    fn seed_like() -> Wire {
        let settings = StompSettings {
            subscribed: Subscribed::After(HumanDuration(Duration::from_millis(300))),
            body: r#"{"content":"{text} [{id}]"}"#.into(),
            id: IdLocation::Json(JsonId { json: "payload.content".into(), pattern: Some(r"\[(m\d+)\]$".into()) }),
            text: TextLocation::Json("payload.content".into()),
            ..StompSettings::default()
        };
        wire(&Declared::Stomp(settings), false, &["room-1"], "")
    }

    #[test]
    fn without_receipts_frames_ask_for_none_and_subscriptions_count_after_the_wait() {
        let w = seed_like();
        assert_eq!(w.done_after(), Some(Duration::from_millis(300)));
        assert!(!text(w.subscribe(0, None, 1)).contains("receipt:"));
        assert!(!text(w.unsubscribe(0, 2)).contains("receipt:"));
        let (send, _) = w.send(0, msg_no(3, 1), "hi");
        let send = text(send);
        assert!(!send.contains("receipt:") && send.contains("content-type:application/json\n"), "{send}");
        assert_eq!(stomp().done_after(), None);
    }

    #[test]
    fn ids_and_text_are_found_in_nested_fields_and_inside_text() {
        let w = seed_like();
        let msg = msg_no(3, 9);
        let (send, digest) = w.send(0, msg, "say \"hi\"");
        let send = text(send);
        let body = send.split("\n\n").nth(1).unwrap().trim_end_matches('\0');
        let sent: serde_json::Value = serde_json::from_str(body).unwrap();
        let content = sent["content"].as_str().unwrap();
        assert_eq!(content, format!("say \"hi\" [{}]", wire_id(msg)));
        // The expected digest is what went into that path, id included.
        assert_eq!(digest, BodyDigest::of(content.as_bytes()));
        let dto = serde_json::json!({"id": "65f0c0ffee", "payload": {"content": content, "groupId": "room-1"}});
        let frame = format!("MESSAGE\ndestination:/sub/room-1\nsubscription:sub-0\nmessage-id:1\n\n{dto}\0");
        let Incoming::Msg(d) = w.read_one(&Message::text(frame)) else { panic!("not a delivery") };
        assert_eq!((d.msg, d.body), (Some(msg), Some(digest)));
        // A pattern that does not match, or a missing path: no id, so a
        // foreign message (a phantom), never a guess.
        let other = serde_json::json!({"payload": {"content": "say hi"}});
        let frame = format!("MESSAGE\ndestination:/sub/room-1\nsubscription:sub-0\nmessage-id:2\n\n{other}\0");
        let Incoming::Msg(d) = w.read_one(&Message::text(frame)) else { panic!("not a delivery") };
        assert_eq!(d.msg, None);
    }

    #[test]
    fn stomp_frames_carry_receipts_ids_per_room_and_the_message_id() {
        let w = stomp();
        let sub = text(w.subscribe(1, Some(7), 2));
        assert!(
            sub.starts_with("SUBSCRIBE\n")
                && sub.contains("destination:/sub/room-2\n")
                && sub.contains("id:sub-1\n")
                && sub.contains("receipt:sub-1-2\n"),
            "{sub}"
        );
        assert!(sub.contains("after:7\n"), "{sub}");
        let unsub = text(w.unsubscribe(1, 3));
        assert!(unsub.starts_with("UNSUBSCRIBE\n") && unsub.contains("id:sub-1\n") && unsub.contains("receipt:unsub-1-3\n"), "{unsub}");
        let msg = msg_no(3, 9);
        let (send, digest) = w.send(0, msg, "hello");
        let send = text(send);
        let id = wire_id(msg);
        assert!(
            send.contains(&format!("msg-id:{id}\n")) && send.contains(&format!("receipt:{id}\n")) && send.ends_with("hello\0"),
            "{send}"
        );
        assert_eq!(digest, BodyDigest::of(b"hello"));
    }

    #[test]
    fn stomp_server_frames_mean_what_protocol_v1_frames_mean() {
        let w = stomp();
        let msg = msg_no(3, 9);
        let id = wire_id(msg);
        let read = |s: &str| w.read_one(&Message::text(s.to_owned()));
        assert_eq!(read(&format!("RECEIPT\nreceipt-id:{id}\nseq:12\n\n\0")), Incoming::Ack { msg, seq: 12 });
        assert_eq!(read("RECEIPT\nreceipt-id:sub-1-0\nhead:4\n\n\0"), Incoming::Subscribed { slot: Some(1), head: 4 });
        assert_eq!(read("RECEIPT\nreceipt-id:unsub-0-3\n\n\0"), Incoming::Unsubscribed { slot: Some(0) });
        let message = |dest: &str, sub: &str| {
            read(&format!("MESSAGE\ndestination:{dest}\nsubscription:{sub}\nmessage-id:x\nmsg-id:{id}\nseq:13\n\nhello\0"))
        };
        let delivered = |slot, label| {
            Incoming::Msg(Delivered {
                msg: Some(msg),
                seq: 13,
                slot,
                label,
                body: Some(BodyDigest::of(b"hello")),
                message_id: id_hash(b"x"),
            })
        };
        assert_eq!(message("/sub/room-2", "sub-1"), delivered(1, Label::Ok));
        assert_eq!(message("/sub/room-2", "sub-0"), delivered(1, Label::WrongSubscription));
        assert_eq!(message("/sub/room-2", "0"), delivered(1, Label::WrongSubscription));
        assert_eq!(message("/sub/room-9", "sub-1"), delivered(1, Label::UnknownRoom));
        assert_eq!(
            read(&format!("MESSAGE\nmessage-id:x\nmsg-id:{id}\nseq:13\n\nhello\0")),
            delivered(0, Label::Missing),
            "no destination, no subscription"
        );
        assert_eq!(
            read(&format!("ERROR\nmessage:store_unavailable\nmsg-id:{id}\n\ndown\0")),
            Incoming::Error { msg: Some(msg), slot: None, code: "store_unavailable: down".into() }
        );
        assert_eq!(
            read("ERROR\nmessage:bad_room\nreceipt-id:sub-1-4\n\n\0"),
            Incoming::Error { msg: None, slot: Some(1), code: "bad_room".into() }
        );
        assert_eq!(
            read("CONNECTED\nversion:1.2\nheart-beat:0,20000\n\n\0"),
            Incoming::Connected { heartbeat: Some(Duration::from_secs(20)) }
        );
        assert_eq!(read("\n"), Incoming::Nothing);
    }
}
