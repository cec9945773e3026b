//! Fan-out: how a node learns of messages stored by any node and hands them
//! to its hub. `changestream` watches one MongoDB change stream per node;
//! `kafka` (the baseline) arrives with the Kafka issue.

pub mod changestream;

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
