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
//! them until commit. On PostgreSQL these are `FOR NO KEY UPDATE` locks: they
//! exclude each other, and not the key-share locks a foreign key takes (a
//! reaction or a change naming a user), which a transaction holding them
//! may then wait for without a deadlock. Two transactions that touch the same user are therefore
//! serialised, and a user's sequence numbers become visible in the order they
//! were handed out: a reader that saw number `n` can never later find a
//! committed `n - 1` it missed.

/// Every `Store` method once, as `fn name(args) -> answer;`: the impls
/// that only pass calls on (each engine's, and the metrics wrapper's) are
/// generated from this list by `$then!`, after the tokens given to it.
/// A method added to the trait is added here too, or nothing compiles.
macro_rules! with_store_methods {
    ($then:ident!($($given:tt)*)) => {
        $then!($($given)*;
            fn ping() -> ();
            fn upsert_users(users: &[(Uuid, String)]) -> ();
            fn user(id: Uuid) -> Option<User>;
            fn update_profile(id: Uuid, patch: &ProfilePatch) -> Option<User>;
            fn set_presences(transitions: &[(Uuid, bool, DateTime<Utc>)]) -> ();
            fn contacts_of(ids: &[Uuid], group_limit: u32) -> Vec<(Uuid, Uuid)>;
            fn talked_to(speaker: Uuid, listener: Uuid, group_limit: u32) -> bool;
            fn block(blocker: Uuid, blocked: Uuid, at: DateTime<Utc>) -> ();
            fn unblock(blocker: Uuid, blocked: Uuid) -> ();
            fn blocks(blocker: Uuid, limit: u32) -> Vec<Block>;
            fn blocked(pairs: &[(Uuid, Uuid)]) -> Vec<(Uuid, Uuid)>;
            fn is_contact(a: Uuid, b: Uuid) -> bool;
            fn search_users(me: Uuid, prefix: &str, after: Option<Uuid>, limit: u32) -> Page<Person>;
            fn missing_users(ids: &[Uuid]) -> Vec<Uuid>;
            fn insert_messages(batch: &[NewMessage]) -> Vec<InsertOutcome>;
            fn message(id: Uuid) -> Option<Message>;
            fn stored(ids: &[Uuid], writers: &[Uuid]) -> Vec<Stored>;
            fn mark_read(reader: Uuid, ids: &[Uuid], at: DateTime<Utc>) -> Vec<ReadMark>;
            fn conversation(me: Uuid, peer: Uuid, before: Option<Uuid>, limit: u32) -> Page<Message>;
            fn conversations(me: Uuid, limit: u32) -> Vec<ConversationSummary>;
            fn search(me: Uuid, words: &SearchWords, limit: u32) -> Vec<Message>;
            fn stats(me: Uuid) -> Stats;
            fn seq_of(me: Uuid, id: Uuid) -> Option<i64>;
            fn entries_after(me: Uuid, after: i64, limit: u32) -> Page<Entry>;
            fn apply_changes(batch: &[NewChange]) -> Vec<ChangeOutcome>;
            fn create_attachment(attachment: &NewAttachment, max_pending: u32, since: DateTime<Utc>) -> bool;
            fn attachment(id: Uuid) -> Option<StoredAttachment>;
            fn drop_unsent_attachments(before: DateTime<Utc>, limit: u32) -> Vec<Uuid>;
            fn prepare_weeks(at: DateTime<Utc>) -> ();
            fn expire_messages(before: DateTime<Utc>) -> Expired;
            fn msg_seqs(users: &[Uuid]) -> Vec<(Uuid, i64)>;
            fn create_group(group: &NewGroup) -> ();
            fn group(id: Uuid) -> Option<Group>;
            fn membership(id: Uuid, user: Uuid) -> Membership;
            fn update_group(id: Uuid, actor: Uuid, patch: &GroupPatch, at: DateTime<Utc>) -> MemberChange;
            fn add_members(id: Uuid, actor: Uuid, users: &[Uuid], max: u32, at: DateTime<Utc>) -> Added;
            fn remove_member(id: Uuid, actor: Uuid, user: Uuid, at: DateTime<Utc>) -> MemberChange;
            fn set_role(id: Uuid, actor: Uuid, user: Uuid, role: Role, at: DateTime<Utc>) -> MemberChange;
            fn group_history(me: Uuid, group: Uuid, before: Option<Uuid>, limit: u32) -> Page<Message>;
        );
    };
}

/// Each engine implements the `Store` methods as its own methods, one file
/// per concern (`users`, `messages`, `groups`, `insert`); this writes the
/// trait impl that passes calls on to them.
macro_rules! forward_store {
    ($engine:ty) => {
        with_store_methods!(forward_store!($engine));
    };
    ($engine:ty; $(fn $name:ident($($arg:ident: $ty:ty),*) -> $answer:ty;)*) => {
        #[async_trait::async_trait]
        impl Store for $engine {
            $(async fn $name(&self, $($arg: $ty),*) -> StoreResult<$answer> {
                <$engine>::$name(self, $($arg),*).await
            })*
        }
    };
}

mod batch;
mod instrumented;
mod model;
#[macro_use]
mod portable;
pub mod postgres;
mod rows;
pub mod sqlite;
pub(crate) mod weeks;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use batch::*;
pub use model::*;
use rows::*;

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
/// 40P01 (a deadlock: PostgreSQL rolled this transaction back to break it),
/// and SQLite's BUSY (5) and LOCKED (6), whose extended codes keep the
/// primary code in the low byte.
fn is_unavailable_code(code: Option<&str>) -> bool {
    let Some(c) = code else { return false };
    ["08", "53", "55", "57P"]
        .iter()
        .any(|class| c.starts_with(class))
        || c == "3D000"
        || c == "40P01"
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

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip for readiness.
    async fn ping(&self) -> StoreResult<()>;

    /// Creates each user on first sight; refreshes the email when it
    /// changed. One statement for the batch; of an id given twice, the last
    /// email counts.
    async fn upsert_users(&self, users: &[(Uuid, String)]) -> StoreResult<()>;
    /// One user, as a batch of their own.
    async fn upsert_user(&self, id: Uuid, email: &str) -> StoreResult<()> {
        self.upsert_users(&[(id, email.to_owned())]).await
    }
    async fn user(&self, id: Uuid) -> StoreResult<Option<User>>;
    async fn update_profile(&self, id: Uuid, patch: &ProfilePatch) -> StoreResult<Option<User>>;
    /// Records presence transitions `(user, online, at)` (`last_seen` is
    /// set to `at`); of a user given twice, the last counts. Users' rows are
    /// taken in id order, as message writers take them.
    async fn set_presences(&self, transitions: &[(Uuid, bool, DateTime<Utc>)]) -> StoreResult<()>;
    /// One transition.
    async fn set_presence(&self, id: Uuid, online: bool, at: DateTime<Utc>) -> StoreResult<()> {
        self.set_presences(&[(id, online, at)]).await
    }
    /// Whom each of `ids`' presence goes to, as `(user, contact)` pairs: the
    /// people the user has talked to, that is sent a direct message, or
    /// posted in a group of at most `group_limit` members they share; never
    /// anyone the user has blocked. (Being messaged, or added to a group,
    /// by a stranger makes no one a contact.)
    async fn contacts_of(&self, ids: &[Uuid], group_limit: u32) -> StoreResult<Vec<(Uuid, Uuid)>>;
    /// One user's contacts.
    async fn contacts(&self, id: Uuid, group_limit: u32) -> StoreResult<Vec<Uuid>> {
        let pairs = self.contacts_of(&[id], group_limit).await?;
        Ok(pairs.into_iter().map(|(_, contact)| contact).collect())
    }
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
    /// Users whose lowercased username starts with `prefix` lowercased
    /// (by the database, so both sides fold alike: SQLite folds ASCII
    /// letters only), by name then id, after the user `after`; never `me`,
    /// nor anyone who blocked `me`, nor after anyone who blocked `me`.
    async fn search_users(
        &self,
        me: Uuid,
        prefix: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Person>>;

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
    /// Every message to or from `me`, and every change to one `me` can
    /// read, numbered after `after`, in `me`'s commit order.
    async fn entries_after(&self, me: Uuid, after: i64, limit: u32) -> StoreResult<Page<Entry>>;
    /// Edits, deletes, reacts to or unreacts to messages, each if the rules
    /// allow it (checked under the locks that order it against other
    /// writes, after the batch's earlier changes to its message); each numbered for
    /// every reader of its message; one transaction for the batch, one
    /// outcome per change. Idempotent per `(actor, client_id)`.
    async fn apply_changes(&self, batch: &[NewChange]) -> StoreResult<Vec<ChangeOutcome>>;
    /// One change, as a batch of its own.
    async fn apply_change(&self, change: &NewChange) -> StoreResult<ChangeOutcome> {
        let mut outcomes = self.apply_changes(std::slice::from_ref(change)).await?;
        Ok(outcomes.remove(0))
    }
    /// Records an attachment announced for upload (not yet on a message),
    /// unless its owner already has `max_pending` announced since `since`
    /// and not sent; `false` then.
    async fn create_attachment(
        &self,
        attachment: &NewAttachment,
        max_pending: u32,
        since: DateTime<Utc>,
    ) -> StoreResult<bool>;
    async fn attachment(&self, id: Uuid) -> StoreResult<Option<StoredAttachment>>;
    /// Forgets up to `limit` attachments announced before `before` and
    /// never sent: their ids (their bytes go next).
    async fn drop_unsent_attachments(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Uuid>>;
    /// Makes sure messages sent in the week of `at`, the week before and
    /// the next two have somewhere to go (PostgreSQL's weekly partitions; nothing for SQLite).
    async fn prepare_weeks(&self, at: DateTime<Utc>) -> StoreResult<()>;
    /// Removes, whole, every week of messages that ended before `before`'s
    /// week began, with what belongs to them (inbox rows, changes,
    /// reactions, attachments); replies quoting them lose the quote.
    async fn expire_messages(&self, before: DateTime<Utc>) -> StoreResult<Expired>;
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

    /// Every message and change after `from`, in `me`'s commit order, and
    /// the number the page ends at (where the next one starts). A message
    /// to start after must be one `me` sent or received.
    async fn sync(&self, me: Uuid, from: SyncFrom, limit: u32) -> StoreResult<(Page<Entry>, i64)> {
        let after = match from {
            SyncFrom::Start => 0,
            SyncFrom::Cursor(seq) => seq,
            SyncFrom::Message(id) => self
                .seq_of(me, id)
                .await?
                .ok_or(StoreError::NotFound("no message with that id is yours"))?,
        };
        let page = self.entries_after(me, after, limit).await?;
        let cursor = page.items.last().map_or(after, Entry::seq);
        Ok((page, cursor))
    }
}

/// Opens the configured store and applies its migrations.
pub async fn open(config: &crate::config::Config) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    use anyhow::Context;
    match &config.database {
        crate::config::DatabaseConfig::Postgres(url) => {
            let replica = config.database_replica.as_ref().map(|r| r.expose());
            let store =
                postgres::PgStore::connect_lazy(url.expose(), replica, config.db_max_connections)
                    .context("Failed to configure the Postgres pool")?;
            store
                .migrate()
                .await
                .context("Failed to migrate Postgres")?;
            store
                .prepare_weeks(now())
                .await
                .context("Failed to create this week's messages partition")?;
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
    fn failures_worth_retrying_are_told_from_refusals() {
        for code in [
            "08006", "53300", "55P03", "57P01", "3D000", "40P01", "5", "517", "6",
        ] {
            assert!(is_unavailable_code(Some(code)), "{code}");
        }
        for code in ["23505", "23503", "42P01", "22001", "1", "19"] {
            assert!(!is_unavailable_code(Some(code)), "{code}");
        }
        assert!(!is_unavailable_code(None));
    }
}
