//! `protocol: json`: chatbench protocol v1 (server/PROTOCOL.md), the
//! reference server's own JSON frames. Nothing to declare.

use super::incoming::{Delivered, Incoming, Rooms, room_label};
use super::{Declaration, Demands, Problem, Promises, Speak, Who};
use crate::message::{BodyDigest, MsgNo, parse_wire_id, wire_id};
use std::borrow::Cow;
use tokio_tungstenite::tungstenite::Message;

/// Protocol v1 has no settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct V1;

impl Declaration for V1 {
    fn has_section(&self) -> bool {
        false
    }

    fn path(&self) -> &str {
        chatbench_wire::paths::WS
    }

    fn validate(&self, _: &Demands) -> Result<(), Problem> {
        Ok(())
    }

    fn speaker(&self, _: &Who<'_>, _: Promises, _: &Rooms) -> Box<dyn Speak> {
        Box::new(V1)
    }
}

impl Speak for V1 {
    fn resumes(&self) -> bool {
        true
    }

    fn join(&self, rooms: &Rooms, slot: usize, after: Option<u64>, _: u64) -> Message {
        let mut frame = serde_json::json!({"op": "subscribe", "room": rooms.name(slot)});
        if let Some(after) = after {
            frame["after"] = after.into();
        }
        Message::text(frame.to_string())
    }

    fn leave(&self, rooms: &Rooms, slot: usize, _: u64) -> Message {
        Message::text(serde_json::json!({"op": "unsubscribe", "room": rooms.name(slot)}).to_string())
    }

    fn send(&self, rooms: &Rooms, slot: usize, msg: MsgNo, text: &str) -> (Message, BodyDigest) {
        let frame = serde_json::json!({"op": "send", "room": rooms.name(slot), "id": wire_id(msg), "body": text});
        (Message::text(frame.to_string()), BodyDigest::of(text.as_bytes()))
    }

    fn read(&self, rooms: &Rooms, bytes: &[u8], out: &mut Vec<Incoming>) {
        out.push(self.meaning(rooms, bytes));
    }
}

impl V1 {
    fn meaning(&self, rooms: &Rooms, bytes: &[u8]) -> Incoming {
        let Ok(frame) = serde_json::from_slice::<ServerFrame>(bytes) else { return Incoming::Nothing };
        let msg = frame.id.as_deref().and_then(parse_wire_id);
        let slot = frame.room.as_deref().and_then(|r| rooms.slot_of(r));
        match (&*frame.op, msg, frame.seq) {
            ("ack", Some(msg), Some(seq)) => Incoming::Ack { msg, seq },
            ("msg", msg, seq) => Incoming::Msg(Delivered {
                msg,
                seq: seq.unwrap_or(0),
                slot: slot.unwrap_or(0),
                label: room_label(frame.room.as_deref(), slot, false),
                body: frame.body.as_deref().map(|b| BodyDigest::of(b.as_bytes())),
                message_id: 0,
            }),
            ("subscribed", _, _) => Incoming::Subscribed { slot, head: frame.head.unwrap_or(0) },
            ("unsubscribed", _, _) => Incoming::Unsubscribed { slot },
            ("error", msg, _) => Incoming::Error { msg, slot, code: frame.code.as_deref().unwrap_or("").to_owned() },
            _ => Incoming::Nothing,
        }
    }
}

/// A protocol-v1 server frame (lenient: unknown fields ignored). Strings
/// borrow from the frame text where they need no unescaping.
#[derive(Debug, serde::Deserialize)]
struct ServerFrame<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    body: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    head: Option<u64>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    use super::super::{Declared, testing::wire};
    use super::*;
    use crate::message::{Label, msg_no};

    #[test]
    fn json_deliveries_carry_the_room_label_and_the_body_digest() {
        let w = wire(&Declared::default(), true, &["room-1", "room-2"], "tok");
        let msg = msg_no(3, 9);
        let read = |s: String| w.read_one(&Message::text(s));
        let frame =
            |room: &str| format!(r#"{{"op":"msg","room":"{room}","seq":4,"id":"{}","body":"a \"b\"\nc","node":"n0"}}"#, wire_id(msg));
        let Incoming::Msg(d) = read(frame("room-2")) else { panic!("a msg frame") };
        assert_eq!((d.slot, d.label, d.body), (1, Label::Ok, Some(BodyDigest::of("a \"b\"\nc".as_bytes()))));
        let Incoming::Msg(d) = read(frame("room-7")) else { panic!("a msg frame") };
        assert_eq!((d.slot, d.label), (0, Label::UnknownRoom));
        assert_eq!(read(r#"{"op":"subscribed","room":"room-2","head":3}"#.into()), Incoming::Subscribed { slot: Some(1), head: 3 });
        assert_eq!(read(r#"{"op":"unsubscribed","room":"room-1"}"#.into()), Incoming::Unsubscribed { slot: Some(0) });
    }
}
