//! Attachments in the embedded store: announced, uploaded to a URL that
//! expires, sent on a message, fetched only by its readers, gone with it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::wsclient::WsClient;
use crate::helpers::{Backend, TestApp, TestUser};

both_backends!(
    a_picture_goes_up_and_reaches_only_those_who_can_read_it,
    uploads_are_checked_against_the_limits_and_the_announcement,
    attachments_never_sent_are_swept_after_a_day,
);

/// Announces a file; the upload's id and URL.
pub async fn announce(app: &TestApp, who: &TestUser, body: Value) -> (u16, Value) {
    app.post("/attachments", &who.token, &body).await
}

/// The absolute form of a URL the node handed out (relative ones are its own).
pub fn absolute(app: &TestApp, url: &str) -> String {
    if url.starts_with('/') {
        format!("http://127.0.0.1:{}{url}", app.port)
    } else {
        url.to_owned()
    }
}

/// `PUT`s bytes to an upload URL: the status.
pub async fn upload(app: &TestApp, url: &str, bytes: Vec<u8>) -> u16 {
    app.http
        .put(absolute(app, url))
        .body(bytes)
        .send()
        .await
        .expect("upload")
        .status()
        .as_u16()
}

/// Where `GET /attachments/{id}` sends `who`: the status, and the download
/// URL when it redirects.
pub async fn download_link(app: &TestApp, who: &TestUser, id: &str) -> (u16, Option<String>) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/attachments/{id}", app.base))
        .bearer_auth(&who.token)
        .send()
        .await
        .unwrap();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    (response.status().as_u16(), location)
}

/// A tiny picture's bytes (not a real PNG: the node does not look inside).
pub fn picture() -> Vec<u8> {
    (0..=255u8).cycle().take(3000).collect()
}

/// The whole road, shared with the S3 test: announce, upload, send, a
/// reader fetches it, an outsider cannot, a delete takes it away.
pub async fn the_whole_road(app: &TestApp, expired_wait: Duration) {
    let (a, b, c) = (
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
    );
    let mut a1 = WsClient::connect(app, &a.token).await;
    let mut b1 = WsClient::connect(app, &b.token).await;
    let bytes = picture();
    let (status, up) = announce(
        app,
        &a,
        json!({"name":"cat.png","size":bytes.len(),"content_type":"image/png","width":40,"height":30}),
    )
    .await;
    assert_eq!(status, 201, "{up}");
    let id = up["id"].as_str().unwrap().to_owned();
    assert_eq!(
        upload(app, up["upload_url"].as_str().unwrap(), bytes.clone()).await,
        200
    );

    // Not on a message yet: only its owner may fetch it.
    assert_eq!(download_link(app, &b, &id).await.0, 404);
    assert_eq!(download_link(app, &a, &id).await.0, 307);

    a1.send(json!({"type":"message","to":b.id,"content":"","attachments":[id],"client_id":"p1"}))
        .await;
    let ack = a1.recv_type_of(&["ack", "error"]).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let frame = b1.recv_type("message").await;
    assert_eq!(
        frame["attachments"],
        json!([{"id":id,"name":"cat.png","size":bytes.len(),"content_type":"image/png",
                "url":format!("/api/v1/attachments/{id}"),"width":40,"height":30}])
    );
    let (_, page) = app
        .get(
            &format!("/messages/conversation?with_user={}", a.id),
            &b.token,
        )
        .await;
    assert_eq!(page["messages"][0]["attachments"], frame["attachments"]);
    assert_eq!(page["messages"][0]["message_type"], "image");

    // The recipient fetches it through the redirect; a stranger cannot.
    let (status, link) = download_link(app, &b, &id).await;
    assert_eq!(status, 307);
    let link = absolute(app, &link.unwrap());
    let got = app.http.get(&link).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(got.bytes().await.unwrap().to_vec(), bytes);
    let (status, body) = app.get(&format!("/attachments/{id}"), &c.token).await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error":{"code":"not_found","message":format!("no attachment with id {id}")}})
        )
    );
    // Nor can anyone send it again.
    a1.send(
        json!({"type":"message","to":b.id,"content":"again","attachments":[id],"client_id":"p2"}),
    )
    .await;
    let again = a1.recv_type_of(&["ack", "error"]).await;
    assert_eq!(
        (&again["code"], &again["message"]),
        (
            &json!("invalid_field"),
            &json!(format!("attachment {id} is already on a message"))
        )
    );

    // A download URL stops working when it expires.
    tokio::time::sleep(expired_wait).await;
    assert_eq!(app.http.get(&link).send().await.unwrap().status(), 403);

    // Deleting the message deletes the file.
    let message = ack["id"].as_str().unwrap();
    let (status, _) = app.delete(&format!("/messages/{message}"), &a.token).await;
    assert_eq!(status, 204);
    assert_eq!(download_link(app, &b, &id).await.0, 404);
    let (_, page) = app
        .get(
            &format!("/messages/conversation?with_user={}", a.id),
            &b.token,
        )
        .await;
    assert!(page["messages"][0].get("attachments").is_none());
    let gone = crate::helpers::eventually(Duration::from_secs(5), || async {
        matches!(
            app.state.chat.files().uploaded(id.parse().unwrap()).await,
            Ok(None)
        )
    })
    .await;
    assert!(gone, "the bytes left the store");
}

async fn a_picture_goes_up_and_reaches_only_those_who_can_read_it(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("ATTACHMENT_URL_TTL", "3s")]).await;
    the_whole_road(&app, Duration::from_millis(4200)).await;
}

async fn uploads_are_checked_against_the_limits_and_the_announcement(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("MAX_ATTACHMENT_BYTES", "5000"),
            ("ATTACHMENT_TYPES", "image/*,application/pdf"),
        ],
    )
    .await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let refused = |code: &str, message: &str| json!({"error":{"code":code,"message":message}});
    let cases = [
        (
            json!({"name":"big.png","size":5001,"content_type":"image/png"}),
            413,
            refused("payload_too_large", "attachments are at most 5000 bytes"),
        ),
        (
            json!({"name":"page.html","size":10,"content_type":"text/html"}),
            400,
            refused(
                "invalid_field",
                "content_type \"text/html\" is not accepted here; accepted: image/*, application/pdf",
            ),
        ),
        (
            json!({"name":"doc.pdf","size":10,"content_type":"application/pdf","width":3}),
            400,
            refused("invalid_field", "width and height are for images only"),
        ),
        (
            json!({"name":"  ","size":10,"content_type":"image/png"}),
            400,
            refused("invalid_field", "name is empty"),
        ),
        (
            json!({"name":"zero.png","size":0,"content_type":"image/png"}),
            400,
            refused("invalid_field", "size must be at least 1 byte"),
        ),
    ];
    for (body, status, answer) in cases {
        assert_eq!(
            announce(&app, &a, body.clone()).await,
            (status, answer),
            "{body}"
        );
    }

    let (_, up) = announce(
        &app,
        &a,
        json!({"name":"doc.pdf","size":100,"content_type":"application/pdf"}),
    )
    .await;
    let id = up["id"].as_str().unwrap().to_owned();
    let url = up["upload_url"].as_str().unwrap().to_owned();
    let mut a1 = WsClient::connect(&app, &a.token).await;
    let send =
        json!({"type":"message","to":b.id,"content":"the doc","attachments":[id],"client_id":"d1"});
    a1.send(send.clone()).await;
    let early = a1.recv_type_of(&["ack", "error"]).await;
    assert_eq!(
        early["message"],
        format!("attachment {id} is not uploaded yet")
    );

    // More than announced is refused and leaves nothing behind.
    assert_eq!(upload(&app, &url, vec![7u8; 101]).await, 413);
    a1.send(send.clone()).await;
    let still = a1.recv_type_of(&["ack", "error"]).await;
    assert_eq!(
        still["message"],
        format!("attachment {id} is not uploaded yet")
    );
    // A forged or altered URL is refused.
    let forged = url.replace("signature=", "signature=0");
    assert_eq!(upload(&app, &forged, vec![7u8; 100]).await, 403);

    assert_eq!(upload(&app, &url, vec![7u8; 100]).await, 200);
    a1.send(send).await;
    let ack = a1.recv_type_of(&["ack", "error"]).await;
    assert_eq!(ack["type"], "ack", "{ack}");

    // Announced and never sent: at most 20 within the links' lifetime.
    let c = app.new_user().await;
    let small = json!({"name":"a.png","size":10,"content_type":"image/png"});
    for _ in 0..20 {
        assert_eq!(announce(&app, &c, small.clone()).await.0, 201);
    }
    assert_eq!(
        announce(&app, &c, small).await,
        (
            403,
            refused(
                "forbidden",
                "20 attachments are waiting to be sent; send them, or announce more once their upload links expire"
            )
        )
    );

    // Someone else's attachment cannot be sent.
    let mut b1 = WsClient::connect(&app, &b.token).await;
    b1.send(
        json!({"type":"message","to":a.id,"content":"mine?","attachments":[id],"client_id":"x"}),
    )
    .await;
    let theirs = b1.recv_type_of(&["ack", "error"]).await;
    assert_eq!(
        (&theirs["code"], &theirs["message"]),
        (
            &json!("not_found"),
            &json!(format!("no attachment with id {id}"))
        )
    );
}

/// Announced `hours` ago by `owner`, 10 bytes, uploaded: its id.
async fn announced_long_ago(app: &TestApp, owner: &TestUser, hours: i64) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    let new = ochat::store::NewAttachment {
        id,
        owner: owner.id,
        name: "old.txt".into(),
        size: 10,
        content_type: "text/plain".into(),
        width: None,
        height: None,
        at: ochat::store::now() - chrono::Duration::hours(hours),
    };
    let since = new.at - chrono::Duration::hours(1);
    assert!(
        app.state
            .store
            .create_attachment(&new, 20, since)
            .await
            .unwrap()
    );
    let url = app
        .state
        .chat
        .files()
        .upload_url(id, Duration::from_secs(60))
        .unwrap()
        .url;
    assert_eq!(upload(app, &url, vec![1; 10]).await, 200);
    id
}

async fn attachments_never_sent_are_swept_after_a_day(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let stale = announced_long_ago(&app, &a, 25).await;
    let late = announced_long_ago(&app, &a, 23).await;
    let fresh = announced_long_ago(&app, &a, 0).await;

    // Past 23 hours it can no longer be sent: the sweep may take it soon.
    let mut a1 = WsClient::connect(&app, &a.token).await;
    a1.send(
        json!({"type":"message","to":b.id,"content":"late","attachments":[late],"client_id":"l1"}),
    )
    .await;
    let refused = a1.recv_type_of(&["ack", "error"]).await;
    assert_eq!(
        refused,
        json!({"type":"error","code":"invalid_field","client_id":"l1",
               "message":format!("attachment {late} was announced more than 23 hours ago; announce and upload it again")})
    );

    assert_eq!(app.state.chat.sweep_unsent_attachments().await.unwrap(), 1);
    let store = &app.state.store;
    assert!(store.attachment(stale).await.unwrap().is_none());
    assert!(matches!(
        app.state.chat.files().uploaded(stale).await,
        Ok(None)
    ));
    for kept in [late, fresh] {
        assert!(store.attachment(kept).await.unwrap().is_some());
        assert_eq!(
            app.state.chat.files().uploaded(kept).await.unwrap(),
            Some(10)
        );
    }
    // A fresh one is sent as usual, and nothing is left to sweep.
    a1.send(
        json!({"type":"message","to":b.id,"content":"now","attachments":[fresh],"client_id":"f1"}),
    )
    .await;
    assert_eq!(a1.recv_type_of(&["ack", "error"]).await["type"], "ack");
    assert_eq!(app.state.chat.sweep_unsent_attachments().await.unwrap(), 0);
}
