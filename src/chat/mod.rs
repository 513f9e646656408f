//! The domain operations. HTTP handlers and WebSocket sessions both call
//! these, so every rule (validation, who may read what, who is told what)
//! lives here once.

mod writer;

use std::sync::Arc;

use uuid::Uuid;

pub use writer::MessageWriter;

use crate::bus::{Envelope, SessionId, SharedBus};
use crate::config::Limits;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::presence::SharedPresence;
use crate::protocol::{MessageFrame, ServerFrame};
use crate::store::{
    self, ConversationSummary, InsertOutcome, Message, NewMessage, Page, SearchWords, Stats, Store,
};

/// Message text: trimmed, 1..=limit characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content(String);

impl Content {
    pub fn parse(raw: &str, max_chars: usize) -> ApiResult<Self> {
        let trimmed = raw.trim();
        // Postgres text cannot hold NUL; refusing it here keeps one bad
        // message from failing the batch it would share with others.
        if trimmed.contains('\0') {
            return Err(ApiError::invalid_field(
                "content must not contain NUL characters",
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

/// Page sizes are clamped to 1..=100; 50 when not given.
pub fn page_limit(requested: Option<u32>) -> u32 {
    requested.unwrap_or(50).clamp(1, 100)
}

pub struct Chat {
    store: Arc<dyn Store>,
    writer: MessageWriter,
    bus: SharedBus,
    presence: SharedPresence,
    limits: Limits,
}

impl Chat {
    pub fn new(
        store: Arc<dyn Store>,
        writer: MessageWriter,
        bus: SharedBus,
        presence: SharedPresence,
        limits: Limits,
    ) -> Self {
        Self {
            store,
            writer,
            bus,
            presence,
            limits,
        }
    }

    /// Validates and commits a message, then publishes it to the recipient
    /// and to the sender's other sessions. Returns the stored message once it
    /// is durable; the caller acks with it. A repeated `client_id` returns the
    /// first message and publishes nothing new.
    #[tracing::instrument(skip_all, fields(sender = %sender))]
    pub async fn send(
        &self,
        sender: Uuid,
        origin: Option<SessionId>,
        to: Uuid,
        content: &str,
        client_id: Option<&str>,
    ) -> ApiResult<Message> {
        if to == sender {
            return Err(ApiError::invalid_field("cannot send a message to yourself"));
        }
        let content = Content::parse(content, self.limits.max_content_chars)?;
        let client_id = client_id.map(ClientId::parse).transpose()?;
        let new = NewMessage {
            id: Uuid::now_v7(),
            sender_id: sender,
            receiver_id: to,
            content: content.0,
            client_id: client_id.map(|c| c.0),
            created_at: store::now(),
        };
        match self.writer.write(new).await? {
            InsertOutcome::Created(message) => {
                crate::metrics::message_sent();
                let frame = ServerFrame::Message(MessageFrame::from(&message)).to_json();
                self.publish(vec![
                    (
                        message.receiver_id,
                        Envelope::shared("message", frame.clone(), None),
                    ),
                    (
                        message.sender_id,
                        Envelope::shared("message", frame, origin),
                    ),
                ])
                .await;
                Ok(message)
            }
            InsertOutcome::Duplicate(message) => Ok(message),
            InsertOutcome::RecipientNotFound => Err(ApiError::new(
                ErrorCode::RecipientNotFound,
                format!("no user with id {to}"),
            )),
            InsertOutcome::SenderNotFound => Err(ApiError::internal()),
        }
    }

    /// Marks messages `reader` received as read; each sender hears a
    /// `read_receipt` per message. Others' messages are left alone.
    pub async fn mark_read(&self, reader: Uuid, ids: &[Uuid]) -> ApiResult<usize> {
        let marks = self.store.mark_read(reader, ids, store::now()).await?;
        let events = marks
            .iter()
            .map(|mark| {
                let frame = ServerFrame::ReadReceipt {
                    message_id: mark.message_id,
                    read_by: reader,
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
        match self.store.message(id).await? {
            Some(m) if m.receiver_id == reader => {
                self.mark_read(reader, &[id]).await?;
                Ok(())
            }
            Some(m) if m.sender_id == reader => Err(ApiError::new(
                ErrorCode::Forbidden,
                "only the recipient can mark a message read",
            )),
            _ => Err(ApiError::not_found(format!("no message with id {id}"))),
        }
    }

    /// Relays a typing indicator to a contact's sessions; never stored.
    pub async fn typing(&self, from: Uuid, to: Uuid, is_typing: bool) -> ApiResult<()> {
        if to == from {
            return Err(ApiError::invalid_field("cannot send typing to yourself"));
        }
        if !self.store.is_contact(from, to).await? {
            if self.store.user(to).await?.is_none() {
                return Err(ApiError::new(
                    ErrorCode::RecipientNotFound,
                    format!("no user with id {to}"),
                ));
            }
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "typing indicators go only to people you have a conversation with",
            ));
        }
        let frame = ServerFrame::Typing { from, is_typing };
        self.publish(vec![(to, Envelope::new(&frame, None))]).await;
        Ok(())
    }

    pub async fn sync(
        &self,
        me: Uuid,
        since: Option<Uuid>,
        limit: Option<u32>,
    ) -> ApiResult<Page<Message>> {
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
    /// online, and their contacts are told.
    pub async fn session_opened(&self, user: Uuid, session: SessionId) {
        match self.presence.session_opened(user, session).await {
            Ok(true) => self.presence_changed(user, true).await,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "presence update failed"),
        }
    }

    /// A session closed: the user's last session anywhere makes them
    /// offline, and their contacts are told.
    pub async fn session_closed(&self, user: Uuid, session: SessionId) {
        match self.presence.session_closed(user, session).await {
            Ok(true) => self.presence_changed(user, false).await,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "presence update failed"),
        }
    }

    /// Users whose sessions expired on a dead node.
    pub async fn sweep_presence(&self) {
        match self.presence.sweep().await {
            Ok(gone) => {
                for user in gone {
                    self.presence_changed(user, false).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "presence sweep failed"),
        }
    }

    async fn presence_changed(&self, user: Uuid, online: bool) {
        if let Err(e) = self.store.set_presence(user, online, store::now()).await {
            tracing::warn!(error = %e, "could not record presence");
        }
        let contacts = match self.store.contacts(user).await {
            Ok(contacts) => contacts,
            Err(e) => {
                tracing::warn!(error = %e, "could not load contacts for presence");
                return;
            }
        };
        let frame = if online {
            ServerFrame::UserOnline { user_id: user }
        } else {
            ServerFrame::UserOffline { user_id: user }
        };
        let (kind, json) = (frame.kind(), frame.to_json());
        let events = contacts
            .into_iter()
            .map(|contact| (contact, Envelope::shared(kind, json.clone(), None)))
            .collect();
        self.publish(events).await;
    }

    /// Live delivery is best effort: a failed publish is logged, and the
    /// recipients catch up through `sync`.
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
    }

    #[test]
    fn limits_are_clamped() {
        assert_eq!(page_limit(None), 50);
        assert_eq!(page_limit(Some(0)), 1);
        assert_eq!(page_limit(Some(1000)), 100);
    }
}
