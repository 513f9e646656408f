//! Sending: the seed client's frames unchanged, acks with the client id
//! and time, repeated client ids stored once, every device getting every
//! message, and a storage failure answered `unavailable`, never acked.

use std::time::Duration;

use serde_json::{Value, json};

use super::{stored_count, two_users};
use crate::both_backends;
use crate::helpers::wsclient::WsClient;
use crate::helpers::{Backend, TestApp, eventually};

both_backends!(
    a_seed_client_works_unchanged,
    acks_carry_the_client_id_and_time,
    a_repeated_client_id_stores_one_message,
    concurrent_repeats_from_two_devices_store_one_message,
    every_device_gets_every_message,
    storage_failure_is_unavailable_and_never_acked,
);

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
