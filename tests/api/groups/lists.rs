//! The conversation list and search include groups, beside direct chats,
//! and only the groups a user is in.

use serde_json::{Value, json};
use uuid::Uuid;

use super::SmallAndBig;
use crate::both_backends;
use crate::helpers::Backend;

both_backends!(
    the_conversation_list_holds_groups_and_direct_chats_most_recent_first,
    search_covers_the_groups_a_user_is_in_and_nothing_else,
);

/// A banana in each of b's conversations, oldest first: a posts one in the
/// big group, c sends b one directly, then c posts one in the small group.
/// The two group messages' ids.
async fn bananas(s: &SmallAndBig) -> (Uuid, Uuid) {
    let in_big = s
        .app
        .send_to_group(&s.a, s.big, "banana in the big one")
        .await;
    s.app.send(&s.c, &s.b, "a direct banana").await;
    let in_small = s
        .app
        .send_to_group(&s.c, s.small, "banana in the small one")
        .await;
    (in_big.id, in_small.id)
}

/// Each entry with its kind, title, last message and unread count; a group
/// entry has no `user_id`, a direct one keeps the seed's fields (null or
/// not); stats count both kinds.
async fn the_conversation_list_holds_groups_and_direct_chats_most_recent_first(backend: Backend) {
    let s = SmallAndBig::start(backend).await;
    let (app, b, c) = (&s.app, &s.b, &s.c);
    // b has read a's hellos, so every unread count starts from zero.
    let (status, _) = app
        .post(
            "/messages/mark-read",
            &b.token,
            &json!({"message_ids": s.hellos}),
        )
        .await;
    assert_eq!(status, 200);
    let (in_big, in_small) = bananas(&s).await;
    assert_ne!(in_big, in_small);

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
    assert_eq!(list[0]["conversation_id"], json!(s.small));
    assert_eq!(list[0]["member_count"], 3);
    assert_eq!(list[1]["user_id"], json!(c.id));
    let direct = list[1].as_object().unwrap();
    assert!(
        direct.contains_key("username") && direct["username"].is_null(),
        "the seed's fields stay, null or not: {direct:?}"
    );
    assert!(!list[0].as_object().unwrap().contains_key("user_id"));
    assert_eq!(list[0]["last_message"]["receiver_id"], Value::Null);
    assert_eq!(list[0]["last_message"]["conversation_id"], json!(s.small));
    let (_, stats) = app.get("/messages/stats", &b.token).await;
    assert_eq!(stats["conversations"], 3);
}

/// b (in both groups and the direct chat) finds all three, most recent
/// first; e (in the big group only) finds that one; an outsider none.
async fn search_covers_the_groups_a_user_is_in_and_nothing_else(backend: Backend) {
    let s = SmallAndBig::start(backend).await;
    bananas(&s).await;
    let found = |list: &Value| -> Vec<Value> {
        list["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].clone())
            .collect()
    };

    let (_, hits) = s.app.get("/messages/search?query=banana", &s.b.token).await;
    assert_eq!(
        found(&hits),
        vec![
            json!("banana in the small one"),
            json!("a direct banana"),
            json!("banana in the big one")
        ]
    );
    let (_, hits) = s.app.get("/messages/search?query=banana", &s.e.token).await;
    assert_eq!(found(&hits), vec![json!("banana in the big one")]);
    let (_, hits) = s
        .app
        .get("/messages/search?query=banana", &s.outsider.token)
        .await;
    assert_eq!(found(&hits), Vec::<Value>::new());
}
