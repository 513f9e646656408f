//! Changes to messages (edit, delete for everyone, react, unreact), a batch
//! of them in one transaction, each checked by its rules under the locks
//! that order it.
//!
//! Locks are taken kind by kind, each kind in id order: the messages' rows
//! (they order the changes to one message; nothing else locks them but
//! `mark_read`'s single statement, and a send's key-share lock on the
//! message it answers, which these do not exclude), then the rows of the
//! batch's groups (a group message: they order the change against role
//! and membership changes), and last the rows of the messages' readers, to
//! number the changes, as every write takes them. A change's numbers in its readers'
//! sequences so become visible in the order they were handed out, as a
//! message's do. Like messages, changes are committed in batches by the
//! group-commit writer: one commit, and one hold of the readers' rows, for
//! the batch. The engine gives `$lock` (the clause that locks a row a
//! `SELECT` reads) and `number_changes`; SQLite's write transaction holds
//! the whole database, so it locks no rows.

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
            /// Applies a batch of changes in one transaction, each by its
            /// rules, message by message: a change sees the batch's earlier
            /// changes to its message. Locks are
            /// taken kind by kind, each kind in id order, so batches on any
            /// node never deadlock: the messages, then the groups of the
            /// batch's group messages, and last, just before the commit,
            /// the rows of every reader, to number the changes.
            pub(super) async fn apply_changes(
                &self,
                batch: &[NewChange],
            ) -> StoreResult<Vec<ChangeOutcome>> {
                let mut outcomes: Vec<Option<ChangeOutcome>> = vec![None; batch.len()];
                // A key used twice in the batch answers whatever its first
                // use came to (one used before is found under the locks).
                let mut first_use = std::collections::HashMap::<(Uuid, &str), usize>::new();
                let mut repeats = Vec::new();
                for (i, new) in batch.iter().enumerate() {
                    let Some(key) = new.client_id.as_deref() else { continue };
                    if let Some(&first) = first_use.get(&(new.actor, key)) {
                        repeats.push((i, first));
                        continue;
                    }
                    first_use.insert((new.actor, key), i);
                }
                let repeated: std::collections::HashSet<usize> =
                    repeats.iter().map(|&(i, _)| i).collect();
                // Judged message by message (in id order, each message's
                // changes in the order they came), so the rows a delete
                // touches are taken in the order every batch takes them.
                let mut todo: Vec<usize> =
                    (0..batch.len()).filter(|i| !repeated.contains(i)).collect();
                todo.sort_by_key(|&i| (batch[i].message_id, i));

                let mut tx = self.begin_write().await?;
                // Each message's row, locked: it orders the changes to it.
                // Where it is never changes once sent.
                let mut ids: Vec<Uuid> = todo.iter().map(|&i| batch[i].message_id).collect();
                ids.sort_unstable();
                ids.dedup();
                let mut places = std::collections::HashMap::<Uuid, (Uuid, Option<Uuid>)>::new();
                for &id in &ids {
                    let found: Option<(Uuid, Option<Uuid>)> = sqlx::query_as(concat!(
                        "SELECT conversation_id, receiver_id FROM messages WHERE id = $1",
                        $lock
                    ))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(place) = found {
                        places.insert(id, place);
                    }
                }
                // A group's row orders a change against role and membership
                // changes.
                let groups: std::collections::BTreeSet<Uuid> = places
                    .values()
                    .filter(|(_, receiver)| receiver.is_none())
                    .map(|&(group, _)| group)
                    .collect();
                for group in groups {
                    lock_group(&mut tx, group).await?;
                }

                let mut applied = Vec::new();
                let mut taken = Vec::new();
                for i in todo {
                    let new = &batch[i];
                    let Some(place) = places.get(&new.message_id) else {
                        if new.client_id.is_some() {
                            // Its key may answer a change already made.
                            taken.push(i);
                        } else {
                            outcomes[i] = Some(ChangeOutcome::NotFound);
                        }
                        continue;
                    };
                    match apply_one(&mut tx, new, place.1.is_some()).await? {
                        Step::Refused(outcome) => outcomes[i] = Some(outcome),
                        Step::KeyTaken => taken.push(i),
                        Step::Applied(done) => applied.push((i, done)),
                    }
                }
                // A key already used (before, or meanwhile for a change to
                // another message, which this one's lock does not order):
                // that change, committed by now (an insert skipped for its
                // key waits for the other's commit), is the answer. Read
                // here, so a failure leaves the batch uncommitted.
                for i in taken {
                    outcomes[i] = Some(match change_by_key(&mut tx, &batch[i]).await? {
                        Some(done) => ChangeOutcome::Duplicate(done),
                        None => ChangeOutcome::NotFound,
                    });
                }
                // Numbered last: the readers' rows, which every send to them
                // waits for, are held only from here to the commit.
                let numbering: Vec<(Uuid, &[Uuid])> = applied
                    .iter()
                    .map(|(i, done)| (batch[*i].id, done.readers.as_slice()))
                    .collect();
                let numbers = number_changes(&mut tx, &numbering).await?;
                for (_, done) in &applied {
                    if done.deleted && done.message.receiver_id.is_some() {
                        // After the readers' rows, as a send takes them: the
                        // conversation's row comes second.
                        repoint_preview(&mut tx, &done.message).await?;
                    }
                }
                // Until here a lost connection rolls everything back; during
                // the commit it may have landed.
                tx.commit().await.map_err(StoreError::after_sending)?;

                for ((i, done), seqs) in applied.into_iter().zip(numbers) {
                    let new = &batch[i];
                    outcomes[i] = Some(ChangeOutcome::Applied(StoredChange {
                        change: Change {
                            id: new.id,
                            kind: ChangeType::parse(new.kind.as_str()),
                            actor: new.actor,
                            emoji: new.emoji().map(str::to_owned),
                            at: new.at,
                            message: done.message,
                        },
                        seqs,
                        removed: done.removed,
                    }));
                }
                for (i, first) in repeats {
                    outcomes[i] = Some(match &outcomes[first] {
                        Some(ChangeOutcome::Applied(stored)) => {
                            ChangeOutcome::Duplicate(stored.change.clone())
                        }
                        Some(other) => other.clone(),
                        None => unreachable!("a key's first use is answered before its repeats"),
                    });
                }
                Ok(outcomes
                    .into_iter()
                    .map(|o| o.expect("every change of the batch is answered"))
                    .collect())
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
                    "SELECT id, owner_id, message_id, name, size, content_type, width, height, created_at
                     FROM attachments WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            pub(super) async fn drop_unsent_attachments(
                &self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> StoreResult<Vec<Uuid>> {
                // Checked again on the row itself: a send that links one
                // meanwhile keeps it.
                let dropped = sqlx::query_scalar(
                    "DELETE FROM attachments
                     WHERE message_id IS NULL AND id IN (
                        SELECT id FROM attachments WHERE message_id IS NULL AND created_at < $1
                        ORDER BY created_at LIMIT $2)
                     RETURNING id",
                )
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(dropped)
            }

            /// Fills in each message's attachments.
            pub(super) async fn with_attachments(&self, messages: &mut [Message]) -> StoreResult<()> {
                self.attach_files(messages.iter_mut().collect()).await
            }

            /// The same, for messages wherever they are held.
            pub(super) async fn attach_files(&self, messages: Vec<&mut Message>) -> StoreResult<()> {
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

        /// The change `new.actor` already made with `new.client_id`.
        async fn change_by_key<'c>(
            tx: &mut sqlx::Transaction<'c, $db>,
            new: &NewChange,
        ) -> StoreResult<Option<Change>> {
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
            .fetch_optional(&mut **tx)
            .await?;
            Ok(row.map(Into::into))
        }

        /// One change of a batch, checked by its rules under the locks the
        /// batch holds and, when allowed, written (but not yet numbered).
        async fn apply_one<'c>(
            tx: &mut sqlx::Transaction<'c, $db>,
            new: &NewChange,
            direct: bool,
        ) -> StoreResult<Step> {
            // The message as it stands, the actor's role in its group (read
            // under the group's lock), the reactions the rules count, and
            // whether the change's key was used before.
            let target: ChangeTargetRow = sqlx::query_as(concat!(
                "SELECT ",
                message_columns!(),
                ", EXISTS (SELECT 1 FROM message_changes WHERE actor_id = $2 AND client_id = $4)
                     AS done,
                   (SELECT role FROM conversation_members
                    WHERE conversation_id = m.conversation_id AND user_id = $2
                      AND left_at IS NULL) AS role,
                   (SELECT count(*) FROM reactions
                    WHERE message_id = m.id AND emoji = $3 AND user_id = $2) AS mine,
                   (SELECT count(*) FROM reactions WHERE message_id = m.id AND emoji = $3)
                     AS present,
                   (SELECT count(DISTINCT emoji) FROM reactions WHERE message_id = m.id)
                     AS emojis
                 FROM messages m WHERE m.id = $1"
            ))
            .bind(new.message_id)
            .bind(new.actor)
            .bind(new.emoji())
            .bind(&new.client_id)
            .fetch_one(&mut **tx)
            .await?;
            if target.done {
                return Ok(Step::KeyTaken);
            }
            let role = match (direct, &target.role) {
                (true, _) => None,
                (false, Some(role)) => Some(Role::parse(role)),
                // Left or never in: the group's messages are not theirs to
                // change.
                (false, None) => return Ok(Step::Refused(ChangeOutcome::NotFound)),
            };
            let mut message = Message::from(target.message);
            // A direct message's two participants, or every member it was
            // delivered to in a group.
            let mut readers: Vec<Uuid> = match message.receiver_id {
                Some(receiver) => vec![message.sender_id, receiver],
                None => {
                    sqlx::query_scalar("SELECT user_id FROM inbox WHERE message_id = $1")
                        .bind(new.message_id)
                        .fetch_all(&mut **tx)
                        .await?
                }
            };
            if !readers.contains(&new.actor) {
                return Ok(Step::Refused(ChangeOutcome::NotFound));
            }
            readers.sort_unstable();
            readers.dedup();
            let sender = message.sender_id == new.actor;
            let deleted = message.deleted_at.is_some();
            let refuse = |outcome| Ok(Step::Refused(outcome));
            match &new.kind {
                ChangeKind::Edit { .. } => {
                    if !sender {
                        return refuse(ChangeOutcome::NotAllowed);
                    }
                    if deleted {
                        return refuse(ChangeOutcome::Deleted);
                    }
                    if new.edit_window.is_some_and(|w| new.at - message.created_at > w) {
                        return refuse(ChangeOutcome::TooLate);
                    }
                }
                ChangeKind::Delete => {
                    if !sender && !role.is_some_and(|r| r >= Role::Admin) {
                        return refuse(ChangeOutcome::NotAllowed);
                    }
                    if deleted {
                        return refuse(ChangeOutcome::Unchanged(message));
                    }
                }
                ChangeKind::React { .. } => {
                    if deleted {
                        return refuse(ChangeOutcome::Deleted);
                    }
                    if target.mine > 0 {
                        return refuse(ChangeOutcome::Unchanged(message));
                    }
                    if target.present == 0 && target.emojis >= i64::from(new.max_reactions) {
                        return refuse(ChangeOutcome::TooManyReactions);
                    }
                }
                ChangeKind::Unreact { .. } => {
                    if target.mine == 0 {
                        return refuse(ChangeOutcome::Unchanged(message));
                    }
                }
            }
            // Recorded first: a key taken meanwhile (by a change to another
            // message, on another node) leaves nothing written.
            let recorded = sqlx::query(
                "INSERT INTO message_changes (id, message_id, actor_id, kind, emoji, client_id,
                    created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (actor_id, client_id) WHERE client_id IS NOT NULL DO NOTHING",
            )
            .bind(new.id)
            .bind(new.message_id)
            .bind(new.actor)
            .bind(new.kind.as_str())
            .bind(new.emoji())
            .bind(&new.client_id)
            .bind(new.at)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if recorded == 0 {
                return Ok(Step::KeyTaken);
            }
            let mut removed = Vec::new();
            match &new.kind {
                ChangeKind::Edit { content } => {
                    sqlx::query(
                        "UPDATE messages SET content = $2, edited_at = $3, updated_at = $3
                         WHERE id = $1",
                    )
                    .bind(new.message_id)
                    .bind(content)
                    .bind(new.at)
                    .execute(&mut **tx)
                    .await?;
                    message.content.clone_from(content);
                    message.edited_at = Some(new.at);
                    message.updated_at = new.at;
                }
                ChangeKind::Delete => {
                    removed = delete_content(tx, &message, new.at).await?;
                    message = read_message(tx, new.message_id).await?;
                }
                ChangeKind::React { emoji } => {
                    sqlx::query(
                        "INSERT INTO reactions (message_id, user_id, emoji, created_at)
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(new.message_id)
                    .bind(new.actor)
                    .bind(emoji)
                    .bind(new.at)
                    .execute(&mut **tx)
                    .await?;
                }
                ChangeKind::Unreact { emoji } => {
                    sqlx::query(
                        "DELETE FROM reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3",
                    )
                    .bind(new.message_id)
                    .bind(new.actor)
                    .bind(emoji)
                    .execute(&mut **tx)
                    .await?;
                }
            }
            // A reaction leaves the message's row as it was.
            Ok(Step::Applied(Written {
                message,
                readers,
                removed,
                deleted: matches!(new.kind, ChangeKind::Delete),
            }))
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
