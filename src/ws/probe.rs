//! The writer's proof that a client reads what it is sent. Kernels buffer
//! megabytes for a client that stops reading, so a full queue alone would
//! notice late: after every `PROBE_AFTER_BYTES` written, a ping goes out
//! behind the frames, and a client that has not answered it within
//! `SLOW_CONSUMER_TIMEOUT` is too far behind.

use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use axum::extract::ws::Message;
use bytes::Bytes;
use tokio::time::Instant;

use super::handle::SessionHandle;

/// Bytes written without proof the client read them before a probe ping is
/// sent behind them.
const PROBE_AFTER_BYTES: usize = 64 * 1024;

/// Tells a client that reads from one that only lets the kernel buffer for
/// it: after `PROBE_AFTER_BYTES` a ping goes out behind the frames, and a
/// client that has not answered it within `SLOW_CONSUMER_TIMEOUT` is too far
/// behind, however much the kernels on the way hold.
#[derive(Default)]
pub(super) struct Probe {
    unconfirmed: usize,
    /// The outstanding probe: its payload and when it is overdue.
    outstanding: Option<(u64, Instant)>,
    next: u64,
}

impl Probe {
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.outstanding.map(|(_, due)| due)
    }

    /// Clears the probe if the client answered it.
    pub(super) fn check(&mut self, handle: &SessionHandle) {
        if let Some((payload, _)) = self.outstanding
            && handle.pong.load(AtomicOrdering::Relaxed) >= payload
        {
            self.outstanding = None;
        }
    }

    pub(super) fn overdue(&mut self, handle: &SessionHandle) -> bool {
        self.check(handle);
        self.deadline().is_some_and(|due| Instant::now() >= due)
    }

    /// Drops the outstanding probe; the next one goes out after another
    /// `PROBE_AFTER_BYTES`.
    pub(super) fn forget(&mut self) {
        self.outstanding = None;
        self.unconfirmed = 0;
    }

    /// Counts a write; returns a probe ping to send, if one is due.
    pub(super) fn wrote(&mut self, bytes: usize, timeout: Duration) -> Option<Message> {
        self.unconfirmed += bytes;
        if self.outstanding.is_some() || self.unconfirmed < PROBE_AFTER_BYTES {
            return None;
        }
        self.next += 1;
        self.unconfirmed = 0;
        self.outstanding = Some((self.next, Instant::now() + timeout));
        Some(Message::Ping(Bytes::copy_from_slice(
            &self.next.to_be_bytes(),
        )))
    }
}
