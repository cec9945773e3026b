//! `protocol: graphql_ws`: GraphQL over WebSocket, the
//! `graphql-transport-ws` subprotocol of the `graphql-ws` library (how
//! Apollo and urql clients receive subscriptions). A room is a subscription
//! (a document and variables per room); a message is a mutation, and the
//! mutation's result is its ack.
//!
//! Messages: `connection_init` (with `connection_params`), answered by
//! `connection_ack`; `subscribe` with an operation id the client picks
//! (`r{slot}.{n}` for a room, `m{msg}.{n}` for a send), answered by `next`
//! (a delivery, or a mutation's result), `error` (a refusal) and
//! `complete`; `complete` from the client ends a subscription; `ping` is
//! answered by `pong`. The protocol confirms neither a subscription nor its
//! end, so both count as done `settle` after they were sent.
//!
//! Paths in `delivery` and `ack` are dotted paths into the result's `data`
//! (`messageAdded.id`); a result with `errors` is a refusal.

use super::incoming::{Delivered, Incoming, Rooms, room_label};
use super::json_doc::{IdReader, JsonId, json_path, json_u64};
use super::template::{ExpectedText, check_is_json, fill, fill_json, id_findable};
use super::{Declaration, Demands, Problem, Promises, Speak, Who};
use crate::duration::HumanDuration;
use crate::message::{BodyDigest, MsgNo, parse_wire_id, wire_id};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// A GraphQL server's subscription and mutation. Variables are JSON
/// templates: `{room}`, `{id}`, `{text}` (JSON-escaped), `{after}` (a number).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphqlWsSettings {
    /// WebSocket path on nodes the harness starts.
    #[serde(default = "default_path")]
    pub path: String,
    /// The `connection_init` payload, a JSON template (`{token}`,
    /// `{client}`, `{room}`: the home room); none: no payload.
    #[serde(default)]
    pub connection_params: Option<String>,
    /// The subscription a client holds per room, e.g.
    /// `'subscription ($room: String!) { messageAdded(room: $room) { id room text } }'`.
    pub subscription: String,
    /// Its variables, e.g. `'{"room":"{room}"}'`.
    #[serde(default = "no_variables")]
    pub subscription_variables: String,
    /// Variables resuming after a seq (`{after}`), for systems with a seq.
    #[serde(default)]
    pub resume_variables: Option<String>,
    /// The mutation that sends a message; its result is the ack.
    pub mutation: String,
    /// Its variables: must carry `{id}`, e.g. `'{"room":"{room}","id":"{id}","text":"{text}"}'`.
    pub mutation_variables: String,
    /// Where a subscription's result carries a message.
    pub delivery: GraphqlDelivery,
    /// A subscription (or its end) counts as done this long after it was sent.
    #[serde(default = "default_settle")]
    pub settle: HumanDuration,
}

/// Dotted paths into a subscription result's `data`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphqlDelivery {
    /// Where the harness's id is, e.g. `{json: messageAdded.id}`.
    pub id: JsonId,
    /// The room's name, e.g. `messageAdded.room`.
    #[serde(default)]
    pub room: Option<String>,
    /// The text, compared with what was sent there.
    #[serde(default)]
    pub text: Option<String>,
    /// A per-room seq, if the server has one.
    #[serde(default)]
    pub seq: Option<String>,
}

fn default_path() -> String {
    "/graphql".into()
}
fn no_variables() -> String {
    "{}".into()
}
fn default_settle() -> HumanDuration {
    HumanDuration(Duration::from_millis(300))
}

impl Declaration for GraphqlWsSettings {
    fn path(&self) -> &str {
        &self.path
    }

    fn validate(&self, asked: &Demands) -> Result<(), Problem> {
        if !self.path.starts_with('/') {
            return Err(Problem::at("path", format!("{:?} must start with /", self.path)));
        }
        for (key, document, keyword) in [("subscription", &self.subscription, "subscription"), ("mutation", &self.mutation, "mutation")] {
            if !document.trim_start().starts_with(keyword) {
                return Err(Problem::at(key, format!("{document:?} is not a {keyword} document (it starts with `{keyword}`)")));
            }
        }
        check_is_json("subscription_variables", &fill(&self.subscription_variables, "room-1", "", ""))
            .map_err(|p| Problem::at("subscription_variables", p.why))?;
        check_is_json("mutation_variables", &fill(&self.mutation_variables, "room-1", "m1", "hi"))
            .map_err(|p| Problem::at("mutation_variables", p.why))?;
        if let Some(t) = &self.connection_params {
            check_is_json("connection_params", &fill_json(t, 0, "room-1", "token")).map_err(|p| Problem::at("connection_params", p.why))?;
        }
        if let Some(t) = &self.resume_variables {
            if !t.contains("{after}") {
                return Err(Problem::at("resume_variables", format!("{t:?} has no {{after}}")));
            }
            check_is_json("resume_variables", &fill(t, "room-1", "", "").replace("{after}", "7"))
                .map_err(|p| Problem::at("resume_variables", p.why))?;
        }
        id_findable(&self.delivery.id, &self.mutation_variables).map_err(|p| Problem::at("delivery", format!("id: {}", p.why)))?;
        if self.settle.0.is_zero() {
            return Err(Problem::at("settle", "must be longer than 0s"));
        }
        if self.delivery.room.is_none() && asked.rooms_per_client > 1 {
            return Err(Problem::at(
                "delivery",
                "deliveries that do not name their room (no room: PATH) need one room per client (workload.rooms_per_client: 1)",
            ));
        }
        if asked.seq && (self.delivery.seq.is_none() || self.resume_variables.is_none()) {
            return Err("order: seq needs delivery.seq and resume_variables (to resume after a reconnect)".into());
        }
        if asked.reference_server {
            return Err("the reference server does not speak GraphQL: give system.command (or system.external)".into());
        }
        if asked.reference_history {
            return Err("a GraphQL server keeps no history in the reference layout: declare guarantees.history: none".into());
        }
        Ok(())
    }

    fn speaker(&self, who: &Who<'_>, promises: Promises, rooms: &Rooms) -> Box<dyn Speak> {
        let (room, id, text) = ExpectedText::marks();
        Box::new(GraphqlWs {
            params: self.connection_params.as_deref().map(|t| fill_json(t, who.client, rooms.home(), who.token)),
            id: IdReader::json(&self.delivery.id).expect("id patterns are checked when the scenario is read"),
            expected: ExpectedText::new(&fill(&self.mutation_variables, room, id, text), self.delivery.text.as_deref()),
            acks: promises.acks,
            operations: AtomicU64::new(0),
            subscriptions: Mutex::new(HashMap::new()),
            settings: self.clone(),
        })
    }
}

#[derive(Debug)]
struct GraphqlWs {
    settings: GraphqlWsSettings,
    /// The `connection_init` payload, filled for this client.
    params: Option<String>,
    id: IdReader,
    expected: ExpectedText,
    /// Mutation results are acks (not `ack: none`).
    acks: bool,
    /// Operation ids are unique on a connection (the server closes it
    /// with 4409 on a reused one): a counter goes into each.
    operations: AtomicU64,
    /// Each room's current subscription id on this connection (its `complete` names it).
    subscriptions: Mutex<HashMap<usize, String>>,
}

/// What an operation id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Room(usize),
    Send(MsgNo),
}

impl GraphqlWs {
    fn subscriptions(&self) -> std::sync::MutexGuard<'_, HashMap<usize, String>> {
        self.subscriptions.lock().expect("one task uses a client's subscriptions")
    }

    fn next_operation(&self) -> u64 {
        self.operations.fetch_add(1, Ordering::Relaxed)
    }

    /// A room's subscription id: `r{slot}.{n}`.
    fn room_operation(&self, slot: usize) -> String {
        format!("r{slot}.{}", self.next_operation())
    }

    fn operation(id: &str) -> Option<Operation> {
        let (what, _) = id.split_once('.')?;
        if let Some(slot) = what.strip_prefix('r') {
            return slot.parse().ok().map(Operation::Room);
        }
        parse_wire_id(what).map(Operation::Send)
    }

    fn subscribe(id: &str, query: &str, variables: &str) -> Message {
        // Variables are validated JSON templates; filled, they stay JSON.
        let variables: serde_json::Value = serde_json::from_str(variables).unwrap_or(serde_json::Value::Null);
        Message::text(serde_json::json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}}).to_string())
    }

    fn delivery(&self, rooms: &Rooms, slot: usize, data: &serde_json::Value) -> Delivered {
        let d = &self.settings.delivery;
        let str_at = |p: &Option<String>| p.as_deref().and_then(|p| json_path(data, p)).and_then(|v| v.as_str());
        let room = str_at(&d.room);
        let named = room.and_then(|r| rooms.slot_of(r));
        Delivered {
            msg: self.id.id_in(data).as_deref().and_then(parse_wire_id),
            seq: d.seq.as_deref().and_then(|p| json_path(data, p)).and_then(json_u64).unwrap_or(0),
            // Its labels name the room; without a room path, the subscription does.
            slot: named.unwrap_or(if d.room.is_none() { slot } else { 0 }),
            label: room_label(room, named, d.room.is_none() && rooms.single()),
            body: str_at(&d.text).map(|t| BodyDigest::of(t.as_bytes())),
            message_id: 0,
        }
    }

    fn meaning(&self, rooms: &Rooms, bytes: &[u8]) -> Incoming {
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(bytes) else { return Incoming::Unmatched };
        let operation = doc.get("id").and_then(|i| i.as_str()).and_then(Self::operation);
        let payload = doc.get("payload");
        let errors = || payload.and_then(|p| p.get("errors")).filter(|e| !e.is_null()).map(|e| e.to_string());
        match (doc.get("type").and_then(|t| t.as_str()), operation) {
            (Some("connection_ack"), _) => Incoming::Connected { heartbeat: None },
            (Some("ping"), _) => Incoming::Reply(Message::text(r#"{"type":"pong"}"#)),
            (Some("pong"), _) => Incoming::Nothing,
            (Some("next"), Some(Operation::Room(slot))) => match (errors(), payload.and_then(|p| p.get("data"))) {
                (None, Some(data)) if !data.is_null() => Incoming::Msg(self.delivery(rooms, slot, data)),
                (why, _) => Incoming::Error { msg: None, slot: Some(slot), code: why.unwrap_or_else(|| "a result without data".into()) },
            },
            (Some("next"), Some(Operation::Send(msg))) => match errors() {
                Some(code) => Incoming::Error { msg: Some(msg), slot: None, code },
                None if self.acks => Incoming::Ack { msg, seq: 0 },
                None => Incoming::Nothing,
            },
            (Some("error"), Some(Operation::Room(slot))) => {
                Incoming::Error { msg: None, slot: Some(slot), code: payload.map_or_else(String::new, |p| p.to_string()) }
            }
            (Some("error"), Some(Operation::Send(msg))) => {
                Incoming::Error { msg: Some(msg), slot: None, code: payload.map_or_else(String::new, |p| p.to_string()) }
            }
            // A mutation's end follows its result; a subscription's end
            // from the server is the end of that room's feed.
            (Some("complete"), Some(Operation::Room(slot))) => {
                Incoming::Error { msg: None, slot: Some(slot), code: "the server completed the subscription".into() }
            }
            (Some("complete"), _) => Incoming::Nothing,
            _ => Incoming::Unmatched,
        }
    }
}

impl Speak for GraphqlWs {
    fn hello(&self, _: &str) -> Option<Message> {
        // A new connection holds no subscriptions yet.
        self.subscriptions().clear();
        let payload = self.params.as_deref().and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok());
        let mut init = serde_json::json!({"type": "connection_init"});
        if let Some(payload) = payload {
            init["payload"] = payload;
        }
        Some(Message::text(init.to_string()))
    }

    fn hello_refused(&self, code: &str) -> String {
        format!("the GraphQL connection_init was refused: {code}")
    }

    fn subprotocols(&self) -> Option<&str> {
        Some("graphql-transport-ws")
    }

    fn join(&self, rooms: &Rooms, slot: usize, after: Option<u64>, _: u64) -> Message {
        let room = rooms.name(slot);
        let variables = match (after, &self.settings.resume_variables) {
            (Some(after), Some(t)) => fill(t, room, "", "").replace("{after}", &after.to_string()),
            _ => fill(&self.settings.subscription_variables, room, "", ""),
        };
        let id = self.room_operation(slot);
        self.subscriptions().insert(slot, id.clone());
        Self::subscribe(&id, &self.settings.subscription, &variables)
    }

    /// Completes the room's current subscription.
    fn leave(&self, _: &Rooms, slot: usize, _: u64) -> Message {
        let id = self.subscriptions().remove(&slot).unwrap_or_else(|| format!("r{slot}.none"));
        Message::text(serde_json::json!({"id": id, "type": "complete"}).to_string())
    }

    fn send(&self, rooms: &Rooms, slot: usize, msg: MsgNo, text: &str) -> (Message, BodyDigest) {
        let room = rooms.name(slot);
        let id = wire_id(msg);
        let variables = fill(&self.settings.mutation_variables, room, &id, text);
        let operation = format!("{id}.{}", self.next_operation());
        (Self::subscribe(&operation, &self.settings.mutation, &variables), self.expected.digest(room, &id, text))
    }

    fn done_after(&self) -> Option<Duration> {
        Some(self.settings.settle.0)
    }

    fn resumes(&self) -> bool {
        self.settings.resume_variables.is_some()
    }

    fn read(&self, rooms: &Rooms, bytes: &[u8], out: &mut Vec<Incoming>) {
        out.push(self.meaning(rooms, bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{text, wire};
    use super::super::{Declared, Wire};
    use super::*;
    use crate::message::{Label, msg_no};

    fn settings() -> GraphqlWsSettings {
        GraphqlWsSettings {
            path: default_path(),
            connection_params: Some(r#"{"token":"{token}"}"#.into()),
            subscription: "subscription ($room: String!) { messages(room: $room) { id room text seq } }".into(),
            subscription_variables: r#"{"room":"{room}"}"#.into(),
            resume_variables: Some(r#"{"room":"{room}","after":{after}}"#.into()),
            mutation: "mutation ($room: String!, $id: String!, $text: String!) { send(room: $room, id: $id, text: $text) { id } }".into(),
            mutation_variables: r#"{"room":"{room}","id":"{id}","text":"{text}"}"#.into(),
            delivery: GraphqlDelivery {
                id: JsonId { json: "messages.id".into(), pattern: None },
                room: Some("messages.room".into()),
                text: Some("messages.text".into()),
                seq: Some("messages.seq".into()),
            },
            settle: default_settle(),
        }
    }

    fn gql() -> Wire {
        wire(&Declared::GraphqlWs(settings()), true, &["room-1", "room-2"], "tok")
    }

    fn json(m: Message) -> serde_json::Value {
        serde_json::from_str(&text(m)).unwrap()
    }

    #[test]
    fn the_client_says_what_graphql_ws_clients_say() {
        let w = gql();
        assert_eq!(json(w.hello("h").unwrap()), serde_json::json!({"type": "connection_init", "payload": {"token": "tok"}}));
        assert_eq!(w.subprotocols(), Some("graphql-transport-ws"));
        let sub = json(w.subscribe(1, None, 0));
        assert_eq!((sub["type"].as_str(), sub["payload"]["variables"].clone()), (Some("subscribe"), serde_json::json!({"room": "room-2"})));
        assert!(sub["payload"]["query"].as_str().unwrap().starts_with("subscription"));
        let resumed = json(w.subscribe(1, Some(7), 1));
        assert_eq!(resumed["payload"]["variables"], serde_json::json!({"room": "room-2", "after": 7}));
        assert_ne!(sub["id"], resumed["id"], "operation ids are never reused on a connection");
        // Leaving completes the room's current subscription.
        assert_eq!(json(w.unsubscribe(1, 2)), serde_json::json!({"id": resumed["id"], "type": "complete"}));
        let msg = msg_no(3, 4);
        let (send, digest) = w.send(0, msg, "say \"hi\"");
        let send = json(send);
        assert_eq!(send["payload"]["variables"], serde_json::json!({"room": "room-1", "id": wire_id(msg), "text": "say \"hi\""}));
        assert_eq!(digest, BodyDigest::of(b"say \"hi\""));
        assert_eq!(w.done_after(), Some(Duration::from_millis(300)), "subscriptions are not confirmed: they settle");
    }

    #[test]
    fn results_mean_deliveries_acks_and_refusals() {
        let w = gql();
        let sub = json(w.subscribe(1, None, 0))["id"].as_str().unwrap().to_owned();
        let msg = msg_no(3, 4);
        let (send, _) = w.send(0, msg, "x");
        let op = json(send)["id"].as_str().unwrap().to_owned();
        let read = |v: serde_json::Value| w.read_one(&Message::text(v.to_string()));
        assert_eq!(read(serde_json::json!({"type": "connection_ack"})), Incoming::Connected { heartbeat: None });
        assert_eq!(read(serde_json::json!({"type": "ping"})), Incoming::Reply(Message::text(r#"{"type":"pong"}"#)));
        let data = serde_json::json!({"messages": {"id": wire_id(msg), "room": "room-2", "text": "x", "seq": "12"}});
        assert_eq!(
            read(serde_json::json!({"id": sub, "type": "next", "payload": {"data": data}})),
            Incoming::Msg(Delivered {
                msg: Some(msg),
                seq: 12,
                slot: 1,
                label: Label::Ok,
                body: Some(BodyDigest::of(b"x")),
                message_id: 0
            })
        );
        assert_eq!(
            read(serde_json::json!({"id": op, "type": "next", "payload": {"data": {"send": {"id": "x"}}}})),
            Incoming::Ack { msg, seq: 0 }
        );
        let refused = read(serde_json::json!({"id": op, "type": "next", "payload": {"data": null, "errors": [{"message": "full"}]}}));
        assert!(matches!(refused, Incoming::Error { msg: Some(m), code, .. } if m == msg && code.contains("full")));
        let failed = read(serde_json::json!({"id": sub, "type": "error", "payload": [{"message": "no such room"}]}));
        assert!(matches!(failed, Incoming::Error { slot: Some(1), code, .. } if code.contains("no such room")));
        assert!(matches!(read(serde_json::json!({"id": sub, "type": "complete"})), Incoming::Error { slot: Some(1), .. }));
        assert_eq!(read(serde_json::json!({"id": op, "type": "complete"})), Incoming::Nothing, "a mutation's end follows its result");
        assert_eq!(read(serde_json::json!({"type": "hello"})), Incoming::Unmatched);
        assert_eq!(read(serde_json::json!({"id": "zzz", "type": "next"})), Incoming::Unmatched, "an operation id not ours");
    }

    #[test]
    fn declarations_that_cannot_work_are_refused() {
        let asked = Demands {
            rooms_per_client: 2,
            churn: false,
            acks: true,
            seq: true,
            reference_history: false,
            reference_server: false,
            pure_senders: false,
        };
        assert_eq!(settings().validate(&asked), Ok(()));
        let refused: [(GraphqlWsSettings, Demands, Option<&str>, &str); 7] = [
            (GraphqlWsSettings { subscription: "query { x }".into(), ..settings() }, asked, Some("subscription"), "not a subscription"),
            (GraphqlWsSettings { mutation_variables: r#"{"text":"{text}"}"#.into(), ..settings() }, asked, Some("delivery"), "no {id}"),
            (
                GraphqlWsSettings { subscription_variables: "{room}".into(), ..settings() },
                asked,
                Some("subscription_variables"),
                "not JSON",
            ),
            (GraphqlWsSettings { resume_variables: None, ..settings() }, asked, None, "resume_variables"),
            (
                GraphqlWsSettings { delivery: GraphqlDelivery { room: None, ..settings().delivery }, ..settings() },
                asked,
                Some("delivery"),
                "one room per client",
            ),
            (settings(), Demands { reference_server: true, ..asked }, None, "does not speak GraphQL"),
            (settings(), Demands { reference_history: true, ..asked }, None, "history: none"),
        ];
        for (s, asked, key, want) in refused {
            let p = s.validate(&asked).expect_err(want);
            assert!(p.key == key && p.why.contains(want), "{want}: {p:?}");
        }
    }
}
