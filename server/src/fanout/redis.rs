//! `redis` fan-out: a send is stored in MongoDB exactly as in
//! `changestream` mode, then its finished `msg` frame is `PUBLISH`ed on the
//! room's channel (`<prefix><room>`); the client is acked only after both.
//!
//! Routing is interest-based: a node `SUBSCRIBE`s only to the rooms its own
//! connections hold, so it reads only what it delivers — unlike a change
//! stream or a Kafka topic, where every node reads every message. A join
//! waits (up to `--redis-interest-wait`) until Redis confirmed the node's
//! subscription before it reads the room's head, so every message stored
//! after that read is heard live.
//!
//! Pub/sub is at-most-once: a message published while a node's subscriber
//! connection is down is gone for that node. Nothing is lost for clients,
//! though: the resequencer fills a `seq` gap from MongoDB when a later
//! message arrives, and when the subscriber connection comes back (after
//! Redis restarted, a network fault, or Redis closed it for an overflowing
//! output buffer) the node subscribes to its rooms again and asks every
//! connection to re-check its rooms against history — what the change
//! stream does after a re-open. A publish that fails or times out answers
//! the send `store_unavailable`; its resend publishes again.

use super::{Backoff, hand_frame_to_hub, set_open};
use crate::AppState;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

/// Default of `--redis-interest-wait`.
pub const INTEREST_WAIT: Duration = Duration::from_secs(2);
/// Default of `--broker-publish-timeout`.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Channel of room R: `<prefix>R`.
    pub channel_prefix: String,
    /// How long a join waits for the node's subscription to its room to be
    /// confirmed before it reads history anyway (Redis down: the re-check
    /// after the subscriber reconnects covers that window).
    pub interest_wait: Duration,
    /// A `PUBLISH` (or a connect for it) that takes longer fails the send
    /// (`store_unavailable`; the client resends).
    pub publish_timeout: Duration,
}

/// Why a publish failed (the send is answered `store_unavailable`).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("Redis PUBLISH to {channel} failed: {source}")]
    Redis {
        channel: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("Redis PUBLISH to {channel} took longer than {timeout:?} (--broker-publish-timeout)")]
    Timeout { channel: String, timeout: Duration },
}

/// A change of this node's interest in a room (one per connection join or
/// leave, in that connection's order, so the count never goes below zero).
enum Interest {
    Join { room: String, heard: oneshot::Sender<()> },
    Leave { room: String },
}

/// The node's side of Redis as sends and joins see it.
pub struct Redis {
    client: redis::Client,
    publisher: tokio::sync::OnceCell<ConnectionManager>,
    prefix: String,
    interest_wait: Duration,
    publish_timeout: Duration,
    /// Unbounded on purpose: a join or leave must never be dropped (a lost
    /// join loses a room), and each entry stands for one subscription
    /// change, which `--max-subscriptions` per connection already bounds.
    interest: mpsc::UnboundedSender<Interest>,
}

/// What the fan-out task owns: the receiving end of the interest changes.
pub struct Subscriber {
    client: redis::Client,
    prefix: String,
    interest: mpsc::UnboundedReceiver<Interest>,
}

/// Parse the URL (no connection yet: a node starts while Redis is down and
/// reports `fanout: closed` until it answers).
pub fn open(config: &RedisConfig) -> Result<(Redis, Subscriber), redis::RedisError> {
    let client = redis::Client::open(config.url.as_str())?;
    let (tx, rx) = mpsc::unbounded_channel();
    let redis = Redis {
        client: client.clone(),
        publisher: tokio::sync::OnceCell::new(),
        prefix: config.channel_prefix.clone(),
        interest_wait: config.interest_wait,
        publish_timeout: config.publish_timeout,
        interest: tx,
    };
    Ok((redis, Subscriber { client, prefix: config.channel_prefix.clone(), interest: rx }))
}

impl Redis {
    /// `PUBLISH` one `msg` frame on its room's channel.
    pub async fn publish(&self, room: &str, frame: &str) -> Result<(), PublishError> {
        let channel = format!("{}{room}", self.prefix);
        let publish = async {
            let mut conn = self.publisher.get_or_try_init(|| connection_manager(&self.client, self.publish_timeout)).await?.clone();
            redis::cmd("PUBLISH").arg(&channel).arg(frame).query_async::<i64>(&mut conn).await
        };
        match tokio::time::timeout(self.publish_timeout, publish).await {
            Ok(Ok(_receivers)) => Ok(()),
            Ok(Err(source)) => Err(PublishError::Redis { channel, source }),
            Err(_) => Err(PublishError::Timeout { channel, timeout: self.publish_timeout }),
        }
    }

    /// A connection of this node joined `room`: resolves once the node's
    /// subscription to it is confirmed (or after the interest wait). The
    /// join is registered before this returns, in the caller's order.
    pub fn join(&self, room: &str) -> impl Future<Output = ()> + Send + 'static {
        let (heard, confirmed) = oneshot::channel();
        let sent = self.interest.send(Interest::Join { room: room.to_owned(), heard }).is_ok();
        let room = room.to_owned();
        let wait = self.interest_wait;
        async move {
            if sent && tokio::time::timeout(wait, confirmed).await.is_err() {
                tracing::warn!(room, ?wait, "Redis did not confirm the room's subscription in time; reading history anyway");
            }
        }
    }

    /// A connection of this node left `room`.
    pub fn leave(&self, room: &str) {
        let _ = self.interest.send(Interest::Leave { room: room.to_owned() });
    }
}

fn connection_manager(client: &redis::Client, timeout: Duration) -> impl Future<Output = redis::RedisResult<ConnectionManager>> + '_ {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2).min(timeout))
        .set_response_timeout(timeout)
        .set_max_delay(1000);
    client.get_connection_manager_with_config(config)
}

/// Rooms this node is interested in, with how many of its subscriptions
/// hold each (pure: the task around it does the I/O).
#[derive(Debug, Default)]
struct Rooms {
    held: HashMap<String, usize>,
}

/// What a change of interest asks of the Redis connection.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    Subscribe,
    Unsubscribe,
    Nothing,
}

impl Rooms {
    fn join(&mut self, room: &str) -> Change {
        let n = self.held.entry(room.to_owned()).or_default();
        *n += 1;
        if *n == 1 { Change::Subscribe } else { Change::Nothing }
    }

    fn leave(&mut self, room: &str) -> Change {
        match self.held.get_mut(room) {
            Some(n) if *n > 1 => {
                *n -= 1;
                Change::Nothing
            }
            Some(_) => {
                self.held.remove(room);
                Change::Unsubscribe
            }
            None => Change::Nothing,
        }
    }
}

/// Why the subscriber connection has to be opened again.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("Redis closed the subscriber connection")]
    Closed,
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
}

pub async fn run(state: Arc<AppState>, mut sub: Subscriber, mut shutdown: broadcast::Receiver<()>) {
    let mut rooms = Rooms::default();
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    let mut opened_before = false;
    loop {
        let lost = tokio::select! {
            _ = shutdown.recv() => return,
            lost = serve_subscriber(&state, &mut sub, &mut rooms, &mut opened_before, &mut backoff) => lost,
        };
        set_open(&state, false);
        let pause = backoff.next_pause();
        tracing::warn!(error = %lost, ?pause, "Redis subscriber connection lost; reconnecting, then subscribers re-check history");
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Open the subscriber connection, subscribe to every held room, then hear
/// messages and interest changes until the connection is lost.
async fn serve_subscriber(
    state: &AppState,
    sub: &mut Subscriber,
    rooms: &mut Rooms,
    opened_before: &mut bool,
    backoff: &mut Backoff,
) -> Lost {
    let pubsub = match sub.client.get_async_pubsub().await {
        Ok(p) => p,
        Err(e) => return Lost::Redis(e),
    };
    let (mut sink, mut messages) = pubsub.split();
    let held: Vec<String> = rooms.held.keys().map(|r| format!("{}{r}", sub.prefix)).collect();
    for chunk in held.chunks(512) {
        if let Err(e) = sink.subscribe(chunk).await {
            return Lost::Redis(e);
        }
    }
    set_open(state, true);
    if *opened_before {
        state.metrics.broker_reconnects.inc();
        state.hub.request_resync();
        tracing::info!(rooms = held.len(), "Redis subscriber connection back; subscribers re-check history");
    }
    *opened_before = true;
    let opened_at = tokio::time::Instant::now();
    loop {
        if opened_at.elapsed() >= super::changestream::HEALTHY_AFTER {
            backoff.reset();
        }
        tokio::select! {
            message = messages.next() => match message {
                Some(message) => {
                    state.metrics.broker_events.inc();
                    hand_frame_to_hub(state, message.get_payload_bytes(), "Redis");
                }
                None => return Lost::Closed,
            },
            change = sub.interest.recv() => {
                // The sender lives in AppState, which outlives this task.
                let Some(change) = change else { return Lost::Closed };
                if let Err(e) = apply(&mut sink, &sub.prefix, rooms, change).await {
                    return Lost::Redis(e);
                }
            }
        }
    }
}

/// Subscribe or unsubscribe as the interest change asks; a join is told
/// once the node hears its room.
async fn apply(sink: &mut PubSubSink, prefix: &str, rooms: &mut Rooms, change: Interest) -> redis::RedisResult<()> {
    match change {
        Interest::Join { room, heard } => {
            if rooms.join(&room) == Change::Subscribe
                && let Err(e) = sink.subscribe(format!("{prefix}{room}")).await
            {
                // Held: the reconnect subscribes to it with the others.
                return Err(e);
            }
            let _ = heard.send(());
        }
        Interest::Leave { room } => {
            if rooms.leave(&room) == Change::Unsubscribe {
                sink.unsubscribe(format!("{prefix}{room}")).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A listener that accepts connections and never answers (a paused
    /// Redis or NATS); kept open while the test runs.
    pub(crate) async fn silent_server() -> (tokio::net::TcpListener, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    fn config(port: u16) -> RedisConfig {
        RedisConfig {
            url: format!("redis://127.0.0.1:{port}"),
            channel_prefix: "t.".into(),
            interest_wait: Duration::from_millis(200),
            publish_timeout: Duration::from_millis(300),
        }
    }

    /// `--broker-publish-timeout` bounds a publish to a Redis that never
    /// answers (the default, 5 s, would outlast the guard).
    #[tokio::test]
    async fn a_publish_redis_never_answers_fails_after_the_configured_timeout() {
        let (_listener, port) = silent_server().await;
        let (redis, _subscriber) = open(&config(port)).unwrap();
        let outcome = tokio::time::timeout(Duration::from_millis(1_500), redis.publish("r", "{}")).await;
        let err = outcome.expect("the publish gave up within its timeout").unwrap_err();
        assert!(matches!(err, PublishError::Timeout { .. } | PublishError::Redis { .. }), "{err}");
    }

    /// `--redis-interest-wait` bounds a join whose subscription is never
    /// confirmed (the default, 2 s, would outlast the guard).
    #[tokio::test]
    async fn a_join_redis_never_confirms_reads_history_after_the_configured_wait() {
        let (redis, _subscriber) = open(&config(1)).unwrap();
        let joined = tokio::time::timeout(Duration::from_millis(1_500), redis.join("r")).await;
        assert!(joined.is_ok(), "the join waited past its interest wait");
    }

    #[test]
    fn a_room_is_subscribed_while_any_connection_holds_it() {
        let mut rooms = Rooms::default();
        assert_eq!(rooms.join("r"), Change::Subscribe);
        assert_eq!(rooms.join("r"), Change::Nothing);
        assert_eq!(rooms.leave("r"), Change::Nothing);
        assert_eq!(rooms.leave("r"), Change::Unsubscribe);
        assert_eq!(rooms.leave("r"), Change::Nothing, "a leave without a join changes nothing");
        assert_eq!(rooms.join("r"), Change::Subscribe);
        assert!(rooms.held.contains_key("r"));
    }
}
