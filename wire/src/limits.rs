//! Limits of protocol v1 (server/PROTOCOL.md), shared by the server that
//! enforces them and the harness that plans workloads within them.

/// Largest text frame the protocol accepts, in bytes. Larger frames (up to
/// [`MAX_WS_MESSAGE_BYTES`]) are answered with `frame_too_large`.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Largest WebSocket message the transport reads at all; past it the
/// connection is closed with 1009 (message too big) by the WebSocket layer.
pub const MAX_WS_MESSAGE_BYTES: usize = 1024 * 1024;
/// Longest room name, in bytes.
pub const MAX_ROOM_BYTES: usize = 64;
/// Longest message id, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Highest `seq` (and `after`) there can be: seqs are stored as i64.
pub const MAX_SEQ: u64 = i64::MAX as u64;
/// Largest message body a scenario may ask for (`workload.message_bytes`):
/// a `send` frame adds its envelope (op, room, id: at most
/// [`MAX_ROOM_BYTES`] + [`MAX_ID_BYTES`] + ~40 bytes) and must stay within
/// [`MAX_FRAME_BYTES`]. The harness's bodies are ASCII that JSON does not
/// escape.
pub const MAX_BODY_BYTES: usize = 60_000;

const _: () = assert!(MAX_BODY_BYTES + MAX_ROOM_BYTES + MAX_ID_BYTES + 64 <= MAX_FRAME_BYTES);
