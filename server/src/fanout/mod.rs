//! Fan-out: how a node learns of messages stored by any node and hands them
//! to its hub. `changestream` watches one MongoDB change stream per node;
//! `kafka` (the baseline) writes to MongoDB and produces to a topic that
//! every node consumes. Both end in the same hub and resequencer.

pub mod changestream;
pub mod kafka;

use crate::AppState;
use axum::extract::ws::Utf8Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::broadcast;

pub use chatbench_wire::Mode;

/// A running node's fan-out, as sends see it: kafka mode also produces
/// every stored send to the topic.
pub enum Fanout {
    Changestream,
    Kafka(kafka::Producer),
}

impl Fanout {
    pub fn mode(&self) -> Mode {
        match self {
            Fanout::Changestream => Mode::Changestream,
            Fanout::Kafka(_) => Mode::Kafka,
        }
    }
}

/// The fan-out of one node, with what it needs.
#[derive(Debug, Clone)]
pub enum FanoutConfig {
    Changestream(changestream::ChangeStreamConfig),
    Kafka(kafka::KafkaConfig),
}

impl FanoutConfig {
    pub fn mode(&self) -> Mode {
        match self {
            FanoutConfig::Changestream(_) => Mode::Changestream,
            FanoutConfig::Kafka(_) => Mode::Kafka,
        }
    }
}

/// Run the node's fan-out until shutdown.
pub async fn run(state: Arc<AppState>, config: FanoutConfig, shutdown: broadcast::Receiver<()>) {
    match config {
        FanoutConfig::Changestream(c) => changestream::run(state, c, shutdown).await,
        FanoutConfig::Kafka(k) => kafka::run(state, k, shutdown).await,
    }
}

/// The source is open (or not): `/healthz` follows it, and the first open
/// lets `/ws` serve clients.
fn set_open(state: &AppState, open: bool) {
    state.stream_open.store(open, Ordering::SeqCst);
    if open {
        state.ready.store(true, Ordering::SeqCst);
    }
}

/// Hand one serialized message to the node's hub (both fan-out modes end
/// here). Test-only sabotage: `stop_fanout` drops it, `late` hands it over
/// that much later (in order), `leak` hands it to every connection.
pub fn hand_to_hub(state: &AppState, room: &str, seq: u64, frame: &Utf8Bytes) {
    if state.sabotage.stop_fanout {
        return;
    }
    if let Some(late) = &state.late_fanout {
        let item = Delayed { due: tokio::time::Instant::now() + state.sabotage.late, room: room.to_owned(), seq, frame: frame.clone() };
        if late.try_send(item).is_err() {
            tracing::error!(room, seq, "sabotage late: the delay queue is full; message dropped");
        }
        return;
    }
    fan_out(state, room, seq, frame);
}

fn fan_out(state: &AppState, room: &str, seq: u64, frame: &Utf8Bytes) {
    if state.sabotage.leak {
        state.hub.fanout_to_all(room, seq, frame);
    } else {
        state.hub.fanout(room, seq, frame);
    }
}

/// A message held back by `--sabotage late`.
pub struct Delayed {
    due: tokio::time::Instant,
    room: String,
    seq: u64,
    frame: Utf8Bytes,
}

/// Messages `--sabotage late` holds back (test only).
pub const LATE_QUEUE: usize = 65_536;

/// Hand each held-back message to the hub when it is due, in order; ends
/// when the node's state is gone.
pub async fn late_fanout(state: std::sync::Weak<AppState>, mut queue: tokio::sync::mpsc::Receiver<Delayed>) {
    while let Some(item) = queue.recv().await {
        tokio::time::sleep_until(item.due).await;
        let Some(state) = state.upgrade() else { return };
        fan_out(&state, &item.room, item.seq, &item.frame);
    }
}

/// Exponential backoff between re-opens of a fan-out source. It is reset
/// only once a source stayed healthy for a while, so a source that opens
/// and fails at once is not re-opened in a hot loop.
#[derive(Debug)]
pub struct Backoff {
    current: Duration,
    first: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { current: first, first, max }
    }

    /// The pause to take now; the next one doubles (up to the cap).
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.current;
        self.current = (self.current * 2).min(self.max);
        pause
    }

    pub fn reset(&mut self) {
        self.current = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let pauses: Vec<u128> = (0..5).map(|_| b.next_pause().as_millis()).collect();
        assert_eq!(pauses, [50, 100, 200, 300, 300]);
        b.reset();
        assert_eq!(b.next_pause(), Duration::from_millis(50));
    }
}
