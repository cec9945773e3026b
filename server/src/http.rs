//! HTTP routes: the WebSocket endpoint, health, room history and metrics.

use crate::AppState;
use crate::protocol::{MAX_FRAME_BYTES, MAX_WS_MESSAGE_BYTES, RoomId, Seq};
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Largest page `GET /rooms/{room}/messages` returns.
pub const MAX_HISTORY_LIMIT: u32 = 10_000;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(healthz))
        .route("/rooms/{room}/messages", get(history))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn ws_upgrade(ws: WebSocketUpgrade, State(state): State<Arc<AppState>>) -> Response {
    if state.sabotage.refuse_upgrade {
        return (StatusCode::SERVICE_UNAVAILABLE, "sabotage refuse_upgrade: WebSocket upgrades are refused (test only)").into_response();
    }
    // The transport accepts frames up to MAX_WS_MESSAGE_BYTES so that frames
    // over the protocol limit (MAX_FRAME_BYTES) get an error frame instead of
    // a dropped connection.
    const { assert!(MAX_WS_MESSAGE_BYTES > MAX_FRAME_BYTES) };
    ws.max_message_size(MAX_WS_MESSAGE_BYTES)
        .max_frame_size(MAX_WS_MESSAGE_BYTES)
        .on_upgrade(move |socket| crate::ws::handle(socket, state))
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let stream_open = state.stream_open.load(Ordering::SeqCst);
    let mongo = match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("ping timed out after 2s".to_owned()),
    };
    let body = json!({
        "node": state.node_id,
        "mode": state.mode.as_str(),
        "mongo": mongo.as_ref().map_or_else(|e| e.clone(), |_| "ok".to_owned()),
        "fanout": if stream_open { "open" } else { "closed" },
    });
    let status = if mongo.is_ok() && stream_open { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

#[derive(Deserialize)]
struct HistoryQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

async fn history(State(state): State<Arc<AppState>>, Path(room): Path<String>, Query(q): Query<HistoryQuery>) -> Response {
    let room = match RoomId::parse(&room) {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, Json(json!({"code": e.code.as_str(), "message": e.message}))).into_response();
        }
    };
    let limit = q.limit.unwrap_or(1000).clamp(1, MAX_HISTORY_LIMIT);
    match state.store.history(&room, Seq(q.after.unwrap_or(0)), limit).await {
        Ok(messages) => Json(json!({"room": room.as_str(), "messages": messages})).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"code": "store_unavailable", "message": e.to_string()}))).into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render()).into_response()
}
