//! Where things are on a reference node: WebSocket and HTTP paths, STOMP
//! destinations. The harness's defaults for other servers start from these.

/// Protocol v1 over WebSocket.
pub const WS: &str = "/ws";
/// STOMP 1.2 over WebSocket.
pub const STOMP: &str = "/stomp";
/// Readiness: 200 once the node's fan-out is open.
pub const HEALTHZ: &str = "/healthz";
/// Prometheus metrics.
pub const METRICS: &str = "/metrics";
/// A room's history, as the router writes it (`{room}` is the path
/// parameter); see [`history`].
pub const HISTORY_ROUTE: &str = "/rooms/{room}/messages";
/// STOMP subscriptions go to `/sub/{room}`.
pub const SUB_PREFIX: &str = "/sub/";
/// STOMP sends go to `/pub/{room}`.
pub const PUB_PREFIX: &str = "/pub/";
/// The scenario templates of the two destinations (`{room}` is filled).
pub const SUB_TEMPLATE: &str = "/sub/{room}";
pub const PUB_TEMPLATE: &str = "/pub/{room}";

/// What a path segment percent-encodes: all but letters, digits, `-._~`
/// (RFC 3986's unreserved characters) and `:@` (allowed in a segment).
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b':').remove(b'@');

/// The history path of one room, its name percent-encoded as one path
/// segment (a `/`, `%`, space or non-ASCII character in a name reaches the
/// server as written).
pub fn history(room: &str) -> String {
    HISTORY_ROUTE.replace("{room}", &percent_encoding::utf8_percent_encode(room, SEGMENT).to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn templates_and_prefixes_agree() {
        assert_eq!(super::SUB_TEMPLATE.replace("{room}", "r"), format!("{}r", super::SUB_PREFIX));
        assert_eq!(super::PUB_TEMPLATE.replace("{room}", "r"), format!("{}r", super::PUB_PREFIX));
        assert_eq!(super::history("room-1"), "/rooms/room-1/messages");
        assert_eq!(super::history("a:b_c.d~e@f"), "/rooms/a:b_c.d~e@f/messages");
        assert_eq!(super::history("r-1%32/ ../\u{FF12}"), "/rooms/r-1%2532%2F%20..%2F%EF%BC%92/messages");
    }
}
