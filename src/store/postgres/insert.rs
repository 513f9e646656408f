//! The write path: a batch of messages numbered and stored, in one statement
//! when it can be, in steps inside a transaction when not.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;

impl PgStore {
    pub(super) async fn insert_messages(
        &self,
        batch: &[NewMessage],
    ) -> StoreResult<Vec<InsertOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // Group messages and messages with files take the steps.
        if groups_of(batch).is_empty()
            && batch.iter().all(|m| m.attachments.is_empty())
            && let Some(outcomes) = self.insert_direct(batch).await?
        {
            return Ok(outcomes);
        }
        self.insert_in_steps(batch).await
    }
}

impl PgStore {
    /// Any batch, one statement per step inside a transaction: the groups'
    /// rows locked and their members read, the users' rows locked, then the
    /// messages, numbers, conversations and inbox rows written. Group
    /// messages and batches naming an unknown user take this path.
    async fn insert_in_steps(&self, batch: &[NewMessage]) -> StoreResult<Vec<InsertOutcome>> {
        let mut tx = self.begin_write().await?;

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
            "SELECT id, msg_seq FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
        )
        .bind(&users)
        .fetch_all(&mut *tx)
        .await?;

        // No lookup of earlier `client_id`s before inserting: the statement
        // records each key in `message_keys` and inserts only the rows whose
        // key it recorded (one taken already is skipped), and only then, in the rare
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
            "WITH t AS (
                SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
                                     $6::uuid[], $7::int8[], $8::int8[], $9::timestamptz[],
                                     $10::uuid[], $11::text[])
                  AS t(id, sender_id, receiver_id, content, client_id,
                       conversation_id, sender_seq, receiver_seq, created_at, reply_to, kind)
             ), keyed AS (
                INSERT INTO message_keys (sender_id, client_id, message_id)
                SELECT sender_id, client_id, id FROM t WHERE client_id IS NOT NULL
                ON CONFLICT DO NOTHING
                RETURNING message_id
             )
             INSERT INTO messages (id, sender_id, receiver_id, content, client_id,
                conversation_id, sender_seq, receiver_seq, created_at, updated_at, reply_to,
                message_type)
             SELECT id, sender_id, receiver_id, content, client_id,
                conversation_id, sender_seq, receiver_seq, created_at, created_at, reply_to,
                CAST(kind AS message_type)
             FROM t WHERE client_id IS NULL OR id IN (SELECT message_id FROM keyed)
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
        .bind(cols.reply_to)
        .bind(cols.kind)
        .fetch_all(&mut *tx)
        .await?;
        let inserted: HashSet<Uuid> = inserted.into_iter().collect();

        let files = plan.attachment_links(|r| inserted.contains(&r.message.id));
        if !files.is_empty() {
            let (mut ids, mut messages, mut owners) = (Vec::new(), Vec::new(), Vec::new());
            for (file, message, owner) in files {
                ids.push(file);
                messages.push(message);
                owners.push(owner);
            }
            sqlx::query(
                "UPDATE attachments a SET message_id = v.m
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[]) AS v(id, m, owner)
                 WHERE a.id = v.id AND a.owner_id = v.owner AND a.message_id IS NULL",
            )
            .bind(ids)
            .bind(messages)
            .bind(owners)
            .execute(&mut *tx)
            .await?;
        }

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
                SELECT id, msg_seq FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE
             ), complete AS (
                SELECT count(*) = cardinality($1::uuid[]) AS ok FROM locked
             ), bumped AS (
                UPDATE users u SET msg_seq = l.msg_seq + c.n
                FROM locked l
                  JOIN UNNEST($1::uuid[], $2::int8[]) AS c(id, n) ON c.id = l.id,
                  complete
                WHERE u.id = l.id AND complete.ok
                RETURNING u.id, l.msg_seq AS base
             ), keyed AS (
                INSERT INTO message_keys (sender_id, client_id, message_id)
                SELECT k.sender_id, k.client_id, k.id
                FROM UNNEST($3::uuid[], $4::uuid[], $7::text[]) AS k(id, sender_id, client_id)
                WHERE k.client_id IS NOT NULL AND (SELECT ok FROM complete)
                ON CONFLICT DO NOTHING
                RETURNING message_id
             ), ins AS (
                INSERT INTO messages (id, sender_id, receiver_id, content, client_id,
                    conversation_id, sender_seq, receiver_seq, created_at, updated_at, reply_to)
                SELECT t.id, t.sender_id, t.receiver_id, t.content, t.client_id,
                    t.conversation_id, s.base + t.sender_seq, r.base + t.receiver_seq,
                    t.created_at, t.created_at, t.reply_to
                FROM UNNEST($3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::text[],
                            $8::uuid[], $9::int8[], $10::int8[], $11::timestamptz[], $17::uuid[])
                  AS t(id, sender_id, receiver_id, content, client_id,
                       conversation_id, sender_seq, receiver_seq, created_at, reply_to)
                  JOIN bumped s ON s.id = t.sender_id
                  JOIN bumped r ON r.id = t.receiver_id
                WHERE t.client_id IS NULL OR t.id IN (SELECT message_id FROM keyed)
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
        .bind(cols.reply_to)
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
        " FROM UNNEST($1::uuid[], $2::text[]) AS q(sender_id, client_id)
          JOIN message_keys k ON k.sender_id = q.sender_id AND k.client_id = q.client_id
          JOIN messages m ON m.id = k.message_id"
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
    reply_to: Vec<Option<Uuid>>,
    kind: Vec<&'static str>,
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
        self.reply_to.push(m.reply_to.as_ref().map(|r| r.id));
        self.kind.push(m.message_type.as_str());
    }
}
