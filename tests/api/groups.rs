//! Group conversations end to end: REST and WebSocket on real nodes, both
//! stores; several nodes sharing Postgres and Redis where the test is about
//! nodes.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{Backend, Cluster, TestApp, TestUser};
use crate::wsclient::WsClient;

both_backends!(
    five_members_chat_across_nodes,
    membership_rules_hold_everywhere,
    limits_and_bad_input_get_exact_errors,
    existing_direct_chats_survive_the_migration,
    presence_typing_lists_and_search_cover_groups,
    creation_and_renames_reach_members_live,
);

/// Two nodes sharing Postgres and Redis; the embedded store is one node by
/// design, so there the one node plays both parts.
enum Nodes {
    Cluster(Cluster),
    Single(TestApp),
}

impl Nodes {
    async fn start(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => Self::Cluster(Cluster::start(2, &[]).await),
            Backend::Sqlite => Self::Single(TestApp::spawn(backend).await),
        }
    }

    fn node(&self, i: usize) -> &TestApp {
        match self {
            Self::Cluster(c) => &c.nodes[i % c.nodes.len()],
            Self::Single(app) => app,
        }
    }
}

const QUIET: Duration = Duration::from_millis(400);

fn group_message(group: Uuid, content: &str, client_id: &str) -> Value {
    json!({"type": "message", "conversation_id": group, "content": content, "client_id": client_id})
}

async fn unread_in(app: &TestApp, user: &TestUser, group: Uuid) -> i64 {
    let (status, list) = app.get("/messages/conversations", &user.token).await;
    assert_eq!(status, 200, "{list}");
    let entry = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["conversation_id"] == json!(group))
        .unwrap_or_else(|| panic!("{group} missing from {list}"))
        .clone();
    assert_eq!(entry["kind"], "group");
    entry["unread_count"].as_i64().unwrap()
}

async fn history_ids(app: &TestApp, user: &TestUser, group: Uuid, limit: u32) -> Vec<Value> {
    let mut ids = Vec::new();
    let mut before: Option<Value> = None;
    loop {
        let path = match &before {
            None => format!("/messages/conversation?conversation_id={group}&limit={limit}"),
            Some(b) => format!(
                "/messages/conversation?conversation_id={group}&limit={limit}&before={}",
                b.as_str().unwrap()
            ),
        };
        let (status, page) = app.get(&path, &user.token).await;
        assert_eq!(status, 200, "{page}");
        let messages = page["messages"].as_array().unwrap();
        assert!(messages.len() <= limit as usize);
        let mut page_ids: Vec<Value> = messages.iter().map(|m| m["id"].clone()).collect();
        page_ids.extend(ids);
        ids = page_ids;
        if page["has_more"] == false {
            return ids;
        }
        before = Some(messages[0]["id"].clone());
    }
}

async fn five_members_chat_across_nodes(backend: Backend) {
    let nodes = Nodes::start(backend).await;
    let (n0, n1) = (nodes.node(0), nodes.node(1));
    let (a, b, c, d, e) = (
        n0.new_user().await,
        n0.new_user().await,
        n1.new_user().await,
        n1.new_user().await,
        n0.new_user().await,
    );
    let group = n0.create_group(&a, "Five", &[&b, &c, &d, &e]).await;

    // a has a device on each node; the others are spread over both.
    let mut wa = WsClient::connect(n0, &a.token).await;
    let mut wa2 = WsClient::connect(n1, &a.token).await;
    let mut wb = WsClient::connect(n0, &b.token).await;
    let mut wc = WsClient::connect(n1, &c.token).await;
    let mut wc2 = WsClient::connect(n0, &c.token).await;
    let mut wd = WsClient::connect(n1, &d.token).await;
    let mut we = WsClient::connect(n0, &e.token).await;

    wa.send(group_message(group, "hello five", "k1")).await;
    let ack = wa.recv_type("ack").await;
    assert_eq!(ack["client_id"], "k1");
    let first = ack["id"].clone();
    for (who, ws) in [
        ("a's other device", &mut wa2),
        ("b", &mut wb),
        ("c", &mut wc),
        ("c's other device", &mut wc2),
        ("d", &mut wd),
        ("e", &mut we),
    ] {
        let m = ws.recv_type("message").await;
        assert_eq!(m["id"], first, "{who}");
        assert_eq!(m["conversation_id"], json!(group), "{who}");
        assert_eq!(m["from"], json!(a.id), "{who}");
        assert_eq!(m["content"], "hello five", "{who}");
        assert!(
            m.get("to").is_none(),
            "{who}: a group message has no `to`: {m}"
        );
    }

    // The same client_id again: the first message's id, nothing new sent.
    wa.send(group_message(group, "hello five", "k1")).await;
    assert_eq!(wa.recv_type("ack").await["id"], first);
    for ws in [&mut wa, &mut wa2, &mut wb, &mut wc, &mut wd, &mut we] {
        ws.none_of_type_for("message", QUIET).await;
    }

    // c (on node 1) sends four more.
    let mut sent = vec![first.clone()];
    for k in 0..4 {
        wc.send(group_message(
            group,
            &format!("from c {k}"),
            &format!("c{k}"),
        ))
        .await;
        sent.push(wc.recv_type("ack").await["id"].clone());
    }
    for k in 0..4 {
        assert_eq!(wd.recv_type("message").await["id"], sent[k + 1]);
        assert_eq!(wc2.recv_type("message").await["id"], sent[k + 1]);
    }

    // History pages, oldest first, for a member on either node.
    assert_eq!(history_ids(n1, &d, group, 2).await, sent);
    assert_eq!(history_ids(n0, &a, group, 3).await, sent);

    // Unread counts are per member; a member's own messages are read.
    assert_eq!(unread_in(n1, &d, group).await, 5);
    assert_eq!(unread_in(n1, &c, group).await, 1);
    assert_eq!(unread_in(n0, &a, group).await, 4);

    // Read receipts name the reader and the group, and reach the sender's
    // devices on both nodes.
    wd.send(json!({"type": "mark_read", "message_id": first}))
        .await;
    for ws in [&mut wa, &mut wa2] {
        let receipt = ws.recv_type("read_receipt").await;
        assert_eq!(
            receipt,
            json!({"type": "read_receipt", "message_id": first, "read_by": d.id, "conversation_id": group})
        );
    }
    assert_eq!(unread_in(n1, &d, group).await, 4);
    let (status, body) = n0
        .post(
            "/messages/mark-read",
            &e.token,
            &json!({"message_ids": sent}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"updated": 5})));
    let mut readers = HashSet::new();
    for _ in 0..4 {
        let receipt = wc.recv_type("read_receipt").await;
        assert_eq!(receipt["read_by"], json!(e.id));
        readers.insert(receipt["message_id"].clone());
    }
    assert_eq!(readers, sent[1..].iter().cloned().collect());
    assert_eq!(unread_in(n0, &e, group).await, 0);

    // Typing reaches every other member's sessions, not the typist's.
    wb.send(json!({"type": "typing", "conversation_id": group, "is_typing": true}))
        .await;
    for ws in [&mut wa, &mut wa2, &mut wc, &mut wd, &mut we] {
        assert_eq!(
            ws.recv_type("typing").await,
            json!({"type": "typing", "from": b.id, "is_typing": true, "conversation_id": group})
        );
    }
    wb.none_of_type_for("typing", QUIET).await;

    // Stats count group messages.
    let (_, stats) = n1.get("/messages/stats", &d.token).await;
    assert_eq!(stats["total_received"], 5);
    assert_eq!(stats["unread"], 4);
    let (_, stats) = n1.get("/messages/stats", &c.token).await;
    assert_eq!(
        (stats["total_sent"].clone(), stats["total_received"].clone()),
        (json!(4), json!(1))
    );

    // c is removed on node 0: both of c's sessions hear it, then nothing
    // sent afterwards reaches them, on either node.
    let (status, _) = n0
        .delete(
            &format!("/conversations/{group}/members/{}", c.id),
            &a.token,
        )
        .await;
    assert_eq!(status, 204);
    for ws in [&mut wc, &mut wc2] {
        assert_eq!(
            ws.recv_type("member_removed").await,
            json!({"type": "member_removed", "conversation_id": group, "user_id": c.id, "by": a.id})
        );
    }
    wd.send(group_message(group, "after c left", "d1")).await;
    let after = wd.recv_type("ack").await["id"].clone();
    assert_eq!(wb.recv_type("message").await["id"], after);
    wc.none_of_type_for("message", QUIET).await;
    wc2.none_of_type_for("message", QUIET).await;
    // c keeps what reached them, and no more, in history and in search.
    assert_eq!(history_ids(n1, &c, group, 10).await, sent);
    let search_ids = |body: Value| -> Vec<Value> {
        body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].clone())
            .collect()
    };
    let (_, hits) = n1.get("/messages/search?query=hello+five", &c.token).await;
    assert_eq!(search_ids(hits), vec![first.clone()]);
    let (_, hits) = n1.get("/messages/search?query=after", &c.token).await;
    assert_eq!(search_ids(hits), Vec::<Value>::new());
    let (_, hits) = n0.get("/messages/search?query=after", &b.token).await;
    assert_eq!(search_ids(hits), vec![after.clone()]);
}

/// Presence and typing reach co-members of small groups only; the
/// conversation list, search and stats include groups.
async fn presence_typing_lists_and_search_cover_groups(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("PRESENCE_GROUP_LIMIT", "3")]).await;
    let (a, b, c, d, e, outsider) = (
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
    );
    let small = app.create_group(&a, "Small", &[&b, &c]).await;
    let big = app.create_group(&a, "Big", &[&b, &d, &e]).await;
    // a has posted in both: presence goes through the small one only. (b
    // reads both, so the unread counts below start from zero.)
    let hellos = [
        app.send_to_group(&a, small, "hello small").await.id,
        app.send_to_group(&a, big, "hello big").await.id,
    ];
    let (status, _) = app
        .post(
            "/messages/mark-read",
            &b.token,
            &json!({"message_ids": hellos}),
        )
        .await;
    assert_eq!(status, 200);

    // a comes online: b (in the small group) hears it, d (only in the big
    // one) does not.
    let mut wb = WsClient::connect(&app, &b.token).await;
    let mut wd = WsClient::connect(&app, &d.token).await;
    let mut wa = WsClient::connect(&app, &a.token).await;
    assert_eq!(wb.recv_type("user_online").await["user_id"], json!(a.id));
    wd.none_of_type_for("user_online", QUIET).await;

    // Typing in the small group is relayed; in the big one it is accepted
    // and goes nowhere.
    wa.send(json!({"type": "typing", "conversation_id": small, "is_typing": true}))
        .await;
    assert_eq!(
        wb.recv_type("typing").await["conversation_id"],
        json!(small)
    );
    wa.send(json!({"type": "typing", "conversation_id": big, "is_typing": true}))
        .await;
    wd.none_of_type_for("typing", QUIET).await;
    wa.none_of_type_for("error", QUIET).await;

    // The list has both kinds, most recent first.
    let in_big = app.send_to_group(&a, big, "banana in the big one").await;
    app.send(&c, &b, "a direct banana").await;
    let in_small = app
        .send_to_group(&c, small, "banana in the small one")
        .await;
    let (_, list) = app.get("/messages/conversations", &b.token).await;
    let list = list["conversations"].as_array().unwrap();
    let summary: Vec<(Value, Value, Value, Value)> = list
        .iter()
        .map(|c| {
            (
                c["kind"].clone(),
                c["title"].clone(),
                c["last_message"]["content"].clone(),
                c["unread_count"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                json!("group"),
                json!("Small"),
                json!("banana in the small one"),
                json!(1)
            ),
            (
                json!("direct"),
                Value::Null,
                json!("a direct banana"),
                json!(1)
            ),
            (
                json!("group"),
                json!("Big"),
                json!("banana in the big one"),
                json!(1)
            ),
        ]
    );
    assert_eq!(list[0]["conversation_id"], json!(small));
    assert_eq!(list[0]["member_count"], 3);
    assert_eq!(list[1]["user_id"], json!(c.id));
    let direct = list[1].as_object().unwrap();
    assert!(
        direct.contains_key("username") && direct["username"].is_null(),
        "the seed's fields stay, null or not: {direct:?}"
    );
    assert!(!list[0].as_object().unwrap().contains_key("user_id"));
    assert_eq!(list[0]["last_message"]["receiver_id"], Value::Null);
    assert_eq!(list[0]["last_message"]["conversation_id"], json!(small));
    let (_, stats) = app.get("/messages/stats", &b.token).await;
    assert_eq!(stats["conversations"], 3);

    // Search covers the groups a user is in, and nothing else.
    let found = |list: &Value| -> Vec<Value> {
        list["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].clone())
            .collect()
    };
    let (_, hits) = app.get("/messages/search?query=banana", &b.token).await;
    assert_eq!(
        found(&hits),
        vec![
            json!("banana in the small one"),
            json!("a direct banana"),
            json!("banana in the big one")
        ]
    );
    let (_, hits) = app.get("/messages/search?query=banana", &e.token).await;
    assert_eq!(found(&hits), vec![json!("banana in the big one")]);
    let (_, hits) = app
        .get("/messages/search?query=banana", &outsider.token)
        .await;
    assert_eq!(found(&hits), Vec::<Value>::new());
    assert_ne!(in_big.id, in_small.id);
}

async fn membership_rules_hold_everywhere(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b, c, d, outsider) = (
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
    );
    let group = app.create_group(&a, "Rules", &[&b, &c]).await;
    let path = format!("/conversations/{group}");
    let members = format!("{path}/members");

    let (status, body) = app.get(&path, &b.token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["title"], "Rules");
    assert_eq!(body["kind"], "group");
    assert_eq!(body["member_count"], 3);
    let roles: Vec<(Value, Value)> = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["user_id"].clone(), m["role"].clone()))
        .collect();
    assert!(roles.contains(&(json!(a.id), json!("owner"))), "{body}");
    assert!(roles.contains(&(json!(b.id), json!("member"))), "{body}");

    let forbidden = |body: &Value, message: &str| {
        assert_eq!(
            body,
            &json!({"error": {"code": "forbidden", "message": message}})
        );
    };

    // A member cannot add or rename; an admin can; nobody removes upwards.
    let (status, body) = app
        .post(&members, &b.token, &json!({"user_ids": [d.id]}))
        .await;
    assert_eq!(status, 403);
    forbidden(&body, "only owners and admins can add members");
    let (status, body) = app.patch(&path, &b.token, &json!({"title": "Mine"})).await;
    assert_eq!(status, 403);
    forbidden(&body, "only owners and admins can change a group");
    let (status, body) = app
        .patch(
            &format!("{members}/{}", b.id),
            &b.token,
            &json!({"role": "admin"}),
        )
        .await;
    assert_eq!(status, 403);
    forbidden(&body, "only owners can change roles");
    let (status, body) = app
        .patch(
            &format!("{members}/{}", b.id),
            &a.token,
            &json!({"role": "admin"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .post(&members, &b.token, &json!({"user_ids": [d.id]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["member_count"], 4);
    let (status, body) = app
        .patch(&path, &b.token, &json!({"title": "  Renamed  "}))
        .await;
    assert_eq!((status, body["title"].clone()), (200, json!("Renamed")));
    let (status, body) = app.delete(&format!("{members}/{}", a.id), &b.token).await;
    assert_eq!(status, 403);
    forbidden(
        &body,
        "owners remove admins and members; admins remove members",
    );

    // d was added: d's session hears it and then gets messages.
    let mut wd = WsClient::connect(&app, &d.token).await;
    let mut wc = WsClient::connect(&app, &c.token).await;
    let before = app.send_to_group(&a, group, "before c is removed").await;
    assert_eq!(wd.recv_type("message").await["id"], json!(before.id));
    assert_eq!(wc.recv_type("message").await["id"], json!(before.id));

    // An admin removes a member: from then on c gets nothing and can do
    // nothing, but keeps what reached them.
    let (status, _) = app.delete(&format!("{members}/{}", c.id), &b.token).await;
    assert_eq!(status, 204);
    assert_eq!(wc.recv_type("member_removed").await["user_id"], json!(c.id));
    let removed_event = wd.recv_type("member_removed").await;
    assert_eq!(removed_event["by"], json!(b.id));
    let after = app.send_to_group(&a, group, "after c is removed").await;
    assert_eq!(wd.recv_type("message").await["id"], json!(after.id));
    wc.none_of_type_for("message", QUIET).await;
    let (status, page) = app
        .get(
            &format!("/messages/conversation?conversation_id={group}"),
            &c.token,
        )
        .await;
    assert_eq!(status, 200);
    let ids: Vec<Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![json!(before.id)],
        "c keeps only what reached them"
    );

    // Neither the removed member nor an outsider reads, writes, types or
    // marks read. The removed member knew the group and is refused; an
    // outsider gets exactly what an unknown id gets, so ids leak nothing.
    let missing = json!({"error": {"code": "not_found", "message": format!("no conversation with id {group}")}});
    for (who, user) in [("removed", &c), ("outsider", &outsider)] {
        let (expected_status, expected_code, expected_message) = match who {
            "removed" => (
                403,
                "forbidden",
                "you are not a member of this conversation".to_owned(),
            ),
            _ => (404, "not_found", format!("no conversation with id {group}")),
        };
        let expected = json!({"error": {"code": expected_code, "message": expected_message}});
        assert_eq!(
            app.get(&path, &user.token).await,
            (expected_status, expected.clone()),
            "{who}"
        );
        if who == "outsider" {
            // (The removed member keeps the history that reached them.)
            let history = format!("/messages/conversation?conversation_id={group}");
            assert_eq!(
                app.get(&history, &user.token).await,
                (404, expected.clone())
            );
        }
        let (status, body) = app
            .post(&members, &user.token, &json!({"user_ids": [user.id]}))
            .await;
        assert_eq!((status, body), (expected_status, expected.clone()), "{who}");
        let (status, _) = app
            .delete(&format!("{members}/{}", d.id), &user.token)
            .await;
        assert_eq!(status, expected_status, "{who}");
        let mut ws = WsClient::connect(&app, &user.token).await;
        ws.send(group_message(group, "let me in", "x")).await;
        let error = ws.recv_type("error").await;
        assert_eq!(
            error,
            json!({"type": "error", "code": expected_code, "message": expected_message, "client_id": "x"}),
            "{who}"
        );
        ws.send(json!({"type": "typing", "conversation_id": group, "is_typing": true}))
            .await;
        assert_eq!(
            ws.recv_type("error").await,
            json!({"type": "error", "code": expected_code, "message": expected_message}),
            "{who}"
        );
        ws.send(json!({"type": "mark_read", "message_id": after.id}))
            .await;
        assert_eq!(ws.recv_type("error").await["code"], "not_found", "{who}");
        let (status, body) = app
            .post(
                "/messages/mark-read",
                &user.token,
                &json!({"message_ids": [after.id]}),
            )
            .await;
        assert_eq!((status, body), (200, json!({"updated": 0})), "{who}");
    }
    assert_eq!(
        app.get(&format!("/conversations/{group}"), &outsider.token)
            .await,
        (404, missing)
    );
    let unknown = Uuid::now_v7();
    let (status, body) = app
        .get(&format!("/conversations/{unknown}"), &a.token)
        .await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": {"code": "not_found", "message": format!("no conversation with id {unknown}")}})
        )
    );
    let mut wa = WsClient::connect(&app, &a.token).await;
    wa.send(group_message(unknown, "anyone?", "u")).await;
    let error = wa.recv_type("error").await;
    assert_eq!(error["code"], "not_found");
    assert_eq!(
        error["message"],
        format!("no conversation with id {unknown}")
    );

    // The last owner cannot leave; after handing over, they can.
    let (status, body) = app.delete(&format!("{members}/{}", a.id), &a.token).await;
    assert_eq!(status, 403);
    forbidden(
        &body,
        "the last owner must make another member owner before leaving",
    );
    let (status, body) = app
        .patch(
            &format!("{members}/{}", a.id),
            &a.token,
            &json!({"role": "member"}),
        )
        .await;
    assert_eq!(status, 403);
    forbidden(
        &body,
        "a group needs an owner: make another member owner first",
    );
    let (status, _) = app
        .patch(
            &format!("{members}/{}", b.id),
            &a.token,
            &json!({"role": "owner"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app.delete(&format!("{members}/{}", a.id), &a.token).await;
    assert_eq!(status, 204);
    let (_, body) = app.get(&path, &b.token).await;
    assert_eq!(body["member_count"], 2);
    assert!(
        !body["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["user_id"] == json!(a.id)),
        "{body}"
    );

    // Added back, c sees new messages again but not those sent while away.
    let (status, _) = app
        .post(&members, &b.token, &json!({"user_ids": [c.id]}))
        .await;
    assert_eq!(status, 200);
    let added = wc.recv_type("member_added").await;
    assert_eq!(added["user_ids"], json!([c.id]));
    assert_eq!(added["conversation"]["id"], json!(group));
    let back = app.send_to_group(&d, group, "welcome back").await;
    assert_eq!(wc.recv_type("message").await["id"], json!(back.id));
    let (_, page) = app
        .get(
            &format!("/messages/conversation?conversation_id={group}"),
            &c.token,
        )
        .await;
    let ids: Vec<Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(before.id), json!(back.id)]);
}

async fn limits_and_bad_input_get_exact_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.new_user().await;
    let mut others = Vec::new();
    for _ in 0..256 {
        others.push(app.new_user().await);
    }
    let ids: Vec<Uuid> = others.iter().map(|u| u.id).collect();
    let invalid = |message: &str| json!({"error": {"code": "invalid_field", "message": message}});

    let cases: Vec<(Value, u16, Value)> = vec![
        (
            json!({"title": "   ", "member_ids": [ids[0]]}),
            400,
            invalid("title is empty"),
        ),
        (
            json!({"title": "x".repeat(101), "member_ids": [ids[0]]}),
            400,
            invalid(
                "title must be 1 to 100 characters, no control or invisible formatting characters",
            ),
        ),
        (
            json!({"title": "t", "member_ids": []}),
            400,
            invalid("member_ids must name at least one other user"),
        ),
        (
            json!({"title": "t", "member_ids": [ids[0], ids[1], ids[0]]}),
            400,
            invalid(&format!("member_ids lists {} more than once", ids[0])),
        ),
        (
            json!({"title": "t", "member_ids": [a.id]}),
            400,
            invalid("member_ids lists the other members; the creator joins as owner"),
        ),
        (
            json!({"title": "t", "member_ids": [ids[0]], "avatar_url": "ftp://x"}),
            400,
            invalid("avatar_url must be an http(s) URL of at most 2048 characters, or null"),
        ),
        (
            json!({"title": "t", "member_ids": ids}),
            409,
            json!({"error": {"code": "too_many_members", "message": "a group has at most 256 members"}}),
        ),
    ];
    for (body, status, expected) in cases {
        let answer = app.post("/conversations", &a.token, &body).await;
        assert_eq!(answer, (status, expected), "{body}");
    }
    let unknown = Uuid::now_v7();
    let answer = app
        .post(
            "/conversations",
            &a.token,
            &json!({"title": "t", "member_ids": [unknown]}),
        )
        .await;
    assert_eq!(
        answer,
        (
            404,
            json!({"error": {"code": "not_found", "message": format!("no user with id {unknown}")}})
        )
    );
    let (status, body) = app
        .post(
            "/conversations",
            &a.token,
            &json!({"title": "t", "member_ids": ["not-a-uuid"]}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_field")),
        "{body}"
    );
    let (status, body) = app.get("/conversations/not-a-uuid", &a.token).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_field")),
        "{body}"
    );

    // Exactly the limit: the owner and 255 others. The 257th is refused and
    // nothing changes.
    let (status, group) = app
        .post(
            "/conversations",
            &a.token,
            &json!({"title": "Full", "member_ids": ids[..255]}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    assert_eq!(group["member_count"], 256);
    let id = group["id"].as_str().unwrap();
    let members = format!("/conversations/{id}/members");
    let answer = app
        .post(&members, &a.token, &json!({"user_ids": [ids[255]]}))
        .await;
    assert_eq!(
        answer,
        (
            409,
            json!({"error": {"code": "too_many_members", "message": "a group has at most 256 members"}})
        )
    );
    let (_, group) = app.get(&format!("/conversations/{id}"), &a.token).await;
    assert_eq!(group["member_count"], 256);
    assert_eq!(group["members"].as_array().unwrap().len(), 256);

    // Adding someone already there changes nothing and is not an error.
    let (status, group) = app
        .post(&members, &a.token, &json!({"user_ids": [ids[0]]}))
        .await;
    assert_eq!((status, group["member_count"].clone()), (200, json!(256)));

    let cases: Vec<(Value, Value)> = vec![
        (json!({"user_ids": []}), invalid("user_ids is empty")),
        (
            json!({"user_ids": [ids[3], ids[3]]}),
            invalid(&format!("user_ids lists {} more than once", ids[3])),
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(
            app.post(&members, &a.token, &body).await,
            (400, expected),
            "{body}"
        );
    }
    assert_eq!(
        app.patch(&format!("/conversations/{id}"), &a.token, &json!({}))
            .await,
        (400, invalid("give `title`, `avatar_url` or both"))
    );
    let (status, body) = app
        .patch(
            &format!("{members}/{}", ids[0]),
            &a.token,
            &json!({"role": "king"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_field")),
        "{body}"
    );

    // WebSocket: both destinations at once, or neither.
    let mut ws = WsClient::connect(&app, &a.token).await;
    ws.send(json!({"type": "message", "to": ids[0], "conversation_id": id, "content": "x", "client_id": "both"}))
        .await;
    assert_eq!(
        ws.recv_type("error").await,
        json!({"type": "error", "code": "invalid_field", "client_id": "both",
               "message": "invalid `message` frame: give either `to` or `conversation_id`, not both"})
    );
    let (status, body) = app
        .get(
            &format!(
                "/messages/conversation?conversation_id={id}&with_user={}",
                ids[0]
            ),
            &a.token,
        )
        .await;
    assert_eq!(
        (status, body),
        (
            400,
            invalid("give either `with_user` or `conversation_id`, not both")
        )
    );
}

/// Direct chats stored before groups existed keep their ids, history,
/// numbering and unread counts after the groups migration.
async fn existing_direct_chats_survive_the_migration(backend: Backend) {
    use std::borrow::Cow;

    let db = crate::helpers::TestDatabase::new(backend).await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let (m1, m2) = (Uuid::now_v7(), Uuid::now_v7());
    let conversation = ochat::store::conversation_id(a, b);
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let at = ochat::store::now();
    match backend {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            let mut first =
                sqlx::migrate::Migrator::new(std::path::Path::new("migrations/postgres"))
                    .await
                    .unwrap();
            first.migrations = Cow::Owned(first.migrations[..1].to_vec());
            first.run(&pool).await.unwrap();
            sqlx::query("INSERT INTO users (id, email, msg_seq) VALUES ($1, 'a@example.com', 2), ($2, 'b@example.com', 2)")
                .bind(a)
                .bind(b)
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO messages (id, sender_id, receiver_id, content, conversation_id, sender_seq, receiver_seq, created_at)
                 VALUES ($1, $3, $4, 'old one', $5, 1, 1, $6), ($2, $4, $3, 'old two', $5, 2, 2, $6)",
            )
            .bind(m1)
            .bind(m2)
            .bind(a)
            .bind(b)
            .bind(conversation)
            .bind(at)
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query("INSERT INTO conversations (id, user_a, user_b, last_message_id, last_message_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(conversation)
                .bind(lo)
                .bind(hi)
                .bind(m2)
                .bind(at)
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        Backend::Sqlite => {
            let options: sqlx::sqlite::SqliteConnectOptions = db.url.parse().unwrap();
            let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
                .await
                .unwrap();
            let mut first = sqlx::migrate::Migrator::new(std::path::Path::new("migrations/sqlite"))
                .await
                .unwrap();
            first.migrations = Cow::Owned(first.migrations[..1].to_vec());
            first.run(&pool).await.unwrap();
            sqlx::query(
                "INSERT INTO users (id, email, msg_seq, last_seen, created_at, updated_at)
                 VALUES (?1, 'a@example.com', 2, ?3, ?3, ?3), (?2, 'b@example.com', 2, ?3, ?3, ?3)",
            )
            .bind(a)
            .bind(b)
            .bind(at)
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO messages (id, sender_id, receiver_id, content, conversation_id, sender_seq, receiver_seq, created_at, updated_at)
                 VALUES (?1, ?3, ?4, 'old one', ?5, 1, 1, ?6, ?6), (?2, ?4, ?3, 'old two', ?5, 2, 2, ?6, ?6)",
            )
            .bind(m1)
            .bind(m2)
            .bind(a)
            .bind(b)
            .bind(conversation)
            .bind(at)
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query("INSERT INTO conversations (id, user_a, user_b, last_message_id, last_message_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)")
                .bind(conversation)
                .bind(lo)
                .bind(hi)
                .bind(m2)
                .bind(at)
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }

    // Opening the store applies the rest of the migrations.
    let config = ochat::config::Config::from_vars([
        ("DATABASE_URL", db.url.as_str()),
        ("JWT_SECRET", crate::helpers::TEST_SECRET),
    ])
    .unwrap();
    let store = ochat::store::open(&config).await.expect("migrated store");
    let page = store.conversation(a, b, None, 10).await.unwrap();
    let ids: Vec<Uuid> = page.items.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![m1, m2]);
    assert_eq!(page.items[0].content, "old one");
    assert_eq!(page.items[1].receiver_id, Some(a));
    assert_eq!(page.items[1].conversation_id, conversation);
    let list = store.conversations(a, 10).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].conversation_id, conversation);
    assert_eq!(list[0].user_id, Some(b));
    assert_eq!(list[0].unread_count, 1);
    assert_eq!(store.seq_of(a, m2).await.unwrap(), Some(2));
    assert_eq!(
        store.contacts(a, 50).await.unwrap(),
        vec![b],
        "contacts still come from direct conversations"
    );
    // Numbering goes on where it stopped.
    let outcome = store
        .insert_messages(&[ochat::store::NewMessage {
            id: Uuid::now_v7(),
            sender_id: a,
            to: ochat::store::Target::User(b),
            content: "new one".into(),
            client_id: None,
            created_at: ochat::store::now(),
        }])
        .await
        .unwrap();
    let ochat::store::InsertOutcome::Created(stored) = &outcome[0] else {
        panic!("{outcome:?}");
    };
    assert_eq!(stored.seqs, vec![(a, 3), (b, 3)]);
    let synced = store.sync(b, Some(m1), 10).await.unwrap();
    let seqs: Vec<i64> = synced.items.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, vec![2, 3]);
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

/// Pages through `sync` from `since` with small pages: every message frame
/// and its `seq`.
async fn sync_all(ws: &mut WsClient, mut since: Option<Value>) -> (Vec<Value>, Vec<i64>) {
    let mut all = Vec::new();
    loop {
        ws.send(json!({"type": "sync", "since": since, "limit": 20}))
            .await;
        let answer = ws.recv_type("sync").await;
        let messages = answer["messages"].as_array().unwrap().clone();
        if let Some(last) = messages.last() {
            since = Some(last["id"].clone());
        }
        all.extend(messages);
        if answer["has_more"] == false {
            break;
        }
    }
    let seqs = all.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    (all, seqs)
}

/// `conversation_created` and `conversation_updated` reach every member's
/// sessions on every node, with the group as it now is.
async fn creation_and_renames_reach_members_live(backend: Backend) {
    let nodes = Nodes::start(backend).await;
    let (n0, n1) = (nodes.node(0), nodes.node(1));
    let (a, b, c) = (
        n0.new_user().await,
        n0.new_user().await,
        n1.new_user().await,
    );
    let mut wb = WsClient::connect(n0, &b.token).await;
    let mut wc = WsClient::connect(n1, &c.token).await;

    let group = n0.create_group(&a, "Plans", &[&b, &c]).await;
    for (who, ws) in [("b", &mut wb), ("c on the other node", &mut wc)] {
        let created = ws.recv_type("conversation_created").await;
        let conversation = &created["conversation"];
        assert_eq!(conversation["id"], json!(group), "{who}: {created}");
        assert_eq!(conversation["title"], "Plans", "{who}: {created}");
        assert_eq!(conversation["member_count"], 3, "{who}: {created}");
    }

    let (status, body) = n1
        .patch(
            &format!("/conversations/{group}"),
            &a.token,
            &json!({"title": "New plans"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for (who, ws) in [("b", &mut wb), ("c on the other node", &mut wc)] {
        let updated = ws.recv_type("conversation_updated").await;
        assert_eq!(
            updated["conversation"]["id"],
            json!(group),
            "{who}: {updated}"
        );
        assert_eq!(
            updated["conversation"]["title"], "New plans",
            "{who}: {updated}"
        );
    }
}
