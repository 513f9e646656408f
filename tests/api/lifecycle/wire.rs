//! Edits, deletes, reactions and replies over the WebSocket and REST:
//! who hears what, the acks, and every refusal with its exact answer.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::wsclient::WsClient;
use crate::helpers::{Backend, TestApp, TestUser};

both_backends!(
    an_edit_reaches_every_reader_and_the_editors_other_sessions,
    refusals_name_what_is_wrong,
    reactions_and_deletes_over_rest_reach_the_sockets_and_history,
    a_reply_carries_a_preview_of_what_it_answers,
    the_limits_refuse_exactly,
);

/// Nothing arrives in this window that the test waits for: it only gives a
/// wrongly sent frame time to show up.
const QUIET: Duration = Duration::from_millis(300);

/// `from` sends `to` a message over `ws`; its id.
async fn say(ws: &mut WsClient, to: &TestUser, content: &str, key: &str) -> Value {
    ws.send(json!({"type":"message","to":to.id,"content":content,"client_id":key}))
        .await;
    let ack = ws.recv_type("ack").await;
    assert_eq!(ack["client_id"], key);
    ack["id"].clone()
}

/// The answer to one change frame: its `ack` or `error`.
async fn answer(ws: &mut WsClient, frame: Value) -> Value {
    ws.send(frame).await;
    ws.recv_type_of(&["ack", "error"]).await
}

fn error(code: &str, message: &str, client_id: &str) -> Value {
    json!({"type":"error","code":code,"message":message,"client_id":client_id})
}

async fn an_edit_reaches_every_reader_and_the_editors_other_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let mut a1 = WsClient::connect(&app, &a.token).await;
    let mut a2 = WsClient::connect(&app, &a.token).await;
    let mut b1 = WsClient::connect(&app, &b.token).await;
    let id = say(&mut a1, &b, "see you at 5", "m1").await;
    b1.recv_type("message").await;
    a2.recv_type("message").await;

    let edit = json!({"type":"edit","message_id":id,"content":"see you at 6","client_id":"e1"});
    let ack = answer(&mut a1, edit.clone()).await;
    assert_eq!(
        (&ack["type"], &ack["id"], &ack["client_id"]),
        (&json!("ack"), &id, &json!("e1"))
    );
    for (who, ws) in [("recipient", &mut b1), ("other device", &mut a2)] {
        let event = ws.recv_type("message_updated").await;
        assert_eq!(event["id"], id, "{who}");
        assert_eq!(event["content"], "see you at 6", "{who}");
        assert_eq!(event["edited_at"], ack["timestamp"], "{who}");
        assert_eq!(event["seq"], 2, "{who}: numbered after the message");
    }
    a1.none_of_type_for("message_updated", QUIET).await;

    // A retry of the same edit is acked again and tells nobody anything new.
    let again = answer(&mut a1, edit).await;
    assert_eq!(again, ack);
    b1.none_of_type_for("message_updated", QUIET).await;

    let (status, page) = app
        .get(
            &format!("/messages/conversation?with_user={}", a.id),
            &b.token,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["messages"][0]["content"], "see you at 6");
    assert_eq!(page["messages"][0]["edited_at"], ack["timestamp"]);
    let (_, found) = app.get("/messages/search?query=5", &b.token).await;
    assert_eq!(
        found["messages"],
        json!([]),
        "search no longer finds the old text"
    );
}

async fn refusals_name_what_is_wrong(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b, c) = (
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
    );
    let mut a1 = WsClient::connect(&app, &a.token).await;
    let mut b1 = WsClient::connect(&app, &b.token).await;
    let mut c1 = WsClient::connect(&app, &c.token).await;
    let id = say(&mut a1, &b, "hello", "m1").await;
    let unknown = uuid::Uuid::now_v7();

    let cases = [
        (
            'b',
            json!({"type":"edit","message_id":id,"content":"mine now","client_id":"x1"}),
            error("forbidden", "only the sender can edit a message", "x1"),
        ),
        (
            'b',
            json!({"type":"delete","message_id":id,"client_id":"x2"}),
            error(
                "forbidden",
                "only the sender, or a group's owner or admins, can delete a message",
                "x2",
            ),
        ),
        (
            'c',
            json!({"type":"react","message_id":id,"emoji":"👍","client_id":"x3"}),
            error(
                "not_found",
                &format!("no message with id {}", id.as_str().unwrap()),
                "x3",
            ),
        ),
        (
            'a',
            json!({"type":"edit","message_id":unknown,"content":"x","client_id":"x4"}),
            error("not_found", &format!("no message with id {unknown}"), "x4"),
        ),
        (
            'a',
            json!({"type":"edit","message_id":id,"content":"  ","client_id":"x5"}),
            error("content_empty", "content is empty", "x5"),
        ),
        (
            'b',
            json!({"type":"react","message_id":id,"emoji":"yes","client_id":"x6"}),
            error(
                "invalid_field",
                "emoji must be one emoji, or a :shortcode: of at most 32 characters (a-z, 0-9, _, +, -)",
                "x6",
            ),
        ),
        (
            'b',
            json!({"type":"message","to":a.id,"content":"re","reply_to":unknown,"client_id":"x7"}),
            error(
                "not_found",
                &format!("no message with id {unknown} to reply to"),
                "x7",
            ),
        ),
    ];
    for (who, frame, want) in cases {
        let ws = match who {
            'a' => &mut a1,
            'b' => &mut b1,
            _ => &mut c1,
        };
        assert_eq!(answer(ws, frame.clone()).await, want, "{frame}");
    }

    // A reply must stay in its conversation.
    let other = say(&mut c1, &a, "elsewhere", "c1").await;
    let reply =
        json!({"type":"message","to":b.id,"content":"re","reply_to":other,"client_id":"x8"});
    assert_eq!(
        answer(&mut a1, reply).await,
        error(
            "invalid_field",
            "reply_to must be a message of the same conversation",
            "x8"
        )
    );

    let ack = answer(
        &mut a1,
        json!({"type":"delete","message_id":id,"client_id":"d1"}),
    )
    .await;
    assert_eq!(ack["type"], "ack");
    let deleted = error("message_deleted", "the message was deleted", "x9");
    let edit = json!({"type":"edit","message_id":id,"content":"fixed","client_id":"x9"});
    assert_eq!(answer(&mut a1, edit).await, deleted);
    let react = json!({"type":"react","message_id":id,"emoji":"👍","client_id":"x9"});
    assert_eq!(answer(&mut b1, react).await, deleted);

    // The same refusals over REST.
    let id = id.as_str().unwrap();
    let (status, body) = app
        .patch(
            &format!("/messages/{id}"),
            &a.token,
            &json!({"content":"x"}),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("message_deleted"))
    );
    let live = say(&mut a1, &b, "still here", "m2").await;
    let live = live.as_str().unwrap();
    let (status, body) = app
        .patch(
            &format!("/messages/{live}"),
            &b.token,
            &json!({"content":"x"}),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"error":{"code":"forbidden","message":"only the sender can edit a message"}})
        )
    );
    let (status, body) = app
        .delete(
            &format!("/messages/{live}/reactions/%F0%9F%91%8D"),
            &c.token,
        )
        .await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error":{"code":"not_found","message":format!("no message with id {live}")}})
        )
    );
}

async fn reactions_and_deletes_over_rest_reach_the_sockets_and_history(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let mut a1 = WsClient::connect(&app, &a.token).await;
    let mut b1 = WsClient::connect(&app, &b.token).await;
    let id = say(&mut a1, &b, "party tonight", "m1").await;
    let id = id.as_str().unwrap().to_owned();
    b1.recv_type("message").await;

    // 👍, URL-encoded.
    let thumbs = format!("/messages/{id}/reactions/%F0%9F%91%8D");
    assert_eq!(app.put_empty(&thumbs, &b.token).await, 204);
    assert_eq!(
        app.put_empty(&thumbs, &b.token).await,
        204,
        "again: no change"
    );
    let added = a1.recv_type("reaction_added").await;
    assert_eq!(
        (&added["message_id"], &added["user_id"], &added["emoji"]),
        (&json!(id), &json!(b.id), &json!("👍"))
    );
    let own = b1.recv_type("reaction_added").await;
    assert_eq!(own["seq"], 2, "the reactor's own sessions hear it too");
    a1.none_of_type_for("reaction_added", QUIET).await;

    let history = |token: String, peer: uuid::Uuid| {
        let app = &app;
        async move {
            let (_, page) = app
                .get(&format!("/messages/conversation?with_user={peer}"), &token)
                .await;
            page["messages"][0].clone()
        }
    };
    let seen = history(a.token.clone(), b.id).await;
    assert_eq!(
        seen["reactions"],
        json!([{"emoji":"👍","count":1,"me":false}])
    );
    let seen = history(b.token.clone(), a.id).await;
    assert_eq!(
        seen["reactions"],
        json!([{"emoji":"👍","count":1,"me":true}])
    );

    let (status, _) = app.delete(&thumbs, &b.token).await;
    assert_eq!(status, 204);
    let removed = a1.recv_type("reaction_removed").await;
    assert_eq!(removed["emoji"], "👍");

    let (status, _) = app.delete(&format!("/messages/{id}"), &a.token).await;
    assert_eq!(status, 204);
    let gone = b1.recv_type("message_deleted").await;
    assert_eq!(gone["id"], json!(id));
    let seen = history(b.token.clone(), a.id).await;
    assert_eq!(seen["content"], "");
    assert_eq!(seen["deleted_at"], gone["deleted_at"]);
    assert!(seen.get("reactions").is_none(), "{seen}");
    let (status, _) = app.delete(&format!("/messages/{id}"), &a.token).await;
    assert_eq!(status, 204, "deleting again changes nothing");
    b1.none_of_type_for("message_deleted", QUIET).await;
}

async fn a_reply_carries_a_preview_of_what_it_answers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let mut a1 = WsClient::connect(&app, &a.token).await;
    let mut b1 = WsClient::connect(&app, &b.token).await;
    let question = say(&mut a1, &b, "lunch on friday?", "q").await;
    b1.recv_type("message").await;
    b1.send(
        json!({"type":"message","to":a.id,"content":"yes!","reply_to":question,"client_id":"r"}),
    )
    .await;
    b1.recv_type("ack").await;
    let reply = a1.recv_type("message").await;
    assert_eq!(
        reply["reply_to"],
        json!({"id":question,"sender_id":a.id,"preview":"lunch on friday?","deleted":false})
    );
    let (_, page) = app
        .get(
            &format!("/messages/conversation?with_user={}", b.id),
            &a.token,
        )
        .await;
    assert_eq!(page["messages"][1]["reply_to"], reply["reply_to"]);
}

/// The settings' limits and the group rules, each refusal with its answer:
/// the edit window, the distinct emojis a message carries, replies to a
/// group message from outside it, the attachments a message carries.
async fn the_limits_refuse_exactly(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("MESSAGE_EDIT_WINDOW", "1s"),
            ("MAX_REACTIONS_PER_MESSAGE", "2"),
        ],
    )
    .await;
    let (a, b, c) = (
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
    );
    let mut a1 = WsClient::connect(&app, &a.token).await;
    let mut b1 = WsClient::connect(&app, &b.token).await;
    let id = say(&mut a1, &b, "hello", "m1").await;

    // Two distinct emojis; a third is refused, a second 👍 is not.
    for (who, emoji, key) in [('a', "👍", "r1"), ('b', "❤️", "r2"), ('b', "👍", "r3")] {
        let ws = if who == 'a' { &mut a1 } else { &mut b1 };
        let frame = json!({"type":"react","message_id":id,"emoji":emoji,"client_id":key});
        assert_eq!(answer(ws, frame).await["type"], "ack", "{emoji}");
    }
    let third = json!({"type":"react","message_id":id,"emoji":"😂","client_id":"r4"});
    assert_eq!(
        answer(&mut b1, third).await,
        error(
            "too_many_reactions",
            "a message carries at most 2 different emojis",
            "r4"
        )
    );
    let (status, body) = app
        .put_answer(
            &format!("/messages/{}/reactions/%F0%9F%98%82", id.as_str().unwrap()),
            &a.token,
        )
        .await;
    assert_eq!(
        (status, body),
        (
            409,
            json!({"error":{"code":"too_many_reactions","message":"a message carries at most 2 different emojis"}})
        )
    );

    // Editable within the window, not after.
    let edit = json!({"type":"edit","message_id":id,"content":"hello!","client_id":"e1"});
    assert_eq!(answer(&mut a1, edit).await["type"], "ack");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let late = json!({"type":"edit","message_id":id,"content":"hello?","client_id":"e2"});
    assert_eq!(
        answer(&mut a1, late).await,
        error(
            "forbidden",
            "the message can no longer be edited: the edit window has passed",
            "e2"
        )
    );
    // Deleting has no window.
    let delete = json!({"type":"delete","message_id":id,"client_id":"d1"});
    assert_eq!(answer(&mut a1, delete).await["type"], "ack");

    // A group's message is not a stranger's to answer, nor to quote in
    // another group.
    let group = app.create_group(&a, "one", &[&b]).await;
    let other = app.create_group(&a, "two", &[&c]).await;
    let in_group = app.send_to_group(&a, group, "in the group").await.id;
    let mut c1 = WsClient::connect(&app, &c.token).await;
    let outside =
        json!({"type":"message","to":a.id,"content":"re","reply_to":in_group,"client_id":"q1"});
    assert_eq!(
        answer(&mut c1, outside).await,
        error(
            "not_found",
            &format!("no message with id {in_group} to reply to"),
            "q1"
        )
    );
    let elsewhere = json!({"type":"message","conversation_id":other,"content":"re",
                           "reply_to":in_group,"client_id":"q2"});
    assert_eq!(
        answer(&mut a1, elsewhere).await,
        error(
            "invalid_field",
            "reply_to must be a message of the same conversation",
            "q2"
        )
    );

    // At most ten attachments a message; an upload shorter than announced
    // is not sent.
    let eleven: Vec<String> = (0..11).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let many = json!({"type":"message","to":b.id,"content":"files","attachments":eleven,
                      "client_id":"f1"});
    assert_eq!(
        answer(&mut a1, many).await,
        error(
            "invalid_field",
            "a message carries at most 10 attachments",
            "f1"
        )
    );
    let (status, up) = super::attachments::announce(
        &app,
        &a,
        json!({"name":"short.txt","size":100,"content_type":"text/plain"}),
    )
    .await;
    assert_eq!(status, 201, "{up}");
    let file = up["id"].as_str().unwrap();
    let url = up["upload_url"].as_str().unwrap();
    assert_eq!(
        super::attachments::upload(&app, url, vec![1; 60]).await,
        200
    );
    let short = json!({"type":"message","to":b.id,"content":"file","attachments":[file],
                       "client_id":"f2"});
    assert_eq!(
        answer(&mut a1, short).await,
        error(
            "invalid_field",
            &format!("attachment {file} was announced as 100 bytes and 60 were uploaded"),
            "f2"
        )
    );
    for (size, want) in [(0, "0"), (65_536, "65536")] {
        let (status, body) = super::attachments::announce(
            &app,
            &a,
            json!({"name":"x.png","size":10,"content_type":"image/png","width":size,"height":10}),
        )
        .await;
        assert_eq!(
            (status, body),
            (
                400,
                json!({"error":{"code":"invalid_field","message":"width and height must be 1 to 65535 pixels"}})
            ),
            "width {want}"
        );
    }
}
