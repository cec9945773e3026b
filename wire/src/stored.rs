//! How the reference server stores a message in MongoDB, which the
//! harness's store oracle reads back: one [`StoredMessage`] document per
//! message in [`COLLECTION`], unique on (`room`, `id`) and ordered by
//! (`room`, `seq`). The field-name constants are the document's keys (a
//! test holds them to the struct).

use serde::{Deserialize, Serialize};

/// The collection of messages, in the run's database.
pub const COLLECTION: &str = "messages";
/// The room's name (string).
pub const ROOM: &str = "room";
/// The message's position in its room (int64, 1, 2, 3, ...).
pub const SEQ: &str = "seq";
/// The client-chosen message id (string), unique within a room.
pub const ID: &str = "id";
/// The message body (string).
pub const BODY: &str = "body";

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// `{room}:{seq}`: a second insert at the same seq fails on `_id`.
    #[serde(rename = "_id")]
    pub key: String,
    pub room: String,
    pub seq: i64,
    pub id: String,
    pub body: String,
    /// The node that stored it.
    pub node: String,
    /// Its store time, ms since the Unix epoch (the node's clock).
    pub ts_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_names_are_the_documents_keys() {
        let m = StoredMessage { key: "r:1".into(), room: "r".into(), seq: 1, id: "a".into(), body: "b".into(), node: "n".into(), ts_ms: 0 };
        let doc = serde_json::to_value(&m).unwrap();
        for key in [ROOM, SEQ, ID, BODY] {
            assert!(doc.get(key).is_some(), "{key} is not a key of a stored message");
        }
    }
}
