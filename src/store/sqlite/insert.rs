//! The write path: a batch of messages numbered and stored under the
//! database write lock.

use std::collections::{HashMap, HashSet};

use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use super::*;

impl SqliteStore {
    pub(super) async fn insert_messages(
        &self,
        batch: &[NewMessage],
    ) -> StoreResult<Vec<InsertOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;

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
        // 12 parameters a row stays far below SQLite's 32,766-variable limit.
        for chunk in plan.rows.chunks(1000) {
            let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO messages (id, sender_id, receiver_id, content, client_id,
                    conversation_id, sender_seq, receiver_seq, created_at, updated_at, reply_to,
                    message_type) ",
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
                    .push_bind(m.created_at)
                    .push_bind(m.reply_to.as_ref().map(|r| r.id))
                    .push_bind(m.message_type.as_str());
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

        for (file, message, owner) in plan.attachment_links(|r| inserted.contains(&r.message.id)) {
            sqlx::query(
                "UPDATE attachments SET message_id = ?2
                 WHERE id = ?1 AND owner_id = ?3 AND message_id IS NULL",
            )
            .bind(file)
            .bind(message)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
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
}
