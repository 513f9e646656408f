//! Single-node presence: sessions counted in memory. Nothing can expire
//! behind this node's back, so `heartbeat` and `sweep` have nothing to do.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

use super::{Presence, PresenceError};
use crate::bus::SessionId;

#[derive(Default)]
pub struct MemoryPresence {
    sessions: Mutex<HashMap<Uuid, HashSet<SessionId>>>,
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn session_opened(&self, user: Uuid, session: SessionId) -> Result<bool, PresenceError> {
        let mut sessions = self.sessions.lock().expect("not poisoned");
        let set = sessions.entry(user).or_default();
        let first = set.is_empty();
        set.insert(session);
        Ok(first)
    }

    async fn session_closed(&self, user: Uuid, session: SessionId) -> Result<bool, PresenceError> {
        let mut sessions = self.sessions.lock().expect("not poisoned");
        let Some(set) = sessions.get_mut(&user) else {
            return Ok(false);
        };
        let removed = set.remove(&session);
        if set.is_empty() {
            sessions.remove(&user);
            return Ok(removed);
        }
        Ok(false)
    }

    async fn is_online(&self, user: Uuid) -> Result<bool, PresenceError> {
        Ok(self
            .sessions
            .lock()
            .expect("not poisoned")
            .contains_key(&user))
    }

    async fn heartbeat(&self, _sessions: &[(Uuid, SessionId)]) -> Result<(), PresenceError> {
        Ok(())
    }

    async fn sweep(&self) -> Result<Vec<Uuid>, PresenceError> {
        Ok(Vec::new())
    }

    async fn ping(&self) -> Result<(), PresenceError> {
        Ok(())
    }

    fn describe(&self) -> String {
        "in-process".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn online_from_first_session_to_last() {
        let presence = MemoryPresence::default();
        let user = Uuid::now_v7();
        let (a, b) = (SessionId::new(), SessionId::new());
        assert!(presence.session_opened(user, a).await.unwrap());
        assert!(!presence.session_opened(user, b).await.unwrap());
        assert!(!presence.session_closed(user, a).await.unwrap());
        assert!(presence.is_online(user).await.unwrap());
        assert!(presence.session_closed(user, b).await.unwrap());
        assert!(!presence.is_online(user).await.unwrap());
        assert!(
            !presence.session_closed(user, b).await.unwrap(),
            "closing twice is not a second transition"
        );
    }
}
