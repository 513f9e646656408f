//! Reading messages: one message, a direct conversation's history, a user's
//! counts and sequence numbers. Conversation lists, search, read marks and
//! lookups by lists of ids are each engine's own.

macro_rules! portable_messages {
    ($store:ty) => {
        impl $store {
            pub(super) async fn message(&self, id: Uuid) -> StoreResult<Option<Message>> {
                let row: Option<MessageRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages m WHERE m.id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            pub(super) async fn conversation(
                &self,
                me: Uuid,
                peer: Uuid,
                before: Option<Uuid>,
                limit: u32,
            ) -> StoreResult<Page<Message>> {
                let rows: Vec<MessageRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages m WHERE m.conversation_id = $1 AND ($2 OR m.id < $3)
                      ORDER BY m.id DESC LIMIT $4"
                ))
                .bind(conversation_id(me, peer))
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

            pub(super) async fn stats(&self, me: Uuid) -> StoreResult<Stats> {
                // A member's inbox holds the group messages they sent too.
                let (total_sent, total_received, unread, conversations): (i64, i64, i64, i64) =
                    sqlx::query_as(
                        "SELECT
                        (SELECT count(*) FROM messages WHERE sender_id = $1 AND deleted_at IS NULL),
                        (SELECT count(*) FROM messages WHERE receiver_id = $1 AND deleted_at IS NULL)
                          + (SELECT count(*) FROM inbox i JOIN messages m ON m.id = i.message_id
                              WHERE i.user_id = $1 AND m.deleted_at IS NULL)
                          - (SELECT count(*) FROM messages
                              WHERE sender_id = $1 AND receiver_id IS NULL AND deleted_at IS NULL),
                        (SELECT count(*) FROM messages WHERE receiver_id = $1 AND NOT is_read)
                          + (SELECT count(*) FROM inbox WHERE user_id = $1 AND read_at IS NULL),
                        (SELECT count(*) FROM conversations WHERE user_a = $1 OR user_b = $1)
                          + (SELECT count(*) FROM conversation_members
                              WHERE user_id = $1 AND left_at IS NULL)",
                    )
                    .bind(me)
                    .fetch_one(self.lagging())
                    .await?;
                Ok(Stats {
                    total_sent,
                    total_received,
                    unread,
                    conversations,
                })
            }

            pub(super) async fn seq_of(&self, me: Uuid, id: Uuid) -> StoreResult<Option<i64>> {
                let seq = sqlx::query_scalar(
                    "SELECT CASE WHEN sender_id = $2 THEN sender_seq ELSE receiver_seq END
                     FROM messages WHERE id = $1 AND (sender_id = $2 OR receiver_id = $2)
                       AND receiver_id IS NOT NULL
                     UNION ALL
                     SELECT seq FROM inbox WHERE message_id = $1 AND user_id = $2",
                )
                .bind(id)
                .bind(me)
                .fetch_optional(&self.pool)
                .await?;
                Ok(seq)
            }

            /// A user's messages and changes after their sequence number
            /// `after`: one ordered scan per index (sent, received, group
            /// inbox, changes), merged.
            pub(super) async fn entries_after(
                &self,
                me: Uuid,
                after: i64,
                limit: u32,
            ) -> StoreResult<Page<Entry>> {
                let rows: Vec<EntryRow> = sqlx::query_as(concat!(
                    "SELECT * FROM (SELECT m.sender_seq AS my_seq, ",
                    message_columns!(),
                    ", ",
                    no_change!(),
                    " FROM messages m WHERE m.sender_id = $1 AND m.sender_seq > $2
                        ORDER BY m.sender_seq LIMIT $3) sent
                      UNION ALL
                      SELECT * FROM (SELECT m.receiver_seq AS my_seq, ",
                    message_columns!(),
                    ", ",
                    no_change!(),
                    " FROM messages m WHERE m.receiver_id = $1 AND m.receiver_seq > $2
                        ORDER BY m.receiver_seq LIMIT $3) received
                      UNION ALL
                      SELECT * FROM (SELECT i.seq AS my_seq, ",
                    inbox_message_columns!(),
                    ", ",
                    no_change!(),
                    " FROM inbox i JOIN messages m ON m.id = i.message_id
                        WHERE i.user_id = $1 AND i.seq > $2 ORDER BY i.seq LIMIT $3) grouped
                      UNION ALL
                      SELECT * FROM (SELECT ci.seq AS my_seq, ",
                    change_columns!(),
                    " FROM change_inbox ci JOIN message_changes c ON c.id = ci.change_id
                        JOIN messages m ON m.id = c.message_id
                        WHERE ci.user_id = $1 AND ci.seq > $2 ORDER BY ci.seq LIMIT $3) changed
                      ORDER BY my_seq LIMIT $3"
                ))
                .bind(me)
                .bind(after)
                .bind(i64::from(limit) + 1)
                .fetch_all(&self.pool)
                .await?;
                let mut page: Page<Entry> =
                    Page::from_overfetch(rows.into_iter().map(Into::into).collect(), limit);
                let mut messages: Vec<Message> = page
                    .items
                    .iter()
                    .filter_map(|e| e.message().filter(|m| m.message_type != MessageType::Text))
                    .cloned()
                    .collect();
                if !messages.is_empty() {
                    // Only messages that carry files are looked up.
                    self.with_attachments(&mut messages).await?;
                    let mut files: std::collections::HashMap<Uuid, Vec<Attachment>> = messages
                        .into_iter()
                        .map(|m| (m.id, m.attachments))
                        .collect();
                    for entry in &mut page.items {
                        if let Entry::Message(s) = entry
                            && let Some(found) = files.remove(&s.message.id)
                        {
                            s.message.attachments = found;
                        }
                    }
                }
                Ok(page)
            }
        }
    };
}
