//! WebSocket floods and malformed frames against a real node, and the
//! scenario that runs every attack at once beside two honest users.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::{memory, own_node};
use crate::helpers::{
    Backend, NodeProcess, RedisPrefix, TestApp, TestDatabase, eventually, token_for,
};
use crate::ops::{sample, scrape_port};
use crate::wsclient::WsClient;

/// A user who asks for `sync` in a loop and never reads: each answer can
/// be megabytes (100 messages of 4,000 four-byte characters), so a queue
/// bounded in frames held hundreds of them. Now the queue is bounded in
/// bytes and a `sync` is answered only once the previous answer has left:
/// the node's memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_flood_that_never_reads_holds_no_memory() {
    let _turn = crate::helpers::HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, _) = own_node(&dir, &[]).await;
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let (ta, tb) = (token_for(a, "a@example.com"), token_for(b, "b@example.com"));
    let mut receiver = WsClient::connect_port(node.port, &tb).await;
    let mut sender = WsClient::connect_port(node.port, &ta).await;
    let heavy = "🙂".repeat(4000);
    for i in 0..100 {
        sender
            .send(
                json!({"type": "message", "to": b, "content": heavy, "client_id": format!("h{i}")}),
            )
            .await;
        sender.recv_type("ack").await;
    }
    for _ in 0..100 {
        receiver.recv_type("message").await;
    }
    let (before, _) = memory(node.child.id());

    let mut flood = WsClient::connect_port_with_small_buffer(node.port, &tb).await;
    let request = json!({"type": "sync", "limit": 100}).to_string();
    let started = std::time::Instant::now();
    let mut sent = 0;
    // Until the node stops reading (its answers cannot leave) or 2,000 asks.
    while sent < 2000 && started.elapsed() < Duration::from_secs(10) {
        match tokio::time::timeout(Duration::from_secs(2), flood.send_text(&request)).await {
            Ok(()) => sent += 1,
            Err(_) => break,
        }
    }
    // Time for the node to answer hundreds of them, had it queued them.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (after, peak) = memory(node.child.id());
    let grew = peak.saturating_sub(before);
    eprintln!(
        "{sent} sync requests in {:?}: rss {} -> {} MiB, peak {} MiB",
        started.elapsed(),
        before >> 20,
        after >> 20,
        peak >> 20
    );
    assert!(
        grew < 48 * 1024 * 1024,
        "{sent} sync requests grew the node by {} MiB (rss {} -> {} MiB)",
        grew / (1024 * 1024),
        before / (1024 * 1024),
        after / (1024 * 1024)
    );
    // The honest session is untouched.
    receiver.assert_usable().await;
}

/// A reader that stops reading while a sender floods it is cut as soon as
/// its queue overflows, well within SLOW_CONSUMER_TIMEOUT plus a second:
/// found too slow while a write is blocked, the write is abandoned at once
/// (it used to run out its own timeout, then wait a second more on a close
/// frame that could not fit, holding the connection the whole time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_cut_in_time() {
    let _turn = crate::helpers::HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, metrics) = own_node(&dir, &[("SLOW_CONSUMER_TIMEOUT", "5s")]).await;
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let (ta, tb) = (token_for(a, "a@example.com"), token_for(b, "b@example.com"));
    let mut reader = WsClient::connect_port_with_small_buffer(node.port, &tb).await;
    reader.assert_usable().await;
    let mut sender = WsClient::connect_port(node.port, &ta).await;
    sender
        .send(json!({"type": "message", "to": b, "content": "hello"}))
        .await;
    sender.recv_type("ack").await;

    let slow_cuts = || async move {
        let text = scrape_port(metrics).await;
        sample(
            &text,
            "ochat_disconnects_total",
            &["reason=\"slow_consumer\""],
        )
    };
    let cut_before = slow_cuts().await;
    let content = "f".repeat(3900);
    let started = std::time::Instant::now();
    let firehose = tokio::spawn(async move {
        // Pipelined, acks read as they come: as fast as the node commits.
        for i in 0..20_000 {
            sender
                .send(json!({"type": "message", "to": b, "content": content, "client_id": format!("f{i}")}))
                .await;
            if i % 64 == 63 {
                sender.recv_type("ack").await;
            }
        }
        sender
    });
    let cut = eventually(Duration::from_secs(20), || async {
        slow_cuts().await > cut_before
    })
    .await;
    let took = started.elapsed();
    firehose.abort();
    eprintln!("the reader was cut after {took:?}");
    assert!(cut, "the reader was never cut");
    // The kernel buffers fill within a few hundred milliseconds of the
    // flood; the cut follows the overflow at once.
    assert!(
        took <= Duration::from_millis(2500),
        "cut after {took:?}: the queue overflowed long before"
    );
    drop(reader);
}

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

/// A small deterministic generator (xorshift), seeded per run and printed,
/// so a failing run can be replayed with `OCHAT_FUZZ_SEED`.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// One malformed frame and the error code the protocol designs for it.
fn malformed_frame(rng: &mut Xorshift, peer: uuid::Uuid) -> (String, &'static str) {
    let wrong_values = [
        json!(5),
        json!(-1),
        json!(1.5),
        json!("text"),
        json!([1, 2]),
        json!({"nested": {}}),
        json!(18446744073709551616.0_f64),
    ];
    match rng.below(9) {
        // Not JSON at all (it cannot start a JSON value).
        0 => {
            let len = 1 + rng.below(200) as usize;
            let junk: String = (0..len).map(|_| (b'!' + rng.below(90) as u8) as char).collect();
            (format!("#{junk}"), "invalid_json")
        }
        // JSON, but not an object.
        1 => (
            rng.pick(&["7", "[]", "\"message\"", "null", "[{\"type\":\"ping\"}]"]).to_string(),
            "invalid_json",
        ),
        // An object without a type, or with a type that is not a string.
        2 => (json!({"content": "where to?"}).to_string(), "invalid_field"),
        3 => {
            let not_a_string = rng.pick(&wrong_values).clone();
            let not_a_string = match not_a_string {
                Value::String(_) => json!(42),
                other => other,
            };
            (json!({"type": not_a_string}).to_string(), "invalid_field")
        }
        // A type nobody knows.
        4 => (
            json!({"type": format!("dance{}", rng.below(1000))}).to_string(),
            "unknown_type",
        ),
        // Known types, fields of the wrong kind or out of range.
        5 => {
            let wrong = rng.pick(&wrong_values).clone();
            let frame = match rng.below(4) {
                0 => json!({"type": "message", "to": wrong, "content": "x"}),
                // (Any string is content: only other kinds are wrong.)
                1 => match wrong {
                    Value::String(_) => json!({"type": "message", "to": peer, "content": 42}),
                    wrong => json!({"type": "message", "to": peer, "content": wrong}),
                },
                2 => json!({"type": "typing", "to": peer, "is_typing": wrong}),
                _ => json!({"type": "mark_read", "message_id": wrong}),
            };
            (frame.to_string(), "invalid_field")
        }
        6 => (
            json!({"type": "sync", "limit": rng.pick(&[json!(-1), json!(1.5), json!(4294967296u64), json!("ten"), json!(18446744073709551616.0_f64)])})
                .to_string(),
            "invalid_field",
        ),
        // Numbers no parser should hold, and nesting past any sane depth.
        7 => (
            format!("{{\"type\":\"sync\",\"limit\":1e{}}}", 400 + rng.below(10_000)),
            "invalid_json",
        ),
        _ => {
            let depth = 200 + rng.below(20_000) as usize;
            (format!("{}{}", "[".repeat(depth), "]".repeat(depth)), "invalid_json")
        }
    }
}

/// Random malformed frames (wrong types, huge numbers, deep nesting, junk)
/// at a real socket: each gets the designed error, the socket stays open,
/// and a text frame that is not UTF-8 closes it with 1007.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_malformed_frames_get_their_errors_and_the_node_stays_up() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let seed = std::env::var("OCHAT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| uuid::Uuid::now_v7().as_u64_pair().1 | 1);
    eprintln!("malformed frames: OCHAT_FUZZ_SEED={seed}");
    let mut rng = Xorshift(seed);
    let mut ws = WsClient::connect(&app, &a.token).await;
    for i in 0..300 {
        let (frame, code) = malformed_frame(&mut rng, b.id);
        ws.send_text(&frame).await;
        let answer =
            tokio::time::timeout(Duration::from_secs(5), ws.recv_type_of(&["error", "pong"]))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "frame {i} (seed {seed}) got no answer: {}…",
                        frame.chars().take(120).collect::<String>()
                    )
                });
        assert_eq!(
            (answer["type"].as_str(), answer["code"].as_str()),
            (Some("error"), Some(code)),
            "frame {i} (seed {seed}): {}… → {answer}",
            frame.chars().take(120).collect::<String>()
        );
    }
    ws.assert_usable().await;
    assert_eq!(
        app.get("/messages/stats", &a.token).await.1["total_sent"],
        0
    );

    // A text frame that is not UTF-8 (sent raw: the client library would
    // refuse to build it).
    use futures_util::SinkExt;
    let raw = Frame::message(vec![0x7b, 0xff, 0xfe, 0x7d], OpCode::Data(Data::Text), true);
    ws.stream
        .send(tokio_tungstenite::tungstenite::Message::Frame(raw))
        .await
        .unwrap();
    let close = ws.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1007, "{close:?}");
    // The node is still up for everyone else.
    let mut other = WsClient::connect(&app, &b.token).await;
    other.assert_usable().await;
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
