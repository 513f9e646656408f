//! Attachments in an S3-compatible store. Every request, the node's own
//! (`HEAD`, `DELETE`) and the clients' (`PUT`, `GET`), goes to a URL
//! presigned here (AWS Signature V4, in the query string), so no SDK is
//! needed: the node's requests are plain HTTP over its own client.

use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use uuid::Uuid;

use super::{Download, FileError, SignedUrl, expiry};

/// The node's own requests: a short window, as they are sent at once.
const OWN_REQUEST: Duration = Duration::from_secs(60);

pub struct S3Files {
    bucket: Bucket,
    credentials: Credentials,
    http: reqwest::Client,
}

impl S3Files {
    pub fn new(
        endpoint: &str,
        bucket: &str,
        region: &str,
        access_key: &str,
        secret_key: &str,
        http: reqwest::Client,
    ) -> anyhow::Result<Self> {
        let endpoint = endpoint.parse()?;
        // Path style works with every S3-compatible server (and with AWS).
        let bucket = Bucket::new(
            endpoint,
            UrlStyle::Path,
            bucket.to_owned(),
            region.to_owned(),
        )?;
        Ok(Self {
            bucket,
            credentials: Credentials::new(access_key, secret_key),
            http,
        })
    }

    fn key(id: Uuid) -> String {
        format!("attachments/{id}")
    }

    pub fn upload_url(&self, id: Uuid, ttl: Duration) -> SignedUrl {
        let key = Self::key(id);
        let url = self
            .bucket
            .put_object(Some(&self.credentials), &key)
            .sign(ttl);
        SignedUrl {
            url: url.to_string(),
            expires_at: expiry(ttl),
        }
    }

    /// The stored type and name override whatever the uploader sent with
    /// the bytes: a file uploaded as `text/html` is not served as a page.
    pub fn download_url(&self, id: Uuid, how: &Download<'_>, ttl: Duration) -> SignedUrl {
        let key = Self::key(id);
        let disposition = super::local::disposition(how);
        let mut action = self.bucket.get_object(Some(&self.credentials), &key);
        action
            .query_mut()
            .insert("response-content-type", how.content_type.to_owned());
        action
            .query_mut()
            .insert("response-content-disposition", disposition);
        SignedUrl {
            url: action.sign(ttl).to_string(),
            expires_at: expiry(ttl),
        }
    }

    pub async fn uploaded(&self, id: Uuid) -> Result<Option<u64>, FileError> {
        let key = Self::key(id);
        let url = self
            .bucket
            .head_object(Some(&self.credentials), &key)
            .sign(OWN_REQUEST);
        let response = self
            .http
            .head(url.as_str())
            .send()
            .await
            .map_err(|e| FileError::Unavailable(e.to_string()))?;
        match response.status().as_u16() {
            404 => Ok(None),
            200 => Ok(response
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            other => Err(FileError::Unavailable(format!("HEAD answered {other}"))),
        }
    }

    pub async fn delete(&self, id: Uuid) -> Result<(), FileError> {
        let key = Self::key(id);
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), &key)
            .sign(OWN_REQUEST);
        let response = self
            .http
            .delete(url.as_str())
            .send()
            .await
            .map_err(|e| FileError::Unavailable(e.to_string()))?;
        match response.status().as_u16() {
            200 | 204 | 404 => Ok(()),
            other => Err(FileError::Unavailable(format!("DELETE answered {other}"))),
        }
    }
}
