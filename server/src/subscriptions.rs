//! The rooms one connection is subscribed to, as a pure state machine: each
//! subscription waits for its room's head, then flows through a
//! [`Resequencer`], fetching history where live frames leave a gap.
//!
//! It does no I/O. Each method takes an event (a subscribe request, a live
//! frame, a finished read, a timer) and returns what the connection must do
//! (join or leave the hub, read a head or a page, write, answer an error).
//! `ws.rs` runs those steps around the socket. Every read carries the
//! subscription's *generation*: a read answered after an unsubscribe or a
//! resubscribe is stale, and its result is dropped here.

use crate::protocol::{ErrorCode, FrameError, RoomId};
use crate::resequencer::{LiveStep, PageStep, Resequencer, Then};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// Pause before fetching history again when it lags, has a hole or failed.
pub(crate) const FETCH_RETRY: Duration = Duration::from_millis(200);

/// A subscribed room: waiting for its head, or flowing.
#[derive(Debug)]
enum Phase {
    /// The head is being read; live frames are dropped (history has them)
    /// and the highest one remembered.
    Pending {
        after: Option<u64>,
        seen: u64,
        resynced: bool,
    },
    Active {
        reseq: Resequencer,
        retry_at: Option<Instant>,
    },
}

#[derive(Debug)]
struct RoomSub {
    /// Bumped on every (re)subscribe, so a stale read's result is ignored.
    generation: u64,
    phase: Phase,
}

/// Read history of `room` with `seq > after`, for this generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fetch {
    pub room: RoomId,
    pub generation: u64,
    pub after: u64,
}

/// What a subscribe request asks of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscribing {
    /// Register with the hub first (a new room; a resubscribe is already
    /// registered). Registering before the head read means every message
    /// stored after the head reaches the connection live.
    pub join: bool,
    /// Read the room's head for this generation.
    pub generation: u64,
}

/// What to do with a live frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Live {
    /// Not subscribed (any more).
    NotSubscribed,
    /// Drop it: the head is being read (history will bring it), or it is a
    /// duplicate.
    Drop,
    Write,
    /// Drop it and read history: a gap opened.
    Fetch(Fetch),
}

/// What a finished head read asks of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Head {
    /// Unsubscribed or resubscribed meanwhile: nothing.
    Stale,
    /// The subscription is dropped: leave the hub, answer this error.
    Failed(FrameError),
    /// Confirm the subscription at `head`, then fetch what is owed.
    Subscribed { head: u64, fetch: Option<Fetch> },
}

/// What a finished history page asks of the connection, after its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PageDone {
    Stale,
    Fetch(Fetch),
    /// Caught up, or a retry is scheduled: nothing now.
    Wait,
}

/// One connection's subscriptions.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    rooms: HashMap<RoomId, RoomSub>,
    next_generation: u64,
    max: usize,
}

impl Subscriptions {
    /// At most `max` rooms at once (`--max-subscriptions`).
    pub(crate) fn new(max: usize) -> Self {
        Self { rooms: HashMap::new(), next_generation: 0, max }
    }

    pub(crate) fn contains(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    pub(crate) fn rooms(&self) -> impl Iterator<Item = &RoomId> {
        self.rooms.keys()
    }

    /// Subscribe (or resubscribe, starting over) to `room`, owed every
    /// message after `after` (default: after the head).
    pub(crate) fn subscribe(&mut self, room: &RoomId, after: Option<u64>) -> Result<Subscribing, FrameError> {
        let join = !self.rooms.contains_key(room);
        if join && self.rooms.len() >= self.max {
            return Err(room_error(
                ErrorCode::TooManySubscriptions,
                format!("this connection is subscribed to {} rooms already (the limit)", self.max),
                room,
            ));
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        self.rooms.insert(room.clone(), RoomSub { generation, phase: Phase::Pending { after, seen: 0, resynced: false } });
        Ok(Subscribing { join, generation })
    }

    /// Unsubscribe: Ok when it was subscribed (leave the hub, confirm).
    pub(crate) fn unsubscribe(&mut self, room: &RoomId) -> Result<(), FrameError> {
        match self.rooms.remove(room) {
            Some(_) => Ok(()),
            None => Err(room_error(ErrorCode::NotSubscribed, format!("not subscribed to room {room}"), room)),
        }
    }

    pub(crate) fn on_live(&mut self, room: &str, seq: u64) -> Live {
        let Some(sub) = self.rooms.get_mut(room) else { return Live::NotSubscribed };
        let after = match &mut sub.phase {
            Phase::Pending { seen, .. } => {
                *seen = (*seen).max(seq);
                return Live::Drop;
            }
            Phase::Active { reseq, .. } => match reseq.on_live(seq) {
                LiveStep::Write => return Live::Write,
                LiveStep::Skip => return Live::Drop,
                LiveStep::Fetch { after } => after,
            },
        };
        let generation = sub.generation;
        // Only a gap clones the room's name (the hot path does not).
        let room = self.rooms.get_key_value(room).map(|(k, _)| k.clone()).expect("found above");
        Live::Fetch(Fetch { room, generation, after })
    }

    /// The head read of `generation` finished (`Err`: why it failed).
    pub(crate) fn on_head(&mut self, room: &RoomId, generation: u64, result: Result<u64, impl std::fmt::Display>) -> Head {
        let Some(sub) = self.current(room, generation) else { return Head::Stale };
        let Phase::Pending { after, seen, resynced } = sub.phase else { return Head::Stale };
        let head = match result {
            Ok(head) => head,
            Err(why) => {
                self.rooms.remove(room);
                return Head::Failed(room_error(ErrorCode::StoreUnavailable, format!("could not read room head: {why}"), room));
            }
        };
        let (mut reseq, mut fetch) = Resequencer::subscribed(head, after, seen);
        if resynced {
            fetch = fetch.or_else(|| reseq.on_resync());
        }
        sub.phase = Phase::Active { reseq, retry_at: None };
        Head::Subscribed { head, fetch: fetch.map(|after| Fetch { room: room.clone(), generation, after }) }
    }

    /// One message of a history page: None when the read is stale.
    pub(crate) fn on_page_message(&mut self, room: &RoomId, generation: u64, seq: u64) -> Option<PageStep> {
        match &mut self.current(room, generation)?.phase {
            Phase::Active { reseq, .. } => Some(reseq.on_page_message(seq)),
            Phase::Pending { .. } => None,
        }
    }

    /// The highest `seq` owed next in `room` (for logs).
    pub(crate) fn owed(&self, room: &RoomId) -> Option<u64> {
        match &self.rooms.get(room)?.phase {
            Phase::Active { reseq, .. } => Some(reseq.next()),
            Phase::Pending { .. } => None,
        }
    }

    /// The page is handled; `more` pages follow, or `hole`: history skipped
    /// a seq. A retry is scheduled at `now` + [`FETCH_RETRY`] when needed.
    pub(crate) fn on_page_done(&mut self, room: &RoomId, generation: u64, more: bool, hole: bool, now: Instant) -> PageDone {
        let Some(RoomSub { phase: Phase::Active { reseq, retry_at }, .. }) = self.current(room, generation) else { return PageDone::Stale };
        match reseq.on_page_done(more, hole) {
            Then::Fetch { after } => PageDone::Fetch(Fetch { room: room.clone(), generation, after }),
            Then::FetchLater => {
                *retry_at = Some(now + FETCH_RETRY);
                PageDone::Wait
            }
            Then::Live => PageDone::Wait,
        }
    }

    /// A history read failed: retry after [`FETCH_RETRY`].
    pub(crate) fn on_page_failed(&mut self, room: &RoomId, generation: u64, now: Instant) {
        if let Some(RoomSub { phase: Phase::Active { reseq, retry_at }, .. }) = self.current(room, generation) {
            reseq.on_fetch_failed();
            *retry_at = Some(now + FETCH_RETRY);
        }
    }

    /// The fan-out may have lost frames (a resumed stream, a lagging hub):
    /// every flowing room looks at history again; a pending one does once
    /// its head arrives.
    pub(crate) fn resync_all(&mut self) -> Vec<Fetch> {
        let mut fetches = Vec::new();
        for (room, sub) in &mut self.rooms {
            match &mut sub.phase {
                Phase::Pending { resynced, .. } => *resynced = true,
                Phase::Active { reseq, .. } => {
                    fetches.extend(reseq.on_resync().map(|after| Fetch { room: room.clone(), generation: sub.generation, after }))
                }
            }
        }
        fetches
    }

    /// When the earliest history retry is due, if one is waiting.
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.rooms
            .values()
            .filter_map(|sub| match sub.phase {
                Phase::Active { retry_at, .. } => retry_at,
                Phase::Pending { .. } => None,
            })
            .min()
    }

    /// Retries due at `now`.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Fetch> {
        let mut fetches = Vec::new();
        for (room, sub) in &mut self.rooms {
            if let Phase::Active { reseq, retry_at } = &mut sub.phase
                && retry_at.is_some_and(|t| t <= now)
            {
                *retry_at = None;
                fetches.extend(reseq.on_retry().map(|after| Fetch { room: room.clone(), generation: sub.generation, after }));
            }
        }
        fetches
    }

    fn current(&mut self, room: &RoomId, generation: u64) -> Option<&mut RoomSub> {
        self.rooms.get_mut(room).filter(|s| s.generation == generation)
    }
}

fn room_error(code: ErrorCode, message: String, room: &RoomId) -> FrameError {
    let mut err = FrameError::new(code, message);
    err.room = Some(room.to_string());
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomId {
        RoomId::parse(name).unwrap()
    }

    /// A head read that answered `n`.
    fn head(n: u64) -> Result<u64, &'static str> {
        Ok(n)
    }

    fn fetch(r: &str, generation: u64, after: u64) -> Fetch {
        Fetch { room: room(r), generation, after }
    }

    #[test]
    fn live_frames_wait_for_the_head_and_history_fills_what_they_skipped() {
        let mut subs = Subscriptions::new(8);
        let r = room("r");
        assert_eq!(subs.subscribe(&r, None), Ok(Subscribing { join: true, generation: 1 }));
        // Stored after the hub registration, before the head read answered.
        assert_eq!(subs.on_live("r", 6), Live::Drop);
        assert_eq!(subs.on_live("r", 7), Live::Drop);
        // The head is 5: 6 and 7 were dropped, history owes them.
        assert_eq!(subs.on_head(&r, 1, head(5)), Head::Subscribed { head: 5, fetch: Some(fetch("r", 1, 5)) });
        assert_eq!(subs.on_page_message(&r, 1, 6), Some(PageStep::Write));
        assert_eq!(subs.on_page_message(&r, 1, 7), Some(PageStep::Write));
        assert_eq!(subs.on_page_done(&r, 1, false, false, Instant::now()), PageDone::Wait);
        assert_eq!(subs.on_live("r", 8), Live::Write);
        assert_eq!(subs.on_live("r", 8), Live::Drop, "a duplicate is dropped");
        assert_eq!(subs.on_live("r", 10), Live::Fetch(fetch("r", 1, 8)), "a gap is read from history");
    }

    #[test]
    fn a_subscription_after_a_seq_is_owed_history_from_there() {
        let mut subs = Subscriptions::new(8);
        let r = room("r");
        subs.subscribe(&r, Some(2)).unwrap();
        assert_eq!(subs.on_head(&r, 1, head(5)), Head::Subscribed { head: 5, fetch: Some(fetch("r", 1, 2)) });
        let mut caught_up = Subscriptions::new(8);
        caught_up.subscribe(&r, Some(5)).unwrap();
        assert_eq!(caught_up.on_head(&r, 1, head(5)), Head::Subscribed { head: 5, fetch: None });
        assert_eq!(caught_up.on_live("r", 6), Live::Write);
    }

    #[test]
    fn a_read_answered_after_a_resubscribe_or_unsubscribe_is_stale() {
        let mut subs = Subscriptions::new(8);
        let r = room("r");
        subs.subscribe(&r, None).unwrap();
        assert_eq!(subs.subscribe(&r, Some(0)), Ok(Subscribing { join: false, generation: 2 }), "already in the hub");
        assert_eq!(subs.on_head(&r, 1, head(3)), Head::Stale);
        assert_eq!(subs.on_head(&r, 2, head(3)), Head::Subscribed { head: 3, fetch: Some(fetch("r", 2, 0)) });
        assert_eq!(subs.on_page_message(&r, 1, 1), None, "the first generation's page");
        assert_eq!(subs.on_page_done(&r, 1, false, false, Instant::now()), PageDone::Stale);
        subs.unsubscribe(&r).unwrap();
        assert_eq!(subs.on_live("r", 4), Live::NotSubscribed);
        assert_eq!(subs.on_page_message(&r, 2, 1), None);
        assert_eq!(subs.on_head(&r, 2, head(3)), Head::Stale);
    }

    #[test]
    fn unsubscribing_a_room_not_subscribed_and_one_room_too_many_are_definite_errors() {
        let mut subs = Subscriptions::new(2);
        let err = subs.unsubscribe(&room("nope")).unwrap_err();
        assert_eq!((err.code, err.room.as_deref()), (ErrorCode::NotSubscribed, Some("nope")));
        subs.subscribe(&room("a"), None).unwrap();
        subs.subscribe(&room("b"), None).unwrap();
        let err = subs.subscribe(&room("c"), None).unwrap_err();
        assert_eq!((err.code, err.room.as_deref()), (ErrorCode::TooManySubscriptions, Some("c")));
        assert!(!subs.contains("c"));
        // A resubscribe at the limit is not a new room.
        assert!(subs.subscribe(&room("a"), Some(0)).is_ok());
    }

    #[test]
    fn a_failed_head_read_drops_the_subscription_with_an_error() {
        let mut subs = Subscriptions::new(8);
        let r = room("r");
        subs.subscribe(&r, None).unwrap();
        let Head::Failed(err) = subs.on_head(&r, 1, Err("timed out")) else { panic!("not failed") };
        assert_eq!(err.code, ErrorCode::StoreUnavailable);
        assert!(err.message.contains("timed out"));
        assert!(!subs.contains("r"));
        assert_eq!(subs.on_live("r", 1), Live::NotSubscribed);
    }

    #[test]
    fn a_failed_or_lagging_history_read_is_retried_after_the_pause() {
        let mut subs = Subscriptions::new(8);
        let r = room("r");
        subs.subscribe(&r, Some(0)).unwrap();
        subs.on_head(&r, 1, head(3));
        let t0 = Instant::now();
        assert_eq!(subs.next_retry(), None);
        subs.on_page_failed(&r, 1, t0);
        assert_eq!(subs.next_retry(), Some(t0 + FETCH_RETRY), "the connection's timer wakes for it");
        assert_eq!(subs.due(t0), vec![], "not yet");
        assert_eq!(subs.due(t0 + FETCH_RETRY), vec![fetch("r", 1, 0)]);
        assert_eq!(subs.next_retry(), None);
        assert_eq!(subs.due(t0 + FETCH_RETRY * 2), vec![], "once");
        // History that lags behind the head: look again later.
        assert_eq!(subs.on_page_message(&r, 1, 1), Some(PageStep::Write));
        assert_eq!(subs.on_page_done(&r, 1, false, false, t0), PageDone::Wait);
        assert_eq!(subs.due(t0 + FETCH_RETRY), vec![fetch("r", 1, 1)]);
        // History that skips a seq is a hole: stop, look again later.
        assert_eq!(subs.on_page_message(&r, 1, 3), Some(PageStep::Hole));
        assert_eq!(subs.on_page_done(&r, 1, false, true, t0), PageDone::Wait);
        assert_eq!(subs.due(t0 + FETCH_RETRY), vec![fetch("r", 1, 1)]);
    }

    #[test]
    fn a_resync_reads_history_now_for_flowing_rooms_and_after_the_head_for_pending_ones() {
        let mut subs = Subscriptions::new(8);
        let (a, b) = (room("a"), room("b"));
        subs.subscribe(&a, None).unwrap();
        subs.on_head(&a, 1, head(4));
        subs.subscribe(&b, None).unwrap();
        assert_eq!(subs.resync_all(), vec![fetch("a", 1, 4)]);
        assert_eq!(subs.on_head(&b, 2, head(9)), Head::Subscribed { head: 9, fetch: Some(fetch("b", 2, 9)) });
    }
}
