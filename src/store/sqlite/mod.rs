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

mod changes;
mod groups;
mod insert;
mod messages;
mod retention;
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

    /// Reads that would go to a replica: SQLite has none, so the file.
    fn lagging(&self) -> &SqlitePool {
        &self.pool
    }

    /// A write's transaction, holding the database write lock from its
    /// first statement: writes run one at a time.
    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'_, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
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
