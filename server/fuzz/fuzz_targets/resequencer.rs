//! The resequencer driven by arbitrary interleavings of commits, live
//! frames (reordered, duplicated, lost before a re-sync), fetch results,
//! failures and retries: what it writes is always the next seqs in order,
//! and once everything settles it has written every seq exactly once.
#![no_main]

use arbitrary::Arbitrary;
use chatbench_server::resequencer::{LiveStep, PageStep, Resequencer, Then};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Op {
    Commit,
    Deliver(u8, bool),
    Resync,
    CompleteFetch(bool),
    Retry,
}

#[derive(Debug, Arbitrary)]
struct Input {
    head: u8,
    after: Option<u8>,
    page: u8,
    ops: Vec<Op>,
}

struct World {
    committed: u64,
    pending: Vec<u64>,
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
        if let Then::Fetch { after } = r.on_page_done(full, hole) {
            self.start(after);
        }
    }
}

fuzz_target!(|input: Input| {
    let head = u64::from(input.head);
    let after = input.after.map(|a| u64::from(a).min(head));
    let start = after.unwrap_or(head);
    let (mut r, fetch) = Resequencer::subscribed(head, after, 0);
    let mut w = World { committed: head, pending: Vec::new(), fetch, page: usize::from(input.page % 8) + 1, written: Vec::new() };
    for op in input.ops.into_iter().take(500) {
        match op {
            Op::Commit => {
                w.committed += 1;
                w.pending.push(w.committed);
            }
            Op::Deliver(i, twice) if !w.pending.is_empty() => {
                let seq = w.pending.remove(usize::from(i) % w.pending.len());
                w.live(&mut r, seq);
                if twice {
                    w.live(&mut r, seq);
                }
            }
            Op::Deliver(..) => {}
            Op::Resync => {
                w.pending.clear();
                if let Some(a) = r.on_resync() {
                    w.start(a);
                }
            }
            Op::CompleteFetch(fail) => w.complete(&mut r, fail),
            Op::Retry => {
                if let Some(a) = r.on_retry() {
                    w.start(a);
                }
            }
        }
        assert!(w.written.iter().enumerate().all(|(i, &s)| s == start + 1 + i as u64), "written out of order or twice");
    }
    for seq in std::mem::take(&mut w.pending) {
        w.live(&mut r, seq);
    }
    for _ in 0..10_000 {
        if w.fetch.is_some() {
            w.complete(&mut r, false);
        } else if let Some(a) = r.on_retry() {
            w.start(a);
        } else {
            break;
        }
    }
    assert_eq!(w.written, (start + 1..=w.committed).collect::<Vec<_>>());
});
