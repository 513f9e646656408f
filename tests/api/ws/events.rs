//! What the server sends on its own: presence to contacts only, typing to
//! the recipient only, read receipts from WebSocket and REST, and `sync`
//! after a reconnect returning exactly what was missed.

use std::time::Duration;

use serde_json::json;

use super::two_users;
use crate::both_backends;
use crate::helpers::wsclient::{WsClient, presence};
use crate::helpers::{Backend, TestApp};

both_backends!(
    presence_goes_to_contacts_only,
    typing_goes_to_the_recipient_only,
    read_receipts_reach_the_sender_from_ws_and_rest,
    sync_after_reconnect_returns_exactly_what_was_missed,
);

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
