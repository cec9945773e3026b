//! chatbench's reference chat server: WebSocket chat whose nodes fan
//! messages out through one MongoDB change stream each. See PROTOCOL.md.

pub mod fanout;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod sabotage;
pub mod store;
pub mod ws;

use std::sync::atomic::AtomicBool;
use tokio::sync::broadcast;

/// Everything a request handler or the fan-out task shares.
pub struct AppState {
    pub node_id: String,
    pub mode: fanout::Mode,
    pub store: store::Store,
    pub hub: hub::Hub,
    pub metrics: metrics::Metrics,
    /// True while the fan-out source is open (part of `/healthz`).
    pub stream_open: AtomicBool,
    pub shutdown: broadcast::Sender<()>,
    pub queue_capacity: usize,
    pub sabotage: sabotage::Sabotage,
    pub sabotage_seed: u64,
    /// Set in `kafka` mode: every stored send is also produced here.
    pub kafka: Option<fanout::kafka::Producer>,
}
