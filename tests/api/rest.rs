//! The REST API over real HTTP, on both storage backends.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(
    health_live_and_ready,
    requests_without_a_valid_token_are_401,
    conversation_history_pages_with_before,
    conversation_query_errors,
    conversation_list_shape,
    search_endpoint,
    stats_endpoint,
    mark_read_endpoint,
    mark_read_bad_bodies,
    profile_endpoints,
    profile_errors,
    nul_characters_are_refused_not_a_500,
    cors_allows_only_configured_origins,
);

/// PostgreSQL cannot store U+0000 in text: a profile or group field
/// carrying one is bad input (400), on both backends alike, never a 500.
async fn nul_characters_are_refused_not_a_500(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let (status, body) = app
        .patch("/users/me", &a.token, &json!({"username": "al\u{0}ice"}))
        .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": {"code": "invalid_field", "message": "username must be 1 to 50 characters, no control or invisible formatting characters, or null"}})
        )
    );
    let avatar = "https://example.com/a\u{0}.png";
    let refused = json!({"error": {"code": "invalid_field", "message": "avatar_url must be an http(s) URL of at most 2048 characters, or null"}});
    let (status, body) = app
        .patch("/users/me", &a.token, &json!({"avatar_url": avatar}))
        .await;
    assert_eq!((status, body), (400, refused.clone()));
    let (status, body) = app
        .post(
            "/conversations",
            &a.token,
            &json!({"title": "t", "avatar_url": avatar, "member_ids": [b.id]}),
        )
        .await;
    assert_eq!((status, body), (400, refused));
    // A signed token whose email claim carries one is refused, not stored.
    let token = crate::helpers::token_for(Uuid::now_v7(), "nul\u{0}@example.com");
    let (status, body) = app.get("/users/me", &token).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("unauthorized"))
    );
    // Nothing changed.
    let (_, me) = app.get("/users/me", &a.token).await;
    assert_eq!(
        (me["username"].clone(), me["avatar_url"].clone()),
        (Value::Null, Value::Null)
    );
}

async fn health_live_and_ready(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for path in ["/health", "/livez"] {
        let response = reqwest::get(format!("{}{path}", app.base)).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"status": "ok"})
        );
    }
    let response = reqwest::get(format!("{}/readyz", app.base)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ready", "checks": {"database": "ok", "bus": "ok", "presence": "ok"}})
    );
}

async fn requests_without_a_valid_token_are_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let url = format!("{}/messages/stats", app.base);
    let missing = app.http.get(&url).send().await.unwrap();
    assert_eq!(
        crate::helpers::read(missing).await,
        (
            401,
            json!({"error": {"code": "unauthorized", "message": "missing bearer token"}})
        )
    );

    let (status, body) = app.get("/messages/stats", "not-a-jwt").await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({"error": {"code": "unauthorized", "message": "malformed token"}})
        )
    );

    let basic = app
        .http
        .get(&url)
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(crate::helpers::read(basic).await.0, 401);
}

async fn conversation_history_pages_with_before(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b, c) = (
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
    );
    let mut ids = Vec::new();
    for i in 0..5 {
        let m = if i % 2 == 0 {
            app.send(&a, &b, &format!("m{i}")).await
        } else {
            app.send(&b, &a, &format!("m{i}")).await
        };
        ids.push(json!(m.id));
    }

    let (status, page) = app
        .get(
            &format!("/messages/conversation?with_user={}&limit=3", b.id),
            &a.token,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let got: Vec<Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(got, ids[2..5]);
    assert_eq!(page["has_more"], true);
    let first = &page["messages"][0];
    for field in [
        "id",
        "sender_id",
        "receiver_id",
        "content",
        "message_type",
        "is_read",
        "created_at",
        "updated_at",
    ] {
        assert!(
            first.get(field).is_some(),
            "message objects carry {field}: {first}"
        );
    }
    assert_eq!(first["message_type"], "text");
    assert_eq!(first["content"], "m2");

    let before = page["messages"][0]["id"].as_str().unwrap();
    let (_, older) = app
        .get(
            &format!(
                "/messages/conversation?with_user={}&limit=3&before={before}",
                b.id
            ),
            &a.token,
        )
        .await;
    let got: Vec<Value> = older["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(got, ids[0..2]);
    assert_eq!(older["has_more"], false);

    // limit is clamped, not rejected.
    let (_, one) = app
        .get(
            &format!("/messages/conversation?with_user={}&limit=0", b.id),
            &a.token,
        )
        .await;
    assert_eq!(one["messages"].as_array().unwrap().len(), 1);
    let (_, all) = app
        .get(
            &format!("/messages/conversation?with_user={}&limit=100000", b.id),
            &a.token,
        )
        .await;
    assert_eq!(all["messages"].as_array().unwrap().len(), 5);

    // A conversation the caller is not part of reads as empty.
    let (status, theirs) = app
        .get(
            &format!("/messages/conversation?with_user={}", b.id),
            &c.token,
        )
        .await;
    assert_eq!(
        (status, theirs),
        (200, json!({"messages": [], "has_more": false}))
    );
}

async fn conversation_query_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.new_user().await;
    let (status, body) = app
        .get("/messages/conversation?with_user=not-a-uuid", &a.token)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_field");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("with_user"),
        "{body}"
    );

    let (status, body) = app.get("/messages/conversation", &a.token).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_field"))
    );
    let (status, body) = app
        .get(
            &format!("/messages/conversation?with_user={}&limit=-1", a.id),
            &a.token,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_field"))
    );
    let (status, body) = app
        .get(
            &format!("/messages/conversation?with_user={}&before=yesterday", a.id),
            &a.token,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_field"))
    );
}

async fn conversation_list_shape(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b, c) = (
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
    );
    app.patch(
        "/users/me",
        &c.token,
        &json!({"username": "carol", "avatar_url": "https://example.com/c.png"}),
    )
    .await;
    app.send(&b, &a, "hi from b").await;
    let last = app.send(&c, &a, "hi from c").await;

    let (status, body) = app.get("/messages/conversations", &a.token).await;
    assert_eq!(status, 200);
    let list = body["conversations"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["user_id"], json!(c.id));
    assert_eq!(list[0]["username"], "carol");
    assert_eq!(list[0]["avatar_url"], "https://example.com/c.png");
    assert_eq!(list[0]["unread_count"], 1);
    assert_eq!(list[0]["last_message"]["id"], json!(last.id));
    assert_eq!(list[0]["last_message"]["content"], "hi from c");
    assert_eq!(list[1]["user_id"], json!(b.id));

    let (_, empty) = app
        .get("/messages/conversations", &app.new_user().await.token)
        .await;
    assert_eq!(empty, json!({"conversations": []}));
}

async fn search_endpoint(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b, c) = (
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
    );
    let mine = app.send(&a, &b, "Lunch at noon?").await;
    app.send(&b, &c, "lunch without a").await;

    let (status, body) = app
        .get("/messages/search?query=LUNCH&limit=20", &a.token)
        .await;
    assert_eq!(status, 200);
    let ids: Vec<Value> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(mine.id)]);

    let (status, body) = app.get("/messages/search?query=%20%3F%21", &a.token).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": {"code": "invalid_field", "message": "query must contain at least one word"}})
    );
    let (status, body) = app.get("/messages/search", &a.token).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_field"))
    );
}

async fn stats_endpoint(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    app.send(&a, &b, "1").await;
    app.send(&b, &a, "2").await;
    app.send(&b, &a, "3").await;
    let (status, body) = app.get("/messages/stats", &a.token).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"total_sent": 1, "total_received": 2, "unread": 2, "conversations": 1})
    );
}

async fn mark_read_endpoint(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let to_b = app.send(&a, &b, "for b").await;
    let to_a = app.send(&b, &a, "for a").await;

    // Marking messages one did not receive changes nothing.
    let (status, body) = app
        .post(
            "/messages/mark-read",
            &a.token,
            &json!({"message_ids": [to_b.id]}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"updated": 0})));

    let (status, body) = app
        .post(
            "/messages/mark-read",
            &b.token,
            &json!({"message_ids": [to_b.id, to_a.id, Uuid::now_v7()]}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"updated": 1})));
    let (_, again) = app
        .post(
            "/messages/mark-read",
            &b.token,
            &json!({"message_ids": [to_b.id]}),
        )
        .await;
    assert_eq!(again, json!({"updated": 0}));

    let (_, history) = app
        .get(
            &format!("/messages/conversation?with_user={}", a.id),
            &b.token,
        )
        .await;
    let read: Vec<(Value, Value)> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].clone(), m["is_read"].clone()))
        .collect();
    assert_eq!(
        read,
        vec![
            (json!(to_b.id), json!(true)),
            (json!(to_a.id), json!(false))
        ]
    );
}

async fn mark_read_bad_bodies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.new_user().await;
    let url = format!("{}/messages/mark-read", app.base);
    let raw = |body: String| {
        app.http
            .post(&url)
            .bearer_auth(&a.token)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };

    let (status, body) =
        crate::helpers::read(raw("{\"message_ids\": [".into()).await.unwrap()).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_json")),
        "{body}"
    );

    let (status, body) = app
        .post(
            "/messages/mark-read",
            &a.token,
            &json!({"message_ids": ["nope"]}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_field")),
        "{body}"
    );
    let (status, body) = app
        .post("/messages/mark-read", &a.token, &json!({"ids": []}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_field")),
        "{body}"
    );

    let too_many: Vec<Uuid> = (0..1001).map(|_| Uuid::now_v7()).collect();
    let (status, body) = app
        .post(
            "/messages/mark-read",
            &a.token,
            &json!({"message_ids": too_many}),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": {"code": "invalid_field", "message": "at most 1000 message_ids per request"}})
        )
    );

    let huge = format!(
        "{{\"message_ids\": [], \"pad\": \"{}\"}}",
        "x".repeat(70 * 1024)
    );
    let (status, body) = crate::helpers::read(raw(huge).await.unwrap()).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (413, json!("payload_too_large")),
        "{body}"
    );

    let no_type = app
        .http
        .post(&url)
        .bearer_auth(&a.token)
        .body("{\"message_ids\": []}")
        .send()
        .await
        .unwrap();
    let (status, body) = crate::helpers::read(no_type).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_json")),
        "{body}"
    );
}

async fn profile_endpoints(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = (app.new_user().await, app.new_user().await);

    let (status, me) = app.get("/users/me", &a.token).await;
    assert_eq!(status, 200);
    assert_eq!(me["id"], json!(a.id));
    assert_eq!(me["email"], a.email);
    assert_eq!(me["username"], Value::Null);
    assert_eq!(me["is_online"], false);

    let (status, me) = app
        .patch(
            "/users/me",
            &a.token,
            &json!({"username": "  alice  ", "avatar_url": "https://example.com/a.png"}),
        )
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (me["username"].clone(), me["avatar_url"].clone()),
        (json!("alice"), json!("https://example.com/a.png"))
    );

    // Absent fields are kept; null clears.
    let (_, me) = app
        .patch("/users/me", &a.token, &json!({"avatar_url": null}))
        .await;
    assert_eq!(
        (me["username"].clone(), me["avatar_url"].clone()),
        (json!("alice"), Value::Null)
    );

    let (status, profile) = app.get(&format!("/users/{}", a.id), &b.token).await;
    assert_eq!(status, 200);
    assert_eq!(profile["username"], "alice");
    assert_eq!(profile["is_online"], false);
    assert!(profile.get("last_seen").is_some());
    assert!(
        profile.get("email").is_none(),
        "others' emails stay private: {profile}"
    );
}

async fn profile_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.new_user().await;
    let (status, body) = app
        .get(&format!("/users/{}", Uuid::now_v7()), &a.token)
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let (status, body) = app.get("/users/not-a-uuid", &a.token).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_field"))
    );

    let (status, body) = app
        .patch("/users/me", &a.token, &json!({"username": "   "}))
        .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": {"code": "invalid_field", "message": "username must be 1 to 50 characters, no control or invisible formatting characters, or null"}})
        )
    );
    let (status, body) = app
        .patch(
            "/users/me",
            &a.token,
            &json!({"avatar_url": "javascript:alert(1)"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_field"))
    );
    let (status, body) = app
        .patch("/users/me", &a.token, &json!({"username": 42}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_field"))
    );
    let (_, me) = app.get("/users/me", &a.token).await;
    assert_eq!(
        me["username"],
        Value::Null,
        "a rejected patch changes nothing"
    );
}

async fn cors_allows_only_configured_origins(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("ALLOWED_ORIGINS", "http://localhost:3000")]).await;
    let preflight = |origin: &'static str| {
        app.http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/messages/stats", app.base),
            )
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
    };
    let allowed = preflight("http://localhost:3000").await.unwrap();
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .unwrap(),
        "http://localhost:3000"
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}
