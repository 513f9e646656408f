//! Expiry by the week, as PostgreSQL drops its weekly partitions (see
//! `store::weeks`): SQLite deletes the same weeks' rows, a chunk per
//! transaction so sends wait for one chunk at most.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;
use crate::store::weeks::expiry_bound;

/// Messages deleted per transaction.
const CHUNK: i64 = 1000;

impl SqliteStore {
    /// SQLite keeps one table: there is nothing to prepare.
    pub(super) async fn prepare_weeks(&self, _at: DateTime<Utc>) -> StoreResult<()> {
        Ok(())
    }

    /// Deletes the messages of every week that ended before `before`'s
    /// week began; their inbox rows, changes, reactions and attachments go
    /// with them and replies lose their quote (foreign keys), the search
    /// index follows (trigger).
    pub(super) async fn expire_messages(&self, before: DateTime<Utc>) -> StoreResult<Expired> {
        let bound = expiry_bound(before);
        let mut expired = Expired::default();
        loop {
            let mut tx = self.begin_write().await?;
            // The last id of this chunk: the chunk is every id up to it.
            let last: Option<Uuid> = sqlx::query_scalar(
                "SELECT id FROM (SELECT id FROM messages WHERE id < ?1 ORDER BY id LIMIT ?2)
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(bound)
            .bind(CHUNK)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(last) = last else {
                return Ok(expired);
            };
            let files: Vec<Uuid> =
                sqlx::query_scalar("SELECT id FROM attachments WHERE message_id <= ?1")
                    .bind(last)
                    .fetch_all(&mut *tx)
                    .await?;
            let deleted = sqlx::query("DELETE FROM messages WHERE id <= ?1")
                .bind(last)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            expired.messages += deleted;
            expired.files.extend(files);
        }
    }
}
