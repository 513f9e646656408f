//! Finding people by name (`GET /users/search`): a prefix of the username in
//! any case, paged by name, never the caller nor anyone who blocked them,
//! on a budget of its own.

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, TestUser};

both_backends!(
    people_are_found_by_the_start_of_their_name_in_pages,
    a_search_without_a_usable_query_is_refused,
    searches_past_their_budget_are_refused,
);

async fn named(app: &TestApp, name: &str) -> TestUser {
    let user = app.new_user().await;
    let (status, body) = app
        .patch("/users/me", &user.token, &json!({"username": name}))
        .await;
    assert_eq!(status, 200, "{body}");
    user
}

fn names(body: &Value) -> Vec<&str> {
    body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect()
}

async fn people_are_found_by_the_start_of_their_name_in_pages(backend: Backend) {
    // More searches than a person picker's burst; the budget has its own test.
    let app = TestApp::spawn_with(backend, &[("USER_SEARCH_BURST", "100")]).await;
    let me = named(&app, "alvin").await;
    let alice = named(&app, "alice").await;
    let alicia = named(&app, "ALICIA").await;
    named(&app, "Alfred").await;
    named(&app, "bob").await;
    named(&app, "xal").await;
    named(&app, "amber").await;
    let alma = named(&app, "alma").await;
    assert_eq!(
        app.post(&format!("/users/{}/block", me.id), &alma.token, &json!({}))
            .await
            .0,
        200
    );

    // Any case, ordered by name; not the caller, not who blocked them.
    for q in ["al", "AL", "Al", "%20al%20"] {
        let (status, body) = app.get(&format!("/users/search?q={q}"), &me.token).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(names(&body), vec!["Alfred", "alice", "ALICIA"], "q={q}");
        assert_eq!(body["has_more"], false);
    }
    let (_, body) = app.get("/users/search?q=ali", &me.token).await;
    assert_eq!(names(&body), vec!["alice", "ALICIA"]);
    assert_eq!(
        body["users"][0],
        json!({"id": alice.id, "username": "alice", "avatar_url": null})
    );
    // Nothing matches a pattern character: the query is a plain prefix.
    for q in ["%25", "_", "a%25"] {
        let (_, body) = app.get(&format!("/users/search?q={q}"), &me.token).await;
        assert_eq!(names(&body), Vec::<&str>::new(), "q={q}");
    }

    // Pages: after the last one's id, the rest.
    let (_, first) = app.get("/users/search?q=al&limit=2", &me.token).await;
    assert_eq!(names(&first), vec!["Alfred", "alice"]);
    assert_eq!(first["has_more"], true);
    let (_, rest) = app
        .get(
            &format!("/users/search?q=al&limit=2&after={}", alice.id),
            &me.token,
        )
        .await;
    assert_eq!(names(&rest), vec!["ALICIA"]);
    assert_eq!(rest["has_more"], false);
    assert_eq!(rest["users"][0]["id"], json!(alicia.id));

    // After someone who blocked the caller: nothing, as after an unknown
    // id, so a page cannot place them.
    for after in [alma.id, uuid::Uuid::now_v7()] {
        let (status, body) = app
            .get(&format!("/users/search?q=a&after={after}"), &me.token)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(names(&body), Vec::<&str>::new());
    }
    // The one who blocked sees the caller (blocking is one way).
    let (_, body) = app.get("/users/search?q=alv", &alma.token).await;
    assert_eq!(names(&body), vec!["alvin"]);
    // Names beyond ASCII are found as written (PostgreSQL also folds
    // their case; SQLite folds ASCII letters only).
    named(&app, "Émile").await;
    let (_, body) = app.get("/users/search?q=%C3%89mi", &me.token).await;
    assert_eq!(names(&body), vec!["Émile"]);
    app.shutdown().await;
}

async fn a_search_without_a_usable_query_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let me = app.new_user().await;
    let refused =
        json!({"error": {"code": "invalid_field", "message": "q must be 1 to 64 characters"}});
    let long = "a".repeat(65);
    for path in [
        "/users/search".to_owned(),
        "/users/search?q=".to_owned(),
        "/users/search?q=%20%20".to_owned(),
        format!("/users/search?q={long}"),
    ] {
        assert_eq!(
            app.get(&path, &me.token).await,
            (400, refused.clone()),
            "{path}"
        );
    }
    let (status, body) = app.get("/users/search?q=a&after=nobody", &me.token).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_field");
    let (status, _) = app
        .get(&format!("/users/search?q={}", "a".repeat(64)), &me.token)
        .await;
    assert_eq!(status, 200);
    app.shutdown().await;
}

async fn searches_past_their_budget_are_refused(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[("USER_SEARCH_BURST", "3"), ("USER_SEARCH_PER_SEC", "0.5")],
    )
    .await;
    let me = app.new_user().await;
    let other = app.new_user().await;
    for _ in 0..3 {
        assert_eq!(app.get("/users/search?q=a", &me.token).await.0, 200);
    }
    let response = app
        .http
        .get(format!("{}/users/search?q=a", app.base))
        .bearer_auth(&me.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(
        crate::helpers::read(response).await,
        (
            429,
            json!({"error": {"code": "rate_limited", "message": "too many requests; retry in 2 s"}})
        )
    );
    // Its own budget: the caller's other requests, and other users'
    // searches, go on.
    assert_eq!(app.get("/users/me", &me.token).await.0, 200);
    assert_eq!(app.get("/users/search?q=a", &other.token).await.0, 200);
    app.shutdown().await;
}
