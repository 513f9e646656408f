//! The connection's life: the upgrade's token and origin checks, a token
//! expiring mid-session, a new user's token, and slow or dead peers cut off.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use super::two_users;
use crate::helpers::wsclient::WsClient;
use crate::helpers::{Backend, TEST_SECRET, TestApp, eventually, token_for};

#[tokio::test]
async fn the_upgrade_needs_a_valid_token() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let user = app.new_user().await;
    let url = format!("ws://127.0.0.1:{}/api/v1/ws", app.port);
    assert_eq!(WsClient::open(url.clone()).await.err(), Some(401));
    assert_eq!(
        WsClient::try_connect(&app, "garbage", None).await.err(),
        Some(401)
    );
    // Expired a minute ago: past any leeway, with no wait.
    let now = chrono::Utc::now().timestamp();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user.id, "email": user.email, "role": "authenticated",
                "aud": "authenticated", "iat": now - 120, "exp": now - 60}),
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .unwrap();
    let app_strict = TestApp::spawn_with(Backend::Sqlite, &[("JWT_LEEWAY_SECS", "0")]).await;
    assert_eq!(
        WsClient::try_connect(&app_strict, &expired, None)
            .await
            .err(),
        Some(401)
    );

    // The seed's `?token=` form works.
    let mut ws = WsClient::open(format!("{url}?token={}", user.token))
        .await
        .expect("query token");
    ws.assert_usable().await;
}

#[tokio::test]
async fn browsers_must_come_from_an_allowed_origin() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("ALLOWED_ORIGINS", "https://chat.example")],
    )
    .await;
    let user = app.new_user().await;
    assert_eq!(
        WsClient::try_connect(&app, &user.token, Some("https://evil.example"))
            .await
            .err(),
        Some(403)
    );
    assert!(
        WsClient::try_connect(&app, &user.token, Some("https://chat.example"))
            .await
            .is_ok()
    );
    let same_site = format!("http://127.0.0.1:{}", app.port);
    assert!(
        WsClient::try_connect(&app, &user.token, Some(&same_site))
            .await
            .is_ok()
    );
    assert!(
        WsClient::try_connect(&app, &user.token, None).await.is_ok(),
        "non-browser clients send no Origin"
    );
}

#[tokio::test]
async fn an_expiring_token_closes_the_session() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let id = Uuid::now_v7();
    let token = ochat::auth::mint(
        &ochat::config::Secret::new(TEST_SECRET),
        id,
        "short@example.com",
        Duration::from_secs(2),
    );
    let mut ws = WsClient::connect(&app, &token).await;
    ws.assert_usable().await;
    let close = ws.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(
        close.reason.as_str(),
        "token expired: reconnect with a fresh token"
    );
}

/// A client that stops reading is cut off instead of growing the server's
/// memory: its queue is bounded and it is closed with 1013.
#[tokio::test]
async fn a_slow_consumer_is_disconnected() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("SEND_QUEUE", "8"),
            ("SLOW_CONSUMER_TIMEOUT", "500ms"),
            ("RATE_LIMIT_PER_SEC", "100000"),
            ("RATE_LIMIT_BURST", "100000"),
        ],
    )
    .await;
    let (a, b) = two_users(&app).await;
    let mut slow =
        crate::helpers::wsclient::WsClient::connect_with_small_buffer(&app, &b.token).await;
    let mut wa = WsClient::connect(&app, &a.token).await;
    let content = "s".repeat(3900);
    let mut sent = 0;
    while app.state.hub.has(b.id) && sent < 5000 {
        wa.send(json!({"type": "message", "to": b.id, "content": content}))
            .await;
        wa.recv_type("ack").await;
        sent += 1;
    }
    assert!(
        !app.state.hub.has(b.id),
        "the slow session was dropped after {sent} messages"
    );
    assert!(sent < 5000);
    // Now drain what the kernel buffered: the stream ends with the close.
    let close = slow.closed().await;
    if let Some(close) = close {
        assert!([1008, 1013].contains(&u16::from(close.code)), "{close:?}");
    }
    let (_, stats) = app.get("/messages/stats", &b.token).await;
    assert_eq!(
        stats["total_received"], sent,
        "every acked message is stored for a later sync"
    );
}

#[tokio::test]
async fn a_new_user_token_from_ochat_token_connects() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let id = Uuid::now_v7();
    let mut ws = WsClient::connect(&app, &token_for(id, "new@example.com")).await;
    ws.assert_usable().await;
    let (status, me) = app
        .get("/users/me", &token_for(id, "new@example.com"))
        .await;
    assert_eq!(
        (status, me["email"].clone()),
        (200, json!("new@example.com"))
    );
}

/// A peer that stops answering (no pongs, nothing read) is dropped by the
/// server's pings within WS_IDLE_TIMEOUT.
#[tokio::test]
async fn a_dead_peer_is_dropped_by_pings() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("WS_PING_INTERVAL", "100ms"), ("WS_IDLE_TIMEOUT", "500ms")],
    )
    .await;
    let user = app.new_user().await;
    let mut ws = WsClient::connect(&app, &user.token).await;
    ws.assert_usable().await;
    assert!(app.state.hub.has(user.id));
    // The client goes silent: it never reads again, so never pongs.
    let dropped = eventually(Duration::from_secs(5), || async {
        !app.state.hub.has(user.id)
    })
    .await;
    assert!(dropped, "the silent session was dropped");
    drop(ws);
}
