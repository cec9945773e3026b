//! The history oracle: each room's stored messages, read back after the run
//! straight from MongoDB with the driver — majority read concern, sorted by
//! `seq` — never through the server under test (whose history endpoint
//! shares code with the gap fill it is supposed to check).
//!
//! It reads the reference server's layout (`messages` documents with
//! `room`, `seq`, `id`). Every read is bounded: one cursor per room, at most
//! [`MAX_ENTRIES_PER_ROOM`] entries, and [`READ_TIMEOUT`] in all; a room that
//! cannot be read completely is marked incomplete (a finding), not guessed.

use crate::trace::{BodyDigest, FOREIGN_MSG, RoomHistory, Stored, parse_wire_id};
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{ClientOptions, ReadConcern};
use std::time::Duration;

/// How long reading every room's history may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// A room with more stored messages than this is reported incomplete
/// (16 bytes each in memory: 20 M entries is 320 MB).
pub const MAX_ENTRIES_PER_ROOM: usize = 20_000_000;

/// Where the oracle reads, named in every report.
pub fn source(db: &str) -> String {
    format!("MongoDB {db}.messages, read by the harness with majority read concern")
}

/// Every room's history (indexed like `rooms`), read from `db.messages`.
pub async fn read_history(uri: &str, db: &str, rooms: &[String]) -> Vec<RoomHistory> {
    let incomplete = || rooms.iter().map(|_| RoomHistory { entries: Vec::new(), complete: false }).collect();
    let client = match connect(uri).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(uri, error = %e, "history oracle: cannot connect to MongoDB; every room's history is unavailable");
            return incomplete();
        }
    };
    let messages = client.database(db).collection::<Document>("messages");
    let read_all = async {
        let mut out = Vec::with_capacity(rooms.len());
        for room in rooms {
            out.push(read_room(&messages, room).await);
        }
        out
    };
    match tokio::time::timeout(READ_TIMEOUT, read_all).await {
        Ok(histories) => histories,
        Err(_) => {
            tracing::warn!(uri, ?READ_TIMEOUT, "history oracle: reading history timed out; every room's history is unavailable");
            incomplete()
        }
    }
}

async fn connect(uri: &str) -> Result<mongodb::Client, mongodb::error::Error> {
    let mut options = ClientOptions::parse(uri).await?;
    options.server_selection_timeout.get_or_insert(Duration::from_secs(10));
    options.app_name = Some("chatbench-oracle".to_owned());
    mongodb::Client::with_options(options)
}

async fn read_room(messages: &mongodb::Collection<Document>, room: &str) -> RoomHistory {
    let read = async {
        let mut cursor = messages
            .find(doc! {"room": room})
            .sort(doc! {"seq": 1})
            .projection(doc! {"_id": 0, "seq": 1, "id": 1, "body": 1})
            .read_concern(ReadConcern::majority())
            .batch_size(10_000)
            .await?;
        let mut entries = Vec::new();
        while let Some(d) = cursor.try_next().await? {
            if entries.len() >= MAX_ENTRIES_PER_ROOM {
                tracing::warn!(room, MAX_ENTRIES_PER_ROOM, "history oracle: room holds more messages than the oracle reads");
                return Ok::<_, mongodb::error::Error>(RoomHistory { entries, complete: false });
            }
            entries.push(entry(&d));
        }
        Ok(RoomHistory { entries, complete: true })
    };
    match read.await {
        Ok(history) => history,
        Err(e) => {
            tracing::warn!(room, error = %e, "history oracle: could not read the room's history");
            RoomHistory { entries: Vec::new(), complete: false }
        }
    }
}

/// One stored document as an entry; ids that are not ours (or a malformed
/// document) become the foreign marker, which checkers flag.
fn entry(d: &Document) -> Stored {
    let seq = match d.get("seq") {
        Some(Bson::Int64(n)) => (*n).max(0) as u64,
        Some(Bson::Int32(n)) => (*n).max(0) as u64,
        Some(Bson::Double(n)) if n.fract() == 0.0 && *n >= 0.0 => *n as u64,
        _ => 0,
    };
    let msg = d.get_str("id").ok().and_then(parse_wire_id).unwrap_or(FOREIGN_MSG);
    // A body that is not a string is kept as an empty one, which no
    // sender sent: a corrupted finding, not a silent pass.
    let body = d.get("body").map(|b| BodyDigest::of(b.as_str().unwrap_or_default().as_bytes()));
    Stored::new(seq, msg, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_documents_become_entries_and_strangers_are_foreign() {
        assert_eq!(entry(&doc! {"seq": 7i64, "id": "m42", "body": "hé"}), Stored::new(7, 42, Some(BodyDigest::of("hé".as_bytes()))));
        assert_eq!(entry(&doc! {"seq": 3i32, "id": "hello"}), Stored::new(3, FOREIGN_MSG, None));
        assert_eq!(entry(&doc! {"id": "m1", "body": 5}), Stored::new(0, 1, Some(BodyDigest::of(b""))));
    }

    #[tokio::test]
    async fn an_unreachable_backend_gives_incomplete_history_not_a_hang() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=200");
        let rooms = vec!["a".to_owned(), "b".to_owned()];
        let h = read_history(&uri, "x", &rooms).await;
        assert_eq!(h.len(), 2);
        assert!(h.iter().all(|r| !r.complete));
    }
}
