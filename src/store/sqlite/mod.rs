//! The embedded default store: one SQLite file in WAL mode.
//!
//! Writers take the database write lock up front (`BEGIN IMMEDIATE`), which
//! plays the part of Postgres' row locks: writes are serialised, so sequence
//! numbers commit in the order they are handed out.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use super::*;

macro_rules! message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type, \
         m.is_read, m.read_at, m.created_at, m.updated_at, m.client_id, m.conversation_id"
    };
}

/// With the read state of the reader's inbox row `i` (see the Postgres store).
macro_rules! inbox_message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type, \
         (i.read_at IS NOT NULL) AS is_read, i.read_at, m.created_at, m.updated_at, m.client_id, \
         m.conversation_id"
    };
}

/// The message's own read state when direct, the reader's (`LEFT JOIN inbox
/// i`) in a group.
macro_rules! viewer_message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type, \
         CASE WHEN m.receiver_id IS NULL THEN i.read_at IS NOT NULL ELSE m.is_read END AS is_read, \
         CASE WHEN m.receiver_id IS NULL THEN i.read_at ELSE m.read_at END AS read_at, \
         m.created_at, m.updated_at, m.client_id, m.conversation_id"
    };
}

mod groups;
mod insert;
mod messages;
mod users;

/// `(?, ?, ...)` binding each id, for `IN` lists.
fn push_ids(query: &mut QueryBuilder<Sqlite>, ids: &[Uuid]) {
    query.push("(");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    query.push(")");
}

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Opens (creating if needed) the database file.
    pub async fn open(path: &Path, busy_timeout: Duration) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged message survives power loss, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations/sqlite").run(&self.pool).await
    }
}

forward_store!(SqliteStore);
