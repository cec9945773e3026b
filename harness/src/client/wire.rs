//! Protocol adapters: what a client writes and how it reads what comes
//! back, behind one interface, so the connection loop (reconnects,
//! resends, resubscribes) is the same for every protocol.
//!
//! - [`Wire::Json`]: chatbench protocol v1 (server/PROTOCOL.md).
//! - [`Wire::Stomp`]: STOMP 1.2 over WebSocket. `CONNECT` is answered by
//!   `CONNECTED` before anything else is sent (an `ERROR` is a refusal,
//!   recorded with the server's words); `SUBSCRIBE` and `SEND` carry a
//!   `receipt`, and only the `RECEIPT` counts (a subscriber is subscribed
//!   when its receipt arrives, a send acked when its receipt arrives);
//!   heart-beats are sent when the server asks for them.

use crate::scenario::{Credentials, IdLocation, Protocol, StompSettings, System};
use crate::trace::{MsgNo, parse_wire_id, wire_id};
use chatbench_stomp::{Command, Frame as StompFrame, Incoming as StompIncoming};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// What one server message means to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A send was acked (stored) with this `seq`.
    Ack { msg: MsgNo, seq: u64 },
    /// A chat message (`msg` None: not one of the harness's ids).
    Msg { msg: Option<MsgNo>, seq: u64 },
    /// The subscription is live from `head`.
    Subscribed { head: u64 },
    /// An error; `msg` when it names one of our sends.
    Error { msg: Option<MsgNo>, code: String },
    /// The session is open (STOMP CONNECTED): send heart-beats this often.
    Connected { heartbeat: Option<Duration> },
    /// A heart-beat, or a frame with nothing for the client.
    Nothing,
}

/// Everything a client needs to speak its protocol, for one client.
#[derive(Debug, Clone)]
pub enum Wire {
    Json,
    Stomp(Box<Stomp>),
}

#[derive(Debug, Clone)]
pub struct Stomp {
    settings: StompSettings,
    /// CONNECT headers, templates already filled in for this client.
    connect_headers: BTreeMap<String, String>,
}

/// Fill `{client}`, `{room}` and `{token}` in a credentials template.
pub fn fill(template: &str, client: u32, room: &str, token: &str) -> String {
    template.replace("{client}", &client.to_string()).replace("{room}", room).replace("{token}", token)
}

impl Wire {
    pub fn new(system: &System, client: u32, room: &str, token: &str) -> Self {
        match system.protocol {
            Protocol::Json => Wire::Json,
            Protocol::Stomp => Wire::Stomp(Box::new(Stomp {
                settings: system.stomp.clone(),
                connect_headers: system
                    .credentials
                    .connect_headers
                    .iter()
                    .map(|(k, v)| (k.clone(), fill(v, client, room, token)))
                    .collect(),
            })),
        }
    }

    /// The WebSocket path clients connect to on nodes the harness starts.
    pub fn path(system: &System) -> &str {
        match (system.protocol, &system.command) {
            (Protocol::Json, Some(command)) => &command.ws_path,
            (Protocol::Json, None) => "/ws",
            (Protocol::Stomp, _) => &system.stomp.path,
        }
    }

    /// The first message of a session (STOMP `CONNECT`), if the protocol has one.
    pub fn hello(&self, host: &str) -> Option<Message> {
        let Wire::Stomp(s) = self else { return None };
        let mut f = StompFrame::new(Command::Connect)
            .header("accept-version", "1.2,1.1")
            .header("host", s.settings.host.as_deref().unwrap_or(host))
            .header("heart-beat", format!("{},0", s.settings.heartbeat_ms));
        for (k, v) in &s.connect_headers {
            f = f.header(k.clone(), v.clone());
        }
        Some(stomp_message(&f))
    }

    pub fn subscribe(&self, room: &str, after: Option<u64>, attempt: u64) -> Message {
        match self {
            Wire::Json => {
                let mut frame = serde_json::json!({"op": "subscribe", "room": room});
                if let Some(after) = after {
                    frame["after"] = after.into();
                }
                Message::text(frame.to_string())
            }
            Wire::Stomp(s) => {
                let mut f = StompFrame::new(Command::Subscribe)
                    .header("id", "0")
                    .header("destination", s.settings.subscribe.replace("{room}", room))
                    .header("ack", "auto")
                    .header("receipt", format!("sub-{attempt}"));
                if let Some(after) = after {
                    f = f.header("after", after.to_string());
                }
                stomp_message(&f)
            }
        }
    }

    pub fn send(&self, room: &str, msg: MsgNo, text: &str) -> Message {
        let id = wire_id(msg);
        match self {
            Wire::Json => Message::text(serde_json::json!({"op": "send", "room": room, "id": id, "body": text}).to_string()),
            Wire::Stomp(s) => {
                let body = s.settings.body.replace("{id}", &id).replace("{text}", text);
                let mut f = StompFrame::new(Command::Send)
                    .header("destination", s.settings.send.replace("{room}", room))
                    .header("receipt", id.clone())
                    .header("content-type", "text/plain;charset=UTF-8");
                if let IdLocation::Header(name) = &s.settings.id {
                    f = f.header(name.clone(), id);
                }
                stomp_message(&f.body(body.into_bytes()))
            }
        }
    }

    /// A heart-beat (STOMP: an end-of-line).
    pub fn heartbeat(&self) -> Option<Message> {
        matches!(self, Wire::Stomp(_)).then(|| Message::text("\n"))
    }

    /// What a text or binary server message means.
    pub fn read(&self, message: &Message) -> Incoming {
        let bytes: &[u8] = match message {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
            _ => return Incoming::Nothing,
        };
        match self {
            Wire::Json => read_json(bytes),
            Wire::Stomp(s) => s.read(bytes),
        }
    }
}

fn stomp_message(f: &StompFrame) -> Message {
    // Every header and body the harness writes is UTF-8 text.
    Message::text(f.encode_text().ok().flatten().expect("harness STOMP frames are UTF-8 and escapable"))
}

/// A protocol-v1 server frame (lenient: unknown fields ignored). Strings
/// borrow from the frame text: no allocation per delivery.
#[derive(Debug, serde::Deserialize)]
struct JsonFrame<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    head: Option<u64>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
}

fn read_json(bytes: &[u8]) -> Incoming {
    let Ok(frame) = serde_json::from_slice::<JsonFrame>(bytes) else { return Incoming::Nothing };
    let msg = frame.id.as_deref().and_then(parse_wire_id);
    match (&*frame.op, msg, frame.seq) {
        ("ack", Some(msg), Some(seq)) => Incoming::Ack { msg, seq },
        ("msg", msg, seq) => Incoming::Msg { msg, seq: seq.unwrap_or(0) },
        ("subscribed", _, _) => Incoming::Subscribed { head: frame.head.unwrap_or(0) },
        ("error", msg, _) => Incoming::Error { msg, code: frame.code.as_deref().unwrap_or("").to_owned() },
        _ => Incoming::Nothing,
    }
}

impl Stomp {
    fn read(&self, bytes: &[u8]) -> Incoming {
        let frame = match chatbench_stomp::parse(bytes) {
            Ok(StompIncoming::Frame(f)) => f,
            Ok(StompIncoming::HeartBeat) | Err(_) => return Incoming::Nothing,
        };
        let seq = || frame.get(&self.settings.seq_header).and_then(|s| s.parse().ok()).unwrap_or(0);
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
                let id = match &self.settings.id {
                    IdLocation::Header(name) => frame.get(name).map(str::to_owned),
                    IdLocation::Json(field) => frame
                        .body_text()
                        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
                        .and_then(|v| v.get(field).and_then(|x| x.as_str()).map(str::to_owned)),
                };
                Incoming::Msg { msg: id.as_deref().and_then(parse_wire_id), seq: seq() }
            }
            Command::Receipt => {
                let receipt = frame.get("receipt-id").unwrap_or("");
                if receipt.starts_with("sub-") {
                    Incoming::Subscribed { head: frame.get("head").and_then(|h| h.parse().ok()).unwrap_or(0) }
                } else {
                    match parse_wire_id(receipt) {
                        Some(msg) => Incoming::Ack { msg, seq: seq() },
                        None => Incoming::Nothing,
                    }
                }
            }
            Command::Error => {
                let named = frame.get("receipt-id").filter(|r| !r.starts_with("sub-")).or(match &self.settings.id {
                    IdLocation::Header(name) => frame.get(name),
                    IdLocation::Json(_) => None,
                });
                let code = frame.get("message").unwrap_or("").to_owned();
                let detail = frame.body_text().unwrap_or("").trim().to_owned();
                Incoming::Error {
                    msg: named.and_then(parse_wire_id),
                    code: if detail.is_empty() { code } else { format!("{code}: {detail}") },
                }
            }
            _ => Incoming::Nothing,
        }
    }
}

/// Name-value pairs (headers, query parameters).
pub type Pairs = Vec<(String, String)>;

/// Upgrade headers and query parameters of one client's credentials.
pub fn upgrade_credentials(c: &Credentials, client: u32, room: &str, token: &str) -> (Pairs, Pairs) {
    let filled = |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| (k.clone(), fill(v, client, room, token))).collect();
    (filled(&c.headers), filled(&c.query))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::msg_no;

    fn stomp() -> Wire {
        let system = System { protocol: Protocol::Stomp, ..Default::default() };
        Wire::new(&system, 3, "room-1", "tok")
    }

    fn text(m: Message) -> String {
        m.into_text().unwrap().to_string()
    }

    #[test]
    fn stomp_frames_carry_receipts_and_the_message_id() {
        let w = stomp();
        let sub = text(w.subscribe("room-1", Some(7), 2));
        assert!(sub.starts_with("SUBSCRIBE\n") && sub.contains("destination:/sub/room-1\n") && sub.contains("receipt:sub-2\n"), "{sub}");
        assert!(sub.contains("after:7\n"), "{sub}");
        let msg = msg_no(3, 9);
        let send = text(w.send("room-1", msg, "hello"));
        let id = wire_id(msg);
        assert!(
            send.contains(&format!("msg-id:{id}\n")) && send.contains(&format!("receipt:{id}\n")) && send.ends_with("hello\0"),
            "{send}"
        );
    }

    #[test]
    fn stomp_server_frames_mean_what_protocol_v1_frames_mean() {
        let w = stomp();
        let msg = msg_no(3, 9);
        let id = wire_id(msg);
        let read = |s: &str| w.read(&Message::text(s.to_owned()));
        assert_eq!(read(&format!("RECEIPT\nreceipt-id:{id}\nseq:12\n\n\0")), Incoming::Ack { msg, seq: 12 });
        assert_eq!(read("RECEIPT\nreceipt-id:sub-0\nhead:4\n\n\0"), Incoming::Subscribed { head: 4 });
        assert_eq!(
            read(&format!("MESSAGE\ndestination:/sub/room-1\nsubscription:0\nmessage-id:x\nmsg-id:{id}\nseq:13\n\nhello\0")),
            Incoming::Msg { msg: Some(msg), seq: 13 }
        );
        assert_eq!(
            read(&format!("ERROR\nmessage:store_unavailable\nmsg-id:{id}\n\ndown\0")),
            Incoming::Error { msg: Some(msg), code: "store_unavailable: down".into() }
        );
        assert_eq!(
            read("CONNECTED\nversion:1.2\nheart-beat:0,20000\n\n\0"),
            Incoming::Connected { heartbeat: Some(Duration::from_secs(20)) }
        );
        assert_eq!(read("\n"), Incoming::Nothing);
    }

    #[test]
    fn credentials_are_filled_per_client() {
        let mut c = Credentials::default();
        c.headers.insert("Authorization".into(), "Bearer {token}".into());
        c.query.insert("user".into(), "u{client}-{room}".into());
        let (headers, query) = upgrade_credentials(&c, 5, "r", "T");
        assert_eq!(headers, vec![("Authorization".to_owned(), "Bearer T".to_owned())]);
        assert_eq!(query, vec![("user".to_owned(), "u5-r".to_owned())]);
    }
}
