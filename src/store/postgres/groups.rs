//! Groups, in what PostgreSQL writes its own way: the group's row lock and
//! member lists as arrays. The rules are `portable_groups!`.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;

portable_groups!(PgStore, sqlx::Postgres);

/// Locks a group's row (every change to the group and its members takes
/// it first) and reads its member count; `None` if there is no such group.
pub(super) async fn lock_group(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: Uuid,
) -> StoreResult<Option<i64>> {
    let members = sqlx::query_scalar(
        "SELECT CAST(member_count AS BIGINT) FROM conversations
         WHERE id = $1 AND kind = 'group' FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(members)
}

/// Which of `users` are current members.
async fn present_members(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: Uuid,
    users: &[Uuid],
) -> StoreResult<Vec<Uuid>> {
    let present = sqlx::query_scalar(
        "SELECT user_id FROM conversation_members
         WHERE conversation_id = $1 AND left_at IS NULL AND user_id = ANY($2)",
    )
    .bind(id)
    .bind(users)
    .fetch_all(&mut **tx)
    .await?;
    Ok(present)
}

/// Makes each user a member with their role, joined `at`; one who left
/// comes back.
async fn join_members(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: Uuid,
    members: &[(Uuid, Role)],
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let (users, roles): (Vec<Uuid>, Vec<&str>) =
        members.iter().map(|(u, r)| (*u, r.as_str())).unzip();
    sqlx::query(
        "INSERT INTO conversation_members (conversation_id, user_id, role, joined_at)
         SELECT $1, u, r, $4 FROM UNNEST($2::uuid[], $3::text[]) AS t(u, r)
         ON CONFLICT (conversation_id, user_id) DO UPDATE
           SET role = EXCLUDED.role, joined_at = EXCLUDED.joined_at, left_at = NULL",
    )
    .bind(id)
    .bind(users)
    .bind(roles)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
