//! Changes under faults, as messages are tested: a Redis outage between the
//! nodes, and a node killed with a change in flight. Nothing acknowledged
//! is lost, nothing is applied or delivered twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::wsclient::WsClient;
use crate::helpers::{Cluster, NodeProcess, eventually};
use crate::realtime::{ready, two_nodes_behind_a_redis_proxy};

const CHANGES: [&str; 3] = ["message_updated", "reaction_added", "message_deleted"];

/// Changes made while the nodes cannot reach Redis reach the other node's
/// sessions once it is back (catch-up reads them from storage), each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_during_a_redis_outage_arrive_live_after_it_once() {
    let (cluster, proxy) = two_nodes_behind_a_redis_proxy().await;
    let [n0, n1] = [&cluster.nodes[0], &cluster.nodes[1]];
    let (a, b) = (n0.new_user().await, n0.new_user().await);
    let mut wa = WsClient::connect(n0, &a.token).await;
    let mut wb = WsClient::connect(n1, &b.token).await;
    let (edited, reacted, deleted) = (
        say(&mut wa, b.id, "one", "m1").await,
        say(&mut wa, b.id, "two", "m2").await,
        say(&mut wa, b.id, "three", "m3").await,
    );
    for _ in 0..3 {
        wb.recv_type("message").await;
    }

    proxy.cut().await;
    let changes = [
        json!({"type":"edit","message_id":edited,"content":"one, edited","client_id":"c1"}),
        json!({"type":"react","message_id":reacted,"emoji":"👍","client_id":"c2"}),
        json!({"type":"delete","message_id":deleted,"client_id":"c3"}),
    ];
    for change in changes {
        wa.send(change).await;
        assert_eq!(wa.recv_type_of(&["ack", "error"]).await["type"], "ack");
    }
    assert!(
        eventually(Duration::from_secs(10), || async { !ready(n1).await }).await,
        "the node noticed the outage"
    );
    proxy.restore();
    assert!(
        eventually(Duration::from_secs(20), || async { ready(n1).await }).await,
        "the node is back on Redis"
    );
    let healthy = Instant::now();
    let mut got: HashMap<String, u32> = HashMap::new();
    while !CHANGES.iter().all(|k| got.contains_key(*k)) {
        let left = Duration::from_secs(3).saturating_sub(healthy.elapsed());
        let frame = tokio::time::timeout(left, wb.recv_type_of(&CHANGES))
            .await
            .unwrap_or_else(|_| panic!("only {got:?} arrived within 3 s of recovery"));
        *got.entry(frame["type"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for kind in CHANGES {
        wb.none_of_type_for(kind, Duration::from_millis(500)).await;
    }
    assert!(got.values().all(|n| *n == 1), "{got:?}");
}

/// A node killed while an edit is in flight: the client retries it with the
/// same `client_id` on another node, is acked, and the edit is stored and
/// delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_retried_after_its_node_dies_is_applied_once() {
    let cluster = Cluster::start(1, &[]).await;
    let survivor = &cluster.nodes[0];
    let mut doomed = NodeProcess::start(&cluster.db, &cluster.prefix, &[]).await;
    let (a, b) = (survivor.new_user().await, survivor.new_user().await);
    let mut wa = WsClient::connect(survivor, &a.token).await;
    let mut wb = WsClient::connect(survivor, &b.token).await;
    let id = say(&mut wa, b.id, "first draft", "m1").await;
    wb.recv_type("message").await;

    let edit = json!({"type":"edit","message_id":id,"content":"final","client_id":"e1"});
    let mut on_doomed = WsClient::connect_port(doomed.port, &a.token).await;
    on_doomed.send(edit.clone()).await;
    doomed.kill();

    wa.send(edit).await;
    let ack = wa.recv_type_of(&["ack", "error"]).await;
    assert_eq!((&ack["type"], &ack["id"]), (&json!("ack"), &id));
    // A message after it: if the dead node committed the edit and never
    // published it, the gap this opens is healed from storage.
    say(&mut wa, b.id, "after", "m2").await;
    let mut edits = 0;
    loop {
        let frame = wb.recv_type_of(&["message", "message_updated"]).await;
        if frame["type"] == "message_updated" {
            assert_eq!(frame["content"], "final");
            edits += 1;
        } else if frame["content"] == "after" {
            break;
        }
    }
    // A healed edit comes after the message that revealed the gap.
    while let Some(frame) = wb.next_within(Duration::from_secs(2)).await {
        if frame["type"] == "message_updated" {
            edits += 1;
        }
    }
    assert_eq!(edits, 1, "the edit reaches b live exactly once");

    // Storage holds it once: b's sequence shows one edit.
    wb.send(json!({"type":"sync","cursor":0})).await;
    let page = wb.recv_type("sync").await;
    let kinds: Vec<&str> = page["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["message_updated"]);
}

async fn say(ws: &mut WsClient, to: uuid::Uuid, content: &str, key: &str) -> Value {
    ws.send(json!({"type":"message","to":to,"content":content,"client_id":key}))
        .await;
    ws.recv_type("ack").await["id"].clone()
}
