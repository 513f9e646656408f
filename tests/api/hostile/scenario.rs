//! The scenario that runs every attack at once, one hostile user on ten
//! sockets plus anonymous peers, beside two honest users: in the suite
//! (bounded memory, every honest message acked and delivered) and as a
//! benchmark (their ack times against a quiet node).

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::memory;
use crate::helpers::wsclient::WsClient;
use crate::helpers::{Backend, NodeProcess, RedisPrefix, TestDatabase, token_for};

/// What the honest users saw in a scenario run.
pub struct HonestView {
    /// Send-to-ack times of every honest message.
    pub acks: Vec<Duration>,
    /// The node's peak resident memory during the run.
    pub peak_rss: u64,
    pub rss_before: u64,
}

/// Two honest users chat (`messages` each way, 10 a second) on a node of
/// PostgreSQL and Redis with its default limits. With `hostile`, one user
/// meanwhile holds ten sockets and does everything at once: sync floods it
/// never reads, mark_read, typing, ping and invalid-frame floods, a REST
/// flood, half-open connections and made-up methods. Every honest message
/// must be acked and delivered live either way.
pub async fn honest_chat_beside(hostile: bool, messages: usize) -> HonestView {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDatabase::new(Backend::Postgres).await;
    let prefix = RedisPrefix::new().await;
    let node = NodeProcess::start(&db, &prefix, &[]).await;
    let port = node.port;
    let pid = node.child.id();
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let (a, b, h) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    let (ta, tb, th) = (
        token_for(a, "a@example.com"),
        token_for(b, "b@example.com"),
        token_for(h, "h@example.com"),
    );
    let mut wa = WsClient::connect_port(port, &ta).await;
    let mut wb = WsClient::connect_port(port, &tb).await;
    // The hostile user has talked with both (so typing reaches them) and
    // holds messages to sync and mark read.
    let mut wh = WsClient::connect_port(port, &th).await;
    for (ws, to) in [(&mut wa, h), (&mut wb, h)] {
        ws.send(json!({"type": "message", "to": to, "content": "hello, stranger"}))
            .await;
        ws.recv_type("ack").await;
    }
    let heavy = "🙂".repeat(4000);
    let mut received = None;
    for i in 0..50 {
        wh.send(
            json!({"type": "message", "to": a, "content": heavy, "client_id": format!("x{i}")}),
        )
        .await;
        let ack = wh.recv_type("ack").await;
        received.get_or_insert(ack["id"].clone());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The honest user reads what arrived so far.
    while wa.next_within(Duration::from_millis(300)).await.is_some() {}
    let rss_before = memory(pid).0;

    let stop = tokio_util::sync::CancellationToken::new();
    let mut attacks = tokio::task::JoinSet::new();
    // The attacker runs on a runtime of its own, as it would on machines of
    // its own: its tasks share the cores with the node, but never hold up
    // the honest clients' event loop, whose timings are what is measured.
    let attacker = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    if hostile {
        let mark =
            json!({"type": "mark_read", "message_id": received.clone().unwrap()}).to_string();
        let floods: Vec<String> = vec![
            json!({"type": "sync", "limit": 100}).to_string(),
            json!({"type": "sync", "limit": 100}).to_string(),
            json!({"type": "sync", "limit": 100}).to_string(),
            json!({"type": "sync", "limit": 100}).to_string(),
            mark.clone(),
            mark,
            json!({"type": "typing", "to": a, "is_typing": true}).to_string(),
            json!({"type": "ping"}).to_string(),
            "{not json".to_owned(),
        ];
        drop(wh);
        for frame in floods {
            let (stop, th) = (stop.clone(), th.clone());
            attacks.spawn_on(
                async move {
                    while !stop.is_cancelled() {
                        let Some(mut ws) =
                            WsClient::try_connect_port_with_small_buffer(port, &th).await
                        else {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        };
                        // Never reads: a blocked send is the node pushing back;
                        // a cut connection (a slow consumer) comes back.
                        while !stop.is_cancelled() {
                            match tokio::time::timeout(
                                Duration::from_millis(200),
                                ws.try_send_text(&frame),
                            )
                            .await
                            {
                                Ok(true) => {}
                                Ok(false) => break,
                                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                            }
                        }
                    }
                },
                attacker.handle(),
            );
        }
        // The tenth socket: a huge frame, over and over (1009 each time).
        {
            let (stop, th) = (stop.clone(), th.clone());
            attacks.spawn_on(
                async move {
                    let big = "x".repeat(70 * 1024);
                    while !stop.is_cancelled() {
                        if let Ok(mut ws) = WsClient::try_connect_port(port, &th, None).await {
                            let _ = tokio::time::timeout(
                                Duration::from_millis(500),
                                ws.try_send_text(&big),
                            )
                            .await;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
                attacker.handle(),
            );
        }
        // REST floods, with a token and without.
        for path in [
            "/messages/stats",
            "/messages/conversations",
            "/openapi.json",
        ] {
            let (stop, th, api) = (stop.clone(), th.clone(), api.clone());
            attacks.spawn_on(
                async move {
                    let http = reqwest::Client::new();
                    while !stop.is_cancelled() {
                        let _ = http
                            .get(format!("{api}{path}"))
                            .bearer_auth(&th)
                            .send()
                            .await;
                    }
                },
                attacker.handle(),
            );
        }
        // Made-up methods, anonymous.
        {
            let (stop, api) = (stop.clone(), api.clone());
            attacks.spawn_on(
                async move {
                    let http = reqwest::Client::new();
                    let mut i = 0u64;
                    while !stop.is_cancelled() {
                        i += 1;
                        let method =
                            reqwest::Method::from_bytes(format!("M{i:X}").as_bytes()).unwrap();
                        let _ = http.request(method, format!("{api}/x{i}")).send().await;
                    }
                },
                attacker.handle(),
            );
        }
        // Half-open connections: headers never finished, topped up.
        {
            let stop = stop.clone();
            attacks.spawn_on(
                async move {
                    let mut held = std::collections::VecDeque::new();
                    while !stop.is_cancelled() {
                        if held.len() >= 300 {
                            // The oldest have been dropped by the header timeout.
                            held.drain(..50);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        if let Ok(mut tcp) =
                            tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                        {
                            let _ = tcp
                                .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
                                .await;
                            held.push_back(tcp);
                        }
                    }
                },
                attacker.handle(),
            );
        }
        // Lets the attacks run before the honest users start.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // The honest users chat: each sends `messages`, 10 a second, and must
    // receive every one of the other's, live.
    let mut acks = Vec::new();
    let mut seen_by_b = std::collections::HashSet::new();
    let mut seen_by_a = std::collections::HashSet::new();
    let mut sent_to_b = Vec::new();
    let mut sent_to_a = Vec::new();
    let mut peak_rss = rss_before;
    for i in 0..messages {
        let sides = [
            (&mut wa, b, &mut sent_to_b, &mut seen_by_a),
            (&mut wb, a, &mut sent_to_a, &mut seen_by_b),
        ];
        for (from, to, sent, seen) in sides {
            let started = std::time::Instant::now();
            from.send(json!({"type": "message", "to": to, "content": format!("honest {i}"), "client_id": format!("m{i}")}))
                .await;
            // Messages that arrive before the ack are counted too.
            let ack = loop {
                let frame = from.recv().await;
                match frame["type"].as_str() {
                    Some("ack") | Some("error") => break frame,
                    Some("message") => {
                        seen.insert(frame["id"].clone());
                    }
                    _ => {}
                }
            };
            assert_eq!(ack["type"], "ack", "an honest message was refused: {ack}");
            acks.push(started.elapsed());
            sent.push(ack["id"].clone());
        }
        // Whatever arrived meanwhile (messages, and typing from the
        // hostile user) is read as it comes.
        for (ws, seen) in [(&mut wa, &mut seen_by_a), (&mut wb, &mut seen_by_b)] {
            while let Some(frame) = ws.next_within(Duration::from_millis(1)).await {
                if frame["type"] == "message" {
                    seen.insert(frame["id"].clone());
                }
            }
        }
        peak_rss = peak_rss.max(memory(pid).0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (ws, seen, sent) in [
        (&mut wa, &mut seen_by_a, &sent_to_a),
        (&mut wb, &mut seen_by_b, &sent_to_b),
    ] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sent.iter().any(|id| !seen.contains(id)) && std::time::Instant::now() < deadline {
            if let Some(frame) = ws.next_within(Duration::from_millis(200)).await
                && frame["type"] == "message"
            {
                seen.insert(frame["id"].clone());
            }
        }
        let missing = sent.iter().filter(|id| !seen.contains(*id)).count();
        assert_eq!(missing, 0, "honest messages never delivered live");
    }
    stop.cancel();
    attacks.shutdown().await;
    attacker.shutdown_background();
    let ready = reqwest::get(format!("{api}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "the node stays up and ready");
    peak_rss = peak_rss.max(memory(pid).0);
    drop(node);
    HonestView {
        acks,
        peak_rss,
        rss_before,
    }
}

/// How much memory the node may use above its start while under attack.
const HOSTILE_RSS_BOUND: u64 = 128 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_user_on_ten_sockets_hurts_no_honest_user() {
    let _turn = crate::helpers::HEAVY.lock().await;
    let view = honest_chat_beside(true, 100).await;
    let mut acks = view.acks.clone();
    acks.sort();
    let p99 = acks[acks.len() * 99 / 100];
    eprintln!(
        "honest acks: {} (p50 {:?}, p99 {:?}); node rss {} MiB before, peak {} MiB",
        acks.len(),
        acks[acks.len() / 2],
        p99,
        view.rss_before >> 20,
        view.peak_rss >> 20
    );
    assert!(
        view.peak_rss < HOSTILE_RSS_BOUND,
        "the node reached {} MiB under attack",
        view.peak_rss >> 20
    );
}

/// The benchmark of the hostile scenario: the honest users' send-to-ack
/// times on a quiet node and beside the hostile user, `OCHAT_BENCH_MESSAGES`
/// messages each way (default 300). Not part of the suite; run with
/// `OCHAT_NODE_BIN=target/release/ochat cargo test --test api
/// hostile_benchmark -- --ignored --nocapture` (docs/benchmarks.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn hostile_benchmark() {
    let messages = std::env::var("OCHAT_BENCH_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    for hostile in [false, true, false, true] {
        let view = honest_chat_beside(hostile, messages).await;
        let mut acks = view.acks;
        acks.sort();
        let at = |q: usize| acks[(acks.len() * q / 100).min(acks.len() - 1)];
        eprintln!(
            "{}: {} honest acks, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; node rss {} -> peak {} MiB",
            if hostile {
                "beside a hostile user"
            } else {
                "quiet"
            },
            acks.len(),
            at(50).as_secs_f64() * 1e3,
            at(99).as_secs_f64() * 1e3,
            acks[acks.len() - 1].as_secs_f64() * 1e3,
            view.rss_before >> 20,
            view.peak_rss >> 20
        );
    }
}
