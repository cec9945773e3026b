//! chatbench: start MongoDB and N chat-server nodes, drive chat clients from
//! a scenario file, record every send, ack and delivery, and check
//! exactly-once delivery, ordering and latency from the recorded trace.
//!
//! # Layout
//!
//! Data flows one way: **scenario → providers → nodes → clients and
//! nemesis → trace → checks → reports**, and imports follow it: no module
//! uses one that uses it (`tests/layers.rs` fails on any loop). By stage:
//!
//! - *Leaves*: `message` (message numbers, wire ids, body digests, routing
//!   labels) and `duration` (human durations), below everything.
//! - *Protocols*: `protocol` (one file per protocol: its declaration, its
//!   checks and its adapter behind the `Speak` trait; v1, STOMP,
//!   json_frames, Socket.IO), below the scenario and the clients.
//! - *What to run*: [`scenario`] (the YAML model, its validation and JSON
//!   schema); [`subject`] (what a run judged: started nodes in a mode, or an
//!   external system). Facts shared with the server (modes, limits, paths,
//!   token claims, the stored layout) live in the `chatbench-wire` crate.
//! - *Infrastructure*: [`provider`] (MongoDB and Kafka: docker, process,
//!   compat, external); [`cluster`] (the nodes, as processes or containers);
//!   [`process`] (child-process guards); `proxy` (the TCP fault proxy);
//!   `resources` (CPU, memory, loop lag, the fd limit).
//! - *Driving*: `client` (plans, connections, intruders: one loop for every
//!   protocol); `nemesis` (faults on nodes, backends and links); after the
//!   run, `oracle` (history straight from MongoDB) and `history_api` (the
//!   server's own history endpoint).
//! - *Trace*: [`trace`] (the recorded events and the clock; `chatbench dump`).
//! - *Checks*: [`check`] (pure functions over a trace index: the [`check::Check`]
//!   table of finding-based checks, [`check::threshold`] for latency and
//!   throughput, property tests beside them in `synthetic`).
//! - *Reports*: [`report`] (evaluation, table, markdown, JUnit, HTML,
//!   comparison, and the sweep's result model).
//! - *Commands*: [`cli`] (flags and exit codes) over `run` (the one
//!   pipeline: start → plan → drive → collect → judge → write), `sweep`
//!   (grids and bisection of runs), [`merge`] (shards → judge → write),
//!   `k8s` (manifests of a sharded run), `doctor`; [`testkit`] is a
//!   protocol v1 client for end-to-end tests.
//!
//! Only what the binary, the tests and the benches use is public; the rest
//! is `pub(crate)` (the `unreachable_pub` lint keeps it so).

#![warn(unreachable_pub)]

mod auth;
pub mod check;
pub mod cli;
mod client;
pub mod cluster;
mod doctor;
mod duration;
mod history_api;
mod k8s;
mod live_metrics;
pub mod merge;
mod message;
mod nemesis;
mod oracle;
pub mod process;
mod protocol;
pub mod provider;
mod proxy;
pub mod report;
mod resources;
mod run;
pub mod scenario;
pub mod subject;
mod sweep;
pub mod testkit;
pub mod trace;
