//! Fan-out: how a node learns of messages stored by any node and hands them
//! to its hub. `changestream` watches one MongoDB change stream per node;
//! `kafka` (the baseline) writes to MongoDB and produces to a topic that
//! every node consumes. Both end in the same hub and resequencer.

pub mod changestream;
pub mod kafka;

use crate::AppState;
use axum::extract::ws::Utf8Bytes;
use clap::ValueEnum;

/// Hand one serialized message to the node's hub (both fan-out modes end
/// here). `--sabotage stop_fanout` drops it, test only.
pub fn hand_to_hub(state: &AppState, room: &str, seq: u64, frame: &Utf8Bytes) {
    if state.sabotage.stop_fanout {
        return;
    }
    state.hub.fanout(room, seq, frame);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Changestream,
    Kafka,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Changestream => "changestream",
            Mode::Kafka => "kafka",
        }
    }
}
