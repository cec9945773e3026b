//! Per-connection, per-room delivery order as a pure state machine: no I/O,
//! no clock. The connection feeds it live frames, history pages, fetch
//! failures, retries and re-syncs; it answers what to write, what to skip
//! and which history to fetch next. Whatever the interleaving — duplicates,
//! gaps, frames from a re-opened stream, pages that lag the live stream —
//! every `seq` from the start is written exactly once, in order.
//!
//! Live mode: `seq == next` is written, below is a duplicate, above is a gap,
//! which switches to filling. Filling: history is fetched from `next`, one
//! fetch at a time; live frames above `next` are dropped (history has them,
//! so memory stays bounded) while the highest one is remembered as the
//! target; back to live once history has caught up past the target.

/// What to do with a live frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveStep {
    /// Write it (it is the next one owed).
    Write,
    /// Drop it: a duplicate, or history will bring it.
    Skip,
    /// Drop it and fetch history with `seq > after` (a gap opened).
    Fetch { after: u64 },
}

/// What to do with one message of a history page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStep {
    Write,
    Skip,
    /// History itself skips a `seq` here: stop reading the page.
    Hole,
}

/// What to do once a history page (or a fetch failure) is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Fetch history with `seq > after` now.
    Fetch { after: u64 },
    /// Fetch again after a pause (history lags, has a hole, or failed).
    FetchLater,
    /// Caught up: live frames flow again.
    Live,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fill {
    /// A fetch is out (its page will come back).
    in_flight: bool,
    /// Highest `seq` known to exist (from live frames or the head).
    target: u64,
    /// A re-sync arrived while a fetch was out: fetch once more after it.
    again: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resequencer {
    next: u64,
    fill: Option<Fill>,
}

impl Resequencer {
    /// A subscription confirmed at `head`, owed every `seq > after` (`after`
    /// defaults to `head`). `seen` is the highest live `seq` dropped while the
    /// head was being read. Returns the first fetch when history is owed.
    pub fn subscribed(head: u64, after: Option<u64>, seen: u64) -> (Self, Option<u64>) {
        let start = after.unwrap_or(head);
        let target = head.max(seen);
        let mut r = Self { next: start + 1, fill: None };
        if target > start {
            r.fill = Some(Fill { in_flight: true, target, again: false });
            return (r, Some(start));
        }
        (r, None)
    }

    /// The next `seq` owed.
    pub fn next(&self) -> u64 {
        self.next
    }

    #[cfg(test)]
    pub fn is_live(&self) -> bool {
        self.fill.is_none()
    }

    pub fn on_live(&mut self, seq: u64) -> LiveStep {
        if seq < self.next {
            return LiveStep::Skip;
        }
        if seq == self.next {
            // Exactly the next one: write it even while filling (a page
            // that also holds it will skip it).
            self.next += 1;
            return LiveStep::Write;
        }
        match &mut self.fill {
            Some(fill) => {
                fill.target = fill.target.max(seq);
                LiveStep::Skip
            }
            None => {
                self.fill = Some(Fill { in_flight: true, target: seq, again: false });
                LiveStep::Fetch { after: self.next - 1 }
            }
        }
    }

    /// One message of a fetched page, in page order.
    pub fn on_page_message(&mut self, seq: u64) -> PageStep {
        if seq < self.next {
            PageStep::Skip
        } else if seq == self.next {
            self.next += 1;
            PageStep::Write
        } else {
            PageStep::Hole
        }
    }

    /// The page is done: `full` when it held as many messages as asked
    /// for (more may follow), `hole` when it stopped at a hole.
    pub fn on_page_done(&mut self, full: bool, hole: bool) -> Then {
        let Some(fill) = &mut self.fill else {
            return Then::Live; // a stale page after an unsubscribe/resubscribe
        };
        fill.in_flight = false;
        let then = if hole {
            Then::FetchLater
        } else if full || fill.again {
            fill.again = false;
            Then::Fetch { after: self.next - 1 }
        } else if self.next > fill.target {
            self.fill = None;
            return Then::Live;
        } else {
            // History does not show what the live stream already did.
            Then::FetchLater
        };
        if let (Then::Fetch { .. }, Some(fill)) = (then, &mut self.fill) {
            fill.in_flight = true;
        }
        then
    }

    pub fn on_fetch_failed(&mut self) -> Then {
        if let Some(fill) = &mut self.fill {
            fill.in_flight = false;
        }
        Then::FetchLater
    }

    /// A `FetchLater` pause is over: the fetch to make now, if any.
    pub fn on_retry(&mut self) -> Option<u64> {
        let fill = self.fill.as_mut()?;
        if fill.in_flight {
            return None;
        }
        fill.in_flight = true;
        Some(self.next - 1)
    }

    /// The fan-out source may have missed events (a stream re-opened, a
    /// broker came back): check history from `next` once more.
    pub fn on_resync(&mut self) -> Option<u64> {
        match &mut self.fill {
            None => {
                self.fill = Some(Fill { in_flight: true, target: self.next - 1, again: false });
                Some(self.next - 1)
            }
            Some(fill) if fill.in_flight => {
                fill.again = true;
                None
            }
            // Waiting for a retry, which fetches after this re-sync anyway.
            Some(_) => None,
        }
    }

    /// Whether a retry is due (filling, nothing in flight).
    #[cfg(test)]
    pub fn waiting(&self) -> bool {
        self.fill.is_some_and(|f| !f.in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn live_in_order_is_written_duplicates_skipped_and_a_gap_fetches() {
        let (mut r, fetch) = Resequencer::subscribed(3, None, 0);
        assert_eq!(fetch, None);
        assert_eq!(r.on_live(3), LiveStep::Skip);
        assert_eq!(r.on_live(4), LiveStep::Write);
        assert_eq!(r.on_live(4), LiveStep::Skip);
        assert_eq!(r.on_live(7), LiveStep::Fetch { after: 4 });
        assert_eq!(r.on_live(8), LiveStep::Skip, "dropped while filling; history brings it");
        assert_eq!(r.on_live(5), LiveStep::Write, "the next one is written even while filling");
        for (seq, step) in [(5, PageStep::Skip), (6, PageStep::Write), (7, PageStep::Write), (8, PageStep::Write)] {
            assert_eq!(r.on_page_message(seq), step);
        }
        assert_eq!(r.on_page_done(false, false), Then::Live);
        assert_eq!(r.on_live(9), LiveStep::Write);
    }

    #[test]
    fn after_below_head_catches_up_in_pages_and_history_lag_waits() {
        let (mut r, fetch) = Resequencer::subscribed(10, Some(2), 0);
        assert_eq!(fetch, Some(2));
        for seq in 3..=5 {
            assert_eq!(r.on_page_message(seq), PageStep::Write);
        }
        assert_eq!(r.on_page_done(true, false), Then::Fetch { after: 5 });
        for seq in 6..=9 {
            assert_eq!(r.on_page_message(seq), PageStep::Write);
        }
        // History does not show 10 yet (the head said it exists): wait.
        assert_eq!(r.on_page_done(false, false), Then::FetchLater);
        assert!(r.waiting());
        assert_eq!(r.on_retry(), Some(9));
        assert_eq!(r.on_page_message(10), PageStep::Write);
        assert_eq!(r.on_page_done(false, false), Then::Live);
    }

    #[test]
    fn a_resync_during_a_fetch_fetches_once_more() {
        let (mut r, _) = Resequencer::subscribed(0, None, 0);
        assert_eq!(r.on_resync(), Some(0));
        assert_eq!(r.on_resync(), None, "one fetch at a time");
        assert_eq!(r.on_page_done(false, false), Then::Fetch { after: 0 });
        assert_eq!(r.on_page_done(false, false), Then::Live);
        assert_eq!(r.on_fetch_failed(), Then::FetchLater);
    }

    #[test]
    fn a_hole_in_history_stops_the_page_and_retries() {
        let (mut r, _) = Resequencer::subscribed(5, Some(0), 0);
        assert_eq!(r.on_page_message(1), PageStep::Write);
        assert_eq!(r.on_page_message(3), PageStep::Hole);
        assert_eq!(r.on_page_done(false, true), Then::FetchLater);
        assert_eq!(r.next(), 2);
    }

    /// A simulated room and the fan-out source in front of one subscriber.
    #[derive(Debug, Clone)]
    enum Op {
        /// The next message is stored (visible to history at once).
        Commit,
        /// The stream delivers the pending live frame at this index
        /// (mod the pending count) now, possibly a second time.
        Deliver(usize, bool),
        /// The stream lost its pending frames and re-opened.
        Resync,
        /// An outstanding fetch completes (with history as of now) or fails.
        CompleteFetch(bool),
        /// A retry timer fires.
        Retry,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Commit),
            4 => (any::<usize>(), any::<bool>()).prop_map(|(i, twice)| Op::Deliver(i, twice)),
            1 => Just(Op::Resync),
            3 => any::<bool>().prop_map(Op::CompleteFetch),
            1 => Just(Op::Retry),
        ]
    }

    struct World {
        committed: u64,
        pending_live: Vec<u64>,
        fetch: Option<u64>,
        page: usize,
        written: Vec<u64>,
    }

    impl World {
        fn live(&mut self, r: &mut Resequencer, seq: u64) {
            match r.on_live(seq) {
                LiveStep::Write => self.written.push(seq),
                LiveStep::Skip => {}
                LiveStep::Fetch { after } => self.start(after),
            }
        }

        fn start(&mut self, after: u64) {
            assert!(self.fetch.is_none(), "one fetch at a time");
            self.fetch = Some(after);
        }

        fn then(&mut self, then: Then) {
            if let Then::Fetch { after } = then {
                self.start(after);
            }
        }

        fn complete(&mut self, r: &mut Resequencer, fail: bool) {
            let Some(after) = self.fetch.take() else { return };
            if fail {
                r.on_fetch_failed();
                return;
            }
            let page: Vec<u64> = (after + 1..=self.committed).take(self.page).collect();
            let full = page.len() == self.page;
            let mut hole = false;
            for seq in page {
                match r.on_page_message(seq) {
                    PageStep::Write => self.written.push(seq),
                    PageStep::Skip => {}
                    PageStep::Hole => {
                        hole = true;
                        break;
                    }
                }
            }
            let then = r.on_page_done(full, hole);
            self.then(then);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the stream does (reorder, duplicate, lose frames before
        /// a re-sync) and however fetches interleave, the subscriber gets
        /// every seq from its start exactly once and in order.
        #[test]
        fn every_seq_from_the_start_is_written_once_in_order(
            head in 0u64..5,
            after in proptest::option::of(0u64..5),
            page in 1usize..4,
            ops in proptest::collection::vec(op(), 0..120),
        ) {
            let after = after.map(|a| a.min(head));
            let (mut r, fetch) = Resequencer::subscribed(head, after, 0);
            let mut w = World { committed: head, pending_live: Vec::new(), fetch, page, written: Vec::new() };
            for op in ops {
                match op {
                    Op::Commit => {
                        w.committed += 1;
                        w.pending_live.push(w.committed);
                    }
                    Op::Deliver(i, twice) if !w.pending_live.is_empty() => {
                        let seq = w.pending_live.remove(i % w.pending_live.len());
                        w.live(&mut r, seq);
                        if twice {
                            w.live(&mut r, seq);
                        }
                    }
                    Op::Deliver(..) => {}
                    Op::Resync => {
                        w.pending_live.clear();
                        if let Some(after) = r.on_resync() {
                            w.start(after);
                        }
                    }
                    Op::CompleteFetch(fail) => w.complete(&mut r, fail),
                    Op::Retry => {
                        if let Some(after) = r.on_retry() {
                            w.start(after);
                        }
                    }
                }
                let start = after.unwrap_or(head);
                let expected: Vec<u64> = (start + 1..start + 1 + w.written.len() as u64).collect();
                prop_assert_eq!(&w.written, &expected, "written out of order or twice");
            }
            // Quiesce: the stream delivers what it still holds, then fetches
            // and retries run until nothing is left to do.
            for seq in std::mem::take(&mut w.pending_live) {
                w.live(&mut r, seq);
            }
            for _ in 0..1000 {
                if w.fetch.is_some() {
                    w.complete(&mut r, false);
                } else if let Some(after) = r.on_retry() {
                    w.start(after);
                } else {
                    break;
                }
            }
            let start = after.unwrap_or(head);
            prop_assert_eq!(w.written, (start + 1..=w.committed).collect::<Vec<_>>());
            prop_assert!(r.is_live());
        }
    }
}
