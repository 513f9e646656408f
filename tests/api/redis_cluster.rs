//! Past one Redis: the bus and presence contracts on every backend (in
//! process, one Redis, a real local Redis Cluster), nodes chatting over a
//! cluster, a master killed and slots resharded under load, and bad cluster
//! configuration refused with one clear line.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ochat::backplane::{self, Backplane};
use ochat::bus::memory::MemoryBus;
use ochat::bus::redis::RedisBus;
use ochat::bus::{Bus, Delivery, Envelope, Order, SessionId};
use ochat::config::{RedisConfig, Secret};
use ochat::presence::memory::MemoryPresence;
use ochat::presence::redis::RedisPresence;
use ochat::presence::{Closed, Presence};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::helpers::{
    Backend, LocalCluster, OwnRedis, RedisPrefix, TEST_SECRET, TestApp, TestDatabase, TestUser,
    eventually, redis_url,
};
use crate::wsclient::{WsClient, presence};

// ---------------------------------------------------------------------------
// The contracts, run against each backend.

/// A hub stand-in that records what the bus delivers and wants the users it
/// is told to.
#[derive(Default)]
struct Recorder {
    wanted: Mutex<HashSet<Uuid>>,
    got: Mutex<Vec<(Uuid, Envelope)>>,
    resubscribed: Mutex<usize>,
}

impl Delivery for Recorder {
    fn deliver(&self, user: Uuid, envelope: Envelope) {
        self.got.lock().unwrap().push((user, envelope));
    }
    fn wants(&self, user: Uuid) -> bool {
        self.wanted.lock().unwrap().contains(&user)
    }
    fn users(&self) -> Vec<Uuid> {
        self.wanted.lock().unwrap().iter().copied().collect()
    }
    fn resubscribed(&self) {
        *self.resubscribed.lock().unwrap() += 1;
    }
}

impl Recorder {
    fn frames_for(&self, user: Uuid) -> Vec<Bytes> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(u, _)| *u == user)
            .map(|(_, e)| e.frame.clone())
            .collect()
    }
}

/// Everything a Redis-backed bus and presence need, stopped when dropped.
struct RedisBackends {
    bus: Arc<dyn Bus>,
    presence: Arc<dyn Presence>,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
    flush: CancellationToken,
}

impl Drop for RedisBackends {
    fn drop(&mut self) {
        self.stop.cancel();
        self.flush.cancel();
    }
}

async fn redis_backends(config: RedisConfig, prefix: &str, ttl: Duration) -> RedisBackends {
    let backplane = Arc::new(Backplane::connect(&config).await.expect("connect"));
    let recorder = Arc::new(Recorder::default());
    let (stop, flush) = (CancellationToken::new(), CancellationToken::new());
    let (tasks, late) = (TaskTracker::new(), TaskTracker::new());
    let bus = RedisBus::start(
        backplane.clone(),
        prefix.to_owned(),
        Duration::from_secs(1),
        recorder.clone(),
        (stop.clone(), &tasks),
        (flush.clone(), &late),
    );
    RedisBackends {
        bus: Arc::new(bus),
        presence: Arc::new(RedisPresence::new(backplane, prefix, ttl)),
        recorder,
        stop,
        flush,
    }
}

fn frame(text: &str) -> Envelope {
    Envelope::shared("message", Bytes::from(text.to_owned()), None).ordered(Order::Seq(1))
}

/// What every bus promises: a subscribed user's events arrive, each once and
/// whole; an unsubscribed user's do not.
/// `filters`: the bus itself keeps events from nodes without interest (Redis
/// does; the in-process bus hands everything to the hub, which drops them).
async fn bus_contract(bus: &dyn Bus, recorder: &Recorder, filters: bool) {
    let healthy = eventually(Duration::from_secs(10), || async {
        bus.ping().await.is_ok()
    })
    .await;
    assert!(healthy, "a started bus answers its probe");
    // Enough users that, on a cluster, their channels land on every shard.
    let users: Vec<Uuid> = (0..60).map(|_| Uuid::now_v7()).collect();
    for user in &users {
        recorder.wanted.lock().unwrap().insert(*user);
        bus.interest_changed(*user).await.expect("subscribe");
    }
    let stranger = Uuid::now_v7();
    let mut events: Vec<(Uuid, Envelope)> = users
        .iter()
        .map(|u| (*u, frame(&format!("{{\"for\":\"{u}\"}}"))))
        .collect();
    events.push((stranger, frame("{\"for\":\"nobody\"}")));
    bus.publish(events).await.expect("publish");
    let arrived = eventually(Duration::from_secs(5), || async {
        users.iter().all(|u| !recorder.frames_for(*u).is_empty())
    })
    .await;
    assert!(arrived, "every subscribed user got its event");
    for user in &users {
        assert_eq!(
            recorder.frames_for(*user),
            vec![Bytes::from(format!("{{\"for\":\"{user}\"}}"))],
            "exactly its own event, once"
        );
    }
    assert_eq!(recorder.frames_for(stranger).is_empty(), filters);

    // Confirmed publishes report that the bus took them.
    bus.publish_confirmed(vec![(users[0], frame("{\"n\":2}"))])
        .await
        .expect("confirmed");

    // Unsubscribed: nothing more arrives.
    let gone = users[1];
    recorder.wanted.lock().unwrap().remove(&gone);
    bus.interest_changed(gone).await.expect("unsubscribe");
    bus.publish(vec![
        (gone, frame("{\"late\":true}")),
        (users[2], frame("{\"n\":3}")),
    ])
    .await
    .unwrap();
    let later = eventually(Duration::from_secs(5), || async {
        recorder.frames_for(users[2]).len() == 2
    })
    .await;
    assert!(later, "a still subscribed user keeps receiving");
    tokio::time::sleep(Duration::from_millis(200)).await;
    if filters {
        assert_eq!(
            recorder.frames_for(gone).len(),
            1,
            "nothing after unsubscribe"
        );
    }
}

/// What every presence promises: transitions only at the first and last
/// session, versions that grow, and `settle` outranking what came before.
async fn presence_contract(presence: &dyn Presence) {
    presence.ping().await.expect("a healthy presence answers");
    let user = Uuid::now_v7();
    let (s1, s2) = (SessionId::new(), SessionId::new());
    let online = presence
        .session_opened(user, s1)
        .await
        .unwrap()
        .expect("came online");
    assert!(online.online && online.user == user);
    assert_eq!(presence.session_opened(user, s2).await.unwrap(), None);
    assert!(presence.is_online(user).await.unwrap());
    assert_eq!(
        presence.session_closed(user, s1).await.unwrap(),
        Closed::Unchanged
    );
    assert!(presence.is_online(user).await.unwrap());
    let Closed::Offline(offline) = presence.session_closed(user, s2).await.unwrap() else {
        panic!("the last session's close is a transition");
    };
    assert!(!offline.online && offline.version > online.version);
    assert!(!presence.is_online(user).await.unwrap());
    let settled = presence.settle(user).await.unwrap();
    assert!(!settled.online && settled.version > offline.version);

    // Many users at once (on Redis: over every bucket, and on a cluster
    // every shard) each come online exactly once.
    let many: Vec<(Uuid, SessionId)> = (0..200)
        .map(|_| (Uuid::now_v7(), SessionId::new()))
        .collect();
    for (u, s) in &many {
        assert!(presence.session_opened(*u, *s).await.unwrap().is_some());
    }
    for (u, _) in &many {
        assert!(presence.is_online(*u).await.unwrap());
    }
    // A heartbeat of live sessions announces nothing.
    assert_eq!(presence.heartbeat(&many).await.unwrap(), vec![]);
}

/// Redis presence also outlives nodes: sessions a node stops refreshing
/// expire and are announced once, and a heartbeat puts back what Redis lost.
async fn expiring_presence_contract(presence: &dyn Presence, ttl: Duration) {
    let users: Vec<(Uuid, SessionId)> = (0..100)
        .map(|_| (Uuid::now_v7(), SessionId::new()))
        .collect();
    for (u, s) in &users {
        presence.session_opened(*u, *s).await.unwrap();
    }
    let expected: HashSet<Uuid> = users.iter().map(|(u, _)| *u).collect();
    let mut gone = HashSet::new();
    // Swept until every session has expired and been announced (each
    // sweep is bounded per bucket), and never one announced twice.
    let deadline = std::time::Instant::now() + ttl + Duration::from_secs(5);
    while !expected.is_subset(&gone) && std::time::Instant::now() < deadline {
        for t in presence.sweep().await.unwrap() {
            assert!(!t.online);
            assert!(gone.insert(t.user), "each user announced offline once");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(expected.is_subset(&gone), "every expired user went offline");
    // A heartbeat of sessions Redis no longer has puts them back.
    let back = presence.heartbeat(&users).await.unwrap();
    let back: HashSet<Uuid> = back.iter().filter(|t| t.online).map(|t| t.user).collect();
    assert_eq!(back, expected);
    // A session closed that Redis never knew, with none left: state lost.
    let stranger = Uuid::now_v7();
    assert_eq!(
        presence
            .session_closed(stranger, SessionId::new())
            .await
            .unwrap(),
        Closed::Lost
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_bus_and_presence_keep_the_contract() {
    let recorder = Arc::new(Recorder::default());
    let bus = MemoryBus::new(recorder.clone());
    bus_contract(&bus, &recorder, false).await;
    presence_contract(&MemoryPresence::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_redis_bus_and_presence_keep_the_contract() {
    let prefix = RedisPrefix::new().await;
    let ttl = Duration::from_millis(800);
    let backends = redis_backends(
        RedisConfig::Single(Secret::new(redis_url())),
        &prefix.0,
        ttl,
    )
    .await;
    bus_contract(&*backends.bus, &backends.recorder, true).await;
    presence_contract(&*backends.presence).await;
    expiring_presence_contract(&*backends.presence, ttl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_bus_and_presence_keep_the_contract() {
    let _turn = crate::helpers::HEAVY.lock().await;
    let cluster = LocalCluster::start().await;
    let prefix = format!("t{}", Uuid::now_v7().simple());
    let ttl = Duration::from_millis(800);
    let backends = redis_backends(cluster_config(&cluster), &prefix, ttl).await;
    bus_contract(&*backends.bus, &backends.recorder, true).await;
    presence_contract(&*backends.presence).await;
    expiring_presence_contract(&*backends.presence, ttl).await;

    // Sharded pub/sub: each publish went to one shard, and the three shards
    // all got some (the channels spread over the slots).
    let mut per_master = Vec::new();
    for (port, _, _) in cluster.masters() {
        let stats = cluster.cli(port, &["info", "commandstats"]);
        let spublish = stats
            .lines()
            .find(|l| l.starts_with("cmdstat_spublish:"))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let publish = stats.lines().any(|l| l.starts_with("cmdstat_publish:"));
        assert!(
            !publish,
            "no classic PUBLISH (copied to every shard) on {port}"
        );
        per_master.push(spublish);
    }
    assert_eq!(
        per_master.iter().sum::<u64>(),
        64,
        "one SPUBLISH per event: {per_master:?}"
    );
    assert!(
        per_master.iter().all(|n| *n > 0),
        "spread over every shard: {per_master:?}"
    );

    // Presence keys: every script's keys share a bucket tag, and the
    // buckets spread over every shard.
    for (port, _, _) in cluster.masters() {
        let keys = cluster.cli(
            port,
            &["--scan", "--pattern", &format!("{prefix}:presence:*")],
        );
        assert!(
            !keys.trim().is_empty(),
            "presence keys on the master at {port}"
        );
    }
}

fn cluster_config(cluster: &LocalCluster) -> RedisConfig {
    RedisConfig::Cluster(
        cluster
            .seeds()
            .split(',')
            .map(|s| Secret::new(s.to_owned()))
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// Nodes on a cluster.

/// Two in-process nodes sharing one Postgres and one local Redis Cluster.
struct ClusterNodes {
    nodes: Vec<TestApp>,
    cluster: LocalCluster,
    db: Arc<TestDatabase>,
    prefix: String,
    /// The cluster's shard view, to pick users by where their channel lives.
    view: Backplane,
}

impl ClusterNodes {
    async fn start() -> Self {
        let cluster = LocalCluster::start().await;
        let db = Arc::new(TestDatabase::new(Backend::Postgres).await);
        let seeds = cluster.seeds();
        let prefix = format!("t{}", Uuid::now_v7().simple());
        let env: Vec<(&str, &str)> = vec![
            ("REDIS_CLUSTER_URLS", seeds.as_str()),
            ("REDIS_PREFIX", prefix.as_str()),
            ("REDIS_PROBE_INTERVAL", "1s"),
            ("PRESENCE_TTL", "3s"),
        ];
        let mut nodes = Vec::new();
        for _ in 0..2 {
            nodes.push(TestApp::spawn_on(db.clone(), &env).await);
        }
        let view = Backplane::connect(&cluster_config(&cluster)).await.unwrap();
        Self {
            nodes,
            cluster,
            db,
            prefix,
            view,
        }
    }

    /// The master (`host:port`) whose shard holds `user`'s channel.
    async fn shard_of(&self, user: Uuid) -> String {
        self.view.probe().await.expect("cluster healthy");
        let name = format!("{}:user:{user}", self.prefix);
        self.view
            .shards()
            .unwrap()
            .owner(backplane::slot(name.as_bytes()))
    }

    /// A new user whose channel lives on a shard not in `taken`.
    async fn user_off(&self, node: usize, taken: &mut HashSet<String>) -> TestUser {
        loop {
            let user = self.nodes[node].new_user().await;
            if taken.insert(self.shard_of(user.id).await) {
                return user;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_chat_over_a_redis_cluster() {
    let _turn = crate::helpers::HEAVY.lock().await;
    let nodes = ClusterNodes::start().await;
    let [n0, n1] = [&nodes.nodes[0], &nodes.nodes[1]];
    let mut shards = HashSet::new();
    let a = nodes.user_off(0, &mut shards).await;
    let b = nodes.user_off(1, &mut shards).await;
    let c = nodes.user_off(0, &mut shards).await;
    assert_eq!(shards.len(), 3, "a, b and c live on three shards");

    let mut wa = WsClient::connect(n0, &a.token).await;
    let mut wb = WsClient::connect(n1, &b.token).await;
    // c on both nodes: two devices.
    let mut wc0 = WsClient::connect(n0, &c.token).await;
    let mut wc1 = WsClient::connect(n1, &c.token).await;

    wa.send(json!({"type": "message", "to": b.id, "content": "across shards", "client_id": "m1"}))
        .await;
    let ack = wa.recv_type("ack").await;
    let got = wb.recv_type("message").await;
    assert_eq!(
        (got["id"].clone(), got["content"].clone()),
        (ack["id"].clone(), json!("across shards"))
    );

    wb.send(json!({"type": "message", "to": c.id, "content": "to both devices"}))
        .await;
    let ack = wb.recv_type("ack").await;
    assert_eq!(wc0.recv_type("message").await["id"], ack["id"]);
    assert_eq!(wc1.recv_type("message").await["id"], ack["id"]);
    // c answers from node 1; its device on node 0 sees its own message.
    wc1.send(json!({"type": "message", "to": b.id, "content": "back"}))
        .await;
    let ack = wc1.recv_type("ack").await;
    assert_eq!(wb.recv_type("message").await["id"], ack["id"]);
    assert_eq!(wc0.recv_type("message").await["id"], ack["id"]);

    // Typing crosses nodes and shards.
    wb.send(json!({"type": "typing", "to": a.id, "is_typing": true}))
        .await;
    assert_eq!(
        wa.recv_type("typing").await,
        json!({"type": "typing", "from": b.id, "is_typing": true})
    );

    // b answers a, so a hears of b's presence.
    wb.send(json!({"type": "message", "to": a.id, "content": "hi a"}))
        .await;
    wb.recv_type("ack").await;
    wa.recv_type("message").await;

    // Presence: b leaves and comes back on the other node; a is told both.
    wb.close().await;
    let offline = wa.recv_type("user_offline").await;
    assert_eq!(
        presence(&offline),
        json!({"type": "user_offline", "user_id": b.id})
    );
    let mut wb = WsClient::connect(n0, &b.token).await;
    let online = wa.recv_type("user_online").await;
    assert_eq!(
        presence(&online),
        json!({"type": "user_online", "user_id": b.id})
    );
    let (_, profile) = n1.get(&format!("/users/{}", b.id), &a.token).await;
    assert_eq!(profile["is_online"], true);
    wb.assert_usable().await;

    // Readiness names the backends; metrics have a per-shard view without
    // user ids.
    let ready = reqwest::get(format!("{}/readyz", n0.base)).await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = reqwest::get(format!(
        "http://127.0.0.1:{}/metrics",
        n0.metrics_port.unwrap()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    for (port, _, _) in nodes.cluster.masters() {
        let shard = format!("shard=\"127.0.0.1:{port}\"");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("ochat_redis_shard_publishes_total") && l.contains(&shard)),
            "publishes counted for {shard}"
        );
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("ochat_redis_shard_subscriptions") && l.contains(&shard)),
            "subscriptions counted for {shard}"
        );
    }
    for user in [a.id, b.id, c.id] {
        assert!(
            !metrics.contains(&user.to_string()),
            "no user id in metrics"
        );
    }

    // A shard with no master left (its master and replica both killed):
    // readiness fails, naming the failing part (the bus) but no address,
    // since /readyz is public; the shard is named in the metrics.
    let mut cluster = nodes.cluster;
    let (port, id, _) = cluster.masters()[0].clone();
    let replica = cluster.replica_of(&id);
    cluster.kill(replica);
    cluster.kill(port);
    let shard = format!("shard=\"127.0.0.1:{port}\"");
    let metrics_url = format!("http://127.0.0.1:{}/metrics", n0.metrics_port.unwrap());
    let named = eventually(Duration::from_secs(15), || async {
        let ready = reqwest::get(format!("{}/readyz", n0.base)).await.unwrap();
        let status = ready.status();
        let body: serde_json::Value = ready.json().await.unwrap();
        let metrics = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        status == 503
            && body["checks"]["bus"] == "down"
            && metrics.lines().any(|l| {
                l.starts_with("ochat_redis_shard_errors_total")
                    && l.contains("op=\"ping\"")
                    && l.contains(&shard)
            })
    })
    .await;
    let body = reqwest::get(format!("{}/readyz", n0.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        named,
        "readiness fails and metrics name the dead shard ({shard}): {body}"
    );
    assert!(
        !body.contains("127.0.0.1"),
        "the public readiness body names no address: {body}"
    );
}

/// Senders on both nodes send a message every 20 ms to receivers on the
/// other node while `fault` runs. Afterwards every acked message is stored
/// exactly once and reached its receiver live (the test client never sends
/// `sync`) within a few seconds. Returns the clients, still connected.
async fn load_through(
    apps: &[TestApp],
    db: &TestDatabase,
    pairs: &[(TestUser, TestUser)],
    fault: impl std::future::Future<Output = ()>,
) -> Vec<WsClient> {
    let stop = CancellationToken::new();
    let end = CancellationToken::new();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut seen_by_pair = Vec::new();
    for (i, (from, to)) in pairs.iter().enumerate() {
        let (sender_node, receiver_node) = (&apps[i % 2], &apps[(i + 1) % 2]);
        let mut rx = WsClient::connect(receiver_node, &to.token).await;
        let mut tx = WsClient::connect(sender_node, &from.token).await;
        let seen = Arc::new(Mutex::new(HashSet::<String>::new()));
        seen_by_pair.push(seen.clone());
        let end = end.clone();
        receivers.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = end.cancelled() => break,
                    frame = rx.next_within(Duration::from_millis(500)) => {
                        if let Some(frame) = frame.filter(|f| f["type"] == "message") {
                            seen.lock().unwrap().insert(frame["id"].as_str().unwrap().to_owned());
                        }
                    }
                }
            }
            rx
        }));
        let (to_id, stop) = (to.id, stop.clone());
        senders.push(tokio::spawn(async move {
            let mut acked = HashSet::new();
            let (mut sent, mut answered) = (0u32, 0u32);
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let deadline = Instant::now() + Duration::from_secs(120);
            while (!stop.is_cancelled() || answered < sent) && Instant::now() < deadline {
                tokio::select! {
                    _ = tick.tick(), if !stop.is_cancelled() => {
                        sent += 1;
                        tx.send(json!({"type": "message", "to": to_id,
                            "content": format!("m{sent}"), "client_id": format!("c{sent}")}))
                            .await;
                    }
                    frame = tx.next_within(Duration::from_millis(500)) => {
                        let Some(frame) = frame else { continue };
                        match frame["type"].as_str() {
                            Some("ack") => {
                                answered += 1;
                                let id = frame["id"].as_str().unwrap().to_owned();
                                assert!(acked.insert(id), "one ack per send");
                            }
                            // Not stored (`unavailable`): a client would resend.
                            Some("error") => answered += 1,
                            _ => {}
                        }
                    }
                    () = tokio::time::sleep(Duration::from_millis(50)), if stop.is_cancelled() => {}
                }
            }
            assert_eq!(answered, sent, "every send was answered");
            (acked, tx)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    fault.await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let mut acked_by_pair = Vec::new();
    let mut clients = Vec::new();
    for sender in senders {
        let (acked, client) = sender.await.unwrap();
        acked_by_pair.push(acked);
        clients.push(client);
    }
    let total: usize = acked_by_pair.iter().map(HashSet::len).sum();
    assert!(total > 100, "the load ran ({total} acked)");

    // Stored exactly once: every acked id, no client_id twice.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let ids: Vec<String> = acked_by_pair.iter().flatten().cloned().collect();
    let (stored, rows, distinct): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM messages WHERE id::text = ANY($1)),
                count(*), count(DISTINCT (sender_id, client_id)) FROM messages",
    )
    .bind(&ids)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored as usize, total, "every acked message is stored");
    assert_eq!(rows, distinct, "no message stored twice");

    // Live delivery healed itself: everything acked arrived, without sync.
    let healed = eventually(Duration::from_secs(8), || async {
        acked_by_pair
            .iter()
            .zip(&seen_by_pair)
            .all(|(acked, seen)| acked.is_subset(&seen.lock().unwrap()))
    })
    .await;
    end.cancel();
    let missing: usize = acked_by_pair
        .iter()
        .zip(&seen_by_pair)
        .map(|(acked, seen)| acked.difference(&seen.lock().unwrap()).count())
        .sum();
    if !healed {
        // What a reader of a failure needs: which messages, and where they
        // stand in their receiver's sequence.
        for ((_, to), (acked, seen)) in pairs.iter().zip(acked_by_pair.iter().zip(&seen_by_pair)) {
            let seen = seen.lock().unwrap().clone();
            for id in acked.difference(&seen) {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT id::text, created_at::text FROM messages WHERE receiver_id = $1 ORDER BY created_at",
                )
                .bind(to.id)
                .fetch_all(&pool)
                .await
                .unwrap();
                let at = rows.iter().position(|(m, _)| m == id);
                eprintln!(
                    "missing {id} for {}: position {at:?} of {} stored; created {:?}",
                    to.id,
                    rows.len(),
                    at.map(|i| rows[i].1.clone())
                );
            }
        }
    }
    assert!(
        healed,
        "{missing} of {total} acked messages never arrived live"
    );
    for receiver in receivers {
        clients.push(receiver.await.unwrap());
    }
    clients
}

/// Pairs of users, senders and receivers spread over every shard.
async fn pairs_over_shards(nodes: &ClusterNodes, n: usize) -> Vec<(TestUser, TestUser)> {
    let mut pairs = Vec::new();
    // Receivers go round the shards (drawn at random, all six could land
    // on one shard now and then).
    let masters = nodes.cluster.masters().len();
    let mut shards = HashSet::new();
    for i in 0..n {
        if shards.len() == masters {
            shards.clear();
        }
        let to = nodes.user_off(1 - i % 2, &mut shards).await;
        let from = nodes.nodes[i % 2].new_user().await;
        pairs.push((from, to));
    }
    let mut where_: HashSet<String> = HashSet::new();
    for (_, to) in &pairs {
        where_.insert(nodes.shard_of(to.id).await);
    }
    assert!(where_.len() >= 2, "receivers on several shards");
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_loses_nothing_and_heals_delivery() {
    let _turn = crate::helpers::HEAVY.lock().await;
    let mut nodes = ClusterNodes::start().await;
    let pairs = pairs_over_shards(&nodes, 6).await;
    // The master that serves the first receiver's channel.
    let victim = nodes.shard_of(pairs[0].1.id).await;
    let victim_port: u16 = victim.rsplit(':').next().unwrap().parse().unwrap();
    let cluster = &mut nodes.cluster;
    let _connected = load_through(&nodes.nodes, &nodes.db, &pairs, async {
        cluster.kill(victim_port);
        let cluster: &LocalCluster = cluster;
        let promoted = eventually(Duration::from_secs(20), || async move {
            let masters = cluster.masters();
            masters.len() == 3 && masters.iter().all(|(p, _, _)| *p != victim_port)
        })
        .await;
        assert!(promoted, "a replica took over from the killed master");
    })
    .await;

    for node in &nodes.nodes {
        // A node re-reads the slot map on its own schedule; with the whole
        // suite loading both cores a CLUSTER SLOTS can time out once first.
        let ready = eventually(Duration::from_secs(20), || async {
            reqwest::get(format!("{}/readyz", node.base))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        let body = reqwest::get(format!("{}/readyz", node.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            ready,
            "nodes are ready again on the promoted replica: {body}"
        );
    }

    // Presence converges: everyone still connected is online, from any node.
    for user in pairs.iter().flat_map(|(from, to)| [from, to]) {
        for node in &nodes.nodes {
            let online = eventually(Duration::from_secs(10), || async {
                let (_, profile) = node.get(&format!("/users/{}", user.id), &user.token).await;
                profile["is_online"] == true
            })
            .await;
            let (_, profile) = node.get(&format!("/users/{}", user.id), &user.token).await;
            assert!(
                online,
                "a connected user stays online through the failover: {profile}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_resharded_under_load_lose_nothing_and_heal_delivery() {
    let _turn = crate::helpers::HEAVY.lock().await;
    let nodes = ClusterNodes::start().await;
    let pairs = pairs_over_shards(&nodes, 6).await;
    // Every slot of the first receiver's shard moves to another master, so
    // that receiver's subscription must follow its slot.
    let from = nodes.shard_of(pairs[0].1.id).await;
    let masters = nodes.cluster.masters();
    let from_master = masters
        .iter()
        .find(|(p, _, _)| from.ends_with(&format!(":{p}")))
        .expect("the shard's master")
        .clone();
    let to_master = masters
        .iter()
        .find(|m| m.0 != from_master.0)
        .unwrap()
        .clone();
    let _connected = load_through(&nodes.nodes, &nodes.db, &pairs, async {
        let cluster = &nodes.cluster;
        let (from_id, to_id, slots) = (from_master.1.clone(), to_master.1.clone(), from_master.2);
        tokio::task::block_in_place(|| cluster.reshard(&from_id, &to_id, slots));
    })
    .await;
    assert_ne!(
        nodes.shard_of(pairs[0].1.id).await,
        from,
        "the receiver's channel moved to another shard"
    );
}

/// `ochat serve` with `env`: its exit code and the lines it printed to
/// stderr that start with `ochat:`.
fn serve_fails(env: &[(&str, &str)]) -> (Option<i32>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ochat"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("JWT_SECRET", TEST_SECRET)
        .env("SERVER_PORT", "0")
        .env("METRICS_PORT", "off")
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .output()
        .expect("run ochat");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = stderr
        .lines()
        .filter(|l| l.starts_with("ochat:"))
        .map(str::to_owned)
        .collect();
    (out.status.code(), lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cluster_config_stops_start_up_with_one_clear_line() {
    // Both kinds at once.
    let (code, lines) = serve_fails(&[
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("REDIS_CLUSTER_URLS", "redis://127.0.0.1:7000"),
    ]);
    assert_eq!(code, Some(2));
    assert_eq!(
        lines,
        [
            "ochat: invalid REDIS_CLUSTER_URLS: set either REDIS_URL (one Redis) or REDIS_CLUSTER_URLS (a Redis Cluster), not both"
        ]
    );

    // Seed nodes nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let seeds = format!("redis://127.0.0.1:{port}");
    let (code, lines) = serve_fails(&[("REDIS_CLUSTER_URLS", &seeds)]);
    assert_eq!(code, Some(1));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("ochat: Failed to connect to Redis Cluster (REDIS_CLUSTER_URLS): "),
        "{lines:?}"
    );

    // A single Redis (of this test's own) given as a cluster.
    let single = OwnRedis::start().await;
    let (code, lines) = serve_fails(&[("REDIS_CLUSTER_URLS", &single.url())]);
    assert_eq!(code, Some(1));
    assert_eq!(
        lines,
        [
            "ochat: Failed to connect to Redis Cluster (REDIS_CLUSTER_URLS): the seed nodes are not in cluster mode (cluster support disabled); use REDIS_URL for a single Redis"
        ]
    );
}
