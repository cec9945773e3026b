//! Fan-out: how a node learns of messages stored by any node and hands them
//! to its hub. `changestream` watches one MongoDB change stream per node;
//! `kafka` (the baseline) writes to MongoDB and produces to a topic that
//! every node consumes. Both end in the same hub and resequencer.

pub mod changestream;
pub mod kafka;

use clap::ValueEnum;

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
