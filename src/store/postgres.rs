//! The production store: Postgres through a `sqlx` pool.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use uuid::Uuid;

use super::*;

/// Columns of a message, in the order [`MessageRow`] reads them.
macro_rules! message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type::text AS message_type, \
         m.is_read, m.read_at, m.created_at, m.updated_at, m.client_id, m.conversation_id"
    };
}

/// The same, with the read state of the reader's inbox row `i`: in a group
/// each member has their own.
macro_rules! inbox_message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type::text AS message_type, \
         (i.read_at IS NOT NULL) AS is_read, i.read_at, m.created_at, m.updated_at, m.client_id, \
         m.conversation_id"
    };
}

/// Either: the message's own read state for a direct message, the reader's
/// (a `LEFT JOIN inbox i`) for a group message.
macro_rules! viewer_message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type::text AS message_type, \
         CASE WHEN m.receiver_id IS NULL THEN i.read_at IS NOT NULL ELSE m.is_read END AS is_read, \
         CASE WHEN m.receiver_id IS NULL THEN i.read_at ELSE m.read_at END AS read_at, \
         m.created_at, m.updated_at, m.client_id, m.conversation_id"
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
        sqlx::query(
            "INSERT INTO users (id, email) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, updated_at = NOW()
             WHERE users.email <> EXCLUDED.email",
        )
        .bind(id)
        .bind(email)
        .execute(&self.pool)
        .await?;
        Ok(())
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

    async fn contacts(&self, id: Uuid, group_limit: u32) -> StoreResult<Vec<Uuid>> {
        let ids = sqlx::query_scalar(
            "SELECT peer FROM (
                SELECT c.user_b AS peer FROM conversations c WHERE c.user_a = $1
                  AND EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.sender_id = $1)
                UNION
                SELECT c.user_a FROM conversations c WHERE c.user_b = $1
                  AND EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.sender_id = $1)
                UNION
                SELECT o.user_id FROM conversation_members me
                  JOIN conversations c ON c.id = me.conversation_id AND c.member_count <= $2
                  JOIN conversation_members o ON o.conversation_id = me.conversation_id
                    AND o.left_at IS NULL AND o.user_id <> $1
                WHERE me.user_id = $1 AND me.left_at IS NULL
                  AND EXISTS (SELECT 1 FROM messages m
                              WHERE m.conversation_id = me.conversation_id AND m.sender_id = $1)
             ) t WHERE peer NOT IN (SELECT blocked FROM blocks WHERE blocker = $1)",
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
            "SELECT EXISTS (SELECT 1 FROM messages WHERE conversation_id = $3 AND sender_id = $1)
                 OR EXISTS (SELECT 1 FROM conversation_members me
                              JOIN conversations c ON c.id = me.conversation_id AND c.member_count <= $4
                              JOIN conversation_members o ON o.conversation_id = me.conversation_id
                                AND o.user_id = $2 AND o.left_at IS NULL
                             WHERE me.user_id = $1 AND me.left_at IS NULL
                               AND EXISTS (SELECT 1 FROM messages m
                                           WHERE m.conversation_id = me.conversation_id AND m.sender_id = $1))",
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
            "INSERT INTO blocks (blocker, blocked, created_at) VALUES ($1, $2, $3)
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
        sqlx::query("DELETE FROM blocks WHERE blocker = $1 AND blocked = $2")
            .bind(blocker)
            .bind(blocked)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn blocks(&self, blocker: Uuid, limit: u32) -> StoreResult<Vec<Block>> {
        let blocks = sqlx::query_as(
            "SELECT blocked AS user_id, created_at AS blocked_at FROM blocks
             WHERE blocker = $1 ORDER BY created_at DESC, blocked LIMIT $2",
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
        let (blockers, blocked): (Vec<Uuid>, Vec<Uuid>) = pairs.iter().copied().unzip();
        let found = sqlx::query_as(
            "SELECT b.blocker, b.blocked FROM blocks b
               JOIN UNNEST($1::uuid[], $2::uuid[]) AS p(blocker, blocked)
                 ON b.blocker = p.blocker AND b.blocked = p.blocked",
        )
        .bind(blockers)
        .bind(blocked)
        .fetch_all(&self.pool)
        .await?;
        Ok(found)
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
        if groups_of(batch).is_empty()
            && let Some(outcomes) = self.insert_direct(batch).await?
        {
            return Ok(outcomes);
        }
        self.insert_in_steps(batch).await
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

    async fn stored(&self, ids: &[Uuid], writers: &[Uuid]) -> StoreResult<Vec<Stored>> {
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
        Ok(stored_messages(rows, seqs))
    }

    async fn mark_read(
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
                    WHERE i.user_id = $1 AND i.conversation_id = c.id
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
        .fetch_all(&self.pool)
        .await?;
        let ids: Vec<Uuid> = rows.iter().filter_map(|r| r.last_id).collect();
        let last: Vec<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            viewer_message_columns!(),
            " FROM messages m LEFT JOIN inbox i ON i.message_id = m.id AND i.user_id = $1
              WHERE m.id = ANY($2)"
        ))
        .bind(me)
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let last: HashMap<Uuid, Message> =
            last.into_iter().map(|r| (r.id, Message::from(r))).collect();
        Ok(rows.into_iter().map(|r| r.into_summary(&last)).collect())
    }

    async fn search(&self, me: Uuid, words: &SearchWords, limit: u32) -> StoreResult<Vec<Message>> {
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
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn stats(&self, me: Uuid) -> StoreResult<Stats> {
        // A member's inbox holds the group messages they sent too.
        let (total_sent, total_received, unread, conversations): (i64, i64, i64, i64) =
            sqlx::query_as(
                "SELECT
                (SELECT count(*) FROM messages WHERE sender_id = $1),
                (SELECT count(*) FROM messages WHERE receiver_id = $1)
                  + (SELECT count(*) FROM inbox WHERE user_id = $1)
                  - (SELECT count(*) FROM messages WHERE sender_id = $1 AND receiver_id IS NULL),
                (SELECT count(*) FROM messages WHERE receiver_id = $1 AND NOT is_read)
                  + (SELECT count(*) FROM inbox WHERE user_id = $1 AND read_at IS NULL),
                (SELECT count(*) FROM conversations WHERE user_a = $1 OR user_b = $1)
                  + (SELECT count(*) FROM conversation_members WHERE user_id = $1 AND left_at IS NULL)",
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
             FROM messages WHERE id = $1 AND (sender_id = $2 OR receiver_id = $2)
               AND receiver_id IS NOT NULL
             UNION ALL
             SELECT seq FROM inbox WHERE message_id = $1 AND user_id = $2",
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
                UNION ALL
                (SELECT i.seq AS my_seq, ",
            inbox_message_columns!(),
            " FROM inbox i JOIN messages m ON m.id = i.message_id
                  WHERE i.user_id = $1 AND i.seq > $2 ORDER BY i.seq LIMIT $3)
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

    async fn missing_users(&self, ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        let missing = sqlx::query_scalar(
            "SELECT u FROM UNNEST($1::uuid[]) AS u WHERE NOT EXISTS (SELECT 1 FROM users WHERE id = u)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(missing)
    }

    async fn create_group(&self, group: &NewGroup) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO conversations (id, kind, title, avatar_url, created_by, member_count,
                created_at, updated_at)
             VALUES ($1, 'group', $2, $3, $4, $5, $6, $6)",
        )
        .bind(group.id)
        .bind(&group.title)
        .bind(&group.avatar_url)
        .bind(group.creator)
        .bind(group.members.len() as i32 + 1)
        .bind(group.at)
        .execute(&mut *tx)
        .await?;
        let (users, roles): (Vec<Uuid>, Vec<&str>) = std::iter::once((group.creator, "owner"))
            .chain(group.members.iter().map(|&m| (m, "member")))
            .unzip();
        let result = sqlx::query(
            "INSERT INTO conversation_members (conversation_id, user_id, role, joined_at)
             SELECT $1, u, r, $4 FROM UNNEST($2::uuid[], $3::text[]) AS t(u, r)",
        )
        .bind(group.id)
        .bind(users)
        .bind(roles)
        .bind(group.at)
        .execute(&mut *tx)
        .await;
        match result {
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
            "SELECT id, title, avatar_url, created_by, created_at, updated_at,
                member_count::int8 AS member_count
             FROM conversations WHERE id = $1 AND kind = 'group'",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let members: Vec<MemberRow> = sqlx::query_as(
            "SELECT cm.user_id, u.username, u.avatar_url, cm.role, cm.joined_at
             FROM conversation_members cm JOIN users u ON u.id = cm.user_id
             WHERE cm.conversation_id = $1 AND cm.left_at IS NULL
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
             LEFT JOIN conversation_members cm ON cm.conversation_id = c.id AND cm.user_id = $2
             WHERE c.id = $1",
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
        let mut tx = self.pool.begin().await?;
        if !lock_group(&mut tx, id).await? {
            return Ok(MemberChange::NotMember);
        }
        if !allowed(&mut tx, id, actor, GroupAction::Edit, None).await? {
            return Ok(MemberChange::Denied);
        }
        sqlx::query(
            "UPDATE conversations SET
                title = COALESCE($2, title),
                avatar_url = CASE WHEN $3 THEN $4 ELSE avatar_url END,
                updated_at = $5
             WHERE id = $1",
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
        let mut tx = self.pool.begin().await?;
        let count: Option<i32> = sqlx::query_scalar(
            "SELECT member_count FROM conversations WHERE id = $1 AND kind = 'group' FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(count) = count else {
            return Ok(Added::NoGroup);
        };
        if !allowed(&mut tx, id, actor, GroupAction::AddMembers, None).await? {
            return Ok(Added::Denied);
        }
        let present: Vec<Uuid> = sqlx::query_scalar(
            "SELECT user_id FROM conversation_members
             WHERE conversation_id = $1 AND left_at IS NULL AND user_id = ANY($2)",
        )
        .bind(id)
        .bind(users)
        .fetch_all(&mut *tx)
        .await?;
        let joining: Vec<Uuid> = users
            .iter()
            .copied()
            .filter(|u| !present.contains(u))
            .collect();
        let members = i64::from(count);
        if members + joining.len() as i64 > i64::from(max) {
            return Ok(Added::TooMany { members });
        }
        if !joining.is_empty() {
            sqlx::query(
                "INSERT INTO conversation_members (conversation_id, user_id, role, joined_at)
                 SELECT $1, u, 'member', $3 FROM UNNEST($2::uuid[]) AS u
                 ON CONFLICT (conversation_id, user_id) DO UPDATE
                   SET role = 'member', joined_at = EXCLUDED.joined_at, left_at = NULL",
            )
            .bind(id)
            .bind(&joining)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE conversations SET member_count = member_count + $2, updated_at = $3
                 WHERE id = $1",
            )
            .bind(id)
            .bind(joining.len() as i32)
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
        let mut tx = self.pool.begin().await?;
        let Some((role, owners, members)) = lock_member(&mut tx, id, user).await? else {
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
            "UPDATE conversation_members SET left_at = $3
             WHERE conversation_id = $1 AND user_id = $2",
        )
        .bind(id)
        .bind(user)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE conversations SET member_count = member_count - 1, updated_at = $2 WHERE id = $1",
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
        let mut tx = self.pool.begin().await?;
        let Some((current, owners, members)) = lock_member(&mut tx, id, user).await? else {
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
            "UPDATE conversation_members SET role = $3 WHERE conversation_id = $1 AND user_id = $2",
        )
        .bind(id)
        .bind(user)
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE conversations SET updated_at = $2 WHERE id = $1")
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
              WHERE i.user_id = $1 AND i.conversation_id = $2 AND ($3::uuid IS NULL OR i.message_id < $3)
              ORDER BY i.message_id DESC LIMIT $4"
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

/// Locks a group's row (every change to the group and its members takes
/// it first); `false` if there is no such group.
async fn lock_group(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, id: Uuid) -> StoreResult<bool> {
    let group: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM conversations WHERE id = $1 AND kind = 'group' FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(group.is_some())
}

/// Whether `actor`, as a member is now (read under the group's lock), may
/// take `action`.
async fn allowed(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: Uuid,
    actor: Uuid,
    action: GroupAction,
    target: Option<Role>,
) -> StoreResult<bool> {
    let role: Option<String> = sqlx::query_scalar(
        "SELECT role FROM conversation_members
         WHERE conversation_id = $1 AND user_id = $2 AND left_at IS NULL",
    )
    .bind(id)
    .bind(actor)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(role.is_some_and(|role| action.allowed(Role::parse(&role), target)))
}

/// Locks a group and reads a current member's role with the group's owner
/// and member counts; `None` if `user` is not a current member.
async fn lock_member(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: Uuid,
    user: Uuid,
) -> StoreResult<Option<(Role, i64, i64)>> {
    if !lock_group(tx, id).await? {
        return Ok(None);
    }
    let row: Option<(String, i64, i64)> = sqlx::query_as(
        "SELECT cm.role,
            (SELECT count(*) FROM conversation_members
              WHERE conversation_id = $1 AND left_at IS NULL AND role = 'owner'),
            (SELECT count(*) FROM conversation_members WHERE conversation_id = $1 AND left_at IS NULL)
         FROM conversation_members cm
         WHERE cm.conversation_id = $1 AND cm.user_id = $2 AND cm.left_at IS NULL",
    )
    .bind(id)
    .bind(user)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|(role, owners, members)| (Role::parse(&role), owners, members)))
}

impl PgStore {
    /// Any batch, one statement per step inside a transaction: the groups'
    /// rows locked and their members read, the users' rows locked, then the
    /// messages, numbers, conversations and inbox rows written. Group
    /// messages and batches naming an unknown user take this path.
    async fn insert_in_steps(&self, batch: &[NewMessage]) -> StoreResult<Vec<InsertOutcome>> {
        let mut tx = self.pool.begin().await?;

        // Lock the batch's groups, then every user it touches, each in id
        // order; see the module docs. A group's lock also orders its
        // messages against membership changes: a member removed before this
        // commit gets none of them, one removed after gets all of them.
        let group_ids = groups_of(batch);
        let mut groups: GroupMembers = HashMap::new();
        if !group_ids.is_empty() {
            let found: Vec<Uuid> = sqlx::query_scalar(
                "SELECT id FROM conversations WHERE id = ANY($1) AND kind = 'group'
                 ORDER BY id FOR UPDATE",
            )
            .bind(&group_ids)
            .fetch_all(&mut *tx)
            .await?;
            groups.extend(found.into_iter().map(|g| (g, Vec::new())));
            let members: Vec<(Uuid, Uuid)> = sqlx::query_as(
                "SELECT conversation_id, user_id FROM conversation_members
                 WHERE conversation_id = ANY($1) AND left_at IS NULL
                 ORDER BY conversation_id, joined_at, user_id",
            )
            .bind(&group_ids)
            .fetch_all(&mut *tx)
            .await?;
            for (group, user) in members {
                groups.entry(group).or_default().push(user);
            }
        }
        let users = users_of(batch, &groups);
        let seqs: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT id, msg_seq FROM users WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(&users)
        .fetch_all(&mut *tx)
        .await?;

        // No lookup of earlier `client_id`s before inserting: the insert skips
        // rows whose key is taken (ON CONFLICT), and only then, in the rare
        // case that happened, are the stored messages read back.
        let mut plan = BatchPlan::new(batch, seqs.into_iter().collect(), &groups, &HashMap::new());
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
            let existing = taken_keys(&mut tx, &plan, &inserted).await?;
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

        let heads = plan.conversation_heads(|r| inserted.contains(&r.message.id));
        upsert_conversation_heads(&mut *tx, heads).await?;

        let stored = |r: &PlannedRow| inserted.contains(&r.message.id);
        let inbox = plan.inbox_rows(stored);
        if !inbox.is_empty() {
            let mut cols = InboxColumns::default();
            for (user, seq, message, group, read) in inbox {
                cols.user.push(user);
                cols.seq.push(seq);
                cols.message.push(message);
                cols.group.push(group);
                cols.read_at.push(read);
            }
            sqlx::query(
                "INSERT INTO inbox (user_id, seq, message_id, conversation_id, read_at)
                 SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::uuid[], $4::uuid[], $5::timestamptz[])",
            )
            .bind(cols.user)
            .bind(cols.seq)
            .bind(cols.message)
            .bind(cols.group)
            .bind(cols.read_at)
            .execute(&mut *tx)
            .await?;
            let (mut ids, mut messages, mut times) = (Vec::new(), Vec::new(), Vec::new());
            for (group, message, at) in plan.group_heads(stored) {
                ids.push(group);
                messages.push(message);
                times.push(at);
            }
            sqlx::query(
                "UPDATE conversations c SET last_message_id = v.m, last_message_at = v.at
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[]) AS v(id, m, at)
                 WHERE c.id = v.id AND (c.last_message_at IS NULL OR c.last_message_at <= v.at)",
            )
            .bind(ids)
            .bind(messages)
            .bind(times)
            .execute(&mut *tx)
            .await?;
        }
        // Until here a lost connection rolls everything back; during the
        // commit it may have landed.
        tx.commit().await.map_err(StoreError::after_sending)?;
        Ok(plan.outcomes)
    }
}

impl PgStore {
    /// A batch of direct messages as one statement, committed on its own:
    /// one round trip instead of six (BEGIN, lock, insert, number,
    /// conversations, COMMIT), so a send waits for little more than the
    /// commit's fsync.
    ///
    /// The numbering rule stays in [`BatchPlan`]: the batch is planned with
    /// every user's base at zero, which gives each row its number relative
    /// to the user's current `msg_seq` and each user's count; the statement
    /// locks the users in id order, adds the bases and bumps `msg_seq` by
    /// the counts, as the steps would. `None` when a user of the batch does
    /// not exist: then the statement wrote nothing, and the batch takes the
    /// steps, which answer each message on its own.
    async fn insert_direct(&self, batch: &[NewMessage]) -> StoreResult<Option<Vec<InsertOutcome>>> {
        let users = users_of(batch, &HashMap::new());
        let zero: HashMap<Uuid, i64> = users.iter().map(|&u| (u, 0)).collect();
        let relative = BatchPlan::new(batch, zero, &HashMap::new(), &HashMap::new());
        let (ids, counts): (Vec<Uuid>, Vec<i64>) =
            relative.seqs.iter().map(|(k, v)| (*k, *v)).unzip();
        let mut cols = MessageColumns::default();
        for row in &relative.rows {
            cols.push(row);
        }
        let heads = HeadColumns::from(relative.conversation_heads(|_| true));
        // Acquired first: failing to reach the database here sends nothing.
        let mut conn = self.pool.acquire().await?;
        // `locked` is materialized so the row locks are taken in id order
        // before anything else touches the rows; `complete` makes every
        // later step write nothing unless all the batch's users exist. A
        // conversation whose latest row lost an idempotency race is left to
        // the fix-up below.
        let rows: Vec<(bool, Uuid, Option<i64>)> = sqlx::query_as(
            "WITH locked AS MATERIALIZED (
                SELECT id, msg_seq FROM users WHERE id = ANY($1) ORDER BY id FOR UPDATE
             ), complete AS (
                SELECT count(*) = cardinality($1::uuid[]) AS ok FROM locked
             ), bumped AS (
                UPDATE users u SET msg_seq = l.msg_seq + c.n
                FROM locked l
                  JOIN UNNEST($1::uuid[], $2::int8[]) AS c(id, n) ON c.id = l.id,
                  complete
                WHERE u.id = l.id AND complete.ok
                RETURNING u.id, l.msg_seq AS base
             ), ins AS (
                INSERT INTO messages (id, sender_id, receiver_id, content, client_id,
                    conversation_id, sender_seq, receiver_seq, created_at, updated_at)
                SELECT t.id, t.sender_id, t.receiver_id, t.content, t.client_id,
                    t.conversation_id, s.base + t.sender_seq, r.base + t.receiver_seq,
                    t.created_at, t.created_at
                FROM UNNEST($3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::text[],
                            $8::uuid[], $9::int8[], $10::int8[], $11::timestamptz[])
                  AS t(id, sender_id, receiver_id, content, client_id,
                       conversation_id, sender_seq, receiver_seq, created_at)
                  JOIN bumped s ON s.id = t.sender_id
                  JOIN bumped r ON r.id = t.receiver_id
                ON CONFLICT (sender_id, client_id) WHERE client_id IS NOT NULL DO NOTHING
                RETURNING id
             ), heads AS (
                INSERT INTO conversations (id, user_a, user_b, last_message_id, last_message_at)
                SELECT h.* FROM UNNEST($12::uuid[], $13::uuid[], $14::uuid[], $15::uuid[],
                                       $16::timestamptz[]) AS h(id, a, b, m, at)
                WHERE h.m IN (SELECT id FROM ins)
                ON CONFLICT (id) DO UPDATE
                  SET last_message_id = EXCLUDED.last_message_id,
                      last_message_at = EXCLUDED.last_message_at
                  WHERE conversations.last_message_at <= EXCLUDED.last_message_at
             )
             SELECT true, id, base FROM bumped
             UNION ALL
             SELECT false, id, NULL FROM ins",
        )
        .bind(&ids)
        .bind(counts)
        .bind(cols.id)
        .bind(cols.sender_id)
        .bind(cols.receiver_id)
        .bind(cols.content)
        .bind(cols.client_id)
        .bind(cols.conversation_id)
        .bind(cols.sender_seq)
        .bind(cols.receiver_seq)
        .bind(cols.created_at)
        .bind(heads.id)
        .bind(heads.user_a)
        .bind(heads.user_b)
        .bind(heads.message)
        .bind(heads.at)
        .fetch_all(&mut *conn)
        .await
        // One statement, committed on its own: once sent, a lost connection
        // leaves its outcome unknown.
        .map_err(StoreError::after_sending)?;

        let mut bases = HashMap::with_capacity(ids.len());
        let mut inserted = HashSet::with_capacity(relative.rows.len());
        for (is_user, id, base) in rows {
            match (is_user, base) {
                (true, Some(base)) => {
                    bases.insert(id, base);
                }
                _ => {
                    inserted.insert(id);
                }
            }
        }
        if bases.len() < ids.len() {
            return Ok(None);
        }
        // The same plan with the real bases: the numbers the statement wrote.
        let mut plan = BatchPlan::new(batch, bases, &HashMap::new(), &HashMap::new());
        if inserted.len() < plan.rows.len() {
            // Rows skipped for a taken `client_id`: the message that took it
            // is committed (the insert waited for it), so it is read back
            // and answered as the duplicate; the rows' numbers stay unused,
            // as in the steps. Their conversations are pointed at the
            // latest row that was stored.
            // (The statement committed: a failure from here on leaves the
            // batch's answer, not its outcome, unknown.)
            let existing = taken_keys(&mut conn, &plan, &inserted)
                .await
                .map_err(StoreError::once_sent)?;
            plan.resolve_conflicts(&existing);
            let heads = plan.conversation_heads(|r| inserted.contains(&r.message.id));
            upsert_conversation_heads(&mut *conn, heads)
                .await
                .map_err(StoreError::once_sent)?;
        }
        Ok(Some(plan.outcomes))
    }
}

/// The stored messages holding the `client_id`s of the rows a batch's
/// insert skipped, keyed by the skipped row's id: one query for them all.
async fn taken_keys(
    conn: &mut sqlx::PgConnection,
    plan: &BatchPlan,
    inserted: &HashSet<Uuid>,
) -> StoreResult<HashMap<Uuid, Message>> {
    let skipped: Vec<&PlannedRow> = plan
        .rows
        .iter()
        .filter(|r| !inserted.contains(&r.message.id))
        .collect();
    let senders: Vec<Uuid> = skipped.iter().map(|r| r.message.sender_id).collect();
    let keys: Vec<Option<String>> = skipped
        .iter()
        .map(|r| r.message.client_id.clone())
        .collect();
    let rows: Vec<MessageRow> = sqlx::query_as(concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages m
          JOIN UNNEST($1::uuid[], $2::text[]) AS k(sender_id, client_id)
            ON m.sender_id = k.sender_id AND m.client_id = k.client_id"
    ))
    .bind(senders)
    .bind(keys)
    .fetch_all(&mut *conn)
    .await?;
    let stored: HashMap<(Uuid, String), Message> = rows
        .into_iter()
        .map(Message::from)
        .filter_map(|m| Some(((m.sender_id, m.client_id.clone()?), m)))
        .collect();
    Ok(skipped
        .into_iter()
        .filter_map(|r| {
            let key = (r.message.sender_id, r.message.client_id.clone()?);
            stored.get(&key).map(|m| (r.message.id, m.clone()))
        })
        .collect())
}

/// Points each direct conversation at its latest message (creating the row
/// on the first one); a later message already recorded is kept.
async fn upsert_conversation_heads<'e>(
    db: impl sqlx::PgExecutor<'e>,
    heads: Vec<ConversationHead>,
) -> StoreResult<()> {
    if heads.is_empty() {
        return Ok(());
    }
    let conv = HeadColumns::from(heads);
    sqlx::query(
        "INSERT INTO conversations (id, user_a, user_b, last_message_id, last_message_at)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::timestamptz[])
         ON CONFLICT (id) DO UPDATE
           SET last_message_id = EXCLUDED.last_message_id,
               last_message_at = EXCLUDED.last_message_at
           WHERE conversations.last_message_at <= EXCLUDED.last_message_at",
    )
    .bind(conv.id)
    .bind(conv.user_a)
    .bind(conv.user_b)
    .bind(conv.message)
    .bind(conv.at)
    .execute(db)
    .await?;
    Ok(())
}

/// Conversation heads as column arrays, for `UNNEST`.
#[derive(Default)]
struct HeadColumns {
    id: Vec<Uuid>,
    user_a: Vec<Uuid>,
    user_b: Vec<Uuid>,
    message: Vec<Uuid>,
    at: Vec<DateTime<Utc>>,
}

impl From<Vec<ConversationHead>> for HeadColumns {
    fn from(heads: Vec<ConversationHead>) -> Self {
        let mut cols = Self::default();
        for (id, a, b, m, at) in heads {
            cols.id.push(id);
            cols.user_a.push(a);
            cols.user_b.push(b);
            cols.message.push(m);
            cols.at.push(at);
        }
        cols
    }
}

/// Group members' inbox rows as column arrays, for `UNNEST`.
#[derive(Default)]
struct InboxColumns {
    user: Vec<Uuid>,
    seq: Vec<i64>,
    message: Vec<Uuid>,
    group: Vec<Uuid>,
    read_at: Vec<Option<DateTime<Utc>>>,
}

/// Column arrays for one multi-row `INSERT ... SELECT FROM UNNEST`.
#[derive(Default)]
struct MessageColumns {
    id: Vec<Uuid>,
    sender_id: Vec<Uuid>,
    receiver_id: Vec<Option<Uuid>>,
    content: Vec<String>,
    client_id: Vec<Option<String>>,
    conversation_id: Vec<Uuid>,
    sender_seq: Vec<Option<i64>>,
    receiver_seq: Vec<Option<i64>>,
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
        self.conversation_id.push(m.conversation_id);
        self.sender_seq.push(row.sender_seq);
        self.receiver_seq.push(row.receiver_seq);
        self.created_at.push(m.created_at);
    }
}
