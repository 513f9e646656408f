//! The production store: Postgres through a `sqlx` pool.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::FromRow;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use uuid::Uuid;

use super::*;

/// Columns of a message, in the order [`MessageRow`] reads them.
macro_rules! message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type::text AS message_type, \
         m.is_read, m.read_at, m.created_at, m.updated_at, m.client_id"
    };
}

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects lazily: the node starts (and reports unready) even while
    /// Postgres is down, and recovers without a restart when it returns.
    pub fn connect_lazy(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Internal(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn upsert_user(&self, id: Uuid, email: &str) -> StoreResult<()> {
        // Only a changed email takes the row lock: a user's first request on
        // every node would otherwise contend with their own message writes.
        let result = sqlx::query(
            "INSERT INTO users (id, email) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, updated_at = NOW()
             WHERE users.email <> EXCLUDED.email",
        )
        .bind(id)
        .bind(email)
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
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    async fn update_profile(&self, id: Uuid, patch: &ProfilePatch) -> StoreResult<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE users SET
                username = CASE WHEN $2 THEN $3 ELSE username END,
                avatar_url = CASE WHEN $4 THEN $5 ELSE avatar_url END,
                updated_at = NOW()
             WHERE id = $1 RETURNING {USER_COLUMNS}"
        )))
        .bind(id)
        .bind(patch.username.is_some())
        .bind(patch.username.clone().flatten())
        .bind(patch.avatar_url.is_some())
        .bind(patch.avatar_url.clone().flatten())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    async fn set_presence(&self, id: Uuid, online: bool, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("UPDATE users SET is_online = $2, last_seen = $3 WHERE id = $1")
            .bind(id)
            .bind(online)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn contacts(&self, id: Uuid) -> StoreResult<Vec<Uuid>> {
        let ids = sqlx::query_scalar(
            "SELECT user_b FROM conversations WHERE user_a = $1
             UNION ALL
             SELECT user_a FROM conversations WHERE user_b = $1",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    async fn is_contact(&self, a: Uuid, b: Uuid) -> StoreResult<bool> {
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM conversations WHERE id = $1")
            .bind(conversation_id(a, b))
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    async fn insert_messages(&self, batch: &[NewMessage]) -> StoreResult<Vec<InsertOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;

        // Lock every user of the batch in id order; see the module docs.
        let users = users_of(batch);
        let seqs: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT id, msg_seq FROM users WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(&users)
        .fetch_all(&mut *tx)
        .await?;

        // No lookup of earlier `client_id`s before inserting: the insert skips
        // rows whose key is taken (ON CONFLICT), and only then, in the rare
        // case that happened, are the stored messages read back.
        let mut plan = BatchPlan::new(batch, seqs.into_iter().collect(), &HashMap::new());
        if plan.rows.is_empty() {
            tx.commit().await?;
            return Ok(plan.outcomes);
        }
        let mut cols = MessageColumns::default();
        for row in &plan.rows {
            cols.push(row);
        }
        let inserted: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO messages (id, sender_id, receiver_id, content, client_id,
                conversation_id, sender_seq, receiver_seq, created_at, updated_at)
             SELECT id, sender_id, receiver_id, content, client_id,
                conversation_id, sender_seq, receiver_seq, created_at, created_at
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
                         $6::uuid[], $7::int8[], $8::int8[], $9::timestamptz[])
               AS t(id, sender_id, receiver_id, content, client_id,
                    conversation_id, sender_seq, receiver_seq, created_at)
             ON CONFLICT (sender_id, client_id) WHERE client_id IS NOT NULL DO NOTHING
             RETURNING id",
        )
        .bind(cols.id)
        .bind(cols.sender_id)
        .bind(cols.receiver_id)
        .bind(cols.content)
        .bind(cols.client_id)
        .bind(cols.conversation_id)
        .bind(cols.sender_seq)
        .bind(cols.receiver_seq)
        .bind(cols.created_at)
        .fetch_all(&mut *tx)
        .await?;
        let inserted: HashSet<Uuid> = inserted.into_iter().collect();

        if inserted.len() < plan.rows.len() {
            // Their sequence numbers stay unused: sync only needs them to grow.
            let mut existing = HashMap::new();
            for row in plan
                .rows
                .iter()
                .filter(|r| !inserted.contains(&r.message.id))
            {
                let stored: Option<MessageRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages m WHERE m.sender_id = $1 AND m.client_id = $2"
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

        let (ids, values): (Vec<Uuid>, Vec<i64>) = plan.seqs.iter().map(|(k, v)| (*k, *v)).unzip();
        sqlx::query(
            "UPDATE users SET msg_seq = v.seq
             FROM UNNEST($1::uuid[], $2::int8[]) AS v(id, seq)
             WHERE users.id = v.id AND users.id = ANY($1)",
        )
        .bind(ids)
        .bind(values)
        .execute(&mut *tx)
        .await?;

        let mut conv: (
            Vec<Uuid>,
            Vec<Uuid>,
            Vec<Uuid>,
            Vec<Uuid>,
            Vec<DateTime<Utc>>,
        ) = Default::default();
        for (id, a, b, m, at) in plan.conversation_heads(|r| inserted.contains(&r.message.id)) {
            conv.0.push(id);
            conv.1.push(a);
            conv.2.push(b);
            conv.3.push(m);
            conv.4.push(at);
        }
        if !conv.0.is_empty() {
            sqlx::query(
                "INSERT INTO conversations (id, user_a, user_b, last_message_id, last_message_at)
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::timestamptz[])
                 ON CONFLICT (id) DO UPDATE
                   SET last_message_id = EXCLUDED.last_message_id,
                       last_message_at = EXCLUDED.last_message_at
                   WHERE conversations.last_message_at <= EXCLUDED.last_message_at",
            )
            .bind(conv.0)
            .bind(conv.1)
            .bind(conv.2)
            .bind(conv.3)
            .bind(conv.4)
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
            " FROM messages m WHERE m.id = $1"
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
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "UPDATE messages SET is_read = true, read_at = $3, updated_at = $3
             WHERE id = ANY($2) AND receiver_id = $1 AND NOT is_read
             RETURNING id, sender_id",
        )
        .bind(reader)
        .bind(ids)
        .bind(at)
        .fetch_all(&self.pool)
        .await?;
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
            " FROM messages m WHERE m.conversation_id = $1 AND ($2::uuid IS NULL OR m.id < $2)
              ORDER BY m.id DESC LIMIT $3"
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
                  WHERE x.receiver_id = $1 AND x.conversation_id = c.id AND NOT x.is_read) AS unread, ",
            message_columns!(),
            " FROM (SELECT id, user_b AS peer, last_message_id, last_message_at FROM conversations WHERE user_a = $1
                    UNION ALL
                    SELECT id, user_a AS peer, last_message_id, last_message_at FROM conversations WHERE user_b = $1) c
              JOIN messages m ON m.id = c.last_message_id
              JOIN users u ON u.id = c.peer
              ORDER BY c.last_message_at DESC, c.last_message_id DESC LIMIT $2"
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
        let rows: Vec<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages m
              WHERE to_tsvector('simple', m.content) @@ plainto_tsquery('simple', $2)
                AND (m.sender_id = $1 OR m.receiver_id = $1)
              ORDER BY m.id DESC LIMIT $3"
        ))
        .bind(me)
        .bind(words.words().join(" "))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn stats(&self, me: Uuid) -> StoreResult<Stats> {
        let (total_sent, total_received, unread, conversations): (i64, i64, i64, i64) =
            sqlx::query_as(
                "SELECT
                (SELECT count(*) FROM messages WHERE sender_id = $1),
                (SELECT count(*) FROM messages WHERE receiver_id = $1),
                (SELECT count(*) FROM messages WHERE receiver_id = $1 AND NOT is_read),
                (SELECT count(*) FROM conversations WHERE user_a = $1 OR user_b = $1)",
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
            "SELECT CASE WHEN sender_id = $2 THEN sender_seq ELSE receiver_seq END
             FROM messages WHERE id = $1 AND (sender_id = $2 OR receiver_id = $2)",
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
            "SELECT * FROM (
                (SELECT m.sender_seq AS my_seq, ",
            message_columns!(),
            " FROM messages m WHERE m.sender_id = $1 AND m.sender_seq > $2 ORDER BY m.sender_seq LIMIT $3)
                UNION ALL
                (SELECT m.receiver_seq AS my_seq, ",
            message_columns!(),
            " FROM messages m WHERE m.receiver_id = $1 AND m.receiver_seq > $2 ORDER BY m.receiver_seq LIMIT $3)
             ) t ORDER BY my_seq LIMIT $3"
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
        let seqs = sqlx::query_as("SELECT id, msg_seq FROM users WHERE id = ANY($1)")
            .bind(users)
            .fetch_all(&self.pool)
            .await?;
        Ok(seqs)
    }
}

/// Column arrays for one multi-row `INSERT ... SELECT FROM UNNEST`.
#[derive(Default)]
struct MessageColumns {
    id: Vec<Uuid>,
    sender_id: Vec<Uuid>,
    receiver_id: Vec<Uuid>,
    content: Vec<String>,
    client_id: Vec<Option<String>>,
    conversation_id: Vec<Uuid>,
    sender_seq: Vec<i64>,
    receiver_seq: Vec<i64>,
    created_at: Vec<DateTime<Utc>>,
}

impl MessageColumns {
    fn push(&mut self, row: &PlannedRow) {
        let m = &row.message;
        self.id.push(m.id);
        self.sender_id.push(m.sender_id);
        self.receiver_id.push(m.receiver_id);
        self.content.push(m.content.clone());
        self.client_id.push(m.client_id.clone());
        self.conversation_id.push(row.conversation_id);
        self.sender_seq.push(row.sender_seq);
        self.receiver_seq.push(row.receiver_seq);
        self.created_at.push(m.created_at);
    }
}
