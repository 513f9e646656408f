//! Many users at once: a node's clients all leaving (another node failing
//! over is the same to the ones that remain) while others arrive.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use uuid::Uuid;

use crate::helpers::token_for;
use crate::helpers::wsclient::WsClient;
use crate::realtime::node_behind_a_proxy;

const LEAVING: usize = 300;
const ARRIVING: usize = 50;

/// How many of `users` storage has marked online.
async fn online(db: &sqlx::PgPool, users: &[Uuid]) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM users WHERE id = ANY($1) AND is_online")
        .bind(users)
        .fetch_one(db)
        .await
        .unwrap()
}

/// Opens a session for each of `users` (new to the node: each connect
/// also creates its user); `Err` holds the refusals' statuses.
async fn connect_all(port: u16, users: &[Uuid]) -> Vec<Result<WsClient, u16>> {
    stream::iter(users.iter().map(|id| {
        let token = token_for(*id, &format!("{}@example.com", id.simple()));
        async move {
            tokio::time::timeout(
                Duration::from_secs(30),
                WsClient::try_connect_port(port, &token, None),
            )
            .await
            .unwrap_or(Err(0))
        }
    }))
    .buffered(64)
    .collect()
    .await
}

/// 300 sessions close at once on a node with two connections to a
/// PostgreSQL 10 ms away, each departure owing storage a presence record
/// and a contacts lookup; 50 new users connect right then. Every one of
/// them is let in (none waits out the pool behind the departures and is
/// refused with 503), and every departure is still recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_users_connect_while_hundreds_of_sessions_are_leaving() {
    let (app, proxy, direct) = node_behind_a_proxy(&[("DB_MAX_CONNECTIONS", "2")]).await;
    let db = sqlx::PgPool::connect(&direct).await.unwrap();
    let leaving: Vec<Uuid> = (0..LEAVING).map(|_| Uuid::now_v7()).collect();
    let sessions: Vec<WsClient> = connect_all(app.port, &leaving)
        .await
        .into_iter()
        .map(|s| s.expect("a session"))
        .collect();
    assert!(
        crate::helpers::eventually(Duration::from_secs(20), || {
            let (db, leaving) = (db.clone(), leaving.clone());
            async move { online(&db, &leaving).await == LEAVING as i64 }
        })
        .await,
        "every session's arrival recorded"
    );

    proxy.delay(Duration::from_millis(10));
    drop(sessions);
    // The departures are under way once the first is recorded.
    assert!(
        crate::helpers::eventually(Duration::from_secs(20), || {
            let (db, leaving) = (db.clone(), leaving.clone());
            async move { online(&db, &leaving).await < LEAVING as i64 }
        })
        .await,
        "departures recorded"
    );
    let arriving: Vec<Uuid> = (0..ARRIVING).map(|_| Uuid::now_v7()).collect();
    let arrived = connect_all(app.port, &arriving).await;
    let refused: Vec<u16> = arrived
        .iter()
        .filter_map(|a| a.as_ref().err())
        .copied()
        .collect();
    assert_eq!(
        refused,
        Vec::<u16>::new(),
        "connects refused (0: no answer in 30 s)"
    );

    proxy.delay(Duration::ZERO);
    assert!(
        crate::helpers::eventually(Duration::from_secs(20), || {
            let (db, leaving) = (db.clone(), leaving.clone());
            async move { online(&db, &leaving).await == 0 }
        })
        .await,
        "every departure recorded"
    );
    assert!(
        crate::helpers::eventually(Duration::from_secs(20), || {
            let (db, arriving) = (db.clone(), arriving.clone());
            async move { online(&db, &arriving).await == ARRIVING as i64 }
        })
        .await,
        "every arrival recorded"
    );
    drop(arrived);
}
