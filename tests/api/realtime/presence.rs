//! Presence under faults: every contact's view converges to the truth
//! after node hops, Redis kills and flushes, and PostgreSQL cuts.

use std::time::{Duration, Instant};

use crate::helpers::wsclient::WsClient;
use crate::helpers::{Backend, Cluster, OwnRedis, StorageOutage, TestApp, TestUser};

/// Every presence frame a watcher receives, as (user, online, version).
#[derive(Default)]
struct PresenceLog {
    seen: Vec<(String, bool, u64)>,
}

impl PresenceLog {
    /// Reads frames for `wait`, keeping presence ones.
    async fn read(&mut self, ws: &mut WsClient, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Ok(frame) = tokio::time::timeout_at(deadline, ws.recv()).await else {
                return;
            };
            let online = match frame["type"].as_str() {
                Some("user_online") => true,
                Some("user_offline") => false,
                _ => continue,
            };
            let version = frame["version"].as_u64().expect("a version");
            self.seen.push((
                frame["user_id"].as_str().unwrap().to_owned(),
                online,
                version,
            ));
        }
    }

    /// What the watcher's last frame about `user` says.
    fn last(&self, user: &TestUser) -> Option<bool> {
        let id = user.id.to_string();
        self.seen
            .iter()
            .rev()
            .find(|(u, _, _)| *u == id)
            .map(|(_, online, _)| *online)
    }

    fn ever_offline(&self, user: &TestUser) -> bool {
        let id = user.id.to_string();
        self.seen.iter().any(|(u, online, _)| *u == id && !online)
    }

    /// Reads until `want` holds for every (user, online) pair or `bound`
    /// passes; returns how long it took.
    async fn until(
        &mut self,
        ws: &mut WsClient,
        want: &[(&TestUser, bool)],
        bound: Duration,
    ) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < bound {
            if want.iter().all(|(u, online)| self.last(u) == Some(*online)) {
                return Some(started.elapsed());
            }
            self.read(ws, Duration::from_millis(100)).await;
        }
        want.iter()
            .all(|(u, online)| self.last(u) == Some(*online))
            .then(|| started.elapsed())
    }
}

/// A user hopping between nodes (closing on one and at once opening on the
/// other) is never left shown offline: late events are dropped by version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_node_hops_never_leave_a_contact_showing_offline() {
    let cluster = Cluster::start(2, &[]).await;
    let [n0, n1] = [&cluster.nodes[0], &cluster.nodes[1]];
    let (a, b) = (n0.new_user().await, n0.new_user().await);
    n0.talk(&a, &b).await;
    let mut wa = WsClient::connect(n0, &a.token).await;
    wa.assert_usable().await;
    let mut log = PresenceLog::default();
    let mut wb = WsClient::connect(n0, &b.token).await;
    wb.assert_usable().await;
    assert!(
        log.until(&mut wa, &[(&b, true)], Duration::from_secs(5))
            .await
            .is_some()
    );
    for hop in 0..50 {
        let next = if hop % 2 == 0 { n1 } else { n0 };
        wb.close().await;
        wb = WsClient::connect(next, &b.token).await;
        wb.assert_usable().await;
        log.read(&mut wa, Duration::from_millis(250)).await;
        assert_eq!(
            log.last(&b),
            Some(true),
            "after hop {hop} the contact's last presence frame says offline: {:?}",
            log.seen
        );
    }
    let versions: Vec<u64> = log.seen.iter().map(|(_, _, v)| *v).collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "versions only grow: {versions:?}"
    );
}

async fn contacts(node: &TestApp, watcher: &TestUser, users: &[&TestUser]) {
    for user in users {
        node.talk(watcher, user).await;
    }
}

/// A watcher on node 0 with three contacts: one online on node 1 that will
/// leave, one online on node 1 that stays, one that will arrive on node 1.
struct Scene {
    wa: WsClient,
    log: PresenceLog,
    w_leaves: WsClient,
    _w_stays: WsClient,
    leaves: TestUser,
    stays: TestUser,
    arrives: TestUser,
}

impl Scene {
    async fn start(cluster: &Cluster) -> Self {
        let [n0, n1] = [&cluster.nodes[0], &cluster.nodes[1]];
        let a = n0.new_user().await;
        let (leaves, stays, arrives) = (
            n0.new_user().await,
            n0.new_user().await,
            n1.new_user().await,
        );
        contacts(n0, &a, &[&leaves, &stays, &arrives]).await;
        let mut wa = WsClient::connect(n0, &a.token).await;
        let mut log = PresenceLog::default();
        let w_leaves = WsClient::connect(n1, &leaves.token).await;
        let _w_stays = WsClient::connect(n1, &stays.token).await;
        let both = [(&leaves, true), (&stays, true)];
        let online = log.until(&mut wa, &both, Duration::from_secs(5)).await;
        assert!(online.is_some(), "both online: {:?}", log.seen);
        Self {
            wa,
            log,
            w_leaves,
            _w_stays,
            leaves,
            stays,
            arrives,
        }
    }
}

/// Redis dies and comes back empty: every contact's view converges to the
/// truth within PRESENCE_TTL plus a few seconds, with no flap for a user who
/// kept a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_repaired_after_redis_is_killed_and_restarted() {
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    let cluster = Cluster::start(
        2,
        &[
            ("REDIS_URL", url.as_str()),
            ("PRESENCE_TTL", "3s"),
            ("REDIS_PROBE_INTERVAL", "500ms"),
        ],
    )
    .await;
    let Scene {
        mut wa,
        mut log,
        w_leaves,
        _w_stays,
        leaves,
        stays,
        arrives,
    } = Scene::start(&cluster).await;
    let n1 = &cluster.nodes[1];

    redis.kill();
    w_leaves.close().await;
    let _w_arrives = WsClient::connect(n1, &arrives.token).await;
    log.read(&mut wa, Duration::from_millis(500)).await;
    redis.restart().await;

    let took = log
        .until(
            &mut wa,
            &[(&leaves, false), (&stays, true), (&arrives, true)],
            Duration::from_secs(3 + 5),
        )
        .await;
    assert!(took.is_some(), "views after the restart: {:?}", log.seen);
    assert!(!log.ever_offline(&stays), "no flap: {:?}", log.seen);
}

/// `FLUSHALL` under running nodes: sessions are put back and announced, a
/// session closed before that is announced offline, nobody flaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_repaired_after_a_flushall() {
    let redis = OwnRedis::start().await;
    let url = redis.url();
    let cluster = Cluster::start(2, &[("REDIS_URL", url.as_str()), ("PRESENCE_TTL", "3s")]).await;
    let Scene {
        mut wa,
        mut log,
        w_leaves,
        _w_stays,
        leaves,
        stays,
        arrives,
    } = Scene::start(&cluster).await;
    let n1 = &cluster.nodes[1];

    redis.flushall().await;
    w_leaves.close().await;
    let _w_arrives = WsClient::connect(n1, &arrives.token).await;
    let took = log
        .until(
            &mut wa,
            &[(&leaves, false), (&stays, true), (&arrives, true)],
            Duration::from_secs(3 + 5),
        )
        .await;
    assert!(took.is_some(), "views after the flush: {:?}", log.seen);
    assert!(!log.ever_offline(&stays), "no flap: {:?}", log.seen);
    let (_, profile) = cluster.nodes[0]
        .get(&format!("/users/{}", stays.id), &stays.token)
        .await;
    assert_eq!(
        profile["is_online"], true,
        "presence holds the session again"
    );
}

/// Postgres unreachable when a transition is announced (the contacts
/// lookup fails): the announcement is repaired once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_repaired_after_a_postgres_cut() {
    let cluster = Cluster::start(2, &[("PRESENCE_TTL", "3s")]).await;
    let [n0, n1] = [&cluster.nodes[0], &cluster.nodes[1]];
    let a = n0.new_user().await;
    let (leaves, arrives) = (n0.new_user().await, n1.new_user().await);
    contacts(n0, &a, &[&leaves, &arrives]).await;
    let mut wa = WsClient::connect(n0, &a.token).await;
    let mut log = PresenceLog::default();
    let w_leaves = WsClient::connect(n1, &leaves.token).await;
    assert!(
        log.until(&mut wa, &[(&leaves, true)], Duration::from_secs(5))
            .await
            .is_some()
    );

    let outage = StorageOutage::start(n1, Backend::Postgres).await;
    w_leaves.close().await;
    // Known to the node already, so no storage is needed to connect.
    let _w_arrives = WsClient::connect(n1, &arrives.token).await;
    log.read(&mut wa, Duration::from_secs(1)).await;
    assert_eq!(
        log.last(&leaves),
        Some(true),
        "nothing could be announced yet"
    );
    outage.end().await;
    let took = log
        .until(
            &mut wa,
            &[(&leaves, false), (&arrives, true)],
            Duration::from_secs(3 + 5),
        )
        .await;
    assert!(took.is_some(), "views after the cut: {:?}", log.seen);
}
