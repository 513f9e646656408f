//! What both pub/sub backends share: the channel naming rule, handing a
//! received event to the hub, and the loop that keeps one subscriber
//! connection alive (one Redis in `redis`, a cluster's shards in `sharded`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Delivery, Envelope};

/// How long a probe of the pub/sub connection may take.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// First wait before reconnecting; doubles up to `BACKOFF_MAX`.
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A user whose interest changed, and who waits to hear it is applied.
pub(super) type InterestRequest = (Uuid, oneshot::Sender<()>);

/// Interest changes applied together, at most: a connect storm asks for
/// thousands of subscriptions a second, and one command for many channels
/// costs Redis and this node about what one for a single channel does.
const INTEREST_BATCH: usize = 1000;

/// `first` and whatever other interest changes have queued behind it (up
/// to `INTEREST_BATCH`): the users, each once, and who waits to hear.
pub(super) fn gather(
    first: InterestRequest,
    interest: &mut mpsc::Receiver<InterestRequest>,
) -> (Vec<Uuid>, Vec<oneshot::Sender<()>>) {
    let mut users = vec![first.0];
    let mut waiting = vec![first.1];
    while waiting.len() < INTEREST_BATCH {
        let Ok((user, done)) = interest.try_recv() else {
            break;
        };
        users.push(user);
        waiting.push(done);
    }
    users.sort_unstable();
    users.dedup();
    (users, waiting)
}

/// Of `users`, those the hub wants and are not subscribed (to subscribe),
/// and those subscribed it no longer wants (to unsubscribe), as the hub
/// stands at this moment: racing first and last sessions end consistent.
pub(super) fn differences(
    users: &[Uuid],
    subscribed: &std::collections::HashSet<Uuid>,
    delivery: &dyn Delivery,
) -> (Vec<Uuid>, Vec<Uuid>) {
    users
        .iter()
        .filter(|u| delivery.wants(**u) != subscribed.contains(*u))
        .partition(|u| !subscribed.contains(*u))
}

/// `<prefix>:user:<uuid>`, the one channel naming rule.
pub(super) fn channel(prefix: &str, user: Uuid) -> String {
    format!("{prefix}:user:{user}")
}

/// Hands one received event to the hub; `channel` names its user.
pub(super) fn dispatch(prefix: &str, delivery: &dyn Delivery, channel: &str, payload: &[u8]) {
    let user = channel
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix(":user:"))
        .and_then(|id| Uuid::parse_str(id).ok());
    let envelope = Envelope::decode(Bytes::copy_from_slice(payload));
    match (user, envelope) {
        (Some(user), Some(envelope)) => delivery.deliver(user, envelope),
        _ => tracing::warn!(channel, "ignoring a malformed bus event"),
    }
}

/// One pub/sub connection's life, which [`keep_listening`] starts again
/// after every failure: one Redis or a cluster.
pub(super) trait Listener: Send + Sync + 'static {
    /// Subscribes to everything wanted, then serves events and interest
    /// changes until the connection fails (`Err`) or the node stops (`Ok`).
    fn listen(
        &self,
        interest: &mut mpsc::Receiver<InterestRequest>,
        shutdown: &CancellationToken,
        first: bool,
        backoff: &mut Duration,
    ) -> impl Future<Output = redis::RedisResult<()>> + Send;
    /// Cleared when a connection is lost, for the readiness probe.
    fn listening(&self) -> &AtomicBool;
}

/// Runs `listener` until the node stops, reconnecting with backoff.
pub(super) async fn keep_listening(
    listener: impl Listener,
    mut interest: mpsc::Receiver<InterestRequest>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let mut first = true;
    loop {
        match listener
            .listen(&mut interest, &shutdown, first, &mut backoff)
            .await
        {
            Ok(()) => return,
            Err(e) => {
                listener.listening().store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, retry_in = ?backoff, "redis pub/sub connection lost");
            }
        }
        first = false;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interest changes queued together are applied together, each user
    /// once, and everyone who waits hears back; past the bound the rest
    /// wait for the next batch.
    #[test]
    fn queued_interest_changes_are_gathered_up_to_the_bound() {
        let (tx, mut rx) = mpsc::channel(INTEREST_BATCH * 2);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut answers = Vec::new();
        let mut ask = |user| {
            let (done, heard) = oneshot::channel();
            tx.try_send((user, done)).unwrap();
            answers.push(heard);
        };
        ask(b);
        ask(a);
        for _ in 0..INTEREST_BATCH + 5 {
            ask(b);
        }
        let first = rx.try_recv().unwrap();
        let (users, waiting) = gather(first, &mut rx);
        let mut both = vec![a, b];
        both.sort_unstable();
        assert_eq!(users, both);
        assert_eq!(waiting.len(), INTEREST_BATCH);
        let first = rx.try_recv().unwrap();
        let (users, waiting) = gather(first, &mut rx);
        assert_eq!((users, waiting.len()), (vec![b], 7));
    }
}
