//! Changes to sent messages: edit, delete for everyone, react, unreact.
//!
//! Each change is checked here (its text) and in the store (who may make
//! it, under the locks that order it), committed in one transaction, and
//! then published to every reader of the message, numbered in each one's
//! sequence like a message: a missed event is healed from storage by the
//! same catch-up, and `sync` from a cursor returns it. The commit and the
//! publish are the group-commit writer's (`writer.rs`), so a caller that
//! goes away (a closed socket, a cancelled request) cannot leave a
//! committed change unpublished.

use uuid::Uuid;

use super::Chat;
use super::text::{ClientId, Content, Emoji};
use crate::bus::SessionId;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::{self, Change, ChangeKind, ChangeOutcome, Message, NewChange};

/// What a change answers: the change (the message as it now stands), or,
/// when there was nothing to do, the message as it is.
#[derive(Debug, Clone)]
pub enum Changed {
    Applied(Change),
    Unchanged(Message),
}

impl Changed {
    pub fn message(&self) -> &Message {
        match self {
            Self::Applied(change) => &change.message,
            Self::Unchanged(message) => message,
        }
    }

    /// The change's id (what a session remembers it acked), if one was made.
    pub fn change_id(&self) -> Option<Uuid> {
        match self {
            Self::Applied(change) => Some(change.id),
            Self::Unchanged(_) => None,
        }
    }

    /// When it happened: the time an `ack` carries.
    pub fn at(&self) -> chrono::DateTime<chrono::Utc> {
        match self {
            Self::Applied(change) => change.at,
            Self::Unchanged(message) => message.updated_at,
        }
    }
}

impl Chat {
    /// Applies `kind` to message `id` as `actor`: the new content of an
    /// edit and the emoji of a reaction are judged here, the rest by the
    /// store. Repeating a `client_id` answers the change already made.
    #[tracing::instrument(skip_all, fields(actor = %actor, kind = kind.as_str()))]
    pub async fn change(
        &self,
        actor: Uuid,
        origin: Option<SessionId>,
        id: Uuid,
        kind: ChangeKind,
        client_id: Option<&str>,
    ) -> ApiResult<Changed> {
        let kind = match kind {
            ChangeKind::Edit { content } => ChangeKind::Edit {
                content: Content::parse(&content, self.limits.max_content_chars)?.0,
            },
            ChangeKind::React { emoji } => ChangeKind::React {
                emoji: Emoji::parse(&emoji)?.0,
            },
            ChangeKind::Unreact { emoji } => ChangeKind::Unreact {
                emoji: Emoji::parse(&emoji)?.0,
            },
            ChangeKind::Delete => ChangeKind::Delete,
        };
        let new = NewChange {
            id: Uuid::now_v7(),
            actor,
            message_id: id,
            kind,
            client_id: client_id.map(ClientId::parse).transpose()?.map(|c| c.0),
            at: store::now(),
            edit_window: self
                .limits
                .edit_window
                .and_then(|w| chrono::Duration::from_std(w).ok()),
            max_reactions: self.limits.max_reactions,
        };
        let verb = new.kind.as_str();
        let outcome = self.writer.change(new, origin).await?;
        let max = self.limits.max_reactions;
        match outcome {
            ChangeOutcome::Applied(stored) => {
                crate::metrics::message_changed(stored.change.kind.as_str());
                Ok(Changed::Applied(stored.change))
            }
            ChangeOutcome::Duplicate(change) => Ok(Changed::Applied(change)),
            ChangeOutcome::Unchanged(message) => Ok(Changed::Unchanged(message)),
            ChangeOutcome::NotFound => Err(ApiError::not_found(format!("no message with id {id}"))),
            ChangeOutcome::NotAllowed if verb == "edit" => {
                Err(ApiError::forbidden("only the sender can edit a message"))
            }
            ChangeOutcome::NotAllowed => Err(ApiError::forbidden(
                "only the sender, or a group's owner or admins, can delete a message",
            )),
            ChangeOutcome::Deleted => Err(ApiError::new(
                ErrorCode::MessageDeleted,
                "the message was deleted",
            )),
            ChangeOutcome::TooLate => Err(ApiError::forbidden(
                "the message can no longer be edited: the edit window has passed",
            )),
            ChangeOutcome::TooManyReactions => Err(ApiError::new(
                ErrorCode::TooManyReactions,
                format!("a message carries at most {max} different emojis"),
            )),
        }
    }
}
