//! Prometheus metrics: names live here as constants, recorded through the
//! `metrics` facade and rendered on the separate `METRICS_PORT` listener.
//!
//! Labels are bounded: route templates (never raw paths), frame types, close
//! reasons and operation names. No user ids.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const BUILD_INFO: &str = "ochat_build_info";
pub const CONNECTIONS: &str = "ochat_connections";
pub const TCP_CONNECTIONS: &str = "ochat_tcp_connections";
pub const CONNECTIONS_REFUSED: &str = "ochat_connections_refused_total";
pub const SESSIONS: &str = "ochat_sessions";
pub const CONNECTS: &str = "ochat_connects_total";
pub const DISCONNECTS: &str = "ochat_disconnects_total";
pub const FRAMES_IN: &str = "ochat_frames_in_total";
pub const FRAMES_OUT: &str = "ochat_frames_out_total";
pub const MESSAGES_SENT: &str = "ochat_messages_sent_total";
pub const MESSAGES_CHANGED: &str = "ochat_message_changes_total";
pub const MESSAGES_DELIVERED: &str = "ochat_messages_delivered_total";
pub const MESSAGES_CAUGHT_UP: &str = "ochat_messages_caught_up_total";
pub const DELIVERY_LATENCY: &str = "ochat_delivery_latency_seconds";
pub const DB_LATENCY: &str = "ochat_db_operation_seconds";
pub const DB_ERRORS: &str = "ochat_db_errors_total";
pub const REDIS_LATENCY: &str = "ochat_redis_operation_seconds";
pub const REDIS_ERRORS: &str = "ochat_redis_errors_total";
pub const REDIS_RECONNECTS: &str = "ochat_redis_reconnects_total";
pub const REDIS_SHARD_LATENCY: &str = "ochat_redis_shard_operation_seconds";
pub const REDIS_SHARD_ERRORS: &str = "ochat_redis_shard_errors_total";
pub const REDIS_SHARD_PUBLISHES: &str = "ochat_redis_shard_publishes_total";
pub const REDIS_SHARD_SUBSCRIPTIONS: &str = "ochat_redis_shard_subscriptions";
pub const RATE_LIMITED: &str = "ochat_rate_limited_total";
pub const SLOW_CONSUMERS: &str = "ochat_slow_consumer_disconnects_total";
pub const AUTH_FAILURES: &str = "ochat_auth_failures_total";
pub const HTTP_REQUESTS: &str = "ochat_http_requests_total";
pub const HTTP_LATENCY: &str = "ochat_http_request_seconds";

/// 0.5 ms to 5 s: fine enough to tell a 1 ms delivery from a 2 ms one.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once; later calls (several in-process
/// nodes in tests) share it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("buckets are non-empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            // Counters and gauges a dashboard or alert reads exist from the
            // first scrape: a series that appears on its first event loses
            // that event to `rate()`, and a panel shows "no data" instead
            // of 0.
            gauge!(CONNECTIONS).set(0.0);
            gauge!(TCP_CONNECTIONS).set(0.0);
            gauge!(SESSIONS).set(0.0);
            for name in [
                CONNECTS,
                MESSAGES_SENT,
                MESSAGES_DELIVERED,
                MESSAGES_CAUGHT_UP,
                SLOW_CONSUMERS,
                REDIS_RECONNECTS,
                CONNECTIONS_REFUSED,
            ] {
                counter!(name).increment(0);
            }
            for kind in ["message", "typing", "rest", "anonymous"] {
                counter!(RATE_LIMITED, "type" => kind).increment(0);
            }
            for kind in ["edit", "delete", "react", "unreact"] {
                counter!(MESSAGES_CHANGED, "kind" => kind).increment(0);
            }
            handle
        })
        .clone()
}

/// `# HELP` and `# UNIT` for every metric, so a scrape explains itself.
fn describe() {
    describe_gauge!(
        BUILD_INFO,
        "Always 1; labels carry the version and node id."
    );
    describe_gauge!(CONNECTIONS, "Open WebSocket connections on this node.");
    describe_gauge!(SESSIONS, "Users with at least one session on this node.");
    describe_gauge!(
        TCP_CONNECTIONS,
        "Open TCP connections on the public port (HTTP and WebSocket)."
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        "TCP connections closed at accept because MAX_CONNECTIONS were open."
    );
    describe_counter!(CONNECTS, "WebSocket connections accepted.");
    describe_counter!(DISCONNECTS, "WebSocket connections closed, by reason.");
    describe_counter!(FRAMES_IN, "Frames read from clients, by type.");
    describe_counter!(FRAMES_OUT, "Frames written to clients, by type.");
    describe_counter!(
        MESSAGES_SENT,
        "Messages committed from this node's clients."
    );
    describe_counter!(
        MESSAGES_CHANGED,
        "Edits, deletes and reactions committed from this node's clients, by kind."
    );
    describe_counter!(
        MESSAGES_DELIVERED,
        "Messages written live to a session on this node."
    );
    describe_counter!(
        MESSAGES_CAUGHT_UP,
        "Messages live delivery missed, pushed to a session from storage."
    );
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "From publish on the sending node to the socket write here."
    );
    describe_histogram!(
        DB_LATENCY,
        Unit::Seconds,
        "Storage operations, by operation."
    );
    describe_counter!(DB_ERRORS, "Failed storage operations, by operation.");
    describe_histogram!(
        REDIS_LATENCY,
        Unit::Seconds,
        "Redis operations, by operation."
    );
    describe_counter!(REDIS_ERRORS, "Failed Redis operations, by operation.");
    describe_counter!(REDIS_RECONNECTS, "Pub/sub connections re-established.");
    describe_histogram!(
        REDIS_SHARD_LATENCY,
        Unit::Seconds,
        "Redis Cluster operations, by operation and shard."
    );
    describe_counter!(
        REDIS_SHARD_ERRORS,
        "Failed Redis Cluster operations, by operation and shard."
    );
    describe_counter!(
        REDIS_SHARD_PUBLISHES,
        "Events published to each Redis Cluster shard."
    );
    describe_gauge!(
        REDIS_SHARD_SUBSCRIPTIONS,
        "Sharded subscriptions held on each shard."
    );
    describe_counter!(
        RATE_LIMITED,
        "Frames and requests refused by a user's or an address's budget, by frame type (rest: a REST request; anonymous: a request without a valid token)."
    );
    describe_counter!(
        SLOW_CONSUMERS,
        "Sessions cut off for not reading their frames."
    );
    describe_counter!(AUTH_FAILURES, "Refused tokens, by reason.");
    describe_counter!(
        HTTP_REQUESTS,
        "REST requests, by route template, method and status."
    );
    describe_histogram!(
        HTTP_LATENCY,
        Unit::Seconds,
        "REST request durations, by route template."
    );
}

pub fn build_info(node_id: &str) {
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "node_id" => node_id.to_owned())
        .set(1.0);
}

pub fn auth_failure(reason: &'static str) {
    counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

pub fn db_operation(op: &'static str, took: Duration, ok: bool) {
    histogram!(DB_LATENCY, "op" => op).record(took.as_secs_f64());
    if !ok {
        counter!(DB_ERRORS, "op" => op).increment(1);
    }
}

pub fn redis_operation(op: &'static str, took: Duration, ok: bool) {
    histogram!(REDIS_LATENCY, "op" => op).record(took.as_secs_f64());
    if !ok {
        counter!(REDIS_ERRORS, "op" => op).increment(1);
    }
}

/// An operation on one shard of a Redis Cluster, labelled by its master's
/// address (a handful of values; never a user or channel).
pub fn redis_shard_operation(op: &'static str, shard: &str, took: Duration, ok: bool) {
    histogram!(REDIS_SHARD_LATENCY, "op" => op, "shard" => shard.to_owned())
        .record(took.as_secs_f64());
    if !ok {
        counter!(REDIS_SHARD_ERRORS, "op" => op, "shard" => shard.to_owned()).increment(1);
    }
}

/// Events published to one shard of a Redis Cluster.
pub fn redis_shard_published(shard: &str, events: u64) {
    counter!(REDIS_SHARD_PUBLISHES, "shard" => shard.to_owned()).increment(events);
}

/// Sharded subscriptions this node holds on each shard.
pub fn redis_shard_subscriptions(shard: &str, count: usize) {
    gauge!(REDIS_SHARD_SUBSCRIPTIONS, "shard" => shard.to_owned()).set(count as f64);
}

pub fn redis_reconnect() {
    counter!(REDIS_RECONNECTS).increment(1);
}

pub fn http_request(route: String, method: &'static str, status: u16, took: Duration) {
    counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_LATENCY, "route" => route).record(took.as_secs_f64());
}

pub fn tcp_connection(delta: f64) {
    gauge!(TCP_CONNECTIONS).increment(delta);
}

pub fn connection_refused() {
    counter!(CONNECTIONS_REFUSED).increment(1);
}

pub fn connection_opened() {
    gauge!(CONNECTIONS).increment(1.0);
    counter!(CONNECTS).increment(1);
}

pub fn connection_closed(reason: &'static str) {
    gauge!(CONNECTIONS).decrement(1.0);
    counter!(DISCONNECTS, "reason" => reason).increment(1);
}

pub fn sessions(delta: f64) {
    gauge!(SESSIONS).increment(delta);
}

pub fn frame_in(kind: &'static str) {
    counter!(FRAMES_IN, "type" => kind).increment(1);
}

pub fn frame_out(kind: &'static str) {
    counter!(FRAMES_OUT, "type" => kind).increment(1);
}

pub fn message_sent() {
    counter!(MESSAGES_SENT).increment(1);
}

/// `kind`: edit, delete, react or unreact (a bounded label).
pub fn message_changed(kind: &'static str) {
    counter!(MESSAGES_CHANGED, "kind" => kind).increment(1);
}

pub fn message_delivered(latency: Duration) {
    counter!(MESSAGES_DELIVERED).increment(1);
    histogram!(DELIVERY_LATENCY).record(latency.as_secs_f64());
}

/// A message live delivery missed, pushed to a user's sessions from storage.
pub fn message_caught_up() {
    counter!(MESSAGES_CAUGHT_UP).increment(1);
}

pub fn rate_limited(kind: &'static str) {
    counter!(RATE_LIMITED, "type" => kind).increment(1);
}

pub fn slow_consumer() {
    counter!(SLOW_CONSUMERS).increment(1);
}
