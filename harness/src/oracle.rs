//! The history oracle: each room's stored messages, read back after the run
//! straight from MongoDB with the driver — majority read concern, sorted by
//! `seq` — never through the server under test (whose history endpoint
//! shares code with the gap fill it is supposed to check).
//!
//! It reads the reference server's layout (`messages` documents with
//! `room`, `seq`, `id`). Every read is bounded: one cursor per room, at most
//! [`MAX_ENTRIES_PER_ROOM`] entries, and [`READ_TIMEOUT`] in all; a room that
//! cannot be read completely is marked incomplete (a finding), not guessed.

use crate::protocol::{IdReader, json_path};
#[cfg(test)]
use crate::scenario::JsonId;
use crate::scenario::StoreOracle;
use crate::trace::{BodyDigest, FOREIGN_MSG, RoomHistory, Stored, parse_wire_id};
use chatbench_wire::stored::{BODY, COLLECTION, ID, ROOM, SEQ};
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{ClientOptions, ReadConcern};
use std::time::Duration;

/// How long reading every room's history may take.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// A room with more stored messages than this is reported incomplete
/// (16 bytes each in memory: 20 M entries is 320 MB).
pub(crate) const MAX_ENTRIES_PER_ROOM: usize = 20_000_000;

/// Where the oracle reads, named in every report.
pub(crate) fn source(db: &str) -> String {
    format!("MongoDB {db}.messages, read by the harness with majority read concern")
}

/// Every room's history (indexed like `rooms`), read from `db.messages`.
pub(crate) async fn read_history(uri: &str, db: &str, rooms: &[String]) -> Vec<RoomHistory> {
    let incomplete = || rooms.iter().map(|_| RoomHistory { entries: Vec::new(), complete: false }).collect();
    let client = match connect(uri).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(uri, error = %e, "history oracle: cannot connect to MongoDB; every room's history is unavailable");
            return incomplete();
        }
    };
    let messages = client.database(db).collection::<Document>(COLLECTION);
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
            .find(doc! {ROOM: room})
            .sort(doc! {SEQ: 1})
            .projection(doc! {"_id": 0, SEQ: 1, ID: 1, BODY: 1})
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
    let seq = match d.get(SEQ) {
        Some(Bson::Int64(n)) => (*n).max(0) as u64,
        Some(Bson::Int32(n)) => (*n).max(0) as u64,
        Some(Bson::Double(n)) if n.fract() == 0.0 && *n >= 0.0 => *n as u64,
        _ => 0,
    };
    let msg = d.get_str(ID).ok().and_then(parse_wire_id).unwrap_or(FOREIGN_MSG);
    // A body that is not a string is kept as an empty one, which no
    // sender sent: a corrupted finding, not a silent pass.
    let body = d.get(BODY).map(|b| BodyDigest::of(b.as_str().unwrap_or_default().as_bytes()));
    Stored::new(seq, msg, body)
}

/// Where the store oracle reads, named in every report.
pub(crate) fn store_source(db: &str, store: &StoreOracle) -> String {
    format!(
        "the system's own store, MongoDB {db}.{} (room in `{}`, id in `{}`{}), read by the harness with majority read concern: resolves unacked sends only",
        store.collection,
        store.room,
        store.id.json,
        store.id.pattern.as_deref().map(|p| format!(" matching {p:?}")).unwrap_or_default()
    )
}

/// A `system.store` declaration that does not fit what the system stored:
/// judging with it would turn every delivery into a phantom.
#[derive(Debug, thiserror::Error)]
#[error("system.store: {0}")]
pub(crate) struct StoreMismatch(pub String);

/// Every room's messages as the system stored them (`system.store`), in
/// `_id` order, numbered 1, 2, … per room (the system declares no `seq`
/// there). Err when the declaration matches nothing although the
/// collection holds documents, or the collection is empty although
/// messages were delivered (`delivered`).
pub(crate) async fn read_store(
    uri: &str,
    db: &str,
    store: &StoreOracle,
    rooms: &[String],
    delivered: u64,
) -> Result<Vec<RoomHistory>, StoreMismatch> {
    let incomplete = || rooms.iter().map(|_| RoomHistory { entries: Vec::new(), complete: false }).collect();
    let client = match connect(uri).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(uri, error = %e, "store oracle: cannot connect to MongoDB; unacked sends stay unresolved");
            return Ok(incomplete());
        }
    };
    let reader = match IdReader::json(&store.id) {
        Ok(r) => r,
        Err(e) => return Err(StoreMismatch(format!("id.pattern does not compile: {e}"))),
    };
    let collection = client.database(db).collection::<Document>(&store.collection);
    let read = async {
        let mut cursor = collection.find(doc! {}).sort(doc! {"_id": 1}).read_concern(ReadConcern::majority()).batch_size(10_000).await?;
        let mut scan = StoreScan::new(rooms);
        while let Some(d) = cursor.try_next().await? {
            if scan.documents >= MAX_ENTRIES_PER_ROOM as u64 {
                tracing::warn!(MAX_ENTRIES_PER_ROOM, "store oracle: the collection holds more documents than the oracle reads");
                scan.complete = false;
                break;
            }
            scan.add(d, store, &reader);
        }
        Ok::<_, mongodb::error::Error>(scan)
    };
    let scan = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(scan)) => scan,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "store oracle: could not read the store; unacked sends stay unresolved");
            return Ok(incomplete());
        }
        Err(_) => {
            tracing::warn!(?READ_TIMEOUT, "store oracle: reading the store timed out; unacked sends stay unresolved");
            return Ok(incomplete());
        }
    };
    scan.finish(store, delivered)
}

/// The store read so far, with what did not fit the declaration.
struct StoreScan<'a> {
    rooms: &'a [String],
    histories: Vec<RoomHistory>,
    documents: u64,
    /// Documents without a string at the `room` path.
    no_room: u64,
    /// Documents of a room that is not this run's (another run, or shard).
    other_room: u64,
    /// Documents of our rooms without one of our ids at the `id` path.
    no_id: u64,
    /// The first document, to show in an error.
    example: Option<String>,
    complete: bool,
}

impl<'a> StoreScan<'a> {
    fn new(rooms: &'a [String]) -> Self {
        Self {
            rooms,
            histories: rooms.iter().map(|_| RoomHistory { entries: Vec::new(), complete: true }).collect(),
            documents: 0,
            no_room: 0,
            other_room: 0,
            no_id: 0,
            example: None,
            complete: true,
        }
    }

    fn add(&mut self, d: Document, store: &StoreOracle, reader: &IdReader) {
        self.documents += 1;
        let json = Bson::Document(d).into_relaxed_extjson();
        if self.example.is_none() {
            self.example = Some(json.to_string().chars().take(300).collect());
        }
        let Some(room) = json_path(&json, &store.room).and_then(|v| v.as_str()) else {
            self.no_room += 1;
            return;
        };
        let Some(r) = self.rooms.iter().position(|x| x == room) else {
            self.other_room += 1;
            return;
        };
        let Some(msg) = reader.id_in(&json).as_deref().and_then(parse_wire_id) else {
            self.no_id += 1;
            return;
        };
        let entries = &mut self.histories[r].entries;
        let seq = entries.len() as u64 + 1;
        entries.push(Stored::new(seq, msg, None));
    }

    fn finish(mut self, store: &StoreOracle, delivered: u64) -> Result<Vec<RoomHistory>, StoreMismatch> {
        let matched: usize = self.histories.iter().map(|h| h.entries.len()).sum();
        let example = self.example.unwrap_or_default();
        if self.documents == 0 && delivered > 0 {
            return Err(StoreMismatch(format!(
                "collection {:?} holds no documents, but {delivered} messages were delivered: is it the collection the system writes to?",
                store.collection
            )));
        }
        if matched == 0 && self.documents > 0 {
            let why = if self.no_room == self.documents {
                format!("no document has a string at room path {:?}", store.room)
            } else if self.other_room + self.no_room == self.documents {
                format!("no document's {:?} names one of this run's rooms (e.g. {})", store.room, self.rooms.first().map_or("", |r| r))
            } else {
                format!(
                    "no document of this run's rooms has one of the harness's ids at {:?}{}",
                    store.id.json,
                    store.id.pattern.as_deref().map(|p| format!(" matching {p:?}")).unwrap_or_default()
                )
            };
            return Err(StoreMismatch(format!("{why}, in {} documents of {:?}; the first: {example}", self.documents, store.collection)));
        }
        if self.no_id > 0 {
            tracing::warn!(
                documents = self.no_id,
                "store oracle: documents of this run's rooms without a harness id (not ours, or malformed)"
            );
        }
        if !self.complete {
            for h in &mut self.histories {
                h.complete = false;
            }
        }
        Ok(self.histories)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(pattern: Option<&str>) -> StoreOracle {
        StoreOracle {
            collection: "chat_messages".into(),
            room: "group.id".into(),
            id: JsonId { json: "content".into(), pattern: pattern.map(str::to_owned) },
        }
    }

    fn scan(docs: &[Document], store: &StoreOracle, delivered: u64) -> Result<Vec<RoomHistory>, StoreMismatch> {
        let rooms = vec!["room-0".to_owned(), "room-1".to_owned()];
        let reader = IdReader::json(&store.id).unwrap();
        let mut s = StoreScan::new(&rooms);
        for d in docs {
            s.add(d.clone(), store, &reader);
        }
        s.finish(store, delivered)
    }

    #[test]
    fn the_store_oracle_reads_nested_rooms_and_ids_inside_text() {
        let s = store(Some(r"\[(m\d+)\]"));
        let docs = [
            doc! {"group": {"id": "room-1"}, "content": "hi there [m7]"},
            doc! {"group": {"id": "room-0"}, "content": "[m3] yo"},
            doc! {"group": {"id": "room-1"}, "content": "[m9]"},
            doc! {"group": {"id": "elsewhere"}, "content": "[m1]"},
            doc! {"group": {"id": "room-1"}, "content": "no id here"},
        ];
        let h = scan(&docs, &s, 3).unwrap();
        assert_eq!(h[0].entries, vec![Stored::new(1, 3, None)]);
        assert_eq!(h[1].entries, vec![Stored::new(1, 7, None), Stored::new(2, 9, None)]);
        assert!(h.iter().all(|r| r.complete));
    }

    /// A declaration that matches nothing is an error naming it, never a
    /// run where every delivery is a phantom.
    #[test]
    fn a_store_declaration_that_matches_nothing_names_the_field() {
        let docs = [doc! {"groupId": "room-1", "content": "[m7]"}];
        let e = scan(&docs, &store(Some(r"\[(m\d+)\]")), 1).unwrap_err().to_string();
        assert!(e.contains("no document has a string at room path \"group.id\""), "{e}");
        let docs = [doc! {"group": {"id": "room-1"}, "content": "m7"}];
        let e = scan(&docs, &store(Some(r"\[(m\d+)\]")), 1).unwrap_err().to_string();
        assert!(e.contains("no document of this run's rooms has one of the harness's ids at \"content\""), "{e}");
        let docs = [doc! {"group": {"id": "other"}, "content": "[m7]"}];
        let e = scan(&docs, &store(None), 1).unwrap_err().to_string();
        assert!(e.contains("names one of this run's rooms"), "{e}");
        let e = scan(&[], &store(None), 5).unwrap_err().to_string();
        assert!(e.contains("holds no documents, but 5 messages were delivered"), "{e}");
        assert!(scan(&[], &store(None), 0).is_ok(), "nothing stored and nothing delivered is for the checks to judge");
    }

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
