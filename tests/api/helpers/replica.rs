//! A PostgreSQL primary and a streaming replica of the test's own: two
//! servers on their own ports, the replica made from a base backup of the
//! primary and fed by streaming replication, as a real deployment's is.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgPair {
    pub primary_url: String,
    pub replica_url: String,
    bin: PathBuf,
    dirs: Vec<PathBuf>,
    _root: tempfile::TempDir,
}

/// The installed PostgreSQL's programs (`initdb`, `pg_ctl`, ...), which
/// Debian keeps off the PATH.
fn bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's programs under /usr/lib/postgresql")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb")
}

/// Whether this process runs as root (from `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// One of PostgreSQL's programs. PostgreSQL refuses to run as root: as
/// root, its programs run as the `postgres` user, which owns the
/// directories.
fn command(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

fn run(bin: &Path, program: &str, args: &[&str]) {
    let out = command(bin, program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn append(path: &Path, lines: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(lines.as_bytes()).unwrap();
}

impl PgPair {
    /// Starts a primary, takes a base backup of it and starts that as a
    /// streaming replica; both are stopped when this is dropped.
    pub fn start() -> Self {
        let bin = bin_dir();
        let root = tempfile::tempdir().unwrap();
        let (primary, replica) = (root.path().join("primary"), root.path().join("replica"));
        if is_root() {
            let owner = Command::new("chown")
                .args(["postgres:postgres", root.path().to_str().unwrap()])
                .status()
                .unwrap();
            assert!(owner.success());
        }
        let sockets = root.path().display().to_string();
        let (primary_port, replica_port) = (super::free_port(), super::free_port());
        let p = primary.to_str().unwrap();
        run(
            &bin,
            "initdb",
            &["-D", p, "-U", "postgres", "-A", "trust", "--no-sync"],
        );
        // Speed over durability: the data lives as long as the test.
        let settings = |port: u16| {
            format!(
                "\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
                 unix_socket_directories = '{sockets}'\nfsync = off\n\
                 max_connections = 50\nshared_buffers = 16MB\n"
            )
        };
        append(&primary.join("postgresql.conf"), &settings(primary_port));
        run(
            &bin,
            "pg_ctl",
            &["-D", p, "-l", &format!("{p}.log"), "-w", "start"],
        );

        let r = replica.to_str().unwrap();
        let port = primary_port.to_string();
        // -R: the backup starts as a standby streaming from the primary.
        run(
            &bin,
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                r,
                "-R",
                "-X",
                "stream",
            ],
        );
        append(&replica.join("postgresql.conf"), &settings(replica_port));
        run(
            &bin,
            "pg_ctl",
            &["-D", r, "-l", &format!("{r}.log"), "-w", "start"],
        );
        Self {
            primary_url: format!("postgres://postgres@127.0.0.1:{primary_port}/postgres"),
            replica_url: format!("postgres://postgres@127.0.0.1:{replica_port}/postgres"),
            bin,
            dirs: vec![replica, primary],
            _root: root,
        }
    }
}

impl PgPair {
    /// Waits until the replica has replayed everything the primary had
    /// written when asked.
    pub async fn caught_up(&self) {
        use sqlx::Connection;
        let mut primary = sqlx::PgConnection::connect(&self.primary_url)
            .await
            .unwrap();
        let written: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&mut primary)
            .await
            .unwrap();
        let mut replica = sqlx::PgConnection::connect(&self.replica_url)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let replayed: bool =
                sqlx::query_scalar("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
                    .bind(&written)
                    .fetch_one(&mut replica)
                    .await
                    .unwrap();
            if replayed {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the replica replays the primary's writes"
            );
            // Polling: replay has no notification to wait on.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PgPair {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = command(&self.bin, "pg_ctl")
                .args(["-D", dir.to_str().unwrap(), "-m", "immediate", "stop"])
                .output();
        }
    }
}
