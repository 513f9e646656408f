//! Users, profiles, presence flags, contacts and blocks: everything but the
//! first insert and the list lookups, which each engine writes its own way.

macro_rules! portable_users {
    ($store:ty) => {
        impl $store {
            pub(super) async fn user(&self, id: Uuid) -> StoreResult<Option<User>> {
                let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
                )))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            pub(super) async fn update_profile(
                &self,
                id: Uuid,
                patch: &ProfilePatch,
            ) -> StoreResult<Option<User>> {
                let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "UPDATE users SET
                        username = CASE WHEN $2 THEN $3 ELSE username END,
                        avatar_url = CASE WHEN $4 THEN $5 ELSE avatar_url END,
                        updated_at = $6
                     WHERE id = $1 RETURNING {USER_COLUMNS}"
                )))
                .bind(id)
                .bind(patch.username.is_some())
                .bind(patch.username.clone().flatten())
                .bind(patch.avatar_url.is_some())
                .bind(patch.avatar_url.clone().flatten())
                .bind(now())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            pub(super) async fn talked_to(
                &self,
                speaker: Uuid,
                listener: Uuid,
                group_limit: u32,
            ) -> StoreResult<bool> {
                let talked = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM messages WHERE conversation_id = $3 AND sender_id = $1)
                         OR EXISTS (SELECT 1 FROM conversation_members me
                                      JOIN conversations c ON c.id = me.conversation_id
                                        AND c.member_count <= $4
                                      JOIN conversation_members o ON o.conversation_id = me.conversation_id
                                        AND o.user_id = $2 AND o.left_at IS NULL
                                     WHERE me.user_id = $1 AND me.left_at IS NULL
                                       AND EXISTS (SELECT 1 FROM messages m
                                                   WHERE m.conversation_id = me.conversation_id
                                                     AND m.sender_id = $1))",
                )
                .bind(speaker)
                .bind(listener)
                .bind(conversation_id(speaker, listener))
                .bind(i64::from(group_limit))
                .fetch_one(&self.pool)
                .await?;
                Ok(talked)
            }

            pub(super) async fn block(
                &self,
                blocker: Uuid,
                blocked: Uuid,
                at: DateTime<Utc>,
            ) -> StoreResult<()> {
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

            pub(super) async fn unblock(&self, blocker: Uuid, blocked: Uuid) -> StoreResult<()> {
                sqlx::query("DELETE FROM blocks WHERE blocker = $1 AND blocked = $2")
                    .bind(blocker)
                    .bind(blocked)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            pub(super) async fn blocks(&self, blocker: Uuid, limit: u32) -> StoreResult<Vec<Block>> {
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

            pub(super) async fn search_users(
                &self,
                me: Uuid,
                prefix: &str,
                after: Option<Uuid>,
                limit: u32,
            ) -> StoreResult<Page<Person>> {
                // Every name starting with the prefix sorts (bytewise) from
                // the prefix up to the prefix followed by the last code point.
                // Both sides are lowercased by the database, the same way.
                // A page goes on after a user the caller may see: an `after`
                // naming someone who blocked the caller answers as an unknown
                // id does (nothing), so neither tells them apart.
                let name = format!("lower(u.username){}", Self::BYTE_ORDER);
                let mut people: Vec<Person> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT u.id, u.username, u.avatar_url FROM users u
                     WHERE {name} >= lower($2) AND {name} < lower($2) || $3 AND u.id <> $1
                       AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker = u.id AND b.blocked = $1)
                       AND ($4 IS NULL OR ({name}, u.id) >
                            (SELECT lower(a.username){order}, a.id FROM users a
                             WHERE a.id = $4 AND NOT EXISTS (
                                 SELECT 1 FROM blocks c WHERE c.blocker = a.id AND c.blocked = $1)))
                     ORDER BY {name}, u.id LIMIT $5",
                    order = Self::BYTE_ORDER,
                )))
                .bind(me)
                .bind(prefix)
                .bind(char::MAX.to_string())
                .bind(after)
                .bind(i64::from(limit) + 1)
                .fetch_all(&self.pool)
                .await?;
                let has_more = people.len() > limit as usize;
                people.truncate(limit as usize);
                Ok(Page {
                    items: people,
                    has_more,
                })
            }

            pub(super) async fn is_contact(&self, a: Uuid, b: Uuid) -> StoreResult<bool> {
                let found: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM conversations WHERE id = $1")
                        .bind(conversation_id(a, b))
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(found.is_some())
            }
        }
    };
}

/// Whom a user's presence goes to: direct peers they wrote to, and members
/// of the small groups (at most `$2` members) they wrote in, less those
/// they block; for the user `me` names (a parameter, or a column of a
/// batch's users).
pub(in crate::store) fn contacts_sql(me: &str) -> String {
    format!(
        "SELECT peer FROM (
            SELECT c.user_b AS peer FROM conversations c WHERE c.user_a = {me}
              AND EXISTS (SELECT 1 FROM messages m
                          WHERE m.conversation_id = c.id AND m.sender_id = {me})
            UNION
            SELECT c.user_a FROM conversations c WHERE c.user_b = {me}
              AND EXISTS (SELECT 1 FROM messages m
                          WHERE m.conversation_id = c.id AND m.sender_id = {me})
            UNION
            SELECT o.user_id FROM conversation_members me
              JOIN conversations c ON c.id = me.conversation_id AND c.member_count <= $2
              JOIN conversation_members o ON o.conversation_id = me.conversation_id
                AND o.left_at IS NULL AND o.user_id <> {me}
            WHERE me.user_id = {me} AND me.left_at IS NULL
              AND EXISTS (SELECT 1 FROM messages m
                          WHERE m.conversation_id = me.conversation_id AND m.sender_id = {me})
         ) t WHERE peer NOT IN (SELECT blocked FROM blocks WHERE blocker = {me})"
    )
}
