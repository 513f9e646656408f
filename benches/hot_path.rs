//! Micro-benchmarks of the per-message work that needs no network: reading a
//! client frame, writing a server frame, the bus envelope, and fanning one
//! event out to a user's sessions.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use ochat::bus::{Delivery, Envelope, Order, SessionId};
use ochat::protocol::{ClientFrame, MessageFrame, ServerFrame};
use ochat::ws::handle::SessionHandle;
use ochat::ws::hub::Hub;
use tokio::sync::mpsc;
use uuid::Uuid;

fn frames(c: &mut Criterion) {
    let to = Uuid::now_v7();
    let text = format!(
        r#"{{"type":"message","to":"{to}","content":"Hello, world! How are you today?","client_id":"c-1234"}}"#
    );
    c.bench_function("parse client message frame", |b| {
        b.iter(|| ClientFrame::parse(black_box(&text)).unwrap())
    });

    let frame = ServerFrame::Message(MessageFrame {
        id: Uuid::now_v7(),
        from: Uuid::now_v7(),
        to: Some(to),
        conversation_id: None,
        content: "Hello, world! How are you today?".into(),
        timestamp: chrono::Utc::now(),
        seq: Some(42),
        reply_to: None,
        edited_at: None,
        deleted_at: None,
        attachments: Vec::new(),
    });
    c.bench_function("encode server message frame", |b| {
        b.iter(|| black_box(&frame).to_json())
    });

    let envelope = Envelope::new(&frame, Some(SessionId::new())).ordered(Order::Seq(42));
    c.bench_function("envelope encode", |b| {
        b.iter(|| black_box(&envelope).encode())
    });
    let wire = bytes::Bytes::from(envelope.encode());
    c.bench_function("envelope decode", |b| {
        b.iter(|| Envelope::decode(black_box(wire.clone())).unwrap())
    });
}

fn fan_out(c: &mut Criterion) {
    let hub = Hub::default();
    let user = Uuid::now_v7();
    let mut queues = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = mpsc::channel(1 << 20);
        hub.register(
            Arc::new(SessionHandle::new(SessionId::new(), user, tx, usize::MAX)),
            10,
            None,
        );
        queues.push(rx);
    }
    let frame = ServerFrame::Pong;
    c.bench_function("hub deliver to 3 sessions", |b| {
        b.iter(|| {
            hub.deliver(user, Envelope::new(&frame, None));
            for q in &mut queues {
                black_box(q.try_recv().unwrap());
            }
        })
    });
    // Numbered message frames: the cursor check on every delivery.
    hub.raise_floor(user, 0, true);
    let mut seq = 0;
    c.bench_function("hub deliver numbered message to 3 sessions", |b| {
        b.iter(|| {
            seq += 1;
            hub.deliver(user, Envelope::new(&frame, None).ordered(Order::Seq(seq)));
            for q in &mut queues {
                black_box(q.try_recv().unwrap());
            }
        })
    });
}

criterion_group!(benches, frames, fan_out);
criterion_main!(benches);
