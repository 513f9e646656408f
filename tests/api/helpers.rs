//! Shared test plumbing: fresh databases, real servers on port 0, tokens.

use std::sync::Arc;
use std::time::Duration;

use ochat::store::Store;
use ochat::{Application, Config};
use serde_json::Value;
use sqlx::Connection;
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

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test and is dropped after it. A test that
/// cannot reach Postgres fails: the suite never skips a backend silently.
pub struct TestDatabase {
    pub url: String,
    name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => {
                let name = format!("ochat_test_{}", Uuid::now_v7().simple());
                let admin = postgres_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("Postgres must be reachable at {admin}: {e}"));
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                Self {
                    url: format!("{base}/{name}"),
                    name: Some(name),
                    _dir: None,
                }
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("ochat.db").display());
                Self {
                    url,
                    name: None,
                    _dir: Some(dir),
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.name.take() else { return };
        let admin = postgres_admin_url();
        // Drop runs inside a test's runtime; a fresh one on its own thread
        // can block on the cleanup without upsetting it.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// A store on a fresh database, for the contract suite.
pub async fn test_store(backend: Backend) -> (Arc<dyn Store>, TestDatabase) {
    let db = TestDatabase::new(backend).await;
    let config = Config::from_vars([
        ("DATABASE_URL", db.url.as_str()),
        ("JWT_SECRET", TEST_SECRET),
    ])
    .unwrap();
    let store = ochat::store::open(&config).await.expect("open store");
    (store, db)
}

/// A real node serving on a random port.
pub struct TestApp {
    pub port: u16,
    pub metrics_port: Option<u16>,
    pub base: String,
    pub http: reqwest::Client,
    pub state: ochat::app::AppState,
    pub stop: CancellationToken,
    pub finished: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
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
        let mut vars: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), db.url.clone()),
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
                ochat::protocol::Destination::User(to.id),
                content,
                None,
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
                ochat::protocol::Destination::Conversation(group),
                content,
                None,
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

/// Makes a node's storage unreachable while it lives: Postgres refuses the
/// test database's connections (and drops the open ones); SQLite's write lock
/// is held by another connection.
pub enum StorageOutage {
    Postgres {
        admin: sqlx::PgConnection,
        name: String,
    },
    Sqlite {
        conn: sqlx::SqliteConnection,
    },
}

impl StorageOutage {
    pub async fn start(app: &TestApp, backend: Backend) -> Self {
        let db = app.database();
        match backend {
            Backend::Postgres => {
                let name = db.name.clone().expect("postgres test database");
                let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
                    .await
                    .unwrap();
                for sql in [
                    format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
                    format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                    ),
                ] {
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut admin)
                        .await
                        .unwrap();
                }
                Self::Postgres { admin, name }
            }
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
                sqlx::query("BEGIN EXCLUSIVE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Self::Sqlite { conn }
            }
        }
    }

    pub async fn end(self) {
        match self {
            Self::Postgres { mut admin, name } => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER DATABASE {name} ALLOW_CONNECTIONS true"
                )))
                .execute(&mut admin)
                .await
                .unwrap();
            }
            Self::Sqlite { mut conn } => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
        }
    }
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Redis key prefix owned by one test; its keys are deleted afterwards.
pub struct RedisPrefix(pub String);

impl RedisPrefix {
    pub async fn new() -> Self {
        let url = redis_url();
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("Redis must be reachable at {url}: {e}"));
        let _: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
        Self(format!("ochat-test-{}", Uuid::now_v7().simple()))
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let pattern = format!("{}:*", self.0);
        let _ = std::thread::spawn(move || {
            let Ok(client) = redis::Client::open(redis_url()) else {
                return;
            };
            let Ok(mut conn) = client.get_connection() else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        })
        .join();
    }
}

/// Nodes sharing one Postgres database and one Redis prefix.
pub struct Cluster {
    pub nodes: Vec<TestApp>,
    pub db: Arc<TestDatabase>,
    pub prefix: RedisPrefix,
}

impl Cluster {
    pub async fn start(nodes: usize, env: &[(&str, &str)]) -> Self {
        let db = Arc::new(TestDatabase::new(Backend::Postgres).await);
        let prefix = RedisPrefix::new().await;
        let redis = redis_url();
        let mut all_env: Vec<(&str, &str)> = vec![
            ("REDIS_URL", redis.as_str()),
            ("REDIS_PREFIX", prefix.0.as_str()),
        ];
        all_env.extend_from_slice(env);
        let mut started = Vec::new();
        for _ in 0..nodes {
            started.push(TestApp::spawn_on(db.clone(), &all_env).await);
        }
        Self {
            nodes: started,
            db,
            prefix,
        }
    }
}

/// A node running as its own `ochat` process, which a test can kill -9.
pub struct NodeProcess {
    pub child: std::process::Child,
    pub port: u16,
}

impl NodeProcess {
    /// A cluster node process on `db` and `prefix`.
    pub async fn start(db: &TestDatabase, prefix: &RedisPrefix, env: &[(&str, &str)]) -> Self {
        let redis = redis_url();
        let mut all: Vec<(&str, &str)> = vec![
            ("DATABASE_URL", db.url.as_str()),
            ("REDIS_URL", redis.as_str()),
            ("REDIS_PREFIX", prefix.0.as_str()),
        ];
        all.extend_from_slice(env);
        Self::spawn(&all).await
    }

    /// An `ochat serve` process with `env` (plus a secret and a free port),
    /// returned once it is ready.
    pub async fn spawn(env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // OCHAT_NODE_BIN runs another build of the node (a release build,
        // for the benchmarks that drive node processes from this harness).
        let bin = std::env::var("OCHAT_NODE_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ochat").to_owned());
        let mut command = std::process::Command::new(bin);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("JWT_SECRET", TEST_SECRET)
            .env("SERVER_PORT", port.to_string())
            .env("METRICS_PORT", "off")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .current_dir(std::env::temp_dir());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("start an ochat process");
        let health = format!("http://127.0.0.1:{port}/api/v1/readyz");
        let up = eventually(Duration::from_secs(20), || async {
            reqwest::get(&health).await.is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(up, "the ochat process became ready on port {port}");
        Self { child, port }
    }

    /// SIGTERM, as an orchestrator stops a node.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    }

    /// SIGKILL: no drain, no cleanup, exactly like a crashed machine.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `redis-server` of a test's own, on its own port, that the test may
/// kill, restart (empty: no persistence) and flush. Never the shared one.
pub struct OwnRedis {
    pub port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self {
            port,
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        redis.launch().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Some(child);
        let url = self.url();
        let up = eventually(Duration::from_secs(10), || ping(url.clone())).await;
        assert!(up, "redis-server came up on port {}", self.port);
    }

    /// SIGKILL: everything it held is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    pub async fn flushall(&self) {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real local Redis Cluster of a test's own: six `redis-server
/// --cluster-enabled yes` processes (three masters, a replica each) on free
/// ports, joined with `redis-cli --cluster create`, killed when dropped.
/// Never the shared Redis.
pub struct LocalCluster {
    pub ports: Vec<u16>,
    children: Vec<Option<std::process::Child>>,
    dir: tempfile::TempDir,
}

impl LocalCluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cluster = Self {
            children: Vec::new(),
            ports: Vec::new(),
            dir,
        };
        // A port found free can be taken by another test's server before
        // this one binds it: such a server exits, and gets a fresh port.
        while cluster.ports.len() < 6 {
            let mut last_log = String::new();
            let mut started = None;
            for _ in 0..5 {
                let port = free_cluster_ports(1)[0];
                if cluster.ports.contains(&port) {
                    continue;
                }
                let mut child = cluster.launch(port);
                let url = format!("redis://127.0.0.1:{port}");
                if eventually(Duration::from_secs(10), || ping(url.clone())).await {
                    started = Some((port, child));
                    break;
                }
                let _ = child.kill();
                let _ = child.wait();
                last_log = std::fs::read_to_string(cluster.log_path(port)).unwrap_or_default();
            }
            let (port, child) = started.unwrap_or_else(|| {
                panic!("no cluster node came up in 5 tries; the last one logged:\n{last_log}")
            });
            cluster.ports.push(port);
            cluster.children.push(Some(child));
        }
        let ports = cluster.ports.clone();
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (scripts/test installs it)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_healthy().await;
        cluster
    }

    fn log_path(&self, port: u16) -> std::path::PathBuf {
        self.dir.path().join(format!("{port}.log"))
    }

    fn launch(&self, port: u16) -> std::process::Child {
        let dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            // Failover within a few seconds of a master dying, by a replica
            // however long its link was down.
            .args(["--cluster-node-timeout", "1500"])
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(self.log_path(port))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)")
    }

    /// `REDIS_CLUSTER_URLS` for a node: every process as a seed.
    pub fn seeds(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn live_ports(&self) -> Vec<u16> {
        self.ports
            .iter()
            .zip(&self.children)
            .filter(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
            .collect()
    }

    /// `redis-cli -p <port> <args>`'s output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Live masters as (port, node id, slot count).
    pub fn masters(&self) -> Vec<(u16, String, usize)> {
        let port = self.live_ports()[0];
        self.cli(port, &["cluster", "nodes"])
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let port: u16 = fields[1].split(['@', ':']).nth(1)?.parse().ok()?;
                let slots = fields[8..]
                    .iter()
                    .filter(|r| !r.starts_with('['))
                    .map(|r| match r.split_once('-') {
                        Some((a, b)) => {
                            b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1
                        }
                        None => 1,
                    })
                    .sum();
                Some((port, fields[0].to_owned(), slots))
            })
            .filter(|(_, _, slots)| *slots > 0)
            .collect()
    }

    /// The port of the replica of the master with node id `master`.
    pub fn replica_of(&self, master: &str) -> u16 {
        let port = self.live_ports()[0];
        self.cli(port, &["cluster", "nodes"])
            .lines()
            .find(|l| l.contains("slave") && l.split_whitespace().nth(3) == Some(master))
            .and_then(|l| {
                l.split_whitespace()
                    .nth(1)?
                    .split(['@', ':'])
                    .nth(1)?
                    .parse()
                    .ok()
            })
            .expect("the master has a replica")
    }

    /// Every live process agrees the cluster is whole, and every replica
    /// is in sync with its master (so it can take over).
    pub async fn wait_healthy(&self) {
        let ok = eventually(Duration::from_secs(30), || async {
            self.live_ports().iter().all(|p| {
                self.cli(*p, &["cluster", "info"])
                    .contains("cluster_state:ok")
                    && {
                        let info = self.cli(*p, &["info", "replication"]);
                        info.contains("role:master") || info.contains("master_link_status:up")
                    }
            }) && self.masters().len() == 3
        })
        .await;
        assert!(ok, "the cluster became healthy");
    }

    /// SIGKILL of the process on `port`.
    pub fn kill(&mut self, port: u16) {
        let i = self
            .ports
            .iter()
            .position(|p| *p == port)
            .expect("a cluster port");
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Moves `slots` slots from one master to another with
    /// `redis-cli --cluster reshard`, as an operator would.
    pub fn reshard(&self, from: &str, to: &str, slots: usize) {
        let entry = format!("127.0.0.1:{}", self.live_ports()[0]);
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "reshard", &entry])
            .args(["--cluster-from", from, "--cluster-to", to])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster reshard");
        assert!(
            out.status.success(),
            "reshard: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn ping(url: String) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    match client.get_multiplexed_async_connection().await {
        Ok(mut conn) => redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok(),
        Err(_) => false,
    }
}

/// `n` free ports whose cluster-bus ports (port + 10000) are free too.
fn free_cluster_ports(n: usize) -> Vec<u16> {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let mut ports = Vec::new();
    while ports.len() < n {
        let port = rand_port();
        if !ports.contains(&port) && free(port) && free(port + 10000) {
            ports.push(port);
        }
    }
    ports
}

fn rand_port() -> u16 {
    // 20000..45000: below the ephemeral range, with room for +10000.
    20000 + (Uuid::now_v7().as_u128() % 25000) as u16
}
