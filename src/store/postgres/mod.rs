//! The production store: Postgres through a `sqlx` pool.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use uuid::Uuid;

use super::*;

/// Columns of a message, in the order [`MessageRow`] reads them.
macro_rules! message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type::text AS message_type, \
         m.is_read, m.read_at, m.created_at, m.updated_at, m.client_id, m.conversation_id"
    };
}

/// The same, with the read state of the reader's inbox row `i`: in a group
/// each member has their own.
macro_rules! inbox_message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type::text AS message_type, \
         (i.read_at IS NOT NULL) AS is_read, i.read_at, m.created_at, m.updated_at, m.client_id, \
         m.conversation_id"
    };
}

/// Either: the message's own read state for a direct message, the reader's
/// (a `LEFT JOIN inbox i`) for a group message.
macro_rules! viewer_message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type::text AS message_type, \
         CASE WHEN m.receiver_id IS NULL THEN i.read_at IS NOT NULL ELSE m.is_read END AS is_read, \
         CASE WHEN m.receiver_id IS NULL THEN i.read_at ELSE m.read_at END AS read_at, \
         m.created_at, m.updated_at, m.client_id, m.conversation_id"
    };
}

mod groups;
mod insert;
mod messages;
mod users;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Connects lazily: the node starts (and reports unready) even while
    /// Postgres is down, and recovers without a restart when it returns.
    pub fn connect_lazy(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Internal(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
    }
}

forward_store!(PgStore);
