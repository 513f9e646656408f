//! Nodes on a cluster: two nodes chatting over a local Redis Cluster
//! (messages, typing and presence across shards, readiness and per-shard
//! metrics), and bad cluster configuration stopping start-up with one
//! clear line.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use super::ClusterNodes;
use crate::helpers::wsclient::{WsClient, presence};
use crate::helpers::{OwnRedis, TEST_SECRET, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_chat_over_a_redis_cluster() {
    let _turn = crate::helpers::HEAVY.lock().await;
    let nodes = ClusterNodes::start().await;
    let [n0, n1] = [&nodes.nodes[0], &nodes.nodes[1]];
    let mut shards = HashSet::new();
    let a = nodes.user_off(0, &mut shards).await;
    let b = nodes.user_off(1, &mut shards).await;
    let c = nodes.user_off(0, &mut shards).await;
    assert_eq!(shards.len(), 3, "a, b and c live on three shards");

    let mut wa = WsClient::connect(n0, &a.token).await;
    let mut wb = WsClient::connect(n1, &b.token).await;
    // c on both nodes: two devices.
    let mut wc0 = WsClient::connect(n0, &c.token).await;
    let mut wc1 = WsClient::connect(n1, &c.token).await;

    wa.send(json!({"type": "message", "to": b.id, "content": "across shards", "client_id": "m1"}))
        .await;
    let ack = wa.recv_type("ack").await;
    let got = wb.recv_type("message").await;
    assert_eq!(
        (got["id"].clone(), got["content"].clone()),
        (ack["id"].clone(), json!("across shards"))
    );

    wb.send(json!({"type": "message", "to": c.id, "content": "to both devices"}))
        .await;
    let ack = wb.recv_type("ack").await;
    assert_eq!(wc0.recv_type("message").await["id"], ack["id"]);
    assert_eq!(wc1.recv_type("message").await["id"], ack["id"]);
    // c answers from node 1; its device on node 0 sees its own message.
    wc1.send(json!({"type": "message", "to": b.id, "content": "back"}))
        .await;
    let ack = wc1.recv_type("ack").await;
    assert_eq!(wb.recv_type("message").await["id"], ack["id"]);
    assert_eq!(wc0.recv_type("message").await["id"], ack["id"]);

    // Typing crosses nodes and shards.
    wb.send(json!({"type": "typing", "to": a.id, "is_typing": true}))
        .await;
    assert_eq!(
        wa.recv_type("typing").await,
        json!({"type": "typing", "from": b.id, "is_typing": true})
    );

    // b answers a, so a hears of b's presence.
    wb.send(json!({"type": "message", "to": a.id, "content": "hi a"}))
        .await;
    wb.recv_type("ack").await;
    wa.recv_type("message").await;

    // Presence: b leaves and comes back on the other node; a is told both.
    wb.close().await;
    let offline = wa.recv_type("user_offline").await;
    assert_eq!(
        presence(&offline),
        json!({"type": "user_offline", "user_id": b.id})
    );
    let mut wb = WsClient::connect(n0, &b.token).await;
    let online = wa.recv_type("user_online").await;
    assert_eq!(
        presence(&online),
        json!({"type": "user_online", "user_id": b.id})
    );
    let (_, profile) = n1.get(&format!("/users/{}", b.id), &a.token).await;
    assert_eq!(profile["is_online"], true);
    wb.assert_usable().await;

    // Readiness names the backends; metrics have a per-shard view without
    // user ids.
    let ready = reqwest::get(format!("{}/readyz", n0.base)).await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = reqwest::get(format!(
        "http://127.0.0.1:{}/metrics",
        n0.metrics_port.unwrap()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    for (port, _, _) in nodes.cluster.masters() {
        let shard = format!("shard=\"127.0.0.1:{port}\"");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("ochat_redis_shard_publishes_total") && l.contains(&shard)),
            "publishes counted for {shard}"
        );
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("ochat_redis_shard_subscriptions") && l.contains(&shard)),
            "subscriptions counted for {shard}"
        );
    }
    for user in [a.id, b.id, c.id] {
        assert!(
            !metrics.contains(&user.to_string()),
            "no user id in metrics"
        );
    }

    // A shard with no master left (its master and replica both killed):
    // readiness fails, naming the failing part (the bus) but no address,
    // since /readyz is public; the shard is named in the metrics.
    let mut cluster = nodes.cluster;
    let (port, id, _) = cluster.masters()[0].clone();
    let replica = cluster.replica_of(&id);
    cluster.kill(replica);
    cluster.kill(port);
    let shard = format!("shard=\"127.0.0.1:{port}\"");
    let metrics_url = format!("http://127.0.0.1:{}/metrics", n0.metrics_port.unwrap());
    let named = eventually(Duration::from_secs(15), || async {
        let ready = reqwest::get(format!("{}/readyz", n0.base)).await.unwrap();
        let status = ready.status();
        let body: serde_json::Value = ready.json().await.unwrap();
        let metrics = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        status == 503
            && body["checks"]["bus"] == "down"
            && metrics.lines().any(|l| {
                l.starts_with("ochat_redis_shard_errors_total")
                    && l.contains("op=\"ping\"")
                    && l.contains(&shard)
            })
    })
    .await;
    let body = reqwest::get(format!("{}/readyz", n0.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        named,
        "readiness fails and metrics name the dead shard ({shard}): {body}"
    );
    assert!(
        !body.contains("127.0.0.1"),
        "the public readiness body names no address: {body}"
    );
}

/// `ochat serve` with `env`: its exit code and the lines it printed to
/// stderr that start with `ochat:`.
fn serve_fails(env: &[(&str, &str)]) -> (Option<i32>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ochat"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("JWT_SECRET", TEST_SECRET)
        .env("SERVER_PORT", "0")
        .env("METRICS_PORT", "off")
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .output()
        .expect("run ochat");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = stderr
        .lines()
        .filter(|l| l.starts_with("ochat:"))
        .map(str::to_owned)
        .collect();
    (out.status.code(), lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cluster_config_stops_start_up_with_one_clear_line() {
    // Both kinds at once.
    let (code, lines) = serve_fails(&[
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("REDIS_CLUSTER_URLS", "redis://127.0.0.1:7000"),
    ]);
    assert_eq!(code, Some(2));
    assert_eq!(
        lines,
        [
            "ochat: invalid REDIS_CLUSTER_URLS: set either REDIS_URL (one Redis) or REDIS_CLUSTER_URLS (a Redis Cluster), not both"
        ]
    );

    // Seed nodes nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let seeds = format!("redis://127.0.0.1:{port}");
    let (code, lines) = serve_fails(&[("REDIS_CLUSTER_URLS", &seeds)]);
    assert_eq!(code, Some(1));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("ochat: Failed to connect to Redis Cluster (REDIS_CLUSTER_URLS): "),
        "{lines:?}"
    );

    // A single Redis (of this test's own) given as a cluster.
    let single = OwnRedis::start().await;
    let (code, lines) = serve_fails(&[("REDIS_CLUSTER_URLS", &single.url())]);
    assert_eq!(code, Some(1));
    assert_eq!(
        lines,
        [
            "ochat: Failed to connect to Redis Cluster (REDIS_CLUSTER_URLS): the seed nodes are not in cluster mode (cluster support disabled); use REDIS_URL for a single Redis"
        ]
    );
}
