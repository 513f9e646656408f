//! Catch-up: fills gaps in live delivery from storage.
//!
//! Live delivery crosses Redis pub/sub, which forgets what it could not
//! deliver. Every message frame carries the receiving user's sequence
//! number, and the hub keeps a cursor per local user; this task reads the
//! cursors' first floors, and pushes whatever storage has beyond a floor
//! when a gap stays open past `GAP_GRACE`, when a subscription is confirmed
//! late, and for every user after the bus reconnects. Work is coalesced per
//! user in the hub and done in bounded batches by this one task, so a Redis
//! blip on a node with many sessions costs a few set-based queries, not a
//! stampede.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Hub;
use super::hub::Missed;
use crate::bus::{Envelope, Order};
use crate::protocol::{MessageFrame, ServerFrame};
use crate::store::{Store, StoreResult};

/// Users per sequence-number lookup.
const BATCH: usize = 500;
/// Messages pushed to one user per round; more wait for the next round so
/// the session's queue drains in between instead of overflowing.
const PER_USER: u32 = 100;
/// Pause after a round that left work behind (a failure or a long gap).
const RETRY_AFTER: Duration = Duration::from_millis(500);

pub async fn run(hub: Arc<Hub>, store: Arc<dyn Store>, grace: Duration, stop: CancellationToken) {
    let mut gaps: VecDeque<(std::time::Instant, Uuid)> = VecDeque::new();
    loop {
        let next_gap = gaps.front().map(|(at, _)| Instant::from_std(*at + grace));
        tokio::select! {
            () = stop.cancelled() => return,
            () = hub.work_ready.notified() => {}
            () = sleep_until(next_gap.unwrap_or_else(Instant::now)), if next_gap.is_some() => {}
        }
        let work = hub.take_work();
        gaps.extend(work.gaps);
        let mut heal = work.heal;
        if work.everyone {
            heal.extend(hub.users());
        }
        heal.extend(due_gaps(&hub, &mut gaps, grace));

        let mut again = false;
        if let Err(e) = read_floors(&hub, &*store, work.floors.clone(), &mut heal).await {
            tracing::warn!(error = %e, "catch-up could not read cursors; retrying");
            for user in work.floors {
                hub.want_floor(user);
            }
            again = true;
        }
        match fill(&hub, &*store, &heal).await {
            Ok(more) => {
                for user in &more {
                    hub.request_heal(*user);
                }
                again |= !more.is_empty();
            }
            Err(e) => {
                tracing::warn!(error = %e, users = heal.len(), "catch-up failed; retrying");
                for user in heal {
                    hub.request_heal(user);
                }
                again = true;
            }
        }
        if again {
            tokio::select! {
                () = stop.cancelled() => return,
                () = sleep(RETRY_AFTER) => {}
            }
        }
    }
}

/// Users whose gap has stayed open for the whole grace period. Out-of-order
/// arrival closes most gaps well before that.
fn due_gaps(
    hub: &Hub,
    gaps: &mut VecDeque<(std::time::Instant, Uuid)>,
    grace: Duration,
) -> Vec<Uuid> {
    let now = std::time::Instant::now();
    let mut due = Vec::new();
    while let Some(&(at, user)) = gaps.front() {
        if at + grace > now {
            break;
        }
        gaps.pop_front();
        match hub.cursor(user).and_then(|c| c.gap_since) {
            Some(since) if since + grace <= now => due.push(user),
            // The gap closed and another opened since: wait for its grace.
            Some(since) => gaps.push_back((since, user)),
            None => {}
        }
    }
    due
}

/// Reads the first floor of users whose first session here just opened: the
/// latest number they had then. A user whose subscription was confirmed
/// after the read may have missed something in between, so is healed.
async fn read_floors(
    hub: &Hub,
    store: &dyn Store,
    users: HashSet<Uuid>,
    heal: &mut HashSet<Uuid>,
) -> StoreResult<()> {
    let users: Vec<Uuid> = users.into_iter().collect();
    for chunk in users.chunks(BATCH) {
        let live_before: Vec<bool> = chunk
            .iter()
            .map(|u| hub.cursor(*u).is_some_and(|c| c.live))
            .collect();
        let seqs = store.msg_seqs(chunk).await?;
        for (user, seq) in seqs {
            hub.raise_floor(user, seq, true);
            let was_live = chunk
                .iter()
                .position(|u| *u == user)
                .is_some_and(|i| live_before[i]);
            if !was_live && hub.cursor(user).is_some_and(|c| c.live) {
                heal.insert(user);
            }
        }
    }
    Ok(())
}

/// Pushes what storage has beyond each user's floor. Returns users with
/// more left than one round delivers.
async fn fill(hub: &Hub, store: &dyn Store, users: &HashSet<Uuid>) -> StoreResult<Vec<Uuid>> {
    let users: Vec<Uuid> = users.iter().copied().collect();
    let mut more = Vec::new();
    for chunk in users.chunks(BATCH) {
        // One cheap lookup tells which users have anything new at all.
        for (user, latest) in store.msg_seqs(chunk).await? {
            let Some(floor) = hub.cursor(user).and_then(|c| c.floor) else {
                continue; // its floor is read first, then it is healed
            };
            if latest <= floor {
                hub.raise_floor(user, latest, false);
                continue;
            }
            let page = store.messages_after(user, floor, PER_USER).await?;
            let missed: Vec<Missed> = page
                .items
                .iter()
                .map(|s| Missed {
                    seq: s.seq,
                    id: s.message.id,
                    sender: s.message.sender_id,
                    envelope: Envelope::new(&ServerFrame::Message(MessageFrame::from(s)), None)
                        .ordered(Order::Seq(s.seq)),
                })
                .collect();
            hub.deliver_missed(user, &missed);
            if page.has_more {
                more.push(user);
            } else {
                // Storage showed everything up to here: numbers it did not
                // return are holes, never to be filled.
                let top = page.items.last().map_or(latest, |s| s.seq.max(latest));
                hub.raise_floor(user, top, false);
            }
        }
    }
    Ok(more)
}
