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
use crate::protocol::ServerFrame;
use crate::store::{Entry, Store, StoreResult};

/// Users per sequence-number lookup.
const BATCH: usize = 500;
/// Messages pushed to one user per round; more wait for the next round so
/// the session's queue drains in between instead of overflowing.
const PER_USER: u32 = 100;
/// Pause after a round that left work behind (a failure or a long gap).
const RETRY_AFTER: Duration = Duration::from_millis(500);

pub async fn run(hub: Arc<Hub>, store: Arc<dyn Store>, grace: Duration, stop: CancellationToken) {
    let mut gaps: VecDeque<(std::time::Instant, Uuid)> = VecDeque::new();
    // First floors read, each applied once `grace` has passed since its
    // reading (oldest first).
    let mut readings: VecDeque<(std::time::Instant, Uuid, i64)> = VecDeque::new();
    loop {
        let next_gap = gaps.front().map(|(at, _)| *at);
        let next_reading = readings.front().map(|(at, _, _)| *at);
        let next = [next_gap, next_reading]
            .into_iter()
            .flatten()
            .min()
            .map(|at| Instant::from_std(at + grace));
        tokio::select! {
            () = stop.cancelled() => return,
            () = hub.work_ready.notified() => {}
            () = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
        }
        let work = hub.take_work();
        gaps.extend(work.gaps);
        let mut heal = work.heal;
        if work.everyone {
            heal.extend(hub.users());
        }
        heal.extend(due_gaps(&hub, &mut gaps, grace));
        heal.extend(apply_readings(&hub, &mut readings, grace));

        let mut again = false;
        let floors = floors_to_read(&hub, work.floors, &readings);
        match read_floors(&*store, floors.clone()).await {
            Ok(read) => readings.extend(read),
            Err(e) => {
                tracing::warn!(error = %e, "catch-up could not read cursors; retrying");
                for user in floors {
                    hub.want_floor(user);
                }
                again = true;
            }
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

/// The users among `wanted` whose floor is still to be read: not those gone
/// since, nor those whose floor is known by now, nor those with a reading
/// already waiting out its grace (which will serve the newer session too:
/// an older floor only means more is caught up, and repeats are dropped).
/// A user who reconnects in a loop so costs one reading per grace period,
/// and `readings` holds at most one entry per local user.
fn floors_to_read(
    hub: &Hub,
    wanted: HashSet<Uuid>,
    readings: &VecDeque<(std::time::Instant, Uuid, i64)>,
) -> HashSet<Uuid> {
    let mut floors: HashSet<Uuid> = wanted
        .into_iter()
        .filter(|u| hub.cursor(*u).is_some_and(|c| c.floor.is_none()))
        .collect();
    if !floors.is_empty() {
        for (_, user, _) in readings {
            floors.remove(user);
        }
    }
    floors
}

/// Reads the latest number of users whose first session here opened
/// without knowing it: where live delivery starts for them, once applied.
async fn read_floors(
    store: &dyn Store,
    users: HashSet<Uuid>,
) -> StoreResult<Vec<(std::time::Instant, Uuid, i64)>> {
    let users: Vec<Uuid> = users.into_iter().collect();
    let mut read = Vec::with_capacity(users.len());
    for chunk in users.chunks(BATCH) {
        let at = std::time::Instant::now();
        read.extend(
            store
                .msg_seqs(chunk)
                .await?
                .into_iter()
                .map(|(user, seq)| (at, user, seq)),
        );
    }
    Ok(read)
}

/// Applies the first floors read at least `grace` ago, and returns their
/// users, to be healed. A session is usually subscribed before its floor is
/// read (see `join`), so frames for messages committed just before the
/// reading can still be on their way; set at once, the floor would drop
/// them as history. Waiting out the grace lets them land first (ahead of a
/// floor not yet known), and the heal that follows delivers whatever
/// committed beyond the floor and did not arrive.
fn apply_readings(
    hub: &Hub,
    readings: &mut VecDeque<(std::time::Instant, Uuid, i64)>,
    grace: Duration,
) -> Vec<Uuid> {
    let now = std::time::Instant::now();
    let mut due = Vec::new();
    while let Some(&(at, user, seq)) = readings.front() {
        if at + grace > now {
            break;
        }
        readings.pop_front();
        hub.raise_floor(user, seq, true);
        due.push(user);
    }
    due
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
            let page = store.entries_after(user, floor, PER_USER).await?;
            let missed: Vec<Missed> = page
                .items
                .iter()
                .map(|entry| {
                    // What the session that wrote it remembers acking: the
                    // message, or the change.
                    let (id, author) = match entry {
                        Entry::Message(s) => (s.message.id, s.message.sender_id),
                        Entry::Change { change, .. } => (change.id, change.actor),
                    };
                    Missed {
                        seq: entry.seq(),
                        id,
                        sender: author,
                        envelope: Envelope::new(&ServerFrame::entry(entry), None)
                            .ordered(Order::Seq(entry.seq())),
                    }
                })
                .collect();
            hub.deliver_missed(user, &missed);
            if page.has_more {
                more.push(user);
            } else {
                // Storage showed everything up to here: numbers it did not
                // return are holes, never to be filled.
                let top = page.items.last().map_or(latest, |e| e.seq().max(latest));
                hub.raise_floor(user, top, false);
            }
        }
    }
    Ok(more)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::SessionId;
    use crate::ws::handle::SessionHandle;

    fn open_session(hub: &Hub, user: Uuid) {
        let (queue, _rx) = tokio::sync::mpsc::channel(8);
        let handle = Arc::new(SessionHandle::new(SessionId::new(), user, queue, 1 << 20));
        hub.register(handle, 10, None);
    }

    #[test]
    fn a_floor_is_read_once_while_its_reading_waits() {
        let hub = Hub::default();
        let (waiting, fresh, gone) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        open_session(&hub, waiting);
        open_session(&hub, fresh);
        let readings = VecDeque::from([(std::time::Instant::now(), waiting, 3)]);
        let wanted = HashSet::from([waiting, fresh, gone]);
        assert_eq!(
            floors_to_read(&hub, wanted, &readings),
            HashSet::from([fresh]),
            "not the one already read, nor the one with no session"
        );
        hub.raise_floor(fresh, 5, true);
        assert!(floors_to_read(&hub, HashSet::from([fresh]), &readings).is_empty());
    }
}
