//! Rows as the engines read them, and how they become the model.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;

/// Messages read back with their numbers, as [`Store::stored`] answers:
/// `seqs` holds (message, participant, number) rows of any order.
pub(super) fn stored_messages(rows: Vec<MessageRow>, seqs: Vec<(Uuid, Uuid, i64)>) -> Vec<Stored> {
    let mut numbers: HashMap<Uuid, Vec<(Uuid, i64)>> = HashMap::new();
    for (message, user, seq) in seqs {
        numbers.entry(message).or_default().push((user, seq));
    }
    rows.into_iter()
        .map(|row| {
            let message = Message::from(row);
            let seqs = numbers.remove(&message.id).unwrap_or_default();
            Stored { message, seqs }
        })
        .collect()
}

/// A message a change is about to change, with what its rules need: the
/// actor's role in its group and the reactions it carries.
#[derive(sqlx::FromRow)]
pub(super) struct ChangeTargetRow {
    #[sqlx(flatten)]
    pub(super) message: MessageRow,
    /// Whether the actor used the change's `client_id` before.
    pub(super) done: bool,
    /// The actor's role, when the message is a group's and they are in it.
    pub(super) role: Option<String>,
    /// Reactions of the change's emoji: the actor's, and everyone's.
    pub(super) mine: i64,
    pub(super) present: i64,
    /// Distinct emojis on the message.
    pub(super) emojis: i64,
}

/// A message as both backends read it (each selects the same column names).
#[derive(sqlx::FromRow)]
pub(super) struct MessageRow {
    pub(super) id: Uuid,
    pub(super) sender_id: Uuid,
    pub(super) receiver_id: Option<Uuid>,
    pub(super) content: String,
    pub(super) message_type: String,
    pub(super) is_read: bool,
    pub(super) read_at: Option<DateTime<Utc>>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) client_id: Option<String>,
    pub(super) conversation_id: Uuid,
    pub(super) edited_at: Option<DateTime<Utc>>,
    pub(super) deleted_at: Option<DateTime<Utc>>,
    pub(super) reply_to: Option<Uuid>,
    /// The replied-to message's sender, and its first characters unless it
    /// was deleted.
    pub(super) reply_sender: Option<Uuid>,
    pub(super) reply_preview: Option<String>,
}

impl From<MessageRow> for Message {
    fn from(r: MessageRow) -> Self {
        Message {
            id: r.id,
            sender_id: r.sender_id,
            receiver_id: r.receiver_id,
            content: r.content,
            message_type: MessageType::parse(&r.message_type),
            is_read: r.is_read,
            read_at: r.read_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            client_id: r.client_id,
            conversation_id: r.conversation_id,
            edited_at: r.edited_at,
            deleted_at: r.deleted_at,
            reply_to: match (r.reply_to, r.reply_sender) {
                (Some(id), Some(sender_id)) => Some(ReplyTo {
                    id,
                    sender_id,
                    deleted: r.reply_preview.is_none(),
                    preview: r.reply_preview,
                }),
                _ => None,
            },
            reactions: Vec::new(),
            attachments: Vec::new(),
        }
    }
}

/// An attachment as both engines read it.
#[derive(sqlx::FromRow)]
pub(super) struct AttachmentRow {
    pub(super) id: Uuid,
    pub(super) owner_id: Uuid,
    pub(super) message_id: Option<Uuid>,
    pub(super) name: String,
    pub(super) size: i64,
    pub(super) content_type: String,
    pub(super) width: Option<i32>,
    pub(super) height: Option<i32>,
    pub(super) created_at: DateTime<Utc>,
}

impl From<AttachmentRow> for StoredAttachment {
    fn from(r: AttachmentRow) -> Self {
        StoredAttachment {
            attachment: Attachment {
                id: r.id,
                name: r.name,
                size: r.size,
                content_type: r.content_type,
                url: Attachment::url_of(r.id),
                width: r.width,
                height: r.height,
            },
            owner: r.owner_id,
            message_id: r.message_id,
            announced_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    pub(super) id: Uuid,
    pub(super) email: String,
    pub(super) username: Option<String>,
    pub(super) avatar_url: Option<String>,
    pub(super) is_online: bool,
    pub(super) last_seen: DateTime<Utc>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: r.id,
            email: r.email,
            username: r.username,
            avatar_url: r.avatar_url,
            is_online: r.is_online,
            last_seen: r.last_seen,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// An entry of a reader's sequence: a message, or (`change_id` set) a
/// change with the message it changed as it is now.
#[derive(sqlx::FromRow)]
pub(super) struct EntryRow {
    pub(super) my_seq: i64,
    #[sqlx(flatten)]
    pub(super) message: MessageRow,
    pub(super) change_id: Option<Uuid>,
    pub(super) change_kind: Option<String>,
    pub(super) actor_id: Option<Uuid>,
    pub(super) emoji: Option<String>,
    pub(super) changed_at: Option<DateTime<Utc>>,
}

impl From<EntryRow> for Entry {
    fn from(r: EntryRow) -> Self {
        let message = Message::from(r.message);
        match (r.change_id, r.change_kind, r.actor_id, r.changed_at) {
            (Some(id), Some(kind), Some(actor), Some(at)) => Entry::Change {
                seq: r.my_seq,
                change: Change {
                    id,
                    kind: ChangeType::parse(&kind),
                    actor,
                    emoji: r.emoji,
                    at,
                    message,
                },
            },
            _ => Entry::Message(Sequenced {
                seq: r.my_seq,
                message,
            }),
        }
    }
}

/// A change read back, with the message it changed.
#[derive(sqlx::FromRow)]
pub(super) struct ChangeRow {
    #[sqlx(flatten)]
    pub(super) message: MessageRow,
    pub(super) change_id: Uuid,
    pub(super) change_kind: String,
    pub(super) actor_id: Uuid,
    pub(super) emoji: Option<String>,
    pub(super) changed_at: DateTime<Utc>,
}

impl From<ChangeRow> for Change {
    fn from(r: ChangeRow) -> Self {
        Change {
            id: r.change_id,
            kind: ChangeType::parse(&r.change_kind),
            actor: r.actor_id,
            emoji: r.emoji,
            at: r.changed_at,
            message: r.message.into(),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct GroupRow {
    pub(super) id: Uuid,
    pub(super) title: Option<String>,
    pub(super) avatar_url: Option<String>,
    pub(super) created_by: Option<Uuid>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) member_count: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct MemberRow {
    pub(super) user_id: Uuid,
    pub(super) username: Option<String>,
    pub(super) avatar_url: Option<String>,
    pub(super) role: String,
    pub(super) joined_at: DateTime<Utc>,
}

impl GroupRow {
    pub(super) fn with_members(self, members: Vec<MemberRow>) -> Group {
        Group {
            id: self.id,
            kind: ConversationKind::Group,
            title: self.title.unwrap_or_default(),
            avatar_url: self.avatar_url,
            created_by: self.created_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
            member_count: self.member_count,
            members: members
                .into_iter()
                .map(|m| Member {
                    user_id: m.user_id,
                    username: m.username,
                    avatar_url: m.avatar_url,
                    role: Role::parse(&m.role),
                    joined_at: m.joined_at,
                })
                .collect(),
        }
    }
}

/// What both backends read to place a user in a conversation: its kind and
/// pair (direct), the user's current role and whether they were ever a
/// member (group).
#[derive(sqlx::FromRow)]
pub(super) struct MembershipRow {
    pub(super) kind: String,
    pub(super) user_a: Option<Uuid>,
    pub(super) user_b: Option<Uuid>,
    pub(super) role: Option<String>,
    pub(super) ever: bool,
}

impl MembershipRow {
    pub(super) fn place(row: Option<Self>, user: Uuid) -> Membership {
        let Some(r) = row else {
            return Membership::NotFound;
        };
        if r.kind == "direct" {
            return match (r.user_a, r.user_b) {
                (Some(a), Some(b)) if a == user => Membership::Direct { peer: b },
                (Some(a), Some(b)) if b == user => Membership::Direct { peer: a },
                _ => Membership::Outsider,
            };
        }
        match (r.role, r.ever) {
            (Some(role), _) => Membership::Member(Role::parse(&role)),
            (None, true) => Membership::Former,
            (None, false) => Membership::Outsider,
        }
    }
}

/// A conversation-list entry as both backends read it; the last message is
/// read separately.
#[derive(sqlx::FromRow)]
pub(super) struct SummaryRow {
    pub(super) conversation_id: Uuid,
    pub(super) kind: String,
    pub(super) peer: Option<Uuid>,
    pub(super) title: Option<String>,
    pub(super) group_avatar: Option<String>,
    pub(super) member_count: Option<i64>,
    pub(super) username: Option<String>,
    pub(super) peer_avatar: Option<String>,
    pub(super) last_id: Option<Uuid>,
    pub(super) unread: i64,
}

impl SummaryRow {
    pub(super) fn into_summary(self, last: &HashMap<Uuid, Message>) -> ConversationSummary {
        let group = self.kind == "group";
        ConversationSummary {
            conversation_id: self.conversation_id,
            kind: if group {
                ConversationKind::Group
            } else {
                ConversationKind::Direct
            },
            user_id: self.peer,
            username: self.username,
            title: self.title,
            avatar_url: if group {
                self.group_avatar
            } else {
                self.peer_avatar
            },
            member_count: self.member_count,
            last_message: self.last_id.and_then(|id| last.get(&id).cloned()),
            unread_count: self.unread,
        }
    }
}

/// Columns of a user, in the order [`UserRow`] reads them.
pub(super) const USER_COLUMNS: &str =
    "id, email, username, avatar_url, is_online, last_seen, created_at, updated_at";
