//! Reading messages, in what SQLite writes its own way: lookups by lists
//! of ids, read marks, conversation lists and search. The rest is
//! `portable_messages!`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use super::*;

portable_messages!(SqliteStore);

impl SqliteStore {
    /// One writer at a time, in this process: no write is still running
    /// once its caller has heard of its failure.
    pub(super) async fn stored(&self, ids: &[Uuid], _writers: &[Uuid]) -> StoreResult<Vec<Stored>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages m WHERE m.id IN "
        ));
        push_ids(&mut query, ids);
        let rows: Vec<MessageRow> = query.build_query_as().fetch_all(&self.pool).await?;
        let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT id, sender_id, sender_seq FROM messages WHERE receiver_id IS NOT NULL AND id IN ",
        );
        push_ids(&mut query, ids);
        query.push(
            " UNION ALL SELECT id, receiver_id, receiver_seq FROM messages WHERE receiver_id IS NOT NULL AND id IN ",
        );
        push_ids(&mut query, ids);
        query.push(" UNION ALL SELECT message_id, user_id, seq FROM inbox WHERE message_id IN ");
        push_ids(&mut query, ids);
        let seqs: Vec<(Uuid, Uuid, i64)> = query.build_query_as().fetch_all(&self.pool).await?;
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
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // A read first: marking what is already read (a client repeating
        // itself, or a hostile one in a loop) must not take the one write
        // lock every sender waits on.
        let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE NOT is_read AND receiver_id = ",
        );
        query.push_bind(reader);
        query.push(" AND id IN ");
        push_ids(&mut query, ids);
        query.push(") OR EXISTS (SELECT 1 FROM inbox WHERE read_at IS NULL AND user_id = ");
        query.push_bind(reader);
        query.push(" AND message_id IN ");
        push_ids(&mut query, ids);
        query.push(")");
        let unread: bool = query.build_query_scalar().fetch_one(&self.pool).await?;
        if !unread {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let mut query: QueryBuilder<Sqlite> =
            QueryBuilder::new("UPDATE messages SET is_read = 1, read_at = ");
        query.push_bind(at);
        query.push(", updated_at = ");
        query.push_bind(at);
        query.push(" WHERE receiver_id = ");
        query.push_bind(reader);
        query.push(" AND NOT is_read AND id IN ");
        push_ids(&mut query, ids);
        query.push(" RETURNING id, sender_id");
        let direct: Vec<(Uuid, Uuid)> = query.build_query_as().fetch_all(&mut *tx).await?;

        let mut query: QueryBuilder<Sqlite> = QueryBuilder::new("UPDATE inbox SET read_at = ");
        query.push_bind(at);
        query.push(" WHERE user_id = ");
        query.push_bind(reader);
        query.push(" AND read_at IS NULL AND message_id IN ");
        push_ids(&mut query, ids);
        query.push(
            " RETURNING message_id, (SELECT sender_id FROM messages WHERE id = message_id), conversation_id",
        );
        let grouped: Vec<(Uuid, Uuid, Uuid)> = query.build_query_as().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(direct
            .into_iter()
            .map(|(message_id, sender_id)| ReadMark {
                message_id,
                sender_id,
                group: None,
            })
            .chain(
                grouped
                    .into_iter()
                    .map(|(message_id, sender_id, group)| ReadMark {
                        message_id,
                        sender_id,
                        group: Some(group),
                    }),
            )
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
                    CASE WHEN c.user_a = ?1 THEN c.user_b ELSE c.user_a END AS peer,
                    NULL AS title, NULL AS group_avatar, NULL AS member_count,
                    c.last_message_id AS last_id,
                    (SELECT count(*) FROM messages x
                      WHERE x.receiver_id = ?1 AND x.conversation_id = c.id AND NOT x.is_read) AS unread
                FROM conversations c WHERE c.user_a = ?1 OR c.user_b = ?1
                UNION ALL
                SELECT c.id, 'group', NULL, c.title, c.avatar_url, c.member_count,
                    (SELECT i.message_id FROM inbox i JOIN messages dm ON dm.id = i.message_id
                      WHERE i.user_id = ?1 AND i.conversation_id = c.id AND dm.deleted_at IS NULL
                      ORDER BY i.message_id DESC LIMIT 1),
                    (SELECT count(*) FROM inbox x
                      WHERE x.user_id = ?1 AND x.conversation_id = c.id AND x.read_at IS NULL)
                FROM conversation_members cm
                JOIN conversations c ON c.id = cm.conversation_id
                WHERE cm.user_id = ?1 AND cm.left_at IS NULL
             )
             SELECT mine.id AS conversation_id, mine.kind, mine.peer, mine.title, mine.group_avatar,
                mine.member_count, u.username, u.avatar_url AS peer_avatar, mine.last_id, mine.unread
             FROM mine LEFT JOIN users u ON u.id = mine.peer
             LEFT JOIN messages lm ON lm.id = mine.last_id
             LEFT JOIN conversation_members j ON j.conversation_id = mine.id AND j.user_id = ?1
             ORDER BY COALESCE(lm.created_at, j.joined_at) DESC, mine.last_id DESC LIMIT ?2",
        )
        .bind(me)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let ids: Vec<Uuid> = rows.iter().filter_map(|r| r.last_id).collect();
        let mut last = HashMap::new();
        if !ids.is_empty() {
            let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(concat!(
                "SELECT ",
                viewer_message_columns!(),
                " FROM messages m LEFT JOIN inbox i ON i.message_id = m.id AND i.user_id = "
            ));
            query.push_bind(me);
            query.push(" WHERE m.deleted_at IS NULL AND m.id IN ");
            push_ids(&mut query, &ids);
            let found: Vec<MessageRow> = query.build_query_as().fetch_all(&self.pool).await?;
            last.extend(found.into_iter().map(|r| (r.id, Message::from(r))));
        }
        Ok(rows.into_iter().map(|r| r.into_summary(&last)).collect())
    }

    pub(super) async fn search(
        &self,
        me: Uuid,
        words: &SearchWords,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        // Each word becomes a quoted FTS5 string, so nothing a user types is
        // read as query syntax; juxtaposed strings mean AND.
        let fts_query = words
            .words()
            .iter()
            .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" ");
        let rows: Vec<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            viewer_message_columns!(),
            " FROM messages_fts f JOIN messages m ON m.rowid = f.rowid
              LEFT JOIN inbox i ON i.message_id = m.id AND i.user_id = ?1
              WHERE messages_fts MATCH ?2
                AND (m.sender_id = ?1 OR m.receiver_id = ?1 OR i.user_id IS NOT NULL)
              ORDER BY m.id DESC LIMIT ?3"
        ))
        .bind(me)
        .bind(fts_query)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut found: Vec<Message> = rows.into_iter().map(Into::into).collect();
        self.decorate(me, &mut found).await?;
        Ok(found)
    }

    pub(super) async fn msg_seqs(&self, users: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut query: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT id, msg_seq FROM users WHERE id IN (");
        let mut ids = query.separated(", ");
        for user in users {
            ids.push_bind(*user);
        }
        query.push(")");
        Ok(query.build_query_as().fetch_all(&self.pool).await?)
    }
}
