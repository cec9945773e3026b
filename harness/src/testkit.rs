//! A protocol v1 client for end-to-end tests of the reference server
//! (server/PROTOCOL.md), shared by the harness's and the server's tests.
//! It panics on anything unexpected (a timeout, a frame that is not JSON):
//! it is for tests, not for runs, whose clients are in `crate::client`.

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// How long a test waits for the next frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the connection did next.
#[derive(Debug)]
pub enum Next {
    Frame(Value),
    Closed(Option<u16>),
}

pub struct V1Client {
    pub ws: Ws,
}

impl V1Client {
    pub async fn connect(url: &str) -> V1Client {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
        V1Client { ws }
    }

    pub async fn send_json(&mut self, value: Value) {
        self.ws.send(Message::text(value.to_string())).await.expect("send frame");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("send frame");
    }

    pub async fn send(&mut self, room: &str, id: &str, body: &str) {
        self.send_json(serde_json::json!({"op": "send", "room": room, "id": id, "body": body})).await;
    }

    /// The next text frame or the close.
    pub async fn next_event(&mut self) -> Next {
        loop {
            let msg = tokio::time::timeout(FRAME_TIMEOUT, self.ws.next()).await.expect("a frame within the timeout");
            match msg {
                Some(Ok(Message::Text(text))) => return Next::Frame(serde_json::from_str(text.as_str()).expect("server frames are JSON")),
                Some(Ok(Message::Close(frame))) => return Next::Closed(frame.map(|f| f.code.into())),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Next::Closed(None),
            }
        }
    }

    /// The next text frame as JSON; panics on timeout or close.
    pub async fn next(&mut self) -> Value {
        match self.next_event().await {
            Next::Frame(v) => v,
            Next::Closed(code) => panic!("connection closed ({code:?})"),
        }
    }

    /// The next frame with this op, skipping others (e.g. msgs while waiting for an ack).
    pub async fn next_op(&mut self, op: &str) -> Value {
        loop {
            let frame = self.next().await;
            if frame["op"] == op {
                return frame;
            }
        }
    }

    /// One frame of each op, in whatever order they arrive (a connection
    /// that sends into its own room may get its `msg` before its `ack`).
    pub async fn next_each(&mut self, ops: &[&str]) -> Vec<Value> {
        let mut found: Vec<Option<Value>> = vec![None; ops.len()];
        while found.iter().any(Option::is_none) {
            let frame = self.next().await;
            if let Some(i) = ops.iter().position(|op| frame["op"] == *op)
                && found[i].is_none()
            {
                found[i] = Some(frame);
            }
        }
        found.into_iter().map(|f| f.expect("every op was found")).collect()
    }

    /// Subscribe and wait for the confirmation: the room's head.
    pub async fn subscribe(&mut self, room: &str, after: Option<u64>) -> u64 {
        let mut frame = serde_json::json!({"op": "subscribe", "room": room});
        if let Some(a) = after {
            frame["after"] = a.into();
        }
        self.send_json(frame).await;
        self.next_op("subscribed").await["head"].as_u64().expect("head is a number")
    }

    /// Collect `n` msg frames as (seq, id).
    pub async fn msgs(&mut self, n: usize) -> Vec<(u64, String)> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let f = self.next_op("msg").await;
            out.push((f["seq"].as_u64().expect("seq is a number"), f["id"].as_str().expect("id is a string").to_owned()));
        }
        out
    }

    /// No further frame arrives within `wait`.
    pub async fn assert_quiet(&mut self, wait: Duration) {
        if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(wait, self.ws.next()).await {
            panic!("unexpected frame: {t}");
        }
    }
}
