//! A hostile client, signed in or anonymous: nothing it sends may take a
//! node down or tell it what is not its own. Each test sends the bad input
//! and asserts the exact answer.
//!
//! - [`http`]: the HTTP edge (listener limits, budgets, labels, the REST
//!   contract).
//! - [`people`]: what one user may do to or learn of another (text, ids,
//!   presence, blocking, roles, emails).
//! - [`sockets`]: WebSocket floods and malformed frames.
//! - [`scenario`]: everything at once beside honest users, in the suite
//!   and as a benchmark.

mod http;
mod people;
mod scenario;
mod sockets;

use crate::helpers::NodeProcess;

/// A node of its own (its own process, metrics and memory), on an
/// embedded database in `dir`.
pub async fn own_node(dir: &tempfile::TempDir, env: &[(&str, &str)]) -> (NodeProcess, u16) {
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
pub fn memory(pid: u32) -> (u64, u64) {
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
