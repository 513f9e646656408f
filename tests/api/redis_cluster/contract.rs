//! The contracts, run against each backend: the in-process bus and
//! presence, one Redis, and a real local Redis Cluster (with sharded
//! pub/sub and presence keys over every shard).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ochat::backplane::Backplane;
use ochat::bus::memory::MemoryBus;
use ochat::bus::redis::RedisBus;
use ochat::bus::{Bus, Delivery, Envelope, Order, SessionId};
use ochat::config::{RedisConfig, Secret};
use ochat::presence::memory::MemoryPresence;
use ochat::presence::redis::RedisPresence;
use ochat::presence::{Closed, Presence};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::cluster_config;
use crate::helpers::{LocalCluster, RedisPrefix, eventually, redis_url};

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
    // A window in which nothing more may arrive for the unsubscribed user.
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
