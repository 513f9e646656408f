//! The HTTP edge under attack: listener limits (slowloris, connection cap,
//! body deadline), request budgets, metric labels, readiness, CORS and the
//! REST contract.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::both_backends;
use crate::helpers::wsclient::WsClient;
use crate::helpers::{Backend, OwnRedis, TestApp, eventually};
use crate::ops::{sample, scrape};

both_backends!(
    a_made_up_method_is_one_metric_series,
    a_users_requests_share_one_budget,
    the_rest_api_refuses_what_its_document_refuses,
);

/// Metric labels come from closed sets: an anonymous peer's made-up method
/// adds no series (each would be kept for the life of the process).
async fn a_made_up_method_is_one_metric_series(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let made_up: Vec<String> = (0..20)
        .map(|i| format!("X{}{i}", uuid::Uuid::now_v7().simple()).to_uppercase())
        .collect();
    for method in &made_up {
        let response = app
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}/messages/stats/{method}", app.base),
            )
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{method}");
    }
    let metrics = scrape(&app).await;
    for method in &made_up {
        assert!(
            !metrics.contains(method.as_str()),
            "{method} became a label"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ochat_http_requests_total")
                && l.contains("method=\"other\"")
                && l.contains("route=\"unmatched\"")),
        "made-up methods share one label: {metrics}"
    );
}

/// /readyz is public: it names the part that is down, never an address or
/// a backend's error text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_the_failing_part_and_no_address() {
    let mut redis = OwnRedis::start().await;
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("REDIS_URL", &redis.url()),
            ("REDIS_PROBE_INTERVAL", "200ms"),
        ],
    )
    .await;
    redis.kill();
    let url = format!("{}/readyz", app.base);
    let mut last = (0, Value::Null);
    for _ in 0..50 {
        let response = reqwest::get(&url).await.unwrap();
        last = (response.status().as_u16(), response.json().await.unwrap());
        if last.0 == 503 && last.1["checks"]["presence"] == "down" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        last,
        (
            503,
            json!({
                "status": "unavailable",
                "checks": {"database": "ok", "bus": "down", "presence": "down"},
            })
        )
    );
}

/// A browser client on an allowed origin can use every method the API
/// serves, leaving a group (DELETE) among them.
#[tokio::test]
async fn cors_preflight_allows_every_method_the_api_serves() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("ALLOWED_ORIGINS", "http://localhost:3000")],
    )
    .await;
    for method in ["GET", "POST", "PATCH", "PUT", "DELETE"] {
        let preflight = app
            .http
            .request(
                reqwest::Method::OPTIONS,
                format!(
                    "{}/conversations/{}/members/{}",
                    app.base,
                    uuid::Uuid::nil(),
                    uuid::Uuid::nil()
                ),
            )
            .header("Origin", "http://localhost:3000")
            .header("Access-Control-Request-Method", method)
            .header("Access-Control-Request-Headers", "authorization")
            .send()
            .await
            .unwrap();
        let allowed = preflight
            .headers()
            .get("access-control-allow-methods")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        assert!(
            allowed.split(',').any(|m| m.trim() == method),
            "{method} not in {allowed:?}"
        );
    }
}

/// Every REST request of a user is charged to their budget: past it, 429
/// with `Retry-After` and the error body; other users are unaffected. The
/// 429 comes when the budget has room again (a client looping on its
/// refusals asks no faster than its budget refills), so the request right
/// after it is admitted.
async fn a_users_requests_share_one_budget(backend: Backend) {
    let app = TestApp::with_tight_budget(backend, 4).await;
    let a = app.new_user().await;
    for _ in 0..3 {
        assert_eq!(app.get("/messages/stats", &a.token).await.0, 200);
    }
    let asked = std::time::Instant::now();
    let response = app
        .http
        .get(format!("{}/messages/stats", app.base))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    let held = asked.elapsed();
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        crate::helpers::read(response).await,
        (
            429,
            json!({"error": {"code": "rate_limited", "message": "too many requests; retry in 1 s"}})
        )
    );
    assert!(
        (Duration::from_millis(300)..Duration::from_millis(1500)).contains(&held),
        "refused after {held:?}"
    );
    assert_eq!(app.get("/messages/stats", &a.token).await.0, 200);
    let b = app.new_user().await;
    assert_eq!(app.get("/messages/stats", &b.token).await.0, 200);
}

/// Requests without a valid token (none, or a bad one) are charged to the
/// address they came from; probes never are, so a flood cannot make a
/// load balancer take a healthy node out.
#[tokio::test]
async fn anonymous_requests_are_charged_to_their_address() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("ANONYMOUS_RATE_LIMIT_PER_SEC", "1"),
            ("ANONYMOUS_RATE_LIMIT_BURST", "3"),
        ],
    )
    .await;
    let user = app.new_user().await;
    let anonymous = |path: &str, token: Option<&str>| {
        let mut request = app.http.get(format!("{}{path}", app.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(
        anonymous("/openapi.json", None).await.unwrap().status(),
        200
    );
    assert_eq!(
        anonymous("/messages/stats", None).await.unwrap().status(),
        401
    );
    assert_eq!(
        anonymous("/messages/stats", Some("forged"))
            .await
            .unwrap()
            .status(),
        401
    );
    let refused = anonymous("/messages/stats", Some("forged")).await.unwrap();
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        crate::helpers::read(refused).await,
        (
            429,
            json!({"error": {"code": "rate_limited", "message": "too many requests; retry in 1 s"}})
        )
    );
    for probe in ["/health", "/livez", "/readyz"] {
        for _ in 0..5 {
            assert_eq!(
                anonymous(probe, None).await.unwrap().status(),
                200,
                "{probe}"
            );
        }
    }
    assert_eq!(
        app.get("/messages/stats", &user.token).await.0,
        200,
        "a signed-in user has a budget of their own"
    );
}

/// Behind a load balancer the address is the last `X-Forwarded-For` entry
/// (the one the balancer appended), when the node is told to trust it.
/// (A budget that refills every five seconds: a 429 is held at most a
/// second, and the next request is still refused.)
#[tokio::test]
async fn behind_a_trusted_balancer_each_client_address_has_its_budget() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("ANONYMOUS_RATE_LIMIT_PER_SEC", "0.2"),
            ("ANONYMOUS_RATE_LIMIT_BURST", "1"),
            ("TRUST_X_FORWARDED_FOR", "true"),
        ],
    )
    .await;
    let from = |forwarded: &str| {
        app.http
            .get(format!("{}/openapi.json", app.base))
            .header("X-Forwarded-For", forwarded)
            .send()
    };
    assert_eq!(from("198.51.100.7").await.unwrap().status(), 200);
    assert_eq!(from("198.51.100.7").await.unwrap().status(), 429);
    // A client cannot pick its address by prepending entries.
    assert_eq!(
        from("203.0.113.9, 198.51.100.7").await.unwrap().status(),
        429
    );
    assert_eq!(from("198.51.100.8").await.unwrap().status(), 200);
}

/// A `mark_read` that changes nothing writes nothing: with the embedded
/// database's write lock held elsewhere it is answered at once (it used to
/// queue for the lock every sender waits on, then fail).
#[tokio::test]
async fn a_mark_read_that_changes_nothing_takes_no_write_lock() {
    use sqlx::Connection;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let message = app.send(&a, &b, "read me once").await;
    let body = json!({"message_ids": [message.id]});
    assert_eq!(
        app.post("/messages/mark-read", &b.token, &body).await,
        (200, json!({"updated": 1}))
    );
    let mut ws = WsClient::connect(&app, &b.token).await;
    ws.assert_usable().await;

    let mut writer = sqlx::SqliteConnection::connect(&app.database().url)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut writer)
        .await
        .unwrap();
    assert_eq!(
        app.post("/messages/mark-read", &b.token, &body).await,
        (200, json!({"updated": 0}))
    );
    ws.send(json!({"type": "mark_read", "message_id": message.id}))
        .await;
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(
        ws.recv().await,
        json!({"type": "pong"}),
        "no error before the pong"
    );
    sqlx::query("ROLLBACK").execute(&mut writer).await.unwrap();
}

/// Reads from a raw connection until the server closes it (or `wait`
/// passes); what it said, and whether it closed.
async fn read_until_closed(tcp: &mut tokio::net::TcpStream, wait: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&seen).into(), false),
        }
    }
}

/// Slowloris: connections that send half a request and then nothing are
/// dropped after HEADER_READ_TIMEOUT; past MAX_CONNECTIONS a new one is
/// closed at once (and counted); honest requests get through afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_dropped_and_connections_capped() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("HEADER_READ_TIMEOUT", "1s"), ("MAX_CONNECTIONS", "40")],
    )
    .await;
    let address = format!("127.0.0.1:{}", app.port);
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        tcp.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: ochat\r\nX-Slow: ")
            .await
            .unwrap();
        held.push(tcp);
    }
    // Until the node holds all 40 (its own gauge says so); if it never
    // does, the assertions below say what went wrong.
    eventually(Duration::from_secs(5), || async {
        sample(&scrape(&app).await, "ochat_tcp_connections", &[]) >= 40.0
    })
    .await;
    let refused_before = sample(&scrape(&app).await, "ochat_connections_refused_total", &[]);
    let mut over = tokio::net::TcpStream::connect(&address).await.unwrap();
    let _ = over
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: ochat\r\n\r\n")
        .await;
    let (said, closed) = read_until_closed(&mut over, Duration::from_millis(500)).await;
    assert!(
        closed && said.is_empty(),
        "over the cap: closed at once, said {said:?}"
    );
    assert!(sample(&scrape(&app).await, "ochat_connections_refused_total", &[]) > refused_before);

    for (i, tcp) in held.iter_mut().enumerate() {
        let (said, closed) = read_until_closed(tcp, Duration::from_secs(3)).await;
        assert!(closed, "connection {i} still open after the header timeout");
        assert!(
            said.is_empty() || said.starts_with("HTTP/1.1 408"),
            "{said:?}"
        );
    }
    let (status, _) = app
        .get("/messages/stats", &app.new_user().await.token)
        .await;
    assert_eq!(status, 200, "honest requests are served again");
}

/// A body trickled in (here: promised and never sent) fails with 408 after
/// REQUEST_BODY_TIMEOUT instead of holding a handler.
#[tokio::test]
async fn a_body_that_never_arrives_times_out() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("REQUEST_BODY_TIMEOUT", "1s")]).await;
    let user = app.new_user().await;
    let mut tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{}", app.port))
        .await
        .unwrap();
    let head = format!(
        "POST /api/v1/messages/mark-read HTTP/1.1\r\nHost: ochat\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"message_ids\": [",
        user.token
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let (said, _) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(
        said.ends_with(r#"{"error":{"code":"request_timeout","message":"the request body did not arrive in time"}}"#),
        "{said}"
    );
}

/// The handlers refuse what the OpenAPI document refuses, and the document
/// states what the handlers require.
async fn the_rest_api_refuses_what_its_document_refuses(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let object_only =
        json!({"error": {"code": "invalid_json", "message": "the body must be a JSON object"}});
    assert_eq!(
        app.patch("/users/me", &a.token, &json!(["alice", null]))
            .await,
        (400, object_only.clone()),
        "an array is not a profile"
    );
    assert_eq!(
        app.post("/messages/mark-read", &a.token, &json!([[]]))
            .await,
        (400, object_only)
    );
    let (_, me) = app.get("/users/me", &a.token).await;
    assert_eq!(me["username"], Value::Null);
    let untyped = app
        .http
        .post(format!("{}/messages/mark-read", app.base))
        .bearer_auth(&a.token)
        .body(r#"{"message_ids": []}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::read(untyped).await,
        (
            400,
            json!({"error": {"code": "invalid_json", "message": "Expected request with `Content-Type: application/json`"}})
        )
    );

    // `limit` is clamped to 1..=100 (the seed's contract) but must be a
    // number the document allows: 0 to 4294967295.
    let with = format!("/messages/conversation?with_user={}", b.id);
    assert_eq!(
        app.get(&format!("{with}&limit=2147483648"), &a.token)
            .await
            .0,
        200
    );
    for bad in ["4294967296", "-1", "ten"] {
        let (status, body) = app.get(&format!("{with}&limit={bad}"), &a.token).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (400, &json!("invalid_field")),
            "{bad}: {body}"
        );
    }
    // An avatar URL is taken as sent: spaces around it are not trimmed away.
    let (status, body) = app
        .patch(
            "/users/me",
            &a.token,
            &json!({"avatar_url": " https://example.com/a.png"}),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_field")),
        "{body}"
    );

    let (_, doc) = app.get("/openapi.json", &a.token).await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["CreateBody"]["properties"]["member_ids"]["minItems"], 1,
        "{}",
        schemas["CreateBody"]
    );
    assert_eq!(
        schemas["MembersBody"]["properties"]["user_ids"]["minItems"],
        1
    );
    for (schema, field) in [
        ("CreateBody", "avatar_url"),
        ("PatchBody", "avatar_url"),
        ("UpdateBody", "avatar_url"),
    ] {
        let pattern = schemas[schema]["properties"][field]["pattern"]
            .as_str()
            .unwrap_or_default();
        assert!(
            pattern.starts_with("^https?://"),
            "{schema}.{field}: {}",
            schemas[schema]
        );
    }
    assert_eq!(
        schemas["PatchBody"]["properties"]["username"]["maxLength"],
        50
    );
    let limit = doc["paths"]["/api/v1/messages/conversation"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()
        .clone();
    assert_eq!(limit["schema"]["maximum"], json!(4294967295u64), "{limit}");
    // Every operation documents the budget's 429.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let probe = operation["tags"] == json!(["health"]);
            assert_eq!(
                operation["responses"].get("429").is_some(),
                !probe,
                "{method} {path}"
            );
        }
    }
}
