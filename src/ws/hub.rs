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
        self.reason.lock().expect("not poisoned").get_or_insert(reason);
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
        if first { Registered::First } else { Registered::Another }
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
        self.users.read().expect("not poisoned").keys().copied().collect()
    }

    pub fn session_count(&self) -> usize {
        self.users.read().expect("not poisoned").values().map(Vec::len).sum()
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
}
