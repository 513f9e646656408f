//! Changes to messages: the rules are `portable_changes!`; PostgreSQL locks
//! the messages' and their readers' rows (`FOR NO KEY UPDATE`)
//! and reads by arrays of ids.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::groups::lock_group;
use super::*;

portable_changes!(PgStore, sqlx::Postgres, " FOR NO KEY UPDATE");

/// Numbers a batch of changes for their readers in one statement, as a
/// batch of direct messages is: the readers' rows locked in id order, each
/// one's number bumped by its count of changes, and each (reader, change)
/// recorded in the reader's change inbox. The locks are held from here to
/// the commit, which follows at once.
async fn number_changes(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    changes: &[(Uuid, &[Uuid])],
) -> StoreResult<Vec<Vec<(Uuid, i64)>>> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let plan = ChangeNumbers::new(changes);
    let bases: Vec<(Uuid, i64)> = sqlx::query_as(
        "WITH locked AS MATERIALIZED (
            SELECT id, msg_seq FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE
         ), bumped AS (
            UPDATE users u SET msg_seq = l.msg_seq + c.n
            FROM locked l JOIN UNNEST($1::uuid[], $2::int8[]) AS c(id, n) ON c.id = l.id
            WHERE u.id = l.id
            RETURNING u.id, l.msg_seq AS base
         ), filed AS (
            INSERT INTO change_inbox (user_id, seq, change_id)
            SELECT e.user_id, b.base + e.place, e.change_id
            FROM UNNEST($3::uuid[], $4::int8[], $5::uuid[]) AS e(user_id, place, change_id)
              JOIN bumped b ON b.id = e.user_id
         )
         SELECT id, base FROM bumped",
    )
    .bind(&plan.users)
    .bind(&plan.counts)
    .bind(&plan.reader)
    .bind(&plan.place)
    .bind(&plan.change)
    .fetch_all(&mut **tx)
    .await?;
    let bases: HashMap<Uuid, i64> = bases.into_iter().collect();
    if bases.len() < plan.users.len() {
        return Err(StoreError::Internal(
            "a reader of a changed message is gone".into(),
        ));
    }
    Ok(plan.numbered(changes, &bases))
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
            "SELECT id, owner_id, message_id, name, size, content_type, width, height, created_at
             FROM attachments WHERE message_id = ANY($1) ORDER BY created_at, id",
        )
        .bind(messages)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }
}
