//! A hostile client, signed in or anonymous: nothing it sends may take a
//! node down or tell it what is not its own. Each test sends the bad input
//! and asserts the exact answer.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{
    Backend, NodeProcess, OwnRedis, RedisPrefix, TestApp, TestDatabase, eventually, token_for,
};
use crate::wsclient::WsClient;

both_backends!(
    a_made_up_method_is_one_metric_series,
    text_refuses_controls_and_names_refuse_invisible_characters,
    a_reused_email_locks_no_one_out,
    an_outsider_cannot_tell_who_talks_to_whom,
    a_users_requests_share_one_budget,
    a_demoted_admins_change_in_flight_does_not_land,
    the_rest_api_refuses_what_its_document_refuses,
    presence_goes_only_to_whom_a_user_has_talked_to,
    a_blocked_user_gets_the_answers_of_a_user_that_does_not_exist,
);

async fn scrape(app: &TestApp) -> String {
    let port = app.metrics_port.expect("metrics listener");
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

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

/// A node of its own (its own process, metrics and memory), on an
/// embedded database in `dir`.
async fn own_node(dir: &tempfile::TempDir, env: &[(&str, &str)]) -> (NodeProcess, u16) {
    // reqwest (readiness polling) needs the process's TLS provider, which a
    // node built in this process would otherwise have installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let database = format!("sqlite://{}", dir.path().join("ochat.db").display());
    let metrics = metrics_port.to_string();
    let mut all: Vec<(&str, &str)> = vec![
        ("DATABASE_URL", &database),
        ("METRICS_PORT", &metrics),
        ("RATE_LIMIT_PER_SEC", "100000"),
        ("RATE_LIMIT_BURST", "100000"),
    ];
    all.extend_from_slice(env);
    (NodeProcess::spawn(&all).await, metrics_port)
}

/// Resident and peak memory of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn metric(port: u16, name: &str, label: &str) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A user who asks for `sync` in a loop and never reads: each answer can
/// be megabytes (100 messages of 4,000 four-byte characters), so a queue
/// bounded in frames held hundreds of them. Now the queue is bounded in
/// bytes and a `sync` is answered only once the previous answer has left:
/// the node's memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_flood_that_never_reads_holds_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _) = own_node(&dir, &[]).await;
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let (ta, tb) = (token_for(a, "a@example.com"), token_for(b, "b@example.com"));
    let mut receiver = WsClient::connect_port(node.port, &tb).await;
    let mut sender = WsClient::connect_port(node.port, &ta).await;
    let heavy = "🙂".repeat(4000);
    for i in 0..100 {
        sender
            .send(
                json!({"type": "message", "to": b, "content": heavy, "client_id": format!("h{i}")}),
            )
            .await;
        sender.recv_type("ack").await;
    }
    for _ in 0..100 {
        receiver.recv_type("message").await;
    }
    let (before, _) = memory(node.child.id());

    let mut flood = WsClient::connect_port_with_small_buffer(node.port, &tb).await;
    let request = json!({"type": "sync", "limit": 100}).to_string();
    let started = std::time::Instant::now();
    let mut sent = 0;
    // Until the node stops reading (its answers cannot leave) or 2,000 asks.
    while sent < 2000 && started.elapsed() < Duration::from_secs(10) {
        match tokio::time::timeout(Duration::from_secs(2), flood.send_text(&request)).await {
            Ok(()) => sent += 1,
            Err(_) => break,
        }
    }
    // Time for the node to answer hundreds of them, had it queued them.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (after, peak) = memory(node.child.id());
    let grew = peak.saturating_sub(before);
    eprintln!(
        "{sent} sync requests in {:?}: rss {} -> {} MiB, peak {} MiB",
        started.elapsed(),
        before >> 20,
        after >> 20,
        peak >> 20
    );
    assert!(
        grew < 48 * 1024 * 1024,
        "{sent} sync requests grew the node by {} MiB (rss {} -> {} MiB)",
        grew / (1024 * 1024),
        before / (1024 * 1024),
        after / (1024 * 1024)
    );
    // The honest session is untouched.
    receiver.assert_usable().await;
}

/// A reader that stops reading while a sender floods it is cut as soon as
/// its queue overflows, well within SLOW_CONSUMER_TIMEOUT plus a second:
/// found too slow while a write is blocked, the write is abandoned at once
/// (it used to run out its own timeout, then wait a second more on a close
/// frame that could not fit, holding the connection the whole time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_cut_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let (node, metrics) = own_node(&dir, &[("SLOW_CONSUMER_TIMEOUT", "5s")]).await;
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let (ta, tb) = (token_for(a, "a@example.com"), token_for(b, "b@example.com"));
    let mut reader = WsClient::connect_port_with_small_buffer(node.port, &tb).await;
    reader.assert_usable().await;
    let mut sender = WsClient::connect_port(node.port, &ta).await;
    sender
        .send(json!({"type": "message", "to": b, "content": "hello"}))
        .await;
    sender.recv_type("ack").await;

    let slow_cuts = || {
        metric(
            metrics,
            "ochat_disconnects_total",
            "reason=\"slow_consumer\"",
        )
    };
    let cut_before = slow_cuts().await;
    let content = "f".repeat(3900);
    let started = std::time::Instant::now();
    let firehose = tokio::spawn(async move {
        // Pipelined, acks read as they come: as fast as the node commits.
        for i in 0..20_000 {
            sender
                .send(json!({"type": "message", "to": b, "content": content, "client_id": format!("f{i}")}))
                .await;
            if i % 64 == 63 {
                sender.recv_type("ack").await;
            }
        }
        sender
    });
    let cut = eventually(Duration::from_secs(20), || async {
        slow_cuts().await > cut_before
    })
    .await;
    let took = started.elapsed();
    firehose.abort();
    eprintln!("the reader was cut after {took:?}");
    assert!(cut, "the reader was never cut");
    // The kernel buffers fill within a few hundred milliseconds of the
    // flood; the cut follows the overflow at once.
    assert!(
        took <= Duration::from_millis(2500),
        "cut after {took:?}: the queue overflowed long before"
    );
    drop(reader);
}

/// Every REST request of a user is charged to their budget: past it, 429
/// with `Retry-After` and the error body; other users are unaffected.
async fn a_users_requests_share_one_budget(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[("RATE_LIMIT_PER_SEC", "1"), ("RATE_LIMIT_BURST", "4")],
    )
    .await;
    let a = app.new_user().await;
    for _ in 0..3 {
        assert_eq!(app.get("/messages/stats", &a.token).await.0, 200);
    }
    let response = app
        .http
        .get(format!("{}/messages/stats", app.base))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        crate::helpers::read(response).await,
        (
            429,
            json!({"error": {"code": "rate_limited", "message": "too many requests; retry in 1 s"}})
        )
    );
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
#[tokio::test]
async fn behind_a_trusted_balancer_each_client_address_has_its_budget() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("ANONYMOUS_RATE_LIMIT_PER_SEC", "1"),
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
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused_before = metric_of(&app, "ochat_connections_refused_total").await;
    let mut over = tokio::net::TcpStream::connect(&address).await.unwrap();
    let _ = over
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: ochat\r\n\r\n")
        .await;
    let (said, closed) = read_until_closed(&mut over, Duration::from_millis(500)).await;
    assert!(
        closed && said.is_empty(),
        "over the cap: closed at once, said {said:?}"
    );
    assert!(metric_of(&app, "ochat_connections_refused_total").await > refused_before);

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

async fn metric_of(app: &TestApp, name: &str) -> f64 {
    let port = app.metrics_port.expect("metrics listener");
    metric(port, name, "").await
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
    let app = TestApp::spawn(backend).await;
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
        tokio::time::sleep(Duration::from_millis(250)).await;
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

/// What the honest users saw in a scenario run.
pub struct HonestView {
    /// Send-to-ack times of every honest message.
    pub acks: Vec<Duration>,
    /// The node's peak resident memory during the run.
    pub peak_rss: u64,
    pub rss_before: u64,
}

/// Two honest users chat (`messages` each way, 10 a second) on a node of
/// PostgreSQL and Redis with its default limits. With `hostile`, one user
/// meanwhile holds ten sockets and does everything at once: sync floods it
/// never reads, mark_read, typing, ping and invalid-frame floods, a REST
/// flood, half-open connections and made-up methods. Every honest message
/// must be acked and delivered live either way.
pub async fn honest_chat_beside(hostile: bool, messages: usize) -> HonestView {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDatabase::new(Backend::Postgres).await;
    let prefix = RedisPrefix::new().await;
    let node = NodeProcess::start(&db, &prefix, &[]).await;
    let port = node.port;
    let pid = node.child.id();
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let (a, b, h) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    let (ta, tb, th) = (
        token_for(a, "a@example.com"),
        token_for(b, "b@example.com"),
        token_for(h, "h@example.com"),
    );
    let mut wa = WsClient::connect_port(port, &ta).await;
    let mut wb = WsClient::connect_port(port, &tb).await;
    // The hostile user has talked with both (so typing reaches them) and
    // holds messages to sync and mark read.
    let mut wh = WsClient::connect_port(port, &th).await;
    for (ws, to) in [(&mut wa, h), (&mut wb, h)] {
        ws.send(json!({"type": "message", "to": to, "content": "hello, stranger"}))
            .await;
        ws.recv_type("ack").await;
    }
    let heavy = "🙂".repeat(4000);
    let mut received = None;
    for i in 0..50 {
        wh.send(
            json!({"type": "message", "to": a, "content": heavy, "client_id": format!("x{i}")}),
        )
        .await;
        let ack = wh.recv_type("ack").await;
        received.get_or_insert(ack["id"].clone());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The honest user reads what arrived so far.
    while wa.next_within(Duration::from_millis(300)).await.is_some() {}
    let rss_before = memory(pid).0;

    let stop = tokio_util::sync::CancellationToken::new();
    let mut attacks = tokio::task::JoinSet::new();
    if hostile {
        let mark =
            json!({"type": "mark_read", "message_id": received.clone().unwrap()}).to_string();
        let floods: Vec<String> = vec![
            json!({"type": "sync", "limit": 100}).to_string(),
            json!({"type": "sync", "limit": 100}).to_string(),
            json!({"type": "sync", "limit": 100}).to_string(),
            json!({"type": "sync", "limit": 100}).to_string(),
            mark.clone(),
            mark,
            json!({"type": "typing", "to": a, "is_typing": true}).to_string(),
            json!({"type": "ping"}).to_string(),
            "{not json".to_owned(),
        ];
        drop(wh);
        for frame in floods {
            let (stop, th) = (stop.clone(), th.clone());
            attacks.spawn(async move {
                while !stop.is_cancelled() {
                    let Some(mut ws) =
                        WsClient::try_connect_port_with_small_buffer(port, &th).await
                    else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    // Never reads: a blocked send is the node pushing back;
                    // a cut connection (a slow consumer) comes back.
                    while !stop.is_cancelled() {
                        match tokio::time::timeout(
                            Duration::from_millis(200),
                            ws.try_send_text(&frame),
                        )
                        .await
                        {
                            Ok(true) => {}
                            Ok(false) => break,
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }
            });
        }
        // The tenth socket: a huge frame, over and over (1009 each time).
        {
            let (stop, th) = (stop.clone(), th.clone());
            attacks.spawn(async move {
                let big = "x".repeat(70 * 1024);
                while !stop.is_cancelled() {
                    if let Ok(mut ws) = WsClient::try_connect_port(port, &th, None).await {
                        let _ = tokio::time::timeout(
                            Duration::from_millis(500),
                            ws.try_send_text(&big),
                        )
                        .await;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
        // REST floods, with a token and without.
        for path in [
            "/messages/stats",
            "/messages/conversations",
            "/openapi.json",
        ] {
            let (stop, th, api) = (stop.clone(), th.clone(), api.clone());
            attacks.spawn(async move {
                let http = reqwest::Client::new();
                while !stop.is_cancelled() {
                    let _ = http
                        .get(format!("{api}{path}"))
                        .bearer_auth(&th)
                        .send()
                        .await;
                }
            });
        }
        // Made-up methods, anonymous.
        {
            let (stop, api) = (stop.clone(), api.clone());
            attacks.spawn(async move {
                let http = reqwest::Client::new();
                let mut i = 0u64;
                while !stop.is_cancelled() {
                    i += 1;
                    let method = reqwest::Method::from_bytes(format!("M{i:X}").as_bytes()).unwrap();
                    let _ = http.request(method, format!("{api}/x{i}")).send().await;
                }
            });
        }
        // Half-open connections: headers never finished, topped up.
        {
            let stop = stop.clone();
            attacks.spawn(async move {
                let mut held = std::collections::VecDeque::new();
                while !stop.is_cancelled() {
                    if held.len() >= 300 {
                        // The oldest have been dropped by the header timeout.
                        held.drain(..50);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    if let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tcp
                            .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
                            .await;
                        held.push_back(tcp);
                    }
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // The honest users chat: each sends `messages`, 10 a second, and must
    // receive every one of the other's, live.
    let mut acks = Vec::new();
    let mut seen_by_b = std::collections::HashSet::new();
    let mut seen_by_a = std::collections::HashSet::new();
    let mut sent_to_b = Vec::new();
    let mut sent_to_a = Vec::new();
    let mut peak_rss = rss_before;
    for i in 0..messages {
        let sides = [
            (&mut wa, b, &mut sent_to_b, &mut seen_by_a),
            (&mut wb, a, &mut sent_to_a, &mut seen_by_b),
        ];
        for (from, to, sent, seen) in sides {
            let started = std::time::Instant::now();
            from.send(json!({"type": "message", "to": to, "content": format!("honest {i}"), "client_id": format!("m{i}")}))
                .await;
            // Messages that arrive before the ack are counted too.
            let ack = loop {
                let frame = from.recv().await;
                match frame["type"].as_str() {
                    Some("ack") | Some("error") => break frame,
                    Some("message") => {
                        seen.insert(frame["id"].clone());
                    }
                    _ => {}
                }
            };
            assert_eq!(ack["type"], "ack", "an honest message was refused: {ack}");
            acks.push(started.elapsed());
            sent.push(ack["id"].clone());
        }
        // Whatever arrived meanwhile (messages, and typing from the
        // hostile user) is read as it comes.
        for (ws, seen) in [(&mut wa, &mut seen_by_a), (&mut wb, &mut seen_by_b)] {
            while let Some(frame) = ws.next_within(Duration::from_millis(1)).await {
                if frame["type"] == "message" {
                    seen.insert(frame["id"].clone());
                }
            }
        }
        peak_rss = peak_rss.max(memory(pid).0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (ws, seen, sent) in [
        (&mut wa, &mut seen_by_a, &sent_to_a),
        (&mut wb, &mut seen_by_b, &sent_to_b),
    ] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sent.iter().any(|id| !seen.contains(id)) && std::time::Instant::now() < deadline {
            if let Some(frame) = ws.next_within(Duration::from_millis(200)).await
                && frame["type"] == "message"
            {
                seen.insert(frame["id"].clone());
            }
        }
        let missing = sent.iter().filter(|id| !seen.contains(*id)).count();
        assert_eq!(missing, 0, "honest messages never delivered live");
    }
    stop.cancel();
    attacks.shutdown().await;
    let ready = reqwest::get(format!("{api}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "the node stays up and ready");
    peak_rss = peak_rss.max(memory(pid).0);
    drop(node);
    HonestView {
        acks,
        peak_rss,
        rss_before,
    }
}

/// How much memory the node may use above its start while under attack.
const HOSTILE_RSS_BOUND: u64 = 128 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_user_on_ten_sockets_hurts_no_honest_user() {
    let view = honest_chat_beside(true, 100).await;
    let mut acks = view.acks.clone();
    acks.sort();
    let p99 = acks[acks.len() * 99 / 100];
    eprintln!(
        "honest acks: {} (p50 {:?}, p99 {:?}); node rss {} MiB before, peak {} MiB",
        acks.len(),
        acks[acks.len() / 2],
        p99,
        view.rss_before >> 20,
        view.peak_rss >> 20
    );
    assert!(
        view.peak_rss < HOSTILE_RSS_BOUND,
        "the node reached {} MiB under attack",
        view.peak_rss >> 20
    );
}

/// A small deterministic generator (xorshift), seeded per run and printed,
/// so a failing run can be replayed with `OCHAT_FUZZ_SEED`.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// One malformed frame and the error code the protocol designs for it.
fn malformed_frame(rng: &mut Xorshift, peer: uuid::Uuid) -> (String, &'static str) {
    let wrong_values = [
        json!(5),
        json!(-1),
        json!(1.5),
        json!("text"),
        json!([1, 2]),
        json!({"nested": {}}),
        json!(18446744073709551616.0_f64),
    ];
    match rng.below(9) {
        // Not JSON at all (it cannot start a JSON value).
        0 => {
            let len = 1 + rng.below(200) as usize;
            let junk: String = (0..len).map(|_| (b'!' + rng.below(90) as u8) as char).collect();
            (format!("#{junk}"), "invalid_json")
        }
        // JSON, but not an object.
        1 => (
            rng.pick(&["7", "[]", "\"message\"", "null", "[{\"type\":\"ping\"}]"]).to_string(),
            "invalid_json",
        ),
        // An object without a type, or with a type that is not a string.
        2 => (json!({"content": "where to?"}).to_string(), "invalid_field"),
        3 => {
            let not_a_string = rng.pick(&wrong_values).clone();
            let not_a_string = match not_a_string {
                Value::String(_) => json!(42),
                other => other,
            };
            (json!({"type": not_a_string}).to_string(), "invalid_field")
        }
        // A type nobody knows.
        4 => (
            json!({"type": format!("dance{}", rng.below(1000))}).to_string(),
            "unknown_type",
        ),
        // Known types, fields of the wrong kind or out of range.
        5 => {
            let wrong = rng.pick(&wrong_values).clone();
            let frame = match rng.below(4) {
                0 => json!({"type": "message", "to": wrong, "content": "x"}),
                // (Any string is content: only other kinds are wrong.)
                1 => match wrong {
                    Value::String(_) => json!({"type": "message", "to": peer, "content": 42}),
                    wrong => json!({"type": "message", "to": peer, "content": wrong}),
                },
                2 => json!({"type": "typing", "to": peer, "is_typing": wrong}),
                _ => json!({"type": "mark_read", "message_id": wrong}),
            };
            (frame.to_string(), "invalid_field")
        }
        6 => (
            json!({"type": "sync", "limit": rng.pick(&[json!(-1), json!(1.5), json!(4294967296u64), json!("ten"), json!(18446744073709551616.0_f64)])})
                .to_string(),
            "invalid_field",
        ),
        // Numbers no parser should hold, and nesting past any sane depth.
        7 => (
            format!("{{\"type\":\"sync\",\"limit\":1e{}}}", 400 + rng.below(10_000)),
            "invalid_json",
        ),
        _ => {
            let depth = 200 + rng.below(20_000) as usize;
            (format!("{}{}", "[".repeat(depth), "]".repeat(depth)), "invalid_json")
        }
    }
}

/// Random malformed frames (wrong types, huge numbers, deep nesting, junk)
/// at a real socket: each gets the designed error, the socket stays open,
/// and a text frame that is not UTF-8 closes it with 1007.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_malformed_frames_get_their_errors_and_the_node_stays_up() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let seed = std::env::var("OCHAT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| uuid::Uuid::now_v7().as_u64_pair().1 | 1);
    eprintln!("malformed frames: OCHAT_FUZZ_SEED={seed}");
    let mut rng = Xorshift(seed);
    let mut ws = WsClient::connect(&app, &a.token).await;
    for i in 0..300 {
        let (frame, code) = malformed_frame(&mut rng, b.id);
        ws.send_text(&frame).await;
        let answer =
            tokio::time::timeout(Duration::from_secs(5), ws.recv_type_of(&["error", "pong"]))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "frame {i} (seed {seed}) got no answer: {}…",
                        frame.chars().take(120).collect::<String>()
                    )
                });
        assert_eq!(
            (answer["type"].as_str(), answer["code"].as_str()),
            (Some("error"), Some(code)),
            "frame {i} (seed {seed}): {}… → {answer}",
            frame.chars().take(120).collect::<String>()
        );
    }
    ws.assert_usable().await;
    assert_eq!(
        app.get("/messages/stats", &a.token).await.1["total_sent"],
        0
    );

    // A text frame that is not UTF-8 (sent raw: the client library would
    // refuse to build it).
    use futures_util::SinkExt;
    let raw = Frame::message(vec![0x7b, 0xff, 0xfe, 0x7d], OpCode::Data(Data::Text), true);
    ws.stream
        .send(tokio_tungstenite::tungstenite::Message::Frame(raw))
        .await
        .unwrap();
    let close = ws.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1007, "{close:?}");
    // The node is still up for everyone else.
    let mut other = WsClient::connect(&app, &b.token).await;
    other.assert_usable().await;
}

/// The benchmark of the hostile scenario: the honest users' send-to-ack
/// times on a quiet node and beside the hostile user, `OCHAT_BENCH_MESSAGES`
/// messages each way (default 300). Not part of the suite; run with
/// `OCHAT_NODE_BIN=target/release/ochat cargo test --test api
/// hostile_benchmark -- --ignored --nocapture` (docs/benchmarks.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn hostile_benchmark() {
    let messages = std::env::var("OCHAT_BENCH_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    for hostile in [false, true, false, true] {
        let view = honest_chat_beside(hostile, messages).await;
        let mut acks = view.acks;
        acks.sort();
        let at = |q: usize| acks[(acks.len() * q / 100).min(acks.len() - 1)];
        eprintln!(
            "{}: {} honest acks, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; node rss {} -> peak {} MiB",
            if hostile {
                "beside a hostile user"
            } else {
                "quiet"
            },
            acks.len(),
            at(50).as_secs_f64() * 1e3,
            at(99).as_secs_f64() * 1e3,
            acks[acks.len() - 1].as_secs_f64() * 1e3,
            view.rss_before >> 20,
            view.peak_rss >> 20
        );
    }
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
        crate::wsclient::presence(&ws.recv_type("user_online").await),
        json!({"type": "user_online", "user_id": victim.id})
    );
    wv.close().await;
    assert_eq!(
        crate::wsclient::presence(&ws.recv_type("user_offline").await),
        json!({"type": "user_offline", "user_id": victim.id})
    );
    let mut wv = WsClient::connect(&app, &victim.token).await;
    wv.assert_usable().await;
    assert_eq!(
        crate::wsclient::presence(&ws.recv_type("user_online").await),
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
