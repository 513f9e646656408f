//! Attachments: announced, uploaded straight to the file store, sent on a
//! message, fetched by those who can read the message. The node checks and
//! signs; the bytes go between the client and the store.

use uuid::Uuid;

use super::Chat;
use super::text::{BadName, NAME_RULE, name};
use crate::config::FilesConfig;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::files::{Download, FileError, Files, SignedUrl};
use crate::store::{self, Attachment, NewAttachment, StoredAttachment};

/// Files one message may carry.
pub const MAX_PER_MESSAGE: usize = 10;
/// Files a user may have announced and not sent within one
/// `ATTACHMENT_URL_TTL` (older ones no longer count: their upload URLs
/// have expired).
pub const MAX_PENDING: u32 = 20;
/// Characters of a file's name.
const MAX_NAME_CHARS: usize = 255;
/// How long an attachment announced and never sent is kept: then its row
/// and bytes are swept.
pub const UNSENT_KEPT: chrono::Duration = chrono::Duration::hours(24);
/// How long after its announcement an attachment may still be sent: an
/// hour before the sweep may take it, so no send races the sweep.
const SENDABLE_FOR: chrono::Duration = chrono::Duration::hours(23);
/// Attachments one sweep forgets at most; the next sweep takes the rest.
const SWEEP_BATCH: u32 = 500;

/// What a client announces before uploading.
pub struct Announced {
    pub name: String,
    pub size: i64,
    pub content_type: String,
    pub width: Option<i32>,
    pub height: Option<i32>,
}

impl Chat {
    pub fn files(&self) -> &Files {
        &self.files
    }

    fn files_config(&self) -> &FilesConfig {
        &self.files_config
    }

    /// Records an attachment and says where to upload its bytes.
    pub async fn announce_attachment(
        &self,
        owner: Uuid,
        a: Announced,
    ) -> ApiResult<(Uuid, SignedUrl)> {
        let config = self.files_config();
        let name = match name(&a.name, MAX_NAME_CHARS) {
            Ok(name) => name,
            Err(BadName::Empty) => return Err(ApiError::invalid_field("name is empty")),
            Err(BadName::Invalid) => {
                return Err(ApiError::invalid_field(format!(
                    "name must be at most {MAX_NAME_CHARS} characters, {NAME_RULE}"
                )));
            }
        };
        if a.size < 1 {
            return Err(ApiError::invalid_field("size must be at least 1 byte"));
        }
        if a.size as u64 > config.max_bytes {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("attachments are at most {} bytes", config.max_bytes),
            ));
        }
        let content_type = a.content_type.trim().to_ascii_lowercase();
        if !config.accepts(&content_type) {
            return Err(ApiError::invalid_field(format!(
                "content_type {content_type:?} is not accepted here; accepted: {}",
                config.types.join(", ")
            )));
        }
        let image = content_type.starts_with("image/");
        let dimension = |d: Option<i32>| match d {
            Some(_) if !image => Err(ApiError::invalid_field(
                "width and height are for images only",
            )),
            Some(v) if !(1..=65_535).contains(&v) => Err(ApiError::invalid_field(
                "width and height must be 1 to 65535 pixels",
            )),
            other => Ok(other),
        };
        let new = NewAttachment {
            id: Uuid::now_v7(),
            owner,
            name,
            size: a.size,
            content_type,
            width: dimension(a.width)?,
            height: dimension(a.height)?,
            at: store::now(),
        };
        // Signed first: with the store unavailable nothing is recorded.
        let url = self
            .files
            .upload_url(new.id, config.url_ttl)
            .map_err(FileError::into_api)?;
        let since = new.at - chrono::Duration::from_std(config.url_ttl).unwrap_or_default();
        if !self
            .store
            .create_attachment(&new, MAX_PENDING, since)
            .await?
        {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "{MAX_PENDING} attachments are waiting to be sent; send them, or announce more once their upload links expire"
                ),
            ));
        }
        Ok((new.id, url))
    }

    /// A download URL for `user`, who must be able to read the message the
    /// attachment is on (or own it, before it is sent).
    pub async fn attachment_url(&self, user: Uuid, id: Uuid) -> ApiResult<SignedUrl> {
        let a = self.readable_attachment(user, id).await?.attachment;
        let how = Download {
            name: &a.name,
            content_type: &a.content_type,
        };
        self.files
            .download_url(id, &how, self.files_config().url_ttl)
            .map_err(FileError::into_api)
    }

    async fn readable_attachment(&self, user: Uuid, id: Uuid) -> ApiResult<StoredAttachment> {
        let unknown = || ApiError::not_found(format!("no attachment with id {id}"));
        let a = self.store.attachment(id).await?.ok_or_else(unknown)?;
        let readable = match a.message_id {
            None => a.owner == user,
            Some(message) => match self.store.message(message).await? {
                Some(m) if m.receiver_id.is_some() => {
                    m.sender_id == user || m.receiver_id == Some(user)
                }
                Some(_) => self.store.seq_of(user, message).await?.is_some(),
                None => false,
            },
        };
        if readable { Ok(a) } else { Err(unknown()) }
    }

    /// The announced size of an attachment still to be uploaded (the
    /// embedded store refuses more).
    pub async fn attachment_size(&self, id: Uuid) -> ApiResult<u64> {
        match self.store.attachment(id).await? {
            Some(a) if a.message_id.is_none() => Ok(a.attachment.size as u64),
            _ => Err(ApiError::not_found(format!(
                "no attachment with id {id} to upload"
            ))),
        }
    }

    /// An attachment's name and type, for serving it.
    pub async fn attachment_kind(&self, id: Uuid) -> ApiResult<(String, String)> {
        match self.store.attachment(id).await? {
            Some(a) => Ok((a.attachment.name, a.attachment.content_type)),
            None => Err(ApiError::not_found(format!("no attachment with id {id}"))),
        }
    }

    /// The attachments a message from `sender` may carry: the sender's
    /// own, not on a message yet, and uploaded in full.
    pub(super) async fn attachments_to_send(
        &self,
        sender: Uuid,
        ids: &[Uuid],
    ) -> ApiResult<Vec<Attachment>> {
        if ids.len() > MAX_PER_MESSAGE {
            return Err(ApiError::invalid_field(format!(
                "a message carries at most {MAX_PER_MESSAGE} attachments"
            )));
        }
        let mut found = Vec::with_capacity(ids.len());
        for &id in ids {
            let unknown = || ApiError::not_found(format!("no attachment with id {id}"));
            let a = self.store.attachment(id).await?.ok_or_else(unknown)?;
            if a.owner != sender {
                return Err(unknown());
            }
            if a.message_id.is_some() || found.iter().any(|f: &Attachment| f.id == id) {
                return Err(ApiError::invalid_field(format!(
                    "attachment {id} is already on a message"
                )));
            }
            if store::now() - a.announced_at > SENDABLE_FOR {
                return Err(ApiError::invalid_field(format!(
                    "attachment {id} was announced more than 23 hours ago; announce and upload it again"
                )));
            }
            let uploaded = self.files.uploaded(id).await.map_err(FileError::into_api)?;
            match uploaded {
                Some(size) if size == a.attachment.size as u64 => {}
                Some(size) => {
                    return Err(ApiError::invalid_field(format!(
                        "attachment {id} was announced as {} bytes and {size} were uploaded",
                        a.attachment.size
                    )));
                }
                None => {
                    return Err(ApiError::invalid_field(format!(
                        "attachment {id} is not uploaded yet"
                    )));
                }
            }
            found.push(a.attachment);
        }
        Ok(found)
    }

    /// Removes the bytes of attachments whose message was deleted. A
    /// failure is logged: the rows are gone, so nobody can fetch them.
    pub(super) async fn forget_files(files: &Files, ids: &[Uuid]) {
        if ids.is_empty() {
            return;
        }
        if let Err(e) = files.delete(ids).await {
            tracing::warn!(error = %e, files = ids.len(), "could not delete attachments' bytes");
        }
    }

    /// Forgets the attachments announced more than [`UNSENT_KEPT`] ago and
    /// never sent, rows and bytes: how many.
    pub async fn sweep_unsent_attachments(&self) -> ApiResult<usize> {
        let before = store::now() - UNSENT_KEPT;
        let mut swept = 0;
        loop {
            let ids = self
                .store
                .drop_unsent_attachments(before, SWEEP_BATCH)
                .await?;
            Self::forget_files(&self.files, &ids).await;
            swept += ids.len();
            if ids.len() < SWEEP_BATCH as usize {
                return Ok(swept);
            }
        }
    }
}

/// Sweeps unsent attachments every `every` until shutdown (each node does;
/// a row is forgotten once, by whichever node deletes it).
pub async fn sweep_unsent(
    chat: std::sync::Arc<Chat>,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    super::every(every, shutdown, || async {
        match chat.sweep_unsent_attachments().await {
            Ok(0) => {}
            Ok(swept) => tracing::info!(swept, "forgot attachments announced and never sent"),
            Err(e) => tracing::warn!(error = %e.message, "could not sweep unsent attachments"),
        }
    })
    .await;
}
