//! The domain operations. HTTP handlers and WebSocket sessions both call
//! these, so every rule (validation, who may read what, who is told what)
//! lives here once.

mod attachments;
mod changes;
mod groups;
mod people;
mod presence;
mod retention;
pub mod text;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use attachments::{Announced, sweep_unsent};
pub use changes::Changed;
pub use people::Profile;
use people::no_user;
pub use retention::keep_history;
pub use text::avatar_url;
use text::{ClientId, Content};
pub use writer::{MessageWriter, WriterParts};

use crate::bus::{Envelope, SessionId, SharedBus};
use crate::coalesce::Coalescer;
use crate::config::Limits;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::presence::SharedPresence;
use crate::protocol::{Destination, ServerFrame, SyncFrom};
use crate::store::{
    self, ConversationSummary, Entry, InsertOutcome, Membership, Message, NewMessage, Page,
    ReplyTo, SearchWords, Stats, Store, Target,
};

/// Runs `round` every `every` (the first at once) until shutdown: the
/// loop of the node's periodic upkeep. A round that overruns delays the
/// next instead of bunching them.
async fn every<F, Fut>(every: Duration, shutdown: CancellationToken, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        round().await;
    }
}

/// Page sizes are clamped to 1..=100; 50 when not given.
pub fn page_limit(requested: Option<u32>) -> u32 {
    requested.unwrap_or(50).clamp(1, 100)
}

/// A message to send: where, what, and optionally its idempotency key, the
/// message it answers and the files it carries.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub to: Destination,
    pub content: &'a str,
    pub client_id: Option<&'a str>,
    pub reply_to: Option<Uuid>,
    pub attachments: &'a [Uuid],
}

impl<'a> Outgoing<'a> {
    /// Plain text, no key.
    pub fn text(to: Destination, content: &'a str) -> Self {
        Self {
            to,
            content,
            client_id: None,
            reply_to: None,
            attachments: &[],
        }
    }
}

pub struct Chat {
    store: Arc<dyn Store>,
    files: Arc<crate::files::Files>,
    files_config: crate::config::FilesConfig,
    writer: MessageWriter,
    bus: SharedBus,
    presence: SharedPresence,
    limits: Limits,
    /// How often nodes refresh their presence: a repair that decides
    /// someone is offline waits this long after presence is back, so every
    /// node has put its own sessions back first and nobody flaps.
    presence_every: Duration,
    repairs: Mutex<Vec<presence::PendingRepair>>,
    /// (sender, conversation) pairs whose other participants this node has
    /// told the sender's presence since it started (see
    /// `Chat::introduce`); cleared when it reaches `presence::INTRODUCED_CAP`.
    introduced: Mutex<HashSet<(Uuid, Uuid)>>,
    /// Owns the introductions, so shutdown waits for them.
    tasks: TaskTracker,
    /// Presence transitions recorded and announced in batches.
    announcer: Coalescer<crate::presence::Transition, bool>,
    /// Users' latest message numbers, read in batches.
    latest: Coalescer<Uuid, Option<i64>>,
}

/// Lanes reading users' latest message numbers for connects: two, so one
/// batch gathers while the other is read.
const LATEST_LANES: usize = 2;
/// Users whose latest numbers are read in one statement, at most.
const LATEST_BATCH: usize = 512;
/// One lane records and announces presence, so a user's transitions made
/// on this node are recorded in the order they were made.
const ANNOUNCE_LANES: usize = 1;

impl Chat {
    #[allow(clippy::too_many_arguments)] // each is a part the domain owns
    pub fn new(
        store: Arc<dyn Store>,
        files: (Arc<crate::files::Files>, crate::config::FilesConfig),
        writer: MessageWriter,
        bus: SharedBus,
        presence: SharedPresence,
        limits: Limits,
        presence_every: Duration,
        tasks: TaskTracker,
        (stop, late): (CancellationToken, &TaskTracker),
    ) -> Self {
        // Owned by the node's late tasks: they stop after the sessions,
        // whose departures are announced on the way out.
        let announcer = {
            let (store, bus) = (store.clone(), bus.clone());
            let group_limit = limits.presence_group_limit;
            Coalescer::start(
                "presence announcer",
                ANNOUNCE_LANES,
                presence::ANNOUNCE_BATCH,
                (stop.clone(), late),
                move |batch| {
                    let (store, bus) = (store.clone(), bus.clone());
                    async move { presence::announce_batch(&*store, &bus, group_limit, batch).await }
                },
            )
        };
        let latest = {
            let store = store.clone();
            Coalescer::start(
                "latest message numbers",
                LATEST_LANES,
                LATEST_BATCH,
                (stop, late),
                move |users: Vec<Uuid>| {
                    let store = store.clone();
                    async move {
                        let found: HashMap<Uuid, i64> =
                            store.msg_seqs(&users).await?.into_iter().collect();
                        Ok(users.iter().map(|u| found.get(u).copied()).collect())
                    }
                },
            )
        };
        Self {
            announcer,
            latest,
            store,
            files: files.0,
            files_config: files.1,
            writer,
            bus,
            presence,
            limits,
            presence_every,
            repairs: Mutex::new(Vec::new()),
            introduced: Mutex::new(HashSet::new()),
            tasks,
        }
    }

    /// `user`'s latest message number (`None`: no such user yet), read
    /// together with those of the users connecting at the same moment.
    pub async fn latest_seq(&self, user: Uuid) -> crate::store::StoreResult<Option<i64>> {
        self.latest.ask(user).await
    }

    /// Validates and commits a message; the writer publishes it to the
    /// recipient (every member of a group) and to the sender's other
    /// sessions. Returns the stored message once it is durable; the caller
    /// acks with it. A repeated `client_id` returns the first message and
    /// publishes nothing new. `reply_to` names a message of the same
    /// conversation the sender can read.
    #[tracing::instrument(skip_all, fields(sender = %sender))]
    pub async fn send(
        &self,
        sender: Uuid,
        origin: Option<SessionId>,
        out: Outgoing<'_>,
    ) -> ApiResult<Message> {
        let Outgoing {
            to,
            content,
            client_id,
            reply_to,
            attachments,
        } = out;
        if to == Destination::User(sender) {
            return Err(ApiError::invalid_field("cannot send a message to yourself"));
        }
        // A picture or a file may go without words.
        let content = if !attachments.is_empty() && content.trim().is_empty() {
            String::new()
        } else {
            Content::parse(content, self.limits.max_content_chars)?.0
        };
        let client_id = client_id.map(ClientId::parse).transpose()?;
        let attachments = if attachments.is_empty() {
            Vec::new()
        } else {
            self.attachments_to_send(sender, attachments).await?
        };
        let reply_to = match reply_to {
            Some(id) => Some(self.reply_target(sender, to, id).await?),
            None => None,
        };
        let mut new = NewMessage {
            id: Uuid::now_v7(),
            sender_id: sender,
            to: match to {
                Destination::User(user) => Target::User(user),
                // Most conversation ids name groups; a direct one is found
                // on the (rare) second try below.
                Destination::Conversation(id) => Target::Group(id),
            },
            content,
            client_id: client_id.map(|c| c.0),
            created_at: store::now(),
            reply_to,
            attachments,
        };
        let mut outcome = self.writer.write(new.clone(), origin).await?;
        if let (InsertOutcome::GroupNotFound, Destination::Conversation(id)) = (&outcome, to) {
            match self.store.membership(id, sender).await? {
                Membership::Direct { peer } => {
                    new.to = Target::User(peer);
                    outcome = self.writer.write(new, origin).await?;
                }
                Membership::Former => return Err(groups::not_a_member()),
                _ => return Err(groups::no_group(id)),
            }
        }
        match outcome {
            InsertOutcome::Created(stored) => {
                crate::metrics::message_sent();
                // Its participants (a group's members) are the users
                // numbered for it.
                let small = stored.seqs.len() <= self.limits.presence_group_limit as usize;
                if stored.message.receiver_id.is_some() || small {
                    let listeners = stored.seqs.iter().map(|(u, _)| *u);
                    self.introduce(sender, stored.message.conversation_id, listeners);
                }
                Ok(stored.message)
            }
            InsertOutcome::Duplicate(message) => Ok(message),
            InsertOutcome::RecipientNotFound => Err(no_user(match to {
                Destination::User(u) | Destination::Conversation(u) => u,
            })),
            InsertOutcome::GroupNotFound | InsertOutcome::NotMember => {
                let Destination::Conversation(id) = to else {
                    return Err(ApiError::internal());
                };
                // Only a former member learns the group exists.
                match self.store.membership(id, sender).await? {
                    Membership::Former => Err(groups::not_a_member()),
                    _ => Err(groups::no_group(id)),
                }
            }
            InsertOutcome::SenderNotFound => Err(ApiError::internal()),
        }
    }

    /// The message a reply answers, if `sender` can read it and it belongs
    /// to the conversation the reply goes to.
    async fn reply_target(&self, sender: Uuid, to: Destination, id: Uuid) -> ApiResult<ReplyTo> {
        let unknown = || ApiError::not_found(format!("no message with id {id} to reply to"));
        let Some(m) = self.store.message(id).await? else {
            return Err(unknown());
        };
        let readable = match m.receiver_id {
            Some(receiver) => m.sender_id == sender || receiver == sender,
            None => self.store.seq_of(sender, id).await?.is_some(),
        };
        if !readable {
            return Err(unknown());
        }
        let conversation = match to {
            Destination::User(peer) => store::conversation_id(sender, peer),
            Destination::Conversation(c) => c,
        };
        if m.conversation_id != conversation {
            return Err(ApiError::invalid_field(
                "reply_to must be a message of the same conversation",
            ));
        }
        Ok(ReplyTo::of(&m))
    }

    /// Marks messages `reader` received as read; each sender hears a
    /// `read_receipt` per message (naming the group, in a group). Others'
    /// messages are left alone.
    pub async fn mark_read(&self, reader: Uuid, ids: &[Uuid]) -> ApiResult<usize> {
        let marks = self.store.mark_read(reader, ids, store::now()).await?;
        let events = marks
            .iter()
            .map(|mark| {
                let frame = ServerFrame::ReadReceipt {
                    message_id: mark.message_id,
                    read_by: reader,
                    conversation_id: mark.group,
                };
                (mark.sender_id, Envelope::new(&frame, None))
            })
            .collect();
        self.publish(events).await;
        Ok(marks.len())
    }

    /// The WebSocket's single `mark_read`: unlike the batch form it says why
    /// nothing happened. Marking an already-read message is not an error.
    pub async fn mark_one_read(&self, reader: Uuid, id: Uuid) -> ApiResult<()> {
        let readable = match self.store.message(id).await? {
            Some(m) if m.sender_id == reader => {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "only the recipient can mark a message read",
                ));
            }
            Some(m) if m.receiver_id == Some(reader) => true,
            // A group message is readable by whoever it reached.
            Some(m) if m.receiver_id.is_none() => self.store.seq_of(reader, id).await?.is_some(),
            _ => false,
        };
        if !readable {
            return Err(ApiError::not_found(format!("no message with id {id}")));
        }
        self.mark_read(reader, &[id]).await?;
        Ok(())
    }

    /// Relays a typing indicator to a contact's sessions, or to a group's
    /// other members (only in groups of at most `PRESENCE_GROUP_LIMIT`
    /// members; in larger ones it is accepted and not relayed). Never stored.
    pub async fn typing(&self, from: Uuid, to: Destination, is_typing: bool) -> ApiResult<()> {
        let to = match to {
            Destination::User(to) => to,
            Destination::Conversation(id) => match self.store.membership(id, from).await? {
                Membership::Direct { peer } => peer,
                Membership::Member(_) => return self.group_typing(from, id, is_typing).await,
                Membership::Former => return Err(groups::not_a_member()),
                Membership::NotFound | Membership::Outsider => return Err(groups::no_group(id)),
            },
        };
        if to == from {
            return Err(ApiError::invalid_field("cannot send typing to yourself"));
        }
        if self.blocks(to, from).await? {
            return Err(no_user(to));
        }
        if !self.store.is_contact(from, to).await? {
            if self.store.user(to).await?.is_none() {
                return Err(no_user(to));
            }
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "typing indicators go only to people you have a conversation with",
            ));
        }
        let frame = ServerFrame::Typing {
            from,
            is_typing,
            conversation_id: None,
        };
        self.publish(vec![(to, Envelope::new(&frame, None))]).await;
        Ok(())
    }

    async fn group_typing(&self, from: Uuid, id: Uuid, is_typing: bool) -> ApiResult<()> {
        let Some(group) = self.store.group(id).await? else {
            return Err(ApiError::not_found(format!("no conversation with id {id}")));
        };
        if group.member_count > i64::from(self.limits.presence_group_limit) {
            return Ok(());
        }
        let frame = ServerFrame::Typing {
            from,
            is_typing,
            conversation_id: Some(id),
        };
        let (kind, json) = (frame.kind(), frame.to_json());
        let events = group
            .members
            .iter()
            .filter(|m| m.user_id != from)
            .map(|m| (m.user_id, Envelope::shared(kind, json.clone(), None)))
            .collect();
        self.publish(events).await;
        Ok(())
    }

    /// What happened since `from`, in `me`'s commit order: messages and
    /// changes to messages, and the cursor the next page starts from.
    pub async fn sync(
        &self,
        me: Uuid,
        from: SyncFrom,
        limit: Option<u32>,
    ) -> ApiResult<(Page<Entry>, i64)> {
        Ok(self.store.sync(me, from, page_limit(limit)).await?)
    }

    pub async fn conversation(
        &self,
        me: Uuid,
        peer: Uuid,
        before: Option<Uuid>,
        limit: Option<u32>,
    ) -> ApiResult<Page<Message>> {
        Ok(self
            .store
            .conversation(me, peer, before, page_limit(limit))
            .await?)
    }

    pub async fn conversations(
        &self,
        me: Uuid,
        limit: Option<u32>,
    ) -> ApiResult<Vec<ConversationSummary>> {
        Ok(self.store.conversations(me, page_limit(limit)).await?)
    }

    pub async fn search(
        &self,
        me: Uuid,
        query: &str,
        limit: Option<u32>,
    ) -> ApiResult<Vec<Message>> {
        let words = SearchWords::parse(query)
            .ok_or_else(|| ApiError::invalid_field("query must contain at least one word"))?;
        Ok(self.store.search(me, &words, page_limit(limit)).await?)
    }

    pub async fn stats(&self, me: Uuid) -> ApiResult<Stats> {
        Ok(self.store.stats(me).await?)
    }

    /// Typing and read receipts are best effort: a failed publish is logged.
    async fn publish(&self, events: Vec<(Uuid, Envelope)>) {
        if events.is_empty() {
            return;
        }
        if let Err(e) = self.bus.publish(events).await {
            tracing::warn!(error = %e, "publish failed; clients will catch up by sync");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_clamped() {
        assert_eq!(page_limit(None), 50);
        assert_eq!(page_limit(Some(0)), 1);
        assert_eq!(page_limit(Some(1000)), 100);
    }
}
