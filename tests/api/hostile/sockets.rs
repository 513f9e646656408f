//! WebSocket floods and malformed frames against a real node.

use std::time::Duration;

use serde_json::{Value, json};

use super::{memory, own_node};
use crate::helpers::wsclient::WsClient;
use crate::helpers::{Backend, TestApp, eventually, token_for};
use crate::ops::{sample, scrape_port};

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
    // A window in which memory must not grow, not a wait for an event.
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

/// A client that keeps sending past its refusals is not read until its
/// budget has room again: refusing a frame still costs reading and parsing
/// it, so a flood answered frame by frame took as much of the node as the
/// client cared to send. Here 2,000 messages pipelined on a spent budget
/// (each names a `client_id`, so each refusal is answered): the node
/// answers a few dozen, then reads on at the budget's pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_its_refusals_is_left_unread() {
    let app = TestApp::with_tight_budget(Backend::Sqlite, 4).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let mut wa = WsClient::connect(&app, &a.token).await;
    for i in 0..2000 {
        wa.send(json!({"type": "message", "to": b.id, "content": "flood", "client_id": format!("f{i}")}))
            .await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2500);
    let (mut refused, mut acked_after_refusals) = (0, 0);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(frame) = wa.next_within(left).await else {
            break;
        };
        match (frame["type"].as_str(), frame["code"].as_str()) {
            (Some("ack"), _) if refused > 0 => acked_after_refusals += 1,
            (Some("ack"), _) => {}
            (Some("error"), Some("rate_limited")) => {
                assert!(frame["client_id"].is_string(), "{frame}");
                refused += 1;
            }
            _ => panic!("unexpected {frame}"),
        }
    }
    assert!(
        (64..400).contains(&refused),
        "refused (read) in 2.5 s: {refused} of 2,000"
    );
    assert!(
        acked_after_refusals >= 1,
        "the socket is read on at its budget's pace"
    );
}
