//! Reading messages, in what PostgreSQL writes its own way: lookups by lists
//! of ids, read marks, conversation lists and search. The rest is
//! `portable_messages!`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;

portable_messages!(PgStore);

impl PgStore {
    pub(super) async fn stored(&self, ids: &[Uuid], writers: &[Uuid]) -> StoreResult<Vec<Stored>> {
        let mut tx = self.pool.begin().await?;
        // Waits out any write still holding a writer's row (in id order, as
        // writes lock them); each read below then sees what it committed.
        sqlx::query("SELECT 1 FROM users WHERE id = ANY($1) ORDER BY id FOR SHARE")
            .bind(writers)
            .execute(&mut *tx)
            .await?;
        let rows: Vec<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages m WHERE m.id = ANY($1)"
        ))
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        let seqs: Vec<(Uuid, Uuid, i64)> = sqlx::query_as(
            "SELECT id, sender_id, sender_seq FROM messages
               WHERE id = ANY($1) AND receiver_id IS NOT NULL
             UNION ALL
             SELECT id, receiver_id, receiver_seq FROM messages
               WHERE id = ANY($1) AND receiver_id IS NOT NULL
             UNION ALL
             SELECT message_id, user_id, seq FROM inbox WHERE message_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut stored = stored_messages(rows, seqs);
        self.attach_files(stored.iter_mut().map(|s| &mut s.message).collect())
            .await?;
        Ok(stored)
    }

    pub(super) async fn mark_read(
        &self,
        reader: Uuid,
        ids: &[Uuid],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<ReadMark>> {
        let rows: Vec<(Uuid, Uuid, Option<Uuid>)> = sqlx::query_as(
            "WITH direct AS (
                UPDATE messages SET is_read = true, read_at = $3, updated_at = $3
                WHERE id = ANY($2) AND receiver_id = $1 AND NOT is_read
                RETURNING id, sender_id, NULL::uuid AS grp
             ), grouped AS (
                UPDATE inbox i SET read_at = $3 FROM messages m
                WHERE m.id = i.message_id AND i.user_id = $1 AND i.message_id = ANY($2)
                  AND i.read_at IS NULL
                RETURNING i.message_id, m.sender_id, i.conversation_id
             )
             SELECT * FROM direct UNION ALL SELECT * FROM grouped",
        )
        .bind(reader)
        .bind(ids)
        .bind(at)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(message_id, sender_id, group)| ReadMark {
                message_id,
                sender_id,
                group,
            })
            .collect())
    }

    pub(super) async fn conversations(
        &self,
        me: Uuid,
        limit: u32,
    ) -> StoreResult<Vec<ConversationSummary>> {
        let rows: Vec<SummaryRow> = sqlx::query_as(
            "WITH mine AS (
                SELECT c.id, 'direct' AS kind,
                    CASE WHEN c.user_a = $1 THEN c.user_b ELSE c.user_a END AS peer,
                    NULL::text AS title, NULL::text AS group_avatar, NULL::int8 AS member_count,
                    c.last_message_id AS last_id, c.last_message_at AS at,
                    (SELECT count(*) FROM messages x
                      WHERE x.receiver_id = $1 AND x.conversation_id = c.id AND NOT x.is_read) AS unread
                FROM conversations c WHERE c.user_a = $1 OR c.user_b = $1
                UNION ALL
                SELECT c.id, 'group', NULL, c.title, c.avatar_url, c.member_count::int8,
                    l.id, COALESCE(l.created_at, cm.joined_at),
                    (SELECT count(*) FROM inbox x
                      WHERE x.user_id = $1 AND x.conversation_id = c.id AND x.read_at IS NULL)
                FROM conversation_members cm
                JOIN conversations c ON c.id = cm.conversation_id
                LEFT JOIN LATERAL (
                    SELECT m.id, m.created_at FROM inbox i JOIN messages m ON m.id = i.message_id
                    WHERE i.user_id = $1 AND i.conversation_id = c.id AND m.deleted_at IS NULL
                    ORDER BY i.message_id DESC LIMIT 1) l ON true
                WHERE cm.user_id = $1 AND cm.left_at IS NULL
             )
             SELECT mine.id AS conversation_id, mine.kind, mine.peer, mine.title, mine.group_avatar,
                mine.member_count, u.username, u.avatar_url AS peer_avatar, mine.last_id, mine.unread
             FROM mine LEFT JOIN users u ON u.id = mine.peer
             ORDER BY mine.at DESC, mine.last_id DESC NULLS LAST LIMIT $2",
        )
        .bind(me)
        .bind(i64::from(limit))
        .fetch_all(self.lagging())
        .await?;
        let ids: Vec<Uuid> = rows.iter().filter_map(|r| r.last_id).collect();
        let last: Vec<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            viewer_message_columns!(),
            " FROM messages m LEFT JOIN inbox i ON i.message_id = m.id AND i.user_id = $1
              WHERE m.id = ANY($2) AND m.deleted_at IS NULL"
        ))
        .bind(me)
        .bind(&ids)
        .fetch_all(self.lagging())
        .await?;
        let last: HashMap<Uuid, Message> =
            last.into_iter().map(|r| (r.id, Message::from(r))).collect();
        Ok(rows.into_iter().map(|r| r.into_summary(&last)).collect())
    }

    pub(super) async fn search(
        &self,
        me: Uuid,
        words: &SearchWords,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        // One branch per index (see the search migration): what the user
        // sent, what they received, and the group messages their inbox
        // holds, each found by (participant, word) together.
        let rows: Vec<MessageRow> = sqlx::query_as(concat!(
            "SELECT * FROM (
               SELECT ",
            message_columns!(),
            " FROM messages m
                WHERE m.sender_id = $1 AND m.receiver_id IS NOT NULL
                  AND to_tsvector('simple', m.content) @@ plainto_tsquery('simple', $2)
               UNION ALL
               SELECT ",
            message_columns!(),
            " FROM messages m
                WHERE m.receiver_id = $1
                  AND to_tsvector('simple', m.content) @@ plainto_tsquery('simple', $2)
               UNION ALL
               SELECT ",
            inbox_message_columns!(),
            " FROM conversation_members cm
                JOIN messages m ON m.conversation_id = cm.conversation_id
                  AND m.receiver_id IS NULL
                JOIN inbox i ON i.message_id = m.id AND i.user_id = $1
                WHERE cm.user_id = $1
                  AND to_tsvector('simple', m.content) @@ plainto_tsquery('simple', $2)
             ) found ORDER BY id DESC LIMIT $3"
        ))
        .bind(me)
        .bind(words.words().join(" "))
        .bind(i64::from(limit))
        .fetch_all(self.lagging())
        .await?;
        let mut found: Vec<Message> = rows.into_iter().map(Into::into).collect();
        self.decorate(me, &mut found).await?;
        Ok(found)
    }

    pub(super) async fn msg_seqs(&self, users: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>> {
        let seqs = sqlx::query_as("SELECT id, msg_seq FROM users WHERE id = ANY($1)")
            .bind(users)
            .fetch_all(&self.pool)
            .await?;
        Ok(seqs)
    }
}
