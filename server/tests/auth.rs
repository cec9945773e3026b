//! `--auth-secret`: tokens on the upgrade, the room check on subscribe,
//! send and history, expiry, and each authorization sabotage failing the
//! check it breaks. In-process nodes on compat MongoDB.

mod common;

use chatbench_server::auth::Verifier;
use chatbench_server::fanout::FanoutConfig;
use chatbench_server::sabotage::Sabotage;
use common::{Node, V1Client};
use jsonwebtoken::{EncodingKey, Header, encode};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite;

const SECRET: &[u8] = b"a test secret that is long enough for HS256";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(rooms: &[&str], exp: u64) -> String {
    encode(&Header::default(), &serde_json::json!({"sub": "tester", "rooms": rooms, "exp": exp}), &EncodingKey::from_secret(SECRET))
        .unwrap()
}

async fn start_auth(sabotage: &str) -> (Node, common::Env) {
    let env = common::start(0, Default::default()).await;
    let mut config = common::config(&env.mongo.uri, &env.db, 0, Default::default(), FanoutConfig::Changestream(Default::default()));
    config.auth = Some(Arc::new(Verifier::new(SECRET).unwrap()));
    config.sabotage = sabotage.parse::<Sabotage>().unwrap();
    let node = common::start_node(config).await;
    common::wait_healthy(&node).await;
    (node, env)
}

async fn connect(node: &Node, token: &str) -> V1Client {
    V1Client::connect(&format!("{}?access_token={token}", node.ws_url())).await
}

async fn upgrade_status(url: &str, bearer: Option<&str>) -> u16 {
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    if let Some(t) = bearer {
        request.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("upgrade failed otherwise: {e}"),
    }
}

#[tokio::test]
async fn upgrades_need_a_valid_token_and_rooms_need_a_grant() {
    let (node, _env) = start_auth("").await;
    let url = node.ws_url();
    assert_eq!(upgrade_status(&url, None).await, 401, "no token");
    assert_eq!(upgrade_status(&url, Some("not.a.jwt")).await, 401, "malformed");
    assert_eq!(upgrade_status(&url, Some(&token(&["a"], now() - 5))).await, 401, "expired");
    let forged = encode(
        &Header::default(),
        &serde_json::json!({"sub": "x", "rooms": ["*"], "exp": now() + 60}),
        &EncodingKey::from_secret(b"someone else's secret, 32 bytes or more"),
    )
    .unwrap();
    assert_eq!(upgrade_status(&url, Some(&forged)).await, 401, "forged");
    assert_eq!(upgrade_status(&url, Some(&token(&["a"], now() + 60))).await, 101);

    let mut c = connect(&node, &token(&["a"], now() + 60)).await;
    assert_eq!(c.subscribe("a", None).await, 0);
    // A room it is not granted: a definite error, and the connection goes on.
    c.send_json(serde_json::json!({"op": "subscribe", "room": "b"})).await;
    let e = c.next_op("error").await;
    assert_eq!((e["code"].as_str(), e["room"].as_str()), (Some("forbidden"), Some("b")));
    c.send("b", "m1", "hi").await;
    let e = c.next_op("error").await;
    assert_eq!((e["code"].as_str(), e["id"].as_str(), e["room"].as_str()), (Some("forbidden"), Some("m1"), Some("b")));
    c.send("a", "m2", "hello").await;
    assert_eq!(c.next_each(&["ack", "msg"]).await[1]["id"], "m2");
    // Four refused upgrades, one subscribe, one send.
    assert_eq!(common::metric(&node, "chat_auth_refusals_total").await, 6.0);
}

/// One STOMP frame from the server (text or binary).
async fn stomp_frame(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> Option<String> {
    use futures::StreamExt;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a frame within 10 s") {
            Some(Ok(tungstenite::Message::Text(t))) => return Some(t.to_string()),
            Some(Ok(tungstenite::Message::Binary(b))) => return Some(String::from_utf8_lossy(&b).into_owned()),
            Some(Ok(tungstenite::Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn stomp_takes_the_token_on_the_upgrade_or_in_connect_and_refuses_without() {
    use futures::SinkExt;
    let (node, _env) = start_auth("").await;
    let stomp = format!("ws://{}/stomp", node.addr);
    let connect = |extra: &str| tungstenite::Message::text(format!("CONNECT\naccept-version:1.2\nhost:x\n{extra}\n\0"));
    // No token anywhere: ERROR unauthenticated, then the connection ends.
    let (mut ws, _) = tokio_tungstenite::connect_async(stomp.as_str()).await.unwrap();
    ws.send(connect("")).await.unwrap();
    let error = stomp_frame(&mut ws).await.expect("an ERROR frame");
    assert!(error.starts_with("ERROR") && error.contains("message:unauthenticated"), "{error}");
    assert_eq!(stomp_frame(&mut ws).await, None, "closed after the ERROR");
    assert_eq!(common::metric(&node, "chat_auth_refusals_total").await, 1.0);
    // The token in CONNECT (passcode), or on the upgrade with a bare CONNECT.
    let token = token(&["a"], now() + 60);
    let upgraded = format!("{stomp}?access_token={token}");
    for (url, extra) in [(stomp.as_str(), format!("passcode:{token}\n")), (upgraded.as_str(), String::new())] {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        ws.send(connect(&extra)).await.unwrap();
        let connected = stomp_frame(&mut ws).await.expect("CONNECTED");
        assert!(connected.starts_with("CONNECTED"), "{url}: {connected}");
        // A room the token does not grant: ERROR forbidden (STOMP closes after an ERROR).
        ws.send(tungstenite::Message::text("SUBSCRIBE\nid:0\ndestination:/sub/b\nreceipt:r\n\n\0")).await.unwrap();
        let error = stomp_frame(&mut ws).await.expect("an ERROR frame");
        assert!(error.starts_with("ERROR") && error.contains("forbidden"), "{url}: {error}");
    }
    assert_eq!(common::metric(&node, "chat_auth_refusals_total").await, 3.0);
}

#[tokio::test]
async fn history_needs_a_token_that_grants_the_room() {
    let (node, _env) = start_auth("").await;
    let client = reqwest::Client::new();
    let get = |path: String, bearer: Option<String>| {
        let mut r = client.get(node.http(&path));
        if let Some(t) = bearer {
            r = r.bearer_auth(t);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/rooms/a/messages".into(), None).await, 401);
    assert_eq!(get("/rooms/a/messages".into(), Some(token(&["b"], now() + 60))).await, 403);
    assert_eq!(get("/rooms/a/messages".into(), Some(token(&["a"], now() + 60))).await, 200);
    assert_eq!(get(format!("/rooms/a/messages?access_token={}", token(&["*"], now() + 60)), None).await, 200);
}

#[tokio::test]
async fn a_connection_whose_token_expires_is_closed_with_4001() {
    let (node, _env) = start_auth("").await;
    let mut c = connect(&node, &token(&["a"], now() + 2)).await;
    c.subscribe("a", None).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        match c.next_event().await {
            common::Next::Closed(code) => {
                assert_eq!(code, Some(4001));
                break;
            }
            common::Next::Frame(_) => assert!(tokio::time::Instant::now() < deadline, "never closed"),
        }
    }
}

#[tokio::test]
async fn each_authorization_sabotage_lets_exactly_its_hole_through() {
    // A subscribe with `after` skips the check.
    let (node, _env) = start_auth("auth_skip_after").await;
    let mut c = connect(&node, &token(&["a"], now() + 60)).await;
    c.send_json(serde_json::json!({"op": "subscribe", "room": "b"})).await;
    assert_eq!(c.next_op("error").await["code"], "forbidden", "without after it is still checked");
    assert_eq!(c.subscribe("b", Some(0)).await, 0, "with after it slips through");
    drop(c);
    drop(node);

    // Only the first room is checked.
    let (node, _env2) = start_auth("auth_first_room_only").await;
    let mut c = connect(&node, &token(&["a"], now() + 60)).await;
    c.subscribe("a", None).await;
    assert_eq!(c.subscribe("b", None).await, 0, "the second room is not checked");
    let history = reqwest::get(node.http("/rooms/b/messages")).await.unwrap().status().as_u16();
    assert_eq!(history, 401, "history is still checked");
    drop(node);

    // History without a token.
    let (node, _env3) = start_auth("auth_history_open").await;
    assert_eq!(reqwest::get(node.http("/rooms/b/messages")).await.unwrap().status().as_u16(), 200);
    assert_eq!(upgrade_status(&node.ws_url(), None).await, 401, "the socket is still checked");
}
