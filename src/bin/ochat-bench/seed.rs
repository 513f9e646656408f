//! Fills storage with `messages` messages among `users` users, through the
//! store (so the data has exactly the shape the server writes).

use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use ochat::store::{NewMessage, Target};

use crate::client::user_id;

/// The seed's user ids (tag `seed`), shared with the `rest` scenario.
pub fn seeded_user(index: usize) -> Uuid {
    user_id("seed", index)
}

/// The `j`-th partner of user `i`: a fixed set per user, so conversations
/// grow long as they do in life.
pub fn partner(i: usize, j: usize, users: usize) -> usize {
    let p = (i + 1 + j * 7919) % users;
    if p == i { (p + 1) % users } else { p }
}

pub const VOCABULARY: &[&str] = &[
    "hello", "lunch", "meeting", "tomorrow", "project", "deadline", "coffee", "weekend", "report",
    "budget", "travel", "flight", "hotel", "dinner", "movie", "music", "football", "weather",
    "birthday", "party", "review", "release", "deploy", "server", "database", "invoice",
    "contract", "holiday", "doctor", "family", "garden", "recipe", "library", "concert", "ticket",
    "train", "office", "morning", "evening", "question", "answer", "thanks", "sorry", "great",
    "perfect", "tonight", "monday", "friday", "photo", "address",
];

/// A word in one message of a thousand, so search can be measured for a
/// rare word as well as for the vocabulary's common ones (each of those is
/// in about one message of six).
pub const RARE_WORD: &str = "aurora";

fn sentence(n: usize) -> String {
    let words = 4 + n % 9;
    let mut text = (0..words)
        .map(|w| VOCABULARY[(n.wrapping_mul(31).wrapping_add(w * 17)) % VOCABULARY.len()])
        .collect::<Vec<_>>()
        .join(" ");
    if n.is_multiple_of(1000) {
        text.push(' ');
        text.push_str(RARE_WORD);
    }
    text
}

pub async fn seed(
    database_url: &str,
    users: usize,
    messages: usize,
    partners: usize,
) -> anyhow::Result<Value> {
    let config =
        ochat::Config::from_vars([("DATABASE_URL", database_url), ("DB_MAX_CONNECTIONS", "8")])?;
    let store = ochat::store::open(&config).await?;
    let started = Instant::now();
    for i in 0..users {
        let id = seeded_user(i);
        store
            .upsert_user(id, &format!("{}@seed.invalid", id.simple()))
            .await?;
    }
    eprintln!("{users} users in {:.1} s", started.elapsed().as_secs_f64());

    // Spread messages over the last 30 days, oldest first.
    let now = Utc::now().trunc_subsecs(6);
    let span = Duration::from_secs(30 * 24 * 3600);
    let step = span.as_micros() as i64 / messages.max(1) as i64;
    let batch_size = 2000;
    let mut written = 0;
    let mut m = 0;
    while m < messages {
        let end = (m + batch_size).min(messages);
        let batch: Vec<NewMessage> = (m..end)
            .map(|k| {
                let sender = k % users;
                let receiver = partner(sender, (k / users) % partners, users);
                let at = now - chrono::Duration::microseconds(step * (messages - k) as i64);
                let ts = uuid::Timestamp::from_unix(
                    uuid::NoContext,
                    at.timestamp() as u64,
                    at.timestamp_subsec_nanos(),
                );
                NewMessage {
                    id: Uuid::new_v7(ts),
                    sender_id: seeded_user(sender),
                    to: Target::User(seeded_user(receiver)),
                    content: sentence(k),
                    client_id: None,
                    created_at: at,
                    reply_to: None,
                    attachments: Vec::new(),
                }
            })
            .collect();
        store.insert_messages(&batch).await?;
        written += batch.len();
        m = end;
        if written % 100_000 == 0 {
            eprintln!(
                "{written} messages ({:.0}/s)",
                written as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({"scenario": "seed", "users": users, "messages": written, "seconds": seconds}))
}
