//! This node's live sessions, by user: where bus events are fanned out, in
//! order, without repeats, and where gaps in live delivery are noticed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::Notify;
use uuid::Uuid;

use super::cursor::Cursor;
use super::handle::{CloseReason, SessionHandle};
use crate::bus::{Delivery, Envelope, Order, SessionId};

/// One user's sessions on this node and what delivery knows about them.
#[derive(Default)]
struct Entry {
    sessions: Vec<Arc<SessionHandle>>,
    cursor: Cursor,
    /// The newest presence version forwarded per contact: an older event
    /// that arrives late is dropped, so the last frame a client got is right.
    presence: HashMap<Uuid, u64>,
}

/// Work for the catch-up task, gathered here so repeats coalesce and the
/// amount of it is bounded by the number of users.
#[derive(Default)]
pub struct CatchUpWork {
    /// Users whose cursor floor must be read from storage.
    pub floors: HashSet<Uuid>,
    /// Users whose missed messages must be fetched now.
    pub heal: HashSet<Uuid>,
    /// Users with a gap, and when it was seen (oldest first).
    pub gaps: VecDeque<(Instant, Uuid)>,
    /// Every user must be caught up (the bus reconnected).
    pub everyone: bool,
}

#[derive(Default)]
pub struct Hub {
    users: RwLock<HashMap<Uuid, Entry>>,
    work: Mutex<CatchUpWork>,
    /// Wakes the catch-up task when work arrives.
    pub work_ready: Notify,
}

/// What registering a session found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// The user's first session on this node: subscribe to their channel.
    First,
    Another,
    /// The user already holds the maximum number of sessions here.
    TooMany,
}

/// A message the catch-up task found missing for one user.
pub struct Missed {
    pub seq: i64,
    pub id: Uuid,
    pub sender: Uuid,
    pub envelope: Envelope,
}

/// Where a user's cursor stands, for the catch-up task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorState {
    pub floor: Option<i64>,
    pub live: bool,
    pub gap_since: Option<Instant>,
}

impl Hub {
    /// `floor`: the user's latest number read before the socket was
    /// accepted, when this node had no session of theirs; `None` has the
    /// catch-up task read it.
    pub fn register(
        &self,
        handle: Arc<SessionHandle>,
        max_per_user: usize,
        floor: Option<i64>,
    ) -> Registered {
        let mut users = self.users.write().expect("not poisoned");
        let entry = users.entry(handle.user).or_default();
        if entry.sessions.len() >= max_per_user {
            if entry.sessions.is_empty() {
                users.remove(&handle.user);
            }
            return Registered::TooMany;
        }
        let first = entry.sessions.is_empty();
        let user = handle.user;
        entry.sessions.push(handle);
        if let (true, Some(floor)) = (first, floor) {
            entry.cursor.set_first(floor);
        }
        let floor_known = entry.cursor.floor.is_some();
        drop(users);
        if first {
            if !floor_known {
                self.want(|work| {
                    work.floors.insert(user);
                });
            }
            Registered::First
        } else {
            Registered::Another
        }
    }

    /// Removes a session; `true` when it was the user's last one here.
    pub fn unregister(&self, user: Uuid, id: SessionId) -> bool {
        let mut users = self.users.write().expect("not poisoned");
        let Some(entry) = users.get_mut(&user) else {
            return false;
        };
        entry.sessions.retain(|s| s.id != id);
        if entry.sessions.is_empty() {
            users.remove(&user);
            return true;
        }
        false
    }

    pub fn sessions(&self) -> Vec<(Uuid, SessionId)> {
        let users = self.users.read().expect("not poisoned");
        users
            .values()
            .flat_map(|entry| entry.sessions.iter().map(|s| (s.user, s.id)))
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
        for session in users.values().flat_map(|e| &e.sessions) {
            session.kick(reason);
        }
    }

    /// Has the catch-up task look at `user` once the gap's grace has passed.
    fn gap_opened(&self, user: Uuid) {
        self.want(|work| work.gaps.push_back((Instant::now(), user)));
    }

    fn want(&self, add: impl FnOnce(&mut CatchUpWork)) {
        add(&mut self.work.lock().expect("not poisoned"));
        self.work_ready.notify_one();
    }

    /// Takes the catch-up work gathered so far.
    pub fn take_work(&self) -> CatchUpWork {
        std::mem::take(&mut *self.work.lock().expect("not poisoned"))
    }

    /// Puts back gap entries the catch-up task is not due to act on yet.
    pub fn return_gaps(&self, gaps: VecDeque<(Instant, Uuid)>) {
        let mut work = self.work.lock().expect("not poisoned");
        let newer = std::mem::replace(&mut work.gaps, gaps);
        work.gaps.extend(newer);
    }

    /// Asks the catch-up task to read `user`'s first floor.
    pub fn want_floor(&self, user: Uuid) {
        self.want(|work| {
            work.floors.insert(user);
        });
    }

    /// Asks the catch-up task to fetch `user`'s missed messages.
    pub fn request_heal(&self, user: Uuid) {
        self.want(|work| {
            work.heal.insert(user);
        });
    }

    /// The bus confirmed `user`'s subscription: from now on nothing is
    /// missed live; what was committed before it is caught up.
    pub fn subscribed(&self, user: Uuid) {
        let floor_known = {
            let mut users = self.users.write().expect("not poisoned");
            let Some(entry) = users.get_mut(&user) else {
                return;
            };
            entry.cursor.live = true;
            entry.cursor.floor.is_some()
        };
        if floor_known {
            self.request_heal(user);
        }
    }

    pub fn cursor(&self, user: Uuid) -> Option<CursorState> {
        let users = self.users.read().expect("not poisoned");
        users.get(&user).map(|e| CursorState {
            floor: e.cursor.floor,
            live: e.cursor.live,
            gap_since: e.cursor.gap_since,
        })
    }

    /// Sets the cursor's first floor (the user's latest number when their
    /// first session here opened) unless it is known already, or raises it
    /// after a catch-up that accounted for everything up to `to`.
    pub fn raise_floor(&self, user: Uuid, to: i64, first: bool) {
        let mut users = self.users.write().expect("not poisoned");
        let Some(entry) = users.get_mut(&user) else {
            return;
        };
        if first {
            entry.cursor.set_first(to);
        } else {
            entry.cursor.raise(to);
        }
        // A first floor below what already arrived live shows what is missing.
        let gap_opened = entry.cursor.track_gap();
        drop(users);
        if gap_opened {
            self.gap_opened(user);
        }
    }

    /// Delivers messages catch-up found, skipping what already arrived and
    /// the connections that were acked for their own message.
    pub fn deliver_missed(&self, user: Uuid, missed: &[Missed]) {
        let mut users = self.users.write().expect("not poisoned");
        let Some(entry) = users.get_mut(&user) else {
            return;
        };
        for m in missed {
            if !entry.cursor.accept(m.seq) {
                continue;
            }
            crate::metrics::message_caught_up();
            for session in &entry.sessions {
                if m.sender == user && session.was_acked(m.id) {
                    continue;
                }
                session.offer(&m.envelope, false);
            }
        }
        entry.cursor.track_gap();
    }
}

impl Delivery for Hub {
    fn deliver(&self, user: Uuid, envelope: Envelope) {
        // A write lock: ordering state changes with most events. It is held
        // only to queue the frame (never across an await).
        let mut users = self.users.write().expect("not poisoned");
        let Some(entry) = users.get_mut(&user) else {
            return;
        };
        let mut gap_opened = false;
        match envelope.order {
            Order::None => {}
            Order::Seq(seq) => {
                if !entry.cursor.accept(seq) {
                    return;
                }
                gap_opened = entry.cursor.track_gap();
            }
            Order::Presence {
                user: about,
                version,
            } => {
                let seen = entry.presence.entry(about).or_default();
                if *seen >= version {
                    return;
                }
                *seen = version;
            }
        }
        for session in &entry.sessions {
            if Some(session.id) != envelope.exclude {
                session.offer(&envelope, true);
            }
        }
        drop(users);
        if gap_opened {
            self.gap_opened(user);
        }
    }

    fn wants(&self, user: Uuid) -> bool {
        self.has(user)
    }

    fn users(&self) -> Vec<Uuid> {
        Hub::users(self)
    }

    fn resubscribed(&self) {
        self.want(|work| work.everyone = true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first reading queued for a session that has since closed comes in
    /// after the next session read its own floor before its socket opened:
    /// the later floor stands (the stale reading would count what is on its
    /// way to the new session as history).
    #[test]
    fn a_stale_first_reading_never_moves_a_known_floor() {
        let hub = Hub::default();
        let user = Uuid::now_v7();
        let (queue, _rx) = tokio::sync::mpsc::channel(8);
        let handle = Arc::new(SessionHandle::new(SessionId::new(), user, queue, 1 << 20));
        assert_eq!(hub.register(handle, 10, Some(4)), Registered::First);
        hub.raise_floor(user, 9, true);
        assert_eq!(hub.cursor(user).unwrap().floor, Some(4));
        let frame = Envelope::new(&crate::protocol::ServerFrame::Pong, None);
        hub.deliver(user, frame.ordered(Order::Seq(5)));
        hub.raise_floor(user, 3, true);
        assert_eq!(hub.cursor(user).unwrap().floor, Some(5), "nor lowers it");
        hub.raise_floor(user, 7, false);
        assert_eq!(
            hub.cursor(user).unwrap().floor,
            Some(7),
            "catch-up raises it"
        );
    }

    /// A first floor read after live frames arrived can show a hole below
    /// them: the catch-up task is told, as for a gap seen on delivery.
    #[test]
    fn a_late_first_floor_below_live_frames_opens_a_gap() {
        let hub = Hub::default();
        let user = Uuid::now_v7();
        let (queue, _rx) = tokio::sync::mpsc::channel(8);
        let handle = Arc::new(SessionHandle::new(SessionId::new(), user, queue, 1 << 20));
        assert_eq!(hub.register(handle, 10, None), Registered::First);
        hub.take_work();
        let frame = Envelope::new(&crate::protocol::ServerFrame::Pong, None);
        hub.deliver(user, frame.ordered(Order::Seq(5)));
        assert!(hub.take_work().gaps.is_empty(), "no floor, no gap yet");
        hub.raise_floor(user, 3, true);
        let gaps: Vec<Uuid> = hub.take_work().gaps.into_iter().map(|(_, u)| u).collect();
        assert_eq!(gaps, [user], "4 is missing");
    }
}
