//! What users see live, under faults, by concern: live delivery that fills
//! its own gaps and never waits on Redis (`delivery`), presence that
//! converges to the truth (`presence`), and commits whose answer was lost
//! (`commits`).

mod commits;
mod delivery;
mod presence;

use crate::helpers::proxy::Proxy;
use crate::helpers::{Backend, TestApp, TestDatabase};

pub(crate) fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap().to_owned()
}

/// A node on a fresh PostgreSQL database reached through a proxy the test
/// can cut, pause or slow down; also the database's direct URL, for
/// looking at what is committed without the proxy.
pub(super) async fn node_behind_a_proxy(env: &[(&str, &str)]) -> (TestApp, Proxy, String) {
    let db = TestDatabase::new(Backend::Postgres).await;
    let direct = db.url.clone();
    let proxy = Proxy::start(&host_port(&db.url)).await;
    let slow_url = db
        .url
        .replace(&host_port(&db.url), &format!("127.0.0.1:{}", proxy.port));
    let mut all = vec![("DATABASE_URL", slow_url.as_str())];
    all.extend_from_slice(env);
    let app = TestApp::spawn_on(std::sync::Arc::new(db), &all).await;
    (app, proxy, direct)
}

/// Two nodes whose Redis is reached through a proxy the test can cut or
/// pause; they probe it every 500 ms, so an outage shows soon.
pub(crate) async fn two_nodes_behind_a_redis_proxy() -> (crate::helpers::Cluster, Proxy) {
    let proxy = Proxy::start(&host_port(&crate::helpers::redis_url())).await;
    let via_proxy = format!("redis://127.0.0.1:{}", proxy.port);
    let cluster = crate::helpers::Cluster::start(
        2,
        &[
            ("REDIS_URL", via_proxy.as_str()),
            ("REDIS_PROBE_INTERVAL", "500ms"),
        ],
    )
    .await;
    (cluster, proxy)
}

pub(crate) async fn ready(app: &TestApp) -> bool {
    reqwest::get(format!("{}/readyz", app.base))
        .await
        .is_ok_and(|r| r.status() == 200)
}
