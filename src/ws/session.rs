//! One WebSocket connection: a reader loop that answers client frames and a
//! writer loop that drains the session's bounded queue, joined by that
//! queue. Bus events (and catch-up) reach the queue through the hub.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::future::OptionFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tracing::Instrument;
use uuid::Uuid;

use super::admit::{Admitted, Charge, Refusals, admit};
use super::handle::{CloseReason, Outbound, SessionHandle};
use super::hub::Registered;
use super::join::Joined;
use super::writer;
use crate::auth::AuthUser;
use crate::bus::SessionId;
use crate::chat::Outgoing;
use crate::error::{ApiError, ErrorCode};
use crate::protocol::{ClientFrame, MessageFrame, SendFrame, ServerFrame, SyncFrom};
use crate::state::AppState;
use crate::store::Entry;

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
        writer::close(&mut sink, CloseReason::TooManySessions).await;
        crate::metrics::connection_closed(CloseReason::TooManySessions.label());
        return;
    }
    crate::metrics::sessions(1.0);
    tracing::debug!("session opened");

    let writer = tokio::spawn(
        writer::write_loop(
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
async fn read_loop<St>(
    mut stream: St,
    state: &AppState,
    user: &AuthUser,
    handle: &SessionHandle,
) -> CloseReason
where
    St: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
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
                        match refusals.charge(&state.budgets, user.id, "ws_ping", None, false) {
                            Charge::Refused(answer) => answer,
                            Charge::Admitted => continue,
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        match refusals.charge(&state.budgets, user.id, "binary", None, false) {
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
            Outgoing {
                to: f.to,
                content: &f.content,
                client_id: f.client_id.as_deref(),
                reply_to: f.reply_to,
                attachments: &f.attachments,
            },
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
        ClientFrame::Sync { from, limit } => {
            // One answer (up to 100 messages of 4,000 characters: megabytes
            // of JSON) in memory at a time, however fast a client asks.
            if !handle.sync_left().await {
                return None;
            }
            sync(state, user, from, limit).await
        }
        ClientFrame::Change {
            message_id,
            kind,
            client_id,
        } => Some(
            match chat
                .change(
                    user.id,
                    Some(handle.id),
                    message_id,
                    kind,
                    client_id.as_deref(),
                )
                .await
            {
                Ok(changed) => {
                    if let Some(id) = changed.change_id() {
                        handle.acked(id);
                    }
                    ServerFrame::Ack {
                        client_id,
                        id: message_id,
                        timestamp: changed.at(),
                    }
                }
                Err(e) => ServerFrame::error(e, client_id),
            },
        ),
    }
}

async fn sync(
    state: &AppState,
    user: &AuthUser,
    from: SyncFrom,
    limit: Option<u32>,
) -> Option<ServerFrame> {
    Some(match state.chat.sync(user.id, from, limit).await {
        Ok((page, cursor)) => {
            let (mut messages, mut changes) = (Vec::new(), Vec::new());
            for entry in &page.items {
                match entry {
                    Entry::Message(s) => messages.push(MessageFrame::from(s)),
                    Entry::Change { .. } => changes.push(ServerFrame::entry(entry)),
                }
            }
            ServerFrame::Sync {
                messages,
                changes,
                has_more: page.has_more,
                cursor,
            }
        }
        Err(e) => ServerFrame::error(e, None),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::stream;

    use super::*;
    use crate::app::Application;
    use crate::config::Config;
    use crate::ws::handle::SessionHandle;

    /// The reader, fed from a stream instead of a socket: a client that
    /// keeps sending past its refusals is not read on until its budget has
    /// room (here: not for a quarter of an hour), so what it sent stays
    /// unread however much it is.
    #[tokio::test]
    async fn a_flood_past_its_refusals_is_left_unread() {
        let dir = tempfile::tempdir().unwrap();
        let database = format!("sqlite://{}", dir.path().join("ochat.db").display());
        let config = Config::from_vars([
            ("DATABASE_URL", database.as_str()),
            ("JWT_SECRET", "unit-test-secret-0123456789abcdef0123"),
            ("SERVER_PORT", "0"),
            ("RATE_LIMIT_PER_SEC", "0.001"),
            ("RATE_LIMIT_BURST", "5"),
        ])
        .unwrap();
        let app = Application::build(config).await.unwrap();
        let state = app.state().clone();
        let user = AuthUser {
            id: Uuid::now_v7(),
            email: "flood@example.com".into(),
            expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
        };
        let (queue, mut answers) = tokio::sync::mpsc::channel(64);
        let handle = SessionHandle::new(SessionId::new(), user.id, queue, 1 << 20);

        let read = AtomicUsize::new(0);
        let typing = format!(
            r#"{{"type":"typing","to":"{}","is_typing":true}}"#,
            Uuid::now_v7()
        );
        let flood = stream::iter((0..1000).map(|_| Ok(Message::Text(typing.clone().into()))))
            .inspect(|_| {
                read.fetch_add(1, Ordering::Relaxed);
            })
            .chain(stream::pending());
        let reading = tokio::time::timeout(
            Duration::from_secs(1),
            read_loop(Box::pin(flood), &state, &user, &handle),
        );
        assert!(reading.await.is_err(), "the reader is still waiting");

        let read = read.load(Ordering::Relaxed);
        assert!(
            (70..=80).contains(&read),
            "the burst, the refusals before the pause and no more: {read} of 1000 read"
        );
        let mut codes = Vec::new();
        while let Ok(answer) = answers.try_recv() {
            let frame: serde_json::Value = serde_json::from_slice(&answer.frame).unwrap();
            codes.extend(frame["code"].as_str().map(str::to_owned));
        }
        let refusals = codes.iter().filter(|c| *c == "rate_limited").count();
        assert_eq!(
            refusals, 1,
            "one rate_limited for the whole burst: {codes:?}"
        );
    }
}
