//! Redis for tests: key prefixes on the shared server, and servers and
//! clusters of a test's own.

//! Shared test plumbing: fresh databases, real servers on port 0, tokens.

use std::time::Duration;

use uuid::Uuid;

use super::eventually;

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
