//! Groups, in what SQLite writes its own way: the database write lock
//! (taken at `BEGIN IMMEDIATE`) stands for the group's lock, and member
//! lists are `IN` lists. The rules are `portable_groups!`.

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use super::*;

portable_groups!(SqliteStore, Sqlite);

/// Reads a group's member count under the write lock the transaction
/// already holds; `None` if there is no such group.
pub(super) async fn lock_group(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    id: Uuid,
) -> StoreResult<Option<i64>> {
    let members = sqlx::query_scalar(
        "SELECT CAST(member_count AS BIGINT) FROM conversations WHERE id = $1 AND kind = 'group'",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(members)
}

/// Which of `users` are current members.
async fn present_members(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    id: Uuid,
    users: &[Uuid],
) -> StoreResult<Vec<Uuid>> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
        "SELECT user_id FROM conversation_members WHERE left_at IS NULL AND conversation_id = ",
    );
    query.push_bind(id);
    query.push(" AND user_id IN ");
    push_ids(&mut query, users);
    Ok(query.build_query_scalar().fetch_all(&mut **tx).await?)
}

/// Makes each user a member with their role, joined `at`; one who left
/// comes back.
async fn join_members(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    id: Uuid,
    members: &[(Uuid, Role)],
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
        "INSERT INTO conversation_members (conversation_id, user_id, role, joined_at) ",
    );
    insert.push_values(members, |mut b, (user, role)| {
        b.push_bind(id)
            .push_bind(*user)
            .push_bind(role.as_str())
            .push_bind(at);
    });
    insert.push(
        " ON CONFLICT (conversation_id, user_id) DO UPDATE
           SET role = excluded.role, joined_at = excluded.joined_at, left_at = NULL",
    );
    insert.build().execute(&mut **tx).await?;
    Ok(())
}
