//! WebSocket scenarios: throughput/latency (open loop), idle connections,
//! connection storm.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Common;
use crate::client::{Ws, connect, create_users, token, user_id};
use crate::procstat::{self, Usage};

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

fn epoch_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl From<&Histogram<u64>> for Percentiles {
    fn from(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Step {
    pub target_rate: u32,
    pub achieved_send_rate: f64,
    /// Messages sent (changes not included).
    pub sent: u64,
    /// Reactions and edits sent in their place (`--changes`).
    pub changes: u64,
    /// Acks for both.
    pub acked: u64,
    /// Message frames received (each message counts once per receiver
    /// it must reach).
    pub delivered: u64,
    pub delivered_ratio: f64,
    pub errors: u64,
    pub ack_ms: Percentiles,
    pub delivery_ms: Percentiles,
    pub nodes: Vec<Usage>,
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

/// Senders on the first node, receivers on the last: the Redis hop is always
/// in the path. Open loop: each message has an intended send time on a fixed
/// schedule and latency counts from it, so a stalled server cannot hide.
pub async fn throughput(
    common: &Common,
    rates: &[u32],
    pairs: usize,
    duration: Duration,
) -> anyhow::Result<Value> {
    let tag = format!("{}-{}", common.tag, Uuid::now_v7().simple());
    let senders: Vec<Uuid> = (0..pairs)
        .map(|i| user_id(&format!("{tag}-s"), i))
        .collect();
    let receivers: Vec<Uuid> = (0..pairs)
        .map(|i| user_id(&format!("{tag}-r"), i))
        .collect();
    create_users(common, &senders).await?;
    create_users(common, &receivers).await?;
    let send_url = common.urls.first().expect("at least one url").clone();
    let recv_url = common.urls.last().expect("at least one url").clone();

    let mut receiver_ws = Vec::new();
    let mut sender_ws = Vec::new();
    for i in 0..pairs {
        let source = (i % common.sources as usize) as u8 + 1;
        receiver_ws.push(connect(&recv_url, &token(&common.secret, receivers[i]), source).await?);
        sender_ws.push(connect(&send_url, &token(&common.secret, senders[i]), source).await?);
    }
    // Let presence and subscriptions settle before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut steps = Vec::new();
    let mut best = None;
    let dests: Vec<String> = receivers.iter().map(|r| format!(r#""to":"{r}""#)).collect();
    for &rate in rates {
        let (step, back_r, back_s) =
            run_step(common, rate, &dests, 1, receiver_ws, sender_ws, duration).await?;
        receiver_ws = back_r;
        sender_ws = back_s;
        eprintln!(
            "rate {rate}/s: sent {} delivered {:.4} ack p99 {:.2} ms delivery p50 {:.2} p99 {:.2} ms",
            step.sent,
            step.delivered_ratio,
            step.ack_ms.p99,
            step.delivery_ms.p50,
            step.delivery_ms.p99
        );
        let ok = step.delivered == step.sent
            && step.errors == 0
            && step.delivery_ms.p99 <= 50.0
            && step.achieved_send_rate >= rate as f64 * 0.97;
        if ok {
            best = Some(rate);
        }
        steps.push(step);
        if !ok {
            break;
        }
    }
    Ok(json!({
        "scenario": "throughput",
        "pairs": pairs,
        "duration_s": duration.as_secs_f64(),
        "best_rate_full_delivery_p99_le_50ms": best,
        "steps": steps,
    }))
}

/// One rate: sender `i` sends to `dests[i]` (a JSON `"to":...` or
/// `"conversation_id":...` pair); each message must reach `fanout` of the
/// receivers.
pub async fn run_step(
    common: &Common,
    rate: u32,
    dests: &[String],
    fanout: u64,
    receiver_ws: Vec<Ws>,
    sender_ws: Vec<Ws>,
    duration: Duration,
) -> anyhow::Result<(Step, Vec<Ws>, Vec<Ws>)> {
    let pairs = dests.len();
    let listeners = receiver_ws.len();
    let per_pair = rate as f64 / pairs as f64;
    let period = Duration::from_secs_f64(1.0 / per_pair);
    let count = (per_pair * duration.as_secs_f64()).round() as u64;
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let before: Vec<_> = common.pids.iter().map(|p| procstat::sample(*p)).collect();
    let started = Instant::now();

    let mut receiving = JoinSet::new();
    for (i, ws) in receiver_ws.into_iter().enumerate() {
        let (delivered, stop) = (delivered.clone(), stop.clone());
        receiving.spawn(async move { (i, receive(ws, delivered, stop).await) });
    }
    let mut sending = JoinSet::new();
    let t0 = Instant::now() + Duration::from_millis(50);
    let t0_epoch = epoch_micros() + 50_000;
    for (i, ws) in sender_ws.into_iter().enumerate() {
        let to = dests[i].clone();
        // Stagger senders so the aggregate rate is smooth.
        let offset = period.mul_f64(i as f64 / pairs as f64);
        let schedule = Schedule {
            step: rate,
            t0: t0 + offset,
            t0_epoch: t0_epoch + offset.as_micros() as i64,
            period,
            count,
            change_every: match common.changes {
                0 => 0,
                percent => (100 / u64::from(percent)).max(2),
            },
        };
        sending.spawn(async move { (i, send(ws, to, schedule).await) });
    }

    let mut senders_back: Vec<Option<Ws>> = (0..pairs).map(|_| None).collect();
    let (mut sent, mut changes, mut acked, mut errors) = (0, 0, 0, 0);
    let mut ack_h = histogram();
    while let Some(done) = sending.join_next().await {
        let (i, (ws, out)) = done?;
        senders_back[i] = Some(ws);
        sent += out.sent - out.changes;
        changes += out.changes;
        acked += out.acked;
        errors += out.errors;
        ack_h.add(out.ack_h)?;
    }
    let send_seconds = started.elapsed().as_secs_f64() - 0.05;
    let expected = sent * fanout;
    // Wait for stragglers, then stop the receivers.
    let grace = Instant::now() + Duration::from_secs(5);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    let mut receivers_back: Vec<Option<Ws>> = (0..listeners).map(|_| None).collect();
    let mut delivery_h = histogram();
    while let Some(done) = receiving.join_next().await {
        let (i, (ws, h)) = done?;
        receivers_back[i] = Some(ws);
        delivery_h.add(h)?;
    }
    let nodes = procstat::usage(&common.pids, &before, started.elapsed().as_secs_f64());
    let delivered = delivered.load(Ordering::Relaxed);
    let step = Step {
        target_rate: rate,
        achieved_send_rate: (sent + changes) as f64 / send_seconds,
        sent,
        changes,
        acked,
        delivered,
        delivered_ratio: if expected == 0 {
            0.0
        } else {
            delivered as f64 / expected as f64
        },
        errors,
        ack_ms: (&ack_h).into(),
        delivery_ms: (&delivery_h).into(),
        nodes,
    };
    Ok((
        step,
        receivers_back
            .into_iter()
            .map(|w| w.expect("returned"))
            .collect(),
        senders_back
            .into_iter()
            .map(|w| w.expect("returned"))
            .collect(),
    ))
}

/// When one sender's frames go out.
struct Schedule {
    /// Makes client ids unique per step.
    step: u32,
    t0: Instant,
    t0_epoch: i64,
    period: Duration,
    count: u64,
    /// Every this many frames, a change instead of a message (0: never).
    change_every: u64,
}

/// What one sender did in a step.
struct Sent {
    /// Frames sent, changes included.
    sent: u64,
    changes: u64,
    acked: u64,
    errors: u64,
    ack_h: Histogram<u64>,
}

/// Sends `count` frames on a fixed schedule while reading acks: messages,
/// and with `change_every` a reaction or an edit of the latest message
/// acked in their place.
async fn send(ws: Ws, to: String, s: Schedule) -> (Ws, Sent) {
    let (mut sink, mut stream) = ws.split();
    let period_us = s.period.as_micros() as i64;
    let latest: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let step = s.step;
    let writer = async {
        let mut changes = 0;
        for k in 0..s.count {
            let intended = s.t0 + s.period.mul_f64(k as f64);
            tokio::time::sleep_until(intended.into()).await;
            let stamp = s.t0_epoch + period_us * k as i64;
            let target = (s.change_every > 0 && k % s.change_every == s.change_every - 1)
                .then(|| latest.lock().expect("not poisoned").clone())
                .flatten();
            // Client ids are unique per step: a sender reused with the
            // same id would (rightly) be answered as a duplicate.
            let is_change = target.is_some();
            let frame = match target {
                Some(id) if changes % 2 == 0 => format!(
                    r#"{{"type":"react","message_id":"{id}","emoji":"👍","client_id":"{step}-{k}"}}"#
                ),
                Some(id) => format!(
                    r#"{{"type":"edit","message_id":"{id}","content":"edited {stamp}","client_id":"{step}-{k}"}}"#
                ),
                None => format!(
                    r#"{{"type":"message",{to},"content":"{stamp}","client_id":"{step}-{k}"}}"#
                ),
            };
            if is_change {
                changes += 1;
            }
            if sink.send(Message::Text(frame.into())).await.is_err() {
                return (k, changes);
            }
        }
        (s.count, changes)
    };
    let reader = async {
        let (mut acked, mut errors) = (0u64, 0u64);
        let mut h = histogram();
        while acked + errors < s.count {
            let Ok(Some(Ok(message))) =
                tokio::time::timeout(Duration::from_secs(10), stream.next()).await
            else {
                break;
            };
            let Message::Text(text) = message else {
                continue;
            };
            let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
                continue;
            };
            match frame.kind.as_str() {
                "ack" => {
                    acked += 1;
                    if let Some(id) = frame.id {
                        *latest.lock().expect("not poisoned") = Some(id);
                    }
                    let k = frame
                        .client_id
                        .as_deref()
                        .and_then(|c| c.rsplit('-').next()?.parse::<u64>().ok());
                    if let Some(k) = k {
                        let intended = s.t0_epoch + period_us * k as i64;
                        let _ = h.record((epoch_micros() - intended).max(1) as u64);
                    }
                }
                "error" => {
                    errors += 1;
                    eprintln!("error frame: {text}");
                }
                _ => {}
            }
        }
        (acked, errors, h)
    };
    let ((sent, changes), (acked, errors, ack_h)) = tokio::join!(writer, reader);
    let ws = sink.reunite(stream).expect("halves of one socket");
    (
        ws,
        Sent {
            sent,
            changes,
            acked,
            errors,
            ack_h,
        },
    )
}

/// Counts message frames and their latency from the intended send time.
async fn receive(
    mut ws: Ws,
    delivered: Arc<AtomicU64>,
    stop: CancellationToken,
) -> (Ws, Histogram<u64>) {
    let mut h = histogram();
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            m = ws.next() => m,
        };
        let Some(Ok(Message::Text(text))) = message else {
            if message.is_none() {
                break;
            }
            continue;
        };
        let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
            continue;
        };
        if frame.kind == "message" {
            if let Some(stamp) = frame.content.and_then(|c| c.parse::<i64>().ok()) {
                let _ = h.record((epoch_micros() - stamp).max(1) as u64);
            }
            delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
    (ws, h)
}

/// Opens `total` connections with `concurrency` in flight; returns them and
/// the connect latencies.
async fn open_many(
    common: &Common,
    url: &str,
    tag: &str,
    total: usize,
    concurrency: usize,
    mut on_progress: impl FnMut(usize),
) -> anyhow::Result<(Vec<Ws>, Histogram<u64>, usize)> {
    let mut open = Vec::with_capacity(total);
    let mut h = histogram();
    let mut failures = 0;
    let mut next = 0;
    let mut inflight = JoinSet::new();
    while open.len() + failures < total {
        while next < total && inflight.len() < concurrency {
            let (url, secret) = (url.to_owned(), common.secret.clone());
            let user = user_id(tag, next);
            let source = (next % common.sources as usize) as u8 + 1;
            inflight.spawn(async move {
                let started = Instant::now();
                let ws = connect(&url, &token(&secret, user), source).await;
                (ws, started.elapsed())
            });
            next += 1;
        }
        let Some(done) = inflight.join_next().await else {
            break;
        };
        match done? {
            (Ok(ws), took) => {
                let _ = h.record(took.as_micros().max(1) as u64);
                open.push(ws);
                on_progress(open.len());
            }
            (Err(e), _) => {
                failures += 1;
                if failures <= 5 {
                    eprintln!("connect failed: {e:#}");
                }
            }
        }
    }
    Ok((open, h, failures))
}

pub async fn idle(
    common: &Common,
    total: usize,
    concurrency: usize,
    hold: Duration,
) -> anyhow::Result<Value> {
    let tag = format!("{}-idle-{}", common.tag, Uuid::now_v7().simple());
    let url = common.urls[0].clone();
    let pid = common.pids.first().copied();
    let baseline = pid.and_then(procstat::sample);
    let mut at_1k = None;
    let (first, _, failed_1k) =
        open_many(common, &url, &tag, total.min(1000), concurrency, |_| {}).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(pid) = pid {
        at_1k = procstat::sample(pid);
    }
    let rest_tag = format!("{tag}-more");
    let (more, h, failed) = open_many(
        common,
        &url,
        &rest_tag,
        total.saturating_sub(1000),
        concurrency,
        |n| {
            if n % 2000 == 0 {
                eprintln!("{} connections open", n + 1000);
            }
        },
    )
    .await?;
    let held = first.len() + more.len();
    tokio::time::sleep(hold).await;
    let at_max = pid.and_then(procstat::sample);
    let slope = match (at_1k, at_max) {
        (Some(a), Some(b)) if held > first.len() => {
            Some((b.rss_bytes as f64 - a.rss_bytes as f64) / (held - first.len()) as f64)
        }
        _ => None,
    };
    eprintln!(
        "held {held} idle connections; RSS per connection {:?} bytes",
        slope.map(|s| s.round())
    );
    drop(first);
    drop(more);
    Ok(json!({
        "scenario": "idle",
        "requested": total,
        "held": held,
        "failed": failed + failed_1k,
        "node_rss_mib": {
            "baseline": baseline.map(|s| s.rss_bytes as f64 / 1048576.0),
            "at_1k": at_1k.map(|s| s.rss_bytes as f64 / 1048576.0),
            "at_max": at_max.map(|s| s.rss_bytes as f64 / 1048576.0),
        },
        "rss_bytes_per_connection": slope,
        "connect_ms": Percentiles::from(&h),
    }))
}

pub async fn connect_storm(
    common: &Common,
    total: usize,
    concurrency: usize,
    after_disconnect: usize,
) -> anyhow::Result<Value> {
    let url = common.urls[0].clone();
    let mut closed = 0;
    if after_disconnect > 0 {
        let tag = format!("{}-leaving-{}", common.tag, Uuid::now_v7().simple());
        let (leaving, _, failed) =
            open_many(common, &url, &tag, after_disconnect, concurrency, |_| {}).await?;
        closed = leaving.len();
        eprintln!("{closed} sessions open ({failed} failed); closing them all");
        // Dropped sockets close their TCP connections at once (no close
        // handshake), as a failed client machine or load balancer would.
        drop(leaving);
    }
    // Deterministic users: a second storm with the same --tag against
    // restarted nodes is the "everyone reconnects after a restart" case.
    let tag = format!("{}-storm", common.tag);
    let before: Vec<_> = common.pids.iter().map(|p| procstat::sample(*p)).collect();
    let started = Instant::now();
    let (open, h, failed) = open_many(common, &url, &tag, total, concurrency, |_| {}).await?;
    let seconds = started.elapsed().as_secs_f64();
    let nodes = procstat::usage(&common.pids, &before, seconds);
    let rate = open.len() as f64 / seconds;
    eprintln!(
        "{} connections in {seconds:.2} s: {rate:.0} connects/s",
        open.len()
    );
    drop(open);
    Ok(json!({
        "scenario": "connect",
        "connections": total,
        "after_disconnect": closed,
        "opened": h.len(),
        "failed": failed,
        "seconds": seconds,
        "connects_per_second": rate,
        "connect_ms": Percentiles::from(&h),
        "nodes": nodes,
    }))
}
