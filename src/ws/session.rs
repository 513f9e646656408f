//! One WebSocket connection: a reader loop that answers client frames and a
//! writer loop that drains the session's bounded queue, joined by that
//! queue. Bus events (and catch-up) reach the queue through the hub.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::future::OptionFuture;
use futures_util::stream::{FuturesUnordered, SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tracing::Instrument;
use uuid::Uuid;

use super::admit::{Admitted, Charge, Refusals, admit};
use super::handle::{CloseReason, Outbound, SessionHandle};
use super::hub::Registered;
use super::join::Joined;
use super::probe::Probe;
use crate::auth::AuthUser;
use crate::bus::SessionId;
use crate::error::{ApiError, ErrorCode};
use crate::protocol::{ClientFrame, MessageFrame, SendFrame, ServerFrame};
use crate::state::AppState;

pub async fn run(socket: WebSocket, state: AppState, user: AuthUser, joined: Joined) {
    let id = joined.handle.id;
    let span = tracing::info_span!("ws", node = %state.config.node_id, user = %user.id, conn = %id);
    // Tracked, so a draining node waits for its sessions to close.
    let tasks = state.tasks.clone();
    tasks
        .track_future(session(socket, state, user, joined).instrument(span))
        .await
}

async fn session(socket: WebSocket, state: AppState, user: AuthUser, joined: Joined) {
    crate::metrics::connection_opened();
    let limits = &state.config.limits;
    let (registered, subscribed) = (joined.registered, joined.subscribed);
    let (handle, rx) = joined.open();
    let id = handle.id;
    let (mut sink, stream) = socket.split();

    if registered == Registered::TooMany {
        close(&mut sink, CloseReason::TooManySessions).await;
        crate::metrics::connection_closed(CloseReason::TooManySessions.label());
        return;
    }
    crate::metrics::sessions(1.0);
    tracing::debug!("session opened");

    let writer = tokio::spawn(
        write_loop(
            sink,
            rx,
            handle.clone(),
            limits.ping_interval,
            limits.slow_consumer_timeout,
        )
        .in_current_span(),
    );
    // Subscribing and announcing run beside the reader: no frame (and no
    // ack) ever waits on Redis. Whatever is published for this user before
    // the subscription is live is caught up from storage.
    let (ended, ()) = tokio::join!(
        read_loop(stream, &state, &user, &handle),
        Box::pin(announce(
            &state,
            user.id,
            id,
            registered == Registered::First && !subscribed
        )),
    );
    handle.kick(ended);

    if state.hub.unregister(user.id, id) {
        // Not worth waiting long for: a stale subscription only costs
        // ignored events, and the bus reconciles it with the hub.
        match timeout(Duration::from_secs(1), state.bus.interest_changed(user.id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "unsubscribe failed"),
            Err(_) => tracing::debug!("unsubscribe pending"),
        }
    }
    crate::metrics::sessions(-1.0);
    Box::pin(state.chat.session_closed(user.id, id)).await;
    let _ = writer.await;
    let reason = handle.kick_reason().unwrap_or(ended);
    tracing::debug!(reason = reason.label(), "session closed");
    crate::metrics::connection_closed(reason.label());
}

/// Subscribes the user's channel (for their first session here, unless it
/// was subscribed before the socket opened) and tells presence the session
/// is live. The cursor's floor was read before the socket opened, so a
/// message committed before the subscription is confirmed is caught up.
async fn announce(state: &AppState, user: Uuid, session: SessionId, subscribe: bool) {
    if subscribe {
        super::join::subscribe(state, user).await;
    }
    state.chat.session_opened(user, session).await;
}

/// Frames other than sends waiting to be answered; past this the reader
/// stops reading until they are.
const MAX_QUEUED_FRAMES: usize = 32;

type Answer<'a> = Pin<Box<dyn Future<Output = Option<ServerFrame>> + Send + 'a>>;

/// What woke the reader.
enum Event {
    Closed(CloseReason),
    Answered(Option<ServerFrame>),
    /// The in-order answer finished.
    InOrderDone(Option<ServerFrame>),
    Frame(Option<Result<Message, axum::Error>>),
    /// A pause in reading (a client flooding past its budget) is over.
    Resumed,
}

/// Reads client frames until the connection ends; returns why.
///
/// Sends are committed concurrently (up to `MAX_IN_FLIGHT`), so a slow
/// commit holds up only the sends in its batch; each ack names its
/// `client_id` and goes out when its commit is done. Every other frame is
/// answered in the order it came, one at a time.
async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    state: &AppState,
    user: &AuthUser,
    handle: &SessionHandle,
) -> CloseReason {
    let limits = &state.config.limits;
    let until_expiry = (user.expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    let expiry = sleep(until_expiry);
    tokio::pin!(expiry);
    let mut last_heard = Instant::now();
    // Made on the first send: an empty `FuturesUnordered` already holds two
    // allocations, and most connections spend most of their life idle.
    let mut sends: Option<FuturesUnordered<Answer<'_>>> = None;
    let mut in_order: VecDeque<ClientFrame> = VecDeque::new();
    let mut answering: Option<Answer<'_>> = None;
    let mut refusals = Refusals::default();
    loop {
        if answering.is_none()
            && let Some(frame) = in_order.pop_front()
        {
            answering = Some(Box::pin(answer(state, user, handle, frame)));
        }
        let in_flight = sends.as_ref().map_or(0, FuturesUnordered::len);
        let paused = refusals.resume_at();
        let can_read = paused.is_none()
            && in_flight < limits.max_in_flight
            && in_order.len() < MAX_QUEUED_FRAMES;
        let event = tokio::select! {
            () = handle.kicked().cancelled() => Event::Closed(handle.kick_reason().unwrap_or(CloseReason::Shutdown)),
            () = &mut expiry => Event::Closed(CloseReason::TokenExpired),
            () = sleep_until(last_heard + limits.idle_timeout) => Event::Closed(CloseReason::IdleTimeout),
            Some(reply) = next_answer(&mut sends), if in_flight > 0 => Event::Answered(reply),
            Some(reply) = OptionFuture::from(answering.as_mut()), if answering.is_some() => Event::InOrderDone(reply),
            frame = stream.next(), if can_read => Event::Frame(frame),
            () = sleep_until(paused.unwrap_or_else(Instant::now)), if paused.is_some() => Event::Resumed,
        };
        let reply = match event {
            Event::Closed(reason) => return reason,
            Event::Resumed => {
                refusals.resume();
                continue;
            }
            Event::Answered(reply) => reply,
            Event::InOrderDone(reply) => {
                answering = None;
                reply
            }
            Event::Frame(frame) => {
                last_heard = Instant::now();
                match frame {
                    None | Some(Ok(Message::Close(_))) => return CloseReason::ClientGone,
                    Some(Err(e)) => {
                        // tungstenite reports an oversized frame as a
                        // capacity error, and a text frame that is not
                        // UTF-8 as an encoding error.
                        let error = e.to_string();
                        if error.contains("Space limit exceeded") {
                            return CloseReason::FrameTooLarge;
                        }
                        if error.contains("UTF-8") {
                            return CloseReason::InvalidUtf8;
                        }
                        return CloseReason::ClientGone;
                    }
                    Some(Ok(Message::Pong(payload))) => {
                        if let Ok(probe) = <[u8; 8]>::try_from(payload.as_ref()) {
                            handle
                                .pong
                                .fetch_max(u64::from_be_bytes(probe), AtomicOrdering::Relaxed);
                            handle.pong_seen.notify_one();
                        }
                        continue;
                    }
                    Some(Ok(Message::Ping(_))) => {
                        // Answered by the WebSocket layer itself; charged
                        // like any frame.
                        match refusals.charge(state, user, "ws_ping", None, false) {
                            Charge::Refused(answer) => answer,
                            Charge::Admitted => continue,
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        match refusals.charge(state, user, "binary", None, false) {
                            Charge::Refused(answer) => answer,
                            Charge::Admitted => Some(ServerFrame::error(
                                ApiError::new(
                                    ErrorCode::InvalidJson,
                                    "binary frames are not supported; send JSON text frames",
                                ),
                                None,
                            )),
                        }
                    }
                    Some(Ok(Message::Text(text))) => {
                        if text.len() > limits.max_frame_bytes {
                            return CloseReason::FrameTooLarge;
                        }
                        match admit(state, user, &text, &mut refusals) {
                            Admitted::Reply(reply) => reply,
                            Admitted::Send(send) => {
                                sends
                                    .get_or_insert_with(FuturesUnordered::new)
                                    .push(Box::pin(send_message(state, user, handle, send)));
                                None
                            }
                            Admitted::InOrder(frame) => {
                                in_order.push_back(frame);
                                None
                            }
                        }
                    }
                }
            }
        };
        if let Some(reply) = reply {
            let outbound = Box::new(Outbound {
                kind: reply.kind(),
                frame: reply.to_json(),
                published_at_micros: None,
            });
            // Waiting here (for room in bytes, then in frames) is the
            // backpressure a client's own requests get: it stops reading.
            if !handle.answer(outbound).await {
                return handle.kick_reason().unwrap_or(CloseReason::ClientGone);
            }
        }
    }
}

/// The next finished send, if any are in flight.
async fn next_answer<'a>(
    sends: &mut Option<FuturesUnordered<Answer<'a>>>,
) -> Option<Option<ServerFrame>> {
    match sends {
        Some(sends) => sends.next().await,
        None => None,
    }
}

async fn send_message(
    state: &AppState,
    user: &AuthUser,
    handle: &SessionHandle,
    f: SendFrame,
) -> Option<ServerFrame> {
    let sent = state
        .chat
        .send(
            user.id,
            Some(handle.id),
            f.to,
            &f.content,
            f.client_id.as_deref(),
        )
        .await;
    Some(match sent {
        Ok(m) => {
            handle.acked(m.id);
            ServerFrame::Ack {
                client_id: f.client_id,
                id: m.id,
                timestamp: m.created_at,
            }
        }
        Err(e) => ServerFrame::error(e, f.client_id),
    })
}

/// The answer to a frame other than a send (if any).
async fn answer(
    state: &AppState,
    user: &AuthUser,
    handle: &SessionHandle,
    frame: ClientFrame,
) -> Option<ServerFrame> {
    let chat = &state.chat;
    match frame {
        ClientFrame::Message(_) | ClientFrame::Ping => None,
        ClientFrame::MarkRead { message_id } => chat
            .mark_one_read(user.id, message_id)
            .await
            .err()
            .map(|e| ServerFrame::error(e, None)),
        ClientFrame::Typing { to, is_typing } => chat
            .typing(user.id, to, is_typing)
            .await
            .err()
            .map(|e| ServerFrame::error(e, None)),
        ClientFrame::Sync { since, limit } => {
            // One answer (up to 100 messages of 4,000 characters: megabytes
            // of JSON) in memory at a time, however fast a client asks.
            if !handle.sync_left().await {
                return None;
            }
            sync(state, user, since, limit).await
        }
    }
}

async fn sync(
    state: &AppState,
    user: &AuthUser,
    since: Option<Uuid>,
    limit: Option<u32>,
) -> Option<ServerFrame> {
    Some(match state.chat.sync(user.id, since, limit).await {
        Ok(page) => ServerFrame::Sync {
            messages: page.items.iter().map(MessageFrame::from).collect(),
            has_more: page.has_more,
        },
        Err(e) => ServerFrame::error(e, None),
    })
}

/// Drains the queue to the socket and pings on a timer. A client that falls
/// more than `SLOW_CONSUMER_TIMEOUT` behind (a write blocked that long, or a
/// probe unanswered that long) is closed.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Box<Outbound>>,
    handle: Arc<SessionHandle>,
    ping_every: Duration,
    patience: Duration,
) {
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
async fn write(
    sink: &mut SplitSink<WebSocket, Message>,
    message: Message,
    probe: &mut Probe,
    handle: &SessionHandle,
    patience: Duration,
) -> Wrote {
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

async fn close(sink: &mut SplitSink<WebSocket, Message>, reason: CloseReason) {
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
