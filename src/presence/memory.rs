//! Single-node presence: sessions counted in memory. Nothing can expire
//! behind this node's back, so `heartbeat` and `sweep` have nothing to do.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

use super::{Closed, Presence, PresenceError, Transition, next_version};
use crate::bus::SessionId;

#[derive(Default)]
pub struct MemoryPresence {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<Uuid, HashSet<SessionId>>,
    /// The last version handed out per user; kept after they go offline so
    /// versions keep growing.
    versions: HashMap<Uuid, u64>,
}

impl State {
    fn transition(&mut self, user: Uuid, online: bool) -> Transition {
        let version = self.versions.entry(user).or_default();
        *version = next_version(*version);
        Transition {
            user,
            online,
            version: *version,
        }
    }
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn session_opened(
        &self,
        user: Uuid,
        session: SessionId,
    ) -> Result<Option<Transition>, PresenceError> {
        let mut state = self.state.lock().expect("not poisoned");
        let set = state.sessions.entry(user).or_default();
        let first = set.is_empty();
        set.insert(session);
        Ok(first.then(|| state.transition(user, true)))
    }

    async fn session_closed(
        &self,
        user: Uuid,
        session: SessionId,
    ) -> Result<Closed, PresenceError> {
        let mut state = self.state.lock().expect("not poisoned");
        let Some(set) = state.sessions.get_mut(&user) else {
            return Ok(Closed::Unchanged);
        };
        let removed = set.remove(&session);
        if !(removed && set.is_empty()) {
            return Ok(Closed::Unchanged);
        }
        state.sessions.remove(&user);
        Ok(Closed::Offline(state.transition(user, false)))
    }

    async fn is_online(&self, user: Uuid) -> Result<bool, PresenceError> {
        Ok(self
            .state
            .lock()
            .expect("not poisoned")
            .sessions
            .contains_key(&user))
    }

    async fn heartbeat(
        &self,
        _sessions: &[(Uuid, SessionId)],
    ) -> Result<Vec<Transition>, PresenceError> {
        Ok(Vec::new())
    }

    async fn sweep(&self) -> Result<Vec<Transition>, PresenceError> {
        Ok(Vec::new())
    }

    async fn settle(&self, user: Uuid) -> Result<Transition, PresenceError> {
        let mut state = self.state.lock().expect("not poisoned");
        if state.sessions.contains_key(&user) {
            let version = state.versions.get(&user).copied().unwrap_or_default();
            if version > 0 {
                return Ok(Transition {
                    user,
                    online: true,
                    version,
                });
            }
            return Ok(state.transition(user, true));
        }
        Ok(state.transition(user, false))
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
    async fn online_from_first_session_to_last_with_growing_versions() {
        let presence = MemoryPresence::default();
        let user = Uuid::now_v7();
        let (a, b) = (SessionId::new(), SessionId::new());
        let online = presence.session_opened(user, a).await.unwrap().unwrap();
        assert!(online.online);
        assert_eq!(presence.session_opened(user, b).await.unwrap(), None);
        assert_eq!(
            presence.session_closed(user, a).await.unwrap(),
            Closed::Unchanged
        );
        assert!(presence.is_online(user).await.unwrap());
        let Closed::Offline(offline) = presence.session_closed(user, b).await.unwrap() else {
            panic!("the last session's close is a transition");
        };
        assert!(!offline.online && offline.version > online.version);
        assert!(!presence.is_online(user).await.unwrap());
        assert_eq!(
            presence.session_closed(user, b).await.unwrap(),
            Closed::Unchanged,
            "closing twice is not a second transition"
        );
        let settled = presence.settle(user).await.unwrap();
        assert!(!settled.online && settled.version > offline.version);
    }
}
