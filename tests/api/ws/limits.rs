//! Bad input and limits: every bad frame with its code and nothing stored,
//! oversized frames, the shared rate limit, and the per-user session cap.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::{stored_count, two_users};
use crate::both_backends;
use crate::helpers::wsclient::WsClient;
use crate::helpers::{Backend, TestApp};

both_backends!(
    every_bad_frame_gets_its_code_and_stores_nothing,
    an_oversized_frame_closes_with_1009,
    a_flood_is_rate_limited_and_the_connection_kept,
    a_refused_burst_is_answered_once_but_every_message_hears_back,
);

async fn every_bad_frame_gets_its_code_and_stores_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = two_users(&app).await;
    // Make a received message exist, to mark and sync against.
    let theirs = app.send(&b, &a, "to a").await;
    let mine_before = stored_count(&app, &a).await;
    let mut wa = WsClient::connect(&app, &a.token).await;

    let long_client_id = "x".repeat(65);
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "invalid_json"),
        ("[1, 2, 3]".into(), "invalid_json"),
        (json!({"type": "dance"}).to_string(), "unknown_type"),
        (json!({"content": "no type"}).to_string(), "invalid_field"),
        (json!({"type": 7}).to_string(), "invalid_field"),
        (
            json!({"type": "message", "content": "no recipient"}).to_string(),
            "invalid_field",
        ),
        (
            json!({"type": "message", "to": "bob", "content": "x"}).to_string(),
            "invalid_field",
        ),
        (
            json!({"type": "message", "to": b.id, "content": 42}).to_string(),
            "invalid_field",
        ),
        (
            json!({"type": "message", "to": b.id, "content": "x", "client_id": long_client_id})
                .to_string(),
            "invalid_field",
        ),
        (
            json!({"type": "message", "to": b.id, "content": "x", "client_id": ""}).to_string(),
            "invalid_field",
        ),
        (
            json!({"type": "message", "to": a.id, "content": "to myself"}).to_string(),
            "invalid_field",
        ),
        (
            json!({"type": "message", "to": b.id, "content": " \n\t "}).to_string(),
            "content_empty",
        ),
        (
            json!({"type": "message", "to": b.id, "content": "nul \u{0} inside"}).to_string(),
            "invalid_field",
        ),
        (
            json!({"type": "message", "to": b.id, "content": "y".repeat(4001)}).to_string(),
            "content_too_long",
        ),
        (
            json!({"type": "message", "to": Uuid::now_v7(), "content": "hello?"}).to_string(),
            "recipient_not_found",
        ),
        (
            json!({"type": "typing", "to": b.id, "is_typing": "yes"}).to_string(),
            "invalid_field",
        ),
        (
            json!({"type": "typing", "to": Uuid::now_v7(), "is_typing": true}).to_string(),
            "recipient_not_found",
        ),
        (
            json!({"type": "mark_read", "message_id": "nope"}).to_string(),
            "invalid_field",
        ),
        (
            json!({"type": "mark_read", "message_id": Uuid::now_v7()}).to_string(),
            "not_found",
        ),
        (
            json!({"type": "sync", "since": Uuid::now_v7()}).to_string(),
            "not_found",
        ),
        (
            json!({"type": "sync", "limit": -5}).to_string(),
            "invalid_field",
        ),
    ];
    for (text, code) in &cases {
        wa.send_text(text).await;
        let error = wa.recv_type("error").await;
        assert_eq!(error["code"], *code, "{text} → {error}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
        wa.assert_usable().await;
    }

    // A failed send echoes its client_id so the client can match it.
    wa.send(json!({"type": "message", "to": b.id, "content": "", "client_id": "k9"}))
        .await;
    assert_eq!(
        wa.recv_type("error").await,
        json!({"type": "error", "code": "content_empty", "message": "content is empty", "client_id": "k9"})
    );

    // The sender cannot mark their own message read.
    let mine = app.send(&a, &b, "mine").await;
    wa.send(json!({"type": "mark_read", "message_id": mine.id}))
        .await;
    assert_eq!(wa.recv_type("error").await["code"], "forbidden");
    // Typing to someone who shares no conversation is refused.
    let stranger = app.new_user().await;
    wa.send(json!({"type": "typing", "to": stranger.id, "is_typing": true}))
        .await;
    assert_eq!(wa.recv_type("error").await["code"], "forbidden");

    // Binary frames are refused, the connection stays.
    wa.stream
        .send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(wa.recv_type("error").await["code"], "invalid_json");
    wa.assert_usable().await;

    assert_eq!(
        stored_count(&app, &a).await,
        mine_before + 1,
        "only the one valid send was stored"
    );
    let (_, stats) = app.get("/messages/stats", &a.token).await;
    assert_eq!(
        stats["unread"], 1,
        "the failed mark_read changed nothing: {}",
        theirs.id
    );
}

async fn an_oversized_frame_closes_with_1009(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("MAX_FRAME_BYTES", "1024")]).await;
    let (a, b) = two_users(&app).await;
    let mut wa = WsClient::connect(&app, &a.token).await;
    wa.send(json!({"type": "message", "to": b.id, "content": "z".repeat(2000)}))
        .await;
    let close = wa.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1009);
    assert_eq!(stored_count(&app, &a).await, 0);
}

/// A user's budget is shared by all their sockets (and REST): two sockets
/// flooding together get one burst between them, the rest is refused with
/// `rate_limited` naming each frame's `client_id`, and the sockets stay
/// usable once the budget refills.
async fn a_flood_is_rate_limited_and_the_connection_kept(backend: Backend) {
    let app = TestApp::with_tight_budget(backend, 8).await;
    let (a, b) = two_users(&app).await;
    // Three of the eight: creating the user and two upgrades.
    let mut first = WsClient::connect(&app, &a.token).await;
    let mut second = WsClient::connect(&app, &a.token).await;
    for i in 0..12 {
        let ws = if i % 2 == 0 { &mut first } else { &mut second };
        ws.send(json!({"type": "message", "to": b.id, "content": "flood", "client_id": format!("f{i}")})).await;
    }
    let (mut acks, mut limited) = (0, 0);
    for i in 0..12 {
        let ws = if i % 2 == 0 { &mut first } else { &mut second };
        let frame = ws.recv_type_of(&["ack", "error"]).await;
        match frame["type"].as_str() {
            Some("ack") => acks += 1,
            Some("error") => {
                assert_eq!(
                    frame,
                    json!({"type": "error", "code": "rate_limited", "message": "too many frames; slow down", "client_id": frame["client_id"]}),
                );
                assert!(frame["client_id"].is_string(), "{frame}");
                limited += 1;
            }
            _ => panic!("unexpected {frame}"),
        }
    }
    assert!(
        (5..=6).contains(&acks),
        "one burst for both sockets: {acks}"
    );
    assert_eq!(acks + limited, 12);
    // REST shares the budget: spent, it answers 429 with Retry-After.
    let response = app
        .http
        .get(format!("{}/messages/stats", app.base))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    // Waits for the budget to refill at 1/s (the rule under test), for the REST read below.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(stored_count(&app, &a).await, acks);
    // Waits for the budget to refill at 1/s again (the rule under test), for the ping.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    first.assert_usable().await;
}

/// Past the budget, frames nobody waits on an answer to (WebSocket pings,
/// typing, invalid JSON) get one `rate_limited` for the whole burst, not one
/// each: a flood is not answered frame by frame. A `ping`, a `sync` and a
/// message (with its `client_id` or without) each still hear back.
async fn a_refused_burst_is_answered_once_but_every_message_hears_back(backend: Backend) {
    let app = TestApp::with_tight_budget(backend, 6).await;
    let (a, b) = two_users(&app).await;
    let mut wa = WsClient::connect(&app, &a.token).await;
    let limited =
        json!({"type": "error", "code": "rate_limited", "message": "too many frames; slow down"});
    for _ in 0..10 {
        wa.stream
            .send(Message::Ping(b"are you there".to_vec().into()))
            .await
            .unwrap();
    }
    let mut answers = Vec::new();
    while let Some(frame) = wa.next_within(Duration::from_millis(300)).await {
        answers.push(frame);
    }
    assert_eq!(
        answers,
        std::slice::from_ref(&limited),
        "one refusal for the burst"
    );
    for _ in 0..10 {
        wa.send(json!({"type": "typing", "to": b.id, "is_typing": true}))
            .await;
        wa.send_text("{not json").await;
    }
    for frame in [
        json!({"type": "ping"}),
        json!({"type": "sync"}),
        json!({"type": "message", "to": b.id, "content": "refused", "client_id": "m1"}),
        json!({"type": "message", "to": b.id, "content": "refused"}),
    ] {
        wa.send(frame).await;
    }
    let mut answers = Vec::new();
    while let Some(frame) = wa.next_within(Duration::from_millis(500)).await {
        answers.push(frame);
    }
    // The typing and invalid frames are in the same burst: no answer.
    let refusals: Vec<&Value> = answers
        .iter()
        .filter(|f| f["code"] == "rate_limited")
        .collect();
    assert_eq!(
        refusals,
        [
            &limited,
            &limited,
            &json!({"type": "error", "code": "rate_limited", "message": "too many frames; slow down", "client_id": "m1"}),
            &limited,
        ],
        "all answers: {answers:?}"
    );
}

#[tokio::test]
async fn sessions_per_user_are_capped() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("MAX_SESSIONS_PER_USER", "2")]).await;
    let user = app.new_user().await;
    let _one = WsClient::connect(&app, &user.token).await;
    let _two = WsClient::connect(&app, &user.token).await;
    let mut three = WsClient::connect(&app, &user.token).await;
    let close = three.closed().await.expect("a close frame");
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1008, "too many sessions for this user")
    );
}
