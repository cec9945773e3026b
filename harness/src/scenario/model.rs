//! The scenario file's data model: what a run does, deserialized straight
//! from YAML. Every struct denies unknown keys; durations are human strings
//! (`10s`, `250ms`) and become `std::time::Duration` here.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::time::Duration;

pub use crate::duration::HumanDuration;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in reports and result folder names.
    pub name: String,
    /// What the scenario proves.
    #[serde(default)]
    pub description: String,
    pub topology: Topology,
    /// Server fan-out modes to run with the identical workload and seed.
    #[serde(default = "default_modes")]
    pub modes: Vec<Mode>,
    pub workload: Workload,
    /// The nemesis: timed fault actions on nodes, backends and clients.
    #[serde(default)]
    pub faults: Vec<Fault>,
    #[serde(default)]
    pub checks: Checks,
    /// The system under test: the reference server (default) or external
    /// nodes, the wire (protocol v1 JSON, default, or STOMP), credentials,
    /// and the guarantees it declares.
    #[serde(default)]
    pub system: System,
    /// Authorization: what each member's credentials grant, and intruders
    /// that try rooms theirs do not. Checked by `authorization` (every
    /// attempt refused with a definite error) and `routing` (nothing of a
    /// room reaches an intruder).
    #[serde(default)]
    pub auth: Option<Auth>,
}

/// Who may use which room. With the reference server the harness makes
/// a secret, starts every node with `--auth-secret` and mints each
/// client's token (HS256, claims `sub`, `rooms`, `exp`); any other system
/// gets its credentials from `system.credentials.token_command`, run with
/// `{credentials}` = `member`, `other_room`, `expired`, `forged`, `confusable`,
/// `wildcard` or `spelling`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// What a member's credentials grant: `own` (the rooms it joins,
    /// default) or `all`.
    #[serde(default)]
    pub rooms_per_client: RoomGrant,
    /// Clients that are not members of the room they try.
    #[serde(default)]
    pub intruders: Vec<Intruders>,
    /// What every intruder tries, in this order (default: send,
    /// subscribe, resubscribe, history; `resubscribe` is tried on systems
    /// with `seq`, `history` on the reference server's history API, after
    /// the drain).
    #[serde(default = "all_attempts")]
    pub attempts: Vec<Attempt>,
    /// How long a definite answer may take (default 10s): later, or none,
    /// is `unrefused`.
    #[serde(default = "ten_seconds")]
    pub answer_within: HumanDuration,
    /// When an `expiring` intruder's token expires, after sending starts
    /// (default 2s; whole seconds, as JWT `exp` is).
    #[serde(default = "two_seconds")]
    pub expire_after: HumanDuration,
}

fn all_attempts() -> Vec<Attempt> {
    Attempt::ALL.to_vec()
}

/// What an intruder presents (`auth.intruders`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Credential {
    /// Valid credentials for another room (not the one it tries).
    #[default]
    OtherRoom,
    /// Credentials for the room it tries, expired.
    Expired,
    /// Credentials for every room, signed with the wrong key (a wrong password).
    Forged,
    /// No credentials at all.
    None,
    /// Valid credentials for a room whose name is confusable with the one
    /// it tries (see [`confusable_room`]): a proper prefix of it, an
    /// extension of it, it in another case, a proper suffix of it. A
    /// membership check by prefix, by case or by suffix lets it through.
    Confusable,
    /// Valid credentials for another room; it subscribes (and resubscribes)
    /// with a pattern that would cover the room it tries (see
    /// [`wildcard_pattern`]): the broker-style wildcards MQTT, NATS,
    /// RabbitMQ and Redis bring. Send and history are not tried with a
    /// pattern.
    Wildcard,
    /// Valid credentials for another spelling of the room it tries (see
    /// [`room_spelling`]: percent-encoded, with a trailing slash, with a
    /// full-width look-alike, through a dot-segment, in upper case, with a
    /// trailing space), and it tries the room under that spelling:
    /// subscribe, resubscribe, history (not send). A server may refuse the
    /// spelling or take it as a room of its own, which nobody uses; one
    /// that checks the name as written, then decodes or normalises it,
    /// hands it the room: anything of the room that reaches it is a
    /// `leak`.
    Spelling,
    /// A member's credentials for the room it tries, expiring
    /// `auth.expire_after` after sending starts, while its connection is
    /// open: it joins as a member would; from the expiry (plus
    /// [`EXPIRY_GRACE`] for the server to notice) every attempt must be
    /// refused, and nothing of the room sent after the expiry may reach
    /// it. Tokens the harness mints only (the reference server).
    Expiring,
}

/// How long after an `expiring` intruder's token expired the server may
/// still let it be (it checks on a timer): its attempts start then.
pub const EXPIRY_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// What a `wildcard` intruder subscribes to instead of `target`, by
/// `variant` (its client id): `#` (MQTT, RabbitMQ: everything), `*`
/// (RabbitMQ, NATS: one token; a glob), `>` (NATS: everything), `+`
/// (MQTT: one level), and the target's name with its last character
/// replaced by `*` (a glob over its neighbours, as Redis PSUBSCRIBE reads
/// it). The protocol's destination template wraps it (`/topic/#`,
/// `chat/+`).
pub fn wildcard_pattern(target: &str, variant: u32) -> String {
    match variant % 5 {
        0 => "#".to_owned(),
        1 => "*".to_owned(),
        2 => ">".to_owned(),
        3 => "+".to_owned(),
        _ => {
            let mut chars = target.chars();
            chars.next_back();
            format!("{}*", chars.as_str())
        }
    }
}

/// Another spelling of `target`, by `variant` (its client id), that a
/// server which decodes or normalises names reads as `target`: 0 its last
/// character percent-encoded (`room-1%32`), 1 a trailing slash
/// (`room-12/`), 2 its last letter or digit in full width (`room-1２`,
/// which NFKC folds back), 3 a dot-segment path through another name
/// (`room-12-other/../room-12`), 4 upper case (`ROOM-12`; a trailing
/// space where that changes nothing), 5 a trailing space.
pub fn room_spelling(target: &str, variant: u32) -> String {
    let percent = || {
        let mut chars = target.chars();
        let last = chars.next_back().unwrap_or('_');
        let mut utf8 = [0u8; 4];
        let encoded: String = last.encode_utf8(&mut utf8).bytes().map(|b| format!("%{b:02X}")).collect();
        format!("{}{encoded}", chars.as_str())
    };
    match variant % 6 {
        0 => percent(),
        1 => format!("{target}/"),
        2 => match target.char_indices().rev().find(|(_, c)| c.is_ascii_alphanumeric()) {
            // U+FF01..U+FF5E are U+0021..U+007E in full width.
            Some((i, c)) => {
                let wide = char::from_u32(c as u32 + 0xFEE0).unwrap_or(c);
                format!("{}{wide}{}", &target[..i], &target[i + c.len_utf8()..])
            }
            None => percent(),
        },
        3 => format!("{target}-other/../{target}"),
        4 if target.to_uppercase() != target => target.to_uppercase(),
        _ => format!("{target} "),
    }
}

/// The room a `confusable` intruder's credentials grant instead of
/// `target`, by `variant` (its client id): 0 a proper prefix (`room-1`
/// for `room-12`: a `starts_with` check), 1 an extension (`room-120`: the
/// check the other way round), 2 another case (`ROOM-12`), 3 a proper
/// suffix (`oom-12`: an `ends_with` check). Always another name; where a
/// variant cannot differ (a one-character or letterless name) the
/// extension stands in.
pub fn confusable_room(target: &str, variant: u32) -> String {
    let extension = format!("{target}0");
    let mut chars = target.chars();
    let candidate = match variant % 4 {
        0 => {
            chars.next_back();
            chars.as_str().to_owned()
        }
        1 => extension.clone(),
        2 => target
            .chars()
            .map(|c| if c.is_lowercase() { c.to_uppercase().next().unwrap_or(c) } else { c.to_lowercase().next().unwrap_or(c) })
            .collect(),
        _ => {
            chars.next();
            chars.as_str().to_owned()
        }
    };
    if candidate.is_empty() || candidate == target { extension } else { candidate }
}

impl Credential {
    pub const ALL: [Credential; 8] = [
        Credential::OtherRoom,
        Credential::Expired,
        Credential::Forged,
        Credential::None,
        Credential::Confusable,
        Credential::Wildcard,
        Credential::Expiring,
        Credential::Spelling,
    ];

    /// The name scenarios and `token_command`'s `{credentials}` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Credential::OtherRoom => "other_room",
            Credential::Expired => "expired",
            Credential::Forged => "forged",
            Credential::None => "none",
            Credential::Confusable => "confusable",
            Credential::Wildcard => "wildcard",
            Credential::Expiring => "expiring",
            Credential::Spelling => "spelling",
        }
    }
}

/// What an intruder tried (`auth.attempts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Attempt {
    /// Send a message into the room.
    Send,
    /// Subscribe to the room.
    Subscribe,
    /// Subscribe with `after: 0`, as a client resubscribes after a reconnect.
    Resubscribe,
    /// Read the room's history over HTTP (the reference layout), after the sending window.
    History,
}

impl Attempt {
    /// The default order: a subscription that gets through is the last
    /// thing on its connection (STOMP ends a session at its next `ERROR`),
    /// so what it lets through is seen.
    pub const ALL: [Attempt; 4] = [Attempt::Send, Attempt::Subscribe, Attempt::Resubscribe, Attempt::History];

    pub fn as_str(self) -> &'static str {
        match self {
            Attempt::Subscribe => "subscribe",
            Attempt::Resubscribe => "resubscribe",
            Attempt::Send => "send",
            Attempt::History => "history",
        }
    }
}

/// What a member's credentials grant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoomGrant {
    #[default]
    Own,
    All,
}

/// A group of intruders presenting one kind of credentials. Intruder `i`
/// of the run tries room `i mod rooms`, on node `i mod nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Intruders {
    pub credentials: Credential,
    /// How many (default 1).
    #[serde(default = "one")]
    pub count: u32,
}

/// The system under test.
#[derive(Debug, Clone, Default)]
pub struct System {
    /// The wire protocol clients speak, with its declaration.
    pub protocol: Declared,
    pub credentials: Credentials,
    pub command: Option<CommandSystem>,
    pub external: Option<ExternalSystem>,
    pub guarantees: Guarantees,
    pub store: Option<StoreOracle>,
}

impl System {
    /// The WebSocket path clients connect to on nodes the harness starts
    /// (a command speaking protocol v1 names its own).
    pub fn ws_path(&self) -> &str {
        match (&self.protocol, &self.command) {
            (Declared::Json(_), Some(command)) => &command.ws_path,
            (protocol, _) => protocol.path(),
        }
    }
}

// `system` as a scenario file writes it: the protocol's name, and its
// declaration in a section of its own.
/// The system under test.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename = "System")]
struct SystemFile {
    /// The wire protocol clients speak.
    #[serde(default)]
    protocol: Protocol,
    /// STOMP settings (with `protocol: stomp`); the defaults fit the
    /// reference server's `/stomp` endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "StompSettings")]
    stomp: Option<StompSettings>,
    /// The frames of `protocol: json_frames`.
    #[serde(default)]
    json_frames: Option<JsonFrames>,
    /// The events of `protocol: socketio`.
    #[serde(default)]
    socketio: Option<SocketIoSettings>,
    /// The topics and QoS of `protocol: mqtt` (the defaults: `chat/{room}`,
    /// QoS 1, MQTT 3.1.1 on `/mqtt`).
    #[serde(default)]
    mqtt: Option<MqttSettings>,
    /// The subscription and mutation of `protocol: graphql_ws`.
    #[serde(default)]
    graphql_ws: Option<GraphqlWsSettings>,
    /// Per-client credentials on the upgrade and in STOMP CONNECT.
    #[serde(default)]
    credentials: Credentials,
    /// Start each node with this command instead of the reference server
    /// (node faults act on these processes as on the reference server).
    #[serde(default)]
    command: Option<CommandSystem>,
    /// Test nodes that already run instead of starting reference servers:
    /// no lifecycle, no backends; only client faults (`drop_clients`).
    #[serde(default)]
    external: Option<ExternalSystem>,
    /// What the system promises; exactly that is checked (the reference
    /// server promises everything, the default).
    #[serde(default)]
    guarantees: Guarantees,
    /// The system's own MongoDB collection, read back after the run to
    /// resolve every unacked send as stored or not (the *store oracle*):
    /// for servers that send no acks (`ack: none`) or no `seq`, started as
    /// a `system.command` on the harness's MongoDB (`{mongo_uri}`, `{db}`).
    #[serde(default)]
    store: Option<StoreOracle>,
}

/// Separates the key a [`System`] conversion error is about from its
/// message (`parse` puts the key into the error's path).
pub(crate) const KEY_MARK: char = '\u{1e}';

impl TryFrom<SystemFile> for System {
    type Error = String;

    /// One section, the protocol's: a section for another protocol is
    /// refused rather than ignored (a declaration that is never read is a
    /// mistake the user should hear about).
    fn try_from(f: SystemFile) -> Result<Self, String> {
        let stray = |key: &str| format!("{key}{KEY_MARK}{key} is read only with protocol: {key}");
        let missing = |key: &str| format!("protocol{KEY_MARK}protocol: {key} needs a system.{key} declaration");
        if f.stomp.is_some() && f.protocol != Protocol::Stomp {
            return Err(stray("stomp"));
        }
        if f.json_frames.is_some() && f.protocol != Protocol::JsonFrames {
            return Err(stray("json_frames"));
        }
        if f.socketio.is_some() && f.protocol != Protocol::SocketIo {
            return Err(stray("socketio"));
        }
        if f.mqtt.is_some() && f.protocol != Protocol::Mqtt {
            return Err(stray("mqtt"));
        }
        if f.graphql_ws.is_some() && f.protocol != Protocol::GraphqlWs {
            return Err(stray("graphql_ws"));
        }
        let protocol = match f.protocol {
            Protocol::Json => Declared::Json(Default::default()),
            Protocol::Stomp => Declared::Stomp(f.stomp.unwrap_or_default()),
            Protocol::JsonFrames => Declared::JsonFrames(f.json_frames.ok_or_else(|| missing("json_frames"))?),
            Protocol::SocketIo => Declared::SocketIo(f.socketio.ok_or_else(|| missing("socketio"))?),
            Protocol::Mqtt => Declared::Mqtt(f.mqtt.unwrap_or_default()),
            Protocol::GraphqlWs => Declared::GraphqlWs(f.graphql_ws.ok_or_else(|| missing("graphql_ws"))?),
        };
        Ok(System {
            protocol,
            credentials: f.credentials,
            command: f.command,
            external: f.external,
            guarantees: f.guarantees,
            store: f.store,
        })
    }
}

impl From<System> for SystemFile {
    fn from(s: System) -> Self {
        let mut f = SystemFile {
            protocol: s.protocol.protocol(),
            credentials: s.credentials,
            command: s.command,
            external: s.external,
            guarantees: s.guarantees,
            store: s.store,
            ..Default::default()
        };
        match s.protocol {
            Declared::Json(_) => {}
            Declared::Stomp(d) => f.stomp = Some(d),
            Declared::JsonFrames(d) => f.json_frames = Some(d),
            Declared::SocketIo(d) => f.socketio = Some(d),
            Declared::Mqtt(d) => f.mqtt = Some(d),
            Declared::GraphqlWs(d) => f.graphql_ws = Some(d),
        }
        f
    }
}

impl<'de> Deserialize<'de> for System {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        System::try_from(SystemFile::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for System {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SystemFile::from(self.clone()).serialize(s)
    }
}

impl JsonSchema for System {
    fn schema_name() -> Cow<'static, str> {
        SystemFile::schema_name()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        SystemFile::json_schema(generator)
    }
}

/// Where a system stores its messages: one document per message, in
/// `collection` of the run's database, naming its room in `room` and
/// carrying the harness's message id in `id` (a field, or a pattern inside
/// a text field). Read with majority read concern after the run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreOracle {
    /// The collection, e.g. `chat_messages`.
    pub collection: String,
    /// The field holding the room's name (dotted for nested: `group.id`).
    pub room: String,
    /// Where the harness's message id is: `{json: field}` (dotted for
    /// nested) or `{json: field, pattern: REGEX}` (inside a text field;
    /// the first capture group, else the whole match, is the id).
    pub id: JsonId,
}

pub use crate::protocol::JsonId;

/// Nodes started by a command. Placeholders: `{port}` (a free port; the
/// same one after a restart), `{node}` (index), `{mongo_uri}` (through the
/// node's fault proxy when the scenario has network faults), `{db}` (this
/// run's database), `{data_dir}` (a directory for this node's state, the
/// same one after a restart, writable by any user, removed after the
/// run), `{mode}`, in kafka mode `{kafka_bootstrap}` and
/// `{kafka_topic}`, in redis mode `{redis_url}` and in nats mode
/// `{nats_url}` (the broker the harness started, through the node's
/// broker link proxy when the scenario has network faults on it; so
/// `restart_broker` and `pause_broker` act on the system's broker too).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandSystem {
    /// Program and arguments, each a template.
    pub run: Vec<String>,
    /// Extra environment, values are templates.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// When a node is ready.
    #[serde(default)]
    pub ready: Readiness,
    /// WebSocket path clients connect to (protocol json; STOMP uses stomp.path).
    #[serde(default = "default_ws_path")]
    pub ws_path: String,
}

fn default_ws_path() -> String {
    chatbench_wire::paths::WS.into()
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Readiness {
    /// An HTTP GET of this path answers 2xx.
    Http(String),
    /// The port accepts TCP connections.
    #[default]
    Tcp,
    /// The node printed a line containing this (stdout or stderr).
    Log(String),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalSystem {
    /// One WebSocket URL per node, e.g. `ws://10.0.0.5:8080/ws`.
    pub urls: Vec<String>,
}

/// What the system promises. The reference server promises everything.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Guarantees {
    /// `durable`: the ack (RECEIPT) comes after the message is stored;
    /// `receipt`: after it is accepted. Both are judged alike (an acked
    /// message is owed); the declaration is reported. `none`: sends get no
    /// answer (fire-and-forget, e.g. Spring's simple broker): each send is
    /// resolved by `system.store` if declared, else by evidence (see
    /// `checks.confirm_after`).
    #[serde(default)]
    pub ack: AckGuarantee,
    /// `seq`: a gap-free per-room sequence on every message, resumable
    /// with `after`; `per_sender`: each sender's messages arrive in send
    /// order; `total`: every subscriber sees a room in one order; `none`.
    #[serde(default)]
    pub order: OrderGuarantee,
    /// `reference`: the run's MongoDB holds every stored message in the
    /// reference server's schema (`messages`: room, seq, id), which the
    /// harness reads back itself: live = history is checked and unacked
    /// sends are resolved against it. `none` for any other server.
    #[serde(default)]
    pub history: HistoryGuarantee,
    /// A client subscribed to a room gets its own messages there (default
    /// true). `false` for servers that broadcast to everyone but the sender
    /// (Socket.IO's `socket.to(room).emit`): a sender is then never owed
    /// its own messages.
    #[serde(default = "yes")]
    pub echo: bool,
}

fn yes() -> bool {
    true
}

impl Default for Guarantees {
    fn default() -> Self {
        Self { ack: AckGuarantee::Durable, order: OrderGuarantee::Seq, history: HistoryGuarantee::Reference, echo: true }
    }
}

impl Guarantees {
    /// As a report prints it: `ack: none, order: per_sender, history: none`.
    pub fn label(&self) -> String {
        let name = |v: Result<serde_json::Value, serde_json::Error>| v.ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        format!(
            "ack: {}, order: {}, history: {}{}",
            name(serde_json::to_value(self.ack)),
            name(serde_json::to_value(self.order)),
            name(serde_json::to_value(self.history)),
            if self.echo { "" } else { ", echo: false" }
        )
    }

    /// Messages carry a gap-free per-room `seq`, and subscriptions resume.
    pub fn seq(&self) -> bool {
        self.order == OrderGuarantee::Seq
    }

    /// `checks` with what these guarantees do not promise turned off, each
    /// with the reason (printed in every report). Checks a scenario turned
    /// off itself keep its reason.
    /// `store`: the system declares a store oracle, which resolves unacked
    /// sends without history.
    pub fn narrow(&self, checks: &Checks, store: bool) -> Checks {
        let mut c = checks.clone();
        let off = |s: &mut Switch, why: String| {
            if s.is_on() {
                *s = Switch::Off(why);
            }
        };
        if self.ack == AckGuarantee::None {
            off(&mut c.liveness.answered, "declared ack: none (sends get no answer to wait for)".into());
        }
        if !self.history.is_reference() {
            off(&mut c.live_equals_history, "declared history: none (nothing to compare live deliveries with)".into());
        }
        if !self.history.is_reference() && !store {
            off(
                &mut c.liveness.resolved,
                if self.ack == AckGuarantee::None {
                    "declared ack: none without a store (an unanswered send is judged by evidence: delivered to some subscriber, so owed to every covering one; or unconfirmed after confirm_after, so lost)".into()
                } else {
                    "declared history: none (an unacked send is judged by the agreement rule: delivered to every covering subscriber or to none)".into()
                },
            );
        }
        match self.order {
            OrderGuarantee::Seq | OrderGuarantee::Total => {}
            OrderGuarantee::PerSender => {
                off(&mut c.ordering.per_room_total, "declared order: per_sender (no room-wide order promised)".into())
            }
            OrderGuarantee::None => {
                off(&mut c.ordering.per_room_total, "declared order: none".into());
                off(&mut c.ordering.per_sender_fifo, "declared order: none".into());
            }
        }
        c
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AckGuarantee {
    #[default]
    Durable,
    Receipt,
    /// No ack at all (fire-and-forget sends).
    None,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderGuarantee {
    #[default]
    Seq,
    Total,
    PerSender,
    None,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HistoryGuarantee {
    #[default]
    Reference,
    None,
    /// No stored history, but a client that reconnects after a short
    /// disconnection gets what it missed (Socket.IO's connection state
    /// recovery): a subscription lasts across reconnects, so nothing sent
    /// while it was away may be lost.
    Recovery,
}

impl HistoryGuarantee {
    /// The run's MongoDB holds the reference server's history layout.
    pub fn is_reference(self) -> bool {
        self == HistoryGuarantee::Reference
    }
}

pub use crate::protocol::{
    Declared, FrameConfirm, FrameKind, FrameMatcher, GraphqlDelivery, GraphqlWsSettings, IdLocation, JsonFrames, MqttSettings, MqttVersion,
    Protocol, SocketIoDelivery, SocketIoEmit, SocketIoSettings, StompSettings, Subscribed, TextLocation,
};

/// Templates take `{client}` (index), `{room}` and `{token}` (the line
/// `token_command` printed for this client).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// HTTP headers on the WebSocket upgrade, e.g. `Authorization: "Bearer {token}"`.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Query parameters added to the WebSocket URL.
    #[serde(default)]
    pub query: std::collections::BTreeMap<String, String>,
    /// STOMP CONNECT headers, e.g. `login`, `passcode`, `Authorization`.
    #[serde(default)]
    pub connect_headers: std::collections::BTreeMap<String, String>,
    /// A command run once per client (`{client}`, `{room}` substituted)
    /// whose first output line is that client's `{token}`.
    #[serde(default)]
    pub token_command: Option<Vec<String>>,
}

fn default_modes() -> Vec<Mode> {
    vec![Mode::Changestream]
}

pub use chatbench_wire::Mode;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Number of chat-server nodes.
    pub nodes: u32,
    #[serde(default)]
    pub mongo: MongoTopology,
    /// The Kafka broker for `kafka` mode.
    #[serde(default)]
    pub kafka: KafkaTopology,
    /// Which provider starts the backends (`--provider` overrides it).
    #[serde(default)]
    pub provider: ProviderChoice,
    /// Extra `chat-server` flags for every node, e.g.
    /// `[--change-stream-max-await, 100ms, --mongo-max-pool-size, "20"]`.
    #[serde(default)]
    pub server_args: Vec<String>,
    /// The docker provider's images (`--docker-image KEY=IMAGE` overrides):
    /// `mongo` (default `mongo:8.0`), `kafka` (default `apache/kafka:4.1.0`).
    /// `ci/setup docker` builds local ones: `chatbench-local/nx-27017:0.8.1`,
    /// `chatbench-local/tansu:0.6.0`.
    #[serde(default, skip_serializing_if = "DockerImages::is_empty")]
    pub images: DockerImages,
    /// Where the reference server's nodes run: `processes` on this machine
    /// (default), or `containers` on the run's Docker network beside the
    /// MongoDB container (docker provider; image `images.server`, default
    /// `chatbench-local/chat-server:dev`), so `partition` can cut a node
    /// from MongoDB. Changestream mode only for now.
    #[serde(default)]
    pub nodes_in: NodesIn,
}

/// The images a run uses, where not the defaults (CLI over scenario).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerImages {
    /// MongoDB, e.g. `chatbench-local/nx-27017:0.8.1` (default `mongo:8.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mongo: Option<String>,
    /// Kafka, e.g. `chatbench-local/tansu:0.6.0` (default `apache/kafka:4.1.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<String>,
    /// The chat server for nodes in containers (default `chatbench-local/chat-server:dev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Redis for `--mode redis` (default `chatbench-local/redis:7.0.15`, Debian's package).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// NATS for `--mode nats` (default `chatbench-local/nats:2.9.10`, Debian's package).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<String>,
}

impl DockerImages {
    pub fn is_empty(&self) -> bool {
        self == &DockerImages::default()
    }

    /// `mongo=IMAGE`, `kafka=IMAGE`, `server=IMAGE`, `redis=IMAGE` or
    /// `nats=IMAGE` (the `--docker-image` flag).
    pub fn set(&mut self, spec: &str) -> anyhow::Result<()> {
        let (key, image) = spec.split_once('=').ok_or_else(|| anyhow::anyhow!("--docker-image {spec:?}: expected KEY=IMAGE"))?;
        if image.is_empty() || image.contains(char::is_whitespace) {
            return Err(anyhow::anyhow!("--docker-image {spec:?}: {image:?} is not an image name"));
        }
        let slot = match key {
            "mongo" => &mut self.mongo,
            "kafka" => &mut self.kafka,
            "server" => &mut self.server,
            "redis" => &mut self.redis,
            "nats" => &mut self.nats,
            other => return Err(anyhow::anyhow!("--docker-image {spec:?}: unknown key {other:?} (mongo, kafka, server, redis or nats)")),
        };
        *slot = Some(image.to_owned());
        Ok(())
    }

    /// `self`'s images where given, else `fallback`'s.
    pub fn or(&self, fallback: &DockerImages) -> DockerImages {
        DockerImages {
            mongo: self.mongo.clone().or_else(|| fallback.mongo.clone()),
            kafka: self.kafka.clone().or_else(|| fallback.kafka.clone()),
            server: self.server.clone().or_else(|| fallback.server.clone()),
            redis: self.redis.clone().or_else(|| fallback.redis.clone()),
            nats: self.nats.clone().or_else(|| fallback.nats.clone()),
        }
    }
}

/// Where the reference server's nodes run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodesIn {
    #[default]
    Processes,
    Containers,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MongoTopology {
    /// Replica-set members (1 or 3).
    #[serde(default = "one")]
    pub members: u32,
    /// Connection string, required with `provider: external`.
    #[serde(default)]
    pub uri: Option<String>,
    /// Extra `mongod` flags, e.g. `[--journalCommitInterval, "10"]` (the
    /// process provider only; the others refuse rather than ignore them).
    #[serde(default)]
    pub server_args: Vec<String>,
}

impl Default for MongoTopology {
    fn default() -> Self {
        Self { members: 1, uri: None, server_args: Vec::new() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaTopology {
    /// Bootstrap servers, required with `provider: external` in kafka mode.
    #[serde(default)]
    pub bootstrap: Option<String>,
    /// Partitions of the messages topic (keyed by room).
    #[serde(default = "default_partitions")]
    pub partitions: u32,
}

fn default_partitions() -> u32 {
    4
}

impl Default for KafkaTopology {
    fn default() -> Self {
        Self { bootstrap: None, partitions: default_partitions() }
    }
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProviderChoice {
    /// The first provider that works here: docker, process, compat.
    #[default]
    Auto,
    Compat,
    Process,
    Docker,
    External,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub rooms: u32,
    /// How rooms are named: a template with `{n}` (the room's number) and
    /// optionally `{run}` (this run's id, so rooms of an external system
    /// that keeps history are new each run). Default `room-{n}`; e.g.
    /// `"{n}"` for servers whose room ids are numbers.
    #[serde(default = "default_room_names")]
    pub room_names: String,
    /// Connections per room that only subscribe.
    pub subscribers_per_room: u32,
    /// Connections per room that only send.
    pub senders_per_room: u32,
    /// Connections per room that subscribe to their room and send into it,
    /// as real chat clients do (their own messages come back to them).
    #[serde(default)]
    pub chatters_per_room: u32,
    #[serde(default)]
    pub placement: Placement,
    /// Open loop (a fixed total rate) or closed loop (send after ack).
    pub load: Load,
    #[serde(default)]
    pub message_bytes: MessageBytes,
    pub duration: HumanDuration,
    /// Messages scheduled before this point are sent but left out of latency figures.
    #[serde(default = "zero")]
    pub warmup: HumanDuration,
    /// How long to wait after the last send for deliveries to arrive.
    #[serde(default = "default_drain")]
    pub drain_timeout: HumanDuration,
    /// Subscribers that join after the start: catching up with `after`,
    /// or live from the head they are told (`after: head`).
    #[serde(default)]
    pub late_subscribers: Option<LateSubscribers>,
    /// Rooms each connection is in (default 1): a subscriber or chatter
    /// joins its home room and the next `rooms_per_client - 1` rooms on the
    /// same connection, and a sender (or chatter) sends into them in turn.
    #[serde(default = "one")]
    pub rooms_per_client: u32,
    /// Subscribers and chatters that leave a room and join it again while
    /// sending runs, as chat users switch rooms.
    #[serde(default)]
    pub churn: Option<Churn>,
    /// What generated message text looks like: `chat` (default: words,
    /// Hangul, emoji, quotes, backslashes and newlines, exactly
    /// `message_bytes` UTF-8 bytes) or `ascii` (printable ASCII words only,
    /// for a server that takes nothing else; every report says so).
    #[serde(default)]
    pub message_text: MessageText,
    /// How long sending waits for every client to connect (and subscribe);
    /// a client not ready by then is a finding (`not_ready`).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Open loop, with acks: a sender keeps at most this many sends waiting
    /// for their ack; a send due while that many wait is not sent but
    /// *dropped* and counted (k6's `dropped_iterations`, OMB's
    /// `maxPendingMessages`), so past capacity what is achieved stays at the
    /// system's pace instead of every ack going to an ever older backlog.
    /// Default: none (every scheduled send is made, however late its ack).
    #[serde(default)]
    pub max_pending: Option<u32>,
    /// New connections per second, over all of this process's clients:
    /// every connection attempt (the first, and each reconnect) waits for
    /// its turn, so 100,000 clients do not meet the server's accept queue
    /// at once (`somaxconn` is often 4096). Default: none (every client
    /// connects at once). Raise `connect_timeout` to at least
    /// clients / connect_rate; the report gives the connect-time
    /// distribution either way.
    #[serde(default)]
    pub connect_rate: Option<f64>,
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn zero() -> HumanDuration {
    HumanDuration(Duration::ZERO)
}

fn default_drain() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_room_names() -> String {
    "room-{n}".into()
}

impl Workload {
    /// The name of room `n` in run `run`.
    pub fn room_name(&self, n: u32, run: &str) -> String {
        self.room_names.replace("{n}", &n.to_string()).replace("{run}", run)
    }

    /// Client connections the workload opens (all rooms, late ones too).
    pub fn connections(&self) -> u64 {
        self.connections_in(self.rooms)
    }

    /// The client connections of `rooms` of its rooms (a shard's share:
    /// every room has the same clients).
    pub fn connections_in(&self, rooms: u32) -> u64 {
        let late = self.late_subscribers.as_ref().map_or(0, |l| l.per_room);
        u64::from(rooms) * u64::from(self.subscribers_per_room + self.senders_per_room + self.chatters_per_room + late)
    }

    /// Whether pinned placement names a node index that `nodes` lacks.
    pub fn placement_needs_more_nodes(&self, nodes: u32) -> bool {
        match &self.placement {
            Placement::Pinned { senders, subscribers } => senders.iter().chain(subscribers).any(|&n| n >= nodes),
            _ => false,
        }
    }
}

/// Where client connections go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Placement {
    /// Connection i goes to node i mod nodes (senders and subscribers interleaved).
    #[default]
    RoundRobin,
    /// Each connection picks a node at random from the seed.
    Random,
    /// Senders go to the listed nodes, subscribers to theirs (each cycled).
    Pinned { senders: Vec<u32>, subscribers: Vec<u32> },
    /// Every client of room `r` on node `r mod nodes` (sticky rooms, as a
    /// load balancer hashing the room would place them): each room is
    /// written from one node, so nodes never race for a room's `seq`.
    ByRoom,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Load {
    /// Open loop: messages/s in total over all senders, on a fixed schedule.
    /// Latency counts from the scheduled send time (no coordinated omission).
    Open { rate_per_s: f64 },
    /// Closed loop: each sender keeps `in_flight` unacked sends outstanding.
    /// Latency then counts from the actual send (a stalled server slows the
    /// senders down: coordinated omission by design); reports say so.
    Closed { in_flight: u32 },
}

impl Load {
    /// How the load is described in every report; a closed loop says that
    /// its latency is measured from the actual send.
    pub fn label(&self) -> String {
        match self {
            Load::Open { rate_per_s } => format!("open loop, {rate_per_s} msgs/s"),
            Load::Closed { in_flight } => {
                format!("closed loop, {in_flight} in flight (latency from the actual send: coordinated omission)")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum MessageBytes {
    Fixed(u32),
    Range { min: u32, max: u32 },
}

impl Default for MessageBytes {
    fn default() -> Self {
        MessageBytes::Fixed(64)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LateSubscribers {
    /// Late subscribers per room.
    pub per_room: u32,
    /// When they join, from the start of the workload.
    pub join_at: HumanDuration,
    /// They subscribe with `after: N` (0 = replay the whole room), or with
    /// `after: head`: no `after`, live from the head the server tells them
    /// (owed exactly what follows it).
    #[serde(default)]
    pub after: LateStart,
}

/// Where a late subscriber starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum LateStart {
    /// `after: N`.
    After(u64),
    /// `after: head`.
    Head(HeadKeyword),
}

impl Default for LateStart {
    fn default() -> Self {
        LateStart::After(0)
    }
}

impl LateStart {
    /// The `after` of the first subscribe (None: live from the head).
    pub fn after(self) -> Option<u64> {
        match self {
            LateStart::After(n) => Some(n),
            LateStart::Head(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HeadKeyword {
    Head,
}

/// Leaving and rejoining rooms while sending runs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// How often each subscriber considers leaving one of its rooms.
    pub every: HumanDuration,
    /// The chance (0..1) that it does, each time.
    pub share: f64,
    /// How long it stays away before joining again (default 500ms).
    #[serde(default = "half_a_second")]
    pub away: HumanDuration,
    /// How it joins again: `after` (resume after the last `seq` it saw:
    /// owed everything it missed), `head` (live from the new head: owed
    /// only what follows), or `either` (picked from the seed each time,
    /// the default). Systems without `seq` always rejoin at the head.
    #[serde(default)]
    pub rejoin: Rejoin,
}

fn half_a_second() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Rejoin {
    After,
    Head,
    #[default]
    Either,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageText {
    /// Realistic chat text: multi-byte UTF-8 (Hangul, emoji) and
    /// JSON-special characters (quotes, backslash, newline).
    #[default]
    Chat,
    /// Printable ASCII words only.
    Ascii,
}

impl MessageText {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageText::Chat => "chat (UTF-8: Hangul, emoji, quotes, backslashes, newlines)",
            MessageText::Ascii => "ascii (declared: the system takes printable ASCII only)",
        }
    }
}

/// A timed fault (Jepsen's nemesis): an action at a time from the start of
/// sending, optionally repeated.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub at: HumanDuration,
    /// Repeat this often after `at` (while the workload sends).
    #[serde(default)]
    pub every: Option<HumanDuration>,
    /// With `every`: how many times in all (default: as often as fits).
    #[serde(default)]
    pub times: Option<u32>,
    pub action: FaultAction,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultAction {
    /// SIGKILL a node; restart it on the same address after `restart_after` if given.
    KillNode {
        node: u32,
        #[serde(default)]
        restart_after: Option<HumanDuration>,
    },
    /// SIGTERM a node (graceful: closes sockets with 1001); restart after `restart_after` if given.
    StopNode {
        node: u32,
        #[serde(default)]
        restart_after: Option<HumanDuration>,
    },
    /// SIGSTOP a node for `duration`, then SIGCONT.
    PauseNode { node: u32, duration: HumanDuration },
    /// SIGCONT a node paused without a duration.
    ResumeNode { node: u32 },
    /// SIGKILL a node and start it again on the same address after `down_for`.
    RestartNode {
        node: u32,
        #[serde(default = "zero")]
        down_for: HumanDuration,
    },
    /// Stop MongoDB and start it again on the same data after `down_for`.
    RestartMongo {
        #[serde(default = "zero")]
        down_for: HumanDuration,
    },
    /// Stop the Kafka broker and start it again on the same data after
    /// `down_for` (kafka mode only; skipped in changestream mode, which has
    /// no Kafka).
    RestartKafka {
        #[serde(default = "zero")]
        down_for: HumanDuration,
    },
    /// Stop the mode's broker (Kafka, Redis or NATS) and start it again on
    /// the same port and data after `down_for`: one fault for whichever
    /// broker the mode uses (skipped in changestream mode, which has none).
    RestartBroker {
        #[serde(default = "zero")]
        down_for: HumanDuration,
    },
    /// SIGSTOP the mode's broker (Kafka, Redis or NATS) for `duration`,
    /// then SIGCONT (a container: `docker pause`): it keeps its
    /// connections but answers nothing (skipped in changestream mode).
    PauseBroker { duration: HumanDuration },
    /// Close this share (0..1) of all client connections at once; they reconnect.
    DropClients { share: f64 },
    /// Degrade node `node`'s link to MongoDB (or, with `link: kafka`, to
    /// Kafka, kafka mode only; with `link: broker`, to the mode's broker;
    /// or with `link: clients`, the clients' WebSocket connections to it) for `duration` through the harness's TCP
    /// fault proxy: added latency (+ random jitter), a bandwidth cap, a
    /// blackhole (bytes held), and/or resetting its connections when the
    /// fault starts.
    Network {
        node: u32,
        #[serde(default)]
        link: LinkTarget,
        duration: HumanDuration,
        #[serde(default = "zero")]
        latency: HumanDuration,
        #[serde(default = "zero")]
        jitter: HumanDuration,
        #[serde(default)]
        bandwidth_bytes_per_s: Option<u64>,
        #[serde(default)]
        blackhole: bool,
        #[serde(default)]
        reset: bool,
    },
    /// Cut node `node` from MongoDB for `duration` (its container leaves
    /// the run's Docker network, then joins it again): a real partition,
    /// with `topology.nodes_in: containers`. Its clients still reach it.
    Partition { node: u32, duration: HumanDuration },
    /// Each time, one of `choices` picked at random from the run's seed.
    Random { choices: Vec<FaultAction> },
}

impl FaultAction {
    pub fn node(&self) -> Option<u32> {
        match self {
            FaultAction::KillNode { node, .. }
            | FaultAction::StopNode { node, .. }
            | FaultAction::PauseNode { node, .. }
            | FaultAction::ResumeNode { node }
            | FaultAction::RestartNode { node, .. }
            | FaultAction::Network { node, .. }
            | FaultAction::Partition { node, .. } => Some(*node),
            FaultAction::RestartMongo { .. }
            | FaultAction::RestartKafka { .. }
            | FaultAction::RestartBroker { .. }
            | FaultAction::PauseBroker { .. }
            | FaultAction::DropClients { .. }
            | FaultAction::Random { .. } => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            FaultAction::KillNode { .. } => "kill_node",
            FaultAction::StopNode { .. } => "stop_node",
            FaultAction::PauseNode { .. } => "pause_node",
            FaultAction::ResumeNode { .. } => "resume_node",
            FaultAction::RestartNode { .. } => "restart_node",
            FaultAction::RestartMongo { .. } => "restart_mongo",
            FaultAction::RestartKafka { .. } => "restart_kafka",
            FaultAction::RestartBroker { .. } => "restart_broker",
            FaultAction::PauseBroker { .. } => "pause_broker",
            FaultAction::DropClients { .. } => "drop_clients",
            FaultAction::Network { .. } => "network",
            FaultAction::Partition { .. } => "partition",
            FaultAction::Random { .. } => "random",
        }
    }

    /// Whether this fault acts on Kafka (and so only applies in kafka mode).
    pub fn targets_kafka(&self) -> bool {
        matches!(self, FaultAction::RestartKafka { .. } | FaultAction::Network { link: LinkTarget::Kafka, .. })
    }

    /// Whether this fault acts on the mode's broker, whichever it is (and
    /// so applies in every mode but changestream).
    pub fn targets_broker(&self) -> bool {
        matches!(
            self,
            FaultAction::RestartBroker { .. } | FaultAction::PauseBroker { .. } | FaultAction::Network { link: LinkTarget::Broker, .. }
        )
    }

    /// Whether this fault has something to act on in `mode` (the same seed
    /// gives every mode the same schedule, less what does not apply).
    pub fn applies_in(&self, mode: chatbench_wire::Mode) -> bool {
        use chatbench_wire::Mode;
        (!self.targets_kafka() || mode == Mode::Kafka) && (!self.targets_broker() || mode != Mode::Changestream)
    }
}

/// Which of a node's backend links a network fault degrades.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkTarget {
    #[default]
    Mongo,
    Kafka,
    /// The node's link to the mode's broker: Kafka, Redis or NATS (not in
    /// changestream mode).
    Broker,
    /// The clients' WebSocket connections to the node (any system: the
    /// harness puts its proxy between clients and node).
    Clients,
}

impl Scenario {
    /// What a run is judged on: the scenario's checks, less what the
    /// system does not promise, and `authorization` only with intruders
    /// (each switched off with its reason).
    pub fn judged_checks(&self) -> Checks {
        let mut checks = self.system.guarantees.narrow(&self.checks, self.system.store.is_some());
        let intruders = self.auth.as_ref().is_some_and(|a| a.intruders.iter().any(|g| g.count > 0));
        if !intruders && checks.authorization.is_on() {
            checks.authorization = Switch::Off("no auth.intruders: nothing tried a room it may not use".into());
        }
        checks
    }

    /// Whether any fault (or random choice) satisfies `test`.
    pub(crate) fn any_fault(&self, test: impl Fn(&FaultAction) -> bool) -> bool {
        self.faults.iter().any(|f| match &f.action {
            FaultAction::Random { choices } => choices.iter().any(&test),
            other => test(other),
        })
    }

    /// Whether any fault restarts MongoDB (it then needs data that survives).
    pub fn may_restart_mongo(&self) -> bool {
        self.any_fault(|a| matches!(a, FaultAction::RestartMongo { .. }))
    }

    /// Whether any fault restarts Kafka (it then needs data that survives).
    pub fn may_restart_kafka(&self) -> bool {
        self.any_fault(|a| matches!(a, FaultAction::RestartKafka { .. } | FaultAction::RestartBroker { .. }))
    }

    /// Whether any fault restarts or pauses the mode's broker (a broker
    /// chatbench does not control cannot honour it).
    pub fn controls_broker(&self) -> bool {
        self.any_fault(|a| matches!(a, FaultAction::RestartBroker { .. } | FaultAction::PauseBroker { .. }))
    }

    /// The first fault that acts on the shared backends (a MongoDB or Kafka
    /// restart), which one shard of a sharded run cannot own: it would hit
    /// every shard's clients while only one shard records it.
    pub fn shared_backend_fault(&self) -> Option<&'static str> {
        if self.may_restart_mongo() {
            Some("restart_mongo")
        } else if self.any_fault(|a| matches!(a, FaultAction::RestartKafka { .. })) {
            Some("restart_kafka")
        } else if self.controls_broker() {
            Some("restart_broker or pause_broker")
        } else {
            None
        }
    }

    /// Whether any fault degrades a node's link to `target` (proxies needed).
    pub fn needs_link_proxies(&self, target: LinkTarget) -> bool {
        self.any_fault(|a| matches!(a, FaultAction::Network { link, .. } if *link == target))
    }

    /// Every fault occurrence as (offset from the start of sending, action),
    /// in time order; `random` faults are resolved with `seed`.
    pub fn fault_schedule(&self, seed: u64) -> Vec<(std::time::Duration, FaultAction)> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973);
        let mut out = Vec::new();
        let end = self.workload.duration.0;
        for fault in &self.faults {
            let mut t = fault.at.0;
            let mut n = 0u32;
            loop {
                if t >= end || fault.times.is_some_and(|max| n >= max) {
                    break;
                }
                let action = match &fault.action {
                    FaultAction::Random { choices } if !choices.is_empty() => choices[rng.random_range(0..choices.len())].clone(),
                    other => other.clone(),
                };
                out.push((t, action));
                n += 1;
                match fault.every {
                    Some(every) if !every.0.is_zero() => t += every.0,
                    _ => break,
                }
            }
        }
        out.sort_by_key(|(t, _)| *t);
        out
    }
}

/// Whether a check runs. In a scenario: `true` (the default), or
/// `{off: "why"}`; the reason is printed in every report. A bare `false` is
/// refused: a gate that silently stops checking something is a defect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Switch {
    #[default]
    On,
    Off(String),
}

impl Switch {
    pub fn is_on(&self) -> bool {
        matches!(self, Switch::On)
    }

    pub fn off_reason(&self) -> Option<&str> {
        match self {
            Switch::On => None,
            Switch::Off(why) => Some(why),
        }
    }
}

impl Serialize for Switch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Scenario files and report.json read `true` / `{off: why}`; the
        // binary trace (postcard) is not self-describing and stores an Option.
        if !s.is_human_readable() {
            return self.off_reason().serialize(s);
        }
        match self {
            Switch::On => s.serialize_bool(true),
            Switch::Off(why) => {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("off", why)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Switch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return Ok(Option::<String>::deserialize(d)?.map_or(Switch::On, Switch::Off));
        }
        d.deserialize_any(SwitchVisitor)
    }
}

struct SwitchVisitor;

impl<'de> serde::de::Visitor<'de> for SwitchVisitor {
    type Value = Switch;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("`true`, or `{off: \"why it is off\"}`")
    }

    fn visit_bool<E: serde::de::Error>(self, on: bool) -> Result<Switch, E> {
        if on {
            Ok(Switch::On)
        } else {
            Err(E::custom("a check is turned off with a reason every report prints: write `{off: \"why\"}`, not `false`"))
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Switch, A::Error> {
        let mut reason: Option<String> = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "off" || reason.is_some() {
                return Err(serde::de::Error::unknown_field(&key, &["off"]));
            }
            reason = Some(map.next_value()?);
        }
        match reason {
            Some(why) if !why.trim().is_empty() => Ok(Switch::Off(why)),
            _ => Err(serde::de::Error::custom("`off` needs a reason: `{off: \"why\"}`")),
        }
    }
}

impl JsonSchema for Switch {
    fn schema_name() -> Cow<'static, str> {
        "Switch".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "`true` (the check runs), or `{off: \"why\"}`: off, with the reason every report prints.",
            "oneOf": [
                {"const": true},
                {"type": "object", "properties": {"off": {"type": "string", "minLength": 1}}, "required": ["off"], "additionalProperties": false}
            ]
        })
    }
}

/// What a run is judged on. Every check is on unless turned off with a
/// reason; each is a pure function of the recorded trace (see `check/`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// Every owed message reaches every covering subscriber once, with the
    /// body that was sent; nothing unsent, unstored or unrequested is
    /// delivered.
    #[serde(default)]
    pub exactly_once: Switch,
    /// Every delivery reaches only a connection subscribed to its room
    /// (never one that did not join it, nor one whose unsubscribe was
    /// confirmed: `leak`), labelled with that room as a real client
    /// dispatches it (JSON `room`; STOMP `destination`, the client's own
    /// `subscription` id, a `message-id` not reused: `misrouted`).
    #[serde(default)]
    pub routing: Switch,
    /// Every attempt of an `auth` intruder is refused with a definite
    /// error within `auth.answer_within` (`unrefused` otherwise).
    #[serde(default)]
    pub authorization: Switch,
    /// Every owed delivery arrives within `fresh_within` of when it was due
    /// (sent, or the subscription it was caught up after was confirmed);
    /// deliveries due during a fault are left to `recovery`.
    #[serde(default)]
    pub freshness: Switch,
    /// The freshness window (default 2s). Also how long before leaving a
    /// room a message must have been acked to be owed there.
    #[serde(default = "two_seconds")]
    pub fresh_within: HumanDuration,
    /// With `ack: none` and no store oracle: a send that reached no
    /// covering subscriber although its connection stayed open this long
    /// after it (default 2s) is `lost` (counted as *unconfirmed*).
    #[serde(default = "two_seconds")]
    pub confirm_after: HumanDuration,
    #[serde(default)]
    pub ordering: OrderingChecks,
    /// Stored history (read from MongoDB, not through the server) is
    /// gap-free and agrees with every ack and delivery.
    #[serde(default)]
    pub live_equals_history: Switch,
    /// The run did what it was meant to: clients connected, sends were
    /// attempted and answered, indeterminate sends resolved, the drain
    /// finished, every room made progress.
    #[serde(default)]
    pub liveness: LivenessChecks,
    /// After a fault or a reconnect, clients are back within `within`.
    #[serde(default)]
    pub recovery: RecoveryCheck,
    #[serde(default)]
    pub latency: LatencyChecks,
    /// Floors on *achieved* rates (events counted by their own time inside
    /// the measured window).
    #[serde(default)]
    pub min_throughput: Option<MinThroughput>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderingChecks {
    /// Every subscriber sees a room in one order (`seq` order, one message per `seq`).
    #[serde(default)]
    pub per_room_total: Switch,
    /// A sender's messages are stored in the order it sent them.
    #[serde(default)]
    pub per_sender_fifo: Switch,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LivenessChecks {
    /// Every client connected, and every subscriber got `subscribed`, before sending started.
    #[serde(default)]
    pub ready: Switch,
    /// Every scheduled send was attempted, and no client gave up.
    #[serde(default)]
    pub attempted: Switch,
    /// Every send on a connection that stayed open was answered (ack or error).
    #[serde(default)]
    pub answered: Switch,
    /// Every send that got no ack was resolved against stored history.
    #[serde(default)]
    pub resolved: Switch,
    /// After sending, every send was acked, every client reconnected and
    /// every subscriber caught up within `drain_timeout`.
    #[serde(default)]
    pub drained: Switch,
    /// Every room with senders and subscribers saw at least one ack and one delivery.
    #[serde(default)]
    pub progress: Switch,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoveryCheck {
    /// How long a client may be disconnected or unsubscribed, and how long
    /// after a fault ends subscribers may go without a delivery and senders
    /// without an ack.
    #[serde(default = "ten_seconds")]
    pub within: HumanDuration,
    /// Turn the check off, with the reason every report prints.
    #[serde(default)]
    pub off: Option<String>,
}

impl Default for RecoveryCheck {
    fn default() -> Self {
        Self { within: ten_seconds(), off: None }
    }
}

fn ten_seconds() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn two_seconds() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}

impl Default for Checks {
    fn default() -> Self {
        Self {
            exactly_once: Switch::On,
            routing: Switch::On,
            authorization: Switch::On,
            freshness: Switch::On,
            fresh_within: two_seconds(),
            confirm_after: two_seconds(),
            ordering: OrderingChecks::default(),
            live_equals_history: Switch::On,
            liveness: LivenessChecks::default(),
            recovery: RecoveryCheck::default(),
            latency: LatencyChecks::default(),
            min_throughput: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyChecks {
    /// Ceilings on send → ack latency.
    #[serde(default)]
    pub ack: Percentiles,
    /// Ceilings on send → delivery latency (every subscriber).
    #[serde(default)]
    pub delivery: Percentiles,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Percentiles {
    pub p50: Option<HumanDuration>,
    pub p99: Option<HumanDuration>,
    pub p999: Option<HumanDuration>,
    pub max: Option<HumanDuration>,
}

impl Percentiles {
    /// (label, quantile, ceiling) for each ceiling that is set.
    pub fn ceilings(&self) -> Vec<(&'static str, f64, Duration)> {
        [("p50", 0.5, self.p50), ("p99", 0.99, self.p99), ("p999", 0.999, self.p999), ("max", 1.0, self.max)]
            .into_iter()
            .filter_map(|(label, q, d)| d.map(|d| (label, q, d.0)))
            .collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MinThroughput {
    /// Acks received per second inside the window, at least.
    pub acked_per_s: Option<f64>,
    /// Deliveries (message × subscriber) received per second inside the window, at least.
    pub delivered_per_s: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::{confusable_room, room_spelling};

    /// Each spelling is the one it names, never the room itself, whatever
    /// the name; the server test `a_broken_server_reads_every_spelling_as_the_room`
    /// checks that decoding and normalising folds each back.
    #[test]
    fn room_spellings_are_the_six_spellings_and_never_the_target() {
        let names: Vec<String> = (0..6).map(|v| room_spelling("room-12", v)).collect();
        assert_eq!(names, ["room-1%32", "room-12/", "room-1\u{FF12}", "room-12-other/../room-12", "ROOM-12", "room-12 "]);
        assert_eq!(room_spelling("room-12", 7), "room-12/", "variants cycle");
        assert_eq!(room_spelling("Ω", 0), "%CE%A9", "a multi-byte character is encoded byte by byte");
        assert_eq!(room_spelling("--", 2), "-%2D", "no letter or digit to widen: percent-encoding stands in");
        assert_eq!(room_spelling("12", 4), "12 ", "no case to change: a trailing space stands in");
        for target in ["r", "7", "12", "Ω", "ключ-1", "MiXeD", "a.b:c_d"] {
            for v in 0..6 {
                let s = room_spelling(target, v);
                assert!(!s.is_empty() && s != target, "{target:?} variant {v}: {s:?}");
            }
        }
    }

    /// Each variant is the confusion it names, and never the room itself,
    /// whatever the name (one character, no letters, multi-byte).
    #[test]
    fn confusable_rooms_are_the_four_confusions_and_never_the_target() {
        let names: Vec<String> = (0..4).map(|v| confusable_room("room-12", v)).collect();
        assert_eq!(names, ["room-1", "room-120", "ROOM-12", "oom-12"]);
        assert_eq!(confusable_room("room-12", 6), "ROOM-12", "variants cycle");
        for target in ["r", "7", "12", "Ω", "ключ-1", "MiXeD"] {
            for v in 0..4 {
                let c = confusable_room(target, v);
                assert!(!c.is_empty() && c != target, "{target:?} variant {v}: {c:?}");
            }
        }
        assert_eq!(confusable_room("r", 0), "r0", "no proper prefix: the extension stands in");
        assert_eq!(confusable_room("12", 2), "120", "no letters to change case: the extension stands in");
    }

    #[test]
    fn wildcard_patterns_cover_the_target_in_each_broker_dialect() {
        let patterns: Vec<String> = (0..5).map(|v| super::wildcard_pattern("room-12", v)).collect();
        assert_eq!(patterns, ["#", "*", ">", "+", "room-1*"]);
        assert_eq!(super::wildcard_pattern("r", 4), "*");
    }
}
