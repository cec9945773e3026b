//! `protocol: json_frames`: a team's own JSON-over-WebSocket protocol,
//! declared in the scenario (see [`JsonFrames`]) instead of written in
//! Rust. Outgoing frames are filled templates; incoming frames are read by
//! the first matcher whose `match` holds, which says what the frame means
//! and where its room, id, seq and text are.

use super::wire::{Delivered, ExpectedText, IdReader, Incoming, fill_body, json_path, json_u64, room_label};
use crate::scenario::{FrameKind, FrameMatcher, JsonFrames};
use crate::trace::{BodyDigest, MsgNo, parse_wire_id, wire_id};

/// A declaration, ready to use (id patterns compiled).
#[derive(Debug, Clone)]
pub(crate) struct Frames {
    decl: JsonFrames,
    ids: Vec<Option<IdReader>>,
    /// The `hello` frame, filled for this client.
    hello: Option<String>,
    /// What subscribers must get at the delivery matcher's `text` path.
    expected: ExpectedText,
}

impl Frames {
    /// `hello`: the declaration's hello frame, filled for this client.
    /// Err: an id pattern that does not compile (refused when the scenario is read).
    pub(crate) fn new(decl: &JsonFrames, hello: Option<String>) -> Result<Self, regex::Error> {
        let ids = decl.frames.iter().map(|m| m.id.as_ref().map(IdReader::json).transpose()).collect::<Result<_, _>>()?;
        let (room, id, text) = ExpectedText::marks();
        let path = decl.frames.iter().find(|m| m.is == FrameKind::Delivery).and_then(|m| m.text.as_deref());
        let expected = ExpectedText::new(&fill(&decl.send, room, id, text), path);
        Ok(Self { decl: decl.clone(), ids, hello, expected })
    }

    /// The first frame of a connection, if declared.
    pub(crate) fn hello(&self) -> Option<&str> {
        self.hello.as_deref()
    }

    /// The server answers `hello` (a `connected` matcher is declared).
    pub(crate) fn hello_answered(&self) -> bool {
        self.decl.frames.iter().any(|m| m.is == FrameKind::Connected)
    }

    pub(crate) fn confirm(&self) -> crate::scenario::FrameConfirm {
        self.decl.confirmed
    }

    /// The join frame of a room, resuming after `after` when the
    /// declaration has a `join_after`.
    pub(crate) fn join(&self, room: &str, after: Option<u64>) -> String {
        match (after, &self.decl.join_after) {
            (Some(after), Some(t)) => fill(t, room, "", "").replace("{after}", &after.to_string()),
            _ => fill(&self.decl.join, room, "", ""),
        }
    }

    pub(crate) fn leave(&self, room: &str) -> Option<String> {
        self.decl.leave.as_deref().map(|t| fill(t, room, "", ""))
    }

    /// The send frame, and the digest of the text subscribers must get.
    pub(crate) fn send(&self, room: &str, msg: MsgNo, text: &str) -> (String, BodyDigest) {
        let id = wire_id(msg);
        (fill(&self.decl.send, room, &id, text), self.expected.digest(room, &id, text))
    }

    /// What a server frame means; `slot_of` maps a room name to the
    /// client's room slot. `single_room`: the client is in one room, so a
    /// delivery whose matcher declares no room path is that room's.
    pub(crate) fn read(&self, bytes: &[u8], slot_of: impl Fn(&str) -> Option<usize>, single_room: bool) -> Incoming {
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(bytes) else { return Incoming::Unmatched };
        let Some(i) = self.decl.frames.iter().position(|m| matches(m, &doc)) else { return Incoming::Unmatched };
        let m = &self.decl.frames[i];
        let str_at = |p: &Option<String>| p.as_deref().and_then(|p| json_path(&doc, p)).and_then(|v| v.as_str());
        let num_at = |p: &Option<String>| p.as_deref().and_then(|p| json_path(&doc, p)).and_then(json_u64);
        let msg: Option<MsgNo> = self.ids[i].as_ref().and_then(|r| r.id_in(&doc)).as_deref().and_then(parse_wire_id);
        let room = str_at(&m.room);
        let slot = room.and_then(&slot_of);
        match m.is {
            FrameKind::Ack => match msg {
                Some(msg) => Incoming::Ack { msg, seq: num_at(&m.seq).unwrap_or(0) },
                None => Incoming::Nothing,
            },
            FrameKind::Delivery => {
                let label = room_label(room, slot, m.room.is_none() && single_room);
                Incoming::Msg(Delivered {
                    msg,
                    seq: num_at(&m.seq).unwrap_or(0),
                    slot: slot.unwrap_or(0),
                    label,
                    body: str_at(&m.text).map(|t| BodyDigest::of(t.as_bytes())),
                    message_id: 0,
                })
            }
            FrameKind::Connected => Incoming::Connected { heartbeat: None },
            FrameKind::Joined => Incoming::Subscribed { slot, head: num_at(&m.head).unwrap_or(0) },
            FrameKind::Left => Incoming::Unsubscribed { slot },
            FrameKind::Error => Incoming::Error { msg, slot, code: str_at(&m.code).unwrap_or("").to_owned() },
            FrameKind::Ignore => Incoming::Nothing,
        }
    }
}

/// Fill a template: `{room}`, `{id}` and `{text}`, each JSON-escaped (the
/// template is JSON; `{after}` is filled by the caller).
pub(crate) fn fill(template: &str, room: &str, id: &str, text: &str) -> String {
    let room_escaped = fill_body("{text}", true, "", room);
    fill_body(&template.replace("{room}", &room_escaped), true, id, text)
}

fn matches(m: &FrameMatcher, doc: &serde_json::Value) -> bool {
    m.when.iter().all(|(path, want)| json_path(doc, path) == Some(want))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::JsonFrames;
    use crate::trace::Label;
    use crate::trace::msg_no;

    /// Protocol v1 (server/PROTOCOL.md), declared: the shipped scenario's.
    fn v1() -> JsonFrames {
        let scenario = crate::scenario::parse_str(include_str!("../../../scenarios/json-frames.yaml"), "json-frames.yaml").unwrap();
        scenario.system.json_frames.expect("json-frames.yaml declares json_frames")
    }

    fn slot(r: &str) -> Option<usize> {
        ["room-1", "room \"2\""].iter().position(|x| *x == r)
    }

    #[test]
    fn protocol_v1_declared_reads_and_writes_what_the_built_in_adapter_does() {
        let f = Frames::new(&v1(), None).unwrap();
        let msg = msg_no(3, 9);
        let id = wire_id(msg);
        assert_eq!(f.join("room-1", None), r#"{"op":"subscribe","room":"room-1"}"#);
        assert_eq!(f.join("room-1", Some(7)), r#"{"op":"subscribe","room":"room-1","after":7}"#);
        let (send, digest) = f.send("room \"2\"", msg, "say \"hi\"\n");
        let v: serde_json::Value = serde_json::from_str(&send).unwrap();
        assert_eq!(
            (v["room"].as_str(), v["id"].as_str(), v["body"].as_str()),
            (Some("room \"2\""), Some(id.as_str()), Some("say \"hi\"\n"))
        );
        assert_eq!(digest, BodyDigest::of(b"say \"hi\"\n"));
        let read = |s: String| f.read(s.as_bytes(), slot, false);
        assert_eq!(read(format!(r#"{{"op":"ack","id":"{id}","seq":12}}"#)), Incoming::Ack { msg, seq: 12 });
        assert_eq!(
            read(format!(r#"{{"op":"msg","room":"room-1","id":"{id}","seq":13,"body":"x"}}"#)),
            Incoming::Msg(Delivered {
                msg: Some(msg),
                seq: 13,
                slot: 0,
                label: Label::Ok,
                body: Some(BodyDigest::of(b"x")),
                message_id: 0
            })
        );
        assert_eq!(read(r#"{"op":"subscribed","room":"room \"2\"","head":4}"#.into()), Incoming::Subscribed { slot: Some(1), head: 4 });
        assert_eq!(read(r#"{"op":"unsubscribed","room":"room-1"}"#.into()), Incoming::Unsubscribed { slot: Some(0) });
        assert_eq!(
            read(format!(r#"{{"op":"error","id":"{id}","code":"busy"}}"#)),
            Incoming::Error { msg: Some(msg), slot: None, code: "busy".into() }
        );
        // A delivery naming a room the client is not in, or none.
        let Incoming::Msg(d) = read(format!(r#"{{"op":"msg","room":"elsewhere","id":"{id}","seq":1}}"#)) else { panic!() };
        assert_eq!((d.label, d.body), (Label::UnknownRoom, None));
        assert_eq!(read(r#"{"op":"pong"}"#.into()), Incoming::Unmatched, "no matcher takes it");
        assert_eq!(read("not json".into()), Incoming::Unmatched);
    }

    #[test]
    fn nested_shapes_and_string_seqs_are_read() {
        let decl: JsonFrames = serde_saphyr::from_str(
            r#"
join: '{"type":"join","channel":"{room}"}'
send: '{"type":"chat","channel":"{room}","message":{"text":"{text}","clientId":"{id}"}}'
confirmed: {after: 200ms}
frames:
  - {match: {type: event, event.kind: chat}, is: delivery, room: event.channel, id: {json: event.message.clientId}, seq: event.offset, text: event.message.text}
  - {match: {type: event}, is: ignore}
"#,
        )
        .unwrap();
        let f = Frames::new(&decl, None).unwrap();
        let msg = msg_no(1, 2);
        let (_, digest) = f.send("room-1", msg, "hey");
        assert_eq!(digest, BodyDigest::of(b"hey"), "the text path's last name is where it was sent");
        let frame = format!(
            r#"{{"type":"event","event":{{"kind":"chat","channel":"room-1","offset":"41","message":{{"text":"hey","clientId":"{}"}}}}}}"#,
            wire_id(msg)
        );
        assert_eq!(
            f.read(frame.as_bytes(), slot, false),
            Incoming::Msg(Delivered { msg: Some(msg), seq: 41, slot: 0, label: Label::Ok, body: Some(digest), message_id: 0 })
        );
        assert_eq!(f.read(br#"{"type":"event","event":{"kind":"typing"}}"#, slot, false), Incoming::Nothing);
    }
}
