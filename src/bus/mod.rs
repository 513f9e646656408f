//! The event bus: every event for a user goes to that user's channel, and
//! every node with a session of that user hears it.
//!
//! [`memory::MemoryBus`] serves a single node; the Redis bus spreads events
//! across nodes. Sessions never know which one they have.

mod listen;
pub mod memory;
pub mod redis;
mod sharded;

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

/// What lets a receiving node put an event in order, drop repeats and
/// notice what it missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Typing, read receipts: nothing to order.
    None,
    /// A message frame: its number in the receiving user's sequence.
    Seq(i64),
    /// A presence event: whose, and the version of that transition.
    Presence { user: Uuid, version: u64 },
}

impl Order {
    fn encode(self) -> String {
        match self {
            Self::None => "-".into(),
            Self::Seq(seq) => format!("s{seq}"),
            Self::Presence { user, version } => format!("p{user}@{version}"),
        }
    }

    fn decode(raw: &str) -> Option<Self> {
        if raw == "-" {
            return Some(Self::None);
        }
        if let Some(seq) = raw.strip_prefix('s') {
            return seq.parse().ok().map(Self::Seq);
        }
        let (user, version) = raw.strip_prefix('p')?.split_once('@')?;
        Some(Self::Presence {
            user: Uuid::parse_str(user).ok()?,
            version: version.parse().ok()?,
        })
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
    /// Sequence or version, for ordering and gap detection.
    pub order: Order,
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
            order: Order::None,
            frame,
        }
    }

    pub fn ordered(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Wire form for Redis:
    /// `<micros> <exclude uuid or -> <kind> <order>\n<frame json>`.
    pub fn encode(&self) -> Vec<u8> {
        let exclude = self.exclude.map(|s| s.0.to_string());
        let head = format!(
            "{} {} {} {}\n",
            self.published_at_micros,
            exclude.as_deref().unwrap_or("-"),
            self.kind,
            self.order.encode(),
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
        let order = Order::decode(parts.next()?)?;
        Some(Self {
            published_at_micros: micros,
            exclude,
            kind,
            order,
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
    /// The bus reconnected and resubscribed every user: whatever was
    /// published while it was away must be caught up from storage.
    fn resubscribed(&self);
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Queues each envelope for its user's channel and returns at once.
    /// Best effort: receiving nodes fill gaps in messages from storage.
    async fn publish(&self, events: Vec<(Uuid, Envelope)>) -> Result<(), BusError>;
    /// Publishes and waits until the bus took the events (or failed to),
    /// for events nothing else repairs if they are lost (presence).
    async fn publish_confirmed(&self, events: Vec<(Uuid, Envelope)>) -> Result<(), BusError>;
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
        let orders = [
            Order::None,
            Order::Seq(42),
            Order::Presence {
                user: Uuid::now_v7(),
                version: 1_700_000_000_000_001,
            },
        ];
        for exclude in [None, Some(SessionId::new())] {
            for order in orders {
                let env = Envelope::new(&ServerFrame::Pong, exclude).ordered(order);
                assert_eq!(Envelope::decode(Bytes::from(env.encode())), Some(env));
            }
        }
        assert_eq!(Envelope::decode(Bytes::from_static(b"garbage")), None);
    }
}
