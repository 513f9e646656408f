//! Keeping history by the week: the coming weeks ready to write to, and the
//! weeks older than `MESSAGE_RETENTION` gone (see `store::weeks`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::Chat;
use crate::error::ApiResult;
use crate::store::Expired;

impl Chat {
    /// Prepares the weeks ahead of `now` and, with a retention, removes
    /// every week that ended more than `retention` before it, bytes of its
    /// attachments included.
    pub async fn keep_history(
        &self,
        now: DateTime<Utc>,
        retention: Option<Duration>,
    ) -> ApiResult<Expired> {
        self.store.prepare_weeks(now).await?;
        let Some(retention) = retention else {
            return Ok(Expired::default());
        };
        let keep = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let Some(before) = now.checked_sub_signed(keep) else {
            return Ok(Expired::default());
        };
        let expired = self.store.expire_messages(before).await?;
        Self::forget_files(&self.files, &expired.files).await;
        Ok(expired)
    }
}

/// Keeps history every `every` until shutdown, starting at once. Every node
/// runs it; the database serializes them, and a week is removed once.
pub async fn keep_history(
    chat: Arc<Chat>,
    retention: Option<Duration>,
    every: Duration,
    shutdown: CancellationToken,
) {
    super::every(every, shutdown, || async {
        match chat.keep_history(crate::store::now(), retention).await {
            Ok(Expired { messages: 0, .. }) => {}
            Ok(expired) => tracing::info!(
                messages = expired.messages,
                files = expired.files.len(),
                "expired messages past MESSAGE_RETENTION"
            ),
            Err(e) => tracing::warn!(error = %e.message, "could not keep history by the week"),
        }
    })
    .await;
}
