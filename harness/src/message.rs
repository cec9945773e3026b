//! What identifies a message on the wire and in the trace: the harness's
//! message numbers and their wire ids, body digests and what a delivery's
//! routing labels said. Below every other module: protocols write and read
//! these, the trace records them, the checks compare them.

use serde::{Deserialize, Serialize};

/// Index of a client connection in the trace's clients.
pub type ClientId = u32;
/// A message number chosen by the harness; on the wire it is the decimal `id`.
pub type MsgNo = u64;
/// Stands for a delivered `id` that is not a harness message number.
pub const FOREIGN_MSG: MsgNo = u64::MAX;

/// A message number as the wire `id`: `m<number>`. Not a bare number:
/// nx-27017 (the compat MongoDB) cannot find documents by a string field
/// that looks like an integer, which would break idempotent resends there.
pub fn wire_id(msg: MsgNo) -> String {
    format!("m{msg}")
}

/// The message number in a wire `id`, if it is one of ours.
pub fn parse_wire_id(id: &str) -> Option<MsgNo> {
    id.strip_prefix('m')?.parse().ok()
}

/// The message number a client's `k`-th send carries.
pub fn msg_no(client: ClientId, k: u32) -> MsgNo {
    (u64::from(client) << 32) | u64::from(k)
}

/// The client (its `msg_client`) and `k` a message number was made from.
pub fn msg_parts(msg: MsgNo) -> (ClientId, u32) {
    ((msg >> 32) as ClientId, msg as u32)
}

/// Which of its `rooms` rooms a sender's message goes to: its rooms in
/// turn, the `k`-th send to room `k mod rooms` (its home room first).
pub fn send_slot(msg: MsgNo, rooms: usize) -> usize {
    msg_parts(msg).1 as usize % rooms.max(1)
}

/// A message body as the checks compare it: its length in bytes, its
/// CRC-32 and its [`TextClass`], in 9 bytes (the trace keeps no bodies).
/// A truncated, altered or swapped body changes the length or the CRC;
/// the class is the same function of the same bytes, so it says what kind
/// of text a failing message carried (see `report::cause`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BodyDigest {
    pub len: u32,
    pub crc: u32,
    pub class: TextClass,
}

impl BodyDigest {
    pub fn of(bytes: &[u8]) -> Self {
        Self { len: u32::try_from(bytes.len()).unwrap_or(u32::MAX), crc: crc32fast::hash(bytes), class: TextClass::of(bytes) }
    }
}

/// What kind of text a body is: bit [`TextClass::MULTI_BYTE`] (a byte
/// of a multi-byte UTF-8 character, or any byte over 0x7f), bit
/// [`TextClass::JSON_SPECIAL`] (a quote, a backslash or a control
/// character: what JSON must escape).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TextClass(pub u8);

impl TextClass {
    pub const MULTI_BYTE: u8 = 1;
    pub const JSON_SPECIAL: u8 = 2;

    pub fn of(bytes: &[u8]) -> Self {
        let multi = bytes.iter().any(|b| *b >= 0x80);
        let special = bytes.iter().any(|b| *b == b'"' || *b == b'\\' || *b < 0x20);
        TextClass((u8::from(multi) * Self::MULTI_BYTE) | (u8::from(special) * Self::JSON_SPECIAL))
    }

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

impl std::fmt::Display for BodyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes, crc {:08x}", self.len, self.crc)
    }
}

/// What a delivery's routing labels said (JSON `room`; STOMP
/// `destination`, `subscription`, `message-id`), as the client resolved
/// them against the rooms it subscribed to. A real client dispatches by
/// these: a wrong one means the message shows up in the wrong room, or
/// nowhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Label {
    /// The labels name one of the client's rooms (recorded as the delivery's room).
    #[default]
    Ok,
    /// No room label at all (no JSON `room`; a STOMP MESSAGE without
    /// `destination` or `subscription`).
    Missing,
    /// The label names no room this client subscribed to.
    UnknownRoom,
    /// STOMP: the `subscription` is not the id this client used for the
    /// room its `destination` names.
    WrongSubscription,
}

/// A 64-bit FNV-1a hash (of a STOMP `message-id`): stable, and enough to
/// tell reused ids apart without keeping the strings.
pub fn id_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_s_class_is_what_its_bytes_are() {
        let class = |s: &str| BodyDigest::of(s.as_bytes()).class;
        assert_eq!(class("plain text 42"), TextClass(0));
        assert_eq!(class("Hangul 한국어"), TextClass(TextClass::MULTI_BYTE));
        assert_eq!(class("say \"hi\""), TextClass(TextClass::JSON_SPECIAL));
        assert_eq!(class("a\\b"), TextClass(TextClass::JSON_SPECIAL));
        assert_eq!(class("tab\there ✓"), TextClass(TextClass::MULTI_BYTE | TextClass::JSON_SPECIAL));
        assert_eq!(BodyDigest::of(b"same"), BodyDigest::of(b"same"), "a function of the bytes: equal bodies, equal digests");
    }
}
