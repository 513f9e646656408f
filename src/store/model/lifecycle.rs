//! What happens to a message after it is sent: the changes to it, how
//! they are told, and the entries of a reader's sequence that carry them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Message, Sequenced};

/// What a change does to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    Edit { content: String },
    Delete,
    React { emoji: String },
    Unreact { emoji: String },
}

impl ChangeKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Edit { .. } => "edit",
            Self::Delete => "delete",
            Self::React { .. } => "react",
            Self::Unreact { .. } => "unreact",
        }
    }

    fn emoji(&self) -> Option<&str> {
        match self {
            Self::React { emoji } | Self::Unreact { emoji } => Some(emoji),
            _ => None,
        }
    }
}

/// A change about to be applied. The id and time are chosen by the caller.
#[derive(Debug, Clone)]
pub struct NewChange {
    pub id: Uuid,
    pub actor: Uuid,
    pub message_id: Uuid,
    pub kind: ChangeKind,
    pub client_id: Option<String>,
    pub at: DateTime<Utc>,
    /// How long after sending a message may be edited (`None`: always).
    pub edit_window: Option<chrono::Duration>,
    /// Distinct emojis a message may carry.
    pub max_reactions: u32,
}

impl NewChange {
    pub fn emoji(&self) -> Option<&str> {
        self.kind.emoji()
    }
}

/// A change applied to a message, as its readers are told of it: the
/// message as it is after the change (for an edit, its content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub id: Uuid,
    pub kind: ChangeType,
    pub actor: Uuid,
    pub emoji: Option<String>,
    pub at: DateTime<Utc>,
    pub message: Message,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Edit,
    Delete,
    React,
    Unreact,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Edit => "edit",
            Self::Delete => "delete",
            Self::React => "react",
            Self::Unreact => "unreact",
        }
    }

    pub(in crate::store) fn parse(raw: &str) -> Self {
        match raw {
            "edit" => Self::Edit,
            "delete" => Self::Delete,
            "react" => Self::React,
            _ => Self::Unreact,
        }
    }
}

/// A change just applied, with its number in each reader's sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChange {
    pub change: Change,
    pub seqs: Vec<(Uuid, i64)>,
    /// Attachments a delete took from the message: their bytes go next.
    pub removed: Vec<Uuid>,
}

/// What applying a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOutcome {
    Applied(StoredChange),
    /// The actor already made a change with this `client_id`: that one.
    Duplicate(Change),
    /// Nothing to do (a reaction already there, or not there to remove, a
    /// message already deleted): the message as it is.
    Unchanged(Message),
    /// No such message, or not one the actor can read.
    NotFound,
    /// Only the sender edits; the sender or a group's admins delete.
    NotAllowed,
    /// The message was deleted: it cannot be edited or reacted to.
    Deleted,
    /// The edit window has passed.
    TooLate,
    /// The message carries the most distinct emojis it may.
    TooManyReactions,
}

/// Where a `sync` starts: after a message (the seed's `since`), or after a
/// number of the user's own sequence (`cursor`, as the last `sync` answered
/// it); from the start when neither is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncFrom {
    Start,
    Message(Uuid),
    Cursor(i64),
}

impl From<Option<Uuid>> for SyncFrom {
    fn from(since: Option<Uuid>) -> Self {
        since.map_or(Self::Start, Self::Message)
    }
}

/// One entry of a reader's sequence: a message, or a change to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Message(Sequenced),
    Change { seq: i64, change: Change },
}

impl Entry {
    pub fn seq(&self) -> i64 {
        match self {
            Self::Message(s) => s.seq,
            Self::Change { seq, .. } => *seq,
        }
    }

    pub fn message(&self) -> Option<&Message> {
        match self {
            Self::Message(s) => Some(&s.message),
            Self::Change { .. } => None,
        }
    }
}
