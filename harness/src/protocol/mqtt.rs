//! `protocol: mqtt`: MQTT 3.1.1 or 5 over WebSocket (binary frames,
//! subprotocol `mqtt`), as MQTT.js and browsers speak it to brokers such as
//! aedes, Mosquitto, EMQX or HiveMQ. A room is a topic (`topic: chat/{room}`);
//! a message is a PUBLISH whose payload carries the harness's id (a JSON
//! template, like a STOMP body).
//!
//! The declared `qos` is the guarantee: 0 at most once (no acks: declare
//! `guarantees.ack: none`), 1 at least once (PUBACK is the ack), 2 exactly
//! once (PUBREC, PUBREL, then PUBCOMP is the ack). The client side is a
//! correct MQTT client: it reads packets split over frames, answers a delivered QoS 1 PUBLISH with PUBACK,
//! a QoS 2 one with PUBREC (and PUBREL with PUBCOMP), and does not pass on
//! a QoS 2 PUBLISH the broker sends again under the same packet id before
//! releasing it; a resent message keeps its packet id with DUP set. So a
//! QoS 1 system that duplicates under faults shows `duplicated`, and a
//! QoS 2 one shows nothing. `clean_session: false` (with `session_expiry`
//! on MQTT 5) resumes the session: the packet-id state then survives a
//! reconnect, as the spec asks.
//!
//! Packets are read and written with `rumqttc`'s `mqttbytes` (Apache-2.0),
//! inside the harness's own connection loop; its client and event loop are
//! not used. MQTT has no per-room seq: declare `order: per_sender` or
//! `none`, and `history: none`.

use super::incoming::{Delivered, Incoming, Rooms, room_label};
use super::json_doc::{IdReader, JsonId, json_path};
use super::template::{ExpectedText, fill, fill_credentials, id_findable};
use super::{Declaration, Demands, Problem, Promises, Speak, Who};
use crate::duration::HumanDuration;
use crate::message::{BodyDigest, MsgNo, parse_wire_id, wire_id};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The largest packet read or written (MQTT allows 256 MiB; a chat
/// message is far below the 64 KiB frame limit).
const MAX_PACKET_BYTES: usize = 1 << 20;

/// An MQTT broker's topics and QoS. Templates take `{room}` (topic),
/// `{client}` (client id, username, password), `{token}` (username,
/// password), and `{id}` and `{text}` (payload).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttSettings {
    /// WebSocket path on nodes the harness starts.
    #[serde(default = "default_path")]
    pub path: String,
    /// `"3.1.1"` (the default) or `"5"`.
    #[serde(default)]
    pub version: MqttVersion,
    /// The topic of a room, for SUBSCRIBE and PUBLISH: `{room}`, no wildcards.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// QoS of every PUBLISH and SUBSCRIBE: 0 at most once, 1 at least once,
    /// 2 exactly once.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// The client identifier (`{client}`): a persistent session is found by it.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Start a new session on every connection (the default); `false`
    /// resumes the broker's session across reconnects (MQTT 5: with
    /// `session_expiry`).
    #[serde(default = "yes")]
    pub clean_session: bool,
    /// MQTT 5: how long the broker keeps a session after a disconnect.
    #[serde(default)]
    pub session_expiry: Option<HumanDuration>,
    /// Keep-alive announced in CONNECT; a PINGREQ goes every half of it (0s: none).
    #[serde(default = "default_keep_alive")]
    pub keep_alive: HumanDuration,
    /// CONNECT user name and password templates (`{token}`, `{client}`, `{room}`: the home room).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// PUBLISH payload template, JSON: must carry `{id}` where `id` finds it.
    #[serde(default = "default_payload")]
    pub payload: String,
    /// Where a delivered payload carries the harness's id.
    #[serde(default = "default_id")]
    pub id: JsonId,
    /// Path of the text in a delivered payload, compared with what was
    /// sent there (none: the whole payload is compared with the one sent).
    #[serde(default = "default_text")]
    pub text: Option<String>,
}

/// The MQTT protocol level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum MqttVersion {
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5")]
    V5,
}

fn default_path() -> String {
    "/mqtt".into()
}
fn default_topic() -> String {
    "chat/{room}".into()
}
fn default_qos() -> u8 {
    1
}
fn default_client_id() -> String {
    "chatbench-{client}".into()
}
fn yes() -> bool {
    true
}
fn default_keep_alive() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_payload() -> String {
    r#"{"id":"{id}","text":"{text}"}"#.into()
}
fn default_id() -> JsonId {
    JsonId { json: "id".into(), pattern: None }
}
fn default_text() -> Option<String> {
    Some("text".into())
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            path: default_path(),
            version: MqttVersion::default(),
            topic: default_topic(),
            qos: default_qos(),
            client_id: default_client_id(),
            clean_session: true,
            session_expiry: None,
            keep_alive: default_keep_alive(),
            username: None,
            password: None,
            payload: default_payload(),
            id: default_id(),
            text: default_text(),
        }
    }
}

impl Declaration for MqttSettings {
    fn path(&self) -> &str {
        &self.path
    }

    fn validate(&self, asked: &Demands) -> Result<(), Problem> {
        if !self.path.starts_with('/') {
            return Err(Problem::at("path", format!("{:?} must start with /", self.path)));
        }
        if self.qos > 2 {
            return Err(Problem::at("qos", format!("{} is not a QoS: 0 (at most once), 1 (at least once) or 2 (exactly once)", self.qos)));
        }
        if !self.topic.contains("{room}") {
            return Err(Problem::at("topic", format!("{:?} has no {{room}}: every room needs its own topic", self.topic)));
        }
        if self.topic.contains(['+', '#']) {
            return Err(Problem::at("topic", format!("{:?}: a room's topic names it exactly, without + or # wildcards", self.topic)));
        }
        id_findable(&self.id, &self.payload).map_err(|p| Problem::at("id", p.why))?;
        if self.keep_alive.0.as_secs() > u64::from(u16::MAX) {
            return Err(Problem::at("keep_alive", "at most 65535s (CONNECT carries it in 16 bits)"));
        }
        match (self.version, self.session_expiry) {
            (MqttVersion::V311, Some(_)) => {
                return Err(Problem::at("session_expiry", "MQTT 3.1.1 has no session expiry: clean_session: false keeps the session"));
            }
            (MqttVersion::V5, None) if !self.clean_session => {
                return Err(Problem::at(
                    "session_expiry",
                    "MQTT 5 ends a session at disconnect unless it has an expiry: give session_expiry with clean_session: false",
                ));
            }
            _ => {}
        }
        if self.qos == 0 && asked.acks {
            return Err(Problem::at("qos", "QoS 0 publishes are never acknowledged: declare guarantees.ack: none (or qos: 1 or 2)"));
        }
        if self.qos > 0 && !asked.acks {
            return Err(Problem::at(
                "qos",
                format!("QoS {} acknowledges every publish: declare guarantees.ack: receipt (or qos: 0)", self.qos),
            ));
        }
        if asked.seq {
            return Err("MQTT topics have no per-room seq: declare guarantees.order: per_sender (or none)".into());
        }
        if asked.reference_server {
            return Err("the reference server does not speak MQTT: give system.command (or system.external)".into());
        }
        if asked.reference_history {
            return Err("an MQTT broker keeps no history in the reference layout: declare guarantees.history: none".into());
        }
        Ok(())
    }

    fn speaker(&self, who: &Who<'_>, _: Promises, rooms: &Rooms) -> Box<dyn Speak> {
        let (room, id, text) = ExpectedText::marks();
        let credential = |t: &Option<String>| t.as_deref().map(|t| fill_credentials(t, who.client, rooms.home(), who.token));
        let topic = match self.topic.split_once("{room}") {
            Some((before, after)) => (before.to_owned(), after.to_owned()),
            None => (self.topic.clone(), String::new()),
        };
        Box::new(Mqtt {
            settings: self.clone(),
            client_id: fill_credentials(&self.client_id, who.client, rooms.home(), who.token),
            username: credential(&self.username),
            password: credential(&self.password),
            topic,
            qos: self.qos,
            id: IdReader::json(&self.id).expect("id patterns are checked when the scenario is read"),
            expected: ExpectedText::new(&fill(&self.payload, room, id, text), self.text.as_deref()),
            session: Mutex::new(Session::default()),
        })
    }
}

/// One client's MQTT speaker.
#[derive(Debug)]
struct Mqtt {
    settings: MqttSettings,
    client_id: String,
    username: Option<String>,
    password: Option<String>,
    /// The topic template split around `{room}`.
    topic: (String, String),
    /// 0, 1 or 2 (validated).
    qos: u8,
    id: IdReader,
    expected: ExpectedText,
    session: Mutex<Session>,
}

/// Packet-id state: per connection with a clean session, across
/// connections with a persistent one.
#[derive(Debug, Default)]
struct Session {
    next_pkid: u16,
    /// What each packet id in flight from the client stands for.
    in_flight: HashMap<u16, Pending>,
    /// The packet id a message was last published under.
    pkid_of: HashMap<MsgNo, u16>,
    /// QoS 2 sends the broker has received (PUBREC): released, not published, again.
    received_by_broker: HashSet<u16>,
    /// QoS 2 deliveries passed on and not yet released by the broker.
    delivered: HashSet<u16>,
    /// Room slots the broker confirmed a subscription to (SUBACK), until
    /// an UNSUBSCRIBE goes: what a session it kept still holds.
    subscribed: BTreeSet<usize>,
    /// The last CONNACK said the broker kept this persistent session.
    present: bool,
    /// The start of a packet the last frame cut (MQTT over WebSocket may
    /// split a packet over frames: aedes writes a header, then the rest).
    /// Per connection; bounded by the packet limit.
    partial: BytesMut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Send(MsgNo),
    Join(usize),
    Leave(usize),
}

impl Session {
    /// A free packet id (1..=65535) for `what`.
    fn take(&mut self, what: Pending) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.in_flight.contains_key(&self.next_pkid) {
                self.in_flight.insert(self.next_pkid, what);
                return self.next_pkid;
            }
        }
    }

    fn done(&mut self, pkid: u16) -> Option<Pending> {
        let what = self.in_flight.remove(&pkid)?;
        if let Pending::Send(msg) = what {
            self.pkid_of.remove(&msg);
            self.received_by_broker.remove(&pkid);
        }
        Some(what)
    }
}

/// An incoming packet, whichever the version.
#[derive(Debug)]
enum Packet {
    ConnAck {
        refused: Option<String>,
        /// The broker kept the session (its subscriptions and packet ids).
        present: bool,
    },
    Publish {
        topic: String,
        qos: u8,
        pkid: u16,
        payload: bytes::Bytes,
    },
    /// PUBACK or PUBREC: `refused` with a v5 reason code of 0x80 or more.
    PubAck {
        pkid: u16,
        refused: Option<String>,
    },
    PubRec {
        pkid: u16,
        refused: Option<String>,
    },
    PubRel {
        pkid: u16,
    },
    PubComp {
        pkid: u16,
    },
    SubAck {
        pkid: u16,
        refused: Option<String>,
    },
    UnsubAck {
        pkid: u16,
    },
    Disconnect {
        why: String,
    },
    Other,
}

/// Outgoing packets, built for the declared version.
enum Out {
    Connect,
    Publish { topic: String, pkid: u16, dup: bool, payload: Vec<u8> },
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe { pkid: u16, topic: String },
    Unsubscribe { pkid: u16, topic: String },
    PingReq,
}

impl Mqtt {
    fn room_topic(&self, room: &str) -> String {
        format!("{}{room}{}", self.topic.0, self.topic.1)
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().expect("one task uses a client's session")
    }

    fn encode(&self, out: Out) -> Message {
        let mut buf = BytesMut::new();
        let written = match self.settings.version {
            MqttVersion::V311 => self.v4_packet(out).write(&mut buf, MAX_PACKET_BYTES).map(|_| ()).map_err(|e| e.to_string()),
            MqttVersion::V5 => self.v5_packet(out).write(&mut buf, Some(MAX_PACKET_BYTES as u32)).map(|_| ()).map_err(|e| e.to_string()),
        };
        // The harness builds every packet from validated settings and
        // bodies under the frame limit: an error here is a bug.
        written.expect("the harness's MQTT packets encode");
        Message::binary(buf.freeze())
    }

    fn v4_packet(&self, out: Out) -> v4::Packet {
        match out {
            Out::Connect => {
                let mut c = v4::Connect::new(self.client_id.clone());
                c.keep_alive = self.settings.keep_alive.0.as_secs() as u16;
                c.clean_session = self.settings.clean_session;
                if let Some(user) = &self.username {
                    c.login = Some(v4::Login::new(user.clone(), self.password.clone().unwrap_or_default()));
                }
                v4::Packet::Connect(c)
            }
            Out::Publish { topic, pkid, dup, payload } => {
                let mut p = v4::Publish::new(topic, v4_qos(self.qos), payload);
                p.pkid = pkid;
                p.dup = dup;
                v4::Packet::Publish(p)
            }
            Out::PubAck(pkid) => v4::Packet::PubAck(v4::PubAck::new(pkid)),
            Out::PubRec(pkid) => v4::Packet::PubRec(v4::PubRec::new(pkid)),
            Out::PubRel(pkid) => v4::Packet::PubRel(v4::PubRel::new(pkid)),
            Out::PubComp(pkid) => v4::Packet::PubComp(v4::PubComp::new(pkid)),
            Out::Subscribe { pkid, topic } => {
                let mut s = v4::Subscribe::new(topic, v4_qos(self.qos));
                s.pkid = pkid;
                v4::Packet::Subscribe(s)
            }
            Out::Unsubscribe { pkid, topic } => {
                let mut u = v4::Unsubscribe::new(topic);
                u.pkid = pkid;
                v4::Packet::Unsubscribe(u)
            }
            Out::PingReq => v4::Packet::PingReq,
        }
    }

    fn v5_packet(&self, out: Out) -> v5::Packet {
        match out {
            Out::Connect => {
                let properties = self.settings.session_expiry.map(|e| v5::ConnectProperties {
                    session_expiry_interval: Some(e.0.as_secs().min(u64::from(u32::MAX)) as u32),
                    ..v5::ConnectProperties::new()
                });
                let connect = v5::Connect {
                    keep_alive: self.settings.keep_alive.0.as_secs() as u16,
                    client_id: self.client_id.clone(),
                    clean_start: self.settings.clean_session,
                    properties,
                };
                let login = self.username.as_ref().map(|u| v5::Login::new(u.clone(), self.password.clone().unwrap_or_default()));
                v5::Packet::Connect(connect, None, login)
            }
            Out::Publish { topic, pkid, dup, payload } => {
                let mut p = v5::Publish::new(topic, v5_qos(self.qos), payload, None);
                p.pkid = pkid;
                p.dup = dup;
                v5::Packet::Publish(p)
            }
            Out::PubAck(pkid) => v5::Packet::PubAck(v5::PubAck::new(pkid, None)),
            Out::PubRec(pkid) => v5::Packet::PubRec(v5::PubRec::new(pkid, None)),
            Out::PubRel(pkid) => v5::Packet::PubRel(v5::PubRel::new(pkid, None)),
            Out::PubComp(pkid) => v5::Packet::PubComp(v5::PubComp::new(pkid, None)),
            Out::Subscribe { pkid, topic } => {
                let mut s = v5::Subscribe::new(v5::Filter::new(topic, v5_qos(self.qos)), None);
                s.pkid = pkid;
                v5::Packet::Subscribe(s)
            }
            Out::Unsubscribe { pkid, topic } => {
                let mut u = v5::Unsubscribe::new(topic, None);
                u.pkid = pkid;
                v5::Packet::Unsubscribe(u)
            }
            Out::PingReq => v5::Packet::PingReq(v5::PingReq),
        }
    }

    /// The next packet in `buf`: None when it holds no whole packet (MQTT
    /// over WebSocket may split one over frames); Err for a malformed one.
    fn next_packet(&self, buf: &mut BytesMut) -> Result<Option<Packet>, String> {
        if buf.is_empty() {
            return Ok(None);
        }
        let packet = match self.settings.version {
            MqttVersion::V311 => match v4::Packet::read(buf, MAX_PACKET_BYTES) {
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
                Err(e) => return Err(e.to_string()),
                Ok(p) => from_v4(p),
            },
            MqttVersion::V5 => match v5::Packet::read(buf, Some(MAX_PACKET_BYTES as u32)) {
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
                Err(e) => return Err(e.to_string()),
                Ok(p) => from_v5(p),
            },
        };
        Ok(Some(packet))
    }

    fn on_packet(&self, rooms: &Rooms, packet: Packet, out: &mut Vec<Incoming>) {
        let mut session = self.session();
        match packet {
            Packet::ConnAck { refused: None, present } => {
                session.present = present && !self.settings.clean_session;
                if !session.present {
                    // No subscriptions kept. Packet ids in flight are kept
                    // and resent as they were (as MQTT.js and Paho do): aedes
                    // says "no session" to a client that only publishes,
                    // yet keeps its QoS 2 packet ids to drop a resend by.
                    session.subscribed.clear();
                }
                let half = self.settings.keep_alive.0 / 2;
                out.push(Incoming::Connected { heartbeat: (!half.is_zero()).then_some(half) });
            }
            Packet::ConnAck { refused: Some(code), .. } => out.push(Incoming::Error { msg: None, slot: None, code }),
            Packet::Publish { topic, qos, pkid, payload } => {
                match qos {
                    0 => {}
                    1 => out.push(Incoming::Reply(self.encode(Out::PubAck(pkid)))),
                    _ => {
                        out.push(Incoming::Reply(self.encode(Out::PubRec(pkid))));
                        // The same packet id before its PUBREL: the same
                        // message again, acknowledged but not passed on.
                        if !session.delivered.insert(pkid) {
                            return;
                        }
                    }
                }
                out.push(Incoming::Msg(self.delivery(rooms, &topic, &payload)));
            }
            Packet::PubAck { pkid, refused } => {
                if let Some(Pending::Send(msg)) = session.done(pkid) {
                    out.push(match refused {
                        None => Incoming::Ack { msg, seq: 0 },
                        Some(code) => Incoming::Error { msg: Some(msg), slot: None, code },
                    });
                }
            }
            Packet::PubRec { pkid, refused: None } => {
                if matches!(session.in_flight.get(&pkid), Some(Pending::Send(_))) {
                    session.received_by_broker.insert(pkid);
                }
                out.push(Incoming::Reply(self.encode(Out::PubRel(pkid))));
            }
            Packet::PubRec { pkid, refused: Some(code) } => {
                if let Some(Pending::Send(msg)) = session.done(pkid) {
                    out.push(Incoming::Error { msg: Some(msg), slot: None, code });
                }
            }
            Packet::PubComp { pkid } => {
                if let Some(Pending::Send(msg)) = session.done(pkid) {
                    out.push(Incoming::Ack { msg, seq: 0 });
                }
            }
            Packet::PubRel { pkid } => {
                session.delivered.remove(&pkid);
                out.push(Incoming::Reply(self.encode(Out::PubComp(pkid))));
            }
            Packet::SubAck { pkid, refused } => {
                if let Some(Pending::Join(slot)) = session.done(pkid) {
                    if refused.is_none() {
                        session.subscribed.insert(slot);
                    }
                    out.push(match refused {
                        None => Incoming::Subscribed { slot: Some(slot), head: 0 },
                        Some(code) => Incoming::Error { msg: None, slot: Some(slot), code },
                    });
                }
            }
            Packet::UnsubAck { pkid } => {
                if let Some(Pending::Leave(slot)) = session.done(pkid) {
                    out.push(Incoming::Unsubscribed { slot: Some(slot) });
                }
            }
            Packet::Disconnect { why } => out.push(Incoming::Error { msg: None, slot: None, code: why }),
            Packet::Other => out.push(Incoming::Nothing),
        }
    }

    fn delivery(&self, rooms: &Rooms, topic: &str, payload: &[u8]) -> Delivered {
        let room = topic.strip_prefix(self.topic.0.as_str()).and_then(|r| r.strip_suffix(self.topic.1.as_str()));
        let slot = room.and_then(|r| rooms.slot_of(r));
        let doc = serde_json::from_slice::<serde_json::Value>(payload).ok();
        let body = match &self.settings.text {
            None => Some(BodyDigest::of(payload)),
            Some(path) => doc.as_ref().and_then(|d| json_path(d, path)).and_then(|v| v.as_str()).map(|t| BodyDigest::of(t.as_bytes())),
        };
        Delivered {
            msg: doc.as_ref().and_then(|d| self.id.id_in(d)).as_deref().and_then(parse_wire_id),
            seq: 0,
            slot: slot.unwrap_or(0),
            // A topic that is not the template's names no room.
            label: room_label(Some(room.unwrap_or(topic)), slot, false),
            body,
            message_id: 0,
        }
    }
}

impl Speak for Mqtt {
    fn hello(&self, _: &str) -> Option<Message> {
        let mut session = self.session();
        if self.settings.clean_session {
            *session = Session::default();
        }
        session.partial.clear();
        drop(session);
        Some(self.encode(Out::Connect))
    }

    fn hello_refused(&self, code: &str) -> String {
        format!("the MQTT CONNECT was refused: {code}")
    }

    fn subprotocols(&self) -> Option<&str> {
        Some("mqtt")
    }

    /// A broker closes the connection after a refusal (a failed CONNACK,
    /// a v5 DISCONNECT).
    fn error_ends_session(&self) -> bool {
        true
    }

    fn join(&self, rooms: &Rooms, slot: usize, _: Option<u64>, _: u64) -> Message {
        let pkid = self.session().take(Pending::Join(slot));
        self.encode(Out::Subscribe { pkid, topic: self.room_topic(rooms.name(slot)) })
    }

    fn leave(&self, rooms: &Rooms, slot: usize, _: u64) -> Message {
        let mut session = self.session();
        session.subscribed.remove(&slot);
        let pkid = session.take(Pending::Leave(slot));
        drop(session);
        self.encode(Out::Unsubscribe { pkid, topic: self.room_topic(rooms.name(slot)) })
    }

    /// A message sent before goes again under its packet id with DUP set
    /// (QoS 2 after PUBREC: its PUBREL goes instead).
    fn send(&self, rooms: &Rooms, slot: usize, msg: MsgNo, text: &str) -> (Message, BodyDigest) {
        let room = rooms.name(slot);
        let id = wire_id(msg);
        let payload = fill(&self.settings.payload, room, &id, text);
        let digest = match &self.settings.text {
            None => BodyDigest::of(payload.as_bytes()),
            Some(_) => self.expected.digest(room, &id, text),
        };
        let topic = self.room_topic(room);
        if self.qos == 0 {
            return (self.encode(Out::Publish { topic, pkid: 0, dup: false, payload: payload.into_bytes() }), digest);
        }
        let mut session = self.session();
        let again = session.pkid_of.get(&msg).copied().filter(|p| session.in_flight.get(p) == Some(&Pending::Send(msg)));
        let packet = match again {
            Some(pkid) if session.received_by_broker.contains(&pkid) => Out::PubRel(pkid),
            Some(pkid) => Out::Publish { topic, pkid, dup: true, payload: payload.into_bytes() },
            None => {
                let pkid = session.take(Pending::Send(msg));
                session.pkid_of.insert(msg, pkid);
                Out::Publish { topic, pkid, dup: false, payload: payload.into_bytes() }
            }
        };
        drop(session);
        (self.encode(packet), digest)
    }

    fn heartbeat(&self) -> Option<Message> {
        Some(self.encode(Out::PingReq))
    }

    /// A persistent session the broker kept holds the subscription: no
    /// SUBSCRIBE again (as MQTT.js and Paho do; a second one may make a
    /// broker send its queued messages twice).
    fn session_keeps(&self, slot: usize) -> bool {
        let session = self.session();
        session.present && session.subscribed.contains(&slot)
    }

    /// Every whole packet in what arrived so far; the start of a cut one
    /// waits for the next frame.
    fn read(&self, rooms: &Rooms, bytes: &[u8], out: &mut Vec<Incoming>) {
        let mut buf = std::mem::take(&mut self.session().partial);
        buf.extend_from_slice(bytes);
        loop {
            match self.next_packet(&mut buf) {
                Ok(Some(packet)) => self.on_packet(rooms, packet, out),
                Ok(None) => break,
                Err(e) => {
                    buf.clear();
                    out.push(Incoming::Error { msg: None, slot: None, code: format!("malformed MQTT packet: {e}") });
                    break;
                }
            }
        }
        self.session().partial = buf;
    }
}

fn v4_qos(qos: u8) -> rumqttc::mqttbytes::QoS {
    use rumqttc::mqttbytes::QoS;
    match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn v5_qos(qos: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS;
    match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn from_v4(p: v4::Packet) -> Packet {
    match p {
        v4::Packet::ConnAck(a) => Packet::ConnAck {
            refused: (a.code != v4::ConnectReturnCode::Success).then(|| format!("CONNACK {:?}", a.code)),
            present: a.session_present,
        },
        v4::Packet::Publish(p) => Packet::Publish { topic: p.topic, qos: p.qos as u8, pkid: p.pkid, payload: p.payload },
        v4::Packet::PubAck(a) => Packet::PubAck { pkid: a.pkid, refused: None },
        v4::Packet::PubRec(a) => Packet::PubRec { pkid: a.pkid, refused: None },
        v4::Packet::PubRel(a) => Packet::PubRel { pkid: a.pkid },
        v4::Packet::PubComp(a) => Packet::PubComp { pkid: a.pkid },
        v4::Packet::SubAck(a) => Packet::SubAck {
            pkid: a.pkid,
            refused: a.return_codes.contains(&v4::SubscribeReasonCode::Failure).then(|| "SUBACK Failure".to_owned()),
        },
        v4::Packet::UnsubAck(a) => Packet::UnsubAck { pkid: a.pkid },
        v4::Packet::Disconnect => Packet::Disconnect { why: "DISCONNECT".into() },
        _ => Packet::Other,
    }
}

fn from_v5(p: v5::Packet) -> Packet {
    let refused = |ok: bool, what: &str, reason: &dyn std::fmt::Debug| (!ok).then(|| format!("{what} {reason:?}"));
    match p {
        v5::Packet::ConnAck(a) => {
            Packet::ConnAck { refused: refused(a.code == v5::ConnectReturnCode::Success, "CONNACK", &a.code), present: a.session_present }
        }
        v5::Packet::Publish(p) => {
            Packet::Publish { topic: String::from_utf8_lossy(&p.topic).into_owned(), qos: p.qos as u8, pkid: p.pkid, payload: p.payload }
        }
        v5::Packet::PubAck(a) => Packet::PubAck {
            pkid: a.pkid,
            refused: refused(matches!(a.reason, v5::PubAckReason::Success | v5::PubAckReason::NoMatchingSubscribers), "PUBACK", &a.reason),
        },
        v5::Packet::PubRec(a) => Packet::PubRec {
            pkid: a.pkid,
            refused: refused(matches!(a.reason, v5::PubRecReason::Success | v5::PubRecReason::NoMatchingSubscribers), "PUBREC", &a.reason),
        },
        v5::Packet::PubRel(a) => Packet::PubRel { pkid: a.pkid },
        v5::Packet::PubComp(a) => Packet::PubComp { pkid: a.pkid },
        v5::Packet::SubAck(a) => {
            let bad = a.return_codes.iter().find(|c| !matches!(c, v5::SubscribeReasonCode::Success(_)));
            Packet::SubAck { pkid: a.pkid, refused: bad.map(|c| format!("SUBACK {c:?}")) }
        }
        v5::Packet::UnsubAck(a) => Packet::UnsubAck { pkid: a.pkid },
        v5::Packet::Disconnect(d) => Packet::Disconnect { why: format!("DISCONNECT {:?}", d.reason_code) },
        _ => Packet::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::wire;
    use super::super::{Declared, Wire};
    use super::*;
    use crate::message::{Label, msg_no};

    const ROOMS: [&str; 2] = ["room-1", "room-2"];

    fn mqtt(settings: MqttSettings) -> Wire {
        let acks = settings.qos > 0;
        wire(&Declared::Mqtt(settings), acks, &ROOMS, "tok")
    }

    fn qos(qos: u8) -> MqttSettings {
        MqttSettings { qos, ..MqttSettings::default() }
    }

    /// What the broker reads from a client message.
    fn sent_v4(m: Message) -> v4::Packet {
        let mut buf = BytesMut::from(&m.into_data()[..]);
        let p = v4::Packet::read(&mut buf, MAX_PACKET_BYTES).expect("a whole MQTT 3.1.1 packet");
        assert!(buf.is_empty(), "one packet per frame");
        p
    }

    fn frame_v4(packets: &[v4::Packet]) -> Message {
        let mut buf = BytesMut::new();
        for p in packets {
            p.write(&mut buf, MAX_PACKET_BYTES).expect("a packet the test builds");
        }
        Message::binary(buf.freeze())
    }

    fn publish_v4(topic: &str, qos: rumqttc::mqttbytes::QoS, pkid: u16, payload: &str) -> v4::Packet {
        let mut p = v4::Publish::new(topic, qos, payload.as_bytes().to_vec());
        p.pkid = pkid;
        v4::Packet::Publish(p)
    }

    fn reply(i: &Incoming) -> v4::Packet {
        let Incoming::Reply(m) = i else { panic!("a reply, not {i:?}") };
        sent_v4(m.clone())
    }

    #[test]
    fn connect_subscribe_and_publish_are_what_a_broker_expects() {
        let w = mqtt(MqttSettings { username: Some("u{client}".into()), password: Some("{token}".into()), ..qos(1) });
        let v4::Packet::Connect(c) = sent_v4(w.hello("h").expect("MQTT opens with CONNECT")) else { panic!("CONNECT") };
        assert_eq!((c.client_id.as_str(), c.clean_session, c.keep_alive), ("chatbench-3", true, 30));
        let login = c.login.expect("credentials");
        assert_eq!((login.username.as_str(), login.password.as_str()), ("u3", "tok"));
        assert_eq!(w.subprotocols(), Some("mqtt"));
        let v4::Packet::Subscribe(s) = sent_v4(w.subscribe(1, None, 0)) else { panic!("SUBSCRIBE") };
        assert_eq!((s.filters[0].path.as_str(), s.filters[0].qos), ("chat/room-2", rumqttc::mqttbytes::QoS::AtLeastOnce));
        let msg = msg_no(3, 7);
        let (m, digest) = w.send(0, msg, "say \"hi\"");
        let v4::Packet::Publish(p) = sent_v4(m) else { panic!("PUBLISH") };
        assert_eq!((p.topic.as_str(), p.qos, p.dup), ("chat/room-1", rumqttc::mqttbytes::QoS::AtLeastOnce, false));
        let body: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
        assert_eq!(body, serde_json::json!({"id": wire_id(msg), "text": "say \"hi\""}));
        assert_eq!(digest, BodyDigest::of("say \"hi\"".as_bytes()));
        // The answers, several in one frame.
        let answers = w.read(&frame_v4(&[
            v4::Packet::ConnAck(v4::ConnAck::new(v4::ConnectReturnCode::Success, false)),
            v4::Packet::SubAck(v4::SubAck::new(s.pkid, vec![v4::SubscribeReasonCode::Success(rumqttc::mqttbytes::QoS::AtLeastOnce)])),
            v4::Packet::PubAck(v4::PubAck::new(p.pkid)),
        ]));
        assert_eq!(
            answers,
            vec![
                Incoming::Connected { heartbeat: Some(Duration::from_secs(15)) },
                Incoming::Subscribed { slot: Some(1), head: 0 },
                Incoming::Ack { msg, seq: 0 },
            ]
        );
        assert!(matches!(sent_v4(w.heartbeat().expect("keep-alive")), v4::Packet::PingReq));
    }

    #[test]
    fn a_qos1_delivery_is_acknowledged_and_read_for_its_room_id_and_text() {
        let w = mqtt(qos(1));
        let msg = msg_no(9, 1);
        let payload = format!(r#"{{"id":"{}","text":"hey"}}"#, wire_id(msg));
        let got = w.read(&frame_v4(&[publish_v4("chat/room-2", rumqttc::mqttbytes::QoS::AtLeastOnce, 5, &payload)]));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(reply(&got[0]), v4::Packet::PubAck(a) if a.pkid == 5));
        let delivered = |slot, label| {
            Incoming::Msg(Delivered { msg: Some(msg), seq: 0, slot, label, body: Some(BodyDigest::of(b"hey")), message_id: 0 })
        };
        assert_eq!(got[1], delivered(1, Label::Ok));
        let other = w.read(&frame_v4(&[publish_v4("elsewhere/room-2", rumqttc::mqttbytes::QoS::AtMostOnce, 0, &payload)]));
        assert_eq!(other, vec![delivered(0, Label::UnknownRoom)], "a topic outside the template names no room of ours");
    }

    #[test]
    fn qos2_is_exactly_once_on_both_sides() {
        let w = mqtt(qos(2));
        let msg = msg_no(3, 1);
        let (first, _) = w.send(0, msg, "a");
        let v4::Packet::Publish(p) = sent_v4(first) else { panic!("PUBLISH") };
        // Resent before any answer: the same packet id, DUP set.
        let v4::Packet::Publish(again) = sent_v4(w.send(0, msg, "a").0) else { panic!("PUBLISH") };
        assert_eq!((again.pkid, again.dup), (p.pkid, true));
        let rec = w.read(&frame_v4(&[v4::Packet::PubRec(v4::PubRec::new(p.pkid))]));
        assert!(matches!(reply(&rec[0]), v4::Packet::PubRel(r) if r.pkid == p.pkid), "PUBREC is answered by PUBREL");
        // Resent after PUBREC: its PUBREL goes, not the message again.
        assert!(matches!(sent_v4(w.send(0, msg, "a").0), v4::Packet::PubRel(r) if r.pkid == p.pkid));
        assert_eq!(w.read(&frame_v4(&[v4::Packet::PubComp(v4::PubComp::new(p.pkid))])), vec![Incoming::Ack { msg, seq: 0 }]);
        // A delivery the broker sends again before releasing it is passed on once.
        let payload = format!(r#"{{"id":"{}","text":"x"}}"#, wire_id(msg_no(4, 1)));
        let publish = frame_v4(&[publish_v4("chat/room-1", rumqttc::mqttbytes::QoS::ExactlyOnce, 9, &payload)]);
        let once = w.read(&publish);
        assert!(matches!(reply(&once[0]), v4::Packet::PubRec(r) if r.pkid == 9));
        assert!(matches!(once[1], Incoming::Msg(_)));
        let twice = w.read(&publish);
        assert_eq!(twice.len(), 1, "acknowledged again, not delivered again: {twice:?}");
        let rel = w.read(&frame_v4(&[v4::Packet::PubRel(v4::PubRel::new(9))]));
        assert!(matches!(reply(&rel[0]), v4::Packet::PubComp(c) if c.pkid == 9));
        assert_eq!(w.read(&publish).len(), 2, "released: the id may carry a new message");
    }

    #[test]
    fn refusals_and_broken_frames_are_errors_not_guesses() {
        let w = mqtt(qos(1));
        let refused = w.read(&frame_v4(&[v4::Packet::ConnAck(v4::ConnAck::new(v4::ConnectReturnCode::NotAuthorized, false))]));
        assert!(matches!(&refused[..], [Incoming::Error { msg: None, slot: None, code }] if code.contains("NotAuthorized")), "{refused:?}");
        let v4::Packet::Subscribe(s) = sent_v4(w.subscribe(0, None, 0)) else { panic!("SUBSCRIBE") };
        let failed = w.read(&frame_v4(&[v4::Packet::SubAck(v4::SubAck::new(s.pkid, vec![v4::SubscribeReasonCode::Failure]))]));
        assert_eq!(failed, vec![Incoming::Error { msg: None, slot: Some(0), code: "SUBACK Failure".into() }]);
        // A packet split over frames (aedes writes its header first) is read once whole.
        let whole = frame_v4(&[publish_v4("chat/room-1", rumqttc::mqttbytes::QoS::AtMostOnce, 0, "{}")]).into_data();
        assert_eq!(w.read(&Message::binary(whole.slice(..1))), vec![]);
        assert_eq!(w.read(&Message::binary(whole.slice(1..whole.len() - 1))), vec![]);
        let rest = w.read(&Message::binary(whole.slice(whole.len() - 1..)));
        assert!(matches!(&rest[..], [Incoming::Msg(d)] if d.slot == 0 && d.msg.is_none()), "{rest:?}");
        let junk = w.read(&Message::binary(vec![0xf0, 0x00]));
        assert!(matches!(&junk[..], [Incoming::Error { code, .. }] if code.contains("malformed")), "{junk:?}");
    }

    #[test]
    fn mqtt_5_carries_the_session_expiry_and_reads_reason_codes() {
        let settings = MqttSettings {
            version: MqttVersion::V5,
            clean_session: false,
            session_expiry: Some(HumanDuration(Duration::from_secs(60))),
            ..qos(1)
        };
        let w = mqtt(settings);
        let hello = w.hello("h").expect("CONNECT").into_data();
        let v5::Packet::Connect(c, _, _) = v5::Packet::read(&mut BytesMut::from(&hello[..]), None).unwrap() else { panic!("CONNECT") };
        assert!(!c.clean_start);
        assert_eq!(c.properties.and_then(|p| p.session_expiry_interval), Some(60));
        let msg = msg_no(3, 2);
        let published = w.send(1, msg, "x").0.into_data();
        let v5::Packet::Publish(p) = v5::Packet::read(&mut BytesMut::from(&published[..]), None).unwrap() else { panic!("PUBLISH") };
        let mut buf = BytesMut::new();
        let nack = v5::PubAck { pkid: p.pkid, reason: v5::PubAckReason::NotAuthorized, properties: None };
        v5::Packet::PubAck(nack).write(&mut buf, None).unwrap();
        let got = w.read(&Message::binary(buf.freeze()));
        assert!(matches!(&got[..], [Incoming::Error { msg: Some(m), code, .. }] if *m == msg && code.contains("NotAuthorized")), "{got:?}");
    }

    #[test]
    fn declarations_that_cannot_work_are_refused() {
        let asked = Demands {
            rooms_per_client: 1,
            churn: false,
            acks: true,
            seq: false,
            reference_history: false,
            reference_server: false,
            pure_senders: false,
        };
        let why = |s: MqttSettings, asked: Demands| s.validate(&asked).err().map(|p| (p.key, p.why));
        assert_eq!(why(qos(1), asked), None);
        assert_eq!(why(qos(0), Demands { acks: false, ..asked }), None);
        let refused = [
            (qos(3), asked, Some("qos"), "not a QoS"),
            (qos(0), asked, Some("qos"), "guarantees.ack: none"),
            (qos(1), Demands { acks: false, ..asked }, Some("qos"), "guarantees.ack: receipt"),
            (MqttSettings { topic: "chat".into(), ..qos(1) }, asked, Some("topic"), "no {room}"),
            (MqttSettings { topic: "chat/+/{room}".into(), ..qos(1) }, asked, Some("topic"), "wildcards"),
            (MqttSettings { payload: r#"{"text":"{text}"}"#.into(), ..qos(1) }, asked, Some("id"), "has no {id}"),
            (
                MqttSettings { session_expiry: Some(HumanDuration(Duration::from_secs(1))), ..qos(1) },
                asked,
                Some("session_expiry"),
                "3.1.1",
            ),
            (MqttSettings { version: MqttVersion::V5, clean_session: false, ..qos(1) }, asked, Some("session_expiry"), "expiry"),
            (qos(1), Demands { seq: true, ..asked }, None, "per-room seq"),
            (qos(1), Demands { reference_server: true, ..asked }, None, "does not speak MQTT"),
            (qos(1), Demands { reference_history: true, ..asked }, None, "history: none"),
        ];
        for (settings, asked, key, want) in refused {
            let (got_key, got) = why(settings, asked).expect("refused");
            assert!(got_key == key && got.contains(want), "{want}: {got_key:?} {got}");
        }
    }

    /// A persistent session the broker kept (CONNACK session present)
    /// holds the subscriptions it confirmed: they are not asked for again;
    /// a broker that kept none, a clean session, or a room left, is.
    #[test]
    fn a_kept_session_keeps_its_subscriptions() {
        let connack = |present: bool| frame_v4(&[v4::Packet::ConnAck(v4::ConnAck::new(v4::ConnectReturnCode::Success, present))]);
        let suback = |pkid: u16| {
            frame_v4(&[v4::Packet::SubAck(v4::SubAck::new(
                pkid,
                vec![v4::SubscribeReasonCode::Success(rumqttc::mqttbytes::QoS::ExactlyOnce)],
            ))])
        };
        let subscribe = |w: &Wire, slot: usize| {
            let v4::Packet::Subscribe(s) = sent_v4(w.subscribe(slot, None, 0)) else { panic!("SUBSCRIBE") };
            w.read(&suback(s.pkid));
        };
        let w = mqtt(MqttSettings { clean_session: false, ..qos(2) });
        w.hello("h");
        w.read(&connack(false));
        assert!(!w.session_keeps(0), "nothing subscribed yet");
        subscribe(&w, 0);
        subscribe(&w, 1);
        w.hello("h");
        w.read(&connack(true));
        assert!(w.session_keeps(0) && w.session_keeps(1), "the broker kept both");
        w.unsubscribe(1, 0);
        w.hello("h");
        w.read(&connack(true));
        assert!(w.session_keeps(0) && !w.session_keeps(1), "a room left is joined again");
        w.hello("h");
        w.read(&connack(false));
        assert!(!w.session_keeps(0), "a broker that kept no session has no subscriptions");
        // A clean session never keeps anything, whatever the broker says.
        let clean = mqtt(qos(2));
        clean.hello("h");
        clean.read(&connack(false));
        subscribe(&clean, 0);
        clean.hello("h");
        clean.read(&connack(true));
        assert!(!clean.session_keeps(0));
    }
}
