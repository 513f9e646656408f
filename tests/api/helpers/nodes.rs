//! Several nodes: in-process servers sharing storage and Redis, and nodes
//! as processes of their own.

//! Shared test plumbing: fresh databases, real servers on port 0, tokens.

use std::sync::Arc;
use std::time::Duration;

use super::*;

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
