//! The embedded default store: one SQLite file in WAL mode.
//!
//! Writers take the database write lock up front (`BEGIN IMMEDIATE`), which
//! plays the part of Postgres' row locks: writes are serialised, so sequence
//! numbers commit in the order they are handed out.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use super::*;

macro_rules! message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type, \
         m.is_read, m.read_at, m.created_at, m.updated_at, m.client_id, m.conversation_id"
    };
}

/// With the read state of the reader's inbox row `i` (see the Postgres store).
macro_rules! inbox_message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type, \
         (i.read_at IS NOT NULL) AS is_read, i.read_at, m.created_at, m.updated_at, m.client_id, \
         m.conversation_id"
    };
}

/// The message's own read state when direct, the reader's (`LEFT JOIN inbox
/// i`) in a group.
macro_rules! viewer_message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type, \
         CASE WHEN m.receiver_id IS NULL THEN i.read_at IS NOT NULL ELSE m.is_read END AS is_read, \
         CASE WHEN m.receiver_id IS NULL THEN i.read_at ELSE m.read_at END AS read_at, \
         m.created_at, m.updated_at, m.client_id, m.conversation_id"
    };
}

mod groups;
mod insert;
mod messages;
mod users;

/// `(?, ?, ...)` binding each id, for `IN` lists.
fn push_ids(query: &mut QueryBuilder<Sqlite>, ids: &[Uuid]) {
    query.push("(");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    query.push(")");
}

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file.
    pub async fn open(path: &Path, busy_timeout: Duration) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged message survives power loss, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations/sqlite").run(&self.pool).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn upsert_user(&self, id: Uuid, email: &str) -> StoreResult<()> {
        SqliteStore::upsert_user(self, id, email).await
    }

    async fn user(&self, id: Uuid) -> StoreResult<Option<User>> {
        SqliteStore::user(self, id).await
    }

    async fn update_profile(&self, id: Uuid, patch: &ProfilePatch) -> StoreResult<Option<User>> {
        SqliteStore::update_profile(self, id, patch).await
    }

    async fn set_presence(&self, id: Uuid, online: bool, at: DateTime<Utc>) -> StoreResult<()> {
        SqliteStore::set_presence(self, id, online, at).await
    }

    async fn contacts(&self, id: Uuid, group_limit: u32) -> StoreResult<Vec<Uuid>> {
        SqliteStore::contacts(self, id, group_limit).await
    }

    async fn talked_to(
        &self,
        speaker: Uuid,
        listener: Uuid,
        group_limit: u32,
    ) -> StoreResult<bool> {
        SqliteStore::talked_to(self, speaker, listener, group_limit).await
    }

    async fn block(&self, blocker: Uuid, blocked: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        SqliteStore::block(self, blocker, blocked, at).await
    }

    async fn unblock(&self, blocker: Uuid, blocked: Uuid) -> StoreResult<()> {
        SqliteStore::unblock(self, blocker, blocked).await
    }

    async fn blocks(&self, blocker: Uuid, limit: u32) -> StoreResult<Vec<Block>> {
        SqliteStore::blocks(self, blocker, limit).await
    }

    async fn blocked(&self, pairs: &[(Uuid, Uuid)]) -> StoreResult<Vec<(Uuid, Uuid)>> {
        SqliteStore::blocked(self, pairs).await
    }

    async fn is_contact(&self, a: Uuid, b: Uuid) -> StoreResult<bool> {
        SqliteStore::is_contact(self, a, b).await
    }

    async fn missing_users(&self, ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        SqliteStore::missing_users(self, ids).await
    }

    async fn insert_messages(&self, batch: &[NewMessage]) -> StoreResult<Vec<InsertOutcome>> {
        SqliteStore::insert_messages(self, batch).await
    }

    async fn message(&self, id: Uuid) -> StoreResult<Option<Message>> {
        SqliteStore::message(self, id).await
    }

    async fn stored(&self, ids: &[Uuid], _writers: &[Uuid]) -> StoreResult<Vec<Stored>> {
        SqliteStore::stored(self, ids, _writers).await
    }

    async fn mark_read(
        &self,
        reader: Uuid,
        ids: &[Uuid],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<ReadMark>> {
        SqliteStore::mark_read(self, reader, ids, at).await
    }

    async fn conversation(
        &self,
        me: Uuid,
        peer: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Message>> {
        SqliteStore::conversation(self, me, peer, before, limit).await
    }

    async fn conversations(&self, me: Uuid, limit: u32) -> StoreResult<Vec<ConversationSummary>> {
        SqliteStore::conversations(self, me, limit).await
    }

    async fn search(&self, me: Uuid, words: &SearchWords, limit: u32) -> StoreResult<Vec<Message>> {
        SqliteStore::search(self, me, words, limit).await
    }

    async fn stats(&self, me: Uuid) -> StoreResult<Stats> {
        SqliteStore::stats(self, me).await
    }

    async fn seq_of(&self, me: Uuid, id: Uuid) -> StoreResult<Option<i64>> {
        SqliteStore::seq_of(self, me, id).await
    }

    async fn messages_after(
        &self,
        me: Uuid,
        after: i64,
        limit: u32,
    ) -> StoreResult<Page<Sequenced>> {
        SqliteStore::messages_after(self, me, after, limit).await
    }

    async fn msg_seqs(&self, users: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>> {
        SqliteStore::msg_seqs(self, users).await
    }

    async fn create_group(&self, group: &NewGroup) -> StoreResult<()> {
        SqliteStore::create_group(self, group).await
    }

    async fn group(&self, id: Uuid) -> StoreResult<Option<Group>> {
        SqliteStore::group(self, id).await
    }

    async fn membership(&self, id: Uuid, user: Uuid) -> StoreResult<Membership> {
        SqliteStore::membership(self, id, user).await
    }

    async fn update_group(
        &self,
        id: Uuid,
        actor: Uuid,
        patch: &GroupPatch,
        at: DateTime<Utc>,
    ) -> StoreResult<MemberChange> {
        SqliteStore::update_group(self, id, actor, patch, at).await
    }

    async fn add_members(
        &self,
        id: Uuid,
        actor: Uuid,
        users: &[Uuid],
        max: u32,
        at: DateTime<Utc>,
    ) -> StoreResult<Added> {
        SqliteStore::add_members(self, id, actor, users, max, at).await
    }

    async fn remove_member(
        &self,
        id: Uuid,
        actor: Uuid,
        user: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<MemberChange> {
        SqliteStore::remove_member(self, id, actor, user, at).await
    }

    async fn set_role(
        &self,
        id: Uuid,
        actor: Uuid,
        user: Uuid,
        role: Role,
        at: DateTime<Utc>,
    ) -> StoreResult<MemberChange> {
        SqliteStore::set_role(self, id, actor, user, role, at).await
    }

    async fn group_history(
        &self,
        me: Uuid,
        group: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Message>> {
        SqliteStore::group_history(self, me, group, before, limit).await
    }
}
