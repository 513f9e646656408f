//! Faults under load: a master killed and slots resharded while senders on
//! both nodes keep sending; nothing acked is lost or stored twice, and live
//! delivery heals without `sync`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::ClusterNodes;
use crate::helpers::wsclient::WsClient;
use crate::helpers::{LocalCluster, TestApp, TestDatabase, TestUser, eventually};

/// Senders on both nodes send a message every 20 ms to receivers on the
/// other node while `fault` runs. Afterwards every acked message is stored
/// exactly once and reached its receiver live (the test client never sends
/// `sync`) within a few seconds. Returns the clients, still connected.
async fn load_through(
    apps: &[TestApp],
    db: &TestDatabase,
    pairs: &[(TestUser, TestUser)],
    fault: impl std::future::Future<Output = ()>,
) -> Vec<WsClient> {
    let stop = CancellationToken::new();
    let end = CancellationToken::new();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut seen_by_pair = Vec::new();
    for (i, (from, to)) in pairs.iter().enumerate() {
        let (sender_node, receiver_node) = (&apps[i % 2], &apps[(i + 1) % 2]);
        let mut rx = WsClient::connect(receiver_node, &to.token).await;
        let mut tx = WsClient::connect(sender_node, &from.token).await;
        let seen = Arc::new(Mutex::new(HashSet::<String>::new()));
        seen_by_pair.push(seen.clone());
        let end = end.clone();
        receivers.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = end.cancelled() => break,
                    frame = rx.next_within(Duration::from_millis(500)) => {
                        if let Some(frame) = frame.filter(|f| f["type"] == "message") {
                            seen.lock().unwrap().insert(frame["id"].as_str().unwrap().to_owned());
                        }
                    }
                }
            }
            rx
        }));
        let (to_id, stop) = (to.id, stop.clone());
        senders.push(tokio::spawn(async move {
            let mut acked = HashSet::new();
            let (mut sent, mut answered) = (0u32, 0u32);
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let deadline = Instant::now() + Duration::from_secs(120);
            while (!stop.is_cancelled() || answered < sent) && Instant::now() < deadline {
                tokio::select! {
                    _ = tick.tick(), if !stop.is_cancelled() => {
                        sent += 1;
                        tx.send(json!({"type": "message", "to": to_id,
                            "content": format!("m{sent}"), "client_id": format!("c{sent}")}))
                            .await;
                    }
                    frame = tx.next_within(Duration::from_millis(500)) => {
                        let Some(frame) = frame else { continue };
                        match frame["type"].as_str() {
                            Some("ack") => {
                                answered += 1;
                                let id = frame["id"].as_str().unwrap().to_owned();
                                assert!(acked.insert(id), "one ack per send");
                            }
                            // Not stored (`unavailable`): a client would resend.
                            Some("error") => answered += 1,
                            _ => {}
                        }
                    }
                    () = tokio::time::sleep(Duration::from_millis(50)), if stop.is_cancelled() => {}
                }
            }
            assert_eq!(answered, sent, "every send was answered");
            (acked, tx)
        }));
    }
    // Lets the load run before the fault.
    tokio::time::sleep(Duration::from_secs(1)).await;
    fault.await;
    // Keeps the load running after the fault, so sends also cross the healed cluster.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let mut acked_by_pair = Vec::new();
    let mut clients = Vec::new();
    for sender in senders {
        let (acked, client) = sender.await.unwrap();
        acked_by_pair.push(acked);
        clients.push(client);
    }
    let total: usize = acked_by_pair.iter().map(HashSet::len).sum();
    assert!(total > 100, "the load ran ({total} acked)");

    // Stored exactly once: every acked id, no client_id twice.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let ids: Vec<String> = acked_by_pair.iter().flatten().cloned().collect();
    let (stored, rows, distinct): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM messages WHERE id::text = ANY($1)),
                count(*), count(DISTINCT (sender_id, client_id)) FROM messages",
    )
    .bind(&ids)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored as usize, total, "every acked message is stored");
    assert_eq!(rows, distinct, "no message stored twice");

    // Live delivery healed itself: everything acked arrived, without sync.
    let healed = eventually(Duration::from_secs(8), || async {
        acked_by_pair
            .iter()
            .zip(&seen_by_pair)
            .all(|(acked, seen)| acked.is_subset(&seen.lock().unwrap()))
    })
    .await;
    end.cancel();
    let missing: usize = acked_by_pair
        .iter()
        .zip(&seen_by_pair)
        .map(|(acked, seen)| acked.difference(&seen.lock().unwrap()).count())
        .sum();
    if !healed {
        // What a reader of a failure needs: which messages, and where they
        // stand in their receiver's sequence.
        for ((_, to), (acked, seen)) in pairs.iter().zip(acked_by_pair.iter().zip(&seen_by_pair)) {
            let seen = seen.lock().unwrap().clone();
            for id in acked.difference(&seen) {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT id::text, created_at::text FROM messages WHERE receiver_id = $1 ORDER BY created_at",
                )
                .bind(to.id)
                .fetch_all(&pool)
                .await
                .unwrap();
                let at = rows.iter().position(|(m, _)| m == id);
                eprintln!(
                    "missing {id} for {}: position {at:?} of {} stored; created {:?}",
                    to.id,
                    rows.len(),
                    at.map(|i| rows[i].1.clone())
                );
            }
        }
    }
    assert!(
        healed,
        "{missing} of {total} acked messages never arrived live"
    );
    for receiver in receivers {
        clients.push(receiver.await.unwrap());
    }
    clients
}

/// Pairs of users, senders and receivers spread over every shard.
async fn pairs_over_shards(nodes: &ClusterNodes, n: usize) -> Vec<(TestUser, TestUser)> {
    let mut pairs = Vec::new();
    // Receivers go round the shards (drawn at random, all six could land
    // on one shard now and then).
    let masters = nodes.cluster.masters().len();
    let mut shards = HashSet::new();
    for i in 0..n {
        if shards.len() == masters {
            shards.clear();
        }
        let to = nodes.user_off(1 - i % 2, &mut shards).await;
        let from = nodes.nodes[i % 2].new_user().await;
        pairs.push((from, to));
    }
    let mut where_: HashSet<String> = HashSet::new();
    for (_, to) in &pairs {
        where_.insert(nodes.shard_of(to.id).await);
    }
    assert!(where_.len() >= 2, "receivers on several shards");
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_loses_nothing_and_heals_delivery() {
    let _turn = crate::helpers::HEAVY.lock().await;
    let mut nodes = ClusterNodes::start().await;
    let pairs = pairs_over_shards(&nodes, 6).await;
    // The master that serves the first receiver's channel.
    let victim = nodes.shard_of(pairs[0].1.id).await;
    let victim_port: u16 = victim.rsplit(':').next().unwrap().parse().unwrap();
    let cluster = &mut nodes.cluster;
    let _connected = load_through(&nodes.nodes, &nodes.db, &pairs, async {
        cluster.kill(victim_port);
        let cluster: &LocalCluster = cluster;
        let promoted = eventually(Duration::from_secs(20), || async move {
            let masters = cluster.masters();
            masters.len() == 3 && masters.iter().all(|(p, _, _)| *p != victim_port)
        })
        .await;
        assert!(promoted, "a replica took over from the killed master");
    })
    .await;

    for node in &nodes.nodes {
        // A node re-reads the slot map on its own schedule; with the whole
        // suite loading both cores a CLUSTER SLOTS can time out once first.
        let ready = eventually(Duration::from_secs(20), || async {
            reqwest::get(format!("{}/readyz", node.base))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        let body = reqwest::get(format!("{}/readyz", node.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            ready,
            "nodes are ready again on the promoted replica: {body}"
        );
    }

    // Presence converges: everyone still connected is online, from any node.
    for user in pairs.iter().flat_map(|(from, to)| [from, to]) {
        for node in &nodes.nodes {
            let online = eventually(Duration::from_secs(10), || async {
                let (_, profile) = node.get(&format!("/users/{}", user.id), &user.token).await;
                profile["is_online"] == true
            })
            .await;
            let (_, profile) = node.get(&format!("/users/{}", user.id), &user.token).await;
            assert!(
                online,
                "a connected user stays online through the failover: {profile}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_resharded_under_load_lose_nothing_and_heal_delivery() {
    let _turn = crate::helpers::HEAVY.lock().await;
    let nodes = ClusterNodes::start().await;
    let pairs = pairs_over_shards(&nodes, 6).await;
    // Every slot of the first receiver's shard moves to another master, so
    // that receiver's subscription must follow its slot.
    let from = nodes.shard_of(pairs[0].1.id).await;
    let masters = nodes.cluster.masters();
    let from_master = masters
        .iter()
        .find(|(p, _, _)| from.ends_with(&format!(":{p}")))
        .expect("the shard's master")
        .clone();
    let to_master = masters
        .iter()
        .find(|m| m.0 != from_master.0)
        .unwrap()
        .clone();
    let _connected = load_through(&nodes.nodes, &nodes.db, &pairs, async {
        let cluster = &nodes.cluster;
        let (from_id, to_id, slots) = (from_master.1.clone(), to_master.1.clone(), from_master.2);
        tokio::task::block_in_place(|| cluster.reshard(&from_id, &to_id, slots));
    })
    .await;
    assert_ne!(
        nodes.shard_of(pairs[0].1.id).await,
        from,
        "the receiver's channel moved to another shard"
    );
}
