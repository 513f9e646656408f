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
use serde::Serialize;
use uuid::Uuid;

/// What went wrong below the domain layer.
/// Database details are kept as text: they are only ever logged, and a
/// batch's one failure must be handed to every message in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached; nothing was written.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub id: Uuid,
    pub sender_id: Uuid,
    pub receiver_id: Uuid,
    pub content: String,
    pub message_type: MessageType,
    pub is_read: bool,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The sender's idempotency key; private to the sender, so not serialised.
    #[serde(skip)]
    pub client_id: Option<String>,
}

/// A message with its number in one participant's sequence (see the module
/// docs): what `sync` and live-delivery catch-up return, and the `seq` a
/// frame for that participant carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    pub seq: i64,
    pub message: Message,
}

/// A message just stored, with its number in each participant's sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub message: Message,
    pub sender_seq: i64,
    pub receiver_seq: i64,
}

/// A message as both backends read it (each selects the same column names).
#[derive(sqlx::FromRow)]
struct MessageRow {
    id: Uuid,
    sender_id: Uuid,
    receiver_id: Uuid,
    content: String,
    message_type: String,
    is_read: bool,
    read_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    client_id: Option<String>,
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

/// Columns of a user, in the order [`UserRow`] reads them.
const USER_COLUMNS: &str =
    "id, email, username, avatar_url, is_online, last_seen, created_at, updated_at";

/// A message about to be written. The id and time are chosen by the caller.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: Uuid,
    pub sender_id: Uuid,
    pub receiver_id: Uuid,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConversationSummary {
    pub user_id: Uuid,
    pub username: Option<String>,
    pub avatar_url: Option<String>,
    pub last_message: Message,
    pub unread_count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    /// Everyone who shares a conversation with `id`.
    async fn contacts(&self, id: Uuid) -> StoreResult<Vec<Uuid>>;
    /// Whether `a` and `b` share a conversation.
    async fn is_contact(&self, a: Uuid, b: Uuid) -> StoreResult<bool>;

    /// Writes a batch in one transaction; outcomes are in input order.
    /// Idempotent per `(sender_id, client_id)`.
    async fn insert_messages(&self, batch: &[NewMessage]) -> StoreResult<Vec<InsertOutcome>>;
    async fn message(&self, id: Uuid) -> StoreResult<Option<Message>>;
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
/// numbers and the duplicates already stored. Shared by both backends so the
/// idempotency and numbering rules exist once.
struct BatchPlan {
    outcomes: Vec<InsertOutcome>,
    rows: Vec<PlannedRow>,
    /// New `msg_seq` per user touched.
    seqs: HashMap<Uuid, i64>,
}

/// The latest message of one conversation in a batch: (conversation, user a,
/// user b, message id, time), with a < b.
type ConversationHead = (Uuid, Uuid, Uuid, Uuid, DateTime<Utc>);

struct PlannedRow {
    message: Message,
    conversation_id: Uuid,
    sender_seq: i64,
    receiver_seq: i64,
}

impl BatchPlan {
    fn new(
        batch: &[NewMessage],
        mut seqs: HashMap<Uuid, i64>,
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
            if !seqs.contains_key(&new.receiver_id) {
                outcomes.push(InsertOutcome::RecipientNotFound);
                continue;
            }
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
                let seq = seqs.get_mut(&user).expect("checked above");
                *seq += 1;
                *seq
            };
            let sender_seq = next(new.sender_id);
            let receiver_seq = next(new.receiver_id);
            let message = Message {
                id: new.id,
                sender_id: new.sender_id,
                receiver_id: new.receiver_id,
                content: new.content.clone(),
                message_type: MessageType::Text,
                is_read: false,
                read_at: None,
                created_at: new.created_at,
                updated_at: new.created_at,
                client_id: new.client_id.clone(),
            };
            let conversation = conversation_id(new.sender_id, new.receiver_id);
            outcomes.push(InsertOutcome::Created(Stored {
                message: message.clone(),
                sender_seq,
                receiver_seq,
            }));
            rows.push(PlannedRow {
                message,
                conversation_id: conversation,
                sender_seq,
                receiver_seq,
            });
        }
        Self {
            outcomes,
            rows,
            seqs,
        }
    }

    /// Each conversation's latest message among the rows that `stored`, so
    /// the conversations table only ever points at messages that exist.
    fn conversation_heads(&self, stored: impl Fn(&PlannedRow) -> bool) -> Vec<ConversationHead> {
        let mut heads: HashMap<Uuid, ConversationHead> = HashMap::new();
        for row in self.rows.iter().filter(|r| stored(r)) {
            let m = &row.message;
            let (a, b) = if m.sender_id <= m.receiver_id {
                (m.sender_id, m.receiver_id)
            } else {
                (m.receiver_id, m.sender_id)
            };
            heads.insert(
                row.conversation_id,
                (row.conversation_id, a, b, m.id, m.created_at),
            );
        }
        heads.into_values().collect()
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

/// Users a batch touches, sorted so every writer locks them in one order.
fn users_of(batch: &[NewMessage]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = batch
        .iter()
        .flat_map(|m| [m.sender_id, m.receiver_id])
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
            receiver_id: b,
            content: "hi".into(),
            client_id: Some(client_id.into()),
            created_at: now(),
        };
        let batch = [new("1"), new("2"), new("1")];
        let plan = BatchPlan::new(&batch, HashMap::from([(a, 5), (b, 9)]), &HashMap::new());
        assert_eq!(plan.rows.len(), 2);
        assert_eq!(
            (plan.rows[0].sender_seq, plan.rows[0].receiver_seq),
            (6, 10)
        );
        assert_eq!(
            (plan.rows[1].sender_seq, plan.rows[1].receiver_seq),
            (7, 11)
        );
        assert_eq!(
            plan.outcomes[2],
            InsertOutcome::Duplicate(plan.rows[0].message.clone())
        );
        assert_eq!(plan.seqs[&a], 7);
    }
}
