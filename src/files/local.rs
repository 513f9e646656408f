//! Attachments under a directory, served by the node itself.
//!
//! The URLs it hands out carry an expiry and an HMAC of (action, id,
//! expiry) under a key kept in the directory (made on first start), so
//! they work like presigned S3 URLs: whoever holds one may use it until it
//! expires, and nobody can make one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use super::{Download, FileError, Files, SignedUrl, expiry};
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

pub struct LocalFiles {
    dir: PathBuf,
    /// Read (or made) on first use: a node whose directory cannot be
    /// written (a read-only container without `S3_BUCKET`) still starts,
    /// and only attachments are unavailable.
    key: std::sync::OnceLock<Vec<u8>>,
}

impl LocalFiles {
    pub fn open(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            key: std::sync::OnceLock::new(),
        }
    }

    /// The signing key, shared by every node that shares the directory:
    /// the first to start makes it (linked into place whole, so a node
    /// starting at the same time reads that one, never half of it).
    fn key(&self) -> Result<&[u8], FileError> {
        if let Some(key) = self.key.get() {
            return Ok(key);
        }
        let unavailable = |e: std::io::Error| {
            FileError::Unavailable(format!("attachments directory {}: {e}", self.dir.display()))
        };
        std::fs::create_dir_all(&self.dir).map_err(unavailable)?;
        let key_file = self.dir.join(".signing-key");
        if !key_file.exists() {
            let made = self.dir.join(format!(".signing-key.{}", Uuid::now_v7()));
            let key: [u8; 32] = rand::random();
            std::fs::write(&made, key).map_err(unavailable)?;
            // Fails if another node linked its key first: then that one.
            let _ = std::fs::hard_link(&made, &key_file);
            let _ = std::fs::remove_file(&made);
        }
        let key = std::fs::read(&key_file).map_err(unavailable)?;
        if key.len() != 32 {
            return Err(FileError::Unavailable(format!(
                "{} is not a 32-byte key",
                key_file.display()
            )));
        }
        Ok(self.key.get_or_init(|| key))
    }

    fn path(&self, id: Uuid) -> PathBuf {
        self.dir.join(id.to_string())
    }

    fn signature(&self, action: &str, id: Uuid, expires: i64) -> Result<String, FileError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key()?).expect("any key length");
        mac.update(format!("{action}\n{id}\n{expires}").as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    fn signed(&self, action: &str, id: Uuid, ttl: Duration) -> Result<SignedUrl, FileError> {
        let expires_at = expiry(ttl);
        let expires = expires_at.timestamp();
        let sig = self.signature(action, id, expires)?;
        Ok(SignedUrl {
            url: format!("/api/v1/files/{id}?expires={expires}&signature={sig}"),
            expires_at,
        })
    }

    pub fn upload_url(&self, id: Uuid, ttl: Duration) -> Result<SignedUrl, FileError> {
        self.signed("put", id, ttl)
    }

    pub fn download_url(&self, id: Uuid, ttl: Duration) -> Result<SignedUrl, FileError> {
        self.signed("get", id, ttl)
    }

    /// Whether a URL's signature and expiry are good for `action`.
    fn check(&self, action: &str, id: Uuid, q: &Signed) -> Result<(), ApiError> {
        let good = self
            .signature(action, id, q.expires)
            .map_err(|e| e.into_api())?;
        // Compared in constant time: the signature is a secret until used.
        let same = good.len() == q.signature.len()
            && good
                .bytes()
                .zip(q.signature.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(ApiError::forbidden("this link is not valid"));
        }
        if chrono::Utc::now().timestamp() > q.expires {
            return Err(ApiError::forbidden("this link has expired"));
        }
        Ok(())
    }

    pub async fn uploaded(&self, id: Uuid) -> Result<Option<u64>, FileError> {
        match tokio::fs::metadata(self.path(id)).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FileError::Unavailable(e.to_string())),
        }
    }

    pub async fn delete(&self, id: Uuid) -> Result<(), FileError> {
        match tokio::fs::remove_file(self.path(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(FileError::Unavailable(e.to_string())),
        }
    }
}

/// `Content-Disposition` for a download: pictures show inline, anything
/// else is saved under its name (never shown as a page of this origin).
pub fn disposition(how: &Download<'_>) -> String {
    let kind = if how.content_type.starts_with("image/") {
        "inline"
    } else {
        "attachment"
    };
    // RFC 5987: the name percent-encoded, whatever characters it holds.
    let encoded: String = how
        .name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("{kind}; filename*=UTF-8''{encoded}")
}

#[derive(Deserialize)]
struct Signed {
    expires: i64,
    signature: String,
}

/// `/api/v1/files/{id}`: the URLs this store hands out. Not part of the
/// REST API (no token: the signature is the permission), so they are not
/// in its document, as an object store's URLs would not be.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/files/{id}", axum::routing::put(put).get(get))
}

fn local(chat: &crate::chat::Chat) -> Result<&LocalFiles, ApiError> {
    match chat.files() {
        Files::Local(f) => Ok(f),
        Files::S3(_) => Err(ApiError::not_found("attachments are in object storage")),
    }
}

/// Stores an upload: at most the size announced when the attachment was
/// created, written beside its final name and moved there once complete.
async fn put(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<Uuid>,
    Query(q): Query<Signed>,
    body: Body,
) -> Response {
    let chat = &state.0.chat;
    let result = async {
        let files = local(chat)?;
        files.check("put", id, &q)?;
        let size = chat.attachment_size(id).await?;
        let partial = files.dir.join(format!("{id}.part"));
        let mut out = tokio::fs::File::create(&partial)
            .await
            .map_err(|_| ApiError::internal())?;
        let mut written: u64 = 0;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| ApiError::invalid_field("the upload broke off"))?;
            written += chunk.len() as u64;
            if written > size {
                drop(out);
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("the upload is larger than the {size} bytes announced"),
                ));
            }
            out.write_all(&chunk)
                .await
                .map_err(|_| ApiError::internal())?;
        }
        out.flush().await.map_err(|_| ApiError::internal())?;
        tokio::fs::rename(&partial, files.path(id))
            .await
            .map_err(|_| ApiError::internal())?;
        Ok::<_, ApiError>(())
    }
    .await;
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Serves a download with the type and name stored for it.
async fn get(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<Uuid>,
    Query(q): Query<Signed>,
) -> Response {
    let chat = &state.0.chat;
    let result = async {
        let files = local(chat)?;
        files.check("get", id, &q)?;
        let (name, content_type) = chat.attachment_kind(id).await?;
        let bytes = tokio::fs::read(files.path(id))
            .await
            .map_err(|_| ApiError::not_found(format!("no attachment with id {id}")))?;
        let how = Download {
            name: &name,
            content_type: &content_type,
        };
        let mut response = Response::new(Body::from(bytes));
        let headers = response.headers_mut();
        let value = |v: &str| HeaderValue::from_str(v).map_err(|_| ApiError::internal());
        headers.insert(header::CONTENT_TYPE, value(&content_type)?);
        headers.insert(header::CONTENT_DISPOSITION, value(&disposition(&how))?);
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, value("nosniff")?);
        headers.insert(header::CACHE_CONTROL, value("private, max-age=300")?);
        Ok::<_, ApiError>(response)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
