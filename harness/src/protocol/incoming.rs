//! What a server message means to a client, whatever the protocol: every
//! adapter reads its frames into these, and the connection loop acts on
//! them (reconnects, resends, resubscribes are the same for every protocol).

use crate::message::{BodyDigest, Label, MsgNo};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// What one server message means to a client. Rooms are the client's
/// room slots (indexes into the rooms it was built with; 0 is its home).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A send was acked (stored) with this `seq`.
    Ack { msg: MsgNo, seq: u64 },
    /// A chat message.
    Msg(Delivered),
    /// The subscription of this room slot is live from `head` (None: the
    /// answer names no room this client asked for).
    Subscribed { slot: Option<usize>, head: u64 },
    /// The unsubscribe of this room slot was confirmed.
    Unsubscribed { slot: Option<usize> },
    /// An error; `msg` when it names one of our sends, `slot` when it
    /// names one of our rooms.
    Error { msg: Option<MsgNo>, slot: Option<usize>, code: String },
    /// The session is open (STOMP CONNECTED): send heart-beats this often.
    Connected { heartbeat: Option<Duration> },
    /// A heart-beat, or a frame with nothing for the client.
    Nothing,
    /// json_frames / socketio: a frame no declaration takes.
    Unmatched,
    /// Write this back (an Engine.IO pong, an MQTT PUBACK).
    Reply(Message),
}

/// One delivered chat message, with what its labels said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// None: not one of the harness's ids.
    pub msg: Option<MsgNo>,
    pub seq: u64,
    /// The room slot its labels name (the home room, 0, when they name none).
    pub slot: usize,
    pub label: Label,
    /// None when the settings give no way to read the text.
    pub body: Option<BodyDigest>,
    /// STOMP `message-id`, hashed (0: none).
    pub message_id: u64,
}

/// A client's room names, by slot (home first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rooms(Vec<String>);

impl Rooms {
    pub(crate) fn new(names: Vec<String>) -> Self {
        Self(names)
    }

    /// The slot of a room name, if it is one of the client's.
    pub(crate) fn slot_of(&self, room: &str) -> Option<usize> {
        self.0.iter().position(|r| r == room)
    }

    pub(crate) fn name(&self, slot: usize) -> &str {
        &self.0[slot]
    }

    pub(crate) fn home(&self) -> &str {
        self.0.first().map_or("", String::as_str)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The client is in one room, so a delivery that names none is that room's.
    pub(crate) fn single(&self) -> bool {
        self.0.len() == 1
    }

    /// Whatever a server's frame made an adapter say, it names only slots
    /// the client has: a delivery labelled with another lands in the home
    /// room as `UnknownRoom`, an answer for another names no room.
    pub(crate) fn keep_in_range(&self, incoming: &mut Incoming) {
        let outside = |slot: &usize| *slot >= self.0.len();
        match incoming {
            Incoming::Msg(d) if outside(&d.slot) => {
                d.slot = 0;
                d.label = Label::UnknownRoom;
            }
            Incoming::Subscribed { slot, .. } | Incoming::Unsubscribed { slot } | Incoming::Error { slot, .. }
                if slot.as_ref().is_some_and(outside) =>
            {
                *slot = None;
            }
            _ => {}
        }
    }
}

/// What a delivery's room label says: the room it names (`slot`: one of
/// the client's, if it is); `unlabelled_ok`: the protocol declares no
/// room label and the client is in one room, so none is needed.
pub(crate) fn room_label(named: Option<&str>, slot: Option<usize>, unlabelled_ok: bool) -> Label {
    match (named, slot) {
        (None, _) if unlabelled_ok => Label::Ok,
        (None, _) => Label::Missing,
        (Some(_), None) => Label::UnknownRoom,
        (Some(_), Some(_)) => Label::Ok,
    }
}
