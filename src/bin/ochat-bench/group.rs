//! Group fan-out: one group whose members are spread over every node. A few
//! members send to the group on a fixed schedule; every other member must
//! receive every message. Latency counts from each message's intended send
//! time, as in the throughput scenario.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::Common;
use crate::client::{connect, create_users, token, user_id};
use crate::load::run_step;

pub async fn group(
    common: &Common,
    members: usize,
    senders: usize,
    rates: &[u32],
    duration: Duration,
) -> anyhow::Result<Value> {
    if senders == 0 || senders >= members {
        bail!("--senders must be at least 1 and fewer than --members");
    }
    let tag = format!("{}-group-{}", common.tag, Uuid::now_v7().simple());
    let users: Vec<Uuid> = (0..members).map(|i| user_id(&tag, i)).collect();
    create_users(common, &users).await?;
    let group = create_group(common, users[0], &users[1..]).await?;

    // Member i on node i mod n: every node fans out to its own members.
    let mut sender_ws = Vec::new();
    let mut receiver_ws = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let url = &common.urls[i % common.urls.len()];
        let source = (i % common.sources as usize) as u8 + 1;
        let ws = connect(url, &token(&common.secret, *user), source).await?;
        if i < senders {
            sender_ws.push(ws);
        } else {
            receiver_ws.push(ws);
        }
    }
    // Let subscriptions and presence settle before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let dest = format!(r#""conversation_id":"{group}""#);
    let dests = vec![dest; senders];
    let fanout = (members - senders) as u64;
    let mut steps = Vec::new();
    let mut best = None;
    for &rate in rates {
        let (step, back_r, back_s) = run_step(
            common,
            rate,
            &dests,
            fanout,
            receiver_ws,
            sender_ws,
            duration,
        )
        .await?;
        receiver_ws = back_r;
        sender_ws = back_s;
        eprintln!(
            "{members} members, {rate} msgs/s: sent {} delivered {:.4} of {} delivery p50 {:.2} p99 {:.2} ms",
            step.sent,
            step.delivered_ratio,
            step.sent * fanout,
            step.delivery_ms.p50,
            step.delivery_ms.p99
        );
        let ok = step.delivered == step.sent * fanout
            && step.errors == 0
            && step.delivery_ms.p99 <= 100.0
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
        "scenario": "group",
        "members": members,
        "senders": senders,
        "nodes": common.urls.len(),
        "duration_s": duration.as_secs_f64(),
        "best_rate_full_delivery_p99_le_100ms": best,
        "steps": steps,
    }))
}

/// Creates the group through the REST API, as an app would.
async fn create_group(common: &Common, owner: Uuid, others: &[Uuid]) -> anyhow::Result<Uuid> {
    let base = common.urls[0].trim_end_matches('/');
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/conversations"))
        .bearer_auth(token(&common.secret, owner))
        .json(&json!({"title": "bench", "member_ids": others}))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("creating the group: {status} {body}");
    }
    body["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .context("the group's id")
}
