//! This node's live sessions, by user: where bus events are fanned out, in
//! order, without repeats, and where gaps in live delivery are noticed.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus::{Delivery, Envelope, Order, SessionId};

/// A frame queued for one session's writer.
#[derive(Debug, Clone)]
/// Queued boxed: a session's queue allocates its first block of 32 slots up
/// front, and 32 pointers cost every idle connection about 1.8 KiB less than
/// 32 of these.
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
    /// A text frame that is not UTF-8: the WebSocket protocol's own error,
    /// after which the stream cannot be trusted.
    InvalidUtf8,
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
            Self::InvalidUtf8 => Some((1007, "text frame is not valid UTF-8")),
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
            Self::InvalidUtf8 => "invalid_utf8",
            Self::IdleTimeout => "idle_timeout",
            Self::ClientGone => "client_closed",
        }
    }
}

/// How many of a session's own message ids it remembers, so catch-up never
/// pushes a sender's message back to the connection that got its `ack`.
const RECENT_ACKS: usize = 64;

/// The handle the hub keeps for one session.
pub struct SessionHandle {
    pub id: SessionId,
    pub user: Uuid,
    queue: mpsc::Sender<Box<Outbound>>,
    /// Bytes of the events (bus and catch-up) waiting in `queue`, not the
    /// one being written. Frames are bounded by count in the channel, but
    /// one frame may be 16 KB: memory is bounded by this, in bytes.
    event_bytes: AtomicUsize,
    /// Bytes of the answers to the client's own requests waiting in `queue`
    /// (one `sync` answer can be megabytes). Counted apart from events, so
    /// a large answer never makes the next event look like an overflow.
    answer_bytes: AtomicUsize,
    /// `SEND_QUEUE_BYTES`: past this a bus event closes the session as a
    /// slow consumer, and the client's own answers wait for room.
    max_queued_bytes: usize,
    /// The reader is waiting for room for an answer, so it reads nothing
    /// (pongs included) meanwhile: the writer's probe must not count that
    /// silence against the client.
    reader_waiting: AtomicBool,
    /// A `sync` answer is queued or being written: the next `sync` is read
    /// from storage only once it has left, so a client that asks and never
    /// reads holds one answer, not one per request.
    sync_pending: AtomicBool,
    /// Woken by the writer as frames leave (room in the queue, a `sync`
    /// answer written).
    progress: Notify,
    /// Cancelled to make the session close itself.
    kick: CancellationToken,
    reason: Mutex<Option<CloseReason>>,
    /// Ids this connection was acked for, newest last.
    acked: Mutex<VecDeque<Uuid>>,
    /// The highest ping payload the client answered (written by the reader,
    /// read by the writer's slow-consumer probe).
    pub pong: AtomicU64,
    /// Wakes the writer when a pong arrives.
    pub pong_seen: Notify,
}

impl SessionHandle {
    pub fn new(
        id: SessionId,
        user: Uuid,
        queue: mpsc::Sender<Box<Outbound>>,
        max_queued_bytes: usize,
    ) -> Self {
        Self {
            id,
            user,
            queue,
            event_bytes: AtomicUsize::new(0),
            answer_bytes: AtomicUsize::new(0),
            max_queued_bytes,
            reader_waiting: AtomicBool::new(false),
            sync_pending: AtomicBool::new(false),
            progress: Notify::new(),
            kick: CancellationToken::new(),
            reason: Mutex::new(None),
            acked: Mutex::new(VecDeque::new()),
            pong: AtomicU64::new(0),
            pong_seen: Notify::new(),
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

    /// Remembers that this connection was acked for message `id`.
    pub fn acked(&self, id: Uuid) {
        let mut acked = self.acked.lock().expect("not poisoned");
        if acked.len() == RECENT_ACKS {
            acked.pop_front();
        }
        acked.push_back(id);
    }

    fn was_acked(&self, id: Uuid) -> bool {
        self.acked.lock().expect("not poisoned").contains(&id)
    }

    /// Queues a bus event without waiting. A full queue (in frames or in
    /// bytes) means the client has stopped keeping up: rather than grow
    /// memory or silently drop frames, the session is closed so the client
    /// reconnects and syncs. Catch-up (`bounded: false`) hands over a round
    /// of up to 100 missed messages at once, which may pass the byte bound
    /// by itself; it is held to the bound in frames only.
    fn offer(&self, envelope: &Envelope, bounded: bool) {
        let size = envelope.frame.len();
        let queued = self.event_bytes.fetch_add(size, Ordering::AcqRel) + size;
        if bounded && queued > self.max_queued_bytes {
            self.event_bytes.fetch_sub(size, Ordering::AcqRel);
            self.fall_behind();
            return;
        }
        let outbound = Box::new(Outbound {
            kind: envelope.kind,
            frame: envelope.frame.clone(),
            published_at_micros: Some(envelope.published_at_micros),
        });
        match self.queue.try_send(outbound) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.event_bytes.fetch_sub(size, Ordering::AcqRel);
                self.fall_behind();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.event_bytes.fetch_sub(size, Ordering::AcqRel);
            }
        }
    }

    fn fall_behind(&self) {
        if self.kick_reason().is_none() {
            crate::metrics::slow_consumer();
            tracing::info!(session = %self.id, "closing slow consumer");
        }
        self.kick(CloseReason::SlowConsumer);
    }

    /// Queues an answer to the client's own request (an `Outbound` without
    /// a publish time), waiting (the reader stops reading meanwhile) until
    /// the answers queued leave room in bytes; an answer larger than the
    /// whole bound goes alone. `false` when the session is closing.
    pub async fn answer(&self, outbound: Box<Outbound>) -> bool {
        let size = outbound.frame.len();
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            let queued = self.answer_bytes.load(Ordering::Acquire);
            if queued == 0 || queued + size <= self.max_queued_bytes {
                break;
            }
            self.reader_waiting.store(true, Ordering::Release);
            let closing = tokio::select! {
                () = progress => false,
                () = self.kick.cancelled() => true,
            };
            self.reader_waiting.store(false, Ordering::Release);
            if closing {
                return false;
            }
        }
        if outbound.kind == "sync" {
            self.sync_pending.store(true, Ordering::Release);
        }
        self.answer_bytes.fetch_add(size, Ordering::AcqRel);
        if self.queue.send(outbound).await.is_err() {
            self.answer_bytes.fetch_sub(size, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Whether the reader is waiting for room (and so reads no pongs).
    pub fn reader_waiting(&self) -> bool {
        self.reader_waiting.load(Ordering::Acquire)
    }

    /// Waits until no `sync` answer is queued or being written; `false`
    /// when the session is closing.
    pub async fn sync_left(&self) -> bool {
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if !self.sync_pending.load(Ordering::Acquire) {
                return true;
            }
            tokio::select! {
                () = progress => {}
                () = self.kick.cancelled() => return false,
            }
        }
    }

    /// The writer took `out` off the queue.
    pub fn dequeued(&self, out: &Outbound) {
        let counter = match out.published_at_micros {
            Some(_) => &self.event_bytes,
            None => &self.answer_bytes,
        };
        counter.fetch_sub(out.frame.len(), Ordering::AcqRel);
        // Every waiter: the reader's enqueue and its pending `sync` may
        // both be registered, and `notify_one` could wake the one that is
        // not being polled.
        self.progress.notify_waiters();
    }

    /// The writer finished writing a `sync` answer.
    pub fn sync_written(&self) {
        self.sync_pending.store(false, Ordering::Release);
        self.progress.notify_waiters();
    }
}

/// Which of a user's sequence numbers reached this node's sessions of that
/// user. Live delivery can reorder and lose frames; this is what lets the
/// node drop repeats and notice (and then fill) what it missed.
#[derive(Debug, Default)]
pub struct Cursor {
    /// Every number up to here is accounted for: delivered, committed
    /// before the user's first session here, or never used (a number a
    /// lost idempotency race left unused). `None` until it is read.
    floor: Option<i64>,
    /// Numbers above `floor + 1` already delivered.
    ahead: BTreeSet<i64>,
    /// Since when a number below `ahead` has been missing.
    gap_since: Option<Instant>,
    /// The bus subscription for this user is confirmed.
    live: bool,
}

impl Cursor {
    /// Records number `seq`; `false` when it was delivered already.
    fn accept(&mut self, seq: i64) -> bool {
        match self.floor {
            Some(floor) if seq <= floor => return false,
            Some(floor) if seq == floor + 1 => {
                self.floor = Some(seq);
                self.absorb();
            }
            _ => {
                if !self.ahead.insert(seq) {
                    return false;
                }
            }
        }
        true
    }

    /// Moves the floor up to `to`: everything at or below it is accounted
    /// for. (`set` puts it there even when lower, for the first reading.)
    fn raise(&mut self, to: i64, set: bool) {
        self.floor = Some(match self.floor {
            Some(floor) if !set => floor.max(to),
            _ => to,
        });
        let floor = self.floor.unwrap_or(to);
        self.ahead.retain(|&s| s > floor);
        self.absorb();
    }

    fn absorb(&mut self) {
        while let Some(floor) = self.floor {
            if self.ahead.first() != Some(&(floor + 1)) {
                break;
            }
            self.ahead.pop_first();
            self.floor = Some(floor + 1);
        }
    }

    /// Updates `gap_since`; `true` when a gap just opened.
    fn track_gap(&mut self) -> bool {
        let open = self.floor.is_some() && !self.ahead.is_empty();
        match (open, self.gap_since) {
            (true, None) => {
                self.gap_since = Some(Instant::now());
                true
            }
            (false, _) => {
                self.gap_since = None;
                false
            }
            (true, Some(_)) => false,
        }
    }
}

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
    /// Woken after each batch of first floors is read.
    pub floors_read: Notify,
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
        let floor_known = match floor {
            Some(floor) if first && entry.cursor.floor.is_none() => {
                entry.cursor.raise(floor, true);
                true
            }
            _ => entry.cursor.floor.is_some(),
        };
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

    /// Waits, at most `limit`, until `user`'s first floor is read. A first
    /// session subscribes only after it: a floor read after the subscription
    /// was confirmed would count a message committed in between (and missed
    /// live) as history from before the session. (Past `limit`, storage is
    /// slow or down; the session subscribes anyway and such a message is
    /// still in `sync`.)
    pub async fn floor_read(&self, user: Uuid, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.floors_read.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.cursor(user).is_none_or(|c| c.floor.is_some()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
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
    /// first session here opened), or raises it after a catch-up that
    /// accounted for everything up to `to`.
    pub fn raise_floor(&self, user: Uuid, to: i64, first: bool) {
        let mut users = self.users.write().expect("not poisoned");
        if let Some(entry) = users.get_mut(&user) {
            entry.cursor.raise(to, first);
            entry.cursor.track_gap();
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
            self.want(|work| work.gaps.push_back((Instant::now(), user)));
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

    #[test]
    fn a_cursor_drops_repeats_and_sees_gaps_close() {
        let mut cursor = Cursor::default();
        // Before the floor is known, frames are delivered and remembered.
        assert!(cursor.accept(7));
        assert!(!cursor.track_gap());
        cursor.raise(5, true);
        assert!(cursor.track_gap(), "6 is missing");
        assert!(!cursor.accept(7), "a repeat");
        assert!(cursor.accept(6));
        assert!(!cursor.track_gap());
        assert_eq!(cursor.floor, Some(7));
        assert!(!cursor.accept(3), "from before the floor");
        // A hole that never fills: catch-up raises the floor past it.
        assert!(cursor.accept(10));
        assert!(cursor.track_gap());
        cursor.raise(10, false);
        assert!(!cursor.track_gap());
        assert_eq!((cursor.floor, cursor.ahead.len()), (Some(10), 0));
    }
}
