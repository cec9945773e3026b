//! Prometheus metrics of one node, served as text at `GET /metrics`.
//!
//! Counters are what the harness reads to count external operations per
//! acked message and to cross-check its own trace; this module only counts.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub subscriptions: Gauge,
    pub sends: Counter,
    pub acks: Counter,
    pub resends: Counter,
    pub deliveries: Counter,
    pub history_replays: Counter,
    pub frame_errors: Counter,
    /// Requests refused for their token (401) or a room it does not grant (403, `forbidden`).
    pub auth_refusals: Counter,
    pub slow_consumer_closes: Counter,
    pub changestream_events: Counter,
    pub changestream_reopens: Counter,
    pub mongo_writes: Counter,
    pub kafka_produces: Counter,
    pub kafka_events: Counter,
    pub kafka_reconnects: Counter,
    pub kafka_producer_resets: Counter,
    pub kafka_offset_resets: Counter,
    pub broker_publishes: Counter,
    pub broker_events: Counter,
    pub broker_reconnects: Counter,
    pub overloaded_sends: Counter,
    pub skipped_events: Counter,
    pub idle_closes: Counter,
    pub seq_clashes: Counter,
    pub head_reads: Counter,
    pub insert_to_fanout_seconds: Histogram,
    pub fanout_to_socket_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("chat");
        let m = Metrics {
            connections: Gauge::default(),
            subscriptions: Gauge::default(),
            sends: Counter::default(),
            acks: Counter::default(),
            resends: Counter::default(),
            deliveries: Counter::default(),
            history_replays: Counter::default(),
            frame_errors: Counter::default(),
            auth_refusals: Counter::default(),
            slow_consumer_closes: Counter::default(),
            changestream_events: Counter::default(),
            changestream_reopens: Counter::default(),
            mongo_writes: Counter::default(),
            kafka_produces: Counter::default(),
            kafka_events: Counter::default(),
            kafka_reconnects: Counter::default(),
            kafka_producer_resets: Counter::default(),
            kafka_offset_resets: Counter::default(),
            broker_publishes: Counter::default(),
            broker_events: Counter::default(),
            broker_reconnects: Counter::default(),
            overloaded_sends: Counter::default(),
            skipped_events: Counter::default(),
            idle_closes: Counter::default(),
            seq_clashes: Counter::default(),
            head_reads: Counter::default(),
            insert_to_fanout_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 20)),
            fanout_to_socket_seconds: Histogram::new(exponential_buckets(0.00001, 2.0, 24)),
            registry: Registry::default(),
        };
        registry.register("connections", "Open WebSocket connections", m.connections.clone());
        registry.register("subscriptions", "Room subscriptions on this node", m.subscriptions.clone());
        registry.register("sends", "Send requests received", m.sends.clone());
        registry.register("acks", "Acks sent (fresh and resends)", m.acks.clone());
        registry.register("resends", "Sends whose id was already stored", m.resends.clone());
        registry.register("deliveries", "msg frames written to subscribers (live and history)", m.deliveries.clone());
        registry.register("history_replays", "msg frames served from history (after/gap fill)", m.history_replays.clone());
        registry.register("frame_errors", "error frames sent for bad input", m.frame_errors.clone());
        registry.register("auth_refusals", "requests refused for their token or a room it does not grant", m.auth_refusals.clone());
        registry.register("slow_consumer_closes", "Connections closed because their queue was full", m.slow_consumer_closes.clone());
        registry.register("changestream_events", "Insert events received from the change stream", m.changestream_events.clone());
        registry.register("changestream_reopens", "Times the change stream was (re)opened after a failure", m.changestream_reopens.clone());
        registry.register("mongo_writes", "MongoDB insert operations issued (every attempt, clashes included)", m.mongo_writes.clone());
        registry.register("head_reads", "Reads of a room's head to allocate a seq", m.head_reads.clone());
        registry.register("kafka_produces", "Kafka produce requests issued (kafka mode)", m.kafka_produces.clone());
        registry.register("kafka_events", "Messages consumed from Kafka (kafka mode)", m.kafka_events.clone());
        registry.register(
            "kafka_producer_resets",
            "Kafka producers replaced after a fatal error (e.g. fenced after a broker restart)",
            m.kafka_producer_resets.clone(),
        );
        registry.register(
            "kafka_reconnects",
            "Times the Kafka consumer's broker link came back after being down",
            m.kafka_reconnects.clone(),
        );
        registry.register(
            "kafka_offset_resets",
            "Times the Kafka consumer's offset was out of range and it re-assigned at the end (subscribers re-sync from history)",
            m.kafka_offset_resets.clone(),
        );
        registry.register("broker_publishes", "Publishes to Redis or JetStream issued (redis and nats modes)", m.broker_publishes.clone());
        registry.register(
            "broker_events",
            "Messages received from Redis or JetStream (redis and nats modes): what this node had to read",
            m.broker_events.clone(),
        );
        registry.register(
            "broker_reconnects",
            "Times the Redis subscriber connection or the JetStream consumer came back (subscribers re-sync from history)",
            m.broker_reconnects.clone(),
        );
        registry.register(
            "overloaded_sends",
            "Sends answered `overloaded` (no write slot within --overload-wait; not stored)",
            m.overloaded_sends.clone(),
        );
        registry.register(
            "skipped_events",
            "Fan-out events that were not chat messages (e.g. a document inserted by another tool), skipped",
            m.skipped_events.clone(),
        );
        registry.register("idle_closes", "Connections closed after the idle timeout (4002)", m.idle_closes.clone());
        registry.register(
            "seq_clashes",
            "Inserts that found their seq taken by another node's insert (and walked on)",
            m.seq_clashes.clone(),
        );
        registry.register(
            "insert_to_fanout_seconds",
            "Time from the insert (server wall clock) to fan-out on this node",
            m.insert_to_fanout_seconds.clone(),
        );
        registry.register(
            "fanout_to_socket_seconds",
            "Time from fan-out on this node (the change event or Kafka record handed to the hub) to the live msg frame written to a subscriber's socket",
            m.fanout_to_socket_seconds.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_counters() {
        let m = Metrics::default();
        m.sends.inc();
        m.sends.inc();
        m.insert_to_fanout_seconds.observe(0.003);
        let text = m.render();
        assert!(text.contains("chat_sends_total 2"), "{text}");
        assert!(text.contains("chat_insert_to_fanout_seconds_count 1"), "{text}");
    }
}
