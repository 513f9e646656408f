//! The WebSocket protocol end to end: real clients, a real node on a random
//! port, both storage backends.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{Backend, TEST_SECRET, TestApp, TestUser, eventually, token_for};
use crate::wsclient::{WsClient, presence};

both_backends!(
    a_seed_client_works_unchanged,
    acks_carry_the_client_id_and_time,
    every_bad_frame_gets_its_code_and_stores_nothing,
    an_oversized_frame_closes_with_1009,
    a_flood_is_rate_limited_and_the_connection_kept,
    a_refused_burst_is_answered_once_but_every_message_hears_back,
    a_repeated_client_id_stores_one_message,
    concurrent_repeats_from_two_devices_store_one_message,
    every_device_gets_every_message,
    presence_goes_to_contacts_only,
    typing_goes_to_the_recipient_only,
    read_receipts_reach_the_sender_from_ws_and_rest,
    sync_after_reconnect_returns_exactly_what_was_missed,
    storage_failure_is_unavailable_and_never_acked,
);

async fn two_users(app: &TestApp) -> (TestUser, TestUser) {
    (app.new_user().await, app.new_user().await)
}

async fn stored_count(app: &TestApp, user: &TestUser) -> i64 {
    let (_, stats) = app.get("/messages/stats", &user.token).await;
    stats["total_sent"].as_i64().unwrap()
}

async fn a_seed_client_works_unchanged(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = two_users(&app).await;
    let mut wa = WsClient::connect(&app, &a.token).await;
    let mut wb = WsClient::connect(&app, &b.token).await;

    // Send Message, exactly as the seed shows it.
    wa.send(json!({"type": "message", "to": b.id, "content": "Hello, world!"}))
        .await;
    let ack = wa.recv_type("ack").await;
    assert_eq!(ack["client_id"], Value::Null);
    let received = wb.recv_type("message").await;
    assert_eq!(received["id"], ack["id"]);
    assert_eq!(received["from"], json!(a.id));
    assert_eq!(received["to"], json!(b.id));
    assert_eq!(received["content"], "Hello, world!");
    let stamp = received["timestamp"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok() && stamp.ends_with('Z'),
        "{stamp}"
    );
    let keys: Vec<&String> = received.as_object().unwrap().keys().collect();
    assert_eq!(
        keys.len(),
        7,
        "type, id, from, to, content, timestamp, and the additive seq: {received}"
    );
    assert_eq!(received["seq"], 1, "b's first message");

    // Ping.
    wb.send(json!({"type": "ping"})).await;
    assert_eq!(wb.recv_type("pong").await, json!({"type": "pong"}));

    // Typing.
    wb.send(json!({"type": "typing", "to": a.id, "is_typing": true}))
        .await;
    assert_eq!(
        wa.recv_type("typing").await,
        json!({"type": "typing", "from": b.id, "is_typing": true})
    );

    // Mark as read → the sender's read receipt.
    wb.send(json!({"type": "mark_read", "message_id": received["id"]}))
        .await;
    assert_eq!(
        wa.recv_type("read_receipt").await,
        json!({"type": "read_receipt", "message_id": received["id"], "read_by": b.id})
    );
}

async fn acks_carry_the_client_id_and_time(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = two_users(&app).await;
    let mut wa = WsClient::connect(&app, &a.token).await;
    wa.send(json!({"type": "message", "to": b.id, "content": "  padded  ", "client_id": "c-1"}))
        .await;
    let ack = wa.recv_type("ack").await;
    assert_eq!(ack["client_id"], "c-1");
    let (_, history) = app
        .get(
            &format!("/messages/conversation?with_user={}", b.id),
            &a.token,
        )
        .await;
    let stored = &history["messages"][0];
    assert_eq!(stored["id"], ack["id"]);
    assert_eq!(stored["content"], "padded", "content is stored trimmed");
    let acked = chrono::DateTime::parse_from_rfc3339(ack["timestamp"].as_str().unwrap()).unwrap();
    let created =
        chrono::DateTime::parse_from_rfc3339(stored["created_at"].as_str().unwrap()).unwrap();
    assert_eq!(acked, created, "the ack's time is the stored time");
}

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
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(stored_count(&app, &a).await, acks);
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

async fn a_repeated_client_id_stores_one_message(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = two_users(&app).await;
    let mut wa = WsClient::connect(&app, &a.token).await;
    let mut wb = WsClient::connect(&app, &b.token).await;
    let frame = json!({"type": "message", "to": b.id, "content": "once", "client_id": "same"});
    wa.send(frame.clone()).await;
    let first = wa.recv_type("ack").await;
    wa.send(frame).await;
    let second = wa.recv_type("ack").await;
    assert_eq!(first, second, "the retry acks the original id and time");
    assert_eq!(wb.recv_type("message").await["id"], first["id"]);
    // Presence may come (a is announced beside a's first frames, and the
    // message just made them contacts); a second message may not.
    wb.none_of_type_for("message", Duration::from_millis(300))
        .await;
    assert_eq!(stored_count(&app, &a).await, 1);
}

async fn concurrent_repeats_from_two_devices_store_one_message(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = two_users(&app).await;
    let mut d1 = WsClient::connect(&app, &a.token).await;
    let mut d2 = WsClient::connect(&app, &a.token).await;
    for round in 0..10 {
        let frame = json!({"type": "message", "to": b.id, "content": "race", "client_id": format!("r{round}")});
        let (s1, s2) = (frame.clone(), frame);
        tokio::join!(d1.send(s1), d2.send(s2));
        let ack1 = d1.recv_type("ack").await;
        let ack2 = d2.recv_type("ack").await;
        assert_eq!(ack1["id"], ack2["id"], "round {round}");
    }
    assert_eq!(stored_count(&app, &a).await, 10);
}

async fn every_device_gets_every_message(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = two_users(&app).await;
    let mut wa = WsClient::connect(&app, &a.token).await;
    let mut devices = Vec::new();
    for _ in 0..3 {
        devices.push(WsClient::connect(&app, &b.token).await);
    }
    wa.send(json!({"type": "message", "to": b.id, "content": "to all of b"}))
        .await;
    let ack = wa.recv_type("ack").await;
    for device in &mut devices {
        assert_eq!(device.recv_type("message").await["id"], ack["id"]);
    }

    // b writes from device 0: devices 1 and 2 see their own message, device 0 gets the ack only.
    devices[0]
        .send(
            json!({"type": "message", "to": a.id, "content": "from b's phone", "client_id": "p1"}),
        )
        .await;
    let ack = devices[0].recv_type("ack").await;
    for device in &mut devices[1..] {
        let echo = device.recv_type("message").await;
        assert_eq!(
            (echo["id"].clone(), echo["from"].clone(), echo["to"].clone()),
            (ack["id"].clone(), json!(b.id), json!(a.id))
        );
    }
    assert_eq!(wa.recv_type("message").await["id"], ack["id"]);
    // No echo to the device that sent it (a's presence may still arrive).
    devices[0]
        .none_of_type_for("message", Duration::from_millis(300))
        .await;
}

async fn presence_goes_to_contacts_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = two_users(&app).await;
    let stranger = app.new_user().await;
    app.talk(&a, &b).await;
    let mut wa = WsClient::connect(&app, &a.token).await;
    let mut ws = WsClient::connect(&app, &stranger.token).await;

    let wb = WsClient::connect(&app, &b.token).await;
    assert_eq!(
        presence(&wa.recv().await),
        json!({"type": "user_online", "user_id": b.id})
    );
    let (_, profile) = app.get(&format!("/users/{}", b.id), &a.token).await;
    assert_eq!(profile["is_online"], true);

    // A second device changes nothing; closing it changes nothing either.
    let wb2 = WsClient::connect(&app, &b.token).await;
    wb2.close().await;
    wa.silent_for(Duration::from_millis(300)).await;

    wb.close().await;
    assert_eq!(
        presence(&wa.recv().await),
        json!({"type": "user_offline", "user_id": b.id})
    );
    let (_, profile) = app.get(&format!("/users/{}", b.id), &a.token).await;
    assert_eq!(profile["is_online"], false);
    ws.silent_for(Duration::from_millis(300)).await;
}

async fn typing_goes_to_the_recipient_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = two_users(&app).await;
    let c = app.new_user().await;
    app.talk(&a, &b).await;
    app.talk(&a, &c).await;
    // Presence is announced beside the session (never before its first
    // frame), so wait for it before typing.
    let mut wa = WsClient::connect(&app, &a.token).await;
    wa.assert_usable().await;
    let mut wb = WsClient::connect(&app, &b.token).await;
    let mut wc = WsClient::connect(&app, &c.token).await;
    assert_eq!(wa.recv_type("user_online").await["type"], "user_online");
    assert_eq!(wa.recv_type("user_online").await["type"], "user_online");
    wa.send(json!({"type": "typing", "to": b.id, "is_typing": false}))
        .await;
    assert_eq!(
        wb.recv_type("typing").await,
        json!({"type": "typing", "from": a.id, "is_typing": false})
    );
    wc.none_of_type_for("typing", Duration::from_millis(300))
        .await;
    wa.none_of_type_for("typing", Duration::from_millis(100))
        .await;
}

async fn read_receipts_reach_the_sender_from_ws_and_rest(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = two_users(&app).await;
    let m1 = app.send(&a, &b, "one").await;
    let m2 = app.send(&a, &b, "two").await;
    // b talks back, so a sees b's presence below.
    app.send(&b, &a, "back").await;
    let mut wa = WsClient::connect(&app, &a.token).await;

    let (_, body) = app
        .post(
            "/messages/mark-read",
            &b.token,
            &json!({"message_ids": [m1.id, m2.id]}),
        )
        .await;
    assert_eq!(body, json!({"updated": 2}));
    let mut receipts = vec![
        wa.recv_type("read_receipt").await,
        wa.recv_type("read_receipt").await,
    ];
    receipts.sort_by_key(|r| r["message_id"].as_str().unwrap().to_owned());
    let mut expected = vec![
        json!({"type": "read_receipt", "message_id": m1.id, "read_by": b.id}),
        json!({"type": "read_receipt", "message_id": m2.id, "read_by": b.id}),
    ];
    expected.sort_by_key(|r| r["message_id"].as_str().unwrap().to_owned());
    assert_eq!(receipts, expected);

    // Marking again is not an error and sends no second receipt.
    let mut wb = WsClient::connect(&app, &b.token).await;
    assert_eq!(
        presence(&wa.recv().await),
        json!({"type": "user_online", "user_id": b.id})
    );
    wb.send(json!({"type": "mark_read", "message_id": m1.id}))
        .await;
    wb.assert_usable().await;
    wa.silent_for(Duration::from_millis(300)).await;
}

async fn sync_after_reconnect_returns_exactly_what_was_missed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = two_users(&app).await;
    let c = app.new_user().await;
    let mut wb = WsClient::connect(&app, &b.token).await;
    app.send(&a, &b, "seen live").await;
    let last_seen = wb.recv_type("message").await["id"].clone();
    wb.close().await;

    let mut missed = Vec::new();
    for i in 0..25 {
        let m = if i % 2 == 0 {
            app.send(&a, &b, &format!("missed {i}")).await
        } else {
            app.send(&c, &b, &format!("missed {i}")).await
        };
        missed.push(json!(m.id));
    }

    let mut wb = WsClient::connect(&app, &b.token).await;
    let mut since = last_seen;
    let mut got = Vec::new();
    let mut pages = Vec::new();
    loop {
        wb.send(json!({"type": "sync", "since": since, "limit": 10}))
            .await;
        let page = wb.recv_type("sync").await;
        let messages = page["messages"].as_array().unwrap();
        pages.push((messages.len(), page["has_more"].as_bool().unwrap()));
        for m in messages {
            for key in ["id", "from", "to", "content", "timestamp"] {
                assert!(m.get(key).is_some(), "{m}");
            }
            got.push(m["id"].clone());
        }
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        since = messages.last().unwrap()["id"].clone();
    }
    assert_eq!(pages, vec![(10, true), (10, true), (5, false)]);
    assert_eq!(got, missed);

    // From the start (`since: null`) a new device gets everything.
    wb.send(json!({"type": "sync", "since": null, "limit": 100}))
        .await;
    let all = wb.recv_type("sync").await;
    assert_eq!(all["messages"].as_array().unwrap().len(), 26);
}

async fn storage_failure_is_unavailable_and_never_acked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = two_users(&app).await;
    let mut wa = WsClient::connect(&app, &a.token).await;
    let outage = crate::helpers::StorageOutage::start(&app, backend).await;

    wa.send(
        json!({"type": "message", "to": b.id, "content": "during the outage", "client_id": "o1"}),
    )
    .await;
    let frame = wa.recv().await;
    assert_eq!(
        frame["type"], "error",
        "no ack while storage is down: {frame}"
    );
    assert_eq!(frame["code"], "unavailable");
    assert_eq!(frame["client_id"], "o1");

    outage.end().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            let (status, _) = app.get("/messages/stats", &a.token).await;
            status == 200
        })
        .await,
        "storage recovers without a restart"
    );
    assert_eq!(stored_count(&app, &a).await, 0, "nothing half-stored");
    wa.send(json!({"type": "message", "to": b.id, "content": "after", "client_id": "o1"}))
        .await;
    assert_eq!(wa.recv_type("ack").await["client_id"], "o1");
}

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
    let mut slow = crate::wsclient::WsClient::connect_with_small_buffer(&app, &b.token).await;
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

/// The README's protocol tables, with their placeholders filled in: every
/// example it shows is a frame of `docs/asyncapi.json`.
fn readme_examples(section: &str) -> Vec<Value> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find(section)
        .expect("the README has the protocol section");
    let table: String = readme[start + section.len()..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect::<Vec<_>>()
        .join("\n");
    let id = Uuid::now_v7().to_string();
    let mut frames = Vec::new();
    for example in table.split('`').skip(1).step_by(2) {
        if !example.starts_with('{') {
            continue;
        }
        // "<user uuid>", "…" and bare … are placeholders for an id, a time
        // or a number.
        let mut filled = String::new();
        let mut rest = example;
        while let Some(i) = rest.find(['"', '…']) {
            filled.push_str(&rest[..i]);
            if rest[i..].starts_with('…') {
                filled.push('1');
                rest = &rest[i + '…'.len_utf8()..];
                continue;
            }
            let end = rest[i + 1..].find('"').unwrap() + i + 1;
            let text = &rest[i + 1..end];
            let key_before = filled.trim_end().ends_with(':');
            let placeholder = text == "…" || text.starts_with('<');
            if placeholder && key_before && filled.ends_with("\"timestamp\":") {
                filled.push_str("\"2024-01-01T12:00:00Z\"");
            } else if placeholder {
                filled.push_str(&format!("\"{id}\""));
            } else {
                filled.push_str(&rest[i..=end]);
            }
            rest = &rest[end + 1..];
        }
        filled.push_str(rest);
        if let Ok(frame) = serde_json::from_str::<Value>(&filled) {
            frames.push(frame);
        }
    }
    frames
}

#[test]
fn the_protocol_document_describes_every_readme_example() {
    let protocol = crate::wsclient::Protocol::get();
    let client = readme_examples("### Client → server");
    assert_eq!(client.len(), 7, "every client example: {client:#?}");
    for frame in &client {
        assert_eq!(protocol.client_errors(frame), None, "{frame}");
    }
    let server = readme_examples("### Server → client");
    // The rows showing `<group>` or `<message frames>` are not JSON; every
    // test checks those frames live, as the server sends them.
    assert_eq!(server.len(), 10, "the server examples: {server:#?}");
    for frame in &server {
        assert_eq!(protocol.server_errors(frame), None, "{frame}");
    }
}

#[test]
fn the_protocol_document_refuses_what_the_server_refuses() {
    let protocol = crate::wsclient::Protocol::get();
    let id = Uuid::now_v7();
    for bad in [
        json!({"type": "dance"}),
        json!({"content": "no type"}),
        json!({"type": "message", "content": "to nobody"}),
        json!({"type": "message", "to": id, "conversation_id": id, "content": "both"}),
        json!({"type": "message", "to": "not-a-uuid", "content": "x"}),
        json!({"type": "message", "to": id, "content": "x", "client_id": "k".repeat(65)}),
        json!({"type": "typing", "to": id}),
        json!({"type": "mark_read"}),
        json!({"type": "sync", "limit": -1}),
    ] {
        assert!(protocol.client_errors(&bad).is_some(), "refused: {bad}");
    }
    // And a server frame missing what a client relies on is not one.
    assert!(
        protocol
            .server_errors(&json!({"type": "ack", "id": id}))
            .is_some()
    );
}
