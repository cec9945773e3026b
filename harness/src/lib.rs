//! chatbench: start MongoDB and N chat-server nodes, drive chat clients from
//! a scenario file, record every send, ack and delivery, and check
//! exactly-once delivery, ordering and latency from the recorded trace.

pub mod check;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod doctor;
pub mod history_api;
pub mod k8s;
pub mod merge;
pub mod nemesis;
pub mod oracle;
pub mod process;
pub mod provider;
pub mod proxy;
pub mod report;
pub mod resources;
pub mod run;
pub mod scenario;
pub mod subject;
pub mod sweep;
pub mod testkit;
pub mod trace;
