//! One session as the hub and the session's own loops share it: its
//! bounded outgoing queue (in frames and in bytes), why it was asked to
//! close, and what its writer and reader tell each other.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus::{Envelope, SessionId};

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

    pub(super) fn was_acked(&self, id: Uuid) -> bool {
        self.acked.lock().expect("not poisoned").contains(&id)
    }

    /// Queues a bus event without waiting. A full queue (in frames or in
    /// bytes) means the client has stopped keeping up: rather than grow
    /// memory or silently drop frames, the session is closed so the client
    /// reconnects and syncs. Catch-up (`bounded: false`) hands over a round
    /// of up to 100 missed messages at once, which may pass the byte bound
    /// by itself; it is held to the bound in frames only.
    pub(super) fn offer(&self, envelope: &Envelope, bounded: bool) {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn answer(bytes: usize) -> Box<Outbound> {
        Box::new(Outbound {
            kind: "pong",
            frame: Bytes::from(vec![b'x'; bytes]),
            published_at_micros: None,
        })
    }

    /// The reader's back-pressure: an answer waits (and the reader with it)
    /// until the answers queued leave room in bytes, and the writer's probe
    /// is told the reader is not reading meanwhile.
    #[tokio::test]
    async fn an_answer_waits_for_room_in_bytes() {
        let (queue, mut rx) = mpsc::channel(8);
        let handle = Arc::new(SessionHandle::new(
            SessionId::new(),
            Uuid::now_v7(),
            queue,
            100,
        ));
        assert!(handle.answer(answer(80)).await);
        let second = tokio::spawn({
            let handle = handle.clone();
            async move { handle.answer(answer(80)).await }
        });
        let waiting = tokio::time::timeout(Duration::from_secs(5), async {
            while !handle.reader_waiting() {
                tokio::task::yield_now().await;
            }
        });
        waiting.await.expect("the second answer waits for room");
        assert!(!second.is_finished());
        let first = rx.recv().await.unwrap();
        handle.dequeued(&first);
        assert!(second.await.unwrap(), "queued once the first left");
        assert!(!handle.reader_waiting());
        assert_eq!(rx.recv().await.unwrap().frame.len(), 80);
    }

    /// A bus event past the byte bound closes the session: memory stays
    /// bounded whatever a client fails to read.
    #[test]
    fn an_event_past_the_byte_bound_closes_a_slow_consumer() {
        let (queue, _rx) = mpsc::channel(8);
        let handle = SessionHandle::new(SessionId::new(), Uuid::now_v7(), queue, 100);
        let event = |bytes: usize| Envelope {
            frame: Bytes::from(vec![b'x'; bytes]),
            ..Envelope::new(&crate::protocol::ServerFrame::Pong, None)
        };
        handle.offer(&event(60), true);
        assert_eq!(handle.kick_reason(), None);
        handle.offer(&event(60), true);
        assert_eq!(handle.kick_reason(), Some(CloseReason::SlowConsumer));
    }
}
