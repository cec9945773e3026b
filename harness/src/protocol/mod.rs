//! Protocols: what a client says on a connection and what the server's
//! frames mean, one file per protocol. Each file owns its declaration (the
//! `system.<protocol>` section of a scenario, its defaults and the checks it
//! gets when the scenario is read) and its adapter (the [`Speak`] trait).
//! The connection loop (`client`) and the scenario model sit on top of this
//! module; it knows neither.
//!
//! Adding a protocol: one file beside these, implementing [`Declaration`]
//! and [`Speak`]; a variant in [`Protocol`] and in [`Declared`] (with its
//! arm in [`Declared::declaration`]); its section key in the scenario's
//! `SystemFile` and `System::try_from`.
//!
//! - [`v1`]: chatbench protocol v1 (server/PROTOCOL.md), nothing to declare.
//! - [`stomp`]: STOMP 1.2 over WebSocket.
//! - [`json_frames`]: a team's own JSON frames, declared as templates and matchers.
//! - [`socketio`]: Socket.IO v5 over Engine.IO v4.
//! - [`mqtt`]: MQTT 3.1.1 and 5 over WebSocket, QoS 0, 1 and 2.
//! - [`graphql_ws`]: GraphQL subscriptions and mutations over `graphql-transport-ws`.

pub(crate) mod graphql_ws;
mod incoming;
mod json_doc;
pub(crate) mod json_frames;
pub(crate) mod mqtt;
pub(crate) mod socketio;
pub(crate) mod stomp;
mod template;
pub(crate) mod v1;

pub use graphql_ws::{GraphqlDelivery, GraphqlWsSettings};
pub(crate) use incoming::{Delivered, Incoming, Rooms};
pub use json_doc::JsonId;
pub(crate) use json_doc::{IdReader, json_path, unfold};
pub use json_frames::{FrameConfirm, FrameKind, FrameMatcher, JsonFrames};
pub use mqtt::{MqttSettings, MqttVersion};
pub use socketio::{SocketIoDelivery, SocketIoEmit, SocketIoSettings};
pub use stomp::{IdLocation, StompSettings, Subscribed, TextLocation};
pub(crate) use template::fill_credentials;

use crate::message::{BodyDigest, MsgNo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The protocol a scenario names (`system.protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Protocol {
    /// chatbench protocol v1 (server/PROTOCOL.md).
    #[default]
    #[serde(rename = "json")]
    Json,
    /// STOMP 1.2 over WebSocket.
    #[serde(rename = "stomp")]
    Stomp,
    /// JSON frames of the team's own shapes, declared in `json_frames`:
    /// templates for what clients send, matchers for what they receive.
    #[serde(rename = "json_frames")]
    JsonFrames,
    /// Socket.IO v5 over Engine.IO v4, WebSocket transport, declared in
    /// `socketio` (events for join, leave, send and delivery).
    #[serde(rename = "socketio")]
    SocketIo,
    /// MQTT 3.1.1 or 5 over WebSocket, declared in `mqtt` (a topic per
    /// room, the QoS as the guarantee).
    #[serde(rename = "mqtt")]
    Mqtt,
    /// GraphQL over WebSocket (`graphql-transport-ws`), declared in
    /// `graphql_ws` (a subscription per room, a mutation per send).
    #[serde(rename = "graphql_ws")]
    GraphqlWs,
}

impl Protocol {
    /// Its name in scenarios, traces and reports; also the key of its
    /// section under `system`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Json => "json",
            Protocol::Stomp => "stomp",
            Protocol::JsonFrames => "json_frames",
            Protocol::SocketIo => "socketio",
            Protocol::Mqtt => "mqtt",
            Protocol::GraphqlWs => "graphql_ws",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protocol a system speaks, with its declaration.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant, reason = "one per scenario, read once per client: never on a hot path")]
pub enum Declared {
    Json(v1::V1),
    Stomp(StompSettings),
    JsonFrames(JsonFrames),
    SocketIo(SocketIoSettings),
    Mqtt(MqttSettings),
    GraphqlWs(GraphqlWsSettings),
}

impl Default for Declared {
    fn default() -> Self {
        Declared::Json(v1::V1)
    }
}

impl Declared {
    pub fn protocol(&self) -> Protocol {
        match self {
            Declared::Json(_) => Protocol::Json,
            Declared::Stomp(_) => Protocol::Stomp,
            Declared::JsonFrames(_) => Protocol::JsonFrames,
            Declared::SocketIo(_) => Protocol::SocketIo,
            Declared::Mqtt(_) => Protocol::Mqtt,
            Declared::GraphqlWs(_) => Protocol::GraphqlWs,
        }
    }

    pub(crate) fn declaration(&self) -> &dyn Declaration {
        match self {
            Declared::Json(d) => d,
            Declared::Stomp(d) => d,
            Declared::JsonFrames(d) => d,
            Declared::SocketIo(d) => d,
            Declared::Mqtt(d) => d,
            Declared::GraphqlWs(d) => d,
        }
    }

    /// The key of its section under `system`, where it has one.
    pub(crate) fn section(&self) -> Option<&'static str> {
        self.declaration().has_section().then(|| self.protocol().as_str())
    }

    /// The WebSocket path on nodes the harness starts.
    pub(crate) fn path(&self) -> &str {
        self.declaration().path()
    }

    /// Whether the declaration can do what the scenario asks of it.
    pub(crate) fn validate(&self, asked: &Demands) -> Result<(), Problem> {
        self.declaration().validate(asked)
    }

    /// A client's way of speaking it, with its room names (home first).
    pub(crate) fn wire(&self, who: &Who<'_>, promises: Promises, rooms: Vec<String>) -> Wire {
        let rooms = Rooms::new(rooms);
        Wire { speaks: self.declaration().speaker(who, promises, &rooms), rooms }
    }
}

/// What each protocol's declaration does.
pub(crate) trait Declaration {
    /// It has a section of its own under `system` (v1 has nothing to declare).
    fn has_section(&self) -> bool {
        true
    }
    /// The WebSocket path on nodes the harness starts.
    fn path(&self) -> &str;
    /// Whether it can do what the scenario asks (templates that are JSON,
    /// ids the harness can find, the acks and seqs the guarantees rely on).
    fn validate(&self, asked: &Demands) -> Result<(), Problem>;
    /// The adapter one client speaks it with.
    fn speaker(&self, who: &Who<'_>, promises: Promises, rooms: &Rooms) -> Box<dyn Speak>;
}

/// What a protocol does on one client's connection. Messages are built for
/// a room slot (the client's `rooms`, home first) and read against them.
pub(crate) trait Speak: fmt::Debug + Send + Sync {
    /// The first message of a session (STOMP `CONNECT`), if the protocol has one.
    fn hello(&self, _host: &str) -> Option<Message> {
        None
    }
    /// Whether the first message is answered before anything else may be
    /// sent (STOMP CONNECTED, Socket.IO CONNECT, a declared `connected`).
    fn hello_answered(&self) -> bool {
        true
    }
    /// What a refused hello is called in a client's report.
    fn hello_refused(&self, code: &str) -> String {
        format!("the session's CONNECT was refused: {code}")
    }
    /// `Sec-WebSocket-Protocol` on the upgrade.
    fn subprotocols(&self) -> Option<&str> {
        None
    }
    /// Query parameters the protocol needs on the upgrade URL (Engine.IO's).
    fn upgrade_query(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// An error frame ends the session (STOMP closes after `ERROR`).
    fn error_ends_session(&self) -> bool {
        false
    }
    fn join(&self, rooms: &Rooms, slot: usize, after: Option<u64>, attempt: u64) -> Message;
    fn leave(&self, rooms: &Rooms, slot: usize, attempt: u64) -> Message;
    /// A send of `text` to a room slot, and the digest of what every
    /// subscriber must receive.
    fn send(&self, rooms: &Rooms, slot: usize, msg: MsgNo, text: &str) -> (Message, BodyDigest);
    /// A client heart-beat, for protocols that have them.
    fn heartbeat(&self) -> Option<Message> {
        None
    }
    /// How often the client beats when the server's hello does not say
    /// (a declared interval).
    fn heartbeat_every(&self) -> Option<Duration> {
        None
    }
    /// The last heartbeat is still unanswered where answers are promised:
    /// the connection is taken for dead.
    fn heartbeat_unanswered(&self) -> bool {
        false
    }
    /// How long after a join or leave it counts as done, for a server
    /// that confirms neither (None: wait for its confirmation).
    fn done_after(&self) -> Option<Duration> {
        None
    }
    /// After a reconnect: the server kept this room's subscription (an
    /// MQTT session present), so the connection's answer confirmed it and
    /// no join is sent.
    fn session_keeps(&self, _slot: usize) -> bool {
        false
    }
    /// The server takes a send only in a room the connection joined: a
    /// client sends nothing into a room while it is away from it.
    fn sends_need_join(&self) -> bool {
        false
    }
    /// A join can resume after a seq (`after`): only then does a client
    /// that saw a room's seq ask for what it missed.
    fn resumes(&self) -> bool {
        false
    }
    /// The same for a leave, where it differs from a join.
    fn leave_done_after(&self) -> Option<Duration> {
        self.done_after()
    }
    /// What a text or binary server message means: one [`Incoming`] per
    /// packet or record in it, in order, pushed onto `out`.
    fn read(&self, rooms: &Rooms, bytes: &[u8], out: &mut Vec<Incoming>);
}

/// Who a client is, for the templates its protocol fills.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Who<'a> {
    pub client: u32,
    /// Its token (`token_command`'s line, or the one the harness minted).
    pub token: &'a str,
    /// STOMP CONNECT headers (templates).
    pub connect_headers: &'a BTreeMap<String, String>,
}

/// What the system promises that changes what a client says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Promises {
    /// Sends are answered (not `ack: none`).
    pub acks: bool,
    /// Connection state recovery (`history: recovery`).
    pub recovery: bool,
}

/// What a scenario asks of its protocol, for [`Declaration::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Demands {
    pub rooms_per_client: u32,
    /// Clients leave and rejoin rooms (`workload.churn`).
    pub churn: bool,
    /// Sends are answered (not `ack: none`).
    pub acks: bool,
    /// A gap-free per-room seq (`order: seq`).
    pub seq: bool,
    /// History in the reference layout (`history: reference`).
    pub reference_history: bool,
    /// The reference server runs (no `system.command`, no `system.external`).
    pub reference_server: bool,
    /// Some clients send without joining the room (`senders_per_room`).
    pub pure_senders: bool,
}

/// What is wrong with a declaration: `key` inside its section, if one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub key: Option<&'static str>,
    pub why: String,
}

impl Problem {
    pub(crate) fn at(key: &'static str, why: impl Into<String>) -> Self {
        Problem { key: Some(key), why: why.into() }
    }
}

impl From<String> for Problem {
    fn from(why: String) -> Self {
        Problem { key: None, why }
    }
}

impl From<&str> for Problem {
    fn from(why: &str) -> Self {
        Problem { key: None, why: why.to_owned() }
    }
}

/// Everything a client needs to speak its protocol, for one client.
#[derive(Debug)]
pub(crate) struct Wire {
    speaks: Box<dyn Speak>,
    rooms: Rooms,
}

impl Wire {
    pub(crate) fn hello(&self, host: &str) -> Option<Message> {
        self.speaks.hello(host)
    }

    pub(crate) fn hello_answered(&self) -> bool {
        self.speaks.hello_answered()
    }

    pub(crate) fn hello_refused(&self, code: &str) -> String {
        self.speaks.hello_refused(code)
    }

    pub(crate) fn subprotocols(&self) -> Option<&str> {
        self.speaks.subprotocols()
    }

    pub(crate) fn upgrade_query(&self) -> &'static [(&'static str, &'static str)] {
        self.speaks.upgrade_query()
    }

    pub(crate) fn error_ends_session(&self) -> bool {
        self.speaks.error_ends_session()
    }

    pub(crate) fn subscribe(&self, slot: usize, after: Option<u64>, attempt: u64) -> Message {
        self.speaks.join(&self.rooms, slot, after, attempt)
    }

    pub(crate) fn unsubscribe(&self, slot: usize, attempt: u64) -> Message {
        self.speaks.leave(&self.rooms, slot, attempt)
    }

    pub(crate) fn send(&self, slot: usize, msg: MsgNo, text: &str) -> (Message, BodyDigest) {
        self.speaks.send(&self.rooms, slot, msg, text)
    }

    pub(crate) fn heartbeat(&self) -> Option<Message> {
        self.speaks.heartbeat()
    }

    pub(crate) fn heartbeat_every(&self) -> Option<Duration> {
        self.speaks.heartbeat_every()
    }

    pub(crate) fn heartbeat_unanswered(&self) -> bool {
        self.speaks.heartbeat_unanswered()
    }

    pub(crate) fn done_after(&self) -> Option<Duration> {
        self.speaks.done_after()
    }

    pub(crate) fn resumes(&self) -> bool {
        self.speaks.resumes()
    }

    pub(crate) fn session_keeps(&self, slot: usize) -> bool {
        self.speaks.session_keeps(slot)
    }

    pub(crate) fn sends_need_join(&self) -> bool {
        self.speaks.sends_need_join()
    }

    pub(crate) fn leave_done_after(&self) -> Option<Duration> {
        self.speaks.leave_done_after()
    }

    /// What a server message means, pushed onto `out` (a frame may carry
    /// several packets or records; a control frame carries none).
    pub(crate) fn read_into(&self, message: &Message, out: &mut Vec<Incoming>) {
        let bytes: &[u8] = match message {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
            _ => return,
        };
        let from = out.len();
        self.speaks.read(&self.rooms, bytes, out);
        for incoming in &mut out[from..] {
            self.rooms.keep_in_range(incoming);
        }
    }

    /// Everything a server message means (not for the hot path: it allocates).
    pub(crate) fn read(&self, message: &Message) -> Vec<Incoming> {
        let mut out = Vec::new();
        self.read_into(message, &mut out);
        out
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A client's [`Wire`] for adapter tests.
    use super::*;

    pub(crate) fn wire(declared: &Declared, acks: bool, rooms: &[&str], token: &str) -> Wire {
        let headers = BTreeMap::new();
        let who = Who { client: 3, token, connect_headers: &headers };
        declared.wire(&who, Promises { acks, recovery: false }, rooms.iter().map(|r| r.to_string()).collect())
    }

    impl Wire {
        /// What a message means, which must be one thing.
        pub(crate) fn read_one(&self, message: &Message) -> Incoming {
            let mut all = self.read(message);
            assert_eq!(all.len(), 1, "one message, one meaning: {all:?}");
            all.remove(0)
        }
    }

    pub(crate) fn text(m: Message) -> String {
        m.into_text().expect("a text frame").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::wire;
    use super::*;
    use crate::message::Label;

    /// A speaker that names whatever slots it is told to, as a hostile
    /// server can make an adapter do (a Socket.IO ack id, a GraphQL
    /// operation id it echoes back changed).
    #[derive(Debug)]
    struct Names(usize);

    impl Speak for Names {
        fn join(&self, _: &Rooms, _: usize, _: Option<u64>, _: u64) -> Message {
            Message::text("")
        }
        fn leave(&self, _: &Rooms, _: usize, _: u64) -> Message {
            Message::text("")
        }
        fn send(&self, _: &Rooms, _: usize, _: MsgNo, _: &str) -> (Message, BodyDigest) {
            (Message::text(""), BodyDigest::default())
        }
        fn read(&self, _: &Rooms, _: &[u8], out: &mut Vec<Incoming>) {
            let slot = self.0;
            let delivered = Delivered { msg: None, seq: 0, slot, label: Label::Ok, body: None, message_id: 0 };
            out.extend([
                Incoming::Msg(delivered),
                Incoming::Subscribed { slot: Some(slot), head: 0 },
                Incoming::Unsubscribed { slot: Some(slot) },
                Incoming::Error { msg: None, slot: Some(slot), code: String::new() },
            ]);
        }
    }

    #[test]
    fn a_slot_the_client_does_not_have_is_never_passed_on() {
        let mut w = wire(&Declared::default(), true, &["room-1", "room-2"], "");
        w.speaks = Box::new(Names(7));
        let got = w.read(&Message::text("x"));
        let delivered = Delivered { msg: None, seq: 0, slot: 0, label: Label::UnknownRoom, body: None, message_id: 0 };
        assert_eq!(
            got,
            vec![
                Incoming::Msg(delivered),
                Incoming::Subscribed { slot: None, head: 0 },
                Incoming::Unsubscribed { slot: None },
                Incoming::Error { msg: None, slot: None, code: String::new() },
            ]
        );
        w.speaks = Box::new(Names(1));
        assert!(matches!(w.read(&Message::text("x"))[0], Incoming::Msg(Delivered { slot: 1, label: Label::Ok, .. })), "in range: kept");
    }
}
