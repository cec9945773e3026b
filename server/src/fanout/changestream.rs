//! `changestream` fan-out: exactly one insert-only change stream per node,
//! however many rooms and subscribers. Each event is serialized once into a
//! `msg` frame and handed to the hub.
//!
//! - The stream is re-opened from the last resume token with backoff after
//!   *any* failure or end, not only a failed open; the backoff is reset only
//!   after the stream stayed healthy for [`HEALTHY_AFTER`]. Meanwhile
//!   `/healthz` is 503, and after a re-open every connection re-checks its
//!   rooms against history, so nothing missed stays missing.
//! - Events are read as raw documents: one that does not decode as a
//!   message (inserted by another tool) is logged, counted and skipped —
//!   the resume token moves past it instead of replaying it forever.
//! - If the token has left the oplog (ChangeStreamHistoryLost), or the
//!   stream ended (an `invalidate`: the collection was dropped or renamed),
//!   it restarts from now; after an end the indexes are created again.

use super::{Backoff, hand_to_hub, set_open};
use crate::AppState;
use crate::protocol::ServerFrame;
use crate::store::{MessageDoc, now_ms};
use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;
use mongodb::bson::{Document, doc};
use mongodb::change_stream::event::ResumeToken;
use mongodb::error::ErrorKind;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::Instant;

const CHANGE_STREAM_HISTORY_LOST: i32 = 286;
/// A stream open this long without failing counts as healthy (backoff reset).
pub const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// The change stream's tuning (flags with defaults in PROTOCOL.md).
#[derive(Debug, Clone, Copy)]
pub struct ChangeStreamConfig {
    /// `maxAwaitTimeMS`: how long an empty `getMore` may wait for an event.
    pub max_await: Duration,
    /// `batchSize` of the stream's cursor (None: the server's default).
    pub batch_size: Option<u32>,
}

impl Default for ChangeStreamConfig {
    fn default() -> Self {
        Self { max_await: Duration::from_millis(500), batch_size: None }
    }
}

pub async fn run(state: Arc<AppState>, config: ChangeStreamConfig, mut shutdown: broadcast::Receiver<()>) {
    let mut token: Option<ResumeToken> = None;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut opened_before = false;
    let raw = state.store.messages().clone_with_type::<Document>();
    loop {
        let watch = raw
            .watch()
            .pipeline([doc! {"$match": {"operationType": "insert"}}])
            .max_await_time(config.max_await)
            .resume_after(token.clone());
        let watch = match config.batch_size {
            Some(n) => watch.batch_size(n),
            None => watch,
        };
        let opened = tokio::select! {
            _ = shutdown.recv() => return,
            opened = watch => opened,
        };
        let ended = match opened {
            Ok(mut stream) => {
                set_open(&state, true);
                tracing::debug!(resumed = token.is_some(), "change stream open");
                if opened_before {
                    state.metrics.changestream_reopens.inc();
                    state.hub.request_resync();
                    tracing::info!("change stream re-opened");
                }
                opened_before = true;
                let opened_at = Instant::now();
                let ended = loop {
                    let next = tokio::select! {
                        _ = shutdown.recv() => return,
                        next = stream.next() => next,
                    };
                    match next {
                        Some(Ok(event)) => {
                            token = stream.resume_token().or(Some(event.id.clone()));
                            if let Some(document) = event.full_document {
                                fan_out(&state, document);
                            }
                            if opened_at.elapsed() >= HEALTHY_AFTER {
                                backoff.reset();
                            }
                        }
                        Some(Err(e)) => break Ended::Failed(e),
                        None => break Ended::Closed,
                    }
                };
                if opened_at.elapsed() >= HEALTHY_AFTER {
                    backoff.reset();
                }
                ended
            }
            Err(e) => Ended::Failed(e),
        };
        set_open(&state, false);
        let recovery = Recovery::after(&ended);
        match &ended {
            Ended::Failed(e) if recovery.from_now => {
                tracing::error!(error = %e, "change stream resume token is no longer in the oplog; restarting from now, subscribers re-sync from history");
            }
            Ended::Failed(e) => tracing::warn!(error = %e, "change stream failed; resuming from the last token"),
            Ended::Closed => tracing::warn!("change stream ended (invalidated: collection dropped or renamed?); restarting from now"),
        }
        if recovery.from_now {
            token = None;
        }
        if recovery.recreate_indexes {
            // The collection is gone: the `seq`s the hints name no longer exist.
            state.store.forget_heads();
        }
        if recovery.recreate_indexes
            && let Err(e) = state.store.ensure_indexes().await
        {
            tracing::warn!(error = %e, "could not re-create the indexes; the next re-open tries again");
        }
        let pause = backoff.next_pause();
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// How a stream ended.
enum Ended {
    Failed(mongodb::error::Error),
    /// The server closed it: after an `invalidate` (collection dropped or
    /// renamed) the token cannot be resumed after.
    Closed,
}

/// What to do before re-opening (always after a backoff pause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recovery {
    /// Forget the resume token and start from now (history fills the gap).
    from_now: bool,
    /// Create the indexes again (a dropped collection lost them, and with
    /// them the `(room, id)` idempotency key).
    recreate_indexes: bool,
}

impl Recovery {
    fn after(ended: &Ended) -> Self {
        match ended {
            Ended::Failed(e) => Recovery { from_now: is_history_lost(e), recreate_indexes: false },
            Ended::Closed => Recovery { from_now: true, recreate_indexes: true },
        }
    }
}

fn fan_out(state: &AppState, document: Document) {
    state.metrics.changestream_events.inc();
    let doc: MessageDoc = match mongodb::bson::from_document(document) {
        Ok(doc) => doc,
        Err(e) => {
            state.metrics.skipped_events.inc();
            tracing::error!(error = %e, "a change event is not a chat message (inserted by another tool?); skipped");
            return;
        }
    };
    let lag_ms = (now_ms() - doc.ts_ms).max(0);
    state.metrics.insert_to_fanout_seconds.observe(lag_ms as f64 / 1000.0);
    let message = crate::protocol::ChatMessage::from(doc);
    state.store.observe(&message.room, message.seq);
    tracing::debug!(room = %message.room, seq = message.seq, lag_ms, "change event");
    let frame = Utf8Bytes::from(ServerFrame::Msg(&message).to_json());
    hand_to_hub(state, &message.room, message.seq, &frame);
}

fn is_history_lost(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, ErrorKind::Command(c) if c.code == CHANGE_STREAM_HISTORY_LOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_stream_restarts_from_now_and_recreates_the_indexes() {
        assert_eq!(Recovery::after(&Ended::Closed), Recovery { from_now: true, recreate_indexes: true });
        let io = mongodb::error::Error::custom("connection reset");
        assert_eq!(Recovery::after(&Ended::Failed(io)), Recovery { from_now: false, recreate_indexes: false });
    }
}
