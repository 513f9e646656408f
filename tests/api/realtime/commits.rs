//! Sends whose commit answer was lost on the way back: settled by id, never
//! denied as "not stored".

use std::time::{Duration, Instant};

use serde_json::json;

use super::{node_behind_a_proxy, ready};
use crate::helpers::eventually;
use crate::helpers::proxy::Proxy;
use crate::helpers::wsclient::WsClient;

/// The connection to PostgreSQL dies while a send's commit answer is on its
/// way back: the message is committed, but the node never heard so. The
/// node settles it by id once PostgreSQL answers again, delivers it and
/// acks it; it never answers `unavailable` ("not stored") for a stored
/// message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_settled_not_denied() {
    use sqlx::Connection;
    let (app, proxy, direct) = node_behind_a_proxy(&[]).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let mut wa = WsClient::connect(&app, &a.token).await;
    let mut wb = WsClient::connect(&app, &b.token).await;
    wa.send(json!({"type": "message", "to": b.id, "content": "warm", "client_id": "warm"}))
        .await;
    wa.recv_type("ack").await;
    wb.recv_type("message").await;

    // Every byte to and from PostgreSQL now takes 0.4 s: the moment the
    // message is committed (seen on a direct connection), its answer is
    // still inside the proxy, and the cut loses it.
    let mut watcher = sqlx::PgConnection::connect(&direct).await.unwrap();
    proxy.delay(Duration::from_millis(400));
    wa.send(json!({"type": "message", "to": b.id, "content": "answer lost", "client_id": "lost"}))
        .await;
    cut_once_committed(&proxy, &mut watcher, "lost").await;
    // The outage's length (the fault under test): settling waits for PostgreSQL.
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.delay(Duration::ZERO);
    proxy.restore();

    let answer = tokio::time::timeout(Duration::from_secs(15), wa.recv_type_of(&["ack", "error"]))
        .await
        .expect("an answer once PostgreSQL is back");
    assert_eq!(
        (answer["type"].as_str(), answer["client_id"].as_str()),
        (Some("ack"), Some("lost")),
        "a stored message must not be answered as not stored: {answer}"
    );
    assert_eq!(stored(&mut watcher, "lost").await, 1);
    let live = tokio::time::timeout(Duration::from_secs(10), wb.recv_type("message"))
        .await
        .expect("delivered live");
    assert_eq!(live["id"], answer["id"]);
}

/// The same lost answer, but PostgreSQL stays away past
/// COMMIT_SETTLE_TIMEOUT: the sender hears `outcome_unknown` (maybe
/// stored), and resending with the same `client_id` settles it: the ack of
/// the one stored message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_cannot_be_settled_is_answered_outcome_unknown() {
    use sqlx::Connection;
    let (app, proxy, direct) = node_behind_a_proxy(&[("COMMIT_SETTLE_TIMEOUT", "1s")]).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let mut wa = WsClient::connect(&app, &a.token).await;
    let frame = json!({"type": "message", "to": b.id, "content": "maybe", "client_id": "maybe"});
    let mut watcher = sqlx::PgConnection::connect(&direct).await.unwrap();
    proxy.delay(Duration::from_millis(400));
    wa.send(frame.clone()).await;
    cut_once_committed(&proxy, &mut watcher, "maybe").await;
    let answer = tokio::time::timeout(Duration::from_secs(15), wa.recv_type_of(&["ack", "error"]))
        .await
        .expect("an answer");
    assert_eq!(
        answer,
        json!({"type": "error", "code": "outcome_unknown",
               "message": "storage failed while committing; the message may be stored: resend with the same client_id",
               "client_id": "maybe"})
    );
    proxy.delay(Duration::ZERO);
    proxy.restore();
    assert!(eventually(Duration::from_secs(10), || ready(&app)).await);
    wa.send(frame).await;
    let ack = wa.recv_type("ack").await;
    assert_eq!(ack["client_id"], "maybe");
    assert_eq!(stored(&mut watcher, "maybe").await, 1, "stored once");
}

/// The connection dies while PostgreSQL is still committing a send (here a
/// deferred check that takes two seconds): the node cannot tell whether it
/// landed, and PostgreSQL answers again long before that commit ends. The
/// node must wait for it before settling: the commit lands, so the sender
/// hears the ack, never `unavailable` ("not stored").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_still_running_when_its_connection_dies_is_settled_once_it_ends() {
    let (answer, stored_after) = lose_a_slow_commit(false).await;
    assert_eq!(
        (answer["type"].as_str(), answer["client_id"].as_str()),
        (Some("ack"), Some("slow")),
        "a stored message must not be answered as not stored: {answer}"
    );
    assert_eq!(stored_after, 1);
}

/// The same, but the slow commit then fails: only once it has ended does
/// the node answer `unavailable` ("not stored, retry").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lost_and_not_stored_is_answered_unavailable_once_it_ends() {
    let (answer, stored_after) = lose_a_slow_commit(true).await;
    assert_eq!(
        answer,
        json!({"type": "error", "code": "unavailable",
               "message": "storage is unavailable; nothing was stored, retry",
               "client_id": "slow"})
    );
    assert_eq!(stored_after, 0);
}

/// Sends a message whose commit takes two seconds (and then fails, with
/// `fails`), cuts the node's connection during it and restores it at once;
/// returns the sender's answer and how many copies are stored in the end.
async fn lose_a_slow_commit(fails: bool) -> (serde_json::Value, i64) {
    use sqlx::Connection;
    let (app, proxy, direct) = node_behind_a_proxy(&[("COMMIT_SETTLE_TIMEOUT", "20s")]).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let mut wa = WsClient::connect(&app, &a.token).await;
    let mut watcher = sqlx::PgConnection::connect(&direct).await.unwrap();
    let function = if fails {
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(2); RAISE EXCEPTION 'refused at commit'; END $$"
    } else {
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$"
    };
    for statement in [
        function,
        "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON messages
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
         WHEN (NEW.client_id = 'slow') EXECUTE FUNCTION slow_commit()",
    ] {
        sqlx::query(statement).execute(&mut watcher).await.unwrap();
    }
    wa.send(json!({"type": "message", "to": b.id, "content": "slow", "client_id": "slow"}))
        .await;
    // PostgreSQL is in the deferred check, committing: the connection dies
    // now, and is back at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let committing: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event = 'PgSleep'",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if committing > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the commit never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.cut().await;
    // The outage's length (the fault under test): over long before the commit.
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.restore();

    let answer = tokio::time::timeout(Duration::from_secs(15), wa.recv_type_of(&["ack", "error"]))
        .await
        .expect("an answer once the commit has ended");
    (answer, stored(&mut watcher, "slow").await)
}

/// How many messages carry `client_id`, read on a direct connection.
async fn stored(conn: &mut sqlx::PgConnection, client_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messages WHERE client_id = $1")
        .bind(client_id)
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Cuts the proxy the moment the message with `client_id` is committed
/// (seen on a direct connection): with the proxy slowed, its commit's
/// answer is still on the way, and is lost.
async fn cut_once_committed(proxy: &Proxy, watcher: &mut sqlx::PgConnection, client_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored(watcher, client_id).await == 0 {
        assert!(Instant::now() < deadline, "the message was never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.cut().await;
}
