//! Who is online. A user is online while any of their sessions is alive on
//! any node; the trait reports the transitions so the domain layer can tell
//! contacts exactly once.

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

#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Records a live session. `true` when the user just came online.
    async fn session_opened(&self, user: Uuid, session: SessionId) -> Result<bool, PresenceError>;
    /// Forgets a session. `true` when the user just went offline.
    async fn session_closed(&self, user: Uuid, session: SessionId) -> Result<bool, PresenceError>;
    async fn is_online(&self, user: Uuid) -> Result<bool, PresenceError>;
    /// Keeps this node's sessions alive (called on a heartbeat).
    async fn heartbeat(&self, sessions: &[(Uuid, SessionId)]) -> Result<(), PresenceError>;
    /// Removes sessions whose node stopped refreshing them; returns users who
    /// went offline because of it. Each such user is returned by exactly one
    /// caller across the cluster.
    async fn sweep(&self) -> Result<Vec<Uuid>, PresenceError>;
    async fn ping(&self) -> Result<(), PresenceError>;
    fn describe(&self) -> String;
}

pub type SharedPresence = Arc<dyn Presence>;
