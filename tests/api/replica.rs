//! Reads that tolerate lag served by a streaming replica
//! (`DATABASE_REPLICA_URL`), while everything that must see the latest
//! commit reads the primary.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::replica::PgPair;
use crate::helpers::wsclient::WsClient;
use crate::helpers::{TestApp, TestDatabase, eventually};

async fn history(app: &TestApp, token: &str, peer: uuid::Uuid) -> Vec<String> {
    let (status, page) = app
        .get(&format!("/messages/conversation?with_user={peer}"), token)
        .await;
    assert_eq!(status, 200, "{page}");
    contents(&page["messages"])
}

fn contents(messages: &Value) -> Vec<String> {
    messages
        .as_array()
        .unwrap_or_else(|| panic!("expected messages, got {messages}"))
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

/// With the replica's replay paused, a message is acked (committed on the
/// primary) and `sync` returns it, while history, search and the
/// conversation list, served by the replica, do not show it yet; once
/// replay resumes they do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_reads_come_from_the_replica_and_sync_from_the_primary() {
    let pair = tokio::task::spawn_blocking(PgPair::start).await.unwrap();
    let db = Arc::new(TestDatabase::on_own_server(&pair.primary_url));
    let app = TestApp::spawn_on(db, &[("DATABASE_REPLICA_URL", pair.replica_url.as_str())]).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let mut wa = WsClient::connect(&app, &a.token).await;
    wa.send(json!({"type": "message", "to": b.id, "content": "before", "client_id": "1"}))
        .await;
    let first = wa.recv_type("ack").await;
    pair.caught_up().await;
    assert_eq!(history(&app, &b.token, a.id).await, ["before"]);

    let mut replica = sqlx::PgConnection::connect(&pair.replica_url)
        .await
        .unwrap();
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&mut replica)
        .await
        .unwrap();
    wa.send(json!({"type": "message", "to": b.id, "content": "paused", "client_id": "2"}))
        .await;
    wa.recv_type("ack").await;

    let mut wb = WsClient::connect(&app, &b.token).await;
    wb.send(json!({"type": "sync", "since": first["id"], "limit": 100}))
        .await;
    let synced = wb.recv_type("sync").await;
    assert_eq!(
        contents(&synced["messages"]),
        ["paused"],
        "sync reads the primary"
    );

    assert_eq!(history(&app, &b.token, a.id).await, ["before"]);
    let (_, found) = app.get("/messages/search?query=paused", &b.token).await;
    assert_eq!(contents(&found["messages"]), Vec::<String>::new());
    let (_, list) = app.get("/messages/conversations", &b.token).await;
    assert_eq!(
        list["conversations"][0]["last_message"]["content"],
        "before"
    );

    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&mut replica)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            history(&app, &b.token, a.id).await == ["before", "paused"]
        })
        .await,
        "history shows it once the replica replays it"
    );
    let (_, found) = app.get("/messages/search?query=paused", &b.token).await;
    assert_eq!(contents(&found["messages"]), ["paused"]);
    app.shutdown().await;
}

/// A replica that cannot be reached: the reads it serves answer
/// `unavailable` (503), while sending, `sync` and readiness, which use the
/// primary only, go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_is_down_fails_only_the_reads_it_serves() {
    let nowhere = format!(
        "postgres://postgres@127.0.0.1:{}/ochat",
        crate::helpers::free_port()
    );
    let db = Arc::new(TestDatabase::new(crate::helpers::Backend::Postgres).await);
    let app = TestApp::spawn_on(db, &[("DATABASE_REPLICA_URL", nowhere.as_str())]).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let mut wa = WsClient::connect(&app, &a.token).await;
    wa.send(json!({"type": "message", "to": b.id, "content": "hello", "client_id": "1"}))
        .await;
    let sent = wa.recv_type("ack").await;

    let (status, page) = app
        .get(
            &format!("/messages/conversation?with_user={}", a.id),
            &b.token,
        )
        .await;
    assert_eq!(
        (status, page),
        (
            503,
            json!({"error": {"code": "unavailable", "message": "storage is unavailable; nothing was stored, retry"}})
        )
    );
    let mut wb = WsClient::connect(&app, &b.token).await;
    wb.send(json!({"type": "sync", "limit": 10})).await;
    let synced = wb.recv_type("sync").await;
    assert_eq!(synced["messages"][0]["id"], sent["id"]);
    let ready = reqwest::get(format!("{}/readyz", app.base)).await.unwrap();
    assert_eq!(ready.status(), 200);
    app.shutdown().await;
}
