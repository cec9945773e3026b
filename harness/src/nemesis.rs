//! The nemesis: applies a scenario's timed faults to the running system —
//! node processes, MongoDB, client connections — and records when each
//! started and ended. Faults run one after another in schedule order (a
//! fault that waits, like `restart_after`, delays the ones behind it).

use crate::client::Window;
use crate::cluster::Cluster;
use crate::provider::broker::BrokerBackend;
use crate::provider::kafka::{KafkaBackend, KafkaLink};
use crate::provider::mongo::MongoBackend;
use crate::proxy::{FaultProxy, LinkFault};
use crate::scenario::{FaultAction, LinkTarget};
use crate::trace::{Clock, FaultRecord};
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::{Mutex, watch};

/// How long after a network fault its link may first carry traffic and still
/// count as the node's path to its backend.
const LINK_TRAFFIC_GRACE: Duration = Duration::from_secs(5);

/// What the nemesis may act on.
pub(crate) struct Targets {
    pub cluster: Mutex<Cluster>,
    pub mongo: Mutex<MongoBackend>,
    pub drops: watch::Sender<(u64, f64)>,
    /// Nodes that are down by plan right now (killed or stopped, not restarted).
    pub down: Mutex<BTreeSet<usize>>,
    /// Nodes paused by plan right now.
    pub paused: Mutex<BTreeSet<usize>>,
    /// Nodes cut from MongoDB by a `partition` right now.
    pub partitioned: Mutex<BTreeSet<usize>>,
    /// Per node: the fault proxy on its link to MongoDB (empty when the
    /// scenario has no network faults on it).
    pub links: Vec<FaultProxy>,
    /// The broker, in kafka mode.
    pub kafka: Option<Mutex<KafkaBackend>>,
    /// Per node: the fault proxy between clients and node (network faults
    /// on the clients' link only).
    pub client_links: Vec<FaultProxy>,
    /// Per node: its path to Kafka through a fault proxy (kafka mode, when
    /// the scenario has network faults on the Kafka link).
    pub kafka_links: Vec<KafkaLink>,
    /// The broker, in redis and nats modes.
    pub broker: Option<Mutex<BrokerBackend>>,
    /// Per node: the fault proxy on its link to that broker (when the
    /// scenario has network faults on the broker link).
    pub broker_links: Vec<FaultProxy>,
}

/// How long a graceful stop may take before it counts as failed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn run(
    schedule: Vec<(Duration, FaultAction)>,
    window: watch::Receiver<Option<Window>>,
    clock: Clock,
    targets: &Targets,
) -> Vec<FaultRecord> {
    run_with(schedule, window, clock, |action| async move { apply(&action, targets).await }).await
}

/// Client faults only, for systems the harness did not start (external
/// nodes): `drop_clients`; anything else is refused when the scenario loads.
pub(crate) async fn run_client_faults(
    schedule: Vec<(Duration, FaultAction)>,
    window: watch::Receiver<Option<Window>>,
    clock: Clock,
    drops: &watch::Sender<(u64, f64)>,
    client_links: &[FaultProxy],
) -> Vec<FaultRecord> {
    run_with(schedule, window, clock, |action| async move {
        match action {
            FaultAction::DropClients { share } => {
                drop_clients(drops, share);
                Ok(())
            }
            FaultAction::Network { node, link: LinkTarget::Clients, .. } => {
                let proxy = client_links.get(node as usize).ok_or(FaultError::NoProxy { node, link: LinkTarget::Clients })?;
                degrade(&action, proxy, std::future::ready(true)).await
            }
            _ => Err(FaultError::NeedsStartedNodes { fault: action.name() }),
        }
    })
    .await
}

fn drop_clients(drops: &watch::Sender<(u64, f64)>, share: f64) {
    drops.send_modify(|(epoch, s)| {
        *epoch += 1;
        *s = share;
    });
}

async fn run_with<F, Fut>(
    schedule: Vec<(Duration, FaultAction)>,
    mut window: watch::Receiver<Option<Window>>,
    clock: Clock,
    apply: F,
) -> Vec<FaultRecord>
where
    F: Fn(FaultAction) -> Fut,
    Fut: std::future::Future<Output = Result<(), FaultError>>,
{
    let start_ns = loop {
        if let Some(w) = *window.borrow_and_update() {
            break w.start_ns;
        }
        if window.changed().await.is_err() {
            return Vec::new();
        }
    };
    let mut records = Vec::with_capacity(schedule.len());
    for (offset, action) in schedule {
        tokio::time::sleep_until(clock.instant_at(start_ns + offset.as_nanos() as u64).into()).await;
        let started = clock.now_ns();
        tracing::info!(fault = action.name(), node = ?action.node(), "applying fault");
        let error = apply(action.clone()).await.err();
        if let Some(e) = &error {
            tracing::error!(fault = action.name(), error = %e, "fault could not be applied");
        }
        records.push(FaultRecord {
            action: action.name().to_owned(),
            node: action.node(),
            start_ns: started,
            end_ns: clock.now_ns(),
            error: error.map(|e| e.to_string()),
            clients: None,
        });
    }
    records
}

/// Why a fault could not be applied (the run's verdict is then void).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FaultError {
    #[error("node {node} is down")]
    NodeDown { node: usize },
    #[error("node {node} did not exit within {within:?} of SIGTERM")]
    DidNotStop { node: usize, within: Duration },
    #[error("node {node}: {source:#}")]
    Node {
        node: usize,
        #[source]
        source: anyhow::Error,
    },
    #[error("node {node} has no fault proxy on its {link:?} link")]
    NoProxy { node: u32, link: LinkTarget },
    #[error(
        "node {node}'s {} link carried no traffic during the fault: the node does not go through its fault proxy, so the fault acted on nothing",
        link_name(*link)
    )]
    ActedOnNothing { node: u32, link: LinkTarget },
    #[error("this mode runs no Kafka")]
    NoKafka,
    #[error("this mode runs no broker")]
    NoBroker,
    #[error("{0:#}")]
    Backend(anyhow::Error),
    #[error("random faults are resolved when the schedule is made")]
    Unresolved,
    #[error("not a network fault")]
    NotNetwork,
    #[error("{fault} needs nodes the harness started")]
    NeedsStartedNodes { fault: &'static str },
}

fn link_name(link: LinkTarget) -> &'static str {
    match link {
        LinkTarget::Mongo => "MongoDB",
        LinkTarget::Kafka => "Kafka",
        LinkTarget::Broker => "broker",
        LinkTarget::Clients => "clients'",
    }
}

async fn apply(action: &FaultAction, t: &Targets) -> Result<(), FaultError> {
    match *action {
        FaultAction::KillNode { node, restart_after } => {
            down(t, node as usize, Signal::SIGKILL).await?;
            if let Some(after) = restart_after {
                tokio::time::sleep(after.0).await;
                up(t, node as usize).await?;
            }
        }
        FaultAction::StopNode { node, restart_after } => {
            down(t, node as usize, Signal::SIGTERM).await?;
            if let Some(after) = restart_after {
                tokio::time::sleep(after.0).await;
                up(t, node as usize).await?;
            }
        }
        FaultAction::RestartNode { node, down_for } => {
            down(t, node as usize, Signal::SIGKILL).await?;
            tokio::time::sleep(down_for.0).await;
            up(t, node as usize).await?;
        }
        FaultAction::PauseNode { node, duration } => {
            signal(t, node as usize, Signal::SIGSTOP).await?;
            t.paused.lock().await.insert(node as usize);
            tokio::time::sleep(duration.0).await;
            signal(t, node as usize, Signal::SIGCONT).await?;
            t.paused.lock().await.remove(&(node as usize));
        }
        FaultAction::ResumeNode { node } => {
            signal(t, node as usize, Signal::SIGCONT).await?;
            t.paused.lock().await.remove(&(node as usize));
        }
        FaultAction::RestartMongo { down_for } => t.mongo.lock().await.restart(down_for.0).await.map_err(FaultError::Backend)?,
        FaultAction::RestartKafka { down_for } => restart_kafka(t, down_for.0).await?,
        FaultAction::RestartBroker { down_for } => match &t.broker {
            Some(broker) => broker.lock().await.restart(down_for.0).await.map_err(FaultError::Backend)?,
            None if t.kafka.is_some() => restart_kafka(t, down_for.0).await?,
            None => return Err(FaultError::NoBroker),
        },
        FaultAction::PauseBroker { duration } => match &t.broker {
            Some(broker) => broker.lock().await.pause(duration.0).await.map_err(FaultError::Backend)?,
            None if t.kafka.is_some() => {
                t.kafka.as_ref().ok_or(FaultError::NoKafka)?.lock().await.pause(duration.0).await.map_err(FaultError::Backend)?
            }
            None => return Err(FaultError::NoBroker),
        },
        FaultAction::Network { node, link, .. } => {
            let proxy = match link {
                LinkTarget::Mongo => t.links.get(node as usize),
                LinkTarget::Kafka => t.kafka_links.get(node as usize).map(|l| &l.proxy),
                LinkTarget::Broker if t.kafka.is_some() => t.kafka_links.get(node as usize).map(|l| &l.proxy),
                LinkTarget::Broker => t.broker_links.get(node as usize),
                LinkTarget::Clients => t.client_links.get(node as usize),
            }
            .ok_or(FaultError::NoProxy { node, link })?;
            let up = async { !t.down.lock().await.contains(&(node as usize)) && !t.paused.lock().await.contains(&(node as usize)) };
            degrade(action, proxy, up).await?;
        }
        FaultAction::Partition { node, duration } => {
            let node = node as usize;
            if t.down.lock().await.contains(&node) {
                return Err(FaultError::NodeDown { node });
            }
            t.cluster.lock().await.partition(node, true).await.map_err(|source| FaultError::Node { node, source })?;
            t.partitioned.lock().await.insert(node);
            tokio::time::sleep(duration.0).await;
            t.cluster.lock().await.partition(node, false).await.map_err(|source| FaultError::Node { node, source })?;
            t.partitioned.lock().await.remove(&node);
        }
        FaultAction::Random { .. } => return Err(FaultError::Unresolved),
        FaultAction::DropClients { share } => drop_clients(&t.drops, share),
    }
    Ok(())
}

async fn restart_kafka(t: &Targets, down_for: Duration) -> Result<(), FaultError> {
    let kafka = t.kafka.as_ref().ok_or(FaultError::NoKafka)?;
    kafka.lock().await.restart(down_for).await.map_err(FaultError::Backend)?;
    for link in &t.kafka_links {
        link.broker_restarted().await.map_err(FaultError::Backend)?;
    }
    Ok(())
}

/// Apply a `network` fault to its link's proxy for its duration. A link
/// that carried no traffic during it (nor within a grace period after),
/// while its node was up, was not the node's path: the fault acted on
/// nothing, which is an error, not a pass.
async fn degrade(action: &FaultAction, link: &FaultProxy, node_up: impl std::future::Future<Output = bool>) -> Result<(), FaultError> {
    let FaultAction::Network { node, link: target, duration, latency, jitter, bandwidth_bytes_per_s, blackhole, reset } = *action else {
        return Err(FaultError::NotNetwork);
    };
    let before = link.traffic();
    // Resetting live connections already acted on the node's link.
    let reset_some = reset && link.reset_connections() > 0;
    link.set(LinkFault { latency: latency.0, jitter: jitter.0, bandwidth_bytes_per_s, blackhole });
    tokio::time::sleep(duration.0).await;
    link.set(LinkFault::default());
    // A node that reaches its backend some other way (e.g. a driver that
    // discovered the replica set's real hosts) was not faulted. Traffic
    // after the fault also proves the link is the node's path (a driver
    // reconnecting after a reset may wait out its heartbeat first), so
    // allow a grace period before judging.
    let grace = tokio::time::Instant::now() + LINK_TRAFFIC_GRACE;
    while !reset_some && link.traffic() == before && tokio::time::Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !reset_some && link.traffic() == before && node_up.await {
        return Err(FaultError::ActedOnNothing { node, link: target });
    }
    Ok(())
}

async fn signal(t: &Targets, node: usize, sig: Signal) -> Result<(), FaultError> {
    if t.down.lock().await.contains(&node) {
        return Err(FaultError::NodeDown { node });
    }
    t.cluster.lock().await.signal(node, sig).await.map_err(|e| FaultError::Node { node, source: e.context(format!("signal {sig}")) })
}

/// Kill or stop a node and wait for it to exit.
async fn down(t: &Targets, node: usize, sig: Signal) -> Result<(), FaultError> {
    signal(t, node, sig).await?;
    let mut cluster = t.cluster.lock().await;
    if sig == Signal::SIGTERM && cluster.wait_exit(node, STOP_TIMEOUT).await.is_none() {
        return Err(FaultError::DidNotStop { node, within: STOP_TIMEOUT });
    }
    cluster.wait_exit(node, STOP_TIMEOUT).await;
    t.down.lock().await.insert(node);
    Ok(())
}

/// Start a downed node again on its address and wait until it is healthy.
async fn up(t: &Targets, node: usize) -> Result<(), FaultError> {
    t.cluster.lock().await.restart(node).await.map_err(|e| FaultError::Node { node, source: e.into() })?;
    t.down.lock().await.remove(&node);
    Ok(())
}

/// Undo what would outlive the run: resume paused nodes, heal links.
pub(crate) async fn settle(t: &Targets) {
    for link in t.links.iter().chain(t.kafka_links.iter().map(|l| &l.proxy)).chain(&t.broker_links) {
        link.set(LinkFault::default());
    }
    let paused: Vec<usize> = t.paused.lock().await.iter().copied().collect();
    let partitioned: Vec<usize> = std::mem::take(&mut *t.partitioned.lock().await).into_iter().collect();
    let cluster = t.cluster.lock().await;
    for node in paused {
        let _ = cluster.signal(node, Signal::SIGCONT).await;
    }
    for node in partitioned {
        let _ = cluster.partition(node, false).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::HumanDuration;

    fn blackhole(reset: bool) -> FaultAction {
        let ms = |n| HumanDuration(Duration::from_millis(n));
        FaultAction::Network {
            node: 0,
            link: LinkTarget::Clients,
            duration: ms(50),
            latency: ms(0),
            jitter: ms(0),
            bandwidth_bytes_per_s: None,
            blackhole: true,
            reset,
        }
    }

    /// The guard against faults that act on nothing: a link nobody uses
    /// (the node reaches its peer some other way) is an error, not a pass.
    #[tokio::test]
    async fn a_network_fault_on_a_link_that_carries_nothing_is_an_error() {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = FaultProxy::start(upstream.local_addr().unwrap()).await.unwrap();
        let err = degrade(&blackhole(false), &proxy, std::future::ready(true)).await.unwrap_err();
        assert!(matches!(err, FaultError::ActedOnNothing { node: 0, link: LinkTarget::Clients }), "{err}");
        assert!(err.to_string().contains("acted on nothing"), "{err}");
        // A node that is down or paused may well carry nothing: no error.
        degrade(&blackhole(false), &proxy, std::future::ready(false)).await.unwrap();
    }

    #[tokio::test]
    async fn resetting_a_live_connection_acts_on_the_link() {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = FaultProxy::start(upstream.local_addr().unwrap()).await.unwrap();
        let _client = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let _server = upstream.accept().await.unwrap();
        // The proxy registers the pair just after its upstream connect.
        tokio::time::sleep(Duration::from_millis(100)).await;
        degrade(&blackhole(true), &proxy, std::future::ready(true)).await.unwrap();
    }
}
