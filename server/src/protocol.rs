//! Protocol v1 frames: parsing client requests and building server frames.
//!
//! A text frame becomes a [`Request`] or a [`FrameError`] here, at the edge;
//! nothing past this module sees raw JSON. Server → client frames are built
//! here too so their shape lives in one place (see `server/PROTOCOL.md`).
//! This module does no I/O.

use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

pub use chatbench_wire::limits::{MAX_FRAME_BYTES, MAX_ID_BYTES, MAX_ROOM_BYTES, MAX_SEQ, MAX_WS_MESSAGE_BYTES};

/// A room name: 1–64 characters of `[A-Za-z0-9_.:-]`.
///
/// Compared, hashed, ordered and serialized by that name alone; the
/// spelling a client wrote is kept only by the sabotage below.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct RoomId {
    name: String,
    /// TEST ONLY (`--sabotage auth_raw_name`): the name as the client
    /// wrote it, when that is not `name`.
    #[serde(skip)]
    written: Option<Box<str>>,
}

/// TEST ONLY: `--sabotage auth_raw_name` (see [`normalise_room_names`]).
static NORMALISE_ROOM_NAMES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// TEST ONLY (`--sabotage auth_raw_name`, for the whole process): room
/// names are taken as a broken server takes them, decoded and normalised
/// ([`normalised_room_name`]) before they are checked, while
/// authorization reads the name as written ([`RoomId::as_written`]).
pub fn normalise_room_names() {
    NORMALISE_ROOM_NAMES.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// What a server that decodes room names makes of one: percent-decoded,
/// NFKC-normalised (full-width `１` is `1`), dot-segments resolved
/// (`a/../r1` is `r1`), trailing separators and spaces dropped, in lower
/// case. TEST ONLY, for `--sabotage auth_raw_name`.
pub fn normalised_room_name(raw: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    let folded: String = decoded.nfkc().collect::<String>().to_lowercase();
    let mut segments: Vec<&str> = Vec::new();
    for segment in folded.split('/') {
        match segment.trim() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    segments.join("/")
}

/// TEST ONLY: `--sabotage auth_wildcard` (see [`accept_room_patterns`]).
static ACCEPT_ROOM_PATTERNS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// TEST ONLY (`--sabotage auth_wildcard`, for the whole process): a room
/// name may be a broker-style pattern ([`is_room_pattern`]), subscribed
/// to as every room it covers ([`pattern_covers`]).
pub fn accept_room_patterns() {
    ACCEPT_ROOM_PATTERNS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// `#`, `>`, `*`, `+` (every room: room names have no separators), or a
/// name glob ending in `*` (`room-*`).
pub fn is_room_pattern(name: &str) -> bool {
    matches!(name, "#" | ">" | "*" | "+")
        || name
            .strip_suffix('*')
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')))
}

/// Does pattern `pattern` ([`is_room_pattern`]) cover `room`?
pub fn pattern_covers(pattern: &str, room: &str) -> bool {
    match pattern {
        "#" | ">" | "*" | "+" => true,
        p => p.strip_suffix('*').is_some_and(|prefix| room.starts_with(prefix)),
    }
}

impl PartialEq for RoomId {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for RoomId {}

impl std::hash::Hash for RoomId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

impl PartialOrd for RoomId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RoomId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name.cmp(&other.name)
    }
}

impl RoomId {
    pub fn parse(raw: &str) -> Result<Self, FrameError> {
        if raw.is_empty() {
            return Err(FrameError::new(ErrorCode::EmptyField, "field \"room\" is empty"));
        }
        // TEST ONLY: a broken server normalises the name it was given.
        let normalised = NORMALISE_ROOM_NAMES.load(std::sync::atomic::Ordering::Relaxed).then(|| normalised_room_name(raw));
        let name = normalised.as_deref().unwrap_or(raw);
        // TEST ONLY: a broken server takes a pattern for a room.
        if ACCEPT_ROOM_PATTERNS.load(std::sync::atomic::Ordering::Relaxed) && is_room_pattern(name) {
            return Ok(Self { name: name.to_owned(), written: None });
        }
        if name.is_empty()
            || name.len() > MAX_ROOM_BYTES
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
        {
            return Err(FrameError::new(
                ErrorCode::BadRoom,
                format!("room {:?} is invalid: use 1-{MAX_ROOM_BYTES} characters of A-Z a-z 0-9 _ . : -", truncate(raw, 80)),
            ));
        }
        Ok(Self { name: name.to_owned(), written: (name != raw).then(|| raw.into()) })
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The name as the client wrote it: [`RoomId::as_str`] itself, except
    /// under `--sabotage auth_raw_name`, where authorization checks this
    /// and everything else uses the normalised name (TEST ONLY).
    pub fn as_written(&self) -> &str {
        self.written.as_deref().unwrap_or(&self.name)
    }
}

impl std::borrow::Borrow<str> for RoomId {
    fn borrow(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A client-chosen message id, the idempotency key within a room.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct MsgId(String);

impl MsgId {
    pub fn parse(raw: &str) -> Result<Self, FrameError> {
        if raw.is_empty() {
            return Err(FrameError::new(ErrorCode::EmptyField, "field \"id\" is empty"));
        }
        if raw.len() > MAX_ID_BYTES {
            return Err(FrameError::new(ErrorCode::BadField, format!("field \"id\" is longer than {MAX_ID_BYTES} bytes")));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A position in a room's gap-free sequence (1, 2, 3, ...). Not a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

/// A parsed client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Subscribe { room: RoomId, after: Option<Seq> },
    Unsubscribe { room: RoomId },
    Send { room: RoomId, id: MsgId, body: String },
}

/// Machine-readable error codes of `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadJson,
    NotObject,
    UnknownOp,
    MissingField,
    EmptyField,
    BadField,
    BadRoom,
    FrameTooLarge,
    BinaryNotSupported,
    NotSubscribed,
    StoreUnavailable,
    ResendRequired,
    TooManySubscriptions,
    /// The connection's token does not grant this room (`--auth-secret`).
    Forbidden,
    /// The send waited `--overload-wait` in its connection's queue and for
    /// one of the node's `--max-inflight-writes` write slots: not stored;
    /// resend the same id later.
    Overloaded,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::NotObject => "not_object",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::EmptyField => "empty_field",
            ErrorCode::BadField => "bad_field",
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::ResendRequired => "resend_required",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Overloaded => "overloaded",
        }
    }
}

/// Why a frame could not become a [`Request`]. Carries the `id`/`room` of
/// the frame where they could be read, so the client can correlate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    pub id: Option<String>,
    pub room: Option<String>,
}

impl FrameError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), id: None, room: None }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for FrameError {}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Parse one text frame into a request.
pub fn parse_request(text: &str) -> Result<Request, FrameError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(FrameError::new(ErrorCode::FrameTooLarge, format!("frame is {} bytes; the limit is {MAX_FRAME_BYTES}", text.len())));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| FrameError::new(ErrorCode::BadJson, format!("frame is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(FrameError::new(ErrorCode::NotObject, "frame must be a JSON object"));
    };
    let id_hint = obj.get("id").and_then(Value::as_str).map(|s| truncate(s, MAX_ID_BYTES).to_owned());
    let room_hint = obj.get("room").and_then(Value::as_str).map(|s| truncate(s, MAX_ROOM_BYTES).to_owned());
    parse_object(&obj).map_err(|mut e| {
        e.id = id_hint;
        e.room = room_hint;
        e
    })
}

fn parse_object(obj: &Map<String, Value>) -> Result<Request, FrameError> {
    let op = required_str(obj, "op")?;
    match op {
        "subscribe" => {
            let room = RoomId::parse(required_str(obj, "room")?)?;
            let after = match obj.get("after") {
                None | Some(Value::Null) => None,
                // Seqs are stored as 64-bit signed integers: nothing lies beyond i64::MAX.
                Some(v) => Some(Seq(v.as_u64().filter(|&a| a <= MAX_SEQ).ok_or_else(|| {
                    FrameError::new(ErrorCode::BadField, format!("field \"after\" must be an integer from 0 to {MAX_SEQ}"))
                })?)),
            };
            Ok(Request::Subscribe { room, after })
        }
        "unsubscribe" => Ok(Request::Unsubscribe { room: RoomId::parse(required_str(obj, "room")?)? }),
        "send" => {
            let room = RoomId::parse(required_str(obj, "room")?)?;
            let id = MsgId::parse(required_str(obj, "id")?)?;
            let body = required_str(obj, "body")?;
            if body.is_empty() {
                return Err(FrameError::new(ErrorCode::EmptyField, "field \"body\" is empty"));
            }
            Ok(Request::Send { room, id, body: body.to_owned() })
        }
        other => Err(FrameError::new(
            ErrorCode::UnknownOp,
            format!("unknown op {:?}: expected subscribe, unsubscribe or send", truncate(other, 40)),
        )),
    }
}

fn required_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, FrameError> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(FrameError::new(ErrorCode::MissingField, format!("field {key:?} is missing"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(FrameError::new(ErrorCode::BadField, format!("field {key:?} must be a string"))),
    }
}

/// A stored chat message as the protocol shows it (`msg` frames and history).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub room: String,
    pub seq: u64,
    pub id: String,
    pub body: String,
    /// Node that accepted the send.
    pub node: String,
    /// Server wall-clock time of the insert, milliseconds since the Unix epoch.
    pub ts_ms: i64,
}

/// Server → client frames.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ServerFrame<'a> {
    Subscribed {
        room: &'a str,
        head: u64,
    },
    Unsubscribed {
        room: &'a str,
    },
    Ack {
        id: &'a str,
        room: &'a str,
        seq: u64,
    },
    Msg(&'a ChatMessage),
    Error {
        code: &'static str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
    },
}

impl ServerFrame<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames serialize: all fields are strings and integers")
    }
}

impl FrameError {
    pub fn to_frame(&self) -> String {
        ServerFrame::Error { code: self.code.as_str(), message: &self.message, id: self.id.as_deref(), room: self.room.as_deref() }
            .to_json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `--sabotage auth_wildcard`'s patterns: the harness's wildcard
    /// intruders' patterns, each covering its target.
    #[test]
    fn a_broken_server_reads_the_wildcard_patterns_as_rooms_they_cover() {
        for variant in 0..5 {
            let pattern = chatbench::scenario::wildcard_pattern("room-12", variant);
            assert!(is_room_pattern(&pattern) && pattern_covers(&pattern, "room-12"), "{pattern}");
        }
        assert!(!pattern_covers("room-2*", "room-12"));
        assert!(!is_room_pattern("room-1") && !is_room_pattern("*x") && !is_room_pattern("a b*"));
    }

    /// The harness's `spelling` intruders (every variant) are refused by
    /// this server's names, but for the upper-case one, a room of its own;
    /// `--sabotage auth_raw_name`'s decoding reads each as the room.
    #[test]
    fn a_broken_server_reads_every_spelling_as_the_room() {
        for target in ["room-12", "r", "a.b:c_d"] {
            for variant in 0..6 {
                let spelled = chatbench::scenario::room_spelling(target, variant);
                assert_eq!(normalised_room_name(&spelled), target, "{spelled:?}");
                let healthy = RoomId::parse(&spelled);
                assert_eq!(healthy.is_ok(), spelled == target.to_uppercase(), "{spelled:?}: {healthy:?}");
            }
        }
        let r = RoomId { name: "room-12".into(), written: Some("room-1%32".into()) };
        assert_eq!((r.as_str(), r.as_written()), ("room-12", "room-1%32"));
        assert_eq!(r, RoomId::parse("room-12").unwrap(), "compared by name alone");
    }

    fn code(text: &str) -> ErrorCode {
        parse_request(text).expect_err("expected an error").code
    }

    #[test]
    fn parses_each_op() {
        assert_eq!(
            parse_request(r#"{"op":"subscribe","room":"r1","after":5}"#).unwrap(),
            Request::Subscribe { room: RoomId::parse("r1").unwrap(), after: Some(Seq(5)) }
        );
        assert_eq!(
            parse_request(r#"{"op":"subscribe","room":"r1"}"#).unwrap(),
            Request::Subscribe { room: RoomId::parse("r1").unwrap(), after: None }
        );
        assert_eq!(
            parse_request(r#"{"op":"unsubscribe","room":"r1"}"#).unwrap(),
            Request::Unsubscribe { room: RoomId::parse("r1").unwrap() }
        );
        assert_eq!(
            parse_request(r#"{"op":"send","room":"r1","id":"m1","body":"hi","extra":1}"#).unwrap(),
            Request::Send { room: RoomId::parse("r1").unwrap(), id: MsgId::parse("m1").unwrap(), body: "hi".into() }
        );
    }

    #[test]
    fn rejects_bad_frames_with_the_right_code() {
        assert_eq!(code("{"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::NotObject);
        assert_eq!(code(r#"{"op":"dance"}"#), ErrorCode::UnknownOp);
        assert_eq!(code(r#"{"room":"r"}"#), ErrorCode::MissingField);
        assert_eq!(code(r#"{"op":"send","room":"r","id":"","body":"x"}"#), ErrorCode::EmptyField);
        assert_eq!(code(r#"{"op":"send","room":"r","id":"a","body":""}"#), ErrorCode::EmptyField);
        assert_eq!(code(r#"{"op":"send","room":"r","id":7,"body":"x"}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"op":"subscribe","room":"a b"}"#), ErrorCode::BadRoom);
        assert_eq!(code(r#"{"op":"subscribe","room":"r","after":-1}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"op":"subscribe","room":"r","after":9223372036854775808}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"op":"subscribe","room":"r","after":1.5}"#), ErrorCode::BadField);
        assert!(parse_request(r#"{"op":"subscribe","room":"r","after":9223372036854775807}"#).is_ok());
        let big = format!(r#"{{"op":"send","room":"r","id":"a","body":"{}"}}"#, "x".repeat(MAX_FRAME_BYTES));
        assert_eq!(code(&big), ErrorCode::FrameTooLarge);
    }

    #[test]
    fn error_frame_carries_id_and_room_for_correlation() {
        let err = parse_request(r#"{"op":"send","room":"r","id":"m9"}"#).unwrap_err();
        let frame: Value = serde_json::from_str(&err.to_frame()).unwrap();
        assert_eq!(frame["op"], "error");
        assert_eq!(frame["code"], "missing_field");
        assert_eq!(frame["id"], "m9");
        assert_eq!(frame["room"], "r");
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_error_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let text = String::from_utf8_lossy(&bytes);
            match parse_request(&text) {
                Ok(Request::Send { room, id, body }) => {
                    prop_assert!(!room.as_str().is_empty() && !id.as_str().is_empty() && !body.is_empty());
                }
                Ok(_) => {}
                Err(e) => prop_assert!(!e.message.is_empty()),
            }
        }

        #[test]
        fn valid_sends_round_trip(room in "[A-Za-z0-9_.:-]{1,64}", id in "[^\\x00]{1,30}", body in ".{1,200}") {
            let frame = serde_json::json!({"op": "send", "room": room, "id": id, "body": body}).to_string();
            let parsed = parse_request(&frame).unwrap();
            prop_assert_eq!(parsed, Request::Send {
                room: RoomId::parse(&room).unwrap(), id: MsgId::parse(&id).unwrap(), body: body.clone() });
        }

        #[test]
        fn json_objects_with_random_fields_never_panic(op in prop_oneof![Just("send".to_owned()), Just("subscribe".to_owned()), Just("unsubscribe".to_owned()), ".*"],
                                                       room in proptest::option::of(any::<String>()),
                                                       after in proptest::option::of(any::<i64>())) {
            let mut obj = serde_json::json!({"op": op});
            if let Some(r) = room { obj["room"] = r.into(); }
            if let Some(a) = after { obj["after"] = a.into(); }
            let _ = parse_request(&obj.to_string());
        }
    }
}
