//! Who is in a group and what they may do: roles, adding and removing
//! members, owners leaving, and what a removed member or an outsider gets.

use std::collections::HashSet;

use serde_json::{Value, json};
use uuid::Uuid;

use super::{Five, QUIET, group_message, history_ids, ids_of};
use crate::both_backends;
use crate::helpers::wsclient::WsClient;
use crate::helpers::{Backend, TestApp, TestUser};

both_backends!(
    the_creator_is_the_owner_and_the_others_are_members,
    a_member_cannot_add_rename_or_change_roles,
    an_admin_can_add_members_and_rename_the_group,
    an_admin_cannot_remove_an_owner,
    a_member_removed_by_an_admin_gets_nothing_more_but_keeps_what_reached_them,
    a_member_removed_on_one_node_hears_it_on_every_session_and_gets_nothing_more,
    a_removed_member_is_refused_as_not_a_member,
    an_outsider_gets_exactly_what_an_unknown_group_id_gets,
    the_last_owner_cannot_leave_or_step_down,
    an_owner_can_leave_once_another_member_is_owner,
    a_member_added_back_gets_new_messages_but_not_those_sent_while_away,
);

/// One node with the group "Rules": a owns it, b and c are members; d and
/// `outsider` are in no group.
struct Rules {
    app: TestApp,
    a: TestUser,
    b: TestUser,
    c: TestUser,
    d: TestUser,
    outsider: TestUser,
    group: Uuid,
    /// `/conversations/{group}`
    path: String,
    /// `/conversations/{group}/members`
    members: String,
}

impl Rules {
    async fn start(backend: Backend) -> Self {
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
        Self {
            app,
            a,
            b,
            c,
            d,
            outsider,
            group,
            path,
            members,
        }
    }

    /// `/conversations/{group}/members/{user}`
    fn member(&self, user: &TestUser) -> String {
        format!("{}/{}", self.members, user.id)
    }

    /// a makes b an admin.
    async fn make_b_admin(&self) {
        let (status, body) = self
            .app
            .patch(
                &self.member(&self.b),
                &self.a.token,
                &json!({"role": "admin"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// a makes b an admin, and b adds d.
    async fn admin_b_adds_d(&self) {
        self.make_b_admin().await;
        let (status, body) = self
            .app
            .post(
                &self.members,
                &self.b.token,
                &json!({"user_ids": [self.d.id]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// `group`'s history as `user` reads it in one page: its ids.
    async fn history_of(&self, user: &TestUser) -> Vec<Value> {
        let (status, page) = self
            .app
            .get(
                &format!("/messages/conversation?conversation_id={}", self.group),
                &user.token,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        ids_of(&page)
    }
}

fn forbidden(message: &str) -> Value {
    json!({"error": {"code": "forbidden", "message": message}})
}

/// `user`, not in `r`'s group, tries every way in: reading it, adding
/// themselves, removing b, sending, typing and marking `message` (one of
/// the group's) read. Each gets `status` with `code` and `message_text`,
/// except marking read, which finds nothing (`not_found` on the
/// WebSocket, nothing updated over REST).
async fn assert_shut_out(
    r: &Rules,
    user: &TestUser,
    message: Uuid,
    status: u16,
    code: &str,
    message_text: &str,
) {
    let expected = json!({"error": {"code": code, "message": message_text}});
    assert_eq!(
        r.app.get(&r.path, &user.token).await,
        (status, expected.clone())
    );
    let (got, body) = r
        .app
        .post(&r.members, &user.token, &json!({"user_ids": [user.id]}))
        .await;
    assert_eq!((got, body), (status, expected.clone()));
    let (got, _) = r.app.delete(&r.member(&r.b), &user.token).await;
    assert_eq!(got, status);

    let mut ws = WsClient::connect(&r.app, &user.token).await;
    ws.send(group_message(r.group, "let me in", "x")).await;
    assert_eq!(
        ws.recv_type("error").await,
        json!({"type": "error", "code": code, "message": message_text, "client_id": "x"})
    );
    ws.send(json!({"type": "typing", "conversation_id": r.group, "is_typing": true}))
        .await;
    assert_eq!(
        ws.recv_type("error").await,
        json!({"type": "error", "code": code, "message": message_text})
    );
    ws.send(json!({"type": "mark_read", "message_id": message}))
        .await;
    assert_eq!(ws.recv_type("error").await["code"], "not_found");
    let (got, body) = r
        .app
        .post(
            "/messages/mark-read",
            &user.token,
            &json!({"message_ids": [message]}),
        )
        .await;
    assert_eq!((got, body), (200, json!({"updated": 0})));
}

async fn the_creator_is_the_owner_and_the_others_are_members(backend: Backend) {
    let r = Rules::start(backend).await;

    let (status, body) = r.app.get(&r.path, &r.b.token).await;
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
    assert!(roles.contains(&(json!(r.a.id), json!("owner"))), "{body}");
    assert!(roles.contains(&(json!(r.b.id), json!("member"))), "{body}");
}

async fn a_member_cannot_add_rename_or_change_roles(backend: Backend) {
    let r = Rules::start(backend).await;

    assert_eq!(
        r.app
            .post(&r.members, &r.b.token, &json!({"user_ids": [r.d.id]}))
            .await,
        (403, forbidden("only owners and admins can add members"))
    );
    assert_eq!(
        r.app
            .patch(&r.path, &r.b.token, &json!({"title": "Mine"}))
            .await,
        (403, forbidden("only owners and admins can change a group"))
    );
    assert_eq!(
        r.app
            .patch(&r.member(&r.b), &r.b.token, &json!({"role": "admin"}))
            .await,
        (403, forbidden("only owners can change roles"))
    );
}

/// The member added gets the group's messages from then on; the title is
/// trimmed.
async fn an_admin_can_add_members_and_rename_the_group(backend: Backend) {
    let r = Rules::start(backend).await;
    r.make_b_admin().await;

    let (status, body) = r
        .app
        .post(&r.members, &r.b.token, &json!({"user_ids": [r.d.id]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["member_count"], 4);
    let mut wd = WsClient::connect(&r.app, &r.d.token).await;
    let mut wc = WsClient::connect(&r.app, &r.c.token).await;
    let hello = r.app.send_to_group(&r.a, r.group, "hello d").await;
    assert_eq!(wd.recv_type("message").await["id"], json!(hello.id));
    assert_eq!(wc.recv_type("message").await["id"], json!(hello.id));

    let (status, body) = r
        .app
        .patch(&r.path, &r.b.token, &json!({"title": "  Renamed  "}))
        .await;
    assert_eq!((status, body["title"].clone()), (200, json!("Renamed")));
}

async fn an_admin_cannot_remove_an_owner(backend: Backend) {
    let r = Rules::start(backend).await;
    r.make_b_admin().await;

    assert_eq!(
        r.app.delete(&r.member(&r.a), &r.b.token).await,
        (
            403,
            forbidden("owners remove admins and members; admins remove members")
        )
    );
}

/// The removed member's session and the others' hear of it; from then on
/// the removed member gets nothing, but keeps in history what reached them.
async fn a_member_removed_by_an_admin_gets_nothing_more_but_keeps_what_reached_them(
    backend: Backend,
) {
    let r = Rules::start(backend).await;
    r.admin_b_adds_d().await;
    let mut wd = WsClient::connect(&r.app, &r.d.token).await;
    let mut wc = WsClient::connect(&r.app, &r.c.token).await;
    let before = r
        .app
        .send_to_group(&r.a, r.group, "before c is removed")
        .await;
    assert_eq!(wd.recv_type("message").await["id"], json!(before.id));
    assert_eq!(wc.recv_type("message").await["id"], json!(before.id));

    let (status, _) = r.app.delete(&r.member(&r.c), &r.b.token).await;
    assert_eq!(status, 204);
    assert_eq!(
        wc.recv_type("member_removed").await["user_id"],
        json!(r.c.id)
    );
    let removed_event = wd.recv_type("member_removed").await;
    assert_eq!(removed_event["by"], json!(r.b.id));
    let after = r
        .app
        .send_to_group(&r.a, r.group, "after c is removed")
        .await;
    assert_eq!(wd.recv_type("message").await["id"], json!(after.id));
    wc.none_of_type_for("message", QUIET).await;
    assert_eq!(
        r.history_of(&r.c).await,
        vec![json!(before.id)],
        "c keeps only what reached them"
    );
}

/// c is removed on node 0: both of c's sessions (one on each node) hear
/// it, and nothing sent afterwards reaches them. c keeps what reached them,
/// and no more, in history and in search.
async fn a_member_removed_on_one_node_hears_it_on_every_session_and_gets_nothing_more(
    backend: Backend,
) {
    let mut f = Five::start(backend).await;
    let sent = f.five_messages().await;
    let first = sent[0].clone();
    // b's session has c's four messages to read first.
    let mut from_c = HashSet::new();
    for _ in 0..4 {
        from_c.insert(f.wb.recv_type("message").await["id"].clone());
    }
    assert_eq!(from_c, sent[1..].iter().cloned().collect());
    let (n0, n1) = (f.nodes.node(0), f.nodes.node(1));

    let (status, _) = n0
        .delete(
            &format!("/conversations/{}/members/{}", f.group, f.c.id),
            &f.a.token,
        )
        .await;
    assert_eq!(status, 204);
    for ws in [&mut f.wc, &mut f.wc2] {
        assert_eq!(
            ws.recv_type("member_removed").await,
            json!({"type": "member_removed", "conversation_id": f.group, "user_id": f.c.id, "by": f.a.id})
        );
    }
    f.wd.send(group_message(f.group, "after c left", "d1"))
        .await;
    let after = f.wd.recv_type("ack").await["id"].clone();
    assert_eq!(f.wb.recv_type("message").await["id"], after);
    f.wc.none_of_type_for("message", QUIET).await;
    f.wc2.none_of_type_for("message", QUIET).await;

    assert_eq!(history_ids(n1, &f.c, f.group, 10).await, sent);
    let (_, hits) = n1
        .get("/messages/search?query=hello+five", &f.c.token)
        .await;
    assert_eq!(ids_of(&hits), vec![first]);
    let (_, hits) = n1.get("/messages/search?query=after", &f.c.token).await;
    assert_eq!(ids_of(&hits), Vec::<Value>::new());
    let (_, hits) = n0.get("/messages/search?query=after", &f.b.token).await;
    assert_eq!(ids_of(&hits), vec![after]);
}

/// The removed member knew the group, so they are told they are no longer
/// in it: reading it, adding themselves, removing others, sending and
/// typing are forbidden, and marking its messages read does nothing. (The
/// history that reached them stays theirs to read.)
async fn a_removed_member_is_refused_as_not_a_member(backend: Backend) {
    let r = Rules::start(backend).await;
    let (status, _) = r.app.delete(&r.member(&r.c), &r.a.token).await;
    assert_eq!(status, 204);
    let after = r
        .app
        .send_to_group(&r.a, r.group, "after c is removed")
        .await;

    assert_shut_out(
        &r,
        &r.c,
        after.id,
        403,
        "forbidden",
        "you are not a member of this conversation",
    )
    .await;
}

/// Every way in (reading the group or its history, adding, removing,
/// sending, typing, marking read) answers an outsider exactly as it
/// answers an id nobody has, so ids leak nothing.
async fn an_outsider_gets_exactly_what_an_unknown_group_id_gets(backend: Backend) {
    let r = Rules::start(backend).await;
    let message = r.app.send_to_group(&r.a, r.group, "members only").await;
    let missing = format!("no conversation with id {}", r.group);

    let history = format!("/messages/conversation?conversation_id={}", r.group);
    assert_eq!(
        r.app.get(&history, &r.outsider.token).await,
        (
            404,
            json!({"error": {"code": "not_found", "message": missing}})
        )
    );
    assert_shut_out(&r, &r.outsider, message.id, 404, "not_found", &missing).await;

    let unknown = Uuid::now_v7();
    let (status, body) = r
        .app
        .get(&format!("/conversations/{unknown}"), &r.a.token)
        .await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": {"code": "not_found", "message": format!("no conversation with id {unknown}")}})
        )
    );
    let mut wa = WsClient::connect(&r.app, &r.a.token).await;
    wa.send(group_message(unknown, "anyone?", "u")).await;
    let error = wa.recv_type("error").await;
    assert_eq!(error["code"], "not_found");
    assert_eq!(
        error["message"],
        format!("no conversation with id {unknown}")
    );
}

async fn the_last_owner_cannot_leave_or_step_down(backend: Backend) {
    let r = Rules::start(backend).await;

    assert_eq!(
        r.app.delete(&r.member(&r.a), &r.a.token).await,
        (
            403,
            forbidden("the last owner must make another member owner before leaving")
        )
    );
    assert_eq!(
        r.app
            .patch(&r.member(&r.a), &r.a.token, &json!({"role": "member"}))
            .await,
        (
            403,
            forbidden("a group needs an owner: make another member owner first")
        )
    );
}

async fn an_owner_can_leave_once_another_member_is_owner(backend: Backend) {
    let r = Rules::start(backend).await;

    let (status, _) = r
        .app
        .patch(&r.member(&r.b), &r.a.token, &json!({"role": "owner"}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = r.app.delete(&r.member(&r.a), &r.a.token).await;
    assert_eq!(status, 204);
    let (_, body) = r.app.get(&r.path, &r.b.token).await;
    assert_eq!(body["member_count"], 2);
    assert!(
        !body["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["user_id"] == json!(r.a.id)),
        "{body}"
    );
}

/// c's session hears they are back, then gets new messages; their history
/// skips what was sent while they were away.
async fn a_member_added_back_gets_new_messages_but_not_those_sent_while_away(backend: Backend) {
    let r = Rules::start(backend).await;
    let mut wc = WsClient::connect(&r.app, &r.c.token).await;
    let before = r
        .app
        .send_to_group(&r.a, r.group, "before c is removed")
        .await;
    assert_eq!(wc.recv_type("message").await["id"], json!(before.id));
    let (status, _) = r.app.delete(&r.member(&r.c), &r.a.token).await;
    assert_eq!(status, 204);
    r.app.send_to_group(&r.a, r.group, "while c is away").await;

    let (status, _) = r
        .app
        .post(&r.members, &r.a.token, &json!({"user_ids": [r.c.id]}))
        .await;
    assert_eq!(status, 200);
    let added = wc.recv_type("member_added").await;
    assert_eq!(added["user_ids"], json!([r.c.id]));
    assert_eq!(added["conversation"]["id"], json!(r.group));
    let back = r.app.send_to_group(&r.b, r.group, "welcome back").await;
    assert_eq!(wc.recv_type("message").await["id"], json!(back.id));
    assert_eq!(
        r.history_of(&r.c).await,
        vec![json!(before.id), json!(back.id)]
    );
}
