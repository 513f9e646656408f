//! A session's writer: drains its queue to the socket, pings on a timer,
//! and closes a client that falls behind. Generic over the sink, so the
//! slow-consumer rules are tested without a socket (below).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};

use super::handle::{CloseReason, Outbound, SessionHandle};
use super::probe::Probe;

/// Drains the queue to the socket and pings on a timer. A client that falls
/// more than `SLOW_CONSUMER_TIMEOUT` behind (a write blocked that long, or a
/// probe unanswered that long) is closed.
pub(super) async fn write_loop<S>(
    mut sink: S,
    mut rx: mpsc::Receiver<Box<Outbound>>,
    handle: Arc<SessionHandle>,
    ping_every: Duration,
    patience: Duration,
) where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    // A deadline rather than a `tokio::time::Interval`, which boxes its
    // timer: every idle connection keeps this task.
    let mut next_ping = Instant::now() + ping_every;
    let mut probe = Probe::default();
    let mut wrote_sync = false;
    loop {
        let due = probe.deadline();
        let message = tokio::select! {
            biased;
            () = handle.kicked().cancelled() => break,
            () = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                if handle.reader_waiting() {
                    // The reader is waiting for room and reads nothing, an
                    // answering pong included: no verdict from this probe. A
                    // client that reads nothing at all blocks the writes,
                    // which time out on their own.
                    probe.forget();
                } else if probe.overdue(&handle) {
                    fall_behind(&handle);
                    break;
                }
                continue;
            }
            () = handle.pong_seen.notified() => {
                probe.check(&handle);
                continue;
            }
            () = sleep_until(next_ping) => {
                next_ping = Instant::now() + ping_every;
                Message::Ping(Default::default())
            }
            out = rx.recv() => match out {
                Some(out) => {
                    handle.dequeued(&out);
                    wrote_sync = out.kind == "sync";
                    if let Some(at) = out.published_at_micros
                        && out.kind == "message"
                    {
                        let micros = (chrono::Utc::now().timestamp_micros() - at).max(0) as u64;
                        crate::metrics::message_delivered(Duration::from_micros(micros));
                    }
                    crate::metrics::frame_out(out.kind);
                    match Utf8Bytes::try_from(out.frame) {
                        Ok(text) => Message::Text(text),
                        Err(_) => continue,
                    }
                }
                None => break,
            },
        };
        let size = match &message {
            Message::Text(text) => text.len(),
            _ => 0,
        };
        match write(&mut sink, message, &mut probe, &handle, patience).await {
            Wrote::Done => {}
            Wrote::Ended => break,
            Wrote::Abandoned => return,
        }
        if std::mem::take(&mut wrote_sync) {
            handle.sync_written();
        }
        if let Some(ping) = probe.wrote(size, patience) {
            match write(&mut sink, ping, &mut probe, &handle, patience).await {
                Wrote::Done => {}
                Wrote::Ended => break,
                Wrote::Abandoned => return,
            }
        }
    }
    if let Some(reason) = handle.kick_reason() {
        close(&mut sink, reason).await;
    }
}

/// How a write went.
enum Wrote {
    Done,
    /// The session must end; a close frame may still be written.
    Ended,
    /// Given up mid-frame (a slow consumer): the stream is cut without a
    /// close frame, which could not follow half a frame anyway.
    Abandoned,
}

/// Writes one frame. A write may block no longer than the patience left,
/// and no longer than an outstanding probe's deadline; and not at all once
/// the session was found too slow elsewhere (its queue overflowed): it is
/// dropped then, not after the write's own timeout and a close frame's.
async fn write<S>(
    sink: &mut S,
    message: Message,
    probe: &mut Probe,
    handle: &SessionHandle,
    patience: Duration,
) -> Wrote
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let started = Instant::now();
    let budget = |probe: &Probe| {
        let left = patience.saturating_sub(started.elapsed());
        probe.deadline().map_or(left, |due| {
            left.min(due.saturating_duration_since(Instant::now()))
        })
    };
    let too_slow = async {
        handle.kicked().cancelled().await;
        if handle.kick_reason() != Some(CloseReason::SlowConsumer) {
            // Draining or closing: finish the frame, then the close frame.
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(too_slow);
    let mut result = tokio::select! {
        result = timeout(budget(probe), sink.send(message)) => result,
        () = &mut too_slow => return Wrote::Abandoned,
    };
    // The probe's deadline cut the write short, but the client has answered
    // it since: finish the write with the patience left.
    while result.is_err() && !probe.overdue(handle) && started.elapsed() < patience {
        result = tokio::select! {
            result = timeout(budget(probe), sink.flush()) => result,
            () = &mut too_slow => return Wrote::Abandoned,
        };
    }
    match result {
        Ok(Ok(())) => Wrote::Done,
        Ok(Err(_)) => {
            handle.kick(CloseReason::ClientGone);
            Wrote::Ended
        }
        Err(_) => {
            // Cut short mid-frame: no close frame can follow.
            fall_behind(handle);
            Wrote::Abandoned
        }
    }
}

fn fall_behind(handle: &SessionHandle) {
    if handle.kick_reason().is_none() {
        crate::metrics::slow_consumer();
        tracing::info!("closing slow consumer");
    }
    handle.kick(CloseReason::SlowConsumer);
}

pub(super) async fn close<S>(sink: &mut S, reason: CloseReason)
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    if let Some((code, text)) = reason.close_frame() {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(text),
        };
        // A slow consumer's socket is likely full: the close frame goes if
        // it fits now, and the connection is dropped either way.
        let wait = match reason {
            CloseReason::SlowConsumer => Duration::from_millis(100),
            _ => Duration::from_secs(1),
        };
        let _ = timeout(wait, sink.send(Message::Close(Some(frame)))).await;
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use tokio::task::JoinHandle;
    use uuid::Uuid;

    use super::*;
    use crate::bus::SessionId;

    const PATIENCE: Duration = Duration::from_millis(200);
    /// Far longer than any test: no timer ping gets in the way.
    const NO_PINGS: Duration = Duration::from_secs(3600);
    const WITHIN: Duration = Duration::from_secs(5);

    /// A socket's sending half: hands on what is written, or (stalled)
    /// takes nothing, as a peer that stopped reading once buffers are full.
    struct TestSink {
        written: mpsc::UnboundedSender<Message>,
        stalled: bool,
    }

    impl Sink<Message> for TestSink {
        type Error = axum::Error;

        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            if self.stalled {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            }
        }

        fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), Self::Error> {
            let _ = self.written.send(message);
            Ok(())
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.poll_ready(cx)
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    struct Writer {
        handle: Arc<SessionHandle>,
        written: mpsc::UnboundedReceiver<Message>,
        task: JoinHandle<()>,
    }

    fn start(stalled: bool) -> Writer {
        let (queue, rx) = mpsc::channel(64);
        let handle = Arc::new(SessionHandle::new(
            SessionId::new(),
            Uuid::now_v7(),
            queue,
            1 << 20,
        ));
        let (tx, written) = mpsc::unbounded_channel();
        let sink = TestSink {
            written: tx,
            stalled,
        };
        let task = tokio::spawn(write_loop(sink, rx, handle.clone(), NO_PINGS, PATIENCE));
        Writer {
            handle,
            written,
            task,
        }
    }

    fn frame(bytes: usize) -> Box<Outbound> {
        Box::new(Outbound {
            kind: "sync",
            frame: Bytes::from(vec![b'x'; bytes]),
            published_at_micros: None,
        })
    }

    async fn next(written: &mut mpsc::UnboundedReceiver<Message>) -> Message {
        timeout(WITHIN, written.recv())
            .await
            .expect("written in time")
            .expect("the writer is running")
    }

    fn close_code(message: &Message) -> u16 {
        match message {
            Message::Close(Some(frame)) => frame.code,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// Past `PROBE_AFTER_BYTES` a ping goes out behind the frames; a client
    /// that has not answered it within the patience is too slow.
    #[tokio::test]
    async fn a_client_that_never_answers_the_probe_is_closed_as_slow() {
        let mut w = start(false);
        assert!(w.handle.answer(frame(40_000)).await);
        assert!(w.handle.answer(frame(40_000)).await);
        assert!(matches!(next(&mut w.written).await, Message::Text(_)));
        assert!(matches!(next(&mut w.written).await, Message::Text(_)));
        match next(&mut w.written).await {
            Message::Ping(payload) => assert_eq!(payload.as_ref(), 1u64.to_be_bytes()),
            other => panic!("expected the probe, got {other:?}"),
        }
        timeout(WITHIN, w.handle.kicked().cancelled())
            .await
            .expect("closed once the probe is overdue");
        assert_eq!(w.handle.kick_reason(), Some(CloseReason::SlowConsumer));
        assert_eq!(close_code(&next(&mut w.written).await), 1013);
        timeout(WITHIN, w.task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_client_that_answers_the_probe_keeps_its_session() {
        let mut w = start(false);
        assert!(w.handle.answer(frame(70_000)).await);
        assert!(matches!(next(&mut w.written).await, Message::Text(_)));
        let Message::Ping(payload) = next(&mut w.written).await else {
            panic!("expected the probe");
        };
        let answered = u64::from_be_bytes(payload.as_ref().try_into().unwrap());
        w.handle
            .pong
            .fetch_max(answered, std::sync::atomic::Ordering::Relaxed);
        w.handle.pong_seen.notify_one();
        let kicked = timeout(PATIENCE * 3, w.handle.kicked().cancelled()).await;
        assert!(kicked.is_err(), "closed: {:?}", w.handle.kick_reason());
        assert!(w.handle.answer(frame(10)).await);
        assert!(matches!(next(&mut w.written).await, Message::Text(_)));
    }

    /// A peer that takes nothing blocks the write: once the patience is
    /// spent the connection is cut, without a close frame that could not
    /// follow half a frame.
    #[tokio::test]
    async fn a_write_blocked_past_the_patience_cuts_the_connection() {
        let mut w = start(true);
        assert!(w.handle.answer(frame(100)).await);
        timeout(WITHIN, w.handle.kicked().cancelled())
            .await
            .expect("cut once the patience is spent");
        assert_eq!(w.handle.kick_reason(), Some(CloseReason::SlowConsumer));
        timeout(WITHIN, w.task).await.unwrap().unwrap();
        assert!(w.written.try_recv().is_err(), "nothing was written");
    }

    #[tokio::test]
    async fn a_draining_session_is_told_to_reconnect() {
        let mut w = start(false);
        w.handle.kick(CloseReason::Shutdown);
        assert_eq!(close_code(&next(&mut w.written).await), 1001);
        timeout(WITHIN, w.task).await.unwrap().unwrap();
    }
}
