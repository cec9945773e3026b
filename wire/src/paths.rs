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

/// The history path of one room.
pub fn history(room: &str) -> String {
    HISTORY_ROUTE.replace("{room}", room)
}

#[cfg(test)]
mod tests {
    #[test]
    fn templates_and_prefixes_agree() {
        assert_eq!(super::SUB_TEMPLATE.replace("{room}", "r"), format!("{}r", super::SUB_PREFIX));
        assert_eq!(super::PUB_TEMPLATE.replace("{room}", "r"), format!("{}r", super::PUB_PREFIX));
        assert_eq!(super::history("room-1"), "/rooms/room-1/messages");
    }
}
