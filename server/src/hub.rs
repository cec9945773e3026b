//! The hub: which connection on this node is subscribed to which room, and
//! the one place a stored message is handed to local subscribers.
//!
//! A message is serialized once per node (by the caller) and its bytes are
//! shared; per subscriber the hub only pushes onto that connection's queue,
//! bounded in frames and in bytes. A full queue marks the connection as a
//! slow consumer, which its handler then closes. The hub does not order or
//! de-duplicate: each connection does that (see `resequencer`).

use crate::protocol::RoomId;
use axum::extract::ws::Utf8Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{Notify, mpsc, watch};

pub(crate) type ConnId = u64;

/// A stored message of a room a connection subscribed to, as queued for it.
#[derive(Debug)]
pub struct Outbound {
    pub room: Arc<str>,
    pub seq: u64,
    pub frame: Utf8Bytes,
    /// When the fan-out handed it to the hub (event → socket write is
    /// measured from here).
    pub at: std::time::Instant,
}

/// The queue and slow-consumer signal of one connection.
#[derive(Clone)]
pub struct ConnHandle {
    tx: mpsc::Sender<Outbound>,
    pub slow: Arc<Notify>,
    /// Bytes of frames queued and not yet taken by the connection.
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl ConnHandle {
    /// A queue of at most `frames` frames and `max_bytes` bytes (a single
    /// frame larger than that still fits into an empty queue).
    pub fn channel(frames: usize, max_bytes: usize) -> (ConnHandle, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(frames.max(1));
        (ConnHandle { tx, slow: Arc::new(Notify::new()), queued_bytes: Arc::new(AtomicUsize::new(0)), max_bytes }, rx)
    }

    /// The connection took `out` off its queue.
    pub fn taken(&self, out: &Outbound) {
        self.queued_bytes.fetch_sub(out.frame.len(), Ordering::Relaxed);
    }

    /// Queue one frame; false when the queue is full (frames or bytes).
    fn push(&self, out: Outbound) -> Result<(), mpsc::error::TrySendError<Outbound>> {
        let len = out.frame.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before + len > self.max_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(mpsc::error::TrySendError::Full(out));
        }
        self.tx.try_send(out).inspect_err(|_| {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        })
    }
}

#[derive(Default)]
struct Rooms {
    by_room: HashMap<Arc<str>, HashMap<ConnId, ConnHandle>>,
}

pub struct Hub {
    rooms: RwLock<Rooms>,
    next_conn: AtomicU64,
    /// Bumped whenever the fan-out source may have missed events (a stream
    /// re-opened); connections then re-check their rooms against history.
    resync: watch::Sender<u64>,
}

/// Result of handing one message to the hub.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FanoutCount {
    pub queued: usize,
    pub slow: usize,
}

impl Default for Hub {
    fn default() -> Self {
        Self { rooms: Default::default(), next_conn: AtomicU64::new(1), resync: watch::channel(0).0 }
    }
}

impl Hub {
    pub fn new_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub fn subscribe(&self, room: &RoomId, conn: ConnId, handle: ConnHandle) {
        let mut rooms = self.rooms.write().expect("hub lock is never held across a panic");
        let key: Arc<str> = match rooms.by_room.get_key_value(room.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(room.as_str()),
        };
        rooms.by_room.entry(key).or_default().insert(conn, handle);
    }

    pub fn unsubscribe(&self, room: &str, conn: ConnId) -> bool {
        let mut rooms = self.rooms.write().expect("hub lock is never held across a panic");
        let Some(members) = rooms.by_room.get_mut(room) else {
            return false;
        };
        let removed = members.remove(&conn).is_some();
        if members.is_empty() {
            rooms.by_room.remove(room);
        }
        removed
    }

    pub fn subscription_count(&self) -> usize {
        let rooms = self.rooms.read().expect("hub lock is never held across a panic");
        rooms.by_room.values().map(HashMap::len).sum()
    }

    /// Hand one serialized message to every local subscriber of `room`.
    pub fn fanout(&self, room: &str, seq: u64, frame: &Utf8Bytes) -> FanoutCount {
        let rooms = self.rooms.read().expect("hub lock is never held across a panic");
        let Some((key, members)) = rooms.by_room.get_key_value(room) else {
            return FanoutCount::default();
        };
        let mut count = FanoutCount::default();
        let at = std::time::Instant::now();
        for handle in members.values() {
            let item = Outbound { room: key.clone(), seq, frame: frame.clone(), at };
            match handle.push(item) {
                Ok(()) => count.queued += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    handle.slow.notify_one();
                    count.slow += 1;
                }
                // The connection is going away; its handler unsubscribes it.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        count
    }

    /// `--sabotage leak` (test only): hand the message to every connection
    /// of the node, whatever it subscribed to.
    pub fn fanout_to_all(&self, room: &str, seq: u64, frame: &Utf8Bytes) -> FanoutCount {
        let rooms = self.rooms.read().expect("hub lock is never held across a panic");
        let key: Arc<str> = Arc::from(room);
        let mut seen = std::collections::HashSet::new();
        let mut count = FanoutCount::default();
        let at = std::time::Instant::now();
        for (conn, handle) in rooms.by_room.values().flat_map(|m| m.iter()) {
            if seen.insert(*conn) && handle.push(Outbound { room: key.clone(), seq, frame: frame.clone(), at }).is_ok() {
                count.queued += 1;
            }
        }
        count
    }

    /// `--sabotage auth_wildcard` (test only): hand the message to every
    /// connection subscribed to a pattern that covers `room` too.
    pub fn fanout_to_patterns(&self, room: &str, seq: u64, frame: &Utf8Bytes) -> FanoutCount {
        let rooms = self.rooms.read().expect("hub lock is never held across a panic");
        let key: Arc<str> = Arc::from(room);
        let mut count = FanoutCount::default();
        let at = std::time::Instant::now();
        let covering =
            rooms.by_room.iter().filter(|(p, _)| crate::protocol::is_room_pattern(p) && crate::protocol::pattern_covers(p, room));
        for handle in covering.flat_map(|(_, members)| members.values()) {
            if handle.push(Outbound { room: key.clone(), seq, frame: frame.clone(), at }).is_ok() {
                count.queued += 1;
            }
        }
        count
    }

    pub fn request_resync(&self) {
        self.resync.send_modify(|epoch| *epoch += 1);
    }

    pub fn resync_signal(&self) -> watch::Receiver<u64> {
        self.resync.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(capacity: usize) -> (ConnHandle, mpsc::Receiver<Outbound>) {
        ConnHandle::channel(capacity, 1 << 20)
    }

    #[tokio::test]
    async fn fanout_reaches_only_subscribers_of_the_room_and_shares_bytes() {
        let hub = Hub::default();
        let room = RoomId::parse("r1").unwrap();
        let other = RoomId::parse("r2").unwrap();
        let (a, mut rx_a) = handle(4);
        let (b, mut rx_b) = handle(4);
        hub.subscribe(&room, 1, a);
        hub.subscribe(&other, 2, b);
        let frame = Utf8Bytes::from("{\"op\":\"msg\"}");
        assert_eq!(hub.fanout("r1", 1, &frame), FanoutCount { queued: 1, slow: 0 });
        let Outbound { room, seq, frame: got, .. } = rx_a.try_recv().unwrap();
        assert_eq!((&*room, seq), ("r1", 1));
        assert_eq!(got.as_str().as_ptr(), frame.as_str().as_ptr(), "bytes are shared, not copied");
        assert!(rx_b.try_recv().is_err());
        assert!(hub.unsubscribe("r1", 1));
        assert_eq!(hub.fanout("r1", 2, &frame), FanoutCount::default());
        assert_eq!(hub.subscription_count(), 1);
    }

    #[tokio::test]
    async fn full_queue_flags_a_slow_consumer() {
        let hub = Hub::default();
        let room = RoomId::parse("r").unwrap();
        let (a, _rx) = handle(1);
        let slow = a.slow.clone();
        hub.subscribe(&room, 1, a);
        let frame = Utf8Bytes::from("x");
        assert_eq!(hub.fanout("r", 1, &frame).queued, 1);
        assert_eq!(hub.fanout("r", 2, &frame), FanoutCount { queued: 0, slow: 1 });
        tokio::time::timeout(std::time::Duration::from_secs(1), slow.notified()).await.expect("slow consumer notified");
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_too_and_taking_frees_them() {
        let hub = Hub::default();
        let room = RoomId::parse("r").unwrap();
        let (a, mut rx) = ConnHandle::channel(1000, 10);
        hub.subscribe(&room, 1, a.clone());
        let frame = Utf8Bytes::from("123456");
        assert_eq!(hub.fanout("r", 1, &frame).queued, 1);
        assert_eq!(hub.fanout("r", 2, &frame), FanoutCount { queued: 0, slow: 1 }, "12 bytes > 10");
        let out = rx.try_recv().unwrap();
        a.taken(&out);
        assert_eq!(hub.fanout("r", 3, &frame).queued, 1);
        let big = Utf8Bytes::from("x".repeat(100));
        let (b, _rx) = ConnHandle::channel(1000, 10);
        hub.subscribe(&RoomId::parse("q").unwrap(), 2, b);
        assert_eq!(hub.fanout("q", 1, &big).queued, 1, "one frame larger than the bound fits an empty queue");
    }
}
