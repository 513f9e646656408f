//! Shared test plumbing, by what it starts: a real node on port 0 and its
//! users (here), databases (`database`), Redis (`redis`), several nodes
//! (`nodes`), the TCP proxy for faults (`proxy`) and the WebSocket client
//! (`wsclient`).

mod database;
mod nodes;
pub mod proxy;
mod redis;
pub mod replica;
pub mod wsclient;

pub use database::{StorageOutage, TestDatabase, test_store};
pub use nodes::{Cluster, NodeProcess};
pub use redis::{LocalCluster, OwnRedis, RedisPrefix, redis_url};

use std::sync::Arc;
use std::time::Duration;

use ochat::{Application, Config};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Tests that load both cores for seconds (Redis Clusters, floods) or
/// measure time and this process's memory take turns, so one does not
/// skew another's measurement.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub const TEST_SECRET: &str = "ochat-test-secret-that-is-long-enough-0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Runs an `async fn(Backend)` test once per backend.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
        }
    )*};
}

/// A real node serving on a random port.
pub struct TestApp {
    pub port: u16,
    pub metrics_port: Option<u16>,
    pub base: String,
    pub http: reqwest::Client,
    pub state: ochat::state::AppState,
    pub stop: CancellationToken,
    pub finished: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Where the embedded store keeps attachments (removed when dropped).
    _files: tempfile::TempDir,
    _db: Arc<TestDatabase>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, &[]).await
    }

    pub async fn spawn_with(backend: Backend, env: &[(&str, &str)]) -> Self {
        let db = Arc::new(TestDatabase::new(backend).await);
        Self::spawn_on(db, env).await
    }

    /// Another node on the same database (multi-node tests).
    /// A node whose per-user budget refills one request a second after a
    /// burst of `burst`, so a test reaches its end quickly.
    pub async fn with_tight_budget(backend: Backend, burst: u32) -> Self {
        let burst = burst.to_string();
        Self::spawn_with(
            backend,
            &[
                ("RATE_LIMIT_PER_SEC", "1"),
                ("RATE_LIMIT_BURST", burst.as_str()),
            ],
        )
        .await
    }

    pub async fn spawn_on(db: Arc<TestDatabase>, env: &[(&str, &str)]) -> Self {
        let files = tempfile::tempdir().expect("a directory for attachments");
        let mut vars: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), db.url.clone()),
            ("ATTACHMENTS_DIR".into(), files.path().display().to_string()),
            ("JWT_SECRET".into(), TEST_SECRET.into()),
            ("SERVER_PORT".into(), "0".into()),
            ("METRICS_PORT".into(), "0".into()),
            (
                "NODE_ID".into(),
                format!("test-{}", Uuid::now_v7().simple()),
            ),
            // Fail fast when a test holds the embedded database's write lock.
            ("SQLITE_BUSY_TIMEOUT".into(), "500ms".into()),
            // Tests exercise many features in quick succession as one user;
            // the tests of budgets set their own.
            ("RATE_LIMIT_PER_SEC".into(), "1000".into()),
            ("RATE_LIMIT_BURST".into(), "1000".into()),
        ];
        for (k, v) in env {
            vars.retain(|(key, _)| key != k);
            vars.push(((*k).into(), (*v).into()));
        }
        let config = Config::from_vars(vars).expect("test config");
        let app = Application::build(config).await.expect("build app");
        let port = app.port();
        let metrics_port = app.metrics_port();
        let state = app.state().clone();
        let stop = CancellationToken::new();
        let signal = stop.clone().cancelled_owned();
        let finished = tokio::spawn(app.run_until_stopped(signal));
        Self {
            port,
            metrics_port,
            base: format!("http://127.0.0.1:{port}/api/v1"),
            http: reqwest::Client::new(),
            state,
            stop,
            finished: Some(finished),
            _files: files,
            _db: db,
        }
    }

    pub fn database(&self) -> Arc<TestDatabase> {
        self._db.clone()
    }

    /// A new user with a valid token, already known to the server.
    pub async fn new_user(&self) -> TestUser {
        let id = Uuid::now_v7();
        let email = format!("{}@example.com", id.simple());
        let token = token_for(id, &email);
        let response = self.get("/users/me", &token).await;
        assert_eq!(response.0, 200, "creating a user: {:?}", response.1);
        TestUser { id, email, token }
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        self.request(reqwest::Method::PATCH, path, token, Some(body))
            .await
    }

    /// A `PUT` without a body (a reaction): the status.
    pub async fn put_empty(&self, path: &str, token: &str) -> u16 {
        self.put_answer(path, token).await.0
    }

    /// The same, with the answer's body (`Null` when there is none).
    pub async fn put_answer(&self, path: &str, token: &str) -> (u16, Value) {
        self.request(reqwest::Method::PUT, path, token, None).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (u16, Value) {
        self.request(reqwest::Method::DELETE, path, token, None)
            .await
    }

    /// One authenticated JSON request to `/api/v1{path}`: status and body.
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        read(request.send().await.expect("request")).await
    }

    /// Sends a message through the domain layer (the WebSocket's path).
    /// `a` and `b` each send the other a message: each has talked to the
    /// other, so each sees the other's presence.
    pub async fn talk(&self, a: &TestUser, b: &TestUser) {
        self.send(a, b, "hello").await;
        self.send(b, a, "hello back").await;
    }

    pub async fn send(
        &self,
        from: &TestUser,
        to: &TestUser,
        content: &str,
    ) -> ochat::store::Message {
        self.state
            .chat
            .send(
                from.id,
                None,
                ochat::chat::Outgoing::text(ochat::protocol::Destination::User(to.id), content),
            )
            .await
            .expect("send")
    }

    /// Sends a message to a group through the domain layer.
    pub async fn send_to_group(
        &self,
        from: &TestUser,
        group: Uuid,
        content: &str,
    ) -> ochat::store::Message {
        self.state
            .chat
            .send(
                from.id,
                None,
                ochat::chat::Outgoing::text(
                    ochat::protocol::Destination::Conversation(group),
                    content,
                ),
            )
            .await
            .expect("send to group")
    }

    /// Creates a group owned by `owner` with `members`; returns its id.
    pub async fn create_group(&self, owner: &TestUser, title: &str, members: &[&TestUser]) -> Uuid {
        let ids: Vec<Uuid> = members.iter().map(|m| m.id).collect();
        let (status, body) = self
            .post(
                "/conversations",
                &owner.token,
                &serde_json::json!({"title": title, "member_ids": ids}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(handle) = self.finished.take() {
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("node stops within its grace period")
                .expect("node task")
                .expect("node result");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub email: String,
    pub token: String,
}

pub fn token_for(id: Uuid, email: &str) -> String {
    ochat::auth::mint(
        &ochat::config::Secret::new(TEST_SECRET),
        id,
        email,
        Duration::from_secs(3600),
    )
}

/// A port nothing listens on now (for a server the test starts itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls until `check` holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
