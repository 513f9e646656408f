//! Who is online. A user is online while any of their sessions is alive on
//! any node; the trait reports the transitions so the domain layer can tell
//! contacts, and hands out a per-user version with each one so that events
//! which travel different paths can be put back in order.

pub mod memory;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::bus::SessionId;

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("presence unavailable: {0}")]
    Unavailable(String),
}

/// A user's presence as decided at one moment. `version` grows with every
/// transition of that user (it is a microsecond clock reading, made strictly
/// greater than the last one handed out for the user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub user: Uuid,
    pub online: bool,
    pub version: u64,
}

/// What closing a session did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// It was the user's last live session.
    Offline(Transition),
    /// The user still has a live session somewhere (or never had this one).
    Unchanged,
    /// The session was unknown and no live session is left: the presence
    /// store lost its state (a flush, a restart, a failover), so whether
    /// contacts saw the user offline cannot be known. The caller settles it
    /// once every node had time to restore its sessions.
    Lost,
}

#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Records a live session; a transition when the user just came online.
    async fn session_opened(
        &self,
        user: Uuid,
        session: SessionId,
    ) -> Result<Option<Transition>, PresenceError>;
    /// Forgets a session.
    async fn session_closed(&self, user: Uuid, session: SessionId)
    -> Result<Closed, PresenceError>;
    async fn is_online(&self, user: Uuid) -> Result<bool, PresenceError>;
    /// Keeps this node's sessions alive (called on a heartbeat) and puts
    /// back any the store lost; returns users that were missing and so came
    /// (back) online.
    async fn heartbeat(
        &self,
        sessions: &[(Uuid, SessionId)],
    ) -> Result<Vec<Transition>, PresenceError>;
    /// Removes sessions whose node stopped refreshing them; returns users who
    /// went offline because of it. Each such user is returned by exactly one
    /// caller across the cluster.
    async fn sweep(&self) -> Result<Vec<Transition>, PresenceError>;
    /// The user's state now, to announce again after an announcement may
    /// have been lost. Offline (or an online state whose version was lost)
    /// gets a new version, so it wins over anything announced before.
    async fn settle(&self, user: Uuid) -> Result<Transition, PresenceError>;
    async fn ping(&self) -> Result<(), PresenceError>;
    fn describe(&self) -> String;
}

pub type SharedPresence = Arc<dyn Presence>;

/// A version for a transition decided now: the wall clock in microseconds,
/// strictly above `last`.
pub fn next_version(last: u64) -> u64 {
    let now = chrono::Utc::now().timestamp_micros().max(0) as u64;
    now.max(last + 1)
}
