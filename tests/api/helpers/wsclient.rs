//! A real WebSocket client for tests.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::TestApp;

/// A presence frame without its `version` (checked to be a positive number),
/// to compare with the seed's shape.
pub fn presence(frame: &Value) -> Value {
    assert!(
        frame["version"].as_u64().is_some_and(|v| v > 0),
        "presence frames carry a version: {frame}"
    );
    let mut frame = frame.clone();
    frame.as_object_mut().expect("an object").remove("version");
    frame
}

/// The protocol as data: `docs/asyncapi.json`'s frame schemas, compiled
/// once. Every frame a test receives is checked against `ServerFrame`, so
/// the document and the wire cannot drift apart.
pub struct Protocol {
    server: jsonschema::Validator,
    client: jsonschema::Validator,
}

impl Protocol {
    pub fn get() -> &'static Protocol {
        static PROTOCOL: std::sync::OnceLock<Protocol> = std::sync::OnceLock::new();
        PROTOCOL.get_or_init(|| {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/asyncapi.json");
            let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let validator = |root: &str| {
                let schema = serde_json::json!({
                    "$ref": format!("#/components/schemas/{root}"),
                    "components": doc["components"],
                });
                jsonschema::options()
                    .should_validate_formats(true)
                    .build(&schema)
                    .expect("docs/asyncapi.json's schemas compile")
            };
            Protocol {
                server: validator("ServerFrame"),
                client: validator("ClientFrame"),
            }
        })
    }

    /// Why `frame` is not a server frame of the document, if it is not.
    pub fn server_errors(&self, frame: &Value) -> Option<String> {
        errors(&self.server, frame)
    }

    /// Why `frame` is not a client frame of the document, if it is not.
    pub fn client_errors(&self, frame: &Value) -> Option<String> {
        errors(&self.client, frame)
    }
}

fn errors(validator: &jsonschema::Validator, frame: &Value) -> Option<String> {
    let errors: Vec<String> = validator
        .iter_errors(frame)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// A text frame from the server, parsed and checked against the protocol
/// document.
fn server_frame(text: &str) -> Value {
    let frame: Value = serde_json::from_str(text).expect("JSON frame");
    if let Some(why) = Protocol::get().server_errors(&frame) {
        panic!("the server sent a frame docs/asyncapi.json does not describe: {frame}\n{why}");
    }
    frame
}

pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How long a test waits for a frame that should come.
pub const WAIT: Duration = Duration::from_secs(5);

impl WsClient {
    pub async fn connect(app: &TestApp, token: &str) -> Self {
        Self::try_connect(app, token, None)
            .await
            .expect("websocket upgrade")
    }

    /// Connects with the token in the Authorization header (and an optional
    /// Origin); returns the HTTP status on refusal.
    pub async fn try_connect(
        app: &TestApp,
        token: &str,
        origin: Option<&str>,
    ) -> Result<Self, u16> {
        Self::try_connect_port(app.port, token, origin).await
    }

    /// Connects to whatever node listens on `port`.
    pub async fn connect_port(port: u16, token: &str) -> Self {
        Self::try_connect_port(port, token, None)
            .await
            .expect("websocket upgrade")
    }

    pub async fn try_connect_port(
        port: u16,
        token: &str,
        origin: Option<&str>,
    ) -> Result<Self, u16> {
        let mut request = format!("ws://127.0.0.1:{port}/api/v1/ws")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("Origin", origin.parse().unwrap());
        }
        Self::open(request).await
    }

    /// Writes a WebSocket upgrade request on a bare TCP connection and
    /// returns it unread: an upgrade the test can abandon (or reset) while
    /// the node is still deciding.
    pub async fn raw_upgrade(port: u16, token: &str) -> TcpStream {
        use tokio::io::AsyncWriteExt;
        let request = format!(
            "GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        tcp
    }

    pub async fn open(request: impl IntoClientRequest + Unpin) -> Result<Self, u16> {
        match tokio_tungstenite::connect_async(request).await {
            Ok((stream, _)) => Ok(Self { stream }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.stream
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send frame");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("send frame");
    }

    /// Sends a text frame; `false` when the connection is gone (a hostile
    /// client's sockets are cut, and it comes back).
    pub async fn try_send_text(&mut self, text: &str) -> bool {
        self.stream.send(Message::Text(text.into())).await.is_ok()
    }

    /// The next JSON frame; panics after `WAIT` or on close.
    pub async fn recv(&mut self) -> Value {
        loop {
            let next = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a frame within the wait")
                .expect("socket open")
                .expect("frame");
            match next {
                Message::Text(text) => return server_frame(&text),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next JSON frame if one comes within `wait`; panics on close.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Some(server_frame(&text));
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("the socket ended: {other:?}"),
            }
        }
    }

    /// The next frame of `kind`, skipping frames of other kinds; an
    /// unexpected `error` fails the test.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
            assert_ne!(frame["type"], "error", "expected {kind}, got {frame}");
        }
    }

    /// The next frame of any of `kinds`, skipping others (presence, copies
    /// of a user's own messages).
    pub async fn recv_type_of(&mut self, kinds: &[&str]) -> Value {
        loop {
            let frame = self.recv().await;
            if kinds.iter().any(|k| frame["type"] == *k) {
                return frame;
            }
        }
    }

    /// Asserts no text frame arrives within `wait`.
    pub async fn silent_for(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Asserts no frame of `kind` arrives within `wait` (others may).
    pub async fn none_of_type_for(&mut self, kind: &str, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(text)))) => {
                    let frame = server_frame(&text);
                    assert_ne!(frame["type"], kind, "expected no {kind}, got {frame}");
                }
                Ok(Some(Ok(_))) => continue,
                Ok(other) => panic!("the socket ended: {other:?}"),
            }
        }
    }

    /// Round trip that proves the connection still works.
    pub async fn assert_usable(&mut self) {
        self.send(serde_json::json!({"type": "ping"})).await;
        assert_eq!(
            self.recv_type("pong").await,
            serde_json::json!({"type": "pong"})
        );
    }

    /// Waits for the server's close frame.
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(15), self.stream.next())
                .await
                .expect("the server closes the socket in time");
            match next {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

impl WsClient {
    /// A client whose socket receive buffer is tiny, so a server writing to
    /// it blocks quickly once the client stops reading.
    pub async fn connect_with_small_buffer(app: &TestApp, token: &str) -> Self {
        Self::connect_port_with_small_buffer(app.port, token).await
    }

    pub async fn connect_port_with_small_buffer(port: u16, token: &str) -> Self {
        Self::try_connect_port_with_small_buffer(port, token)
            .await
            .expect("websocket upgrade")
    }

    /// `None` when the connection or the upgrade is refused.
    pub async fn try_connect_port_with_small_buffer(port: u16, token: &str) -> Option<Self> {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.set_recv_buffer_size(4096).ok()?;
        let tcp = socket
            .connect(format!("127.0.0.1:{port}").parse().ok()?)
            .await
            .ok()?;
        let mut request = format!("ws://127.0.0.1:{port}/api/v1/ws")
            .into_client_request()
            .ok()?;
        request
            .headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().ok()?);
        let (stream, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp))
            .await
            .ok()?;
        Some(Self { stream })
    }
}
