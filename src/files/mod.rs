//! Where attachment bytes live. Clients upload and download them directly
//! through URLs that expire; the node hands out the URLs and never carries
//! the bytes of an object store.
//!
//! [`s3::S3Files`] is production: any S3-compatible store, reached through
//! presigned URLs. [`local::LocalFiles`] is the embedded default: files under
//! a directory, served by the node itself at `/api/v1/files/{id}` with the
//! same contract (URLs signed with a key of the node's, that expire).

pub mod local;
pub mod s3;

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::{FileStoreConfig, FilesConfig};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("file store unavailable: {0}")]
    Unavailable(String),
}

impl FileError {
    /// What a client hears: the details go to the log only.
    pub fn into_api(self) -> crate::error::ApiError {
        tracing::warn!(error = %self, "attachments unavailable");
        crate::error::ApiError::new(
            crate::error::ErrorCode::Unavailable,
            "attachments are unavailable right now; retry later",
        )
    }
}

/// A URL that works until `expires_at`.
#[derive(Debug, Clone)]
pub struct SignedUrl {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// How a download presents itself: its type, and its name when saved.
pub struct Download<'a> {
    pub name: &'a str,
    pub content_type: &'a str,
}

pub enum Files {
    Local(local::LocalFiles),
    S3(s3::S3Files),
}

impl Files {
    pub fn open(config: &FilesConfig, http: reqwest::Client) -> anyhow::Result<Self> {
        Ok(match &config.store {
            FileStoreConfig::Local(dir) => Self::Local(local::LocalFiles::open(dir)),
            FileStoreConfig::S3 {
                endpoint,
                bucket,
                region,
                access_key,
                secret_key,
            } => Self::S3(s3::S3Files::new(
                endpoint,
                bucket,
                region,
                access_key.expose(),
                secret_key.expose(),
                http,
            )?),
        })
    }

    /// Where the client PUTs the bytes of attachment `id`.
    pub fn upload_url(&self, id: Uuid, ttl: Duration) -> Result<SignedUrl, FileError> {
        match self {
            Self::Local(f) => f.upload_url(id, ttl),
            Self::S3(f) => Ok(f.upload_url(id, ttl)),
        }
    }

    /// Where the client GETs them.
    pub fn download_url(
        &self,
        id: Uuid,
        how: &Download<'_>,
        ttl: Duration,
    ) -> Result<SignedUrl, FileError> {
        match self {
            Self::Local(f) => f.download_url(id, ttl),
            Self::S3(f) => Ok(f.download_url(id, how, ttl)),
        }
    }

    /// The size of what was uploaded for `id`; `None` if nothing was.
    pub async fn uploaded(&self, id: Uuid) -> Result<Option<u64>, FileError> {
        match self {
            Self::Local(f) => f.uploaded(id).await,
            Self::S3(f) => f.uploaded(id).await,
        }
    }

    /// Removes what was uploaded for each of `ids` (gone already is fine).
    pub async fn delete(&self, ids: &[Uuid]) -> Result<(), FileError> {
        for &id in ids {
            match self {
                Self::Local(f) => f.delete(id).await?,
                Self::S3(f) => f.delete(id).await?,
            }
        }
        Ok(())
    }
}

/// The time a URL valid for `ttl` from now stops working.
fn expiry(ttl: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(15))
}
