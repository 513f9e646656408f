//! Groups: creation, membership and roles, each change checked under the
//! group's lock. The engine says how a write begins (`begin_write`), how
//! the group is locked (`lock_group`) and how lists of members are read and
//! written (`present_members`, `join_members`); the rules are here once.

macro_rules! portable_groups {
    ($store:ty, $db:ty) => {
        impl $store {
            pub(super) async fn create_group(&self, group: &NewGroup) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
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
                let members: Vec<(Uuid, Role)> = std::iter::once((group.creator, Role::Owner))
                    .chain(group.members.iter().map(|&m| (m, Role::Member)))
                    .collect();
                match join_members(&mut tx, group.id, &members, group.at).await {
                    Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                        return Err(StoreError::NotFound("a member does not exist"));
                    }
                    other => other?,
                };
                tx.commit().await?;
                Ok(())
            }

            pub(super) async fn group(&self, id: Uuid) -> StoreResult<Option<Group>> {
                let row: Option<GroupRow> = sqlx::query_as(
                    "SELECT id, title, avatar_url, created_by, created_at, updated_at,
                        CAST(member_count AS BIGINT) AS member_count
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

            pub(super) async fn membership(&self, id: Uuid, user: Uuid) -> StoreResult<Membership> {
                let row: Option<MembershipRow> = sqlx::query_as(
                    "SELECT c.kind, c.user_a, c.user_b,
                        CASE WHEN cm.left_at IS NULL THEN cm.role END AS role,
                        cm.user_id IS NOT NULL AS ever
                     FROM conversations c
                     LEFT JOIN conversation_members cm
                       ON cm.conversation_id = c.id AND cm.user_id = $2
                     WHERE c.id = $1",
                )
                .bind(id)
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
                Ok(MembershipRow::place(row, user))
            }

            pub(super) async fn update_group(
                &self,
                id: Uuid,
                actor: Uuid,
                patch: &GroupPatch,
                at: DateTime<Utc>,
            ) -> StoreResult<MemberChange> {
                // The group's lock orders this against every other change to
                // the group, the actor's demotion included.
                let mut tx = self.begin_write().await?;
                if lock_group(&mut tx, id).await?.is_none() {
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

            pub(super) async fn add_members(
                &self,
                id: Uuid,
                actor: Uuid,
                users: &[Uuid],
                max: u32,
                at: DateTime<Utc>,
            ) -> StoreResult<Added> {
                let mut tx = self.begin_write().await?;
                let Some(members) = lock_group(&mut tx, id).await? else {
                    return Ok(Added::NoGroup);
                };
                if !allowed(&mut tx, id, actor, GroupAction::AddMembers, None).await? {
                    return Ok(Added::Denied);
                }
                let present = present_members(&mut tx, id, users).await?;
                let joining: Vec<Uuid> = users
                    .iter()
                    .copied()
                    .filter(|u| !present.contains(u))
                    .collect();
                if members + joining.len() as i64 > i64::from(max) {
                    return Ok(Added::TooMany { members });
                }
                if !joining.is_empty() {
                    let rows: Vec<(Uuid, Role)> =
                        joining.iter().map(|&u| (u, Role::Member)).collect();
                    join_members(&mut tx, id, &rows, at).await?;
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

            pub(super) async fn remove_member(
                &self,
                id: Uuid,
                actor: Uuid,
                user: Uuid,
                at: DateTime<Utc>,
            ) -> StoreResult<MemberChange> {
                let mut tx = self.begin_write().await?;
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
                    "UPDATE conversations SET member_count = member_count - 1, updated_at = $2
                     WHERE id = $1",
                )
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(MemberChange::Done)
            }

            pub(super) async fn set_role(
                &self,
                id: Uuid,
                actor: Uuid,
                user: Uuid,
                role: Role,
                at: DateTime<Utc>,
            ) -> StoreResult<MemberChange> {
                let mut tx = self.begin_write().await?;
                let Some((current, owners, members)) = lock_member(&mut tx, id, user).await? else {
                    return Ok(MemberChange::NotMember);
                };
                if !allowed(&mut tx, id, actor, GroupAction::SetRole, Some(current)).await? {
                    return Ok(MemberChange::Denied);
                }
                if current == Role::Owner
                    && role != Role::Owner
                    && !keeps_an_owner(owners, members.max(2))
                {
                    return Ok(MemberChange::LastOwner);
                }
                sqlx::query(
                    "UPDATE conversation_members SET role = $3
                     WHERE conversation_id = $1 AND user_id = $2",
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

            pub(super) async fn group_history(
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
                      WHERE i.user_id = $1 AND i.conversation_id = $2 AND ($3 OR i.message_id < $4)
                      ORDER BY i.message_id DESC LIMIT $5"
                ))
                .bind(me)
                .bind(group)
                .bind(before.is_none())
                .bind(before)
                .bind(i64::from(limit) + 1)
                .fetch_all(self.lagging())
                .await?;
                let mut page = Page::oldest_first(
                    rows.into_iter().map(Message::from).collect(),
                    limit,
                );
                self.decorate(me, &mut page.items).await?;
                Ok(page)
            }
        }

        /// Whether `actor`, as a member is now (read under the group's lock),
        /// may take `action`.
        async fn allowed(
            tx: &mut sqlx::Transaction<'_, $db>,
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

        /// Locks a group and reads a current member's role with the group's
        /// owner and member counts; `None` if `user` is not a current member.
        async fn lock_member(
            tx: &mut sqlx::Transaction<'_, $db>,
            id: Uuid,
            user: Uuid,
        ) -> StoreResult<Option<(Role, i64, i64)>> {
            if lock_group(tx, id).await?.is_none() {
                return Ok(None);
            }
            let row: Option<(String, i64, i64)> = sqlx::query_as(
                "SELECT cm.role,
                    (SELECT count(*) FROM conversation_members
                      WHERE conversation_id = $1 AND left_at IS NULL AND role = 'owner'),
                    (SELECT count(*) FROM conversation_members
                      WHERE conversation_id = $1 AND left_at IS NULL)
                 FROM conversation_members cm
                 WHERE cm.conversation_id = $1 AND cm.user_id = $2 AND cm.left_at IS NULL",
            )
            .bind(id)
            .bind(user)
            .fetch_optional(&mut **tx)
            .await?;
            Ok(row.map(|(role, owners, members)| (Role::parse(&role), owners, members)))
        }
    };
}
