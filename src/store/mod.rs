//! History and users: one trait, two implementations.
//!
//! [`postgres::PgStore`] is the production path; [`sqlite::SqliteStore`] is
//! the embedded default. All SQL lives under this module. Both run the same
//! contract suite (`tests/api/store_contract.rs`).
//!
//! Ordering rule that keeps `sync` gap-free: every message carries a
//! per-user sequence number for its sender (`sender_seq`) and its receiver
//! (`receiver_seq`). A writer takes the row locks of both users (in id order,
//! so writers never deadlock) before handing out the next numbers and holds
//! them until commit. Two transactions that touch the same user are therefore
//! serialised, and a user's sequence numbers become visible in the order they
//! were handed out: a reader that saw number `n` can never later find a
//! committed `n - 1` it missed.

mod instrumented;
pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What went wrong below the domain layer.
/// Database details are kept as text: they are only ever logged, and a
/// batch's one failure must be handed to every message in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached; nothing was written.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The connection failed after a write was sent (during its commit, or
    /// while its answer was on the way): it may be committed or not.
    #[error("database connection lost during a commit: {0}")]
    Uncertain(String),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("database error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => Self::Unavailable(err.to_string()),
            sqlx::Error::Database(ref db) if is_unavailable_code(db.code().as_deref()) => {
                Self::Unavailable(err.to_string())
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl StoreError {
    /// For an error that came after a write was sent: not reaching the
    /// database then means not knowing whether the write committed.
    pub fn after_sending(err: sqlx::Error) -> Self {
        Self::from(err).once_sent()
    }

    /// The same failure, had it come after a write was sent.
    pub fn once_sent(self) -> Self {
        match self {
            Self::Unavailable(why) => Self::Uncertain(why),
            other => other,
        }
    }
}

/// Codes that mean "try again later", not "your input is wrong": Postgres
/// classes 08 (connection), 53 (resources), 55 (e.g. a database refusing
/// connections), 57P (shutdown), 3D000 (database missing while connecting),
/// and SQLite's BUSY (5) and LOCKED (6), whose extended codes keep the
/// primary code in the low byte.
fn is_unavailable_code(code: Option<&str>) -> bool {
    let Some(c) = code else { return false };
    ["08", "53", "55", "57P"]
        .iter()
        .any(|class| c.starts_with(class))
        || c == "3D000"
        || c.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A timestamp at the precision both databases store (microseconds), so the
/// time in an `ack` equals the time read back later.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The stable id of the conversation between two users, whichever way round.
pub fn conversation_id(a: Uuid, b: Uuid) -> Uuid {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut name = [0u8; 32];
    name[..16].copy_from_slice(lo.as_bytes());
    name[16..].copy_from_slice(hi.as_bytes());
    Uuid::new_v5(&CONVERSATION_NAMESPACE, &name)
}

const CONVERSATION_NAMESPACE: Uuid = Uuid::from_u128(0x6f63_6861_7400_4000_8000_636f_6e76_6572);

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
    fn parse(raw: &str) -> Self {
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

/// Messages read back with their numbers, as [`Store::stored`] answers:
/// `seqs` holds (message, participant, number) rows of any order.
fn stored_messages(rows: Vec<MessageRow>, seqs: Vec<(Uuid, Uuid, i64)>) -> Vec<Stored> {
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

/// A message as both backends read it (each selects the same column names).
#[derive(sqlx::FromRow)]
struct MessageRow {
    id: Uuid,
    sender_id: Uuid,
    receiver_id: Option<Uuid>,
    content: String,
    message_type: String,
    is_read: bool,
    read_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    client_id: Option<String>,
    conversation_id: Uuid,
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
        }
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    email: String,
    username: Option<String>,
    avatar_url: Option<String>,
    is_online: bool,
    last_seen: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
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

/// A message row read with the reader's own sequence number (`my_seq`).
#[derive(sqlx::FromRow)]
struct SequencedRow {
    my_seq: i64,
    #[sqlx(flatten)]
    message: MessageRow,
}

impl From<SequencedRow> for Sequenced {
    fn from(r: SequencedRow) -> Self {
        Sequenced {
            seq: r.my_seq,
            message: r.message.into(),
        }
    }
}

#[derive(sqlx::FromRow)]
struct GroupRow {
    id: Uuid,
    title: Option<String>,
    avatar_url: Option<String>,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    member_count: i64,
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    user_id: Uuid,
    username: Option<String>,
    avatar_url: Option<String>,
    role: String,
    joined_at: DateTime<Utc>,
}

impl GroupRow {
    fn with_members(self, members: Vec<MemberRow>) -> Group {
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
struct MembershipRow {
    kind: String,
    user_a: Option<Uuid>,
    user_b: Option<Uuid>,
    role: Option<String>,
    ever: bool,
}

impl MembershipRow {
    fn place(row: Option<Self>, user: Uuid) -> Membership {
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
struct SummaryRow {
    conversation_id: Uuid,
    kind: String,
    peer: Option<Uuid>,
    title: Option<String>,
    group_avatar: Option<String>,
    member_count: Option<i64>,
    username: Option<String>,
    peer_avatar: Option<String>,
    last_id: Option<Uuid>,
    unread: i64,
}

impl SummaryRow {
    fn into_summary(self, last: &HashMap<Uuid, Message>) -> ConversationSummary {
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

/// Whether a group may lose an owner: not the last one while others remain.
fn keeps_an_owner(owners: i64, members: i64) -> bool {
    owners > 1 || members <= 1
}

/// Columns of a user, in the order [`UserRow`] reads them.
const USER_COLUMNS: &str =
    "id, email, username, avatar_url, is_online, last_seen, created_at, updated_at";

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
    fn from_overfetch(mut items: Vec<T>, limit: u32) -> Self {
        let has_more = items.len() > limit as usize;
        items.truncate(limit as usize);
        Self { items, has_more }
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

    fn parse(raw: &str) -> Self {
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

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip for readiness.
    async fn ping(&self) -> StoreResult<()>;

    /// Creates the user on first sight; refreshes the email when it changed.
    async fn upsert_user(&self, id: Uuid, email: &str) -> StoreResult<()>;
    async fn user(&self, id: Uuid) -> StoreResult<Option<User>>;
    async fn update_profile(&self, id: Uuid, patch: &ProfilePatch) -> StoreResult<Option<User>>;
    /// Records a presence transition (`last_seen` is set to `at`).
    async fn set_presence(&self, id: Uuid, online: bool, at: DateTime<Utc>) -> StoreResult<()>;
    /// Whom `id`'s presence goes to: the people `id` has talked to, that is
    /// sent a direct message, or posted in a group of at most `group_limit`
    /// members they share; never anyone `id` has blocked. (Being messaged,
    /// or added to a group, by a stranger makes no one a contact.)
    async fn contacts(&self, id: Uuid, group_limit: u32) -> StoreResult<Vec<Uuid>>;
    /// Whether `speaker` has talked to `listener`, as `contacts` counts it.
    async fn talked_to(&self, speaker: Uuid, listener: Uuid, group_limit: u32)
    -> StoreResult<bool>;
    /// `blocker` blocks `blocked` (again: no change).
    async fn block(&self, blocker: Uuid, blocked: Uuid, at: DateTime<Utc>) -> StoreResult<()>;
    async fn unblock(&self, blocker: Uuid, blocked: Uuid) -> StoreResult<()>;
    /// Whom `blocker` has blocked, most recent first.
    async fn blocks(&self, blocker: Uuid, limit: u32) -> StoreResult<Vec<Block>>;
    /// Those of the (blocker, blocked) `pairs` that are blocks.
    async fn blocked(&self, pairs: &[(Uuid, Uuid)]) -> StoreResult<Vec<(Uuid, Uuid)>>;
    /// Whether `a` and `b` share a conversation.
    async fn is_contact(&self, a: Uuid, b: Uuid) -> StoreResult<bool>;

    /// Writes a batch in one transaction; outcomes are in input order.
    /// Idempotent per `(sender_id, client_id)`.
    async fn insert_messages(&self, batch: &[NewMessage]) -> StoreResult<Vec<InsertOutcome>>;
    async fn message(&self, id: Uuid) -> StoreResult<Option<Message>>;
    /// Those of `ids` that are stored, each with every participant's number:
    /// how a batch whose commit outcome was lost is settled. Read once no
    /// write of `writers` is still running: a write holds the rows of the
    /// users it numbers until it ends, and one whose connection died may
    /// still be committing; read before it ends, its message would look
    /// not stored.
    async fn stored(&self, ids: &[Uuid], writers: &[Uuid]) -> StoreResult<Vec<Stored>>;
    /// Marks read only messages `reader` received and had not read yet.
    async fn mark_read(
        &self,
        reader: Uuid,
        ids: &[Uuid],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<ReadMark>>;

    /// One page of the conversation between `me` and `peer`, oldest first,
    /// strictly before `before` (a message id) when given.
    async fn conversation(
        &self,
        me: Uuid,
        peer: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Message>>;
    /// `me`'s conversations, most recent first.
    async fn conversations(&self, me: Uuid, limit: u32) -> StoreResult<Vec<ConversationSummary>>;
    /// `me`'s messages (sent or received) containing every word, newest first.
    async fn search(&self, me: Uuid, words: &SearchWords, limit: u32) -> StoreResult<Vec<Message>>;
    async fn stats(&self, me: Uuid) -> StoreResult<Stats>;
    /// `me`'s number for message `id`, if `me` sent or received it.
    async fn seq_of(&self, me: Uuid, id: Uuid) -> StoreResult<Option<i64>>;
    /// Every message to or from `me` numbered after `after`, in `me`'s
    /// commit order.
    async fn messages_after(
        &self,
        me: Uuid,
        after: i64,
        limit: u32,
    ) -> StoreResult<Page<Sequenced>>;
    /// Each user's latest sequence number (users not found are left out).
    async fn msg_seqs(&self, users: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>>;

    /// The users of `ids` that do not exist.
    async fn missing_users(&self, ids: &[Uuid]) -> StoreResult<Vec<Uuid>>;
    /// Creates a group; every member must exist.
    async fn create_group(&self, group: &NewGroup) -> StoreResult<()>;
    /// A group with its current members.
    async fn group(&self, id: Uuid) -> StoreResult<Option<Group>>;
    /// Where `user` stands in conversation `id`.
    async fn membership(&self, id: Uuid, user: Uuid) -> StoreResult<Membership>;
    /// Renames a group or changes its avatar, if `actor` may
    /// ([`GroupAction::Edit`], checked under the group's lock); `NotMember`
    /// when there is no such group.
    async fn update_group(
        &self,
        id: Uuid,
        actor: Uuid,
        patch: &GroupPatch,
        at: DateTime<Utc>,
    ) -> StoreResult<MemberChange>;
    /// Adds members (new ones as `member`; former members come back), unless
    /// the group would pass `max` members.
    async fn add_members(
        &self,
        id: Uuid,
        actor: Uuid,
        users: &[Uuid],
        max: u32,
        at: DateTime<Utc>,
    ) -> StoreResult<Added>;
    /// Removes a member (`actor` may be the member, leaving); refused for
    /// the last owner while others remain.
    async fn remove_member(
        &self,
        id: Uuid,
        actor: Uuid,
        user: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<MemberChange>;
    /// Changes a member's role; refused if it leaves no owner.
    async fn set_role(
        &self,
        id: Uuid,
        actor: Uuid,
        user: Uuid,
        role: Role,
        at: DateTime<Utc>,
    ) -> StoreResult<MemberChange>;
    /// One page of a group as `me` received it (a member sees what was
    /// sent while they were in it), oldest first, before `before`.
    async fn group_history(
        &self,
        me: Uuid,
        group: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Message>>;

    /// Every message to or from `me` after `since`, in `me`'s commit order.
    /// `since` must be a message `me` sent or received.
    async fn sync(
        &self,
        me: Uuid,
        since: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Sequenced>> {
        let after = match since {
            None => 0,
            Some(id) => self
                .seq_of(me, id)
                .await?
                .ok_or(StoreError::NotFound("no message with that id is yours"))?,
        };
        self.messages_after(me, after, limit).await
    }
}

/// The rows a batch will write, worked out from the users' current sequence
/// numbers, the members of the groups it writes to and the duplicates
/// already stored. Shared by both backends so the membership, idempotency
/// and numbering rules exist once.
struct BatchPlan {
    outcomes: Vec<InsertOutcome>,
    rows: Vec<PlannedRow>,
    /// New `msg_seq` per user touched.
    seqs: HashMap<Uuid, i64>,
}

/// The latest message of one direct conversation in a batch: (conversation,
/// user a, user b, message id, time), with a < b.
type ConversationHead = (Uuid, Uuid, Uuid, Uuid, DateTime<Utc>);

struct PlannedRow {
    message: Message,
    /// Direct messages: the sender's and the receiver's numbers.
    sender_seq: Option<i64>,
    receiver_seq: Option<i64>,
    /// Group messages: every member's number (the sender's included).
    inbox: Vec<(Uuid, i64)>,
}

/// Current members of the groups a batch writes to.
type GroupMembers = HashMap<Uuid, Vec<Uuid>>;

/// One member's inbox row: (user, seq, message, group, read at).
type InboxRow = (Uuid, i64, Uuid, Uuid, Option<DateTime<Utc>>);

impl BatchPlan {
    fn new(
        batch: &[NewMessage],
        mut seqs: HashMap<Uuid, i64>,
        groups: &GroupMembers,
        stored: &HashMap<(Uuid, String), Message>,
    ) -> Self {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut rows: Vec<PlannedRow> = Vec::with_capacity(batch.len());
        // (sender, client_id) -> index in `rows`, for repeats inside one batch.
        let mut in_batch: HashMap<(Uuid, &str), usize> = HashMap::new();

        for new in batch {
            if !seqs.contains_key(&new.sender_id) {
                outcomes.push(InsertOutcome::SenderNotFound);
                continue;
            }
            let members = match new.to {
                Target::User(receiver) if !seqs.contains_key(&receiver) => {
                    outcomes.push(InsertOutcome::RecipientNotFound);
                    continue;
                }
                Target::User(_) => None,
                Target::Group(group) => match groups.get(&group) {
                    None => {
                        outcomes.push(InsertOutcome::GroupNotFound);
                        continue;
                    }
                    Some(members) if !members.contains(&new.sender_id) => {
                        outcomes.push(InsertOutcome::NotMember);
                        continue;
                    }
                    Some(members) => Some(members),
                },
            };
            if let Some(client_id) = &new.client_id {
                if let Some(existing) = stored.get(&(new.sender_id, client_id.clone())) {
                    outcomes.push(InsertOutcome::Duplicate(existing.clone()));
                    continue;
                }
                if let Some(&row) = in_batch.get(&(new.sender_id, client_id.as_str())) {
                    outcomes.push(InsertOutcome::Duplicate(rows[row].message.clone()));
                    continue;
                }
                in_batch.insert((new.sender_id, client_id.as_str()), rows.len());
            }
            let mut next = |user: Uuid| {
                let seq = seqs
                    .get_mut(&user)
                    .expect("every user of the batch is locked");
                *seq += 1;
                (user, *seq)
            };
            let (receiver_id, conversation, numbers, row) = match (new.to, members) {
                (Target::User(receiver), _) => {
                    let sender = next(new.sender_id);
                    let receiver_seq = next(receiver);
                    let row = (Some(sender.1), Some(receiver_seq.1), Vec::new());
                    (
                        Some(receiver),
                        conversation_id(new.sender_id, receiver),
                        vec![sender, receiver_seq],
                        row,
                    )
                }
                (Target::Group(group), Some(members)) => {
                    let numbers: Vec<(Uuid, i64)> = members.iter().map(|&m| next(m)).collect();
                    (None, group, numbers.clone(), (None, None, numbers))
                }
                (Target::Group(_), None) => unreachable!("groups were looked up above"),
            };
            let message = Message {
                id: new.id,
                sender_id: new.sender_id,
                receiver_id,
                content: new.content.clone(),
                message_type: MessageType::Text,
                is_read: false,
                read_at: None,
                created_at: new.created_at,
                updated_at: new.created_at,
                client_id: new.client_id.clone(),
                conversation_id: conversation,
            };
            outcomes.push(InsertOutcome::Created(Stored {
                message: message.clone(),
                seqs: numbers,
            }));
            let (sender_seq, receiver_seq, inbox) = row;
            rows.push(PlannedRow {
                message,
                sender_seq,
                receiver_seq,
                inbox,
            });
        }
        Self {
            outcomes,
            rows,
            seqs,
        }
    }

    /// Each direct conversation's latest message among the rows that
    /// `stored`, so the conversations table only ever points at messages
    /// that exist.
    fn conversation_heads(&self, stored: impl Fn(&PlannedRow) -> bool) -> Vec<ConversationHead> {
        let mut heads: HashMap<Uuid, ConversationHead> = HashMap::new();
        for row in self.rows.iter().filter(|r| stored(r)) {
            let m = &row.message;
            let Some(receiver) = m.receiver_id else {
                continue;
            };
            let (a, b) = if m.sender_id <= receiver {
                (m.sender_id, receiver)
            } else {
                (receiver, m.sender_id)
            };
            heads.insert(
                m.conversation_id,
                (m.conversation_id, a, b, m.id, m.created_at),
            );
        }
        heads.into_values().collect()
    }

    /// Each group's latest message among the rows that `stored`:
    /// (group, message id, time).
    fn group_heads(
        &self,
        stored: impl Fn(&PlannedRow) -> bool,
    ) -> Vec<(Uuid, Uuid, DateTime<Utc>)> {
        let mut heads: HashMap<Uuid, (Uuid, Uuid, DateTime<Utc>)> = HashMap::new();
        for row in self
            .rows
            .iter()
            .filter(|r| stored(r) && !r.inbox.is_empty())
        {
            let m = &row.message;
            heads.insert(m.conversation_id, (m.conversation_id, m.id, m.created_at));
        }
        heads.into_values().collect()
    }

    /// Inbox rows of the group messages that `stored`. The sender's own
    /// row is read from the start.
    fn inbox_rows(&self, stored: impl Fn(&PlannedRow) -> bool) -> Vec<InboxRow> {
        self.rows
            .iter()
            .filter(|r| stored(r))
            .flat_map(|r| {
                let m = &r.message;
                r.inbox.iter().map(move |&(user, seq)| {
                    let read = (user == m.sender_id).then_some(m.created_at);
                    (user, seq, m.id, m.conversation_id, read)
                })
            })
            .collect()
    }

    /// Some rows were not stored because their `client_id` was already taken
    /// (a writer on another node won the race): answer those, and their
    /// repeats in this batch, with the message already stored.
    fn resolve_conflicts(&mut self, existing: &HashMap<Uuid, Message>) {
        for outcome in &mut self.outcomes {
            let lost = match outcome {
                InsertOutcome::Created(Stored { message: m, .. }) | InsertOutcome::Duplicate(m) => {
                    existing.get(&m.id)
                }
                _ => None,
            };
            if let Some(stored) = lost {
                *outcome = InsertOutcome::Duplicate(stored.clone());
            }
        }
    }
}

/// The groups a batch writes to, sorted so every writer locks them in one
/// order (before any user).
fn groups_of(batch: &[NewMessage]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = batch
        .iter()
        .filter_map(|m| match m.to {
            Target::Group(g) => Some(g),
            Target::User(_) => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Users a batch touches (direct participants and the members of its
/// groups), sorted so every writer locks them in one order.
fn users_of(batch: &[NewMessage], groups: &GroupMembers) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = batch
        .iter()
        .flat_map(|m| match m.to {
            Target::User(r) => vec![m.sender_id, r],
            Target::Group(_) => vec![m.sender_id],
        })
        .chain(groups.values().flatten().copied())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Opens the configured store and applies its migrations.
pub async fn open(config: &crate::config::Config) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    use anyhow::Context;
    match &config.database {
        crate::config::DatabaseConfig::Postgres(url) => {
            let store = postgres::PgStore::connect_lazy(url.expose(), config.db_max_connections)
                .context("Failed to configure the Postgres pool")?;
            store
                .migrate()
                .await
                .context("Failed to migrate Postgres")?;
            Ok(std::sync::Arc::new(instrumented::Instrumented(
                std::sync::Arc::new(store),
            )))
        }
        crate::config::DatabaseConfig::Sqlite(path) => {
            let store = sqlite::SqliteStore::open(path, config.sqlite_busy_timeout)
                .await
                .with_context(|| format!("Failed to open SQLite database {}", path.display()))?;
            store.migrate().await.context("Failed to migrate SQLite")?;
            Ok(std::sync::Arc::new(instrumented::Instrumented(
                std::sync::Arc::new(store),
            )))
        }
    }
}

impl crate::config::DatabaseConfig {
    pub fn describe(&self) -> String {
        match self {
            Self::Postgres(_) => "postgres".into(),
            Self::Sqlite(path) => format!("sqlite ({})", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_id_ignores_direction() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(conversation_id(a, b), conversation_id(b, a));
        assert_ne!(conversation_id(a, b), conversation_id(a, Uuid::now_v7()));
    }

    #[test]
    fn search_words_split_and_lowercase() {
        let words = SearchWords::parse("Hello, WORLD! héllo_x").unwrap();
        assert_eq!(words.words(), ["hello", "world", "héllo", "x"]);
        assert_eq!(SearchWords::parse("  ,.;  "), None);
    }

    #[test]
    fn a_batch_numbers_each_user_in_order_and_folds_repeats() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let new = |client_id: &str| NewMessage {
            id: Uuid::now_v7(),
            sender_id: a,
            to: Target::User(b),
            content: "hi".into(),
            client_id: Some(client_id.into()),
            created_at: now(),
        };
        let batch = [new("1"), new("2"), new("1")];
        let plan = BatchPlan::new(
            &batch,
            HashMap::from([(a, 5), (b, 9)]),
            &HashMap::new(),
            &HashMap::new(),
        );
        assert_eq!(plan.rows.len(), 2);
        assert_eq!(
            (plan.rows[0].sender_seq, plan.rows[0].receiver_seq),
            (Some(6), Some(10))
        );
        assert_eq!(
            (plan.rows[1].sender_seq, plan.rows[1].receiver_seq),
            (Some(7), Some(11))
        );
        assert_eq!(
            plan.outcomes[2],
            InsertOutcome::Duplicate(plan.rows[0].message.clone())
        );
        assert_eq!(plan.seqs[&a], 7);
    }

    #[test]
    fn a_group_message_numbers_every_member_and_needs_a_member() {
        let (a, b, c, outsider, g) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        let new = |from: Uuid, to: Target| NewMessage {
            id: Uuid::now_v7(),
            sender_id: from,
            to,
            content: "hi".into(),
            client_id: None,
            created_at: now(),
        };
        let batch = [
            new(a, Target::Group(g)),
            new(outsider, Target::Group(g)),
            new(a, Target::Group(Uuid::now_v7())),
        ];
        let plan = BatchPlan::new(
            &batch,
            HashMap::from([(a, 1), (b, 2), (c, 3), (outsider, 4)]),
            &HashMap::from([(g, vec![a, b, c])]),
            &HashMap::new(),
        );
        assert_eq!(plan.rows.len(), 1);
        assert_eq!(plan.rows[0].inbox, vec![(a, 2), (b, 3), (c, 4)]);
        assert_eq!(plan.rows[0].message.receiver_id, None);
        assert_eq!(plan.rows[0].message.conversation_id, g);
        assert_eq!(plan.outcomes[1], InsertOutcome::NotMember);
        assert_eq!(plan.outcomes[2], InsertOutcome::GroupNotFound);
        let inbox = plan.inbox_rows(|_| true);
        assert_eq!(
            inbox[0].4,
            Some(plan.rows[0].message.created_at),
            "the sender has read their own"
        );
        assert_eq!(inbox[1].4, None);
    }
}
