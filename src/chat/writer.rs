//! Group commit: concurrent sends share one transaction, and so do
//! concurrent changes to sent messages.
//!
//! Postgres commits a few thousand single-row transactions a second per
//! connection but tens of thousands of rows when they are batched, so sends
//! queue here and a few writer lanes each take whatever has accumulated (up
//! to `max_batch`) and commit it as one batch. A send is still acknowledged
//! only after its own batch has committed. Changes (edits, deletes,
//! reactions) have lanes of their own, batched the same way: a change holds
//! its readers' rows, which the sends to them wait for, until its commit,
//! so one commit for many changes is one wait for the sends behind them.
//!
//! The lane also publishes what it committed, right after the commit and
//! before anyone is answered: the publish cannot be lost to a caller that
//! went away (a closed socket, a draining node), and a batch's events go to
//! the bus in one hand-off.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{Envelope, Order, SessionId, SharedBus};
use crate::coalesce::{request, spawn_lanes};
use crate::files::Files;
use crate::protocol::{MessageFrame, ServerFrame};
use crate::store::{
    ChangeOutcome, InsertOutcome, NewChange, NewMessage, Store, StoreError, StoreResult, Stored,
    StoredChange, Target,
};
use uuid::Uuid;

/// A message or a change waiting for its batch.
struct Pending<J, O> {
    job: J,
    /// The connection that sent it: it gets an `ack`, not the event.
    origin: Option<SessionId>,
    reply: oneshot::Sender<StoreResult<O>>,
}

type PendingMessage = Pending<NewMessage, InsertOutcome>;
type PendingChange = Pending<NewChange, ChangeOutcome>;

pub struct MessageWriter {
    queue: mpsc::Sender<PendingMessage>,
    changes: mpsc::Sender<PendingChange>,
}

/// What the writer needs besides its queues.
pub struct WriterParts {
    pub store: Arc<dyn Store>,
    pub bus: SharedBus,
    /// Where a deleted message's attachments are removed from.
    pub files: Arc<Files>,
}

impl MessageWriter {
    /// Starts `lanes` writer tasks for messages and as many for changes.
    /// SQLite has one writer at a time, so one lane; Postgres takes
    /// several, each waiting on its own commit while the next batch gathers.
    /// `settle_within`: how long a batch whose commit answer was lost waits
    /// for storage to say which of its messages are stored.
    pub fn start(
        parts: WriterParts,
        lanes: usize,
        max_batch: usize,
        settle_within: Duration,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Self {
        let WriterParts { store, bus, files } = parts;
        let queue = {
            let (store, bus) = (store.clone(), bus.clone());
            spawn_lanes(lanes, max_batch, shutdown.clone(), tasks, move |batch| {
                let (store, bus) = (store.clone(), bus.clone());
                async move { commit(&*store, &bus, batch, settle_within).await }
            })
        };
        let owner = tasks.clone();
        let changes = spawn_lanes(lanes, max_batch, shutdown, tasks, move |batch| {
            let (store, bus, files) = (store.clone(), bus.clone(), files.clone());
            let owner = owner.clone();
            async move { commit_changes(&*store, &bus, (files, &owner), batch).await }
        });
        Self { queue, changes }
    }

    /// Writes one message as part of the next batch; once it is committed
    /// it is published to both participants (but not to `origin`).
    pub async fn write(
        &self,
        message: NewMessage,
        origin: Option<SessionId>,
    ) -> StoreResult<InsertOutcome> {
        submit(&self.queue, message, origin).await
    }

    /// Applies one change as part of the next batch of changes; once it is
    /// committed it is published to every reader of the message (but not
    /// to `origin`), and the files a delete took are removed.
    pub async fn change(
        &self,
        change: NewChange,
        origin: Option<SessionId>,
    ) -> StoreResult<ChangeOutcome> {
        submit(&self.changes, change, origin).await
    }
}

/// Queues `job` for the next batch and waits for its answer.
async fn submit<J, O>(
    queue: &mpsc::Sender<Pending<J, O>>,
    job: J,
    origin: Option<SessionId>,
) -> StoreResult<O> {
    request(queue, "message writer", |reply| Pending {
        job,
        origin,
        reply,
    })
    .await
}

/// Commits a batch of changes, publishes what it applied, answers each
/// change, then has the files deleted messages carried removed.
async fn commit_changes(
    store: &dyn Store,
    bus: &SharedBus,
    (files, tasks): (Arc<Files>, &TaskTracker),
    batch: Vec<PendingChange>,
) {
    let changes: Vec<NewChange> = batch.iter().map(|p| p.job.clone()).collect();
    let outcomes = match store.apply_changes(&changes).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            // Uncertain included: a retry with the same `client_id` settles it.
            tracing::warn!(error = %e, changes = batch.len(), "change batch failed");
            for pending in batch {
                let _ = pending.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let events = batch
        .iter()
        .zip(&outcomes)
        .filter_map(|(pending, outcome)| match outcome {
            ChangeOutcome::Applied(stored) => Some(change_events(stored, pending.origin)),
            _ => None,
        })
        .flatten()
        .collect();
    if let Err(e) = bus.publish(events).await {
        // Readers' nodes catch up from storage.
        tracing::warn!(error = %e, "publish failed");
    }
    let mut removed = Vec::new();
    for (pending, outcome) in batch.into_iter().zip(outcomes) {
        if let ChangeOutcome::Applied(stored) = &outcome {
            removed.extend_from_slice(&stored.removed);
        }
        let _ = pending.reply.send(Ok(outcome));
    }
    if !removed.is_empty() {
        // On a task of its own: a slow file store does not hold up the
        // lane's next commit.
        tasks.spawn(async move { super::Chat::forget_files(&files, &removed).await });
    }
}

/// The events a change makes: one for each reader of the message (the
/// actor's other sessions too), numbered in that reader's sequence. The
/// session that made it gets an `ack` instead.
fn change_events(stored: &StoredChange, origin: Option<SessionId>) -> Vec<(Uuid, Envelope)> {
    let change = &stored.change;
    stored
        .seqs
        .iter()
        .map(|&(user, seq)| {
            let frame = ServerFrame::change(change, seq);
            let exclude = if user == change.actor { origin } else { None };
            (
                user,
                Envelope::new(&frame, exclude).ordered(Order::Seq(seq)),
            )
        })
        .collect()
}

async fn commit(
    store: &dyn Store,
    bus: &SharedBus,
    mut batch: Vec<PendingMessage>,
    settle_within: Duration,
) {
    let batch = &mut batch;
    refuse_blocked(store, batch).await;
    if batch.is_empty() {
        return;
    }
    let messages: Vec<NewMessage> = batch.iter().map(|p| p.job.clone()).collect();
    match store.insert_messages(&messages).await {
        Ok(outcomes) => {
            let events = batch
                .iter()
                .zip(&outcomes)
                .filter_map(|(pending, outcome)| match outcome {
                    InsertOutcome::Created(stored) => Some(events_for(stored, pending.origin)),
                    _ => None,
                })
                .flatten()
                .collect();
            if let Err(e) = bus.publish(events).await {
                // Receiving nodes catch up from storage.
                tracing::warn!(error = %e, "publish failed");
            }
            for (pending, outcome) in batch.drain(..).zip(outcomes) {
                let _ = pending.reply.send(Ok(outcome));
            }
        }
        Err(StoreError::Uncertain(why)) => settle(store, bus, batch, why, settle_within).await,
        Err(e) => {
            tracing::warn!(error = %e, messages = batch.len(), "batch commit failed");
            for pending in batch.drain(..) {
                let _ = pending.reply.send(Err(e.clone()));
            }
        }
    }
}

/// Answers the direct messages whose recipient has blocked their sender
/// exactly as messages to a user that does not exist, and takes them out of
/// the batch: one lookup per batch, not per message.
async fn refuse_blocked(store: &dyn Store, batch: &mut Vec<PendingMessage>) {
    let pairs: Vec<(Uuid, Uuid)> = batch
        .iter()
        .filter_map(|p| match p.job.to {
            Target::User(to) => Some((to, p.job.sender_id)),
            Target::Group(_) => None,
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    let blocked = match store.blocked(&pairs).await {
        Ok(blocked) if blocked.is_empty() => return,
        Ok(blocked) => blocked,
        Err(e) => {
            tracing::warn!(error = %e, messages = batch.len(), "block lookup failed");
            for pending in batch.drain(..) {
                let _ = pending.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let (refused, kept): (Vec<PendingMessage>, Vec<PendingMessage>) =
        batch.drain(..).partition(|p| match p.job.to {
            Target::User(to) => blocked.contains(&(to, p.job.sender_id)),
            Target::Group(_) => false,
        });
    *batch = kept;
    for pending in refused {
        let _ = pending.reply.send(Ok(InsertOutcome::RecipientNotFound));
    }
}

/// The connection died while the batch was being committed, so it may or
/// may not be stored; "not stored, retry" would be a lie for a stored
/// message. Its messages are looked up by id once storage answers again:
/// the stored ones are published and acked as if the commit had answered,
/// the others are truly not stored (`unavailable`). If storage does not
/// answer within `COMMIT_SETTLE_TIMEOUT`, each sender hears
/// `outcome_unknown`: resending with the same `client_id` settles it.
async fn settle(
    store: &dyn Store,
    bus: &SharedBus,
    batch: &mut Vec<PendingMessage>,
    why: String,
    within: Duration,
) {
    tracing::warn!(error = %why, messages = batch.len(), "batch commit outcome unknown; settling by id");
    let ids: Vec<Uuid> = batch.iter().map(|p| p.job.id).collect();
    let writers: Vec<Uuid> = batch.iter().map(|p| p.job.sender_id).collect();
    let deadline = tokio::time::Instant::now() + within;
    let found = loop {
        // Bounded as a whole: the read waits for the lost write to end,
        // which a dead connection PostgreSQL has not noticed can hold up.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, store.stored(&ids, &writers)).await {
            Ok(Ok(found)) => break Some(found),
            Ok(Err(e)) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(error = %e, "could not settle the batch in time");
                break None;
            }
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(250)).await,
            Err(_) => {
                tracing::warn!("could not settle the batch in time: its write has not ended");
                break None;
            }
        }
    };
    let Some(found) = found else {
        for pending in batch.drain(..) {
            let _ = pending.reply.send(Err(StoreError::Uncertain(why.clone())));
        }
        return;
    };
    let mut found: HashMap<Uuid, Stored> = found.into_iter().map(|s| (s.message.id, s)).collect();
    let events = batch
        .iter()
        .filter_map(|p| found.get(&p.job.id).map(|s| events_for(s, p.origin)))
        .flatten()
        .collect();
    if let Err(e) = bus.publish(events).await {
        tracing::warn!(error = %e, "publish failed");
    }
    tracing::info!(
        stored = found.len(),
        of = batch.len(),
        "settled a batch whose commit answer was lost"
    );
    for pending in batch.drain(..) {
        let outcome = match found.remove(&pending.job.id) {
            Some(stored) => Ok(InsertOutcome::Created(stored)),
            None => Err(StoreError::Unavailable(why.clone())),
        };
        let _ = pending.reply.send(outcome);
    }
}

/// The events a new message makes: one for each participant's channel
/// (the recipient, or every member of a group, and the sender for their
/// other devices), each numbered in that user's own sequence. The
/// sending connection gets an ack instead.
fn events_for(stored: &Stored, origin: Option<SessionId>) -> Vec<(uuid::Uuid, Envelope)> {
    let m = &stored.message;
    stored
        .seqs
        .iter()
        .map(|&(user, seq)| {
            let frame = ServerFrame::Message(MessageFrame::numbered(m, seq));
            let exclude = if user == m.sender_id { origin } else { None };
            (
                user,
                Envelope::new(&frame, exclude).ordered(Order::Seq(seq)),
            )
        })
        .collect()
}
