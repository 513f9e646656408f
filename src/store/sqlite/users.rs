//! Users, in what SQLite writes its own way: the first insert (times from
//! the application) and lookups by `IN` lists. The rest is `portable_users!`.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use super::*;
use crate::store::batch::{distinct, last_per_key};
use crate::store::portable::contacts_sql;

portable_users!(SqliteStore);

impl SqliteStore {
    /// SQLite compares text byte by byte already.
    const BYTE_ORDER: &str = "";
}

impl SqliteStore {
    pub(super) async fn upsert_users(&self, users: &[(Uuid, String)]) -> StoreResult<()> {
        let users = last_per_key(users, |(id, _)| *id);
        if users.is_empty() {
            return Ok(());
        }
        let now = now();
        // One statement, so one commit (one sync to disk) for the batch.
        let mut query: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO users (id, email, last_seen, created_at, updated_at) ");
        query.push_values(users, |mut row, (id, email)| {
            row.push_bind(*id)
                .push_bind(email.as_str())
                .push_bind(now)
                .push_bind(now)
                .push_bind(now);
        });
        query.push(
            " ON CONFLICT (id) DO UPDATE SET email = excluded.email, updated_at = excluded.updated_at
             WHERE users.email <> excluded.email",
        );
        query.build().execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn set_presences(
        &self,
        transitions: &[(Uuid, bool, DateTime<Utc>)],
    ) -> StoreResult<()> {
        // One transaction, so one commit for the batch.
        let mut tx = self.begin_write().await?;
        for (id, online, at) in last_per_key(transitions, |(id, _, _)| *id) {
            sqlx::query("UPDATE users SET is_online = $2, last_seen = $3 WHERE id = $1")
                .bind(id)
                .bind(online)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn contacts_of(
        &self,
        ids: &[Uuid],
        group_limit: u32,
    ) -> StoreResult<Vec<(Uuid, Uuid)>> {
        let ids = distinct(ids);
        // A user at a time: in-process, there is no round trip to save.
        let query = contacts_sql("$1");
        let mut pairs = Vec::new();
        for id in ids {
            let contacts: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(query.as_str()))
                .bind(id)
                .bind(i64::from(group_limit))
                .fetch_all(&self.pool)
                .await?;
            pairs.extend(contacts.into_iter().map(|c| (id, c)));
        }
        Ok(pairs)
    }

    pub(super) async fn blocked(&self, pairs: &[(Uuid, Uuid)]) -> StoreResult<Vec<(Uuid, Uuid)>> {
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

    pub(super) async fn missing_users(&self, ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
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
}
