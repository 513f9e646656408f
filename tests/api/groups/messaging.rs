//! Messages in a group: every member's sessions on every node get them
//! once, history and unread counts are per member, read receipts reach the
//! sender, stats count them, and `sync` fills what an offline member missed.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::{Five, QUIET, group_message, history_ids, sync_all, unread_in};
use crate::both_backends;
use crate::helpers::wsclient::WsClient;
use crate::helpers::{Backend, Cluster};

both_backends!(
    a_group_message_reaches_every_members_sessions_on_both_nodes,
    a_repeated_client_id_gets_the_first_id_and_sends_nothing_new,
    members_on_either_node_page_through_the_same_history_oldest_first,
    unread_counts_are_per_member_and_own_messages_count_as_read,
    read_receipts_name_the_reader_and_reach_the_senders_devices_on_both_nodes,
    stats_count_group_messages,
);

/// Including the sender's other device; a group message has no `to`.
async fn a_group_message_reaches_every_members_sessions_on_both_nodes(backend: Backend) {
    let mut f = Five::start(backend).await;
    let first = f.a_says_hello().await;
    let (group, from) = (f.group, f.a.id);
    for (who, ws) in f.others_of_a() {
        let m = ws.recv_type("message").await;
        assert_eq!(m["id"], first, "{who}");
        assert_eq!(m["conversation_id"], json!(group), "{who}");
        assert_eq!(m["from"], json!(from), "{who}");
        assert_eq!(m["content"], "hello five", "{who}");
        assert!(
            m.get("to").is_none(),
            "{who}: a group message has no `to`: {m}"
        );
    }
}

async fn a_repeated_client_id_gets_the_first_id_and_sends_nothing_new(backend: Backend) {
    let mut f = Five::start(backend).await;
    let first = f.everyone_hears_hello().await;

    f.wa.send(group_message(f.group, "hello five", "k1")).await;
    assert_eq!(f.wa.recv_type("ack").await["id"], first);
    for ws in [
        &mut f.wa, &mut f.wa2, &mut f.wb, &mut f.wc, &mut f.wd, &mut f.we,
    ] {
        ws.none_of_type_for("message", QUIET).await;
    }
}

/// a's message from node 0 and c's four from node 1 (which d and c's other
/// device receive in order, see [`Five::five_messages`]) page the same,
/// oldest first, whatever the page size.
async fn members_on_either_node_page_through_the_same_history_oldest_first(backend: Backend) {
    let mut f = Five::start(backend).await;
    let sent = f.five_messages().await;
    let (n0, n1) = (f.nodes.node(0), f.nodes.node(1));

    assert_eq!(history_ids(n1, &f.d, f.group, 2).await, sent);
    assert_eq!(history_ids(n0, &f.a, f.group, 3).await, sent);
}

async fn unread_counts_are_per_member_and_own_messages_count_as_read(backend: Backend) {
    let mut f = Five::start(backend).await;
    f.five_messages().await;
    let (n0, n1) = (f.nodes.node(0), f.nodes.node(1));

    // d sent none of the five, c four of them, a one.
    assert_eq!(unread_in(n1, &f.d, f.group).await, 5);
    assert_eq!(unread_in(n1, &f.c, f.group).await, 1);
    assert_eq!(unread_in(n0, &f.a, f.group).await, 4);
}

/// Over the WebSocket and over REST: each receipt names the reader and the
/// group, and the reader's unread count drops.
async fn read_receipts_name_the_reader_and_reach_the_senders_devices_on_both_nodes(
    backend: Backend,
) {
    let mut f = Five::start(backend).await;
    let sent = f.five_messages().await;
    let (n0, n1) = (f.nodes.node(0), f.nodes.node(1));
    let first = sent[0].clone();

    // d (on node 1) reads a's message: both of a's devices hear it.
    f.wd.send(json!({"type": "mark_read", "message_id": first}))
        .await;
    for ws in [&mut f.wa, &mut f.wa2] {
        let receipt = ws.recv_type("read_receipt").await;
        assert_eq!(
            receipt,
            json!({"type": "read_receipt", "message_id": first, "read_by": f.d.id, "conversation_id": f.group})
        );
    }
    assert_eq!(unread_in(n1, &f.d, f.group).await, 4);

    // e (on node 0) reads all five over REST: c hears of its four.
    let (status, body) = n0
        .post(
            "/messages/mark-read",
            &f.e.token,
            &json!({"message_ids": sent}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"updated": 5})));
    let mut readers = HashSet::new();
    for _ in 0..4 {
        let receipt = f.wc.recv_type("read_receipt").await;
        assert_eq!(receipt["read_by"], json!(f.e.id));
        readers.insert(receipt["message_id"].clone());
    }
    assert_eq!(readers, sent[1..].iter().cloned().collect());
    assert_eq!(unread_in(n0, &f.e, f.group).await, 0);
}

/// What a member received, has not read and sent, counting group messages.
async fn stats_count_group_messages(backend: Backend) {
    let mut f = Five::start(backend).await;
    let sent = f.five_messages().await;
    let n1 = f.nodes.node(1);
    // d has read a's message, not c's four.
    let (status, body) = n1
        .post(
            "/messages/mark-read",
            &f.d.token,
            &json!({"message_ids": [sent[0]]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (_, stats) = n1.get("/messages/stats", &f.d.token).await;
    assert_eq!(stats["total_received"], 5);
    assert_eq!(stats["unread"], 4);
    let (_, stats) = n1.get("/messages/stats", &f.c.token).await;
    assert_eq!(
        (stats["total_sent"].clone(), stats["total_received"].clone()),
        (json!(4), json!(1))
    );
}

/// `sync` after missing messages in two groups and a direct conversation,
/// sent concurrently on two nodes: exactly the missed ones, numbered
/// without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_covers_groups_and_direct_without_gaps() {
    let cluster = Cluster::start(2, &[]).await;
    let (n0, n1) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (u, s1, s2, s3) = (
        n0.new_user().await,
        n0.new_user().await,
        n1.new_user().await,
        n1.new_user().await,
    );
    let g1 = n0.create_group(&s1, "One", &[&u, &s2]).await;
    let g2 = n1.create_group(&s2, "Two", &[&u, &s3]).await;
    // Seen before the cursor is taken: never returned again.
    let seen = [
        n0.send_to_group(&s1, g1, "seen 1").await.id,
        n1.send(&s3, &u, "seen 2").await.id,
    ];

    let mut ws = WsClient::connect(n0, &u.token).await;
    let (first, _) = sync_all(&mut ws, None).await;
    let cursor = first.last().map(|m| m["id"].clone());
    assert!(
        seen.iter()
            .all(|id| first.iter().any(|m| m["id"] == json!(id)))
    );
    ws.close().await;

    // u is offline while four senders write concurrently on both nodes.
    const EACH: usize = 25;
    let (a, b, c, d) = tokio::join!(
        async {
            let mut ids = Vec::new();
            for k in 0..EACH {
                ids.push(n0.send_to_group(&s1, g1, &format!("g1 s1 {k}")).await.id);
            }
            ids
        },
        async {
            let mut ids = Vec::new();
            for k in 0..EACH {
                ids.push(n1.send_to_group(&s2, g1, &format!("g1 s2 {k}")).await.id);
            }
            ids
        },
        async {
            let mut ids = Vec::new();
            for k in 0..EACH {
                ids.push(n1.send_to_group(&s3, g2, &format!("g2 s3 {k}")).await.id);
            }
            ids
        },
        async {
            let mut ids = Vec::new();
            for k in 0..EACH {
                ids.push(n0.send(&s1, &u, &format!("direct {k}")).await.id);
            }
            ids
        },
    );
    // The direct messages open a conversation with s1 too.
    let missed: HashSet<Value> = [a, b, c, d]
        .concat()
        .into_iter()
        .map(|id| json!(id))
        .collect();
    assert_eq!(missed.len(), 4 * EACH);

    let mut ws = WsClient::connect(n1, &u.token).await;
    let (got, seqs) = sync_all(&mut ws, cursor).await;
    let got_ids: Vec<Value> = got.iter().map(|m| m["id"].clone()).collect();
    let unique: HashSet<Value> = got_ids.iter().cloned().collect();
    assert_eq!(unique.len(), got_ids.len(), "no message twice");
    assert_eq!(unique, missed, "exactly the missed messages");
    let start = seqs[0];
    assert_eq!(
        seqs,
        (start..start + seqs.len() as i64).collect::<Vec<_>>(),
        "u's numbers run without a gap"
    );
    assert!(got.iter().filter(|m| m.get("to").is_none()).count() == 3 * EACH);
}
