//! Changes to messages: the rules are `portable_changes!`; PostgreSQL locks
//! the rows it reads (`FOR UPDATE`) and reads reactions by an array of ids.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::groups::lock_group;
use super::*;

portable_changes!(PgStore, sqlx::Postgres, " FOR UPDATE");

impl PgStore {
    /// (message, emoji, count, whether `me` reacted) for each emoji on
    /// each of `ids`, in the order each emoji was first used.
    async fn reaction_counts(
        &self,
        me: Uuid,
        ids: &[Uuid],
    ) -> StoreResult<Vec<(Uuid, String, i64, i64)>> {
        let counts = sqlx::query_as(
            "SELECT message_id, emoji, count(*),
                CAST(max(CASE WHEN user_id = $1 THEN 1 ELSE 0 END) AS BIGINT)
             FROM reactions WHERE message_id = ANY($2)
             GROUP BY message_id, emoji ORDER BY min(created_at), emoji",
        )
        .bind(me)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(counts)
    }

    /// The attachments of `messages`.
    async fn attachments_of(&self, messages: &[Uuid]) -> StoreResult<Vec<AttachmentRow>> {
        let rows = sqlx::query_as(
            "SELECT id, owner_id, message_id, name, size, content_type, width, height
             FROM attachments WHERE message_id = ANY($1) ORDER BY created_at, id",
        )
        .bind(messages)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }
}
