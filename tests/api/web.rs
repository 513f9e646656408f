//! The browser client's server side: assets with a strict CSP, and the
//! development sign-in that only a loopback development node offers.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, TestDatabase};

#[tokio::test]
async fn the_client_is_served_with_a_strict_policy() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let root = format!("http://127.0.0.1:{}", app.port);
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let response = reqwest::get(format!("{root}{path}")).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        assert_eq!(
            headers["content-security-policy"],
            ochat::http::web::policy(None).as_str()
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    let page = reqwest::get(format!("{root}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no third-party references"
    );
    assert!(ochat::http::web::policy(None).contains("default-src 'none'"));
}

async fn dev_node() -> TestApp {
    // JWT_SECRET empty means unset: development auth.
    TestApp::spawn_with(Backend::Sqlite, &[("JWT_SECRET", "")]).await
}

#[tokio::test]
async fn development_sign_in_gives_a_working_token() {
    let app = dev_node().await;
    let config: Value = reqwest::get(format!("{}/dev/config", app.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config, json!({"dev_signin": true}));

    let (status, body) = app.post("/dev/token", "", &json!({"name": "Alice"})).await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let (status, me) = app.get("/users/me", &token).await;
    assert_eq!(status, 200);
    assert_eq!(me["username"], "Alice");
    assert_eq!(me["id"], body["user_id"]);

    let (_, again) = app.post("/dev/token", "", &json!({"name": "alice"})).await;
    assert_eq!(
        again["user_id"], body["user_id"],
        "the same name is the same user"
    );

    let (status, body) = app
        .post("/dev/token", "", &json!({"name": "<script>"}))
        .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": {"code": "invalid_field", "message": "name must be 1 to 32 letters, digits, spaces, dots, dashes or underscores"}})
        )
    );
}

#[tokio::test]
async fn development_sign_in_is_off_when_real_auth_is_configured() {
    for env in [vec![], vec![("SERVER_HOST", "0.0.0.0")]] {
        let app = TestApp::spawn_with(Backend::Sqlite, &env).await;
        let config: Value =
            reqwest::get(format!("http://127.0.0.1:{}/api/v1/dev/config", app.port))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        assert_eq!(config, json!({"dev_signin": false}), "{env:?}");
        let response = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/api/v1/dev/token", app.port))
            .json(&json!({"name": "mallory"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{env:?}");
    }
}

#[tokio::test]
async fn development_auth_refuses_a_non_loopback_address() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let config = ochat::Config::from_vars([
        ("DATABASE_URL", db.url.as_str()),
        ("SERVER_HOST", "0.0.0.0"),
        ("SERVER_PORT", "0"),
        ("METRICS_PORT", "off"),
    ])
    .unwrap();
    let err = ochat::Application::build(config)
        .await
        .err()
        .expect("start-up is refused");
    assert!(
        err.to_string()
            .starts_with("refusing to start: no JWT_SECRET"),
        "{err}"
    );
}
