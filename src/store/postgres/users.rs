//! Users, in what PostgreSQL writes its own way: the first insert (the
//! table's defaults) and lookups by arrays. The rest is `portable_users!`.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;

portable_users!(PgStore);

impl PgStore {
    pub(super) async fn upsert_user(&self, id: Uuid, email: &str) -> StoreResult<()> {
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
