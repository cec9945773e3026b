//! The system's own history API, read the way a chat client loads history:
//! page by page (`after` = the last `seq` of the previous page) until the
//! server says there is no more. What it serves is compared with the
//! oracle's history (`check::history`), so a server whose history endpoint
//! leaves out, repeats or alters messages fails even though MongoDB holds
//! them right.
//!
//! The reference server's layout: `GET /rooms/{room}/messages?after=N&limit=L`
//! → `{"room", "messages": [{seq, id, body, …}], "more"}`. Every read is
//! bounded: [`PAGE_LIMIT`] messages a page, at most [`MAX_ENTRIES_PER_ROOM`]
//! a room, [`READ_TIMEOUT`] in all; a room that cannot be read completely
//! is marked incomplete (a finding), never guessed.

use crate::trace::{BodyDigest, FOREIGN_MSG, RoomHistory, Stored, parse_wire_id};
use std::time::Duration;

/// Messages asked for per page.
pub(crate) const PAGE_LIMIT: u32 = 1000;
/// A room with more messages than this is reported incomplete.
pub(crate) const MAX_ENTRIES_PER_ROOM: usize = 2_000_000;
/// How long reading every room may take.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// One page request's timeout.
const PAGE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(serde::Deserialize)]
struct Page {
    messages: Vec<PageMessage>,
    #[serde(default)]
    more: bool,
}

#[derive(serde::Deserialize)]
struct PageMessage {
    seq: u64,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    body: Option<String>,
}

/// Every room's history as served by the nodes at `bases` (HTTP base URLs,
/// e.g. `http://127.0.0.1:4100`): room `i` is read from node `i % n`, and
/// from the next node if that one does not answer.
pub(crate) async fn read(bases: &[String], rooms: &[String], headers: &[(String, String)]) -> Vec<RoomHistory> {
    let incomplete = || rooms.iter().map(|_| RoomHistory { entries: Vec::new(), complete: false }).collect();
    let client = match reqwest::Client::builder().timeout(PAGE_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "history API: no HTTP client");
            return incomplete();
        }
    };
    let read_all = async {
        let mut out = Vec::with_capacity(rooms.len());
        for (i, room) in rooms.iter().enumerate() {
            let mut history = RoomHistory::default();
            for attempt in 0..bases.len() {
                history = read_room(&client, &bases[(i + attempt) % bases.len()], room, headers).await;
                if history.complete {
                    break;
                }
            }
            out.push(history);
        }
        out
    };
    if bases.is_empty() {
        return incomplete();
    }
    match tokio::time::timeout(READ_TIMEOUT, read_all).await {
        Ok(histories) => histories,
        Err(_) => {
            tracing::warn!(?READ_TIMEOUT, "history API: reading timed out; every room's served history is unavailable");
            incomplete()
        }
    }
}

async fn read_room(client: &reqwest::Client, base: &str, room: &str, headers: &[(String, String)]) -> RoomHistory {
    let mut entries: Vec<Stored> = Vec::new();
    let mut after = 0u64;
    loop {
        let url = format!("{base}{}?after={after}&limit={PAGE_LIMIT}", chatbench_wire::paths::history(room));
        let page = match fetch(client, &url, headers).await {
            Ok(page) => page,
            Err(why) => {
                tracing::warn!(url, %why, "history API: a page could not be read");
                return RoomHistory { entries, complete: false };
            }
        };
        let last = page.messages.last().map(|m| m.seq);
        entries.extend(page.messages.into_iter().map(|m| {
            let msg = m.id.as_deref().and_then(parse_wire_id).unwrap_or(FOREIGN_MSG);
            Stored::new(m.seq, msg, m.body.map(|b| BodyDigest::of(b.as_bytes())))
        }));
        if entries.len() > MAX_ENTRIES_PER_ROOM {
            tracing::warn!(room, MAX_ENTRIES_PER_ROOM, "history API: room serves more messages than are read");
            return RoomHistory { entries, complete: false };
        }
        match (page.more, last) {
            // A page that says "more" must move on, or it would loop.
            (true, Some(seq)) if seq > after => after = seq,
            (true, _) => {
                tracing::warn!(url, "history API: a page says there is more but does not advance");
                return RoomHistory { entries, complete: false };
            }
            (false, _) => return RoomHistory { entries, complete: true },
        }
    }
}

fn get(client: &reqwest::Client, url: &str, headers: &[(String, String)]) -> reqwest::RequestBuilder {
    headers.iter().fold(client.get(url), |request, (name, value)| request.header(name, value))
}

async fn fetch(client: &reqwest::Client, url: &str, headers: &[(String, String)]) -> anyhow::Result<Page> {
    let response = get(client, url, headers).send().await.map_err(anyhow::Error::from)?;
    let status = response.status();
    if !status.is_success() {
        return Err(anyhow::anyhow!("HTTP {status}"));
    }
    response.json::<Page>().await.map_err(|e| anyhow::anyhow!("not a history page: {e}"))
}

/// An intruder's read of a room's first history page: refused (any 4xx:
/// the server said no), served (how many messages), or no definite answer
/// (a 5xx, a broken connection, nothing within `within`).
pub(crate) async fn probe(base: &str, room: &str, headers: &[(String, String)], within: Duration) -> crate::trace::Answer {
    use crate::trace::Answer;
    let Ok(client) = reqwest::Client::builder().timeout(within).build() else { return Answer::NoAnswer };
    let url = format!("{base}{}?after=0&limit={PAGE_LIMIT}", chatbench_wire::paths::history(room));
    let Ok(response) = get(&client, &url, headers).send().await else { return Answer::NoAnswer };
    let status = response.status();
    if status.is_client_error() {
        return Answer::Refused;
    }
    if !status.is_success() {
        return Answer::NoAnswer;
    }
    match response.json::<Page>().await {
        Ok(page) => Answer::Accepted { served: page.messages.len() as u32 },
        // A 2xx the client cannot read is still not a refusal.
        Err(_) => Answer::Accepted { served: 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An intruder's read: 401/403 is a refusal, an unreachable node no answer.
    #[tokio::test]
    async fn a_probe_of_an_unreachable_server_has_no_answer() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let answer = probe(&format!("http://127.0.0.1:{port}"), "a", &[], Duration::from_secs(2)).await;
        assert_eq!(answer, crate::trace::Answer::NoAnswer);
    }

    #[tokio::test]
    async fn an_unreachable_server_gives_incomplete_history_not_a_hang() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let h = read(&[format!("http://127.0.0.1:{port}")], &["a".to_owned()], &[]).await;
        assert_eq!(h.len(), 1);
        assert!(!h[0].complete);
    }

    /// A server that answers every page with the same "more" page would
    /// be read for ever: it is incomplete after one repeat, not a hang.
    #[tokio::test]
    async fn a_page_that_says_more_but_does_not_advance_is_incomplete() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let body = r#"{"room":"a","messages":[{"seq":0,"id":"m1","body":"x"}],"more":true}"#;
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let reply =
                            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                        if socket.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let h = tokio::time::timeout(Duration::from_secs(10), read(&[base], &["a".to_owned()], &[])).await.expect("no hang");
        assert!(!h[0].complete, "{h:?}");
    }
}
