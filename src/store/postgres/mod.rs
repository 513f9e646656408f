//! The production store: Postgres through a `sqlx` pool.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use uuid::Uuid;

use super::*;

/// Columns of a message, in the order [`MessageRow`] reads them.
macro_rules! message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type::text AS message_type, \
         m.is_read, m.read_at, m.created_at, m.updated_at, m.client_id, m.conversation_id"
    };
}

/// The same, with the read state of the reader's inbox row `i`: in a group
/// each member has their own.
macro_rules! inbox_message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type::text AS message_type, \
         (i.read_at IS NOT NULL) AS is_read, i.read_at, m.created_at, m.updated_at, m.client_id, \
         m.conversation_id"
    };
}

/// Either: the message's own read state for a direct message, the reader's
/// (a `LEFT JOIN inbox i`) for a group message.
macro_rules! viewer_message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, m.message_type::text AS message_type, \
         CASE WHEN m.receiver_id IS NULL THEN i.read_at IS NOT NULL ELSE m.is_read END AS is_read, \
         CASE WHEN m.receiver_id IS NULL THEN i.read_at ELSE m.read_at END AS read_at, \
         m.created_at, m.updated_at, m.client_id, m.conversation_id"
    };
}

mod groups;
mod insert;
mod messages;
mod users;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects lazily: the node starts (and reports unready) even while
    /// Postgres is down, and recovers without a restart when it returns.
    pub fn connect_lazy(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Internal(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn upsert_user(&self, id: Uuid, email: &str) -> StoreResult<()> {
        PgStore::upsert_user(self, id, email).await
    }

    async fn user(&self, id: Uuid) -> StoreResult<Option<User>> {
        PgStore::user(self, id).await
    }

    async fn update_profile(&self, id: Uuid, patch: &ProfilePatch) -> StoreResult<Option<User>> {
        PgStore::update_profile(self, id, patch).await
    }

    async fn set_presence(&self, id: Uuid, online: bool, at: DateTime<Utc>) -> StoreResult<()> {
        PgStore::set_presence(self, id, online, at).await
    }

    async fn contacts(&self, id: Uuid, group_limit: u32) -> StoreResult<Vec<Uuid>> {
        PgStore::contacts(self, id, group_limit).await
    }

    async fn talked_to(
        &self,
        speaker: Uuid,
        listener: Uuid,
        group_limit: u32,
    ) -> StoreResult<bool> {
        PgStore::talked_to(self, speaker, listener, group_limit).await
    }

    async fn block(&self, blocker: Uuid, blocked: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        PgStore::block(self, blocker, blocked, at).await
    }

    async fn unblock(&self, blocker: Uuid, blocked: Uuid) -> StoreResult<()> {
        PgStore::unblock(self, blocker, blocked).await
    }

    async fn blocks(&self, blocker: Uuid, limit: u32) -> StoreResult<Vec<Block>> {
        PgStore::blocks(self, blocker, limit).await
    }

    async fn blocked(&self, pairs: &[(Uuid, Uuid)]) -> StoreResult<Vec<(Uuid, Uuid)>> {
        PgStore::blocked(self, pairs).await
    }

    async fn is_contact(&self, a: Uuid, b: Uuid) -> StoreResult<bool> {
        PgStore::is_contact(self, a, b).await
    }

    async fn missing_users(&self, ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        PgStore::missing_users(self, ids).await
    }

    async fn insert_messages(&self, batch: &[NewMessage]) -> StoreResult<Vec<InsertOutcome>> {
        PgStore::insert_messages(self, batch).await
    }

    async fn message(&self, id: Uuid) -> StoreResult<Option<Message>> {
        PgStore::message(self, id).await
    }

    async fn stored(&self, ids: &[Uuid], writers: &[Uuid]) -> StoreResult<Vec<Stored>> {
        PgStore::stored(self, ids, writers).await
    }

    async fn mark_read(
        &self,
        reader: Uuid,
        ids: &[Uuid],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<ReadMark>> {
        PgStore::mark_read(self, reader, ids, at).await
    }

    async fn conversation(
        &self,
        me: Uuid,
        peer: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Message>> {
        PgStore::conversation(self, me, peer, before, limit).await
    }

    async fn conversations(&self, me: Uuid, limit: u32) -> StoreResult<Vec<ConversationSummary>> {
        PgStore::conversations(self, me, limit).await
    }

    async fn search(&self, me: Uuid, words: &SearchWords, limit: u32) -> StoreResult<Vec<Message>> {
        PgStore::search(self, me, words, limit).await
    }

    async fn stats(&self, me: Uuid) -> StoreResult<Stats> {
        PgStore::stats(self, me).await
    }

    async fn seq_of(&self, me: Uuid, id: Uuid) -> StoreResult<Option<i64>> {
        PgStore::seq_of(self, me, id).await
    }

    async fn messages_after(
        &self,
        me: Uuid,
        after: i64,
        limit: u32,
    ) -> StoreResult<Page<Sequenced>> {
        PgStore::messages_after(self, me, after, limit).await
    }

    async fn msg_seqs(&self, users: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>> {
        PgStore::msg_seqs(self, users).await
    }

    async fn create_group(&self, group: &NewGroup) -> StoreResult<()> {
        PgStore::create_group(self, group).await
    }

    async fn group(&self, id: Uuid) -> StoreResult<Option<Group>> {
        PgStore::group(self, id).await
    }

    async fn membership(&self, id: Uuid, user: Uuid) -> StoreResult<Membership> {
        PgStore::membership(self, id, user).await
    }

    async fn update_group(
        &self,
        id: Uuid,
        actor: Uuid,
        patch: &GroupPatch,
        at: DateTime<Utc>,
    ) -> StoreResult<MemberChange> {
        PgStore::update_group(self, id, actor, patch, at).await
    }

    async fn add_members(
        &self,
        id: Uuid,
        actor: Uuid,
        users: &[Uuid],
        max: u32,
        at: DateTime<Utc>,
    ) -> StoreResult<Added> {
        PgStore::add_members(self, id, actor, users, max, at).await
    }

    async fn remove_member(
        &self,
        id: Uuid,
        actor: Uuid,
        user: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<MemberChange> {
        PgStore::remove_member(self, id, actor, user, at).await
    }

    async fn set_role(
        &self,
        id: Uuid,
        actor: Uuid,
        user: Uuid,
        role: Role,
        at: DateTime<Utc>,
    ) -> StoreResult<MemberChange> {
        PgStore::set_role(self, id, actor, user, role, at).await
    }

    async fn group_history(
        &self,
        me: Uuid,
        group: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Message>> {
        PgStore::group_history(self, me, group, before, limit).await
    }
}
