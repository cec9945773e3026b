//! The reference server's access token claims (HS256 JWT): the harness
//! mints them, the server verifies them. `rooms` lists the rooms the bearer
//! may read and write; `"*"` grants every room.

use serde::{Deserialize, Serialize};

/// The claims of a chatbench access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the bearer is (a client's name in the harness).
    pub sub: String,
    /// The rooms it may use; none when absent.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// The room name in `rooms` that grants every room.
pub const EVERY_ROOM: &str = "*";
