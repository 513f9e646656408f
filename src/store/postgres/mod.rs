//! The production store: Postgres through a `sqlx` pool.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use uuid::Uuid;

use super::*;

mod changes;
mod groups;
mod insert;
mod messages;
mod partitions;
mod users;

pub struct PgStore {
    pool: PgPool,
    /// A streaming replica, for reads that tolerate its lag.
    replica: Option<PgPool>,
}

impl PgStore {
    /// Where reads that tolerate lag go (history pages, the conversation
    /// list, search, stats): the replica when there is one. Everything that
    /// must see the latest commit (sync, catch-up, acks, every rule checked
    /// before a write) reads the primary.
    fn lagging(&self) -> &PgPool {
        self.replica.as_ref().unwrap_or(&self.pool)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// A write's transaction: what it must order against, it locks row by
    /// row as it goes (users in id order, a group's row first).
    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'_, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// Connects lazily: the node starts (and reports unready) even while
    /// Postgres is down, and recovers without a restart when it returns.
    /// `replica`: a streaming replica's URL, with a pool of its own.
    pub fn connect_lazy(
        url: &str,
        replica: Option<&str>,
        max_connections: u32,
    ) -> StoreResult<Self> {
        let pool = |url: &str| -> StoreResult<PgPool> {
            let options: PgConnectOptions = url
                .parse()
                .map_err(|e: sqlx::Error| StoreError::Internal(e.to_string()))?;
            Ok(PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(3))
                .connect_lazy_with(options))
        };
        Ok(Self {
            pool: pool(url)?,
            replica: replica.map(pool).transpose()?,
        })
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
    }
}

forward_store!(PgStore);
