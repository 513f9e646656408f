//! Changes to messages: the rules are `portable_changes!`; PostgreSQL locks
//! the message's and its readers' rows (`FOR NO KEY UPDATE`) and reads by arrays of ids.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::groups::lock_group;
use super::*;

portable_changes!(PgStore, sqlx::Postgres, " FOR NO KEY UPDATE");

/// Numbers change `change` for each of `readers` in one statement, as a
/// batch of direct messages is: their rows locked in id order, each one's
/// next number taken and recorded in its change inbox. The locks are held
/// from here to the commit, which follows at once.
async fn number_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    readers: &[Uuid],
    change: Uuid,
) -> StoreResult<Vec<(Uuid, i64)>> {
    let seqs = sqlx::query_as(
        "WITH locked AS MATERIALIZED (
            SELECT id, msg_seq FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE
         ), bumped AS (
            UPDATE users u SET msg_seq = l.msg_seq + 1 FROM locked l
            WHERE u.id = l.id
            RETURNING u.id, l.msg_seq + 1 AS seq
         ), filed AS (
            INSERT INTO change_inbox (user_id, seq, change_id)
            SELECT id, seq, $2 FROM bumped
         )
         SELECT id, seq FROM bumped",
    )
    .bind(readers)
    .bind(change)
    .fetch_all(&mut **tx)
    .await?;
    Ok(seqs)
}

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
