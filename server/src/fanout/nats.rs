//! `nats` fan-out, a real log broker beside the Kafka baseline: a send is
//! stored in MongoDB exactly as in `changestream` mode, then its finished
//! `msg` frame is published to JetStream on the room's subject
//! (`<stream>.room.<room>`, with `Nats-Msg-Id: <room>/<id>` so a resend
//! inside the stream's duplicate window is stored once); the client is
//! acked only after MongoDB and JetStream both acked.
//!
//! Every node reads the whole stream through its own ordered consumer
//! (ephemeral, no acks), starting with the messages published after it
//! opened. The node tracks the stream sequence of the last message it
//! handed on; when the consumer fails (the server restarted, the
//! connection dropped, heartbeats were missed) it is created again from
//! the next sequence, so nothing the stream holds is skipped, and every
//! connection re-checks its rooms against history as after a change-stream
//! re-open. The node creates the stream if it is missing (file storage,
//! subjects `<stream>.room.>`, `--nats-max-age`).

use super::{Backoff, hand_frame_to_hub, set_open};
use crate::AppState;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig, stream::StorageType};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://host:port`.
    pub url: String,
    /// The JetStream stream's name; its subjects are `<stream>.room.>`.
    pub stream: String,
    /// Messages older than this leave the stream.
    pub max_age: Duration,
    /// A publish JetStream has not acknowledged within this fails the send
    /// (`store_unavailable`; the client resends, deduplicated by its id).
    pub publish_timeout: Duration,
}

/// Why a publish failed (the send is answered `store_unavailable`).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("JetStream publish to {subject} failed: {source}")]
    Publish {
        subject: String,
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
    #[error("JetStream did not acknowledge a publish to {subject} within {timeout:?} (--broker-publish-timeout)")]
    Timeout { subject: String, timeout: Duration },
}

/// The node's publisher.
pub struct Nats {
    jetstream: jetstream::Context,
    stream: String,
    publish_timeout: Duration,
}

/// What the fan-out task owns.
pub struct Consumer {
    jetstream: jetstream::Context,
    config: NatsConfig,
    /// The client's connection events (connected, disconnected).
    events: mpsc::Receiver<async_nats::Event>,
}

/// Connection events queued for the fan-out task; more are dropped (only
/// the latest state matters, and the consumer's own errors also recover).
const EVENT_QUEUE: usize = 64;

/// Connect (in the background: a node starts while NATS is down and reports
/// `fanout: closed` until its consumer is open).
pub async fn open(config: &NatsConfig) -> Result<(Nats, Consumer), async_nats::ConnectError> {
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| Duration::from_millis(50 * (attempts as u64).min(20)))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.try_send(event);
            }
        })
        .connect(config.url.as_str())
        .await?;
    let jetstream = jetstream::new(client);
    let publisher = Nats { jetstream: jetstream.clone(), stream: config.stream.clone(), publish_timeout: config.publish_timeout };
    Ok((publisher, Consumer { jetstream, config: config.clone(), events: rx }))
}

/// The subject of `room`. Rooms may hold `.`, which separates subject
/// tokens (and may not start, end or double up in a subject); rooms never
/// hold `=`, so `.` becomes `=` and the mapping stays one-to-one.
pub fn subject(stream: &str, room: &str) -> String {
    format!("{stream}.room.{}", room.replace('.', "="))
}

impl Nats {
    /// Publish one `msg` frame; Ok once JetStream stored it.
    pub async fn publish(&self, room: &str, id: &str, frame: &str) -> Result<(), PublishError> {
        let subject = subject(&self.stream, room);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("{room}/{id}").as_str());
        let payload = bytes::Bytes::copy_from_slice(frame.as_bytes());
        let err = |source| PublishError::Publish { subject: subject.clone(), source };
        let stored = async {
            let ack = self.jetstream.publish_with_headers(subject.clone(), headers, payload).await.map_err(err)?;
            ack.await.map_err(err)
        };
        match tokio::time::timeout(self.publish_timeout, stored).await {
            Ok(result) => result.map(drop),
            Err(_) => Err(PublishError::Timeout { subject: subject.clone(), timeout: self.publish_timeout }),
        }
    }
}

/// Why the consumer has to be created again.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("creating the stream {stream}: {source}")]
    Stream {
        stream: String,
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
    #[error("creating the ordered consumer: {0}")]
    Consumer(#[from] async_nats::jetstream::stream::ConsumerError),
    #[error("reading the ordered consumer: {0}")]
    Messages(#[from] async_nats::jetstream::consumer::StreamError),
    #[error("the ordered consumer failed: {0}")]
    Ordered(#[from] async_nats::jetstream::consumer::pull::OrderedError),
    #[error("the ordered consumer ended")]
    Ended,
}

pub async fn run(state: Arc<AppState>, mut consumer: Consumer, mut shutdown: broadcast::Receiver<()>) {
    // The stream sequence to read from next (None: only what comes after
    // the first open).
    let mut next: Option<u64> = None;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    let mut opened_before = false;
    loop {
        let lost = tokio::select! {
            _ = shutdown.recv() => return,
            lost = consume(&state, &mut consumer, &mut next, &mut opened_before, &mut backoff) => lost,
        };
        set_open(&state, false);
        let pause = backoff.next_pause();
        tracing::warn!(error = %lost, ?pause, next_sequence = ?next, "JetStream consumer lost; re-creating it from the next stream sequence");
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Create the stream (if missing) and an ordered consumer from `next`, then
/// hand every message to the hub until the consumer fails.
async fn consume(
    state: &AppState,
    consumer: &mut Consumer,
    next: &mut Option<u64>,
    opened_before: &mut bool,
    backoff: &mut Backoff,
) -> Lost {
    let config = &consumer.config;
    let stream = match consumer
        .jetstream
        .get_or_create_stream(jetstream::stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.room.>", config.stream)],
            storage: StorageType::File,
            max_age: config.max_age,
            ..Default::default()
        })
        .await
    {
        Ok(s) => s,
        Err(source) => return Lost::Stream { stream: config.stream.clone(), source },
    };
    let deliver_policy = match *next {
        Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
        None => DeliverPolicy::New,
    };
    let ordered = match stream.create_consumer(OrderedConfig { deliver_policy, ..Default::default() }).await {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    let mut messages = match ordered.messages().await {
        Ok(m) => m,
        Err(e) => return e.into(),
    };
    if next.is_none() {
        // Everything stored from here on reaches this node: a later
        // re-creation must start right after what was already in the stream.
        match stream.get_info().await {
            Ok(info) => *next = Some(info.state.last_sequence + 1),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the stream's last sequence; a re-created consumer would start at new messages")
            }
        }
    }
    set_open(state, true);
    if *opened_before {
        state.metrics.broker_reconnects.inc();
        state.hub.request_resync();
        tracing::info!(next_sequence = ?next, "JetStream consumer re-created; subscribers re-check history");
    }
    *opened_before = true;
    let opened_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            message = messages.next() => match message {
                Some(Ok(message)) => {
                    if let Ok(info) = message.info() {
                        *next = Some(info.stream_sequence + 1);
                    }
                    state.metrics.broker_events.inc();
                    hand_frame_to_hub(state, &message.payload, "JetStream");
                    if opened_at.elapsed() >= super::changestream::HEALTHY_AFTER {
                        backoff.reset();
                    }
                }
                Some(Err(e)) => return e.into(),
                None => return Lost::Ended,
            },
            event = consumer.events.recv() => match event {
                Some(async_nats::Event::Disconnected) => {
                    tracing::warn!("NATS connection lost; /healthz reports fanout closed");
                    state.stream_open.store(false, std::sync::atomic::Ordering::SeqCst);
                }
                Some(async_nats::Event::Connected) => {
                    // The ordered consumer may have been lost with the server:
                    // re-create it from the next sequence (and re-check history).
                    return Lost::Ended;
                }
                Some(other) => tracing::debug!(event = %other, "NATS client event"),
                None => return Lost::Ended,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--broker-publish-timeout` bounds a publish JetStream never
    /// acknowledges (here a server that accepts and says nothing).
    #[tokio::test]
    async fn a_publish_jetstream_never_acknowledges_fails_after_the_configured_timeout() {
        let (_listener, port) = super::super::redis::tests::silent_server().await;
        let config = NatsConfig {
            url: format!("nats://127.0.0.1:{port}"),
            stream: "t".into(),
            max_age: Duration::from_secs(60),
            publish_timeout: Duration::from_millis(300),
        };
        let (nats, _consumer) = open(&config).await.unwrap();
        let outcome = tokio::time::timeout(Duration::from_millis(1_500), nats.publish("r", "m1", "{}")).await;
        let err = outcome.expect("the publish gave up within its timeout").unwrap_err();
        assert!(matches!(err, PublishError::Timeout { .. } | PublishError::Publish { .. }), "{err}");
    }

    #[test]
    fn every_room_has_its_own_valid_subject() {
        assert_eq!(subject("chat", "lobby"), "chat.room.lobby");
        assert_eq!(subject("chat", ".a..b."), "chat.room.=a==b=");
        assert_ne!(subject("chat", "a.b"), subject("chat", "a:b"));
        for room in ["a.b", "x:y-z_0", "..."] {
            let s = subject("chat", room);
            assert!(s.split('.').all(|t| !t.is_empty() && !t.contains(['*', '>', ' '])), "{s}");
        }
    }
}
