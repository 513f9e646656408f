//! The domain operations. HTTP handlers and WebSocket sessions both call
//! these, so every rule (validation, who may read what, who is told what)
//! lives here once.

mod groups;
pub mod text;
mod writer;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use writer::MessageWriter;

use crate::bus::{Envelope, Order, SessionId, SharedBus};
use crate::config::Limits;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::presence::{Closed, SharedPresence, Transition};
use crate::protocol::{Destination, ServerFrame};
use crate::store::{
    self, Block, ConversationSummary, InsertOutcome, Membership, Message, NewMessage, Page,
    SearchWords, Sequenced, Stats, Store, Target,
};

/// Message text: trimmed, 1..=limit characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content(String);

impl Content {
    pub fn parse(raw: &str, max_chars: usize) -> ApiResult<Self> {
        let trimmed = raw.trim();
        // Checked before the batch: one message PostgreSQL cannot store (a
        // NUL) must not fail the others committed with it.
        if trimmed.contains(text::refused_in_content) {
            return Err(ApiError::invalid_field(
                "content must not contain control characters other than newline and tab",
            ));
        }
        if trimmed.is_empty() {
            return Err(ApiError::new(ErrorCode::ContentEmpty, "content is empty"));
        }
        let chars = trimmed.chars().count();
        if chars > max_chars {
            return Err(ApiError::new(
                ErrorCode::ContentTooLong,
                format!("content is {chars} characters; the limit is {max_chars}"),
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }
}

/// A sender's idempotency key: 1..=64 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId(String);

impl ClientId {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(raw: &str) -> ApiResult<Self> {
        if raw.is_empty() || raw.chars().count() > Self::MAX_CHARS || raw.contains('\0') {
            return Err(ApiError::invalid_field(
                "client_id must be 1 to 64 characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

const MAX_AVATAR_URL_CHARS: usize = 2048;

/// An avatar (a user's or a group's): an http(s) URL without whitespace.
pub fn avatar_url(raw: &str) -> ApiResult<String> {
    // Not trimmed: a URL has no spaces, at its ends or anywhere.
    let url = raw;
    let web = url.starts_with("https://") || url.starts_with("http://");
    // Control characters (U+0000 above all, which PostgreSQL cannot store)
    // are no part of a URL.
    let stray = |c: char| c.is_whitespace() || c.is_control();
    if !web || url.chars().count() > MAX_AVATAR_URL_CHARS || url.contains(stray) {
        return Err(ApiError::invalid_field(format!(
            "avatar_url must be an http(s) URL of at most {MAX_AVATAR_URL_CHARS} characters, or null"
        )));
    }
    Ok(url.to_owned())
}

/// The answer for a user that does not exist, and for one who blocked the
/// asker: the two must not be told apart.
fn no_user(id: Uuid) -> ApiError {
    ApiError::new(
        ErrorCode::RecipientNotFound,
        format!("no user with id {id}"),
    )
}

/// Another user's profile as the asker may see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Profile {
    pub id: Uuid,
    pub username: Option<String>,
    pub avatar_url: Option<String>,
    /// `false` unless this user has talked to the asker.
    pub is_online: bool,
    /// `null` unless this user has talked to the asker.
    pub last_seen: Option<chrono::DateTime<chrono::Utc>>,
}

/// Page sizes are clamped to 1..=100; 50 when not given.
pub fn page_limit(requested: Option<u32>) -> u32 {
    requested.unwrap_or(50).clamp(1, 100)
}

/// A presence change this node owes its contacts an (accurate) word about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repair {
    /// Closing this session failed: close it again.
    Close(SessionId),
    /// The presence store lost the user's state: settle what it is now.
    Settle,
    /// Telling contacts failed (bus or storage): tell them the state now.
    Announce,
}

struct PendingRepair {
    user: Uuid,
    repair: Repair,
    due: Instant,
}

pub struct Chat {
    store: Arc<dyn Store>,
    writer: MessageWriter,
    bus: SharedBus,
    presence: SharedPresence,
    limits: Limits,
    /// How often nodes refresh their presence: a repair that decides
    /// someone is offline waits this long after presence is back, so every
    /// node has put its own sessions back first and nobody flaps.
    presence_every: Duration,
    repairs: Mutex<Vec<PendingRepair>>,
    /// (sender, recipient) pairs whose recipient this node has told the
    /// sender's presence since it started (see [`Chat::introduce`]); cleared
    /// when it reaches [`INTRODUCED_CAP`].
    introduced: Mutex<HashSet<(Uuid, Uuid)>>,
    /// Owns the introductions, so shutdown waits for them.
    tasks: TaskTracker,
}

/// Pairs remembered as introduced: past this the set starts again (a pair
/// introduced twice costs one presence frame the receiving node drops).
const INTRODUCED_CAP: usize = 100_000;

/// How long an introduction waits for presence.
const INTRODUCE_WITHIN: Duration = Duration::from_secs(2);

/// How soon a failed announcement is tried again.
const ANNOUNCE_RETRY: Duration = Duration::from_secs(1);
/// Announcements made at once after a heartbeat or sweep.
const ANNOUNCE_CONCURRENCY: usize = 16;

impl Chat {
    pub fn new(
        store: Arc<dyn Store>,
        writer: MessageWriter,
        bus: SharedBus,
        presence: SharedPresence,
        limits: Limits,
        presence_every: Duration,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            store,
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

    /// Validates and commits a message; the writer publishes it to the
    /// recipient (every member of a group) and to the sender's other
    /// sessions. Returns the stored message once it is durable; the caller
    /// acks with it. A repeated `client_id` returns the first message and
    /// publishes nothing new.
    #[tracing::instrument(skip_all, fields(sender = %sender))]
    pub async fn send(
        &self,
        sender: Uuid,
        origin: Option<SessionId>,
        to: Destination,
        content: &str,
        client_id: Option<&str>,
    ) -> ApiResult<Message> {
        if to == Destination::User(sender) {
            return Err(ApiError::invalid_field("cannot send a message to yourself"));
        }
        let content = Content::parse(content, self.limits.max_content_chars)?;
        let client_id = client_id.map(ClientId::parse).transpose()?;
        let mut new = NewMessage {
            id: Uuid::now_v7(),
            sender_id: sender,
            to: match to {
                Destination::User(user) => Target::User(user),
                // Most conversation ids name groups; a direct one is found
                // on the (rare) second try below.
                Destination::Conversation(id) => Target::Group(id),
            },
            content: content.0,
            client_id: client_id.map(|c| c.0),
            created_at: store::now(),
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
                if let Some(receiver) = stored.message.receiver_id {
                    self.introduce(sender, receiver);
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

    /// A direct message makes its sender someone who has talked to its
    /// recipient, so the recipient is told the sender's presence now,
    /// rather than at the sender's next transition (which, for a sender
    /// who stays online, may be hours away). Once per pair per node; in
    /// the background, so no ack waits on presence.
    fn introduce(&self, sender: Uuid, receiver: Uuid) {
        {
            let mut introduced = self.introduced.lock().expect("not poisoned");
            if introduced.contains(&(sender, receiver)) {
                return;
            }
            if introduced.len() >= INTRODUCED_CAP {
                introduced.clear();
            }
            introduced.insert((sender, receiver));
        }
        let (presence, bus, store) = (self.presence.clone(), self.bus.clone(), self.store.clone());
        self.tasks.spawn(async move {
            // A sender who blocked the recipient keeps their presence from
            // them, as `contacts` does.
            let blocked = store.blocked(&[(sender, receiver)]).await;
            if !blocked.is_ok_and(|b| b.is_empty()) {
                return;
            }
            let settled = tokio::time::timeout(INTRODUCE_WITHIN, presence.settle(sender)).await;
            let Ok(Ok(t)) = settled else {
                // The sender's next transition, or a repair, tells them.
                return;
            };
            let frame = if t.online {
                ServerFrame::UserOnline {
                    user_id: t.user,
                    version: t.version,
                }
            } else {
                ServerFrame::UserOffline {
                    user_id: t.user,
                    version: t.version,
                }
            };
            let order = Order::Presence {
                user: t.user,
                version: t.version,
            };
            let event = Envelope::new(&frame, None).ordered(order);
            if let Err(e) = bus.publish(vec![(receiver, event)]).await {
                tracing::debug!(error = %e, "could not introduce a sender's presence");
            }
        });
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

    pub async fn sync(
        &self,
        me: Uuid,
        since: Option<Uuid>,
        limit: Option<u32>,
    ) -> ApiResult<Page<Sequenced>> {
        Ok(self.store.sync(me, since, page_limit(limit)).await?)
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

    /// Whether `blocker` has blocked `user`.
    async fn blocks(&self, blocker: Uuid, user: Uuid) -> ApiResult<bool> {
        Ok(!self.store.blocked(&[(blocker, user)]).await?.is_empty())
    }

    /// Another user's public profile, as `me` may see it: a user who
    /// blocked `me` does not exist for them, and presence (`is_online`,
    /// `last_seen`) shows only once that user has talked to `me`.
    pub async fn profile(&self, me: Uuid, id: Uuid) -> ApiResult<Profile> {
        if id != me && self.blocks(id, me).await? {
            return Err(ApiError::not_found(format!("no user with id {id}")));
        }
        let user = self
            .store
            .user(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no user with id {id}")))?;
        let visible = id == me
            || self
                .store
                .talked_to(id, me, self.limits.presence_group_limit)
                .await?;
        let is_online = visible && self.is_online(id).await;
        Ok(Profile {
            id: user.id,
            username: user.username,
            avatar_url: user.avatar_url,
            is_online,
            last_seen: visible.then_some(user.last_seen),
        })
    }

    /// `me` blocks `user`: they can no longer message `me`, type to `me`,
    /// add `me` to a group or see `me`'s presence or profile.
    pub async fn block(&self, me: Uuid, user: Uuid) -> ApiResult<()> {
        if user == me {
            return Err(ApiError::invalid_field("you cannot block yourself"));
        }
        if self.store.user(user).await?.is_none() {
            return Err(ApiError::not_found(format!("no user with id {user}")));
        }
        Ok(self.store.block(me, user, store::now()).await?)
    }

    pub async fn unblock(&self, me: Uuid, user: Uuid) -> ApiResult<()> {
        if self.store.user(user).await?.is_none() {
            return Err(ApiError::not_found(format!("no user with id {user}")));
        }
        Ok(self.store.unblock(me, user).await?)
    }

    pub async fn blocked_users(&self, me: Uuid, limit: Option<u32>) -> ApiResult<Vec<Block>> {
        Ok(self.store.blocks(me, page_limit(limit)).await?)
    }

    pub async fn stats(&self, me: Uuid) -> ApiResult<Stats> {
        Ok(self.store.stats(me).await?)
    }

    pub async fn is_online(&self, user: Uuid) -> bool {
        self.presence.is_online(user).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "presence lookup failed");
            false
        })
    }

    /// A session opened: the user's first session anywhere makes them
    /// online, and their contacts are told. If presence is down, the
    /// heartbeat puts the session in when it is back and announces it then.
    pub async fn session_opened(&self, user: Uuid, session: SessionId) {
        match self.presence.session_opened(user, session).await {
            Ok(Some(transition)) => {
                self.announce(transition).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "presence update failed; the heartbeat restores it")
            }
        }
    }

    /// A session closed: the user's last session anywhere makes them
    /// offline, and their contacts are told.
    pub async fn session_closed(&self, user: Uuid, session: SessionId) {
        match self.presence.session_closed(user, session).await {
            Ok(Closed::Offline(transition)) => {
                self.announce(transition).await;
            }
            Ok(Closed::Unchanged) => {}
            Ok(Closed::Lost) => self.defer(user, Repair::Settle, self.presence_every),
            Err(e) => {
                tracing::warn!(error = %e, "presence update failed; retrying when it is back");
                self.defer(user, Repair::Close(session), self.presence_every);
            }
        }
    }

    /// The heartbeat found these users missing from presence (a flush or an
    /// outage) and put them back: contacts hear they are online, with a new
    /// version, which changes nothing for whoever already saw them online.
    pub async fn restored(&self, transitions: Vec<Transition>) {
        self.announce_all(transitions).await;
    }

    /// Users whose sessions expired on a dead node.
    pub async fn sweep_presence(&self) {
        match self.presence.sweep().await {
            Ok(gone) => self.announce_all(gone).await,
            Err(e) => tracing::warn!(error = %e, "presence sweep failed"),
        }
    }

    /// Carries out the repairs that are due. `healthy_for`: how long
    /// presence has answered this node's heartbeats without a failure.
    pub async fn repair_presence(&self, healthy_for: Duration) {
        let now = Instant::now();
        let due: Vec<PendingRepair> = {
            let mut repairs = self.repairs.lock().expect("not poisoned");
            let (due, later) = std::mem::take(&mut *repairs).into_iter().partition(|r| {
                r.due <= now && (r.repair == Repair::Announce || healthy_for >= self.presence_every)
            });
            *repairs = later;
            due
        };
        let mut due = due.into_iter();
        while let Some(PendingRepair { user, repair, .. }) = due.next() {
            let settled = match repair {
                Repair::Close(session) => match self.presence.session_closed(user, session).await {
                    Ok(Closed::Offline(transition)) => Ok(Some(transition)),
                    Ok(Closed::Unchanged) => Ok(None),
                    Ok(Closed::Lost) => self.presence.settle(user).await.map(Some),
                    Err(e) => Err(e),
                },
                Repair::Settle | Repair::Announce => self.presence.settle(user).await.map(Some),
            };
            let done = match settled {
                Ok(Some(transition)) => self.announce(transition).await,
                Ok(None) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "presence repair failed; retrying");
                    self.defer(user, repair, ANNOUNCE_RETRY);
                    false
                }
            };
            if !done {
                // Something is still down: the rest waits for the next
                // round instead of each waiting out its own timeout now.
                for rest in due.by_ref() {
                    self.defer(rest.user, rest.repair, ANNOUNCE_RETRY);
                }
            }
        }
    }

    fn defer(&self, user: Uuid, repair: Repair, after: Duration) {
        let mut repairs = self.repairs.lock().expect("not poisoned");
        if !repairs.iter().any(|r| r.user == user && r.repair == repair) {
            repairs.push(PendingRepair {
                user,
                repair,
                due: Instant::now() + after,
            });
        }
    }

    /// Records a transition and tells the user's contacts. If any step
    /// fails the state is announced again later, so contacts converge;
    /// `false` then.
    async fn announce(&self, t: Transition) -> bool {
        let recorded = self
            .store
            .set_presence(t.user, t.online, store::now())
            .await;
        if let Err(e) = &recorded {
            tracing::warn!(error = %e, "could not record presence");
        }
        let told = match self
            .store
            .contacts(t.user, self.limits.presence_group_limit)
            .await
        {
            Ok(contacts) => {
                let frame = if t.online {
                    ServerFrame::UserOnline {
                        user_id: t.user,
                        version: t.version,
                    }
                } else {
                    ServerFrame::UserOffline {
                        user_id: t.user,
                        version: t.version,
                    }
                };
                let (kind, json) = (frame.kind(), frame.to_json());
                let order = Order::Presence {
                    user: t.user,
                    version: t.version,
                };
                let events = contacts
                    .into_iter()
                    .map(|c| (c, Envelope::shared(kind, json.clone(), None).ordered(order)))
                    .collect();
                self.bus
                    .publish_confirmed(events)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = &told {
            tracing::warn!(error = %e, "could not announce presence; retrying");
        }
        if recorded.is_err() || told.is_err() {
            self.defer(t.user, Repair::Announce, ANNOUNCE_RETRY);
            return false;
        }
        true
    }

    /// Announces many transitions (a heartbeat's or a sweep's), a few at a
    /// time so a node with many users converges quickly.
    async fn announce_all(&self, transitions: Vec<Transition>) {
        futures_util::stream::iter(transitions)
            .for_each_concurrent(ANNOUNCE_CONCURRENCY, |t| async move {
                self.announce(t).await;
            })
            .await;
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
    fn content_is_trimmed_and_bounded() {
        assert_eq!(Content::parse("  hi  ", 10).unwrap(), Content("hi".into()));
        assert_eq!(
            Content::parse(" \n\t ", 10).unwrap_err().code,
            ErrorCode::ContentEmpty
        );
        assert_eq!(
            Content::parse(&"é".repeat(11), 10).unwrap_err().code,
            ErrorCode::ContentTooLong
        );
        assert!(
            Content::parse(&"é".repeat(10), 10).is_ok(),
            "the limit counts characters, not bytes"
        );
        assert_eq!(
            Content::parse("line one\n\tline two", 100).unwrap(),
            Content("line one\n\tline two".into())
        );
        assert_eq!(
            Content::parse("red \u{1b}[31m alert", 100).unwrap_err(),
            ApiError::invalid_field(
                "content must not contain control characters other than newline and tab"
            )
        );
    }

    #[test]
    fn limits_are_clamped() {
        assert_eq!(page_limit(None), 50);
        assert_eq!(page_limit(Some(0)), 1);
        assert_eq!(page_limit(Some(1000)), 100);
    }
}
