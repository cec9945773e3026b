//! The hub: which connection on this node is subscribed to which room, and
//! the one place a stored message is handed to local subscribers.
//!
//! A message is serialized once per node (by the caller) and its bytes are
//! shared; per subscriber the hub only pushes onto that connection's bounded
//! queue. A full queue marks the connection as a slow consumer, which its
//! handler then closes. The hub does not order or de-duplicate: each
//! connection does that against its own next expected `seq` (see `ws`).

use crate::protocol::RoomId;
use axum::extract::ws::Utf8Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{Notify, mpsc, watch};

pub type ConnId = u64;

/// What a connection's writer receives.
#[derive(Debug)]
pub enum Outbound {
    /// A stored message of a room the connection subscribed to.
    Live { room: Arc<str>, seq: u64, frame: Utf8Bytes },
    /// A reply to this connection's own request (ack, error, subscribed, ...).
    Reply(Utf8Bytes),
}

/// The queue and slow-consumer signal of one connection.
#[derive(Clone)]
pub struct ConnHandle {
    pub tx: mpsc::Sender<Outbound>,
    pub slow: Arc<Notify>,
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
        for handle in members.values() {
            let item = Outbound::Live { room: key.clone(), seq, frame: frame.clone() };
            match handle.tx.try_send(item) {
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
        let (tx, rx) = mpsc::channel(capacity);
        (ConnHandle { tx, slow: Arc::new(Notify::new()) }, rx)
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
        match rx_a.try_recv().unwrap() {
            Outbound::Live { room, seq, frame: got } => {
                assert_eq!((&*room, seq), ("r1", 1));
                assert_eq!(got.as_str().as_ptr(), frame.as_str().as_ptr(), "bytes are shared, not copied");
            }
            other => panic!("unexpected {other:?}"),
        }
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
}
