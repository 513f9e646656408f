//! The public listener: accepts TCP connections up to `MAX_CONNECTIONS`,
//! serves HTTP/1.1 and WebSocket upgrades on them with a header-read
//! timeout, and drains them on shutdown.
//!
//! `axum::serve` sets no timer on hyper, so a peer that sends half a
//! request line and then one byte a minute (slowloris) held its connection
//! forever, and enough of them exhausted the file descriptors: the node
//! stopped accepting anyone. Here every connection must deliver a request's
//! headers within `HEADER_READ_TIMEOUT` (also while idle between
//! keep-alive requests), and past `MAX_CONNECTIONS` a new connection is
//! closed at once and counted, instead of waiting in the kernel's backlog.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How the listener protects itself.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Open TCP connections (WebSockets included) this node holds at most.
    pub max_connections: usize,
    /// A request's headers must arrive within this, counted from when the
    /// connection starts waiting for them.
    pub header_read_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` resolves, then asks every
/// connection to finish its request and close, and waits for them.
/// (Upgraded WebSockets are the sessions' to close; they hold their
/// connection slot until they do.)
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    stop: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let draining = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: wait a moment instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            crate::metrics::connection_refused();
            drop(tcp);
            continue;
        };
        // Chat is small frames: no Nagle delay on acks and pushes.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let io = TokioIo::new(Counted::new(tcp, slot));
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(axum::body::Body::new)
            });
        let connection = http
            .serve_connection(io, TowerToHyperService::new(service))
            .with_upgrades();
        let draining = draining.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = draining.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // Refuse new connections at once while the open ones drain.
    drop(listener);
    draining.cancel();
    connections.close();
    connections.wait().await;
}

/// A connection that holds one of the listener's slots until it is
/// dropped, which for a WebSocket is when the session ends.
struct Counted {
    tcp: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Counted {
    fn new(tcp: TcpStream, slot: OwnedSemaphorePermit) -> Self {
        crate::metrics::tcp_connection(1.0);
        Self { tcp, _slot: slot }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        crate::metrics::tcp_connection(-1.0);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}
