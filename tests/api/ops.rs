//! Operations: metrics move with real traffic, readiness and drain.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::wsclient::WsClient;
use crate::helpers::{Backend, NodeProcess, TestApp, TestDatabase, token_for};

/// One sample's value from Prometheus text, summed over label sets that
/// contain every given `label="value"` pair.
pub fn sample(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter(|line| labels.iter().all(|l| line.contains(l)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn scrape(app: &TestApp) -> String {
    scrape_port(app.metrics_port.expect("metrics listener")).await
}

/// A node's `/metrics` text, by its metrics port.
pub async fn scrape_port(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn metrics_move_with_real_traffic() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let before = scrape(&app).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let mut wa = WsClient::connect(&app, &a.token).await;
    let mut wb = WsClient::connect(&app, &b.token).await;
    wa.send(json!({"type": "message", "to": b.id, "content": "measured"}))
        .await;
    wa.recv_type("ack").await;
    wb.recv_type("message").await;
    wa.send(json!({"type": "dance"})).await;
    wa.recv_type("error").await;
    app.get("/messages/stats", "bad-token").await;
    app.get(&format!("/users/{}", b.id), &a.token).await;

    let after = scrape(&app).await;
    // The recorder is shared by every node in this test process, so compare
    // deltas, never absolute values.
    let moved =
        |name: &str, labels: &[&str]| sample(&after, name, labels) - sample(&before, name, labels);
    assert!(moved("ochat_messages_sent_total", &[]) >= 1.0, "{after}");
    assert!(moved("ochat_messages_delivered_total", &[]) >= 1.0);
    assert!(moved("ochat_delivery_latency_seconds_count", &[]) >= 1.0);
    assert!(moved("ochat_frames_in_total", &["type=\"message\""]) >= 1.0);
    assert!(moved("ochat_frames_out_total", &["type=\"ack\""]) >= 1.0);
    assert!(moved("ochat_connects_total", &[]) >= 2.0);
    assert!(moved("ochat_auth_failures_total", &["reason=\"malformed\""]) >= 1.0);
    assert!(
        moved(
            "ochat_http_requests_total",
            &["route=\"/api/v1/users/{id}\"", "status=\"200\""]
        ) >= 1.0
    );
    assert!(
        moved(
            "ochat_db_operation_seconds_count",
            &["op=\"insert_messages\""]
        ) >= 1.0
    );
    assert!(!after.contains(&b.id.to_string()), "no user ids in labels");
    assert!(after.contains("ochat_build_info{"), "{after}");
}

#[tokio::test]
async fn draining_closes_sessions_with_1001_and_stops_in_time() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("SHUTDOWN_GRACE", "5s")]).await;
    let user = app.new_user().await;
    let mut first = WsClient::connect(&app, &user.token).await;
    let mut second = WsClient::connect(&app, &user.token).await;
    first.assert_usable().await;
    second.assert_usable().await;
    let started = Instant::now();
    let stopping = tokio::spawn(app.shutdown());
    for client in [&mut first, &mut second] {
        let close = client.closed().await.expect("a close frame");
        assert_eq!(u16::from(close.code), 1001);
        assert_eq!(close.reason.as_str(), "server going away: reconnect");
    }
    stopping.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped within the grace period"
    );
}

#[tokio::test]
async fn sigterm_drains_sessions_and_exits_zero_in_time() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let mut node =
        NodeProcess::spawn(&[("DATABASE_URL", db.url.as_str()), ("SHUTDOWN_GRACE", "5s")]).await;
    let user = uuid::Uuid::now_v7();
    let token = token_for(user, "drain@example.com");
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut ws = WsClient::connect_port(node.port, &token).await;
        ws.assert_usable().await;
        clients.push(ws);
    }

    let started = Instant::now();
    node.terminate();
    for ws in &mut clients {
        let close = ws.closed().await.expect("a close frame");
        assert_eq!(u16::from(close.code), 1001);
    }
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = node.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap()
    .expect("the process exits");
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "within SHUTDOWN_GRACE"
    );
}

#[tokio::test]
async fn a_draining_node_is_not_ready() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.state
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let response = reqwest::get(format!("{}/readyz", app.base)).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["status"],
        "draining"
    );
    let live = reqwest::get(format!("{}/livez", app.base)).await.unwrap();
    assert_eq!(live.status(), 200, "alive while draining");
}
