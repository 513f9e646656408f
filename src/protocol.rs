//! WebSocket wire types: the seed's frames plus DESIGN.md's additions.
//! Only (de)serialisation lives here; meaning lives in `chat`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode};
pub use crate::store::SyncFrom;
use crate::store::{
    Attachment, Change, ChangeKind, ChangeType, Entry, Group, Message, ReplyTo, Sequenced,
};

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    Message(SendFrame),
    Ping,
    MarkRead {
        message_id: Uuid,
    },
    Typing {
        to: Destination,
        is_typing: bool,
    },
    Sync {
        from: SyncFrom,
        limit: Option<u32>,
    },
    /// `edit`, `delete`, `react` or `unreact` of a sent message.
    Change {
        message_id: Uuid,
        kind: ChangeKind,
        client_id: Option<String>,
    },
}

/// Where a `message` or `typing` frame goes: the seed's `to` (a user), or a
/// `conversation_id` (a group, or a direct conversation by its id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    User(Uuid),
    Conversation(Uuid),
}

/// The two ways of naming a destination; exactly one must be given.
#[derive(Deserialize)]
struct DestinationFields {
    #[serde(default)]
    to: Option<Uuid>,
    #[serde(default)]
    conversation_id: Option<Uuid>,
}

impl DestinationFields {
    fn destination(self) -> Result<Destination, &'static str> {
        match (self.to, self.conversation_id) {
            (Some(to), None) => Ok(Destination::User(to)),
            (None, Some(c)) => Ok(Destination::Conversation(c)),
            (None, None) => Err("missing field `to` or `conversation_id`"),
            (Some(_), Some(_)) => Err("give either `to` or `conversation_id`, not both"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SendFrame {
    pub to: Destination,
    pub content: String,
    pub client_id: Option<String>,
    /// The message this one answers.
    pub reply_to: Option<Uuid>,
    /// Attachments (announced and uploaded) it carries.
    pub attachments: Vec<Uuid>,
}

#[derive(Deserialize)]
struct SendFields {
    #[serde(flatten)]
    to: DestinationFields,
    content: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    reply_to: Option<Uuid>,
    #[serde(default)]
    attachments: Vec<Uuid>,
}

#[derive(Deserialize)]
struct EditFields {
    message_id: Uuid,
    content: String,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Deserialize)]
struct DeleteFields {
    message_id: Uuid,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Deserialize)]
struct ReactFields {
    message_id: Uuid,
    emoji: String,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Deserialize)]
struct MarkReadFrame {
    message_id: Uuid,
}

#[derive(Deserialize)]
struct TypingFrame {
    #[serde(flatten)]
    to: DestinationFields,
    is_typing: bool,
}

#[derive(Deserialize)]
struct SyncFrame {
    #[serde(default)]
    since: Option<Uuid>,
    #[serde(default)]
    cursor: Option<i64>,
    #[serde(default)]
    limit: Option<u32>,
}

/// A frame that could not be read, with the `client_id` it carried (if any)
/// so the client can match the error to what it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub error: ApiError,
    pub client_id: Option<String>,
}

impl ClientFrame {
    /// Bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Message(_) => "message",
            Self::Ping => "ping",
            Self::MarkRead { .. } => "mark_read",
            Self::Typing { .. } => "typing",
            Self::Sync { .. } => "sync",
            Self::Change { kind, .. } => kind.as_str(),
        }
    }

    /// The `client_id` a frame carries, if it is one whose answer the
    /// client waits for by it.
    pub fn client_id(&self) -> Option<&str> {
        match self {
            Self::Message(f) => f.client_id.as_deref(),
            Self::Change { client_id, .. } => client_id.as_deref(),
            _ => None,
        }
    }

    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let value: Value = serde_json::from_str(text).map_err(|e| FrameError {
            error: ApiError::new(
                ErrorCode::InvalidJson,
                format!("frame is not valid JSON: {e}"),
            ),
            client_id: None,
        })?;
        let client_id = value
            .get("client_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let fail = |code: ErrorCode, message: String| FrameError {
            error: ApiError::new(code, message),
            client_id: client_id.clone(),
        };
        let kind = match value.get("type") {
            Some(Value::String(kind)) => kind.clone(),
            Some(_) => {
                return Err(fail(
                    ErrorCode::InvalidField,
                    "`type` must be a string".into(),
                ));
            }
            None if value.is_object() => {
                return Err(fail(ErrorCode::InvalidField, "missing field `type`".into()));
            }
            None => {
                return Err(fail(
                    ErrorCode::InvalidJson,
                    "frame must be a JSON object".into(),
                ));
            }
        };
        let field = |e: serde_json::Error| {
            fail(
                ErrorCode::InvalidField,
                format!("invalid `{kind}` frame: {e}"),
            )
        };
        match kind.as_str() {
            "message" => {
                let f: SendFields = serde_json::from_value(value.clone()).map_err(field)?;
                let to = f.to.destination().map_err(|e| {
                    fail(
                        ErrorCode::InvalidField,
                        format!("invalid `message` frame: {e}"),
                    )
                })?;
                Ok(Self::Message(SendFrame {
                    to,
                    content: f.content,
                    client_id: f.client_id,
                    reply_to: f.reply_to,
                    attachments: f.attachments,
                }))
            }
            "ping" => Ok(Self::Ping),
            "mark_read" => {
                let f: MarkReadFrame = serde_json::from_value(value.clone()).map_err(field)?;
                Ok(Self::MarkRead {
                    message_id: f.message_id,
                })
            }
            "typing" => {
                let f: TypingFrame = serde_json::from_value(value.clone()).map_err(field)?;
                let to = f.to.destination().map_err(|e| {
                    fail(
                        ErrorCode::InvalidField,
                        format!("invalid `typing` frame: {e}"),
                    )
                })?;
                Ok(Self::Typing {
                    to,
                    is_typing: f.is_typing,
                })
            }
            "sync" => {
                let f: SyncFrame = serde_json::from_value(value.clone()).map_err(field)?;
                let from = match (f.since, f.cursor) {
                    (None, None) => SyncFrom::Start,
                    (Some(id), None) => SyncFrom::Message(id),
                    (None, Some(seq)) if seq >= 0 => SyncFrom::Cursor(seq),
                    (None, Some(_)) => {
                        return Err(fail(
                            ErrorCode::InvalidField,
                            "invalid `sync` frame: `cursor` must not be negative".into(),
                        ));
                    }
                    (Some(_), Some(_)) => {
                        return Err(fail(
                            ErrorCode::InvalidField,
                            "invalid `sync` frame: give either `since` or `cursor`, not both"
                                .into(),
                        ));
                    }
                };
                Ok(Self::Sync {
                    from,
                    limit: f.limit,
                })
            }
            "edit" => {
                let f: EditFields = serde_json::from_value(value.clone()).map_err(field)?;
                Ok(Self::Change {
                    message_id: f.message_id,
                    kind: ChangeKind::Edit { content: f.content },
                    client_id: f.client_id,
                })
            }
            "delete" => {
                let f: DeleteFields = serde_json::from_value(value.clone()).map_err(field)?;
                Ok(Self::Change {
                    message_id: f.message_id,
                    kind: ChangeKind::Delete,
                    client_id: f.client_id,
                })
            }
            "react" | "unreact" => {
                let f: ReactFields = serde_json::from_value(value.clone()).map_err(field)?;
                let kind = if kind == "react" {
                    ChangeKind::React { emoji: f.emoji }
                } else {
                    ChangeKind::Unreact { emoji: f.emoji }
                };
                Ok(Self::Change {
                    message_id: f.message_id,
                    kind,
                    client_id: f.client_id,
                })
            }
            other => Err(fail(
                ErrorCode::UnknownType,
                format!("unknown frame type {other:?}"),
            )),
        }
    }
}

/// A message as the WebSocket shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageFrame {
    pub id: Uuid,
    pub from: Uuid,
    /// The recipient of a direct message; absent in a group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Uuid>,
    /// The group of a group message; absent on direct messages, whose
    /// frames stay exactly the seed's (plus `seq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<Uuid>,
    pub content: String,
    pub timestamp: DateTime<Utc>,
    /// The message's number in the receiving user's own sequence (each user
    /// numbers every message they send or receive, in commit order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// The message this one answers, with a preview of it (boxed: most
    /// messages answer none, and every frame is as large as its largest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Box<ReplyTo>>,
    /// Set when a `sync` returns a message edited since it was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<DateTime<Utc>>,
    /// Set when a `sync` returns a message deleted since (its content empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    /// Files it carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

impl MessageFrame {
    /// The frame one participant gets: `seq` is that participant's number.
    pub fn numbered(m: &Message, seq: i64) -> Self {
        Self {
            id: m.id,
            from: m.sender_id,
            to: m.receiver_id,
            conversation_id: m.receiver_id.is_none().then_some(m.conversation_id),
            content: m.content.clone(),
            timestamp: m.created_at,
            seq: Some(seq),
            reply_to: m.reply_to.clone().map(Box::new),
            edited_at: m.edited_at,
            deleted_at: m.deleted_at,
            attachments: m.attachments.clone(),
        }
    }
}

impl From<&Sequenced> for MessageFrame {
    fn from(s: &Sequenced) -> Self {
        Self::numbered(&s.message, s.seq)
    }
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Message(MessageFrame),
    Ack {
        client_id: Option<String>,
        id: Uuid,
        timestamp: DateTime<Utc>,
    },
    Pong,
    Error {
        message: String,
        code: ErrorCode,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// `version` grows with each of that user's presence transitions, so a
    /// late event can be told from a newer one.
    UserOnline {
        user_id: Uuid,
        version: u64,
    },
    UserOffline {
        user_id: Uuid,
        version: u64,
    },
    /// `conversation_id` is set when typing in a group.
    Typing {
        from: Uuid,
        is_typing: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation_id: Option<Uuid>,
    },
    /// `conversation_id` is set for a group message.
    ReadReceipt {
        message_id: Uuid,
        read_by: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation_id: Option<Uuid>,
    },
    /// `changes` (edits, deletes, reactions) and `messages` interleave by
    /// `seq`; `cursor` is where the next `sync` goes on from.
    Sync {
        messages: Vec<MessageFrame>,
        #[serde(default)]
        changes: Vec<ServerFrame>,
        has_more: bool,
        #[serde(default)]
        cursor: i64,
    },
    /// A message's sender edited it.
    MessageUpdated {
        id: Uuid,
        conversation_id: Uuid,
        content: String,
        edited_at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<i64>,
    },
    /// A message was deleted for everyone.
    MessageDeleted {
        id: Uuid,
        conversation_id: Uuid,
        deleted_at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<i64>,
    },
    ReactionAdded {
        message_id: Uuid,
        conversation_id: Uuid,
        user_id: Uuid,
        emoji: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<i64>,
    },
    ReactionRemoved {
        message_id: Uuid,
        conversation_id: Uuid,
        user_id: Uuid,
        emoji: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<i64>,
    },
    /// A group was created with the receiver in it.
    ConversationCreated {
        conversation: Group,
    },
    /// `user_ids` joined the group (added by `by`); the group as it is now.
    MemberAdded {
        conversation_id: Uuid,
        user_ids: Vec<Uuid>,
        by: Uuid,
        conversation: Group,
    },
    /// `user_id` left (`by` is themselves) or was removed by `by`.
    MemberRemoved {
        conversation_id: Uuid,
        user_id: Uuid,
        by: Uuid,
    },
    /// Title, avatar or a role changed; the group as it is now.
    ConversationUpdated {
        conversation: Group,
    },
}

impl ServerFrame {
    pub const KINDS: [&'static str; 17] = [
        "message",
        "ack",
        "pong",
        "error",
        "user_online",
        "user_offline",
        "typing",
        "read_receipt",
        "sync",
        "conversation_created",
        "member_added",
        "member_removed",
        "conversation_updated",
        "message_updated",
        "message_deleted",
        "reaction_added",
        "reaction_removed",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Message(_) => "message",
            Self::Ack { .. } => "ack",
            Self::Pong => "pong",
            Self::Error { .. } => "error",
            Self::UserOnline { .. } => "user_online",
            Self::UserOffline { .. } => "user_offline",
            Self::Typing { .. } => "typing",
            Self::ReadReceipt { .. } => "read_receipt",
            Self::Sync { .. } => "sync",
            Self::ConversationCreated { .. } => "conversation_created",
            Self::MemberAdded { .. } => "member_added",
            Self::MemberRemoved { .. } => "member_removed",
            Self::ConversationUpdated { .. } => "conversation_updated",
            Self::MessageUpdated { .. } => "message_updated",
            Self::MessageDeleted { .. } => "message_deleted",
            Self::ReactionAdded { .. } => "reaction_added",
            Self::ReactionRemoved { .. } => "reaction_removed",
        }
    }

    /// The event a change is to one reader: `seq` is that reader's number.
    pub fn change(c: &Change, seq: i64) -> Self {
        let m = &c.message;
        let seq = Some(seq);
        let reaction = |emoji: &Option<String>| emoji.clone().unwrap_or_default();
        match c.kind {
            ChangeType::Edit => Self::MessageUpdated {
                id: m.id,
                conversation_id: m.conversation_id,
                content: m.content.clone(),
                edited_at: m.edited_at.unwrap_or(c.at),
                seq,
            },
            ChangeType::Delete => Self::MessageDeleted {
                id: m.id,
                conversation_id: m.conversation_id,
                deleted_at: m.deleted_at.unwrap_or(c.at),
                seq,
            },
            ChangeType::React => Self::ReactionAdded {
                message_id: m.id,
                conversation_id: m.conversation_id,
                user_id: c.actor,
                emoji: reaction(&c.emoji),
                seq,
            },
            ChangeType::Unreact => Self::ReactionRemoved {
                message_id: m.id,
                conversation_id: m.conversation_id,
                user_id: c.actor,
                emoji: reaction(&c.emoji),
                seq,
            },
        }
    }

    /// The frame an entry of a user's sequence is.
    pub fn entry(e: &Entry) -> Self {
        match e {
            Entry::Message(s) => Self::Message(MessageFrame::from(s)),
            Entry::Change { seq, change } => Self::change(change, *seq),
        }
    }

    pub fn error(err: ApiError, client_id: Option<String>) -> Self {
        Self::Error {
            message: err.message,
            code: err.code,
            client_id,
        }
    }

    /// The JSON text, produced once and shared by every recipient.
    pub fn to_json(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).expect("server frames always serialise"))
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == raw)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {raw:?}")))
    }
}

#[cfg(test)]
mod tests;
