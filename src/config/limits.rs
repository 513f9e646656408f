//! Every limit a client can push against, with its default.

use std::time::Duration;

use super::{ConfigError, Vars, bad};

/// Per-connection and per-request limits. Defaults follow DESIGN.md.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Message content, in characters after trimming.
    pub max_content_chars: usize,
    /// Largest WebSocket frame accepted; larger closes the socket with 1009.
    pub max_frame_bytes: usize,
    /// Largest REST request body.
    pub max_body_bytes: usize,
    /// A signed-in user's budget (every frame and REST request, across
    /// their sockets on a node): refill per second.
    pub rate_per_sec: f64,
    /// A signed-in user's budget: burst.
    pub rate_burst: u32,
    /// Searches for people per second per user, and their burst.
    pub search_rate_per_sec: f64,
    pub search_burst: u32,
    /// An address's budget for requests without a valid token: refill per
    /// second.
    pub anonymous_rate_per_sec: f64,
    /// An address's budget: burst.
    pub anonymous_rate_burst: u32,
    /// Take a request's address from the last `X-Forwarded-For` entry (the
    /// one the load balancer in front added). Only behind one: otherwise
    /// a client picks its own address.
    pub trust_forwarded_for: bool,
    /// Sessions one user may hold on one node.
    pub max_sessions_per_user: usize,
    /// Frames queued for one session before it counts as slow.
    pub send_queue: usize,
    /// Bytes queued for one session before it counts as slow (a frame can
    /// be megabytes: the count of frames alone bounds nothing).
    pub send_queue_bytes: usize,
    /// How far behind a client may fall (its socket write blocked, or a
    /// ping written behind its frames not answered) before it is closed.
    pub slow_consumer_timeout: Duration,
    /// Sends of one socket committed concurrently.
    pub max_in_flight: usize,
    /// How often the server pings each socket.
    pub ping_interval: Duration,
    /// A socket silent for this long is dropped as dead.
    pub idle_timeout: Duration,
    /// Members of one group, its owner included (at least 2).
    pub max_group_members: u32,
    /// Presence and typing reach group co-members only in groups of at most
    /// this many members (0: never through groups).
    pub presence_group_limit: u32,
    /// Open TCP connections (WebSockets included) one node holds; past it a
    /// new connection is closed at once.
    pub max_connections: usize,
    /// A request's headers must arrive within this (slowloris).
    pub header_read_timeout: Duration,
    /// A REST request's body must arrive within this.
    pub request_body_timeout: Duration,
    /// How long after sending a message its sender may edit it; `None`
    /// (the default, or `0`): always.
    pub edit_window: Option<Duration>,
    /// Distinct emojis one message may carry.
    pub max_reactions: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_content_chars: 4000,
            max_frame_bytes: 64 * 1024,
            max_body_bytes: 64 * 1024,
            rate_per_sec: 20.0,
            // A device back from a long absence pages `sync` in a burst.
            rate_burst: 100,
            // A person picker searches as its user types: ten keystrokes
            // at once, then one a second; a directory of a million names
            // takes weeks to list at that pace.
            search_rate_per_sec: 1.0,
            search_burst: 10,
            anonymous_rate_per_sec: 20.0,
            anonymous_rate_burst: 50,
            trust_forwarded_for: false,
            max_sessions_per_user: 10,
            send_queue: 256,
            send_queue_bytes: 1024 * 1024,
            slow_consumer_timeout: Duration::from_secs(5),
            max_in_flight: 32,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            max_group_members: 256,
            presence_group_limit: 50,
            max_connections: 20_000,
            header_read_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(10),
            edit_window: None,
            max_reactions: 20,
        }
    }
}

impl Limits {
    /// Every limit a client can push against, each defaulting to
    /// [`Limits::default`].
    pub(super) fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let d = Limits::default();
        let limits = Limits {
            max_content_chars: vars.positive(
                "MAX_MESSAGE_CHARS",
                d.max_content_chars,
                "a positive number",
            )?,
            max_frame_bytes: vars.positive(
                "MAX_FRAME_BYTES",
                d.max_frame_bytes,
                "a positive number of bytes",
            )?,
            max_body_bytes: vars.positive(
                "MAX_BODY_BYTES",
                d.max_body_bytes,
                "a positive number of bytes",
            )?,
            rate_per_sec: vars.positive(
                "RATE_LIMIT_PER_SEC",
                d.rate_per_sec,
                "a positive number",
            )?,
            rate_burst: vars.positive("RATE_LIMIT_BURST", d.rate_burst, "a positive number")?,
            search_rate_per_sec: vars.positive(
                "USER_SEARCH_PER_SEC",
                d.search_rate_per_sec,
                "a positive number",
            )?,
            search_burst: vars.positive(
                "USER_SEARCH_BURST",
                d.search_burst,
                "a positive number",
            )?,
            anonymous_rate_per_sec: vars.positive(
                "ANONYMOUS_RATE_LIMIT_PER_SEC",
                d.anonymous_rate_per_sec,
                "a positive number",
            )?,
            anonymous_rate_burst: vars.positive(
                "ANONYMOUS_RATE_LIMIT_BURST",
                d.anonymous_rate_burst,
                "a positive number",
            )?,
            trust_forwarded_for: vars.parse(
                "TRUST_X_FORWARDED_FOR",
                d.trust_forwarded_for,
                "true or false",
            )?,
            max_sessions_per_user: vars.positive(
                "MAX_SESSIONS_PER_USER",
                d.max_sessions_per_user,
                "a positive number",
            )?,
            send_queue: vars.positive("SEND_QUEUE", d.send_queue, "a positive number of frames")?,
            send_queue_bytes: vars.positive(
                "SEND_QUEUE_BYTES",
                d.send_queue_bytes,
                "a positive number of bytes",
            )?,
            slow_consumer_timeout: vars
                .duration("SLOW_CONSUMER_TIMEOUT", d.slow_consumer_timeout)?,
            max_in_flight: vars.positive(
                "MAX_IN_FLIGHT",
                d.max_in_flight,
                "a positive number of sends",
            )?,
            ping_interval: vars.duration("WS_PING_INTERVAL", d.ping_interval)?,
            idle_timeout: vars.duration("WS_IDLE_TIMEOUT", d.idle_timeout)?,
            max_group_members: vars.parse(
                "MAX_GROUP_MEMBERS",
                d.max_group_members,
                "a number of members of at least 2",
            )?,
            presence_group_limit: vars.parse(
                "PRESENCE_GROUP_LIMIT",
                d.presence_group_limit,
                "a number of members",
            )?,
            max_connections: vars.positive(
                "MAX_CONNECTIONS",
                d.max_connections,
                "a positive number of connections",
            )?,
            header_read_timeout: vars.duration("HEADER_READ_TIMEOUT", d.header_read_timeout)?,
            request_body_timeout: vars.duration("REQUEST_BODY_TIMEOUT", d.request_body_timeout)?,
            edit_window: Some(vars.duration("MESSAGE_EDIT_WINDOW", Duration::ZERO)?)
                .filter(|w| !w.is_zero()),
            max_reactions: vars.positive(
                "MAX_REACTIONS_PER_MESSAGE",
                d.max_reactions,
                "a positive number of emojis",
            )?,
        };
        if limits.max_group_members < 2 {
            return Err(bad(
                "MAX_GROUP_MEMBERS",
                format!(
                    "expected a number of members of at least 2, got {:?}",
                    vars.get("MAX_GROUP_MEMBERS").unwrap_or("")
                ),
            ));
        }
        Ok(limits)
    }
}
