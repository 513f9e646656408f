//! Changes to a message (edit, delete for everyone, react, unreact), each in
//! one transaction that checks its rules under the locks that order it.
//!
//! Locks are taken as every write takes them: the group's row (a group
//! message: it orders the change against role and membership changes),
//! then the rows of the message's readers in id order. Every change to one
//! message locks the same readers, so changes to it are serialised, and a
//! change's numbers in its readers' sequences become visible in the order
//! they were handed out, as a message's do. The engine gives `$lock` (the
//! clause that locks a row a `SELECT` reads) and `number_change`; SQLite's
//! write transaction holds the whole database, so it locks no rows.

/// The users who can read message `$1`: a direct message's two
/// participants, every member it was delivered to in a group.
macro_rules! readers_of_message {
    () => {
        "SELECT user_id FROM inbox WHERE message_id = $1
         UNION ALL SELECT sender_id FROM messages WHERE id = $1 AND receiver_id IS NOT NULL
         UNION ALL SELECT receiver_id FROM messages WHERE id = $1 AND receiver_id IS NOT NULL"
    };
}

/// A change read back with the message it changed.
macro_rules! change_columns {
    () => {
        concat!(
            message_columns!(),
            ", c.id AS change_id, c.kind AS change_kind, c.actor_id, c.emoji, \
             c.created_at AS changed_at"
        )
    };
}

/// The change columns of an entry that is a message: none.
macro_rules! no_change {
    () => {
        "CAST(NULL AS UUID) AS change_id, CAST(NULL AS TEXT) AS change_kind, \
         CAST(NULL AS UUID) AS actor_id, CAST(NULL AS TEXT) AS emoji, \
         CAST(NULL AS TIMESTAMPTZ) AS changed_at"
    };
}

macro_rules! portable_changes {
    ($store:ty, $db:ty, $lock:literal) => {
        impl $store {
            pub(super) async fn apply_change(&self, new: &NewChange) -> StoreResult<ChangeOutcome> {
                if let Some(done) = self.change_by_key(new).await? {
                    return Ok(ChangeOutcome::Duplicate(done));
                }
                let mut tx = self.begin_write().await?;
                // Where it is and who reads it never change once sent.
                let found: Option<(Uuid, Option<Uuid>)> = sqlx::query_as(
                    "SELECT conversation_id, receiver_id FROM messages WHERE id = $1",
                )
                .bind(new.message_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((conversation, receiver)) = found else {
                    return Ok(ChangeOutcome::NotFound);
                };
                // A group message: the actor's current role, read under the
                // group's lock. `None` for a direct message.
                let role = match receiver {
                    Some(_) => None,
                    None => {
                        lock_group(&mut tx, conversation).await?;
                        let role: Option<String> = sqlx::query_scalar(
                            "SELECT role FROM conversation_members
                             WHERE conversation_id = $1 AND user_id = $2 AND left_at IS NULL",
                        )
                        .bind(conversation)
                        .bind(new.actor)
                        .fetch_optional(&mut *tx)
                        .await?;
                        match role {
                            Some(role) => Some(Role::parse(&role)),
                            // Left or never in: the group's messages are
                            // not theirs to change.
                            None => return Ok(ChangeOutcome::NotFound),
                        }
                    }
                };
                let mut readers: Vec<Uuid> = sqlx::query_scalar(readers_of_message!())
                    .bind(new.message_id)
                    .fetch_all(&mut *tx)
                    .await?;
                if !readers.contains(&new.actor) {
                    return Ok(ChangeOutcome::NotFound);
                }
                readers.sort_unstable();
                readers.dedup();
                // The message's row orders the changes to it: the rules
                // below are checked and applied under it. Its readers' rows,
                // which every send to them waits for, are locked only at the
                // end, to number the change, and held just until commit.
                sqlx::query(concat!("SELECT id FROM messages WHERE id = $1", $lock))
                    .bind(new.message_id)
                    .execute(&mut *tx)
                    .await?;
                let message = read_message(&mut tx, new.message_id).await?;
                let sender = message.sender_id == new.actor;
                let deleted = message.deleted_at.is_some();
                let mut removed = Vec::new();
                match &new.kind {
                    ChangeKind::Edit { content } => {
                        if !sender {
                            return Ok(ChangeOutcome::NotAllowed);
                        }
                        if deleted {
                            return Ok(ChangeOutcome::Deleted);
                        }
                        if new.edit_window.is_some_and(|w| new.at - message.created_at > w) {
                            return Ok(ChangeOutcome::TooLate);
                        }
                        sqlx::query(
                            "UPDATE messages SET content = $2, edited_at = $3, updated_at = $3
                             WHERE id = $1",
                        )
                        .bind(new.message_id)
                        .bind(content)
                        .bind(new.at)
                        .execute(&mut *tx)
                        .await?;
                    }
                    ChangeKind::Delete => {
                        if !sender && !role.is_some_and(|r| r >= Role::Admin) {
                            return Ok(ChangeOutcome::NotAllowed);
                        }
                        if deleted {
                            return Ok(ChangeOutcome::Unchanged(message));
                        }
                        removed = delete_content(&mut tx, &message, new.at).await?;
                    }
                    ChangeKind::React { emoji } => {
                        if deleted {
                            return Ok(ChangeOutcome::Deleted);
                        }
                        let (mine, present, distinct): (i64, i64, i64) = sqlx::query_as(
                            "SELECT
                                (SELECT count(*) FROM reactions
                                  WHERE message_id = $1 AND emoji = $2 AND user_id = $3),
                                (SELECT count(*) FROM reactions WHERE message_id = $1 AND emoji = $2),
                                (SELECT count(DISTINCT emoji) FROM reactions WHERE message_id = $1)",
                        )
                        .bind(new.message_id)
                        .bind(emoji)
                        .bind(new.actor)
                        .fetch_one(&mut *tx)
                        .await?;
                        if mine > 0 {
                            return Ok(ChangeOutcome::Unchanged(message));
                        }
                        if present == 0 && distinct >= i64::from(new.max_reactions) {
                            return Ok(ChangeOutcome::TooManyReactions);
                        }
                        sqlx::query(
                            "INSERT INTO reactions (message_id, user_id, emoji, created_at)
                             VALUES ($1, $2, $3, $4)",
                        )
                        .bind(new.message_id)
                        .bind(new.actor)
                        .bind(emoji)
                        .bind(new.at)
                        .execute(&mut *tx)
                        .await?;
                    }
                    ChangeKind::Unreact { emoji } => {
                        let removed = sqlx::query(
                            "DELETE FROM reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3",
                        )
                        .bind(new.message_id)
                        .bind(new.actor)
                        .bind(emoji)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if removed == 0 {
                            return Ok(ChangeOutcome::Unchanged(message));
                        }
                    }
                }
                let recorded = sqlx::query(
                    "INSERT INTO message_changes (id, message_id, actor_id, kind, emoji, client_id,
                        created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(new.id)
                .bind(new.message_id)
                .bind(new.actor)
                .bind(new.kind.as_str())
                .bind(new.emoji())
                .bind(&new.client_id)
                .bind(new.at)
                .execute(&mut *tx)
                .await;
                match recorded {
                    // The same key, used meanwhile for a change to another
                    // message (this one's lock does not order the two):
                    // that one is the answer.
                    Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                        drop(tx);
                        return match self.change_by_key(new).await? {
                            Some(done) => Ok(ChangeOutcome::Duplicate(done)),
                            None => Err(StoreError::Internal("change key taken and not found".into())),
                        };
                    }
                    other => other?,
                };
                let message = read_message(&mut tx, new.message_id).await?;
                let seqs = number_change(&mut tx, &readers, new.id).await?;
                if matches!(new.kind, ChangeKind::Delete) && message.receiver_id.is_some() {
                    // After the readers' rows, as a send takes them: the
                    // conversation's row comes second.
                    repoint_preview(&mut tx, &message).await?;
                }
                // Until here a lost connection rolls everything back; during
                // the commit it may have landed.
                tx.commit().await.map_err(StoreError::after_sending)?;
                Ok(ChangeOutcome::Applied(StoredChange {
                    change: Change {
                        id: new.id,
                        kind: ChangeType::parse(new.kind.as_str()),
                        actor: new.actor,
                        emoji: new.emoji().map(str::to_owned),
                        at: new.at,
                        message,
                    },
                    seqs,
                    removed,
                }))
            }

            /// The change `new.actor` already made with `new.client_id`.
            async fn change_by_key(&self, new: &NewChange) -> StoreResult<Option<Change>> {
                let Some(client_id) = &new.client_id else {
                    return Ok(None);
                };
                let row: Option<ChangeRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    change_columns!(),
                    " FROM message_changes c JOIN messages m ON m.id = c.message_id
                      WHERE c.actor_id = $1 AND c.client_id = $2"
                ))
                .bind(new.actor)
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            pub(super) async fn create_attachment(
                &self,
                a: &NewAttachment,
                max_pending: u32,
                since: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let made = sqlx::query(
                    "INSERT INTO attachments (id, owner_id, name, size, content_type, width, height,
                        created_at)
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8
                     WHERE (SELECT count(*) FROM attachments
                            WHERE owner_id = $2 AND message_id IS NULL AND created_at > $10) < $9",
                )
                .bind(a.id)
                .bind(a.owner)
                .bind(&a.name)
                .bind(a.size)
                .bind(&a.content_type)
                .bind(a.width)
                .bind(a.height)
                .bind(a.at)
                .bind(i64::from(max_pending))
                .bind(since)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(made == 1)
            }

            pub(super) async fn attachment(&self, id: Uuid) -> StoreResult<Option<StoredAttachment>> {
                let row: Option<AttachmentRow> = sqlx::query_as(
                    "SELECT id, owner_id, message_id, name, size, content_type, width, height
                     FROM attachments WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            /// Fills in each message's attachments.
            pub(super) async fn with_attachments(&self, messages: &mut [Message]) -> StoreResult<()> {
                if messages.is_empty() {
                    return Ok(());
                }
                let ids: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
                let mut files = std::collections::HashMap::<Uuid, Vec<Attachment>>::new();
                for row in self.attachments_of(&ids).await? {
                    let stored = StoredAttachment::from(row);
                    if let Some(message) = stored.message_id {
                        files.entry(message).or_default().push(stored.attachment);
                    }
                }
                for m in messages {
                    m.attachments = files.remove(&m.id).unwrap_or_default();
                }
                Ok(())
            }

            /// What a history page shows of each message beyond its row:
            /// reactions as `me` sees them, and attachments.
            pub(super) async fn decorate(&self, me: Uuid, messages: &mut [Message]) -> StoreResult<()> {
                self.with_reactions(me, messages).await?;
                self.with_attachments(messages).await
            }

            /// Each message's reactions as `me` sees them: per emoji, how
            /// many and whether `me` is among them (in the order each emoji
            /// was first used).
            pub(super) async fn with_reactions(&self, me: Uuid, messages: &mut [Message]) -> StoreResult<()> {
                if messages.is_empty() {
                    return Ok(());
                }
                let ids: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
                let mut counts = std::collections::HashMap::<Uuid, Vec<Reaction>>::new();
                for (message, emoji, count, mine) in self.reaction_counts(me, &ids).await? {
                    counts.entry(message).or_default().push(Reaction {
                        emoji,
                        count,
                        me: mine != 0,
                    });
                }
                for m in messages {
                    m.reactions = counts.remove(&m.id).unwrap_or_default();
                }
                Ok(())
            }
        }

        /// The message as it stands, read inside the change's transaction.
        async fn read_message<'c>(
            tx: &mut sqlx::Transaction<'c, $db>,
            id: Uuid,
        ) -> StoreResult<Message> {
            let row: MessageRow = sqlx::query_as(concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages m WHERE m.id = $1"
            ))
            .bind(id)
            .fetch_one(&mut **tx)
            .await?;
            Ok(row.into())
        }

        /// Deletes a message for everyone: its content, reactions and
        /// attachments leave storage (the attachments' ids are returned:
        /// their bytes go once this commits), and it stops counting as
        /// unread for anyone (without receipts: there is nothing left to
        /// read).
        async fn delete_content<'c>(
            tx: &mut sqlx::Transaction<'c, $db>,
            message: &Message,
            at: DateTime<Utc>,
        ) -> StoreResult<Vec<Uuid>> {
            sqlx::query(
                "UPDATE messages SET content = '', deleted_at = $2, updated_at = $2,
                    is_read = CASE WHEN receiver_id IS NULL THEN is_read ELSE TRUE END,
                    read_at = CASE WHEN receiver_id IS NULL THEN read_at ELSE COALESCE(read_at, $2) END
                 WHERE id = $1",
            )
            .bind(message.id)
            .bind(at)
            .execute(&mut **tx)
            .await?;
            sqlx::query("UPDATE inbox SET read_at = $2 WHERE message_id = $1 AND read_at IS NULL")
                .bind(message.id)
                .bind(at)
                .execute(&mut **tx)
                .await?;
            sqlx::query("DELETE FROM reactions WHERE message_id = $1")
                .bind(message.id)
                .execute(&mut **tx)
                .await?;
            let removed: Vec<Uuid> =
                sqlx::query_scalar("DELETE FROM attachments WHERE message_id = $1 RETURNING id")
                    .bind(message.id)
                    .fetch_all(&mut **tx)
                    .await?;
            Ok(removed)
        }

        /// A direct conversation whose latest message was deleted shows its
        /// latest message left (or none, when none is left).
        async fn repoint_preview<'c>(
            tx: &mut sqlx::Transaction<'c, $db>,
            message: &Message,
        ) -> StoreResult<()> {
            sqlx::query(
                "UPDATE conversations SET (last_message_id, last_message_at) = (
                    SELECT id, created_at FROM messages
                    WHERE conversation_id = $1 AND deleted_at IS NULL ORDER BY id DESC LIMIT 1)
                 WHERE id = $1 AND last_message_id = $2
                   AND EXISTS (SELECT 1 FROM messages
                               WHERE conversation_id = $1 AND deleted_at IS NULL)",
            )
            .bind(message.conversation_id)
            .bind(message.id)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }
    };
}
