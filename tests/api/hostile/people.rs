//! What one user may do to, or learn of, another: text others will read,
//! conversation ids, presence, blocking, group roles, emails.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::wsclient::WsClient;
use crate::helpers::{Backend, TestApp, eventually, token_for};

both_backends!(
    text_refuses_controls_and_names_refuse_invisible_characters,
    a_reused_email_locks_no_one_out,
    an_outsider_cannot_tell_who_talks_to_whom,
    a_demoted_admins_change_in_flight_does_not_land,
    presence_goes_only_to_whom_a_user_has_talked_to,
    a_first_message_brings_presence_only_when_the_sender_is_online,
    a_first_post_in_a_small_group_brings_the_posters_presence,
    a_blocked_user_gets_the_answers_of_a_user_that_does_not_exist,
);

/// One validator: content keeps newline and tab and refuses other
/// controls; names and titles also refuse bidi overrides and zero-width
/// characters. Nothing refused is stored or broadcast.
async fn text_refuses_controls_and_names_refuse_invisible_characters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let invalid = |message: &str| json!({"error": {"code": "invalid_field", "message": message}});
    let username_rule = "username must be 1 to 50 characters, no control or invisible formatting characters, or null";
    for name in [
        "bob\u{202e}gnp.exe",
        "a\u{200b}b",
        "two\nlines",
        "esc\u{1b}[31m",
    ] {
        assert_eq!(
            app.patch("/users/me", &a.token, &json!({"username": name}))
                .await,
            (400, invalid(username_rule)),
            "{name:?}"
        );
    }
    let (_, me) = app.get("/users/me", &a.token).await;
    assert_eq!(me["username"], Value::Null, "nothing refused was stored");

    let title_rule =
        "title must be 1 to 100 characters, no control or invisible formatting characters";
    for title in ["esc\u{1b}]0;pwned\u{7}", "line\nbreak", "rtl\u{202e}"] {
        assert_eq!(
            app.post(
                "/conversations",
                &a.token,
                &json!({"title": title, "member_ids": [b.id]})
            )
            .await,
            (400, invalid(title_rule)),
            "{title:?}"
        );
    }
    let group = app.create_group(&a, "fine", &[&b]).await;
    assert_eq!(
        app.patch(
            &format!("/conversations/{group}"),
            &a.token,
            &json!({"title": "x\u{1b}y"})
        )
        .await,
        (400, invalid(title_rule))
    );

    let mut ws = WsClient::connect(&app, &a.token).await;
    for content in ["bell\u{7}", "esc \u{1b}[2J", "c\rr", "del\u{7f}"] {
        ws.send(json!({"type": "message", "to": b.id, "content": content, "client_id": "t1"}))
            .await;
        assert_eq!(
            ws.recv_type("error").await,
            json!({"type": "error", "code": "invalid_field",
                   "message": "content must not contain control characters other than newline and tab",
                   "client_id": "t1"}),
            "{content:?}"
        );
    }
    ws.send(json!({"type": "message", "to": b.id, "content": "two\n\tlines", "client_id": "t2"}))
        .await;
    assert_eq!(ws.recv_type("ack").await["client_id"], "t2");
    let (_, history) = app
        .get(
            &format!("/messages/conversation?with_user={}", b.id),
            &a.token,
        )
        .await;
    let stored: Vec<&Value> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["content"])
        .collect();
    assert_eq!(
        stored,
        vec!["two\n\tlines"],
        "only the clean message was stored"
    );
}

/// A user is their `sub`: the identity provider owns email uniqueness, so
/// an email another account still carries here (reused, or changed
/// elsewhere and not yet refreshed) locks neither account out.
async fn a_reused_email_locks_no_one_out(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = format!("{}@example.com", uuid::Uuid::now_v7().simple());
    let (first, second) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let (first_token, second_token) = (token_for(first, &email), token_for(second, &email));
    for (who, token) in [
        ("first", &first_token),
        ("second", &second_token),
        ("first again", &first_token),
    ] {
        let (status, me) = app.get("/users/me", token).await;
        assert_eq!(
            (status, me["email"].clone()),
            (200, json!(email)),
            "{who}: {me}"
        );
    }
    let (status, _) = app.get("/messages/stats", &second_token).await;
    assert_eq!(status, 200);
}

/// A direct conversation's id is derived from its two users. An outsider
/// asking about a pair that has talked gets exactly the answers an id that
/// names nothing gets, over REST and WebSocket alike.
async fn an_outsider_cannot_tell_who_talks_to_whom(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b, outsider) = (
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
    );
    app.send(&a, &b, "just between us").await;
    let (_, list) = app.get("/messages/conversations", &a.token).await;
    let talked: uuid::Uuid =
        serde_json::from_value(list["conversations"][0]["conversation_id"].clone()).unwrap();
    let nothing = uuid::Uuid::now_v7();

    let mut ws = WsClient::connect(&app, &outsider.token).await;
    let mut answers = Vec::new();
    for id in [talked, nothing] {
        let mut seen = Vec::new();
        for path in [
            format!("/messages/conversation?conversation_id={id}"),
            format!("/conversations/{id}"),
        ] {
            seen.push(json!(app.get(&path, &outsider.token).await));
        }
        seen.push(json!(
            app.patch(
                &format!("/conversations/{id}"),
                &outsider.token,
                &json!({"title": "mine"})
            )
            .await
        ));
        seen.push(json!(
            app.post(
                &format!("/conversations/{id}/members"),
                &outsider.token,
                &json!({"user_ids": [outsider.id]})
            )
            .await
        ));
        ws.send(
            json!({"type": "message", "conversation_id": id, "content": "hi", "client_id": "c"}),
        )
        .await;
        seen.push(ws.recv_type("error").await);
        ws.send(json!({"type": "typing", "conversation_id": id, "is_typing": true}))
            .await;
        seen.push(ws.recv_type("error").await);
        // Only the id differs between the two runs.
        let text = serde_json::to_string(&seen)
            .unwrap()
            .replace(&id.to_string(), "<id>");
        answers.push(text);
    }
    assert_eq!(answers[0], answers[1]);
    assert!(
        answers[0].contains("no conversation with id <id>"),
        "{}",
        answers[0]
    );
}

/// Another connection to a node's database holding the lock every change
/// to a group takes (the group's row on PostgreSQL, the write lock on
/// SQLite), so a request can be caught in flight.
enum GroupLock {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl GroupLock {
    async fn take(app: &TestApp, backend: Backend, group: uuid::Uuid) -> Self {
        use sqlx::Connection;
        let url = app.database().url.clone();
        match backend {
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
                sqlx::query("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE")
                    .bind(group)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Self::Postgres(conn)
            }
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Self::Sqlite(conn)
            }
        }
    }

    /// Returns once the change in flight is caught behind this lock.
    async fn until_the_change_waits(&self, app: &TestApp) {
        match self {
            // PostgreSQL shows the change waiting on the group's row lock
            // (if it never does, the answer checked afterwards says so).
            Self::Postgres(_) => {
                let watcher = sqlx::PgPool::connect(&app.database().url).await.unwrap();
                let waiting = || async {
                    let waiters: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM pg_stat_activity
                         WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    )
                    .fetch_one(&watcher)
                    .await
                    .unwrap();
                    waiters > 0
                };
                eventually(Duration::from_secs(10), waiting).await;
                watcher.close().await;
            }
            // Still synchronisation: SQLite shows no waiter to watch for (the
            // change retries in its busy handler), so it is given time to get there.
            Self::Sqlite(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }

    /// Demotes `user` to member in the locking transaction and commits.
    async fn demote_and_release(self, group: uuid::Uuid, user: uuid::Uuid) {
        match self {
            Self::Postgres(mut conn) => {
                sqlx::query("UPDATE conversation_members SET role = 'member' WHERE conversation_id = $1 AND user_id = $2")
                    .bind(group).bind(user).execute(&mut conn).await.unwrap();
                sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
            }
            Self::Sqlite(mut conn) => {
                sqlx::query("UPDATE conversation_members SET role = 'member' WHERE conversation_id = ?1 AND user_id = ?2")
                    .bind(group).bind(user).execute(&mut conn).await.unwrap();
                sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
            }
        }
    }
}

/// An admin demoted while their rename, add or removal is in flight: the
/// role is read again under the same lock as the change, so the change is
/// refused (it used to be checked before, and land after, the demotion).
async fn a_demoted_admins_change_in_flight_does_not_land(backend: Backend) {
    // The change must wait out the test's lock however slow the machine,
    // not give up as busy (the tests' default is 500 ms).
    let app = TestApp::spawn_with(backend, &[("SQLITE_BUSY_TIMEOUT", "30s")]).await;
    let (owner, admin, member, newcomer) = (
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
    );
    let group = app.create_group(&owner, "before", &[&admin, &member]).await;
    let path = format!("/conversations/{group}");
    let promote = || async {
        let (status, body) = app
            .patch(
                &format!("{path}/members/{}", admin.id),
                &owner.token,
                &json!({"role": "admin"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    };
    let forbidden = |message: &str| json!({"error": {"code": "forbidden", "message": message}});

    // Each change is sent, caught behind the lock, and the demotion
    // commits before the change can take the lock.
    type Change<'a> = (&'a str, reqwest::Method, String, Value, Value);
    let changes: Vec<Change> = vec![
        (
            "rename",
            reqwest::Method::PATCH,
            path.clone(),
            json!({"title": "after"}),
            forbidden("only owners and admins can change a group"),
        ),
        (
            "add",
            reqwest::Method::POST,
            format!("{path}/members"),
            json!({"user_ids": [newcomer.id]}),
            forbidden("only owners and admins can add members"),
        ),
        (
            "remove",
            reqwest::Method::DELETE,
            format!("{path}/members/{}", member.id),
            Value::Null,
            forbidden("owners remove admins and members; admins remove members"),
        ),
    ];
    for (what, method, url, body, refused) in changes {
        promote().await;
        let lock = GroupLock::take(&app, backend, group).await;
        let request = {
            let mut request = app
                .http
                .request(method, format!("{}{url}", app.base))
                .bearer_auth(&admin.token);
            if !body.is_null() {
                request = request.json(&body);
            }
            tokio::spawn(request.send())
        };
        lock.until_the_change_waits(&app).await;
        lock.demote_and_release(group, admin.id).await;
        let answer = crate::helpers::read(request.await.unwrap().unwrap()).await;
        assert_eq!(answer, (403, refused), "{what}");
    }
    let (_, now) = app.get(&path, &owner.token).await;
    assert_eq!(now["title"], "before");
    let members: Vec<&Value> = now["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["user_id"])
        .collect();
    assert_eq!(members.len(), 3, "nobody joined or left: {now}");
    assert!(!members.contains(&&json!(newcomer.id)));
}

/// Presence (live and in profiles) goes only to the people a user has
/// talked to. A stranger who sends one unsolicited message, or puts them in
/// a group, learns nothing of their presence until they answer.
async fn presence_goes_only_to_whom_a_user_has_talked_to(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (victim, stranger) = (app.new_user().await, app.new_user().await);
    app.send(&stranger, &victim, "hi, remember me?").await;
    let group = app.create_group(&stranger, "lure", &[&victim]).await;
    app.send_to_group(&stranger, group, "anyone here?").await;

    let mut ws = WsClient::connect(&app, &stranger.token).await;
    ws.assert_usable().await;
    let mut wv = WsClient::connect(&app, &victim.token).await;
    wv.assert_usable().await;
    ws.none_of_type_for("user_online", Duration::from_millis(400))
        .await;
    let (status, profile) = app
        .get(&format!("/users/{}", victim.id), &stranger.token)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (profile["is_online"].clone(), profile["last_seen"].clone()),
        (json!(false), Value::Null),
        "{profile}"
    );

    // The victim answers: from now on the stranger is someone they talk
    // to, and is told at once that they are online.
    app.send(&victim, &stranger, "who are you?").await;
    assert_eq!(
        crate::helpers::wsclient::presence(&ws.recv_type("user_online").await),
        json!({"type": "user_online", "user_id": victim.id})
    );
    wv.close().await;
    assert_eq!(
        crate::helpers::wsclient::presence(&ws.recv_type("user_offline").await),
        json!({"type": "user_offline", "user_id": victim.id})
    );
    let mut wv = WsClient::connect(&app, &victim.token).await;
    wv.assert_usable().await;
    assert_eq!(
        crate::helpers::wsclient::presence(&ws.recv_type("user_online").await),
        json!({"type": "user_online", "user_id": victim.id})
    );
    let (_, profile) = app
        .get(&format!("/users/{}", victim.id), &stranger.token)
        .await;
    assert_eq!(profile["is_online"], true, "{profile}");
    assert!(profile["last_seen"].is_string(), "{profile}");
}

/// A user who is blocked cannot message, type to, add to a group, or see
/// the presence or profile of the one who blocked them, and every answer is
/// the one a user that does not exist gets.
async fn a_blocked_user_gets_the_answers_of_a_user_that_does_not_exist(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (victim, pest) = (app.new_user().await, app.new_user().await);
    app.talk(&victim, &pest).await;
    let nobody = uuid::Uuid::now_v7();

    let block = format!("/users/{}/block", pest.id);
    assert_eq!(
        app.post(&block, &victim.token, &json!({})).await,
        (200, json!({"user_id": pest.id, "blocked": true}))
    );
    assert_eq!(
        app.post(&block, &victim.token, &json!({})).await.0,
        200,
        "blocking twice changes nothing"
    );
    assert_eq!(
        app.post(
            &format!("/users/{}/block", victim.id),
            &victim.token,
            &json!({})
        )
        .await,
        (
            400,
            json!({"error": {"code": "invalid_field", "message": "you cannot block yourself"}})
        )
    );
    assert_eq!(
        app.post(&format!("/users/{nobody}/block"), &victim.token, &json!({}))
            .await,
        (
            404,
            json!({"error": {"code": "not_found", "message": format!("no user with id {nobody}")}})
        )
    );
    assert_eq!(
        app.delete(&format!("/users/{nobody}/block"), &victim.token)
            .await,
        (
            404,
            json!({"error": {"code": "not_found", "message": format!("no user with id {nobody}")}})
        )
    );
    let (_, list) = app.get("/users/me/blocks", &victim.token).await;
    assert_eq!(list["blocks"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["blocks"][0]["user_id"], json!(pest.id));

    // Everything the pest asks about the victim is answered as about nobody.
    let mut wp = WsClient::connect(&app, &pest.token).await;
    let mut answers = Vec::new();
    for target in [victim.id, nobody] {
        let mut seen = Vec::new();
        wp.send(json!({"type": "message", "to": target, "content": "hello?", "client_id": "p"}))
            .await;
        seen.push(wp.recv_type_of(&["ack", "error"]).await);
        wp.send(json!({"type": "typing", "to": target, "is_typing": true}))
            .await;
        seen.push(wp.recv_type_of(&["error"]).await);
        seen.push(json!(
            app.get(&format!("/users/{target}"), &pest.token).await
        ));
        seen.push(json!(
            app.post(
                "/conversations",
                &pest.token,
                &json!({"title": "trap", "member_ids": [target]})
            )
            .await
        ));
        answers.push(
            serde_json::to_string(&seen)
                .unwrap()
                .replace(&target.to_string(), "<id>"),
        );
    }
    assert_eq!(answers[0], answers[1]);
    assert!(
        answers[0].contains("no user with id <id>"),
        "{}",
        answers[0]
    );
    let (_, stats) = app.get("/messages/stats", &victim.token).await;
    assert_eq!(
        stats["total_received"], 1,
        "nothing reached the victim: {stats}"
    );

    // Nor does the victim's presence reach the pest any more.
    let mut wv = WsClient::connect(&app, &victim.token).await;
    wv.assert_usable().await;
    wp.none_of_type_for("user_online", Duration::from_millis(400))
        .await;

    // Unblocked, the pest is a user again.
    assert_eq!(
        app.delete(&block, &victim.token).await,
        (200, json!({"user_id": pest.id, "blocked": false}))
    );
    wp.send(json!({"type": "message", "to": victim.id, "content": "sorry", "client_id": "s"}))
        .await;
    assert_eq!(wp.recv_type("ack").await["client_id"], "s");
    assert_eq!(wv.recv_type("message").await["content"], "sorry");
}

/// A first direct message introduces its sender's presence only when they
/// are online: an offline sender is what the recipient assumes already, and
/// an offline frame then could overtake the sender's next online one.
async fn a_first_message_brings_presence_only_when_the_sender_is_online(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (reader, writer) = (app.new_user().await, app.new_user().await);
    let mut wr = WsClient::connect(&app, &reader.token).await;
    wr.assert_usable().await;
    app.send(&writer, &reader, "from an offline sender").await;
    assert_eq!(
        wr.recv_type("message").await["content"],
        "from an offline sender"
    );
    wr.silent_for(Duration::from_millis(400)).await;

    let mut ww = WsClient::connect(&app, &writer.token).await;
    ww.assert_usable().await;
    assert_eq!(
        crate::helpers::wsclient::presence(&wr.recv().await),
        json!({"type": "user_online", "user_id": writer.id})
    );
}

/// A first post in a small group makes its poster someone who has talked
/// to every member: members online are told the poster's presence now, as
/// for a first direct message, not at the poster's next transition.
async fn a_first_post_in_a_small_group_brings_the_posters_presence(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, member) = (app.new_user().await, app.new_user().await);
    let group = app.create_group(&owner, "small", &[&member]).await;
    let mut wm = WsClient::connect(&app, &member.token).await;
    wm.assert_usable().await;
    let mut wo = WsClient::connect(&app, &owner.token).await;
    wo.assert_usable().await;
    wm.none_of_type_for("user_online", Duration::from_millis(400))
        .await;

    wo.send(json!({"type": "message", "conversation_id": group, "content": "welcome"}))
        .await;
    wo.recv_type("ack").await;
    let mut seen = Vec::new();
    while let Some(frame) = wm.next_within(Duration::from_secs(2)).await {
        match frame["type"].as_str() {
            Some("message") => seen.push(json!({"message": frame["content"]})),
            Some("user_online" | "user_offline") => {
                seen.push(crate::helpers::wsclient::presence(&frame));
            }
            _ => {}
        }
        if seen.len() == 2 {
            break;
        }
    }
    seen.sort_by_key(Value::to_string);
    assert_eq!(
        seen,
        [
            json!({"message": "welcome"}),
            json!({"type": "user_online", "user_id": owner.id}),
        ]
    );
}
