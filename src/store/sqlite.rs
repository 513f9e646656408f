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
use sqlx::{FromRow, QueryBuilder, Sqlite};
use uuid::Uuid;

use super::*;

macro_rules! message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type, \
         m.is_read, m.read_at, m.created_at, m.updated_at, m.client_id"
    };
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
        let result = sqlx::query(
            "INSERT INTO users (id, email, last_seen, created_at, updated_at) VALUES (?1, ?2, ?3, ?3, ?3)
             ON CONFLICT (id) DO UPDATE SET email = excluded.email, updated_at = excluded.updated_at
             WHERE users.email <> excluded.email",
        )
        .bind(id)
        .bind(email)
        .bind(now)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(
                StoreError::Conflict("this email already belongs to another user"),
            ),
            Err(e) => Err(e.into()),
        }
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

    async fn contacts(&self, id: Uuid) -> StoreResult<Vec<Uuid>> {
        let ids = sqlx::query_scalar(
            "SELECT user_b FROM conversations WHERE user_a = ?1
             UNION ALL
             SELECT user_a FROM conversations WHERE user_b = ?1",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
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

        let users = users_of(batch);
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
        let mut plan = BatchPlan::new(batch, seqs.into_iter().collect(), &HashMap::new());
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
                    .push_bind(row.conversation_id)
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
                "INSERT INTO conversations (id, user_a, user_b, last_message_id, last_message_at, created_at) ",
            );
            upsert.push_values(&heads, |mut b, (id, a, b_user, message_id, at)| {
                b.push_bind(*id)
                    .push_bind(*a)
                    .push_bind(*b_user)
                    .push_bind(*message_id)
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

    async fn mark_read(
        &self,
        reader: Uuid,
        ids: &[Uuid],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<ReadMark>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut query: QueryBuilder<Sqlite> =
            QueryBuilder::new("UPDATE messages SET is_read = 1, read_at = ");
        query.push_bind(at);
        query.push(", updated_at = ");
        query.push_bind(at);
        query.push(" WHERE receiver_id = ");
        query.push_bind(reader);
        query.push(" AND NOT is_read AND id IN (");
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        query.push(") RETURNING id, sender_id");
        let rows: Vec<(Uuid, Uuid)> = query.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|(message_id, sender_id)| ReadMark {
                message_id,
                sender_id,
            })
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
        #[derive(FromRow)]
        struct Row {
            peer: Uuid,
            username: Option<String>,
            avatar_url: Option<String>,
            unread: i64,
            #[sqlx(flatten)]
            message: MessageRow,
        }
        let rows: Vec<Row> = sqlx::query_as(concat!(
            "SELECT c.peer, u.username, u.avatar_url,
                (SELECT count(*) FROM messages x
                  WHERE x.receiver_id = ?1 AND x.conversation_id = c.id AND NOT x.is_read) AS unread, ",
            message_columns!(),
            " FROM (SELECT id, user_b AS peer, last_message_id, last_message_at FROM conversations WHERE user_a = ?1
                    UNION ALL
                    SELECT id, user_a AS peer, last_message_id, last_message_at FROM conversations WHERE user_b = ?1) c
              JOIN messages m ON m.id = c.last_message_id
              JOIN users u ON u.id = c.peer
              ORDER BY c.last_message_id DESC LIMIT ?2"
        ))
        .bind(me)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ConversationSummary {
                user_id: r.peer,
                username: r.username,
                avatar_url: r.avatar_url,
                last_message: r.message.into(),
                unread_count: r.unread,
            })
            .collect())
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
            message_columns!(),
            " FROM messages_fts f JOIN messages m ON m.rowid = f.rowid
              WHERE messages_fts MATCH ?2 AND (m.sender_id = ?1 OR m.receiver_id = ?1)
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
                (SELECT count(*) FROM messages WHERE receiver_id = ?1),
                (SELECT count(*) FROM messages WHERE receiver_id = ?1 AND NOT is_read),
                (SELECT count(*) FROM conversations WHERE user_a = ?1 OR user_b = ?1)",
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
             FROM messages WHERE id = ?1 AND (sender_id = ?2 OR receiver_id = ?2)",
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
}
