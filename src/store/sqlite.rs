//! The embedded default store: one SQLite file in WAL mode.
//!
//! Writers take the database write lock up front (`BEGIN IMMEDIATE`), which
//! plays the part of Postgres' row locks: writes are serialised, so sequence
//! numbers commit in the order they are handed out.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use super::*;

macro_rules! message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type, \
         m.is_read, m.read_at, m.created_at, m.updated_at, m.client_id, m.conversation_id"
    };
}

/// With the read state of the reader's inbox row `i` (see the Postgres store).
macro_rules! inbox_message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type, \
         (i.read_at IS NOT NULL) AS is_read, i.read_at, m.created_at, m.updated_at, m.client_id, \
         m.conversation_id"
    };
}

/// The message's own read state when direct, the reader's (`LEFT JOIN inbox
/// i`) in a group.
macro_rules! viewer_message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type, \
         CASE WHEN m.receiver_id IS NULL THEN i.read_at IS NOT NULL ELSE m.is_read END AS is_read, \
         CASE WHEN m.receiver_id IS NULL THEN i.read_at ELSE m.read_at END AS read_at, \
         m.created_at, m.updated_at, m.client_id, m.conversation_id"
    };
}

/// `(?, ?, ...)` binding each id, for `IN` lists.
fn push_ids(query: &mut QueryBuilder<Sqlite>, ids: &[Uuid]) {
    query.push("(");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    query.push(")");
}

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file.
    pub async fn open(path: &Path, busy_timeout: Duration) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged message survives power loss, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations/sqlite").run(&self.pool).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn upsert_user(&self, id: Uuid, email: &str) -> StoreResult<()> {
        let now = now();
        sqlx::query(
            "INSERT INTO users (id, email, last_seen, created_at, updated_at) VALUES (?1, ?2, ?3, ?3, ?3)
             ON CONFLICT (id) DO UPDATE SET email = excluded.email, updated_at = excluded.updated_at
             WHERE users.email <> excluded.email",
        )
        .bind(id)
        .bind(email)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn user(&self, id: Uuid) -> StoreResult<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = ?1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    async fn update_profile(&self, id: Uuid, patch: &ProfilePatch) -> StoreResult<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE users SET
                username = CASE WHEN ?2 THEN ?3 ELSE username END,
                avatar_url = CASE WHEN ?4 THEN ?5 ELSE avatar_url END,
                updated_at = ?6
             WHERE id = ?1 RETURNING {USER_COLUMNS}"
        )))
        .bind(id)
        .bind(patch.username.is_some())
        .bind(patch.username.clone().flatten())
        .bind(patch.avatar_url.is_some())
        .bind(patch.avatar_url.clone().flatten())
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    async fn set_presence(&self, id: Uuid, online: bool, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("UPDATE users SET is_online = ?2, last_seen = ?3 WHERE id = ?1")
            .bind(id)
            .bind(online)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn contacts(&self, id: Uuid, group_limit: u32) -> StoreResult<Vec<Uuid>> {
        let ids = sqlx::query_scalar(
            "SELECT peer FROM (
                SELECT c.user_b AS peer FROM conversations c WHERE c.user_a = ?1
                  AND EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.sender_id = ?1)
                UNION
                SELECT c.user_a FROM conversations c WHERE c.user_b = ?1
                  AND EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.sender_id = ?1)
                UNION
                SELECT o.user_id FROM conversation_members me
                  JOIN conversations c ON c.id = me.conversation_id AND c.member_count <= ?2
                  JOIN conversation_members o ON o.conversation_id = me.conversation_id
                    AND o.left_at IS NULL AND o.user_id <> ?1
                WHERE me.user_id = ?1 AND me.left_at IS NULL
                  AND EXISTS (SELECT 1 FROM messages m
                              WHERE m.conversation_id = me.conversation_id AND m.sender_id = ?1)
             ) WHERE peer NOT IN (SELECT blocked FROM blocks WHERE blocker = ?1)",
        )
        .bind(id)
        .bind(i64::from(group_limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    async fn talked_to(
        &self,
        speaker: Uuid,
        listener: Uuid,
        group_limit: u32,
    ) -> StoreResult<bool> {
        let talked = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE conversation_id = ?3 AND sender_id = ?1)
                 OR EXISTS (SELECT 1 FROM conversation_members me
                              JOIN conversations c ON c.id = me.conversation_id AND c.member_count <= ?4
                              JOIN conversation_members o ON o.conversation_id = me.conversation_id
                                AND o.user_id = ?2 AND o.left_at IS NULL
                             WHERE me.user_id = ?1 AND me.left_at IS NULL
                               AND EXISTS (SELECT 1 FROM messages m
                                           WHERE m.conversation_id = me.conversation_id AND m.sender_id = ?1))",
        )
        .bind(speaker)
        .bind(listener)
        .bind(conversation_id(speaker, listener))
        .bind(i64::from(group_limit))
        .fetch_one(&self.pool)
        .await?;
        Ok(talked)
    }

    async fn block(&self, blocker: Uuid, blocked: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO blocks (blocker, blocked, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
        )
        .bind(blocker)
        .bind(blocked)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn unblock(&self, blocker: Uuid, blocked: Uuid) -> StoreResult<()> {
        sqlx::query("DELETE FROM blocks WHERE blocker = ?1 AND blocked = ?2")
            .bind(blocker)
            .bind(blocked)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn blocks(&self, blocker: Uuid, limit: u32) -> StoreResult<Vec<Block>> {
        let blocks = sqlx::query_as(
            "SELECT blocked AS user_id, created_at AS blocked_at FROM blocks
             WHERE blocker = ?1 ORDER BY created_at DESC, blocked LIMIT ?2",
        )
        .bind(blocker)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(blocks)
    }

    async fn blocked(&self, pairs: &[(Uuid, Uuid)]) -> StoreResult<Vec<(Uuid, Uuid)>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT blocker, blocked FROM blocks WHERE (blocker, blocked) IN (VALUES ",
        );
        let mut values = query.separated(", ");
        for (blocker, blocked) in pairs {
            values.push("(");
            values.push_bind_unseparated(*blocker);
            values.push_unseparated(", ");
            values.push_bind_unseparated(*blocked);
            values.push_unseparated(")");
        }
        query.push(")");
        let found = query.build_query_as().fetch_all(&self.pool).await?;
        Ok(found)
    }

    async fn is_contact(&self, a: Uuid, b: Uuid) -> StoreResult<bool> {
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM conversations WHERE id = ?1")
            .bind(conversation_id(a, b))
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    async fn insert_messages(&self, batch: &[NewMessage]) -> StoreResult<Vec<InsertOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;

        // The write lock orders messages against membership changes too.
        let group_ids = groups_of(batch);
        let mut groups: GroupMembers = HashMap::new();
        if !group_ids.is_empty() {
            let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT c.id, cm.user_id FROM conversations c
                 LEFT JOIN conversation_members cm ON cm.conversation_id = c.id AND cm.left_at IS NULL
                 WHERE c.kind = 'group' AND c.id IN ",
            );
            push_ids(&mut query, &group_ids);
            query.push(" ORDER BY c.id, cm.joined_at, cm.user_id");
            let members: Vec<(Uuid, Option<Uuid>)> =
                query.build_query_as().fetch_all(&mut *tx).await?;
            for (group, user) in members {
                let entry = groups.entry(group).or_default();
                entry.extend(user);
            }
        }
        let users = users_of(batch, &groups);
        let mut query: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT id, msg_seq FROM users WHERE id IN (");
        let mut list = query.separated(", ");
        for id in &users {
            list.push_bind(*id);
        }
        query.push(")");
        let seqs: Vec<(Uuid, i64)> = query.build_query_as().fetch_all(&mut *tx).await?;

        // As on Postgres: insert first, skipping taken `client_id`s, and read
        // back stored messages only for the rows that were skipped. Each step
        // is one statement for the whole batch (the connection lives on its
        // own thread, so every statement is a hop).
        let mut plan = BatchPlan::new(batch, seqs.into_iter().collect(), &groups, &HashMap::new());
        if plan.rows.is_empty() {
            tx.commit().await?;
            return Ok(plan.outcomes);
        }
        let mut inserted: HashSet<Uuid> = HashSet::with_capacity(plan.rows.len());
        // 9 parameters a row stays far below SQLite's 32,766-variable limit.
        for chunk in plan.rows.chunks(1000) {
            let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO messages (id, sender_id, receiver_id, content, client_id,
                    conversation_id, sender_seq, receiver_seq, created_at, updated_at) ",
            );
            insert.push_values(chunk, |mut b, row| {
                let m = &row.message;
                b.push_bind(m.id)
                    .push_bind(m.sender_id)
                    .push_bind(m.receiver_id)
                    .push_bind(m.content.clone())
                    .push_bind(m.client_id.clone())
                    .push_bind(m.conversation_id)
                    .push_bind(row.sender_seq)
                    .push_bind(row.receiver_seq)
                    .push_bind(m.created_at)
                    .push_bind(m.created_at);
            });
            insert.push(
                " ON CONFLICT (sender_id, client_id) WHERE client_id IS NOT NULL DO NOTHING RETURNING id",
            );
            let ids: Vec<Uuid> = insert.build_query_scalar().fetch_all(&mut *tx).await?;
            inserted.extend(ids);
        }

        if inserted.len() < plan.rows.len() {
            let mut existing = HashMap::new();
            for row in plan
                .rows
                .iter()
                .filter(|r| !inserted.contains(&r.message.id))
            {
                let stored: Option<MessageRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages m WHERE m.sender_id = ?1 AND m.client_id = ?2"
                ))
                .bind(row.message.sender_id)
                .bind(&row.message.client_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(stored) = stored {
                    existing.insert(row.message.id, Message::from(stored));
                }
            }
            plan.resolve_conflicts(&existing);
        }

        let mut update: QueryBuilder<Sqlite> = QueryBuilder::new("WITH v(id, seq) AS (");
        update.push_values(plan.seqs.iter(), |mut b, (id, seq)| {
            b.push_bind(*id).push_bind(*seq);
        });
        update.push(
            ") UPDATE users SET msg_seq = (SELECT seq FROM v WHERE v.id = users.id)
               WHERE id IN (SELECT id FROM v)",
        );
        update.build().execute(&mut *tx).await?;

        let heads = plan.conversation_heads(|r| inserted.contains(&r.message.id));
        if !heads.is_empty() {
            let mut upsert: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO conversations (id, user_a, user_b, last_message_id, last_message_at, created_at, updated_at) ",
            );
            upsert.push_values(&heads, |mut b, (id, a, b_user, message_id, at)| {
                b.push_bind(*id)
                    .push_bind(*a)
                    .push_bind(*b_user)
                    .push_bind(*message_id)
                    .push_bind(*at)
                    .push_bind(*at)
                    .push_bind(*at);
            });
            upsert.push(
                " ON CONFLICT (id) DO UPDATE
                   SET last_message_id = excluded.last_message_id,
                       last_message_at = excluded.last_message_at
                   WHERE conversations.last_message_id <= excluded.last_message_id",
            );
            upsert.build().execute(&mut *tx).await?;
        }

        let stored = |r: &PlannedRow| inserted.contains(&r.message.id);
        let inbox = plan.inbox_rows(stored);
        // 5 parameters a row.
        for chunk in inbox.chunks(5000) {
            let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO inbox (user_id, seq, message_id, conversation_id, read_at) ",
            );
            insert.push_values(chunk, |mut b, (user, seq, message, group, read)| {
                b.push_bind(*user)
                    .push_bind(*seq)
                    .push_bind(*message)
                    .push_bind(*group)
                    .push_bind(*read);
            });
            insert.build().execute(&mut *tx).await?;
        }
        for (group, message, at) in plan.group_heads(stored) {
            sqlx::query(
                "UPDATE conversations SET last_message_id = ?2, last_message_at = ?3
                 WHERE id = ?1 AND (last_message_id IS NULL OR last_message_id <= ?2)",
            )
            .bind(group)
            .bind(message)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(plan.outcomes)
    }

    async fn message(&self, id: Uuid) -> StoreResult<Option<Message>> {
        let row: Option<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages m WHERE m.id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    /// One writer at a time, in this process: no write is still running
    /// once its caller has heard of its failure.
    async fn stored(&self, ids: &[Uuid], _writers: &[Uuid]) -> StoreResult<Vec<Stored>> {
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
        Ok(stored_messages(rows, seqs))
    }

    async fn mark_read(
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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

    async fn conversation(
        &self,
        me: Uuid,
        peer: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Message>> {
        let rows: Vec<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages m WHERE m.conversation_id = ?1 AND (?2 IS NULL OR m.id < ?2)
              ORDER BY m.id DESC LIMIT ?3"
        ))
        .bind(conversation_id(me, peer))
        .bind(before)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut page = Page::from_overfetch(rows.into_iter().map(Message::from).collect(), limit);
        page.items.reverse();
        Ok(page)
    }

    async fn conversations(&self, me: Uuid, limit: u32) -> StoreResult<Vec<ConversationSummary>> {
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
                    (SELECT i.message_id FROM inbox i
                      WHERE i.user_id = ?1 AND i.conversation_id = c.id
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
            query.push(" WHERE m.id IN ");
            push_ids(&mut query, &ids);
            let found: Vec<MessageRow> = query.build_query_as().fetch_all(&self.pool).await?;
            last.extend(found.into_iter().map(|r| (r.id, Message::from(r))));
        }
        Ok(rows.into_iter().map(|r| r.into_summary(&last)).collect())
    }

    async fn search(&self, me: Uuid, words: &SearchWords, limit: u32) -> StoreResult<Vec<Message>> {
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
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn stats(&self, me: Uuid) -> StoreResult<Stats> {
        let (total_sent, total_received, unread, conversations): (i64, i64, i64, i64) =
            sqlx::query_as(
                "SELECT
                (SELECT count(*) FROM messages WHERE sender_id = ?1),
                (SELECT count(*) FROM messages WHERE receiver_id = ?1)
                  + (SELECT count(*) FROM inbox WHERE user_id = ?1)
                  - (SELECT count(*) FROM messages WHERE sender_id = ?1 AND receiver_id IS NULL),
                (SELECT count(*) FROM messages WHERE receiver_id = ?1 AND NOT is_read)
                  + (SELECT count(*) FROM inbox WHERE user_id = ?1 AND read_at IS NULL),
                (SELECT count(*) FROM conversations WHERE user_a = ?1 OR user_b = ?1)
                  + (SELECT count(*) FROM conversation_members WHERE user_id = ?1 AND left_at IS NULL)",
            )
            .bind(me)
            .fetch_one(&self.pool)
            .await?;
        Ok(Stats {
            total_sent,
            total_received,
            unread,
            conversations,
        })
    }

    async fn seq_of(&self, me: Uuid, id: Uuid) -> StoreResult<Option<i64>> {
        let seq = sqlx::query_scalar(
            "SELECT CASE WHEN sender_id = ?2 THEN sender_seq ELSE receiver_seq END
             FROM messages WHERE id = ?1 AND (sender_id = ?2 OR receiver_id = ?2)
               AND receiver_id IS NOT NULL
             UNION ALL
             SELECT seq FROM inbox WHERE message_id = ?1 AND user_id = ?2",
        )
        .bind(id)
        .bind(me)
        .fetch_optional(&self.pool)
        .await?;
        Ok(seq)
    }

    async fn messages_after(
        &self,
        me: Uuid,
        after: i64,
        limit: u32,
    ) -> StoreResult<Page<Sequenced>> {
        let rows: Vec<SequencedRow> = sqlx::query_as(concat!(
            "SELECT * FROM (SELECT m.sender_seq AS my_seq, ",
            message_columns!(),
            " FROM messages m WHERE m.sender_id = ?1 AND m.sender_seq > ?2 ORDER BY m.sender_seq LIMIT ?3)
              UNION ALL
              SELECT * FROM (SELECT m.receiver_seq AS my_seq, ",
            message_columns!(),
            " FROM messages m WHERE m.receiver_id = ?1 AND m.receiver_seq > ?2 ORDER BY m.receiver_seq LIMIT ?3)
              UNION ALL
              SELECT * FROM (SELECT i.seq AS my_seq, ",
            inbox_message_columns!(),
            " FROM inbox i JOIN messages m ON m.id = i.message_id
                WHERE i.user_id = ?1 AND i.seq > ?2 ORDER BY i.seq LIMIT ?3)
              ORDER BY my_seq LIMIT ?3"
        ))
        .bind(me)
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        Ok(Page::from_overfetch(
            rows.into_iter().map(Into::into).collect(),
            limit,
        ))
    }

    async fn msg_seqs(&self, users: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>> {
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

    async fn missing_users(&self, ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut query: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT id FROM users WHERE id IN ");
        push_ids(&mut query, ids);
        let found: HashSet<Uuid> = query
            .build_query_scalar()
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .collect();
        Ok(ids
            .iter()
            .copied()
            .filter(|id| !found.contains(id))
            .collect())
    }

    async fn create_group(&self, group: &NewGroup) -> StoreResult<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO conversations (id, kind, title, avatar_url, created_by, member_count,
                created_at, updated_at)
             VALUES (?1, 'group', ?2, ?3, ?4, ?5, ?6, ?6)",
        )
        .bind(group.id)
        .bind(&group.title)
        .bind(&group.avatar_url)
        .bind(group.creator)
        .bind(group.members.len() as i64 + 1)
        .bind(group.at)
        .execute(&mut *tx)
        .await?;
        let members: Vec<(Uuid, &str)> = std::iter::once((group.creator, "owner"))
            .chain(group.members.iter().map(|&m| (m, "member")))
            .collect();
        let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO conversation_members (conversation_id, user_id, role, joined_at) ",
        );
        insert.push_values(&members, |mut b, (user, role)| {
            b.push_bind(group.id)
                .push_bind(*user)
                .push_bind(*role)
                .push_bind(group.at);
        });
        match insert.build().execute(&mut *tx).await {
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                return Err(StoreError::NotFound("a member does not exist"));
            }
            other => other?,
        };
        tx.commit().await?;
        Ok(())
    }

    async fn group(&self, id: Uuid) -> StoreResult<Option<Group>> {
        let row: Option<GroupRow> = sqlx::query_as(
            "SELECT id, title, avatar_url, created_by, created_at, updated_at, member_count
             FROM conversations WHERE id = ?1 AND kind = 'group'",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let members: Vec<MemberRow> = sqlx::query_as(
            "SELECT cm.user_id, u.username, u.avatar_url, cm.role, cm.joined_at
             FROM conversation_members cm JOIN users u ON u.id = cm.user_id
             WHERE cm.conversation_id = ?1 AND cm.left_at IS NULL
             ORDER BY cm.joined_at, cm.user_id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(row.with_members(members)))
    }

    async fn membership(&self, id: Uuid, user: Uuid) -> StoreResult<Membership> {
        let row: Option<MembershipRow> = sqlx::query_as(
            "SELECT c.kind, c.user_a, c.user_b,
                CASE WHEN cm.left_at IS NULL THEN cm.role END AS role,
                cm.user_id IS NOT NULL AS ever
             FROM conversations c
             LEFT JOIN conversation_members cm ON cm.conversation_id = c.id AND cm.user_id = ?2
             WHERE c.id = ?1",
        )
        .bind(id)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        Ok(MembershipRow::place(row, user))
    }

    async fn update_group(
        &self,
        id: Uuid,
        actor: Uuid,
        patch: &GroupPatch,
        at: DateTime<Utc>,
    ) -> StoreResult<MemberChange> {
        // The write lock (taken at BEGIN) orders this against every other
        // change to the group, the actor's demotion included.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let group: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM conversations WHERE id = ?1 AND kind = 'group'")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if group.is_none() {
            return Ok(MemberChange::NotMember);
        }
        if !allowed(&mut tx, id, actor, GroupAction::Edit, None).await? {
            return Ok(MemberChange::Denied);
        }
        sqlx::query(
            "UPDATE conversations SET
                title = COALESCE(?2, title),
                avatar_url = CASE WHEN ?3 THEN ?4 ELSE avatar_url END,
                updated_at = ?5
             WHERE id = ?1",
        )
        .bind(id)
        .bind(&patch.title)
        .bind(patch.avatar_url.is_some())
        .bind(patch.avatar_url.clone().flatten())
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(MemberChange::Done)
    }

    async fn add_members(
        &self,
        id: Uuid,
        actor: Uuid,
        users: &[Uuid],
        max: u32,
        at: DateTime<Utc>,
    ) -> StoreResult<Added> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let count: Option<i64> = sqlx::query_scalar(
            "SELECT member_count FROM conversations WHERE id = ?1 AND kind = 'group'",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(members) = count else {
            return Ok(Added::NoGroup);
        };
        if !allowed(&mut tx, id, actor, GroupAction::AddMembers, None).await? {
            return Ok(Added::Denied);
        }
        let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT user_id FROM conversation_members WHERE left_at IS NULL AND conversation_id = ",
        );
        query.push_bind(id);
        query.push(" AND user_id IN ");
        push_ids(&mut query, users);
        let present: Vec<Uuid> = if users.is_empty() {
            Vec::new()
        } else {
            query.build_query_scalar().fetch_all(&mut *tx).await?
        };
        let joining: Vec<Uuid> = users
            .iter()
            .copied()
            .filter(|u| !present.contains(u))
            .collect();
        if members + joining.len() as i64 > i64::from(max) {
            return Ok(Added::TooMany { members });
        }
        if !joining.is_empty() {
            let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO conversation_members (conversation_id, user_id, role, joined_at) ",
            );
            insert.push_values(&joining, |mut b, user| {
                b.push_bind(id)
                    .push_bind(*user)
                    .push_bind("member")
                    .push_bind(at);
            });
            insert.push(
                " ON CONFLICT (conversation_id, user_id) DO UPDATE
                   SET role = 'member', joined_at = excluded.joined_at, left_at = NULL",
            );
            insert.build().execute(&mut *tx).await?;
            sqlx::query(
                "UPDATE conversations SET member_count = member_count + ?2, updated_at = ?3
                 WHERE id = ?1",
            )
            .bind(id)
            .bind(joining.len() as i64)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Added::Joined(joining))
    }

    async fn remove_member(
        &self,
        id: Uuid,
        actor: Uuid,
        user: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<MemberChange> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some((role, owners, members)) = member_counts(&mut tx, id, user).await? else {
            return Ok(MemberChange::NotMember);
        };
        let action = GroupAction::Remove {
            actor,
            target: user,
        };
        if !allowed(&mut tx, id, actor, action, Some(role)).await? {
            return Ok(MemberChange::Denied);
        }
        if role == Role::Owner && !keeps_an_owner(owners, members) {
            return Ok(MemberChange::LastOwner);
        }
        sqlx::query(
            "UPDATE conversation_members SET left_at = ?3 WHERE conversation_id = ?1 AND user_id = ?2",
        )
        .bind(id)
        .bind(user)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE conversations SET member_count = member_count - 1, updated_at = ?2 WHERE id = ?1",
        )
        .bind(id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(MemberChange::Done)
    }

    async fn set_role(
        &self,
        id: Uuid,
        actor: Uuid,
        user: Uuid,
        role: Role,
        at: DateTime<Utc>,
    ) -> StoreResult<MemberChange> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some((current, owners, members)) = member_counts(&mut tx, id, user).await? else {
            return Ok(MemberChange::NotMember);
        };
        if !allowed(&mut tx, id, actor, GroupAction::SetRole, Some(current)).await? {
            return Ok(MemberChange::Denied);
        }
        if current == Role::Owner && role != Role::Owner && !keeps_an_owner(owners, members.max(2))
        {
            return Ok(MemberChange::LastOwner);
        }
        sqlx::query(
            "UPDATE conversation_members SET role = ?3 WHERE conversation_id = ?1 AND user_id = ?2",
        )
        .bind(id)
        .bind(user)
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE conversations SET updated_at = ?2 WHERE id = ?1")
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(MemberChange::Done)
    }

    async fn group_history(
        &self,
        me: Uuid,
        group: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Message>> {
        let rows: Vec<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            inbox_message_columns!(),
            " FROM inbox i JOIN messages m ON m.id = i.message_id
              WHERE i.user_id = ?1 AND i.conversation_id = ?2 AND (?3 IS NULL OR i.message_id < ?3)
              ORDER BY i.message_id DESC LIMIT ?4"
        ))
        .bind(me)
        .bind(group)
        .bind(before)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut page = Page::from_overfetch(rows.into_iter().map(Message::from).collect(), limit);
        page.items.reverse();
        Ok(page)
    }
}

/// A current member's role with the group's owner and member counts, read
/// under the write lock; `None` if `user` is not a current member.
/// Whether `actor`, as a member is now (read under the write lock), may
/// take `action`.
async fn allowed(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    id: Uuid,
    actor: Uuid,
    action: GroupAction,
    target: Option<Role>,
) -> StoreResult<bool> {
    let role: Option<String> = sqlx::query_scalar(
        "SELECT role FROM conversation_members
         WHERE conversation_id = ?1 AND user_id = ?2 AND left_at IS NULL",
    )
    .bind(id)
    .bind(actor)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(role.is_some_and(|role| action.allowed(Role::parse(&role), target)))
}

async fn member_counts(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    id: Uuid,
    user: Uuid,
) -> StoreResult<Option<(Role, i64, i64)>> {
    let row: Option<(String, i64, i64)> = sqlx::query_as(
        "SELECT cm.role,
            (SELECT count(*) FROM conversation_members
              WHERE conversation_id = ?1 AND left_at IS NULL AND role = 'owner'),
            (SELECT count(*) FROM conversation_members WHERE conversation_id = ?1 AND left_at IS NULL)
         FROM conversation_members cm
         WHERE cm.conversation_id = ?1 AND cm.user_id = ?2 AND cm.left_at IS NULL",
    )
    .bind(id)
    .bind(user)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|(role, owners, members)| (Role::parse(&role), owners, members)))
}
