//! A session joins the hub before its socket opens.
//!
//! A client counts every message committed after its socket opened (the
//! `101` answer) as its to receive live. The node learns where that line
//! falls from the user's latest message number, read here before the `101`
//! is sent. When storage cannot answer in time (down, or just back and its
//! pool still reconnecting), that number is read later by the catch-up
//! task, and everything committed between the `101` and that reading would
//! look like history. So such a session subscribes to the user's channel
//! before its socket opens: whatever commits after the `101` then arrives
//! live, and the later reading only decides what came before.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::handle::{Outbound, SessionHandle};
use super::hub::Registered;
use crate::bus::SessionId;
use crate::state::AppState;

/// How long the upgrade waits for a first floor before leaving it to the
/// catch-up task.
const FLOOR_READ_TIMEOUT: Duration = Duration::from_millis(500);

/// A session registered in the hub whose socket is not open yet. Dropped
/// without [`Joined::open`] (the upgrade failed), it leaves the hub again.
pub struct Joined {
    state: AppState,
    pub handle: Arc<SessionHandle>,
    queue: Option<mpsc::Receiver<Box<Outbound>>>,
    pub registered: Registered,
    /// The user's channel was subscribed before the socket opened.
    pub subscribed: bool,
}

impl Joined {
    /// Registers a new session of `user`; when the user's floor is not
    /// known, waits (bounded by the bus) until their channel is subscribed.
    pub async fn new(state: &AppState, user: Uuid) -> Self {
        let floor = first_floor(state, user).await;
        let limits = &state.config.limits;
        let (queue, rx) = mpsc::channel(limits.send_queue);
        let handle = Arc::new(SessionHandle::new(
            SessionId::new(),
            user,
            queue,
            limits.send_queue_bytes,
        ));
        let registered = state
            .hub
            .register(handle.clone(), limits.max_sessions_per_user, floor);
        let mut joined = Self {
            state: state.clone(),
            handle,
            queue: Some(rx),
            registered,
            subscribed: false,
        };
        let cursor = state.hub.cursor(user);
        let floor_unknown = cursor.is_some_and(|c| c.floor.is_none() && !c.live);
        if registered != Registered::TooMany && floor_unknown {
            // The bus queues interest changes in order, so a second session
            // opening while the first subscribes waits for that too.
            joined.subscribed = subscribe(state, user).await;
        }
        joined
    }

    /// The socket is open: the session's loops take over its queue and its
    /// place in the hub.
    pub fn open(mut self) -> (Arc<SessionHandle>, mpsc::Receiver<Box<Outbound>>) {
        let queue = self.queue.take().expect("opened once");
        (self.handle.clone(), queue)
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        if self.queue.is_none() || self.registered == Registered::TooMany {
            return;
        }
        let (user, id) = (self.handle.user, self.handle.id);
        let last = self.state.hub.unregister(user, id);
        let state = self.state.clone();
        // A heartbeat may have put the session in presence meanwhile.
        self.state.tasks.spawn(async move {
            if last {
                let _ = state.bus.interest_changed(user).await;
            }
            state.chat.session_closed(user, id).await;
        });
    }
}

/// Subscribes `user`'s channel and tells the hub; `false` (logged) when
/// the bus cannot: live delivery then resumes, and catches up, once the bus
/// is back.
pub async fn subscribe(state: &AppState, user: Uuid) -> bool {
    match state.bus.interest_changed(user).await {
        Ok(()) => {
            state.hub.subscribed(user);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "subscribe pending; live delivery resumes and catches up when the bus is back");
            false
        }
    }
}

/// For a user without a session on this node: their latest message number,
/// read before the socket is accepted. Everything committed after it is the
/// new session's to receive live (or from catch-up), even what commits
/// before its subscription is confirmed. `None` (another session is here,
/// or storage is slow) leaves the reading to the catch-up task.
async fn first_floor(state: &AppState, user: Uuid) -> Option<i64> {
    if state.hub.has(user) {
        return None;
    }
    let read = tokio::time::timeout(FLOOR_READ_TIMEOUT, state.chat.latest_seq(user)).await;
    match read {
        Ok(Ok(seq)) => seq,
        _ => None,
    }
}
