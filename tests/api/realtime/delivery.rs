//! Live delivery under faults: sockets that never wait on Redis or
//! PostgreSQL, gaps healed from storage, pipelined sends, Nagle off, slow
//! consumers cut in time, a draining node that publishes what it committed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use super::{host_port, node_behind_a_proxy, ready, two_nodes_behind_a_redis_proxy};
use crate::helpers::proxy::Proxy;
use crate::helpers::wsclient::WsClient;
use crate::helpers::{
    Backend, Cluster, NodeProcess, RedisPrefix, TestApp, TestDatabase, eventually, redis_url,
};

/// Accepted sockets have Nagle's algorithm off, so a small frame (an ack)
/// is never held back waiting for the peer's delayed ACK.
#[tokio::test]
async fn accepted_sockets_have_tcp_nodelay() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let user = app.new_user().await;
    let mut ws = WsClient::connect(&app, &user.token).await;
    ws.assert_usable().await;
    let client_port = match ws.stream.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.local_addr().unwrap().port(),
        _ => unreachable!("plain TCP"),
    };
    // The server's end of this connection lives in this process: find it.
    let mut found = None;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = entry.unwrap().file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: the fd is open for the duration of this check (the
        // connection is held by `ws` and the node), and is only borrowed.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&borrowed);
        let (Ok(local), Ok(peer)) = (socket.local_addr(), socket.peer_addr()) else {
            continue;
        };
        let (Some(local), Some(peer)) = (local.as_socket(), peer.as_socket()) else {
            continue;
        };
        if local.port() == app.port && peer.port() == client_port {
            found = Some(socket.tcp_nodelay().unwrap());
        }
    }
    assert_eq!(found, Some(true), "the accepted socket has TCP_NODELAY");
}

/// A new socket opened while Redis is down answers at once: subscribing
/// and presence happen beside the session, never before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_socket_is_answered_at_once_while_redis_is_down() {
    let proxy = Proxy::start(&host_port(&redis_url())).await;
    let via_proxy = format!("redis://127.0.0.1:{}", proxy.port);
    let cluster = Cluster::start(1, &[("REDIS_URL", via_proxy.as_str())]).await;
    let node = &cluster.nodes[0];
    let (a, b) = (node.new_user().await, node.new_user().await);

    proxy.cut().await;
    let started = Instant::now();
    let mut wa = WsClient::connect(node, &a.token).await;
    wa.send(
        json!({"type": "message", "to": b.id, "content": "while redis is away", "client_id": "r1"}),
    )
    .await;
    let ack = wa.recv_type("ack").await;
    let took = started.elapsed();
    assert_eq!(ack["client_id"], "r1");
    assert!(
        took < Duration::from_millis(1000),
        "connect + first ack took {took:?} with Redis down"
    );
}

/// Ten sends pipelined on one socket while every Postgres round trip is
/// slowed: they share commits instead of waiting for each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_share_commits_under_a_slow_postgres() {
    let (app, proxy, _) = node_behind_a_proxy(&[]).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let mut wa = WsClient::connect(&app, &a.token).await;
    let send = |i: usize| json!({"type": "message", "to": b.id, "content": format!("m{i}"), "client_id": format!("c{i}")});
    // Warm the pool's connections up before slowing them down.
    for i in 0..4 {
        wa.send(send(100 + i)).await;
    }
    for _ in 0..4 {
        wa.recv_type("ack").await;
    }

    proxy.delay(Duration::from_millis(40));
    let started = Instant::now();
    wa.send(send(0)).await;
    wa.recv_type("ack").await;
    let one = started.elapsed();

    let started = Instant::now();
    for i in 1..=10 {
        wa.send(send(i)).await;
    }
    let mut acked = HashSet::new();
    while acked.len() < 10 {
        let ack = tokio::time::timeout(Duration::from_secs(30), wa.recv_type("ack"))
            .await
            .expect("every ack");
        acked.insert(ack["client_id"].as_str().unwrap().to_owned());
    }
    let ten = started.elapsed();
    let expected: HashSet<String> = (1..=10).map(|i| format!("c{i}")).collect();
    assert_eq!(acked, expected);
    assert!(
        ten < one * 4,
        "10 pipelined sends took {ten:?}; one send takes {one:?} (one at a time would be ~10x)"
    );
}

/// A client that stops reading is closed within SLOW_CONSUMER_TIMEOUT plus a
/// second, however much the kernels buffer for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_in_time() {
    let _turn = crate::helpers::HEAVY.lock().await;
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("SLOW_CONSUMER_TIMEOUT", "1s"),
            ("RATE_LIMIT_PER_SEC", "100000"),
            ("RATE_LIMIT_BURST", "100000"),
        ],
    )
    .await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    // A client with ordinary (large) socket buffers that never reads.
    let stalled = WsClient::connect(&app, &b.token).await;
    let mut wa = WsClient::connect(&app, &a.token).await;
    let content = "s".repeat(4000);
    let rss_before = rss_kib();
    let started = Instant::now();
    let mut sent = 0;
    // About 400 KB/s: kernels would buffer megabytes for seconds.
    while app.state.hub.has(b.id) && started.elapsed() < Duration::from_secs(30) {
        wa.send(json!({"type": "message", "to": b.id, "content": content}))
            .await;
        wa.recv_type("ack").await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    assert!(!app.state.hub.has(b.id), "the stalled session was closed");
    assert!(
        took < Duration::from_millis(3000),
        "closed {took:?} after it stopped reading ({sent} messages, {} KB sent)",
        sent * 4
    );
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 64 * 1024,
        "the node held what the client did not read: RSS grew {grown} KiB"
    );
    // Whatever the kernels held was written before the close; if the close
    // frame fit, it says why.
    let mut stalled = stalled;
    if let Some(close) = stalled.closed().await {
        assert_eq!(u16::from(close.code), 1013, "{close:?}");
    }
    wa.assert_usable().await;
}

/// This process' resident memory (the node under test runs in it).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Messages committed while Redis is unreachable reach the recipient's open
/// session live once it is back, without the client asking: the nodes catch
/// up from storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_committed_during_a_redis_outage_arrive_live_after_it() {
    live_delivery_heals_after(Outage::Cut).await;
}

/// The same when the connection to Redis stalls without closing (a hung
/// server or a silently dead network path): the pub/sub probe notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_committed_while_redis_stalls_arrive_live_after_it() {
    live_delivery_heals_after(Outage::Stall).await;
}

/// A receiver's socket opens on a node that cannot reach PostgreSQL (it
/// cannot tell where the receiver's messages stand), while another node
/// keeps committing messages to them; then PostgreSQL is back. Everything
/// committed after the socket opened reaches it live, and nothing from
/// before: the node's late reading of where they stood must not count the
/// new messages as history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_opened_while_storage_is_away_gets_live_what_commits_after() {
    let db = Arc::new(TestDatabase::new(Backend::Postgres).await);
    let prefix = RedisPrefix::new().await;
    let redis = redis_url();
    let bus = [
        ("REDIS_URL", redis.as_str()),
        ("REDIS_PREFIX", prefix.0.as_str()),
    ];
    let healthy = TestApp::spawn_on(db.clone(), &bus).await;
    let proxy = Proxy::start(&host_port(&db.url)).await;
    let cut_url = db
        .url
        .replace(&host_port(&db.url), &format!("127.0.0.1:{}", proxy.port));
    let mut env = bus.to_vec();
    env.push(("DATABASE_URL", cut_url.as_str()));
    let cut_off = TestApp::spawn_on(db.clone(), &env).await;
    // Known to both nodes, so no storage is needed to connect.
    let (a, b) = (healthy.new_user().await, cut_off.new_user().await);
    healthy.send(&a, &b, "before").await;

    proxy.cut().await;
    let mut wb = WsClient::connect(&cut_off, &b.token).await;
    let mut sent = HashSet::new();
    for i in 0..5 {
        sent.insert(
            healthy
                .send(&a, &b, &format!("after {i}"))
                .await
                .id
                .to_string(),
        );
    }
    proxy.restore();

    // Within the two seconds live delivery promises, and then some.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut live = HashSet::new();
    while live.len() < sent.len() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(frame) = wb.next_within(left).await else {
            break;
        };
        if frame["type"] == "message" {
            live.insert(frame["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        live, sent,
        "live, exactly what committed after the socket opened"
    );
    wb.none_of_type_for("message", Duration::from_secs(1)).await;
}

/// The same, with the receiver's node also hearing Redis late (300 ms each
/// way), and messages committed all along: when the node at last reads
/// where the receiver stood, the newest of them are still on their way to
/// it. They are the receiver's to get live, not history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reading_never_takes_frames_still_on_their_way_for_history() {
    let db = Arc::new(TestDatabase::new(Backend::Postgres).await);
    let prefix = RedisPrefix::new().await;
    let redis = redis_url();
    let redis_proxy = Proxy::start(&host_port(&redis)).await;
    let slow_redis = format!("redis://127.0.0.1:{}", redis_proxy.port);
    let healthy = Arc::new(
        TestApp::spawn_on(
            db.clone(),
            &[
                ("REDIS_URL", redis.as_str()),
                ("REDIS_PREFIX", prefix.0.as_str()),
            ],
        )
        .await,
    );
    let pg_proxy = Proxy::start(&host_port(&db.url)).await;
    let cut_url = db
        .url
        .replace(&host_port(&db.url), &format!("127.0.0.1:{}", pg_proxy.port));
    let late = TestApp::spawn_on(
        db.clone(),
        &[
            ("DATABASE_URL", cut_url.as_str()),
            ("REDIS_URL", slow_redis.as_str()),
            ("REDIS_PREFIX", prefix.0.as_str()),
        ],
    )
    .await;
    let (a, b) = (healthy.new_user().await, late.new_user().await);
    healthy.send(&a, &b, "before").await;

    redis_proxy.delay(Duration::from_millis(300));
    pg_proxy.cut().await;
    let mut wb = WsClient::connect(&late, &b.token).await;
    // Sent every 50 ms from the socket's opening until well after
    // PostgreSQL is back, so some are in flight whenever the reading is.
    let sender = {
        let (healthy, a, b) = (healthy.clone(), a.clone(), b.clone());
        tokio::spawn(async move {
            let mut sent = HashSet::new();
            for i in 0..60 {
                let id = healthy.send(&a, &b, &format!("after {i}")).await.id;
                sent.insert(id.to_string());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            sent
        })
    };
    // The outage's length (the fault under test), while the sender keeps committing.
    tokio::time::sleep(Duration::from_millis(800)).await;
    pg_proxy.restore();
    let sent = sender.await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut live = HashSet::new();
    while live.len() < sent.len() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(frame) = wb.next_within(left).await else {
            break;
        };
        if frame["type"] == "message" {
            live.insert(frame["id"].as_str().unwrap().to_owned());
        }
    }
    let missing: Vec<&String> = sent.difference(&live).collect();
    assert!(missing.is_empty(), "never live: {missing:?}");
    assert_eq!(live, sent, "and nothing from before the socket opened");
}

/// A session joins the node before its socket opens, and when storage is
/// slow it also waits there for its subscription. An upgrade the client
/// abandons in the meantime (here with PostgreSQL and Redis both stalled,
/// the connection then reset) must leave nothing behind: no entry in the
/// node's sessions, no slot of the user's session limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_upgrades_leave_no_session_behind() {
    let redis_proxy = Proxy::start(&host_port(&redis_url())).await;
    let redis = format!("redis://127.0.0.1:{}", redis_proxy.port);
    let prefix = RedisPrefix::new().await;
    let (app, pg_proxy, _) = node_behind_a_proxy(&[
        ("MAX_SESSIONS_PER_USER", "2"),
        ("REDIS_URL", redis.as_str()),
        ("REDIS_PREFIX", prefix.0.as_str()),
    ])
    .await;
    let user = app.new_user().await;
    pg_proxy.pause();
    redis_proxy.pause();
    let mut abandoned = Vec::new();
    for _ in 0..2 {
        abandoned.push(WsClient::raw_upgrade(app.port, &user.token).await);
    }
    assert!(
        eventually(Duration::from_secs(3), || async {
            app.state.hub.has(user.id)
        })
        .await,
        "the sessions join, then wait for their subscription"
    );
    for tcp in abandoned {
        tcp.set_zero_linger().unwrap(); // a reset, not a close
    }
    assert!(
        eventually(Duration::from_secs(2), || async {
            !app.state.hub.has(user.id)
        })
        .await,
        "sessions left behind: {:?}",
        app.state.hub.sessions()
    );
    pg_proxy.resume();
    redis_proxy.resume();
    let mut first = WsClient::connect(&app, &user.token).await;
    let mut second = WsClient::connect(&app, &user.token).await;
    first.assert_usable().await;
    second.assert_usable().await;
}

#[derive(Clone, Copy)]
enum Outage {
    /// Connections dropped, new ones refused.
    Cut,
    /// Connections kept open, no byte moves.
    Stall,
}

async fn live_delivery_heals_after(outage: Outage) {
    let (cluster, proxy) = two_nodes_behind_a_redis_proxy().await;
    let [n0, n1] = [&cluster.nodes[0], &cluster.nodes[1]];
    let (a, b) = (n0.new_user().await, n0.new_user().await);
    let mut wa = WsClient::connect(n0, &a.token).await;
    let mut wb = WsClient::connect(n1, &b.token).await;
    wa.send(json!({"type": "message", "to": b.id, "content": "before"}))
        .await;
    wa.recv_type("ack").await;
    assert_eq!(wb.recv_type("message").await["content"], "before");

    match outage {
        Outage::Cut => proxy.cut().await,
        Outage::Stall => proxy.pause(),
    }
    let mut during = HashSet::new();
    for i in 0..6 {
        wa.send(json!({"type": "message", "to": b.id, "content": format!("during {i}"), "client_id": format!("d{i}")}))
            .await;
        during.insert(wa.recv_type("ack").await["id"].as_str().unwrap().to_owned());
    }
    assert!(
        eventually(Duration::from_secs(10), || async { !ready(n1).await }).await,
        "the node noticed the outage"
    );
    match outage {
        Outage::Cut => proxy.restore(),
        Outage::Stall => proxy.resume(),
    }
    assert!(
        eventually(Duration::from_secs(20), || async { ready(n1).await }).await,
        "the node is back on Redis"
    );
    let healthy = Instant::now();
    let mut got: HashMap<String, u32> = HashMap::new();
    while !during.iter().all(|id| got.contains_key(id)) {
        let left = Duration::from_secs(3).saturating_sub(healthy.elapsed());
        let frame = tokio::time::timeout(left, wb.recv_type("message"))
            .await
            .unwrap_or_else(|_| {
                panic!("only {got:?} of {during:?} arrived within 3 s of recovery")
            });
        assert!(frame["seq"].as_i64().is_some(), "{frame}");
        *got.entry(frame["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    // Caught up once: a late live copy is dropped by the node.
    wb.none_of_type_for("message", Duration::from_millis(1500))
        .await;
    assert!(got.values().all(|n| *n == 1), "{got:?}");
}

/// A node stopped with SIGTERM publishes what it committed before its bus
/// closes: sends in flight at the signal still reach the recipient live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_delivers_what_it_committed() {
    let cluster = Cluster::start(
        1,
        &[
            ("RATE_LIMIT_PER_SEC", "100000"),
            ("RATE_LIMIT_BURST", "100000"),
        ],
    )
    .await;
    let receiver_node = &cluster.nodes[0];
    let sender_node = NodeProcess::start(
        &cluster.db,
        &cluster.prefix,
        &[
            ("RATE_LIMIT_PER_SEC", "100000"),
            ("RATE_LIMIT_BURST", "100000"),
        ],
    )
    .await;
    let (a, b) = (
        receiver_node.new_user().await,
        receiver_node.new_user().await,
    );
    let mut wb = WsClient::connect(receiver_node, &b.token).await;
    wb.assert_usable().await;
    let mut wa = WsClient::connect_port(sender_node.port, &a.token).await;
    wa.assert_usable().await;
    for i in 0..60 {
        wa.send(json!({"type": "message", "to": b.id, "content": format!("last words {i}"), "client_id": format!("t{i}")}))
            .await;
    }
    // The signal comes right after the first commit, with the rest of the
    // sends still in flight (on a busy machine, a signal sent at once may
    // find nothing committed yet).
    wa.recv_type("ack").await;
    sender_node.terminate();

    let pool = sqlx::PgPool::connect(&cluster.db.url).await.unwrap();
    let mut stored: HashSet<String>;
    let mut live: HashSet<String> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Ok(frame)) = tokio::time::timeout(Duration::from_millis(200), async {
            Ok::<_, ()>(wb.recv().await)
        })
        .await
            && frame["type"] == "message"
        {
            live.insert(frame["id"].as_str().unwrap().to_owned());
        }
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM messages WHERE receiver_id = $1")
            .bind(b.id)
            .fetch_all(&pool)
            .await
            .unwrap();
        stored = ids.iter().map(Uuid::to_string).collect();
        if (!stored.is_empty() && stored.is_subset(&live)) || Instant::now() > deadline {
            break;
        }
    }
    assert!(
        !stored.is_empty(),
        "something was committed before the signal"
    );
    let missing: Vec<&String> = stored.difference(&live).collect();
    assert!(
        missing.is_empty(),
        "{} of {} committed messages never arrived live",
        missing.len(),
        stored.len()
    );
    pool.close().await;
}
