//! This node's live sessions, by user: where bus events are fanned out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus::{Delivery, Envelope, SessionId};

/// A frame queued for one session's writer.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The frame's `type`, for metrics.
    pub kind: &'static str,
    pub frame: Bytes,
    /// Set for bus events: when the event was published, for the
    /// delivery-latency histogram.
    pub published_at_micros: Option<i64>,
}

/// Why the server closed a session; becomes the close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The outgoing queue overflowed: the client cannot keep up.
    SlowConsumer,
    /// The node is draining (SIGTERM).
    Shutdown,
    /// The token's `exp` passed.
    TokenExpired,
    /// The user already holds `MAX_SESSIONS_PER_USER` sessions here.
    TooManySessions,
    /// A frame above `MAX_FRAME_BYTES`.
    FrameTooLarge,
    /// Nothing heard (not even a pong) within `WS_IDLE_TIMEOUT`.
    IdleTimeout,
    /// The client closed or the connection broke.
    ClientGone,
}

impl CloseReason {
    /// The close frame to send; `None` when the peer is gone or dead.
    pub fn close_frame(self) -> Option<(u16, &'static str)> {
        match self {
            Self::SlowConsumer => Some((1013, "too slow to keep up: reconnect and sync")),
            Self::Shutdown => Some((1001, "server going away: reconnect")),
            Self::TokenExpired => Some((1008, "token expired: reconnect with a fresh token")),
            Self::TooManySessions => Some((1008, "too many sessions for this user")),
            Self::FrameTooLarge => Some((1009, "frame too large")),
            Self::IdleTimeout | Self::ClientGone => None,
        }
    }

    /// Bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::SlowConsumer => "slow_consumer",
            Self::Shutdown => "shutdown",
            Self::TokenExpired => "token_expired",
            Self::TooManySessions => "too_many_sessions",
            Self::FrameTooLarge => "frame_too_large",
            Self::IdleTimeout => "idle_timeout",
            Self::ClientGone => "client_closed",
        }
    }
}

/// The handle the hub keeps for one session.
pub struct SessionHandle {
    pub id: SessionId,
    pub user: Uuid,
    queue: mpsc::Sender<Outbound>,
    /// Cancelled to make the session close itself.
    kick: CancellationToken,
    reason: Mutex<Option<CloseReason>>,
}

impl SessionHandle {
    pub fn new(id: SessionId, user: Uuid, queue: mpsc::Sender<Outbound>) -> Self {
        Self {
            id,
            user,
            queue,
            kick: CancellationToken::new(),
            reason: Mutex::new(None),
        }
    }

    pub fn kick(&self, reason: CloseReason) {
        self.reason
            .lock()
            .expect("not poisoned")
            .get_or_insert(reason);
        self.kick.cancel();
    }

    pub fn kicked(&self) -> &CancellationToken {
        &self.kick
    }

    pub fn kick_reason(&self) -> Option<CloseReason> {
        *self.reason.lock().expect("not poisoned")
    }

    /// Queues a bus event without waiting. A full queue means the client
    /// has stopped keeping up: rather than grow memory or silently drop
    /// frames, the session is closed so the client reconnects and syncs.
    fn offer(&self, envelope: &Envelope) {
        let outbound = Outbound {
            kind: envelope.kind,
            frame: envelope.frame.clone(),
            published_at_micros: Some(envelope.published_at_micros),
        };
        match self.queue.try_send(outbound) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.kick_reason().is_none() {
                    crate::metrics::slow_consumer();
                    tracing::info!(session = %self.id, "closing slow consumer");
                }
                self.kick(CloseReason::SlowConsumer);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

#[derive(Default)]
pub struct Hub {
    users: RwLock<HashMap<Uuid, Vec<Arc<SessionHandle>>>>,
}

/// What registering a session found.
#[derive(Debug, PartialEq, Eq)]
pub enum Registered {
    /// The user's first session on this node: subscribe to their channel.
    First,
    Another,
    /// The user already holds the maximum number of sessions here.
    TooMany,
}

impl Hub {
    pub fn register(&self, handle: Arc<SessionHandle>, max_per_user: usize) -> Registered {
        let mut users = self.users.write().expect("not poisoned");
        let sessions = users.entry(handle.user).or_default();
        if sessions.len() >= max_per_user {
            return Registered::TooMany;
        }
        let first = sessions.is_empty();
        sessions.push(handle);
        if first {
            Registered::First
        } else {
            Registered::Another
        }
    }

    /// Removes a session; `true` when it was the user's last one here.
    pub fn unregister(&self, user: Uuid, id: SessionId) -> bool {
        let mut users = self.users.write().expect("not poisoned");
        let Some(sessions) = users.get_mut(&user) else {
            return false;
        };
        sessions.retain(|s| s.id != id);
        if sessions.is_empty() {
            users.remove(&user);
            return true;
        }
        false
    }

    pub fn sessions(&self) -> Vec<(Uuid, SessionId)> {
        let users = self.users.read().expect("not poisoned");
        users
            .values()
            .flat_map(|sessions| sessions.iter().map(|s| (s.user, s.id)))
            .collect()
    }

    pub fn users(&self) -> Vec<Uuid> {
        self.users
            .read()
            .expect("not poisoned")
            .keys()
            .copied()
            .collect()
    }

    pub fn has(&self, user: Uuid) -> bool {
        self.users.read().expect("not poisoned").contains_key(&user)
    }

    /// Asks every session to close (node shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        let users = self.users.read().expect("not poisoned");
        for session in users.values().flatten() {
            session.kick(reason);
        }
    }
}

impl Delivery for Hub {
    fn deliver(&self, user: Uuid, envelope: Envelope) {
        let users = self.users.read().expect("not poisoned");
        let Some(sessions) = users.get(&user) else {
            return;
        };
        for session in sessions {
            if Some(session.id) != envelope.exclude {
                session.offer(&envelope);
            }
        }
    }

    fn wants(&self, user: Uuid) -> bool {
        self.has(user)
    }

    fn users(&self) -> Vec<Uuid> {
        Hub::users(self)
    }
}
