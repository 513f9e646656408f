//! Users, in what SQLite writes its own way: the first insert (times from
//! the application) and lookups by `IN` lists. The rest is `portable_users!`.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use super::*;

portable_users!(SqliteStore);

impl SqliteStore {
    pub(super) async fn upsert_user(&self, id: Uuid, email: &str) -> StoreResult<()> {
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
