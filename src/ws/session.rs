//! One WebSocket connection: a reader loop that answers client frames and a
//! writer loop that drains the session's bounded queue, joined by that
//! queue. Bus events reach the queue through the hub.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tracing::Instrument;

use super::hub::{CloseReason, Outbound, Registered, SessionHandle};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::bus::SessionId;
use crate::config::Limits;
use crate::error::{ApiError, ErrorCode};
use crate::protocol::{ClientFrame, MessageFrame, ServerFrame};

/// Per-connection token bucket for `message` and `typing`.
struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            rate,
            burst: f64::from(burst),
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub async fn run(socket: WebSocket, state: AppState, user: AuthUser, id: SessionId) {
    let span = tracing::info_span!("ws", node = %state.config.node_id, user = %user.id, conn = %id);
    // Tracked, so a draining node waits for its sessions to close.
    let tasks = state.tasks.clone();
    tasks
        .track_future(session(socket, state, user, id).instrument(span))
        .await
}

async fn session(socket: WebSocket, state: AppState, user: AuthUser, id: SessionId) {
    crate::metrics::connection_opened();
    let limits = state.config.limits.clone();
    let (queue, rx) = mpsc::channel(limits.send_queue);
    let handle = Arc::new(SessionHandle::new(id, user.id, queue.clone()));
    let (mut sink, stream) = socket.split();

    match state
        .hub
        .register(handle.clone(), limits.max_sessions_per_user)
    {
        Registered::TooMany => {
            close(&mut sink, CloseReason::TooManySessions).await;
            crate::metrics::connection_closed(CloseReason::TooManySessions.label());
            return;
        }
        Registered::First => {
            if let Err(e) = state.bus.interest_changed(user.id).await {
                tracing::warn!(error = %e, "subscribe failed; the session catches up by sync");
            }
        }
        Registered::Another => {}
    }
    crate::metrics::sessions(1.0);
    tracing::debug!("session opened");
    Box::pin(state.chat.session_opened(user.id, id)).await;

    let writer = tokio::spawn(write_loop(sink, rx, handle.clone(), limits).in_current_span());
    let ended = read_loop(stream, &state, &user, &handle, queue).await;
    handle.kick(ended);

    if state.hub.unregister(user.id, id)
        && let Err(e) = state.bus.interest_changed(user.id).await
    {
        tracing::warn!(error = %e, "unsubscribe failed");
    }
    crate::metrics::sessions(-1.0);
    Box::pin(state.chat.session_closed(user.id, id)).await;
    let _ = writer.await;
    let reason = handle.kick_reason().unwrap_or(ended);
    tracing::debug!(reason = reason.label(), "session closed");
    crate::metrics::connection_closed(reason.label());
}

/// Reads client frames until the connection ends; returns why.
async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    state: &AppState,
    user: &AuthUser,
    handle: &SessionHandle,
    queue: mpsc::Sender<Outbound>,
) -> CloseReason {
    let limits = &state.config.limits;
    let mut bucket = TokenBucket::new(limits.rate_per_sec, limits.rate_burst);
    let until_expiry = (user.expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    let expiry = sleep(until_expiry);
    tokio::pin!(expiry);
    let mut last_heard = Instant::now();
    loop {
        let frame = tokio::select! {
            () = handle.kicked().cancelled() => return handle.kick_reason().unwrap_or(CloseReason::Shutdown),
            () = &mut expiry => return CloseReason::TokenExpired,
            () = sleep_until(last_heard + limits.idle_timeout) => return CloseReason::IdleTimeout,
            frame = stream.next() => frame,
        };
        last_heard = Instant::now();
        let reply = match frame {
            None | Some(Ok(Message::Close(_))) => return CloseReason::ClientGone,
            Some(Err(e)) => {
                // tungstenite reports an oversized frame as a capacity error.
                if e.to_string().contains("Space limit exceeded") {
                    return CloseReason::FrameTooLarge;
                }
                return CloseReason::ClientGone;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Binary(_))) => Some(ServerFrame::error(
                ApiError::new(
                    ErrorCode::InvalidJson,
                    "binary frames are not supported; send JSON text frames",
                ),
                None,
            )),
            Some(Ok(Message::Text(text))) => {
                if text.len() > limits.max_frame_bytes {
                    return CloseReason::FrameTooLarge;
                }
                // Boxed: the answer's future is large and lives only while a
                // frame is handled, so an idle session's task stays small.
                Box::pin(answer(state, user, handle.id, &mut bucket, &text)).await
            }
        };
        if let Some(reply) = reply {
            let outbound = Outbound {
                kind: reply.kind(),
                frame: reply.to_json(),
                published_at_micros: None,
            };
            // Waiting here is the backpressure a client's own requests get.
            if queue.send(outbound).await.is_err() {
                return CloseReason::ClientGone;
            }
        }
    }
}

/// What the server answers to one client frame (if anything).
async fn answer(
    state: &AppState,
    user: &AuthUser,
    session: SessionId,
    bucket: &mut TokenBucket,
    text: &str,
) -> Option<ServerFrame> {
    let frame = match ClientFrame::parse(text) {
        Ok(frame) => frame,
        Err(e) => return Some(ServerFrame::error(e.error, e.client_id)),
    };
    crate::metrics::frame_in(frame.kind());
    let chat = &state.chat;
    let rate_limited = |kind: &'static str| {
        crate::metrics::rate_limited(kind);
        ApiError::new(ErrorCode::RateLimited, "too many messages; slow down")
    };
    match frame {
        ClientFrame::Message(f) => {
            if !bucket.take() {
                return Some(ServerFrame::error(rate_limited("message"), f.client_id));
            }
            match chat
                .send(
                    user.id,
                    Some(session),
                    f.to,
                    &f.content,
                    f.client_id.as_deref(),
                )
                .await
            {
                Ok(m) => Some(ServerFrame::Ack {
                    client_id: f.client_id,
                    id: m.id,
                    timestamp: m.created_at,
                }),
                Err(e) => Some(ServerFrame::error(e, f.client_id)),
            }
        }
        ClientFrame::Ping => Some(ServerFrame::Pong),
        ClientFrame::MarkRead { message_id } => chat
            .mark_one_read(user.id, message_id)
            .await
            .err()
            .map(|e| ServerFrame::error(e, None)),
        ClientFrame::Typing { to, is_typing } => {
            if !bucket.take() {
                return Some(ServerFrame::error(rate_limited("typing"), None));
            }
            chat.typing(user.id, to, is_typing)
                .await
                .err()
                .map(|e| ServerFrame::error(e, None))
        }
        ClientFrame::Sync { since, limit } => match chat.sync(user.id, since, limit).await {
            Ok(page) => Some(ServerFrame::Sync {
                messages: page.items.iter().map(MessageFrame::from).collect(),
                has_more: page.has_more,
            }),
            Err(e) => Some(ServerFrame::error(e, None)),
        },
    }
}

/// Drains the queue to the socket and pings on a timer. A write that
/// cannot finish within `SLOW_CONSUMER_TIMEOUT` closes the session.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outbound>,
    handle: Arc<SessionHandle>,
    limits: Limits,
) {
    let mut ping =
        tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
    loop {
        let message = tokio::select! {
            biased;
            () = handle.kicked().cancelled() => break,
            _ = ping.tick() => Message::Ping(Default::default()),
            out = rx.recv() => match out {
                Some(out) => {
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
        match timeout(limits.slow_consumer_timeout, sink.send(message)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                handle.kick(CloseReason::ClientGone);
                break;
            }
            Err(_) => {
                crate::metrics::slow_consumer();
                handle.kick(CloseReason::SlowConsumer);
                break;
            }
        }
    }
    if let Some(reason) = handle.kick_reason() {
        close(&mut sink, reason).await;
    }
}

async fn close(sink: &mut SplitSink<WebSocket, Message>, reason: CloseReason) {
    if let Some((code, text)) = reason.close_frame() {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(text),
        };
        let _ = timeout(
            Duration::from_secs(1),
            sink.send(Message::Close(Some(frame))),
        )
        .await;
    }
}
