//! Times every store call for the `ochat_db_operation_seconds` histogram and
//! counts failures, whichever backend is underneath.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;

pub struct Instrumented(pub Arc<dyn Store>);

async fn timed<T>(op: &'static str, call: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    let started = Instant::now();
    let result = call.await;
    // Not-found and conflicts are answers, not database failures.
    let failed = matches!(
        result,
        Err(StoreError::Unavailable(_) | StoreError::Internal(_))
    );
    crate::metrics::db_operation(op, started.elapsed(), !failed);
    result
}

#[async_trait]
impl Store for Instrumented {
    async fn ping(&self) -> StoreResult<()> {
        timed("ping", self.0.ping()).await
    }
    async fn upsert_user(&self, id: Uuid, email: &str) -> StoreResult<()> {
        timed("upsert_user", self.0.upsert_user(id, email)).await
    }
    async fn user(&self, id: Uuid) -> StoreResult<Option<User>> {
        timed("user", self.0.user(id)).await
    }
    async fn update_profile(&self, id: Uuid, patch: &ProfilePatch) -> StoreResult<Option<User>> {
        timed("update_profile", self.0.update_profile(id, patch)).await
    }
    async fn set_presence(&self, id: Uuid, online: bool, at: DateTime<Utc>) -> StoreResult<()> {
        timed("set_presence", self.0.set_presence(id, online, at)).await
    }
    async fn contacts(&self, id: Uuid, group_limit: u32) -> StoreResult<Vec<Uuid>> {
        timed("contacts", self.0.contacts(id, group_limit)).await
    }
    async fn talked_to(
        &self,
        speaker: Uuid,
        listener: Uuid,
        group_limit: u32,
    ) -> StoreResult<bool> {
        timed(
            "talked_to",
            self.0.talked_to(speaker, listener, group_limit),
        )
        .await
    }
    async fn block(&self, blocker: Uuid, blocked: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        timed("block", self.0.block(blocker, blocked, at)).await
    }
    async fn unblock(&self, blocker: Uuid, blocked: Uuid) -> StoreResult<()> {
        timed("unblock", self.0.unblock(blocker, blocked)).await
    }
    async fn blocks(&self, blocker: Uuid, limit: u32) -> StoreResult<Vec<Block>> {
        timed("blocks", self.0.blocks(blocker, limit)).await
    }
    async fn blocked(&self, pairs: &[(Uuid, Uuid)]) -> StoreResult<Vec<(Uuid, Uuid)>> {
        timed("blocked", self.0.blocked(pairs)).await
    }
    async fn is_contact(&self, a: Uuid, b: Uuid) -> StoreResult<bool> {
        timed("is_contact", self.0.is_contact(a, b)).await
    }
    async fn insert_messages(&self, batch: &[NewMessage]) -> StoreResult<Vec<InsertOutcome>> {
        timed("insert_messages", self.0.insert_messages(batch)).await
    }
    async fn message(&self, id: Uuid) -> StoreResult<Option<Message>> {
        timed("message", self.0.message(id)).await
    }
    async fn stored(&self, ids: &[Uuid], writers: &[Uuid]) -> StoreResult<Vec<Stored>> {
        timed("stored", self.0.stored(ids, writers)).await
    }
    async fn mark_read(
        &self,
        reader: Uuid,
        ids: &[Uuid],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<ReadMark>> {
        timed("mark_read", self.0.mark_read(reader, ids, at)).await
    }
    async fn conversation(
        &self,
        me: Uuid,
        peer: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Message>> {
        timed("conversation", self.0.conversation(me, peer, before, limit)).await
    }
    async fn conversations(&self, me: Uuid, limit: u32) -> StoreResult<Vec<ConversationSummary>> {
        timed("conversations", self.0.conversations(me, limit)).await
    }
    async fn search(&self, me: Uuid, words: &SearchWords, limit: u32) -> StoreResult<Vec<Message>> {
        timed("search", self.0.search(me, words, limit)).await
    }
    async fn stats(&self, me: Uuid) -> StoreResult<Stats> {
        timed("stats", self.0.stats(me)).await
    }
    async fn seq_of(&self, me: Uuid, id: Uuid) -> StoreResult<Option<i64>> {
        timed("seq_of", self.0.seq_of(me, id)).await
    }
    async fn messages_after(
        &self,
        me: Uuid,
        after: i64,
        limit: u32,
    ) -> StoreResult<Page<Sequenced>> {
        timed("messages_after", self.0.messages_after(me, after, limit)).await
    }
    async fn msg_seqs(&self, users: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>> {
        timed("msg_seqs", self.0.msg_seqs(users)).await
    }
    async fn missing_users(&self, ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        timed("missing_users", self.0.missing_users(ids)).await
    }
    async fn create_group(&self, group: &NewGroup) -> StoreResult<()> {
        timed("create_group", self.0.create_group(group)).await
    }
    async fn group(&self, id: Uuid) -> StoreResult<Option<Group>> {
        timed("group", self.0.group(id)).await
    }
    async fn membership(&self, id: Uuid, user: Uuid) -> StoreResult<Membership> {
        timed("membership", self.0.membership(id, user)).await
    }
    async fn update_group(
        &self,
        id: Uuid,
        actor: Uuid,
        patch: &GroupPatch,
        at: DateTime<Utc>,
    ) -> StoreResult<MemberChange> {
        timed("update_group", self.0.update_group(id, actor, patch, at)).await
    }
    async fn add_members(
        &self,
        id: Uuid,
        actor: Uuid,
        users: &[Uuid],
        max: u32,
        at: DateTime<Utc>,
    ) -> StoreResult<Added> {
        timed("add_members", self.0.add_members(id, actor, users, max, at)).await
    }
    async fn remove_member(
        &self,
        id: Uuid,
        actor: Uuid,
        user: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<MemberChange> {
        timed("remove_member", self.0.remove_member(id, actor, user, at)).await
    }
    async fn set_role(
        &self,
        id: Uuid,
        actor: Uuid,
        user: Uuid,
        role: Role,
        at: DateTime<Utc>,
    ) -> StoreResult<MemberChange> {
        timed("set_role", self.0.set_role(id, actor, user, role, at)).await
    }
    async fn group_history(
        &self,
        me: Uuid,
        group: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Message>> {
        timed(
            "group_history",
            self.0.group_history(me, group, before, limit),
        )
        .await
    }
}
