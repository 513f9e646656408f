//! Several nodes sharing one Postgres and one Redis: cross-node delivery,
//! presence across nodes, node crashes, Redis and Postgres faults, and a
//! loss/duplicate check under churn.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::proxy::Proxy;
use crate::helpers::wsclient::{WsClient, presence};
use crate::helpers::{Backend, Cluster, NodeProcess, TestApp, TestUser, eventually, redis_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_typing_and_receipts_cross_nodes() {
    let cluster = Cluster::start(3, &[]).await;
    let [n0, n1, n2] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    let (a, b) = (n0.new_user().await, n1.new_user().await);
    let mut wa = WsClient::connect(n0, &a.token).await;
    let mut wb = WsClient::connect(n1, &b.token).await;

    wa.send(json!({"type": "message", "to": b.id, "content": "across nodes", "client_id": "x1"}))
        .await;
    let ack = wa.recv_type("ack").await;
    let got = wb.recv_type("message").await;
    assert_eq!(
        (got["id"].clone(), got["content"].clone()),
        (ack["id"].clone(), json!("across nodes"))
    );

    wb.send(json!({"type": "typing", "to": a.id, "is_typing": true}))
        .await;
    assert_eq!(
        wa.recv_type("typing").await,
        json!({"type": "typing", "from": b.id, "is_typing": true})
    );

    wb.send(json!({"type": "mark_read", "message_id": got["id"]}))
        .await;
    assert_eq!(
        wa.recv_type("read_receipt").await,
        json!({"type": "read_receipt", "message_id": got["id"], "read_by": b.id})
    );

    // History is the same from any node.
    let (_, history) = n2
        .get(
            &format!("/messages/conversation?with_user={}", a.id),
            &b.token,
        )
        .await;
    assert_eq!(history["messages"][0]["id"], ack["id"]);
    assert_eq!(history["messages"][0]["is_read"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_on_two_nodes_receives_on_both() {
    let cluster = Cluster::start(2, &[]).await;
    let [n0, n1] = [&cluster.nodes[0], &cluster.nodes[1]];
    let (a, b) = (n0.new_user().await, n0.new_user().await);
    let mut b_on_0 = WsClient::connect(n0, &b.token).await;
    let mut b_on_1 = WsClient::connect(n1, &b.token).await;
    let mut a_on_1 = WsClient::connect(n1, &a.token).await;
    let mut a_on_0 = WsClient::connect(n0, &a.token).await;

    a_on_1
        .send(json!({"type": "message", "to": b.id, "content": "both devices"}))
        .await;
    let ack = a_on_1.recv_type("ack").await;
    assert_eq!(b_on_0.recv_type("message").await["id"], ack["id"]);
    assert_eq!(b_on_1.recv_type("message").await["id"], ack["id"]);
    // The sender's other device, on the other node, sees its own message.
    assert_eq!(a_on_0.recv_type("message").await["id"], ack["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_holds_while_any_node_has_a_session() {
    let cluster = Cluster::start(2, &[]).await;
    let [n0, n1] = [&cluster.nodes[0], &cluster.nodes[1]];
    let (a, b) = (n0.new_user().await, n0.new_user().await);
    n0.talk(&a, &b).await;
    let mut wa = WsClient::connect(n0, &a.token).await;
    wa.assert_usable().await;

    let b1 = WsClient::connect(n1, &b.token).await;
    assert_eq!(
        presence(&wa.recv().await),
        json!({"type": "user_online", "user_id": b.id})
    );
    let mut b0 = WsClient::connect(n0, &b.token).await;
    b0.assert_usable().await;
    // Presence records a session beside it (never delaying its frames).
    assert!(live_sessions_become(&cluster, b.id, 2).await);
    b1.close().await;
    wa.silent_for(Duration::from_millis(500)).await;
    let (_, profile) = n1.get(&format!("/users/{}", b.id), &a.token).await;
    assert_eq!(profile["is_online"], true, "still online through node 0");

    b0.close().await;
    assert_eq!(
        presence(&wa.recv().await),
        json!({"type": "user_offline", "user_id": b.id})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_nodes_users_go_offline_within_the_ttl() {
    let ttl = [("PRESENCE_TTL", "2s")];
    let cluster = Cluster::start(1, &ttl).await;
    let survivor = &cluster.nodes[0];
    let mut doomed = NodeProcess::start(&cluster.db, &cluster.prefix, &ttl).await;

    let watcher = survivor.new_user().await;
    let (gone, both) = (survivor.new_user().await, survivor.new_user().await);
    survivor.talk(&watcher, &gone).await;
    survivor.talk(&watcher, &both).await;
    let mut ww = WsClient::connect(survivor, &watcher.token).await;
    ww.assert_usable().await;

    let mut g = WsClient::connect_port(doomed.port, &gone.token).await;
    g.assert_usable().await;
    let mut b_doomed = WsClient::connect_port(doomed.port, &both.token).await;
    b_doomed.assert_usable().await;
    let mut b_survivor = WsClient::connect(survivor, &both.token).await;
    b_survivor.assert_usable().await;
    let mut online = HashSet::new();
    while online.len() < 2 {
        let frame = ww.recv_type("user_online").await;
        online.insert(frame["user_id"].as_str().unwrap().to_owned());
    }

    doomed.kill();
    let killed = Instant::now();
    let frame = tokio::time::timeout(Duration::from_secs(10), ww.recv())
        .await
        .expect("user_offline within the TTL plus a sweep");
    assert_eq!(
        presence(&frame),
        json!({"type": "user_offline", "user_id": gone.id})
    );
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "bound: ttl 2 s + sweep every ttl/3"
    );
    // No second notice, and no false offline for the user still on the survivor.
    ww.silent_for(Duration::from_secs(3)).await;
    let (_, profile) = survivor
        .get(&format!("/users/{}", gone.id), &watcher.token)
        .await;
    assert_eq!(profile["is_online"], false);
    let (_, profile) = survivor
        .get(&format!("/users/{}", both.id), &watcher.token)
        .await;
    assert_eq!(profile["is_online"], true);
}

/// Waits until presence in Redis holds `count` sessions of `user`.
async fn live_sessions_become(cluster: &Cluster, user: Uuid, count: usize) -> bool {
    let key = ochat::presence::redis::session_set_key(&cluster.prefix.0, user);
    let client = redis::Client::open(redis_url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    eventually(Duration::from_secs(5), || {
        let (key, mut conn) = (key.clone(), conn.clone());
        async move {
            let n: usize = redis::cmd("ZCARD")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            n == count
        }
    })
    .await
}

async fn last_id(ws: &mut WsClient) -> Value {
    ws.recv_type("message").await["id"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cut_loses_no_acked_message_and_delivery_resumes() {
    let redis = redis_url();
    let upstream = redis
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = Proxy::start(&upstream).await;
    let via_proxy = format!("redis://127.0.0.1:{}", proxy.port);
    let cluster = Cluster::start(2, &[("REDIS_URL", via_proxy.as_str())]).await;
    let [n0, n1] = [&cluster.nodes[0], &cluster.nodes[1]];
    let (a, b) = (n0.new_user().await, n0.new_user().await);
    let mut wa = WsClient::connect(n0, &a.token).await;
    let mut wb = WsClient::connect(n1, &b.token).await;
    wa.send(json!({"type": "message", "to": b.id, "content": "before"}))
        .await;
    wa.recv_type("ack").await;
    let seen = last_id(&mut wb).await;

    proxy.cut().await;
    // Sends are still committed and acked: history is the source of truth.
    let mut during = Vec::new();
    for i in 0..5 {
        wa.send(json!({"type": "message", "to": b.id, "content": format!("during {i}"), "client_id": format!("d{i}")})).await;
        during.push(wa.recv_type("ack").await["id"].clone());
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            reqwest::get(format!("{}/readyz", n1.base))
                .await
                .is_ok_and(|r| r.status() == 503)
        })
        .await,
        "readiness reports the outage"
    );

    proxy.restore();
    assert!(
        eventually(Duration::from_secs(20), || async {
            reqwest::get(format!("{}/readyz", n1.base))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await,
        "the node reconnects without a restart"
    );
    // Live delivery resumes.
    wa.send(json!({"type": "message", "to": b.id, "content": "after"}))
        .await;
    let after = wa.recv_type("ack").await["id"].clone();
    let live = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let frame = wb.recv_type("message").await;
            if frame["id"] == after {
                return frame;
            }
        }
    })
    .await
    .expect("live delivery after the reconnect");
    assert_eq!(live["content"], "after");

    // And sync from the last id seen before the cut fills the gap exactly.
    wb.send(json!({"type": "sync", "since": seen, "limit": 100}))
        .await;
    let page = wb.recv_type("sync").await;
    let ids: Vec<Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    let mut expected = during.clone();
    expected.push(after);
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_loss_is_unavailable_and_recovers() {
    let cluster = Cluster::start(2, &[]).await;
    let [n0, n1] = [&cluster.nodes[0], &cluster.nodes[1]];
    let (a, b) = (n0.new_user().await, n0.new_user().await);
    let mut wa = WsClient::connect(n0, &a.token).await;
    let outage = crate::helpers::StorageOutage::start(n0, Backend::Postgres).await;

    wa.send(json!({"type": "message", "to": b.id, "content": "lost?", "client_id": "pg1"}))
        .await;
    let frame = wa.recv().await;
    assert_eq!(
        (frame["type"].clone(), frame["code"].clone()),
        (json!("error"), json!("unavailable")),
        "{frame}"
    );
    let ready = reqwest::get(format!("{}/readyz", n1.base)).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        ready.json::<Value>().await.unwrap()["checks"]["database"],
        "down"
    );

    outage.end().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            reqwest::get(format!("{}/readyz", n1.base))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await
    );
    wa.send(json!({"type": "message", "to": b.id, "content": "retried", "client_id": "pg1"}))
        .await;
    let ack = wa.recv_type("ack").await;
    let (_, history) = n1
        .get(
            &format!("/messages/conversation?with_user={}", a.id),
            &b.token,
        )
        .await;
    let stored = history["messages"].as_array().unwrap();
    assert_eq!(stored.len(), 1, "nothing half-stored: {history}");
    assert_eq!(stored[0]["id"], ack["id"]);
}

/// Senders on both nodes send thousands of messages with client ids (and
/// retry some) while receivers keep disconnecting, reconnecting to the other
/// node and syncing. Every receiver must end up with exactly its stored set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_loss_and_no_duplicates_under_churn() {
    let limits = [
        ("RATE_LIMIT_PER_SEC", "100000"),
        ("RATE_LIMIT_BURST", "100000"),
    ];
    let cluster = Cluster::start(2, &limits).await;
    let ports = [cluster.nodes[0].port, cluster.nodes[1].port];
    let n0 = &cluster.nodes[0];
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..4 {
        senders.push(n0.new_user().await);
    }
    for _ in 0..3 {
        receivers.push(n0.new_user().await);
    }
    let per_sender = 500;
    let stop = tokio_util::sync::CancellationToken::new();

    let mut receiving = tokio::task::JoinSet::new();
    for (i, receiver) in receivers.iter().cloned().enumerate() {
        let stop = stop.clone();
        receiving.spawn(async move { churning_receiver(receiver, ports, i, stop).await });
    }
    let mut sending = tokio::task::JoinSet::new();
    for (i, sender) in senders.iter().cloned().enumerate() {
        let receivers: Vec<Uuid> = receivers.iter().map(|r| r.id).collect();
        sending
            .spawn(async move { sender_loop(sender, ports[i % 2], receivers, per_sender).await });
    }
    while let Some(result) = sending.join_next().await {
        result.unwrap();
    }
    stop.cancel();
    let mut seen: HashMap<Uuid, HashSet<String>> = HashMap::new();
    while let Some(result) = receiving.join_next().await {
        let (id, ids) = result.unwrap();
        seen.insert(id, ids);
    }

    let pool = sqlx::PgPool::connect(&cluster.db.url).await.unwrap();
    let (duplicates,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM (SELECT sender_id, client_id FROM messages GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(duplicates, 0);
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(total, (senders.len() * per_sender) as i64);
    for receiver in &receivers {
        let stored: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM messages WHERE receiver_id = $1")
                .bind(receiver.id)
                .fetch_all(&pool)
                .await
                .unwrap();
        let stored: HashSet<String> = stored.into_iter().map(|id| id.to_string()).collect();
        let missing: Vec<&String> = stored.difference(&seen[&receiver.id]).collect();
        let extra: Vec<&String> = seen[&receiver.id].difference(&stored).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "receiver {}: {} stored, missing {missing:?}, extra {extra:?}",
            receiver.id,
            stored.len()
        );
    }
    pool.close().await;
}

async fn sender_loop(sender: TestUser, port: u16, receivers: Vec<Uuid>, count: usize) {
    let mut ws = WsClient::connect_port(port, &sender.token).await;
    for i in 0..count {
        let to = receivers[i % receivers.len()];
        let frame = json!({"type": "message", "to": to, "content": format!("m{i}"), "client_id": format!("c{i}")});
        ws.send(frame.clone()).await;
        let ack = ws.recv_type("ack").await;
        if i % 10 == 0 {
            // A retry, as after a lost ack: must not create a second message.
            ws.send(frame).await;
            assert_eq!(ws.recv_type("ack").await["id"], ack["id"]);
        }
    }
}

/// Holds a session, drops it every so often, reconnects to the other node
/// and syncs from its sync cursor (the last id a `sync` returned: live
/// messages from two nodes may arrive out of commit order, so they never move
/// the cursor). Returns every id seen.
async fn churning_receiver(
    user: TestUser,
    ports: [u16; 2],
    start: usize,
    stop: tokio_util::sync::CancellationToken,
) -> (Uuid, HashSet<String>) {
    let mut seen = HashSet::new();
    let mut last: Option<String> = None;
    let mut turn = start;
    loop {
        let mut ws = WsClient::connect_port(ports[turn % 2], &user.token).await;
        turn += 1;
        sync_all(&mut ws, &mut seen, &mut last).await;
        let until =
            tokio::time::Instant::now() + Duration::from_millis(150 + 100 * (turn as u64 % 4));
        let stopping = loop {
            tokio::select! {
                () = stop.cancelled() => break true,
                () = tokio::time::sleep_until(until) => break false,
                frame = ws.recv() => {
                    if frame["type"] == "message" {
                        seen.insert(frame["id"].as_str().unwrap().to_owned());
                    }
                }
            }
        };
        if stopping {
            // One last catch-up after every sender finished.
            sync_all(&mut ws, &mut seen, &mut last).await;
            return (user.id, seen);
        }
        ws.close().await;
    }
}

async fn sync_all(ws: &mut WsClient, seen: &mut HashSet<String>, last: &mut Option<String>) {
    loop {
        ws.send(json!({"type": "sync", "since": last, "limit": 100}))
            .await;
        let page = ws.recv_type("sync").await;
        for m in page["messages"].as_array().unwrap() {
            let id = m["id"].as_str().unwrap().to_owned();
            *last = Some(id.clone());
            seen.insert(id);
        }
        if page["has_more"] != true {
            return;
        }
    }
}

/// The pub/sub connection is probed on a timer; a healthy connection must
/// never be mistaken for a dead one (which would drop live delivery while
/// it resubscribes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probing_a_healthy_pubsub_connection_keeps_it() {
    let cluster = Cluster::start(2, &[("REDIS_PROBE_INTERVAL", "50ms")]).await;
    let [n0, n1] = [&cluster.nodes[0], &cluster.nodes[1]];
    let (a, b) = (n0.new_user().await, n0.new_user().await);
    let mut wa = WsClient::connect(n0, &a.token).await;
    let mut wb = WsClient::connect(n1, &b.token).await;
    wb.assert_usable().await;
    for i in 0..20 {
        let ready = reqwest::get(format!("{}/readyz", n1.base)).await.unwrap();
        assert_eq!(
            ready.status(),
            200,
            "probe {i}: {}",
            ready.text().await.unwrap()
        );
        wa.send(json!({"type": "message", "to": b.id, "content": format!("tick {i}")}))
            .await;
        wa.recv_type("ack").await;
        assert_eq!(
            wb.recv_type("message").await["content"],
            format!("tick {i}")
        );
        // Paces the ticks over many 50 ms probes: the probes must run between them.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test]
async fn the_embedded_node_needs_no_redis() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    assert!(app.state.bus.describe().contains("in-process"));
}
