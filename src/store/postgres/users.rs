//! Users, in what PostgreSQL writes its own way: the first insert (the
//! table's defaults) and lookups by arrays. The rest is `portable_users!`.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;
use crate::store::batch::{distinct, last_per_key};
use crate::store::portable::contacts_sql;

portable_users!(PgStore);

impl PgStore {
    /// Text compared byte by byte, as the username index is built.
    const BYTE_ORDER: &str = " COLLATE \"C\"";
}

impl PgStore {
    pub(super) async fn upsert_users(&self, users: &[(Uuid, String)]) -> StoreResult<()> {
        let mut users = last_per_key(users, |(id, _)| *id);
        // In id order, as every writer takes users' rows.
        users.sort_unstable_by_key(|(id, _)| *id);
        let (ids, emails): (Vec<Uuid>, Vec<&str>) =
            users.into_iter().map(|(id, e)| (*id, e.as_str())).unzip();
        // Only a changed email takes the row lock: a user's first request on
        // every node would otherwise contend with their own message writes.
        sqlx::query(
            "INSERT INTO users (id, email)
             SELECT * FROM UNNEST($1::uuid[], $2::text[])
             ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, updated_at = NOW()
             WHERE users.email <> EXCLUDED.email",
        )
        .bind(ids)
        .bind(emails)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn set_presences(
        &self,
        transitions: &[(Uuid, bool, DateTime<Utc>)],
    ) -> StoreResult<()> {
        let kept = last_per_key(transitions, |(id, _, _)| *id);
        let ids: Vec<Uuid> = kept.iter().map(|t| t.0).collect();
        let online: Vec<bool> = kept.iter().map(|t| t.1).collect();
        let at: Vec<DateTime<Utc>> = kept.iter().map(|t| t.2).collect();
        // The rows are locked in id order first: a writer holding one
        // user's row while waiting for the next one's is never waited on
        // in the other order.
        sqlx::query(
            "WITH locked AS MATERIALIZED (
                 SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE)
             UPDATE users u SET is_online = t.online, last_seen = t.at
               FROM locked
               JOIN UNNEST($1::uuid[], $2::bool[], $3::timestamptz[]) AS t(id, online, at)
                 ON t.id = locked.id
              WHERE u.id = locked.id",
        )
        .bind(ids)
        .bind(online)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn contacts_of(
        &self,
        ids: &[Uuid],
        group_limit: u32,
    ) -> StoreResult<Vec<(Uuid, Uuid)>> {
        let ids = distinct(ids);
        let pairs = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT who.id, contact.peer FROM UNNEST($1::uuid[]) AS who(id)
               CROSS JOIN LATERAL ({}) AS contact(peer)",
            contacts_sql("who.id")
        )))
        .bind(ids)
        .bind(i64::from(group_limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(pairs)
    }

    pub(super) async fn blocked(&self, pairs: &[(Uuid, Uuid)]) -> StoreResult<Vec<(Uuid, Uuid)>> {
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

    pub(super) async fn missing_users(&self, ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        let missing = sqlx::query_scalar(
            "SELECT u FROM UNNEST($1::uuid[]) AS u WHERE NOT EXISTS (SELECT 1 FROM users WHERE id = u)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(missing)
    }
}
