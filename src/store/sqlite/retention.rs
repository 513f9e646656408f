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
            match self.expire_chunk(bound).await {
                Ok(Some(chunk)) => {
                    expired.messages += chunk.messages;
                    expired.files.extend(chunk.files);
                }
                Ok(None) => return Ok(expired),
                // What was deleted stays deleted: its files are answered.
                Err(e) if expired.messages > 0 => {
                    tracing::warn!(error = %e, "could not delete the rest of the expired messages");
                    return Ok(expired);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One transaction's worth of expired messages; `None` when none is
    /// left. Only UUIDv7 ids carry their time: a message written with the
    /// seed schema's random id is never taken for an old one.
    async fn expire_chunk(&self, bound: Uuid) -> StoreResult<Option<Expired>> {
        let mut tx = self.begin_write().await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM messages WHERE id < ?1 AND substr(hex(id), 13, 1) = '7'
             ORDER BY id LIMIT ?2",
        )
        .bind(bound)
        .bind(CHUNK)
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            return Ok(None);
        }
        let mut query = QueryBuilder::new("SELECT id FROM attachments WHERE message_id IN ");
        push_ids(&mut query, &ids);
        let files: Vec<Uuid> = query.build_query_scalar().fetch_all(&mut *tx).await?;
        let mut query = QueryBuilder::new("DELETE FROM messages WHERE id IN ");
        push_ids(&mut query, &ids);
        let messages = query.build().execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(Some(Expired { messages, files }))
    }
}
