//! What crosses the wire or the process boundary between chatbench's
//! harness and its reference chat server, each fact in one home:
//!
//! - [`Mode`]: how the reference server fans messages out (`--mode`, the
//!   scenario's `modes`, report columns);
//! - [`Protocol`]: what the harness's clients speak, and the reference
//!   server's path for the two it serves;
//! - [`limits`]: frame, room, id and seq limits of protocol v1, and the
//!   largest body a scenario may ask for;
//! - [`paths`]: HTTP and WebSocket paths and STOMP destinations;
//! - [`stored`]: the MongoDB layout of the reference server's messages,
//!   which the harness's store oracle reads back.
//!
//! It deliberately holds no behaviour: parsing frames stays in the server's
//! `protocol` module and the harness's client adapters.

pub mod limits;
pub mod paths;
pub mod stored;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How the reference server fans a stored message out to every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Write once to MongoDB; every node watches one change stream.
    Changestream,
    /// The baseline: also produce to Kafka; every node consumes the topic.
    Kafka,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Changestream, Mode::Kafka];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Changestream => "changestream",
            Mode::Kafka => "kafka",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Not a mode name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
    pub known: &'static [&'static str],
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {:?} (known: {})", self.what, self.name, self.known.join(", "))
    }
}

impl std::error::Error for UnknownName {}

impl FromStr for Mode {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| UnknownName {
            what: "mode",
            name: s.to_owned(),
            known: &["changestream", "kafka"],
        })
    }
}

/// What the harness's clients speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Json => "json",
            Protocol::Stomp => "stomp",
            Protocol::JsonFrames => "json_frames",
            Protocol::SocketIo => "socketio",
        }
    }

    /// The reference server's WebSocket path for this protocol, if it
    /// speaks it.
    pub fn reference_path(self) -> Option<&'static str> {
        match self {
            Protocol::Json => Some(paths::WS),
            Protocol::Stomp => Some(paths::STOMP),
            Protocol::JsonFrames | Protocol::SocketIo => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_display_and_from_str() {
        for m in Mode::ALL {
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
            assert_eq!(m.as_str().parse::<Mode>(), Ok(m));
        }
        for p in [Protocol::Json, Protocol::Stomp, Protocol::JsonFrames, Protocol::SocketIo] {
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        let err = "mongo".parse::<Mode>().unwrap_err().to_string();
        assert_eq!(err, "unknown mode \"mongo\" (known: changestream, kafka)");
    }

    #[test]
    fn the_reference_server_serves_json_and_stomp_only() {
        assert_eq!(Protocol::Json.reference_path(), Some("/ws"));
        assert_eq!(Protocol::Stomp.reference_path(), Some("/stomp"));
        assert_eq!(Protocol::SocketIo.reference_path(), None);
    }
}
