//! The shipped deploy files run for real: a real Prometheus loads
//! `deploy/prometheus/` and scrapes two real nodes, and a real nginx with
//! `deploy/nginx/nginx.conf` carries WebSocket and REST traffic to them.
//! `scripts/test` installs both (Debian's `prometheus` and `nginx`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::wsclient::WsClient;
use crate::helpers::{Backend, NodeProcess, RedisPrefix, TestDatabase, eventually, token_for};

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `text` with `from` replaced by `to`, which must occur exactly once: a
/// test runs the shipped file with only its addresses changed.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} occurs once");
    text.replacen(from, to, 1)
}

/// A child process killed when the test ends, however it ends.
struct Daemon(Child);

impl Drop for Daemon {
    /// SIGTERM first: nginx's master then stops its workers (a SIGKILLed
    /// master would leave them running); SIGKILL after 5 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{name} must be installed (scripts/test installs it)");
    Command::new(name)
}

/// Two Postgres + Redis node processes, metrics on their own ports.
async fn two_nodes(db: &TestDatabase, prefix: &RedisPrefix) -> Vec<(NodeProcess, u16)> {
    // This test's own HTTP clients need a TLS provider, even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let metrics = crate::helpers::free_port();
        let metrics_env = metrics.to_string();
        let node = NodeProcess::start(
            db,
            prefix,
            &[("METRICS_PORT", &metrics_env), ("SHUTDOWN_GRACE", "5s")],
        )
        .await;
        nodes.push((node, metrics));
    }
    nodes
}

/// Light traffic of every kind the dashboard shows: sessions on both nodes,
/// messages across them (delivered, acked), REST reads, a refused token and
/// a closed session.
async fn light_load(ports: [u16; 2], rounds: usize) {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let (ta, tb) = (
        token_for(a, "prom-a@example.com"),
        token_for(b, "prom-b@example.com"),
    );
    let mut wa = WsClient::connect_port(ports[0], &ta).await;
    let mut wb = WsClient::connect_port(ports[1], &tb).await;
    let http = reqwest::Client::new();
    for i in 0..rounds {
        wa.send(json!({"type": "message", "to": b, "content": format!("load {i}")}))
            .await;
        wb.recv_type("message").await;
        let url = format!(
            "http://127.0.0.1:{}/api/v1/messages/conversations",
            ports[i % 2]
        );
        let ok = http.get(&url).bearer_auth(&ta).send().await.unwrap();
        assert_eq!(ok.status(), 200);
        let refused = http
            .get(&url)
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wa.close().await;
    wb.close().await;
}

/// The measured side of an alert: its expression up to the top-level
/// comparison with the threshold (`x > 0.1` gives `x`), which must have a
/// value on a healthy system even while the alert is quiet.
fn measured_side(expr: &str) -> &str {
    let bytes = expr.as_bytes();
    let mut depth = 0i32;
    let mut cut = expr.len();
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            b'>' | b'<' if depth == 0 => cut = cut.min(i),
            b'=' | b'!' if depth == 0 && bytes.get(i + 1) == Some(&b'=') => cut = cut.min(i),
            _ => {}
        }
    }
    expr[..cut].trim()
}

#[test]
fn the_measured_side_of_an_alert_stops_at_its_threshold() {
    assert_eq!(
        measured_side(r#"up{job="ochat"} == 0"#),
        r#"up{job="ochat"}"#
    );
    assert_eq!(
        measured_side(r#"sum(rate(x{status=~"5.."}[5m])) / sum(rate(x[5m])) > 0.01"#),
        r#"sum(rate(x{status=~"5.."}[5m])) / sum(rate(x[5m]))"#
    );
    assert_eq!(measured_side("rate(x[1m])"), "rate(x[1m])");
}

struct Prometheus {
    _daemon: Daemon,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// The shipped `prometheus.yml` and `alerts.yml`, with only the targets
    /// and the intervals (10 s to 1 s, so a test sees rates in seconds)
    /// changed.
    async fn start(targets: &[u16]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let shipped =
            std::fs::read_to_string(repo_file("deploy/prometheus/prometheus.yml")).unwrap();
        let targets = targets
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = replace_once(
            &shipped,
            r#"targets: ["ochat1:9090", "ochat2:9090", "ochat3:9090"]"#,
            &format!("targets: [{targets}]"),
        );
        let config = replace_once(&config, "scrape_interval: 10s", "scrape_interval: 1s");
        let config = replace_once(
            &config,
            "evaluation_interval: 10s",
            "evaluation_interval: 1s",
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        std::fs::copy(
            repo_file("deploy/prometheus/alerts.yml"),
            dir.path().join("alerts.yml"),
        )
        .unwrap();
        let port = crate::helpers::free_port();
        let daemon = Daemon(
            tool("prometheus")
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start prometheus"),
        );
        let prometheus = Self {
            _daemon: daemon,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _dir: dir,
        };
        let ready = eventually(Duration::from_secs(20), || async {
            prometheus
                .http
                .get(format!("{}/-/ready", prometheus.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(ready, "prometheus became ready");
        prometheus
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/{path}", self.base), query)
            .unwrap();
        let response = self.http.get(url).send().await.unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// The instant vector `expr` evaluates to now.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api("query", &[("query", expr)]).await;
        data["result"].as_array().cloned().unwrap_or_default()
    }
}

/// Every expression of the Grafana dashboard.
fn dashboard_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(repo_file("deploy/grafana/dashboards/ochat.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                exprs.push(expr.to_owned());
            }
        }
    }
    assert!(exprs.len() >= 10, "the dashboard has its panels");
    exprs
}

#[tokio::test]
async fn prometheus_scrapes_two_nodes_and_every_dashboard_and_alert_expression_has_data() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let prefix = RedisPrefix::new().await;
    let nodes = two_nodes(&db, &prefix).await;
    let metrics: Vec<u16> = nodes.iter().map(|(_, m)| *m).collect();
    let prometheus = Prometheus::start(&metrics).await;

    let both_up = eventually(Duration::from_secs(20), || async {
        let up = prometheus.query(r#"up{job="ochat"} == 1"#).await;
        up.len() == 2
    })
    .await;
    assert!(both_up, "prometheus scrapes both nodes");

    // Several seconds of traffic, so every rate has two samples to differ.
    light_load([nodes[0].0.port, nodes[1].0.port], 40).await;

    // The shipped rules loaded and evaluate without error.
    let rules = prometheus.api("rules", &[]).await;
    let mut alerts = Vec::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_eq!(rule["health"], "ok", "rule evaluates: {rule}");
            alerts.push(rule["query"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(alerts.len(), 7, "every alert of alerts.yml is loaded");

    let mut expressions = dashboard_expressions();
    expressions.extend(alerts.iter().map(|a| measured_side(a).to_owned()));
    // `or vector(0)` always has data: the metric it falls back from must
    // still be one the node exports.
    let exported = std::fs::read_to_string(repo_file("src/metrics.rs")).unwrap();
    for expr in &expressions {
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("ochat_"))
        {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                exported.contains(&format!("\"{base}\"")),
                "{expr}: {base} is a metric src/metrics.rs exports"
            );
        }
    }
    let mut empty = Vec::new();
    for expr in &expressions {
        let has_data = eventually(Duration::from_secs(15), || async {
            !prometheus.query(expr).await.is_empty()
        })
        .await;
        if !has_data {
            empty.push(expr.clone());
        }
    }
    assert!(empty.is_empty(), "expressions without data: {empty:#?}");

    // A healthy system raises no alert.
    let firing = prometheus.query("ALERTS").await;
    assert!(firing.is_empty(), "no alert fires: {firing:?}");
}

#[tokio::test]
async fn metrics_follow_prometheus_conventions_and_carry_no_user_ids() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let prefix = RedisPrefix::new().await;
    let nodes = two_nodes(&db, &prefix).await;
    light_load([nodes[0].0.port, nodes[1].0.port], 3).await;
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", nodes[0].1))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut lint = tool("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    lint.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split('"')
                .skip(1)
                .step_by(2)
                .any(|v| Uuid::parse_str(v).is_ok())
        })
        .collect();
    assert!(ids.is_empty(), "no ids in labels: {ids:#?}");
    assert!(text.contains("ochat_messages_delivered_total"));
}

struct Nginx {
    _daemon: Daemon,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// The shipped `nginx.conf` in front of `upstreams`: only the compose
    /// service addresses and the listen port are changed. `nginx -t` must
    /// accept it before it runs.
    async fn start(upstreams: &[u16]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let shipped = std::fs::read_to_string(repo_file("deploy/nginx/nginx.conf")).unwrap();
        let mut config = replace_once(
            &shipped,
            "server ochat1:8080",
            &format!("server 127.0.0.1:{}", upstreams[0]),
        );
        config = replace_once(
            &config,
            "server ochat2:8080",
            &format!("server 127.0.0.1:{}", upstreams[1]),
        );
        config = replace_once(
            &config,
            "        server ochat3:8080 max_fails=3 fail_timeout=5s;\n",
            "",
        );
        let port = crate::helpers::free_port();
        config = replace_once(
            &config,
            "listen 8080;",
            &format!("listen 127.0.0.1:{port};"),
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        let globals = format!(
            "pid {0}/nginx.pid; error_log {0}/error.log;",
            dir.path().display()
        );
        let test = tool("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .args(["-g", &globals, "-t"])
            .output()
            .unwrap();
        assert!(
            test.status.success(),
            "nginx -t: {}",
            String::from_utf8_lossy(&test.stderr)
        );
        let daemon = Daemon(
            tool("nginx")
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .args(["-g", &format!("daemon off; {globals}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nginx"),
        );
        let health = format!("http://127.0.0.1:{port}/api/v1/health");
        // Answered through nginx (its Server header), not by whatever else
        // might have taken the port.
        let up = eventually(Duration::from_secs(10), || async {
            reqwest::get(&health).await.is_ok_and(|r| {
                r.status() == 200
                    && r.headers()
                        .get("server")
                        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("nginx"))
            })
        })
        .await;
        assert!(up, "nginx answers on {port}");
        Self {
            _daemon: daemon,
            port,
            _dir: dir,
        }
    }
}

async fn connections(metrics_port: u16) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("ochat_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn nginx_carries_websocket_and_rest_and_a_drained_nodes_clients_reconnect_through_it() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let prefix = RedisPrefix::new().await;
    let nodes = two_nodes(&db, &prefix).await;
    let nginx = Nginx::start(&[nodes[0].0.port, nodes[1].0.port]).await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}/api/v1", nginx.port);

    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let (ta, tb) = (
        token_for(alice, "nginx-a@example.com"),
        token_for(bob, "nginx-b@example.com"),
    );
    for token in [&ta, &tb] {
        let me = http
            .get(format!("{base}/users/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(me.status(), 200, "REST through nginx");
    }

    // least_conn puts the two sessions on different nodes.
    let mut wa = WsClient::connect_port(nginx.port, &ta).await;
    wa.assert_usable().await;
    let mut alice_node = None;
    for _ in 0..50 {
        alice_node = match (connections(nodes[0].1).await, connections(nodes[1].1).await) {
            (1.0, 0.0) => Some(0),
            (0.0, 1.0) => Some(1),
            _ => None,
        };
        if alice_node.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alice_node = alice_node.expect("alice's session is on one node");
    let mut wb = WsClient::connect_port(nginx.port, &tb).await;
    wb.assert_usable().await;
    let spread = eventually(Duration::from_secs(5), || async {
        connections(nodes[1 - alice_node].1).await == 1.0
    })
    .await;
    assert!(spread, "bob's session is on the other node");

    wa.send(json!({"type": "message", "to": bob, "content": "through nginx", "client_id": "n-1"}))
        .await;
    assert_eq!(wa.recv_type("ack").await["client_id"], "n-1");
    assert_eq!(wb.recv_type("message").await["content"], "through nginx");

    // Drain the node holding alice's session, as a rolling update does.
    nodes[alice_node].0.terminate();
    let close = wa.closed().await.expect("a close frame through nginx");
    assert_eq!(u16::from(close.code), 1001, "going away");

    // Reconnecting through nginx lands on the node still serving.
    let mut wa = WsClient::connect_port(nginx.port, &ta).await;
    wa.send(
        json!({"type": "message", "to": bob, "content": "after the drain", "client_id": "n-2"}),
    )
    .await;
    assert_eq!(wa.recv_type("ack").await["client_id"], "n-2");
    assert_eq!(wb.recv_type("message").await["content"], "after the drain");
    let history = http
        .get(format!("{base}/messages/conversation?with_user={bob}"))
        .bearer_auth(&ta)
        .send()
        .await
        .unwrap();
    assert_eq!(history.status(), 200);
    let history: Value = history.json().await.unwrap();
    let contents: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents.len(), 2, "both messages stored once: {contents:?}");
}
