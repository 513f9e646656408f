//! Changes to messages: the rules are `portable_changes!`; in SQLite the
//! write transaction (`BEGIN IMMEDIATE`) holds the database, so rows need
//! no lock of their own, and lists of ids are `IN` lists.

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use super::groups::lock_group;
use super::*;

portable_changes!(SqliteStore, Sqlite, "");

/// Numbers a batch of changes for their readers, in batch order: each
/// reader's next number, recorded in their change inbox (under the write
/// lock the transaction holds).
async fn number_changes(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    changes: &[(Uuid, &[Uuid])],
) -> StoreResult<Vec<Vec<(Uuid, i64)>>> {
    let mut numbered = Vec::with_capacity(changes.len());
    for &(change, readers) in changes {
        let mut seqs = Vec::with_capacity(readers.len());
        for &reader in readers {
            let seq: i64 = sqlx::query_scalar(
                "UPDATE users SET msg_seq = msg_seq + 1 WHERE id = $1 RETURNING msg_seq",
            )
            .bind(reader)
            .fetch_one(&mut **tx)
            .await?;
            sqlx::query("INSERT INTO change_inbox (user_id, seq, change_id) VALUES ($1, $2, $3)")
                .bind(reader)
                .bind(seq)
                .bind(change)
                .execute(&mut **tx)
                .await?;
            seqs.push((reader, seq));
        }
        numbered.push(seqs);
    }
    Ok(numbered)
}

impl SqliteStore {
    /// (message, emoji, count, whether `me` reacted) for each emoji on
    /// each of `ids`, in the order each emoji was first used.
    async fn reaction_counts(
        &self,
        me: Uuid,
        ids: &[Uuid],
    ) -> StoreResult<Vec<(Uuid, String, i64, i64)>> {
        let mut query: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT message_id, emoji, count(*), max(CASE WHEN user_id = ");
        query.push_bind(me);
        query.push(" THEN 1 ELSE 0 END) FROM reactions WHERE message_id IN ");
        push_ids(&mut query, ids);
        query.push(" GROUP BY message_id, emoji ORDER BY min(created_at), emoji");
        Ok(query.build_query_as().fetch_all(&self.pool).await?)
    }

    /// The attachments of `messages`.
    async fn attachments_of(&self, messages: &[Uuid]) -> StoreResult<Vec<AttachmentRow>> {
        let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT id, owner_id, message_id, name, size, content_type, width, height, created_at
             FROM attachments WHERE message_id IN ",
        );
        push_ids(&mut query, messages);
        query.push(" ORDER BY created_at, id");
        Ok(query.build_query_as().fetch_all(&self.pool).await?)
    }
}
