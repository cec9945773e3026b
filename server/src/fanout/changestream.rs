//! `changestream` fan-out: exactly one insert-only change stream per node,
//! however many rooms and subscribers. Each event is serialized once into a
//! `msg` frame and handed to the hub.
//!
//! When the stream fails it is re-opened from the last resume token (with
//! backoff), `/healthz` reports unhealthy meanwhile, and the hub asks every
//! connection to re-check its rooms against history, so a subscriber sees
//! neither a gap nor a duplicate because of the failure. If the token has
//! fallen out of the oplog (ChangeStreamHistoryLost) that is logged as an
//! error and the stream restarts from now; the history re-check still closes
//! the gap for subscribers.

use crate::AppState;
use crate::protocol::ServerFrame;
use crate::store::{MessageDoc, now_ms};
use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;
use mongodb::bson::doc;
use mongodb::change_stream::event::ResumeToken;
use mongodb::error::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::broadcast;

const CHANGE_STREAM_HISTORY_LOST: i32 = 286;

pub async fn run(state: Arc<AppState>, mut shutdown: broadcast::Receiver<()>) {
    let mut token: Option<ResumeToken> = None;
    let mut backoff = Duration::from_millis(50);
    let mut opened_before = false;
    loop {
        let watch = state
            .store
            .messages()
            .watch()
            .pipeline([doc! {"$match": {"operationType": "insert"}}])
            .max_await_time(Duration::from_millis(500))
            .resume_after(token.clone());
        let opened = tokio::select! {
            _ = shutdown.recv() => return,
            opened = watch => opened,
        };
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(e) => {
                if is_history_lost(&e) {
                    tracing::error!(error = %e, "change stream resume token is no longer in the oplog; restarting from now, subscribers re-sync from history");
                    token = None;
                }
                state.stream_open.store(false, Ordering::SeqCst);
                tracing::warn!(error = %e, ?backoff, "could not open the change stream; retrying");
                tokio::select! {
                    _ = shutdown.recv() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        state.stream_open.store(true, Ordering::SeqCst);
        tracing::debug!(resumed = token.is_some(), "change stream open");
        backoff = Duration::from_millis(50);
        if opened_before {
            state.metrics.changestream_reopens.inc();
            state.hub.request_resync();
            tracing::info!("change stream re-opened");
        }
        opened_before = true;
        loop {
            let next = tokio::select! {
                _ = shutdown.recv() => return,
                next = stream.next() => next,
            };
            match next {
                Some(Ok(event)) => {
                    token = stream.resume_token().or(Some(event.id.clone()));
                    if let Some(doc) = event.full_document {
                        fan_out(&state, doc);
                    }
                }
                Some(Err(e)) => {
                    if is_history_lost(&e) {
                        tracing::error!(error = %e, "change stream resume token is no longer in the oplog; restarting from now, subscribers re-sync from history");
                        token = None;
                    } else {
                        tracing::warn!(error = %e, "change stream failed; resuming from the last token");
                    }
                    break;
                }
                None => {
                    tracing::warn!("change stream ended; re-opening");
                    break;
                }
            }
        }
        state.stream_open.store(false, Ordering::SeqCst);
    }
}

fn fan_out(state: &AppState, doc: MessageDoc) {
    state.metrics.changestream_events.inc();
    let lag_ms = (now_ms() - doc.ts_ms).max(0);
    state.metrics.insert_to_fanout_seconds.observe(lag_ms as f64 / 1000.0);
    let message = doc.into_message();
    tracing::debug!(room = %message.room, seq = message.seq, lag_ms, "change event");
    let frame = Utf8Bytes::from(ServerFrame::Msg(&message).to_json());
    super::hand_to_hub(state, &message.room, message.seq, &frame);
}

fn is_history_lost(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, ErrorKind::Command(c) if c.code == CHANGE_STREAM_HISTORY_LOST)
}
