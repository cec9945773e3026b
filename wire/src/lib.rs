//! What crosses the wire or the process boundary between chatbench's
//! harness and its reference chat server, each fact in one home:
//!
//! - [`Mode`]: how the reference server fans messages out (`--mode`, the
//!   scenario's `modes`, report columns);
//! - [`limits`]: frame, room, id and seq limits of protocol v1, and the
//!   largest body a scenario may ask for;
//! - [`paths`]: HTTP and WebSocket paths and STOMP destinations;
//! - [`stored`]: the MongoDB layout of the reference server's messages,
//!   which the harness's store oracle reads back;
//! - [`token`]: the claims of the reference server's access tokens.
//!
//! It deliberately holds no behaviour: parsing frames stays in the server's
//! `protocol` module and the harness's `protocol` module (which also owns
//! the list of protocols the harness speaks).

pub mod limits;
pub mod paths;
pub mod stored;
pub mod token;

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
    /// Also PUBLISH on Redis, a channel per room; a node subscribes only to
    /// the rooms its clients hold (at-most-once pub/sub, gaps filled from
    /// MongoDB).
    Redis,
    /// Also publish to a NATS JetStream stream; every node reads it with an
    /// ordered consumer that resumes from its last stream sequence.
    Nats,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Changestream, Mode::Kafka, Mode::Redis, Mode::Nats];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Changestream => "changestream",
            Mode::Kafka => "kafka",
            Mode::Redis => "redis",
            Mode::Nats => "nats",
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
            known: &["changestream", "kafka", "redis", "nats"],
        })
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
        let err = "mongo".parse::<Mode>().unwrap_err().to_string();
        assert_eq!(err, "unknown mode \"mongo\" (known: changestream, kafka, redis, nats)");
    }
}
