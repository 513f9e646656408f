//! The WebSocket protocol end to end: real clients, a real node on a random
//! port, both storage backends.
//!
//! - [`sending`]: the seed's wire format, acks, repeated client ids, every
//!   device getting every message, and a storage failure never acked.
//! - [`limits`]: bad frames with their codes, the frame size, the rate
//!   limit and the per-user session cap.
//! - [`events`]: what the server sends on its own: presence, typing, read
//!   receipts, and `sync` after a reconnect.
//! - [`connection`]: the connection's life: the upgrade's token and origin,
//!   an expiring token, slow consumers and dead peers.
//! - [`protocol`]: the protocol document against the README's examples.
//! - [`storms`]: many users arriving and leaving at once.

mod connection;
mod events;
mod limits;
mod protocol;
mod sending;
mod storms;

use crate::helpers::{TestApp, TestUser};

pub(super) async fn two_users(app: &TestApp) -> (TestUser, TestUser) {
    (app.new_user().await, app.new_user().await)
}

pub(super) async fn stored_count(app: &TestApp, user: &TestUser) -> i64 {
    let (_, stats) = app.get("/messages/stats", &user.token).await;
    stats["total_sent"].as_i64().unwrap()
}
