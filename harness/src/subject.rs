//! What a run judged: nodes the harness started, in one fan-out mode (the
//! reference server, or a team's server started by `system.command`), or an
//! external system it was given. Reports, traces and result folders carry
//! it by its name (`changestream`, `kafka`, `redis`, `nats`, `external`); in code it is
//! typed, so a comparison can never miss on a misspelt string.

use crate::scenario::Mode;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// Nodes the harness started, fanning out in this mode.
    Started(Mode),
    /// A system the harness did not start (`system.external`).
    External,
}

impl Subject {
    /// Every subject, in report order.
    pub const ALL: [Subject; 5] = [
        Subject::Started(Mode::Changestream),
        Subject::Started(Mode::Kafka),
        Subject::Started(Mode::Redis),
        Subject::Started(Mode::Nats),
        Subject::External,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Subject::Started(mode) => mode.as_str(),
            Subject::External => "external",
        }
    }

    /// The fan-out mode, for started nodes.
    pub fn mode(self) -> Option<Mode> {
        match self {
            Subject::Started(mode) => Some(mode),
            Subject::External => None,
        }
    }
}

impl Default for Subject {
    fn default() -> Self {
        Subject::Started(Mode::Changestream)
    }
}

impl From<Mode> for Subject {
    fn from(mode: Mode) -> Self {
        Subject::Started(mode)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Not the name of a subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown subject {0:?} (known: changestream, kafka, redis, nats, external)")]
pub struct UnknownSubject(pub String);

impl FromStr for Subject {
    type Err = UnknownSubject;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Subject::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| UnknownSubject(s.to_owned()))
    }
}

impl Serialize for Subject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Subject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_stored_by_its_name_and_read_back() {
        for s in Subject::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<Subject>(&json).unwrap(), s);
            // The trace's binary format stores it as the string it was.
            assert_eq!(postcard::to_stdvec(&s).unwrap(), postcard::to_stdvec(s.as_str()).unwrap());
        }
        let err = serde_json::from_str::<Subject>("\"mongo\"").unwrap_err().to_string();
        assert!(err.contains("unknown subject \"mongo\""), "{err}");
    }
}
