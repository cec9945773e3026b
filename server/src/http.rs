//! HTTP routes: the WebSocket endpoint, health, room history and metrics.
//! Errors become responses through one type, [`AppError`].

use crate::AppState;
use crate::protocol::{MAX_FRAME_BYTES, MAX_SEQ, MAX_WS_MESSAGE_BYTES, RoomId, Seq};
use crate::ws::Access;
use axum::Json;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chatbench_wire::paths;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Most messages `GET /rooms/{room}/messages` returns in one page (a page
/// is also cut at `--history-page-bytes`).
pub(crate) const MAX_HISTORY_LIMIT: u32 = 10_000;

/// An error answered as JSON `{code, message}` with its status.
pub(crate) enum AppError {
    BadRequest {
        code: &'static str,
        message: String,
    },
    Unavailable {
        code: &'static str,
        message: String,
    },
    /// No, a forged or an expired token (401 `unauthenticated`).
    Unauthenticated(crate::auth::AuthError),
    /// A valid token that does not grant the room (403 `forbidden`).
    Forbidden {
        room: String,
    },
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            AppError::BadRequest { code, message } => (StatusCode::BAD_REQUEST, code, message),
            AppError::Unavailable { code, message } => (StatusCode::SERVICE_UNAVAILABLE, code, message),
            AppError::Unauthenticated(e) => (StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string()),
            AppError::Forbidden { room } => (StatusCode::FORBIDDEN, "forbidden", format!("the token does not grant room {room}")),
        };
        (status, Json(json!({"code": code, "message": message}))).into_response()
    }
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(paths::WS, get(ws_upgrade))
        .route(paths::STOMP, get(stomp_upgrade))
        .route(paths::HEALTHZ, get(healthz))
        .route(paths::HISTORY_ROUTE, get(history))
        .route(paths::METRICS, get(metrics))
        .with_state(state)
}

/// The token a request carries: `Authorization: Bearer`, else the
/// `access_token` query parameter (None: neither).
struct Token(Option<String>);

#[derive(Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Token {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let query = || Query::<TokenQuery>::try_from_uri(&parts.uri).ok().and_then(|q| q.0.access_token);
        Ok(Token(header.or_else(query)))
    }
}

/// With auth on: what the upgrade's token grants. `/ws` needs one; on
/// `/stomp` it may come in CONNECT instead (`Unproven` until then).
fn access(state: &AppState, token: Option<String>, stomp: bool) -> Result<Access, AppError> {
    let Some(verifier) = &state.auth else { return Ok(Access::Open) };
    match token {
        Some(t) => verifier.verify(&t).map(Access::Granted).map_err(|e| {
            state.metrics.auth_refusals.inc();
            AppError::Unauthenticated(e)
        }),
        None if stomp => Ok(Access::Unproven),
        None => {
            state.metrics.auth_refusals.inc();
            Err(AppError::Unauthenticated(crate::auth::AuthError::Missing))
        }
    }
}

async fn ws_upgrade(ws: WebSocketUpgrade, State(state): State<Arc<AppState>>, Token(token): Token) -> Result<Response, AppError> {
    let access = access(&state, token, false)?;
    upgrade(ws, state, access, |_, _| crate::ws::Codec::Json)
}

/// STOMP 1.2 over WebSocket (subprotocol v12.stomp, v11.stomp or v10.stomp
/// when the client offers one; a client that offers none is served too).
async fn stomp_upgrade(ws: WebSocketUpgrade, State(state): State<Arc<AppState>>, Token(token): Token) -> Result<Response, AppError> {
    let access = access(&state, token, true)?;
    upgrade(ws.protocols(crate::stomp_dialect::SUBPROTOCOLS), state, access, crate::ws::Codec::stomp)
}

/// Upgrade to a connection speaking the codec `codec` makes.
fn upgrade(
    ws: WebSocketUpgrade,
    state: Arc<AppState>,
    access: Access,
    codec: impl FnOnce(&AppState, &Access) -> crate::ws::Codec + Send + 'static,
) -> Result<Response, AppError> {
    if state.sabotage.refuse_upgrade {
        let message = "sabotage refuse_upgrade: WebSocket upgrades are refused (test only)".to_owned();
        return Err(AppError::Unavailable { code: "sabotage", message });
    }
    // Until the fan-out source first opened, a subscriber could miss what
    // is stored meanwhile: clients retry.
    if !state.ready.load(Ordering::SeqCst) {
        return Err(AppError::Unavailable { code: "not_ready", message: "the fan-out is not open yet; retry".to_owned() });
    }
    // The transport accepts frames up to MAX_WS_MESSAGE_BYTES so that frames
    // over the protocol limit (MAX_FRAME_BYTES) get an error frame instead of
    // a dropped connection.
    const { assert!(MAX_WS_MESSAGE_BYTES > MAX_FRAME_BYTES) };
    // Small initial buffers: an idle connection should cost kilobytes, not
    // the 128 KiB per direction the WebSocket layer defaults to.
    let buffer = state.limits.ws_buffer_bytes;
    let tracker = state.connections.clone();
    Ok(ws
        .max_message_size(MAX_WS_MESSAGE_BYTES)
        .max_frame_size(MAX_WS_MESSAGE_BYTES)
        .read_buffer_size(buffer)
        .write_buffer_size(buffer)
        .on_upgrade(move |socket| {
            let codec = codec(&state, &access);
            tracker.track_future(crate::ws::handle(socket, state, codec, access))
        }))
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
        "mode": state.fanout.mode().as_str(),
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

/// One page of history: at most `limit` messages and about
/// `--history-page-bytes` of them; `more` says whether to ask again with
/// `after` = the last `seq` returned.
async fn history(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    Token(token): Token,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, AppError> {
    let room = RoomId::parse(&room).map_err(|e| AppError::BadRequest { code: e.code.as_str(), message: e.message })?;
    // TEST ONLY: `--sabotage auth_history_open` reads any room to anyone.
    if !state.sabotage.auth_history_open
        && let Access::Granted(grant) = access(&state, token, false)?
        && !grant.may_loosely(room.as_written(), state.sabotage.loose())
    {
        state.metrics.auth_refusals.inc();
        return Err(AppError::Forbidden { room: room.to_string() });
    }
    let after = q.after.unwrap_or(0);
    if after > MAX_SEQ {
        return Err(AppError::BadRequest { code: "bad_field", message: format!("after must be at most {MAX_SEQ}") });
    }
    let limit = q.limit.unwrap_or(1000).clamp(1, MAX_HISTORY_LIMIT);
    let page = state
        .store
        .history(&room, Seq(after), limit, state.limits.history_page_bytes)
        .await
        .map_err(|e| AppError::Unavailable { code: "store_unavailable", message: e.to_string() })?;
    Ok(Json(json!({"room": room.as_str(), "messages": page.messages, "more": page.more})).into_response())
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render()).into_response()
}
