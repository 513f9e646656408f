//! REST reads on seeded data: conversation page, conversation list, search
//! and stats, each with its own latency distribution.

use std::time::Instant;

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::Common;
use crate::client::token;
use crate::load::Percentiles;
use crate::seed::{RARE_WORD, VOCABULARY, partner, seeded_user};

pub async fn rest(
    common: &Common,
    users: usize,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<Value> {
    let http = reqwest::Client::new();
    let base = format!("{}/api/v1", common.urls[0].trim_end_matches('/'));
    let mut report = serde_json::Map::new();
    for kind in [
        "conversation",
        "conversations",
        "search",
        "search_rare",
        "stats",
    ] {
        let started = Instant::now();
        let results: Vec<anyhow::Result<u64>> = futures_util::stream::iter(0..requests)
            .map(|n| {
                let (http, base) = (http.clone(), base.clone());
                let user = rand::random_range(0..users);
                let me = seeded_user(user);
                let token = token(&common.secret, me);
                let path = match kind {
                    "conversation" => format!(
                        "/messages/conversation?with_user={}&limit=50",
                        seeded_user(partner(user, 0, users))
                    ),
                    "conversations" => "/messages/conversations?limit=50".to_owned(),
                    "search" => format!(
                        "/messages/search?query={}&limit=20",
                        VOCABULARY[n % VOCABULARY.len()]
                    ),
                    "search_rare" => format!("/messages/search?query={RARE_WORD}&limit=20"),
                    _ => "/messages/stats".to_owned(),
                };
                async move {
                    let started = Instant::now();
                    let response = http
                        .get(format!("{base}{path}"))
                        .bearer_auth(token)
                        .send()
                        .await?;
                    let status = response.status();
                    response.bytes().await?;
                    anyhow::ensure!(status.is_success(), "{path}: {status}");
                    Ok(started.elapsed().as_micros().max(1) as u64)
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let mut failures = 0;
        for result in results {
            match result {
                Ok(us) => h.record(us)?,
                Err(e) => {
                    failures += 1;
                    if failures <= 3 {
                        eprintln!("{e:#}");
                    }
                }
            }
        }
        let p = Percentiles::from(&h);
        let p95 = h.value_at_quantile(0.95) as f64 / 1000.0;
        eprintln!("{kind}: p50 {:.2} p95 {p95:.2} p99 {:.2} ms", p.p50, p.p99);
        report.insert(
            kind.to_owned(),
            json!({"latency_ms": p, "p95_ms": p95, "failures": failures,
                   "requests_per_second": requests as f64 / started.elapsed().as_secs_f64()}),
        );
    }
    Ok(
        json!({"scenario": "rest", "users": users, "requests_per_kind": requests, "concurrency": concurrency, "results": report}),
    )
}
