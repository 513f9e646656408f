//! The public model: what the store takes and answers, and the rules that
//! belong to the data itself (roles, an owner kept, search words, pages).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod lifecycle;
pub use lifecycle::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub username: Option<String>,
    pub avatar_url: Option<String>,
    pub is_online: bool,
    pub last_seen: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A profile change: `None` keeps a field, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct ProfilePatch {
    pub username: Option<Option<String>>,
    pub avatar_url: Option<Option<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    Text,
    Image,
    File,
    System,
}

impl MessageType {
    /// A message carrying a picture is an `image`, one carrying another
    /// file a `file`.
    pub fn of(attachments: &[Attachment]) -> Self {
        match attachments.first() {
            None => Self::Text,
            Some(_)
                if attachments
                    .iter()
                    .any(|a| a.content_type.starts_with("image/")) =>
            {
                Self::Image
            }
            Some(_) => Self::File,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::File => "file",
            Self::System => "system",
        }
    }

    pub(super) fn parse(raw: &str) -> Self {
        match raw {
            "image" => Self::Image,
            "file" => Self::File,
            "system" => Self::System,
            _ => Self::Text,
        }
    }
}

/// A stored message, serialised with the columns of the seed's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub id: Uuid,
    pub sender_id: Uuid,
    /// The recipient of a direct message; `None` in a group.
    pub receiver_id: Option<Uuid>,
    pub content: String,
    pub message_type: MessageType,
    pub is_read: bool,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The sender's idempotency key; private to the sender, so not serialised.
    #[serde(skip)]
    #[schema(ignore)]
    pub client_id: Option<String>,
    pub conversation_id: Uuid,
    /// When the sender last edited it; absent if never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<DateTime<Utc>>,
    /// When it was deleted for everyone: its content is gone (empty) and
    /// only id, sender and times remain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    /// The message it answers, with a preview of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyTo>,
    /// Per-emoji counts, in history and search (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
    /// Files it carries (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// A file a message carries, as readers see it. `url` is the node's
/// `GET /api/v1/attachments/{id}`, which checks the reader may see it and
/// redirects to a download URL that expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attachment {
    pub id: Uuid,
    pub name: String,
    pub size: i64,
    pub content_type: String,
    pub url: String,
    /// Images only, when the uploader gave them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<i32>,
}

impl Attachment {
    pub fn url_of(id: Uuid) -> String {
        format!("/api/v1/attachments/{id}")
    }
}

/// What expiring old messages removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    pub messages: u64,
    /// The attachments that went with them: their bytes go next.
    pub files: Vec<Uuid>,
}

/// An attachment as stored: whose it is and, once sent, its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAttachment {
    pub attachment: Attachment,
    pub owner: Uuid,
    pub message_id: Option<Uuid>,
    pub announced_at: DateTime<Utc>,
}

/// An attachment about to be recorded, before its bytes are uploaded.
#[derive(Debug, Clone)]
pub struct NewAttachment {
    pub id: Uuid,
    pub owner: Uuid,
    pub name: String,
    pub size: i64,
    pub content_type: String,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub at: DateTime<Utc>,
}

/// The message a reply answers, as the reply shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplyTo {
    pub id: Uuid,
    pub sender_id: Uuid,
    /// Its first characters (up to [`ReplyTo::PREVIEW_CHARS`]); `null`
    /// once it was deleted.
    pub preview: Option<String>,
    pub deleted: bool,
}

impl ReplyTo {
    pub const PREVIEW_CHARS: usize = 100;

    pub fn of(m: &Message) -> Self {
        Self {
            id: m.id,
            sender_id: m.sender_id,
            preview: m
                .deleted_at
                .is_none()
                .then(|| m.content.chars().take(Self::PREVIEW_CHARS).collect()),
            deleted: m.deleted_at.is_some(),
        }
    }
}

/// One emoji's reactions on a message: how many, and whether the reader is
/// among them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reaction {
    pub emoji: String,
    pub count: i64,
    pub me: bool,
}

/// A message with its number in one participant's sequence (see the module
/// docs): what `sync` and live-delivery catch-up return, and the `seq` a
/// frame for that participant carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    pub seq: i64,
    pub message: Message,
}

/// A message just stored, with its number in each participant's sequence:
/// sender and recipient of a direct message, every member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub message: Message,
    pub seqs: Vec<(Uuid, i64)>,
}

/// Whether a group may lose an owner: not the last one while others remain.
pub(super) fn keeps_an_owner(owners: i64, members: i64) -> bool {
    owners > 1 || members <= 1
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A direct message to one user.
    User(Uuid),
    /// A message to every member of a group.
    Group(Uuid),
}

/// A message about to be written. The id and time are chosen by the caller.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: Uuid,
    pub sender_id: Uuid,
    pub to: Target,
    pub content: String,
    pub client_id: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The message it answers (checked readable by the sender, in the same
    /// conversation, before it is written).
    pub reply_to: Option<ReplyTo>,
    /// The sender's uploaded attachments it carries (checked before).
    pub attachments: Vec<Attachment>,
}

/// What happened to one message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    Created(Stored),
    /// The sender already stored a message with this `client_id`.
    Duplicate(Message),
    RecipientNotFound,
    SenderNotFound,
    /// No group with that id.
    GroupNotFound,
    /// The sender is not (or no longer) a member of the group.
    NotMember,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows: the extra row only says
    /// there is more.
    pub(super) fn from_overfetch(mut items: Vec<T>, limit: u32) -> Self {
        let has_more = items.len() > limit as usize;
        items.truncate(limit as usize);
        Self { items, has_more }
    }

    /// A page of history read newest first (to stop at the cursor), handed
    /// out oldest first as clients show it.
    pub(super) fn oldest_first(rows: Vec<T>, limit: u32) -> Self {
        let mut page = Self::from_overfetch(rows, limit);
        page.items.reverse();
        page
    }
}

/// One entry of a user's conversation list. Direct entries keep the seed's
/// fields (`user_id`, `username`, `avatar_url` of the other person, each
/// present even when null); group entries carry the group's `title`,
/// `member_count` and `avatar_url` instead, and have no `last_message` until
/// the first one is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    pub conversation_id: Uuid,
    pub kind: ConversationKind,
    pub user_id: Option<Uuid>,
    pub username: Option<String>,
    pub title: Option<String>,
    pub avatar_url: Option<String>,
    pub member_count: Option<i64>,
    pub last_message: Option<Message>,
    pub unread_count: i64,
}

impl Serialize for ConversationSummary {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("conversation_id", &self.conversation_id)?;
        map.serialize_entry("kind", &self.kind)?;
        match self.kind {
            ConversationKind::Direct => {
                map.serialize_entry("user_id", &self.user_id)?;
                map.serialize_entry("username", &self.username)?;
            }
            ConversationKind::Group => {
                map.serialize_entry("title", &self.title)?;
                map.serialize_entry("member_count", &self.member_count)?;
            }
        }
        map.serialize_entry("avatar_url", &self.avatar_url)?;
        map.serialize_entry("last_message", &self.last_message)?;
        map.serialize_entry("unread_count", &self.unread_count)?;
        map.end()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConversationKind {
    Direct,
    Group,
}

/// A member's role in a group: owners manage everything (roles included),
/// admins manage members, members talk.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    pub(super) fn parse(raw: &str) -> Self {
        match raw {
            "owner" => Self::Owner,
            "admin" => Self::Admin,
            _ => Self::Member,
        }
    }
}

/// A change to a group and who may make it: the one rule, which the domain
/// layer checks to answer and each store checks again under the group's
/// lock, so a role taken away meanwhile (a demoted admin's request in
/// flight) refuses the change instead of letting it land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupAction {
    /// Rename, or change the avatar: owners and admins.
    Edit,
    /// Owners and admins.
    AddMembers,
    /// Anyone leaves; owners remove admins and members, admins members.
    Remove { actor: Uuid, target: Uuid },
    /// Owners only.
    SetRole,
}

impl GroupAction {
    /// `actor`: the actor's current role; `target`: the removed member's.
    pub fn allowed(self, actor: Role, target: Option<Role>) -> bool {
        match self {
            Self::Edit | Self::AddMembers => actor >= Role::Admin,
            Self::SetRole => actor == Role::Owner,
            Self::Remove {
                actor: a,
                target: t,
            } if a == t => true,
            Self::Remove { .. } => actor >= Role::Admin && target.is_some_and(|t| t < actor),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    pub user_id: Uuid,
    pub username: Option<String>,
    pub avatar_url: Option<String>,
    pub role: Role,
    pub joined_at: DateTime<Utc>,
}

/// A group with its current members (oldest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Group {
    pub id: Uuid,
    pub kind: ConversationKind,
    pub title: String,
    pub avatar_url: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub member_count: i64,
    pub members: Vec<Member>,
}

impl Group {
    pub fn member_ids(&self) -> Vec<Uuid> {
        self.members.iter().map(|m| m.user_id).collect()
    }

    pub fn role_of(&self, user: Uuid) -> Option<Role> {
        self.members
            .iter()
            .find(|m| m.user_id == user)
            .map(|m| m.role)
    }
}

/// A group about to be created: `creator` becomes its owner, `members` its
/// other members.
#[derive(Debug, Clone)]
pub struct NewGroup {
    pub id: Uuid,
    pub title: String,
    pub avatar_url: Option<String>,
    pub creator: Uuid,
    pub members: Vec<Uuid>,
    pub at: DateTime<Utc>,
}

/// A group change: `None` keeps a field, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct GroupPatch {
    pub title: Option<String>,
    pub avatar_url: Option<Option<String>>,
}

/// Where a user stands in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// No conversation with that id.
    NotFound,
    /// A direct conversation the user takes part in, with `peer`.
    Direct { peer: Uuid },
    /// A group the user belongs to.
    Member(Role),
    /// A group the user left or was removed from.
    Former,
    /// A conversation the user never belonged to.
    Outsider,
}

/// Someone found by name: what anyone signed in may see of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Person {
    pub id: Uuid,
    pub username: Option<String>,
    pub avatar_url: Option<String>,
}

/// Someone a user has blocked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Block {
    pub user_id: Uuid,
    pub blocked_at: DateTime<Utc>,
}

/// What adding members did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// These users joined (those already members are left out).
    Joined(Vec<Uuid>),
    /// The group would pass `max` members; nobody was added.
    TooMany { members: i64 },
    /// The group does not exist.
    NoGroup,
    /// The actor (no longer) may add members.
    Denied,
}

/// What removing a member (or changing a role) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    Done,
    /// The user is not a current member.
    NotMember,
    /// Refused: the group would be left without an owner while others remain.
    LastOwner,
    /// The actor (no longer) may make this change.
    Denied,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub total_sent: i64,
    pub total_received: i64,
    pub unread: i64,
    pub conversations: i64,
}

/// A message that just turned read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMark {
    pub message_id: Uuid,
    pub sender_id: Uuid,
    /// Set for group messages, so the receipt can name the group.
    pub group: Option<Uuid>,
}

/// A search: whole words, case-insensitive, all of them must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchWords(Vec<String>);

impl SearchWords {
    pub const MAX_WORDS: usize = 16;

    /// Splits on anything that is not a letter or digit. `None` when no word
    /// is left.
    pub fn parse(query: &str) -> Option<Self> {
        let words: Vec<String> = query
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .take(Self::MAX_WORDS)
            .map(|w| w.chars().take(64).collect::<String>().to_lowercase())
            .collect();
        (!words.is_empty()).then_some(Self(words))
    }

    pub fn words(&self) -> &[String] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_words_split_and_lowercase() {
        let words = SearchWords::parse("Hello, WORLD! héllo_x").unwrap();
        assert_eq!(words.words(), ["hello", "world", "héllo", "x"]);
        assert_eq!(SearchWords::parse("  ,.;  "), None);
    }
}
