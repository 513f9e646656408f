//! The event bus: every event for a user goes to that user's channel, and
//! every node with a session of that user hears it.
//!
//! [`memory::MemoryBus`] serves a single node; the Redis bus spreads events
//! across nodes. Sessions never know which one they have.

pub mod memory;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

use crate::protocol::ServerFrame;

/// One WebSocket connection, unique across all nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub Uuid);

impl SessionId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An event on its way to one user's sessions: a server frame serialised
/// once, plus what delivery needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Publish time (Unix microseconds) for the delivery-latency histogram.
    pub published_at_micros: i64,
    /// A session that must not get this frame (the sender's own connection,
    /// which gets an `ack` instead).
    pub exclude: Option<SessionId>,
    /// The frame's `type`, for metrics.
    pub kind: &'static str,
    /// The server frame's JSON text.
    pub frame: Bytes,
}

impl Envelope {
    pub fn new(frame: &ServerFrame, exclude: Option<SessionId>) -> Self {
        Self::shared(frame.kind(), frame.to_json(), exclude)
    }

    /// An envelope around an already serialised frame, so one serialisation
    /// serves every recipient.
    pub fn shared(kind: &'static str, frame: Bytes, exclude: Option<SessionId>) -> Self {
        Self {
            published_at_micros: chrono::Utc::now().timestamp_micros(),
            exclude,
            kind,
            frame,
        }
    }

    /// Wire form for Redis: `<micros> <exclude uuid or -> <kind>\n<frame json>`.
    pub fn encode(&self) -> Vec<u8> {
        let exclude = self.exclude.map(|s| s.0.to_string());
        let head = format!(
            "{} {} {}\n",
            self.published_at_micros,
            exclude.as_deref().unwrap_or("-"),
            self.kind
        );
        let mut out = Vec::with_capacity(head.len() + self.frame.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&self.frame);
        out
    }

    pub fn decode(raw: Bytes) -> Option<Self> {
        let newline = raw.iter().position(|&b| b == b'\n')?;
        let head = std::str::from_utf8(&raw[..newline]).ok()?;
        let mut parts = head.split(' ');
        let micros = parts.next()?.parse().ok()?;
        let exclude = match parts.next()? {
            "-" => None,
            id => Some(SessionId(Uuid::parse_str(id).ok()?)),
        };
        let kind_name = parts.next()?;
        let kind = ServerFrame::KINDS.into_iter().find(|k| *k == kind_name)?;
        Some(Self {
            published_at_micros: micros,
            exclude,
            kind,
            frame: raw.slice(newline + 1..),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// Where a node's incoming events go: the local session registry.
pub trait Delivery: Send + Sync + 'static {
    fn deliver(&self, user: Uuid, envelope: Envelope);
    /// Whether this node still has a session of `user`. A bus checks it when
    /// it acts on a (un)subscribe request, so racing first and last sessions
    /// always leave the subscription matching the sessions.
    fn wants(&self, user: Uuid) -> bool;
    /// Every user with a session here (to resubscribe after a reconnect).
    fn users(&self) -> Vec<Uuid>;
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sends each envelope to its user's channel. Best effort, at most once:
    /// history plus `sync` is what makes delivery reliable.
    async fn publish(&self, events: Vec<(Uuid, Envelope)>) -> Result<(), BusError>;
    /// Called when `user`'s first local session opened or last one closed:
    /// the bus makes its subscription match [`Delivery::wants`].
    async fn interest_changed(&self, user: Uuid) -> Result<(), BusError>;
    /// Readiness probe.
    async fn ping(&self) -> Result<(), BusError>;
    /// Human name for start-up logs.
    fn describe(&self) -> String;
}

pub type SharedBus = Arc<dyn Bus>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        for exclude in [None, Some(SessionId::new())] {
            let env = Envelope::new(&ServerFrame::Pong, exclude);
            assert_eq!(Envelope::decode(Bytes::from(env.encode())), Some(env));
        }
        assert_eq!(Envelope::decode(Bytes::from_static(b"garbage")), None);
    }
}
