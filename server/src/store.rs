//! MongoDB storage of chat messages: idempotent, gap-free per-room sequence
//! numbers, history reads, and the change stream the fan-out watches.
//!
//! One document per message in the `messages` collection, `_id` =
//! `"<room>/<seq>"` so `(room, seq)` is unique by the primary key, plus a
//! unique index on `(room, id)` that makes `id` the idempotency key.
//!
//! Sequence numbers are allocated optimistically: a send inserts at
//! `head + 1` (the node's hint, or a read). A duplicate-key error on `_id`
//! means another node took that `seq` — it exists, so the next one is tried
//! at once, without reading anything (up to [`MAX_WALK`] steps, then the
//! head is read); one on `(room, id)` means the message is stored already
//! and the resend is answered with its `seq`. A `seq` therefore only exists
//! once the message holding it is stored, and is only tried once the one
//! before it exists: the sequence is gap-free without transactions, and
//! `seq` order is commit order.
//! This module does not fan out; see `fanout`.
//!
//! On a replica set every write waits for a majority (with `wtimeout`) and
//! every read — the head, history, and the duplicate path of a resend —
//! uses majority read concern, so nothing acked or delivered can be rolled
//! back. On a standalone (or the compat backend) there is one copy: acks
//! mean "stored on that copy" and reads are local.

use crate::protocol::{ChatMessage, MsgId, RoomId, Seq};
use chatbench_wire::stored::{ID, ROOM, SEQ};
use futures::TryStreamExt;
use mongodb::bson::doc;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, CollectionOptions, IndexOptions, ReadConcern, WriteConcern};
use mongodb::{Client, Collection, IndexModel};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DUPLICATE_KEY: i32 = 11000;
/// How often one send retries after losing a `seq` race before giving up.
const MAX_SEQ_RACES: usize = 200;
/// After this many lost races in a row, pause between attempts (the other
/// writer, or a resend's first insert, may not be majority-visible yet).
const RACES_BEFORE_BACKOFF: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("MongoDB at {uri} is unreachable or rejected the request: {source}")]
    Mongo {
        uri: String,
        #[source]
        source: mongodb::error::Error,
    },
    #[error("room {room}: lost the race for the next seq {attempts} times in a row")]
    Contended { room: String, attempts: usize },
}

/// A stored message, as the wire crate lays it out.
pub use chatbench_wire::stored::StoredMessage as MessageDoc;

impl From<MessageDoc> for ChatMessage {
    fn from(d: MessageDoc) -> Self {
        ChatMessage { room: d.room, seq: d.seq.max(0) as u64, id: d.id, body: d.body, node: d.node, ts_ms: d.ts_ms }
    }
}

/// A room's send lock and its head hint: the highest `seq` this node knows
/// exists (0: none), from its own inserts *and* from every message its
/// fan-out sees (change events, Kafka records) — so a room written from
/// several nodes clashes only in true races, not on nearly every message.
/// A hint is always a `seq` that exists, so `hint + 1` keeps the sequence
/// gap-free.
#[derive(Default)]
struct RoomHead {
    lock: tokio::sync::Mutex<()>,
    hint: std::sync::atomic::AtomicU64,
}

/// Result of storing a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: Seq,
    /// Inserts that hit a taken `seq` on the way (another node won it);
    /// the insert operations issued for it are one more.
    pub clashes: u32,
    /// Reads of the room's head it needed.
    pub head_reads: u32,
    /// False when the `id` was already stored and this was a resend.
    pub fresh: bool,
    /// The message as stored (the original, for a resend).
    pub message: ChatMessage,
}

/// One page of a room's history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryPage {
    pub messages: Vec<ChatMessage>,
    /// The page stopped at its message or byte limit: more may follow.
    pub more: bool,
}

/// How the store is tuned (flags with defaults in PROTOCOL.md).
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// `wtimeout` of majority writes on a replica set.
    pub write_timeout: Duration,
    /// Room head hints kept before idle ones are dropped.
    pub max_room_heads: usize,
    /// The driver's connection pool size (None: its default).
    pub max_pool_size: Option<u32>,
}

#[derive(Clone)]
pub struct Store {
    uri: String,
    client: Client,
    messages: Collection<MessageDoc>,
    /// Per-room async lock and head hint, so sends to one room on one node
    /// do not race each other for the same `seq`.
    heads: Arc<Mutex<HashMap<RoomId, Arc<RoomHead>>>>,
    limits: StoreLimits,
    pub majority: bool,
}

impl Store {
    /// Connect, detect whether the deployment is a replica set (then writes
    /// and reads are majority) and make sure the indexes exist.
    pub async fn connect(uri: &str, db: &str, limits: StoreLimits) -> Result<Self, StoreError> {
        let err = |source| StoreError::Mongo { uri: uri.to_owned(), source };
        let mut options = mongodb::options::ClientOptions::parse(uri).await.map_err(err)?;
        options.server_selection_timeout.get_or_insert(Duration::from_secs(5));
        options.app_name.get_or_insert_with(|| "chat-server".to_owned());
        if let Some(n) = limits.max_pool_size {
            options.max_pool_size = Some(n);
        }
        let client = Client::with_options(options).map_err(err)?;
        let hello = client.database("admin").run_command(doc! {"hello": 1}).await.map_err(err)?;
        let majority = hello.get_str("setName").is_ok();
        let messages = client
            .database(db)
            .collection_with_options::<MessageDoc>(chatbench_wire::stored::COLLECTION, collection_options(majority, limits));
        let store = Self { uri: uri.to_owned(), client, messages, heads: Default::default(), limits, majority };
        store.ensure_indexes().await?;
        Ok(store)
    }

    /// Create the unique `(room, id)` index and the `(room, seq)` index if
    /// missing (also after the collection was dropped under a running node).
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let unique_id = IndexModel::builder()
            .keys(doc! {ROOM: 1, ID: 1})
            .options(IndexOptions::builder().unique(true).name("room_id_unique".to_owned()).build())
            .build();
        self.messages.create_index(unique_id).await.map_err(|e| self.err(e))?;
        let by_seq = IndexModel::builder().keys(doc! {ROOM: 1, SEQ: 1}).build();
        self.messages.create_index(by_seq).await.map_err(|e| self.err(e))?;
        Ok(())
    }

    fn err(&self, source: mongodb::error::Error) -> StoreError {
        StoreError::Mongo { uri: self.uri.clone(), source }
    }

    pub fn messages(&self) -> &Collection<MessageDoc> {
        &self.messages
    }

    /// Room head hints held (bounded by `max_room_heads`).
    pub fn room_heads(&self) -> usize {
        self.heads.lock().expect("heads lock is never held across a panic").len()
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client.database("admin").run_command(doc! {"ping": 1}).await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The highest stored `seq` of a room (0 when the room is empty). Only
    /// `seq` is read, so a stray document in the collection (written by
    /// another tool) cannot make the room unreadable.
    pub async fn head(&self, room: &RoomId) -> Result<Seq, StoreError> {
        let last = self
            .messages
            .clone_with_type::<mongodb::bson::Document>()
            .find_one(doc! {ROOM: room.as_str(), SEQ: {"$exists": true}})
            .sort(doc! {SEQ: -1})
            .projection(doc! {"_id": 0, SEQ: 1})
            .await
            .map_err(|e| self.err(e))?;
        let seq = match last.as_ref().and_then(|d| d.get(SEQ)) {
            Some(mongodb::bson::Bson::Int64(n)) => (*n).max(0) as u64,
            Some(mongodb::bson::Bson::Int32(n)) => (*n).max(0) as u64,
            _ => 0,
        };
        Ok(Seq(seq))
    }

    async fn find_by_id(&self, room: &RoomId, id: &MsgId) -> Result<Option<MessageDoc>, StoreError> {
        self.messages.find_one(doc! {ROOM: room.as_str(), ID: id.as_str()}).await.map_err(|e| self.err(e))
    }

    fn room_head(&self, room: &RoomId) -> Arc<RoomHead> {
        let mut heads = self.heads.lock().expect("heads lock is never held across a panic");
        if heads.len() >= self.limits.max_room_heads && !heads.contains_key(room) {
            // Drop idle hints (nobody holds them): they are only hints.
            heads.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        heads.entry(room.clone()).or_default().clone()
    }

    /// A message of `room` at `seq` exists (the fan-out saw it): later sends
    /// to the room start after it. Cheap: no lock is awaited.
    pub fn observe(&self, room: &str, seq: u64) {
        let heads = self.heads.lock().expect("heads lock is never held across a panic");
        if let Some(slot) = heads.get(room) {
            slot.hint.fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
        } else if heads.len() < self.limits.max_room_heads {
            drop(heads);
            if let Ok(room) = RoomId::parse(room) {
                self.room_head(&room).hint.fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Forget every hint (the collection was dropped: old `seq`s are gone).
    pub fn forget_heads(&self) {
        self.heads.lock().expect("heads lock is never held across a panic").clear();
    }

    /// Store a send once. A resend of a stored `id` returns its original `seq`.
    pub async fn insert(&self, room: &RoomId, id: &MsgId, body: &str, node: &str) -> Result<Stored, StoreError> {
        let slot = self.room_head(room);
        let _serialized = slot.lock.lock().await;
        self.insert_locked(&slot.hint, room, id, body, node).await
    }

    async fn insert_locked(
        &self,
        hint: &std::sync::atomic::AtomicU64,
        room: &RoomId,
        id: &MsgId,
        body: &str,
        node: &str,
    ) -> Result<Stored, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let known = hint.load(Relaxed);
        let mut next: Option<u64> = (known > 0).then_some(known + 1);
        let mut walked = 0u32;
        let mut head_reads = 0u32;
        // Every pass after the first follows a clash.
        for race in 0..MAX_SEQ_RACES {
            let clashes = race as u32;
            if race >= RACES_BEFORE_BACKOFF && walked == 0 {
                tokio::time::sleep(Duration::from_millis((race as u64).min(50))).await;
            }
            let seq = match next {
                Some(seq) => seq,
                None => {
                    head_reads += 1;
                    self.head(room).await?.0 + 1
                }
            };
            let doc = MessageDoc {
                key: format!("{room}/{seq}"),
                room: room.as_str().to_owned(),
                seq: seq as i64,
                id: id.as_str().to_owned(),
                body: body.to_owned(),
                node: node.to_owned(),
                ts_ms: now_ms(),
            };
            let error = match self.messages.insert_one(&doc).await {
                Ok(_) => {
                    hint.fetch_max(seq, Relaxed);
                    return Ok(Stored { seq: Seq(seq), clashes, head_reads, fresh: true, message: ChatMessage::from(doc) });
                }
                Err(e) if is_duplicate_key(&e) => e,
                Err(e) => return Err(self.err(e)),
            };
            match after_clash(clash_of(&error.to_string()), seq, walked) {
                Retry::At(following) => {
                    // Another node stored `seq`: it exists, so the next one
                    // is ours to try — no read needed (and never below what
                    // the fan-out has shown since).
                    hint.fetch_max(seq, Relaxed);
                    walked += 1;
                    next = Some(following.max(hint.load(Relaxed) + 1));
                }
                Retry::ReadHead => {
                    walked = 0;
                    next = None;
                }
                Retry::Lookup => {
                    walked = 0;
                    if let Some(existing) = self.find_by_id(room, id).await? {
                        let seq = Seq(existing.seq.max(0) as u64);
                        return Ok(Stored { seq, clashes, head_reads, fresh: false, message: ChatMessage::from(existing) });
                    }
                    // Not visible yet (a majority read trails the first
                    // insert of a resend), or another node took `seq`.
                    next = None;
                }
            }
        }
        Err(StoreError::Contended { room: room.to_string(), attempts: MAX_SEQ_RACES })
    }

    /// Messages of a room with `seq > after`, in `seq` order: at most
    /// `limit` messages and about `max_bytes` of bodies (always at least one
    /// message), read from the cursor without materializing more.
    pub async fn history(&self, room: &RoomId, after: Seq, limit: u32, max_bytes: usize) -> Result<HistoryPage, StoreError> {
        // Past i64::MAX nothing is stored (seqs are stored as i64).
        let Ok(after) = i64::try_from(after.0) else {
            return Ok(HistoryPage::default());
        };
        let mut cursor = self
            .messages
            .find(doc! {ROOM: room.as_str(), SEQ: {"$gt": after}})
            .sort(doc! {SEQ: 1})
            .limit(i64::from(limit))
            .batch_size(100)
            .await
            .map_err(|e| self.err(e))?;
        let mut page = HistoryPage::default();
        let mut bytes = 0usize;
        while let Some(doc) = cursor.try_next().await.map_err(|e| self.err(e))? {
            bytes += doc.body.len() + doc.id.len() + doc.room.len() + 64;
            page.messages.push(ChatMessage::from(doc));
            if page.messages.len() >= limit as usize || bytes >= max_bytes {
                page.more = true;
                break;
            }
        }
        Ok(page)
    }
}

/// Majority writes (with `wtimeout`) and majority reads on a replica set.
fn collection_options(majority: bool, limits: StoreLimits) -> CollectionOptions {
    let mut options = CollectionOptions::default();
    if majority {
        options.write_concern = Some(WriteConcern::builder().w(Acknowledgment::Majority).w_timeout(limits.write_timeout).build());
        options.read_concern = Some(ReadConcern::majority());
    }
    options
}

/// Which unique key a duplicate-key error hit, from its message (MongoDB:
/// `... index: _id_ dup key ...` / `index: room_id_unique`; nx-27017:
/// `UNIQUE constraint failed: messages._id` / `index 'idx_messages_room_id'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clash {
    /// `_id` = `room/seq`: another insert took this `seq`.
    Seq,
    /// `(room, id)`: this message is stored already (a resend).
    Id,
    /// Not recognised: look the message up, then re-read the head.
    Unknown,
}

pub fn clash_of(message: &str) -> Clash {
    if message.contains("room_id") {
        Clash::Id
    } else if message.contains("index: _id_") || message.contains("._id") {
        Clash::Seq
    } else {
        Clash::Unknown
    }
}

/// The next attempt after an insert at `seq` clashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Insert at this `seq` (the clashing one exists).
    At(u64),
    /// Read the room's head and insert after it.
    ReadHead,
    /// Look the message up by its `id` (a resend is answered with its `seq`).
    Lookup,
}

/// After this many seq clashes in a row, read the head instead of walking.
pub const MAX_WALK: u32 = 8;

/// What seq allocation does after a clash: walk one step past a taken
/// `seq` (it exists, so `seq + 1` keeps the sequence gap-free), up to
/// [`MAX_WALK`] steps; answer a resend from the stored message; read the
/// head when unsure. Pure: the store's loop carries it out.
pub fn after_clash(clash: Clash, seq: u64, walked: u32) -> Retry {
    match clash {
        Clash::Seq if walked < MAX_WALK => Retry::At(seq + 1),
        Clash::Seq => Retry::ReadHead,
        Clash::Id | Clash::Unknown => Retry::Lookup,
    }
}

pub fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    match &*error.kind {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        _ => false,
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clashes_are_told_apart_from_mongodb_and_nx_messages() {
        let mongo_seq = "E11000 duplicate key error collection: chat.messages index: _id_ dup key: { _id: \"r/7\" }";
        let mongo_id = "E11000 duplicate key error collection: chat.messages index: room_id_unique dup key: { room: \"r\", id: \"m1\" }";
        assert_eq!(clash_of(mongo_seq), Clash::Seq);
        assert_eq!(clash_of(mongo_id), Clash::Id);
        assert_eq!(clash_of("UNIQUE constraint failed: messages._id"), Clash::Seq);
        assert_eq!(clash_of("UNIQUE constraint failed: index 'idx_messages_room_id'"), Clash::Id);
        assert_eq!(clash_of("E11000 something else"), Clash::Unknown);
    }

    #[test]
    fn a_taken_seq_walks_forward_then_reads_the_head_and_a_resend_is_looked_up() {
        assert_eq!(after_clash(Clash::Seq, 7, 0), Retry::At(8));
        assert_eq!(after_clash(Clash::Seq, 7, MAX_WALK - 1), Retry::At(8));
        assert_eq!(after_clash(Clash::Seq, 7, MAX_WALK), Retry::ReadHead);
        assert_eq!(after_clash(Clash::Id, 7, 0), Retry::Lookup);
        assert_eq!(after_clash(Clash::Unknown, 7, 3), Retry::Lookup);
    }

    #[test]
    fn replica_sets_get_majority_reads_and_writes_with_a_timeout() {
        let limits = StoreLimits { write_timeout: Duration::from_secs(7), max_room_heads: 10, max_pool_size: None };
        let o = collection_options(true, limits);
        let wc = o.write_concern.expect("majority writes");
        assert_eq!(wc.w, Some(Acknowledgment::Majority));
        assert_eq!(wc.w_timeout, Some(Duration::from_secs(7)));
        assert_eq!(o.read_concern, Some(ReadConcern::majority()));
        let standalone = collection_options(false, limits);
        assert!(standalone.write_concern.is_none() && standalone.read_concern.is_none());
    }
}
