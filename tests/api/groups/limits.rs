//! The member limit and bad input: each refusal with its exact status,
//! code and message, and nothing changed.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::wsclient::WsClient;
use crate::helpers::{Backend, TestApp, TestUser};

both_backends!(
    bad_input_to_create_a_group_gets_the_exact_error,
    a_group_holds_at_most_256_members,
    bad_member_lists_and_edits_get_the_exact_error,
    a_message_names_a_user_or_a_conversation_not_both,
);

fn invalid(message: &str) -> Value {
    json!({"error": {"code": "invalid_field", "message": message}})
}

/// A node with a and `n` other users.
async fn a_and_others(backend: Backend, n: usize) -> (TestApp, TestUser, Vec<TestUser>) {
    let app = TestApp::spawn(backend).await;
    let a = app.new_user().await;
    let mut others = Vec::new();
    for _ in 0..n {
        others.push(app.new_user().await);
    }
    (app, a, others)
}

async fn bad_input_to_create_a_group_gets_the_exact_error(backend: Backend) {
    let (app, a, others) = a_and_others(backend, 2).await;
    let ids: Vec<Uuid> = others.iter().map(|u| u.id).collect();

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
}

/// The owner and 255 others, exactly: the 257th is refused, at creation or
/// later, and nothing changes. Adding someone already there, even at the
/// limit, changes nothing and is not an error.
async fn a_group_holds_at_most_256_members(backend: Backend) {
    let (app, a, others) = a_and_others(backend, 256).await;
    let ids: Vec<Uuid> = others.iter().map(|u| u.id).collect();
    let too_many = json!({"error": {"code": "too_many_members", "message": "a group has at most 256 members"}});

    let answer = app
        .post(
            "/conversations",
            &a.token,
            &json!({"title": "t", "member_ids": ids}),
        )
        .await;
    assert_eq!(answer, (409, too_many.clone()));

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
    assert_eq!(answer, (409, too_many));
    let (_, group) = app.get(&format!("/conversations/{id}"), &a.token).await;
    assert_eq!(group["member_count"], 256);
    assert_eq!(group["members"].as_array().unwrap().len(), 256);

    let (status, group) = app
        .post(&members, &a.token, &json!({"user_ids": [ids[0]]}))
        .await;
    assert_eq!((status, group["member_count"].clone()), (200, json!(256)));
}

async fn bad_member_lists_and_edits_get_the_exact_error(backend: Backend) {
    let (app, a, others) = a_and_others(backend, 4).await;
    let ids: Vec<Uuid> = others.iter().map(|u| u.id).collect();
    let everyone: Vec<&TestUser> = others.iter().collect();
    let id = app.create_group(&a, "Edits", &everyone).await;
    let members = format!("/conversations/{id}/members");

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
}

/// On the WebSocket a message goes to `to` or to `conversation_id`; over
/// REST a history is `with_user` or `conversation_id`. Both at once is
/// refused.
async fn a_message_names_a_user_or_a_conversation_not_both(backend: Backend) {
    let (app, a, others) = a_and_others(backend, 1).await;
    let b = &others[0];
    let id = app.create_group(&a, "Both", &[b]).await;

    let mut ws = WsClient::connect(&app, &a.token).await;
    ws.send(json!({"type": "message", "to": b.id, "conversation_id": id, "content": "x", "client_id": "both"}))
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
                b.id
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
