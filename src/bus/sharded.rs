//! The bus's subscriber on a Redis Cluster: sharded pub/sub.
//!
//! One cluster connection (RESP3, pushes delivered to this task) holds one
//! connection per shard, and `SSUBSCRIBE` goes to the shard that owns the
//! channel's slot. What can take a subscription away, and what this task does:
//! - a slot moves to another shard (a reshard): the old owner sends an
//!   unasked-for `sunsubscribe`; the channel is subscribed again (the cluster
//!   connection follows `MOVED` to the new owner) and the hub catches up from
//!   storage whatever was published in between;
//! - a shard's master dies or a replica is promoted: the connection reports
//!   a disconnection (or a probe fails); the whole connection is rebuilt from
//!   the seed nodes with backoff, every wanted channel subscribed again, and
//!   the hub catches up, exactly as after a lost connection to one Redis;
//! - the cluster connection may also move subscriptions itself (after it
//!   reconnected to a node or learnt a new slot map) without this task
//!   asking: every subscription confirmation this task did not ask for means
//!   events may have been missed, so the hub catches up once the burst of
//!   them is over.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Delivery;
use super::listen::{
    BACKOFF_MIN, InterestRequest, Listener, PROBE_TIMEOUT, channel, differences, dispatch, gather,
};
use crate::backplane::{self, ShardMap};
use crate::config::Secret;

/// Subscriptions sent at once when (re)subscribing everything.
const SUBSCRIBES_AT_ONCE: usize = 64;
/// How long after the last subscription change the cluster made by itself
/// the hub is asked to catch up (one catch-up for a burst of them).
const SETTLE: Duration = Duration::from_millis(250);
/// For this long after a subscription change (a rebuild, a moved slot, the
/// cluster resubscribing by itself), every probe asks the hub to catch up
/// again: while slots move, publishes are redirected (`ASK`) to the new owner
/// before the old one drops its subscribers, publishers' slot maps lag and
/// retried publishes land late, so one pass right after the change is not
/// enough. A catch-up with nothing missing costs one indexed lookup per
/// batch of users.
const AFTERMATH: Duration = Duration::from_secs(30);

pub(super) struct ShardedSubscriber {
    pub seeds: Vec<Secret>,
    pub prefix: String,
    pub probe_every: Duration,
    pub delivery: Arc<dyn Delivery>,
    pub listening: Arc<AtomicBool>,
    pub shards: Arc<ShardMap>,
    /// Shards whose subscriptions gauge was last set above zero, across
    /// connections, so one that left is set back to zero.
    pub labelled: std::sync::Mutex<HashSet<String>>,
}

/// Why one connection's life ended.
fn lost(what: &str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "sharded pub/sub", what.to_owned()))
}

/// How many subscription confirmations of this task's own requests are yet
/// to come through the push channel.
struct Confirmations(usize);

impl Listener for ShardedSubscriber {
    fn listening(&self) -> &AtomicBool {
        &self.listening
    }

    async fn listen(
        &self,
        interest: &mut mpsc::Receiver<InterestRequest>,
        shutdown: &CancellationToken,
        first: bool,
        backoff: &mut Duration,
    ) -> redis::RedisResult<()> {
        let (push_tx, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
        let client = backplane::cluster_client(&self.seeds, |b| {
            b.use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(push_tx)
        })?;
        let mut conn = client.get_async_connection().await?;
        let mut subscribed: HashSet<Uuid> = HashSet::new();
        let wanted = self.delivery.users();
        self.subscribe_all(&conn, &wanted).await?;
        // Confirmations of this task's own SSUBSCRIBEs still to come through
        // the push channel (they are copied there as well as answered).
        let mut own = Confirmations(wanted.len());
        subscribed.extend(wanted);
        // When to ask the hub to catch up, after changes the cluster made,
        // and since when subscriptions changed (for the aftermath passes).
        let mut catch_up: Option<tokio::time::Instant> = None;
        // Channels whose slot moved away, to subscribe again where it went.
        let mut moved: HashSet<Uuid> = HashSet::new();
        let mut changed_at: Option<Instant> = (!first).then(Instant::now);
        if !first {
            crate::metrics::redis_reconnect();
            tracing::info!(
                channels = subscribed.len(),
                "redis cluster sharded pub/sub reconnected and resubscribed"
            );
            self.delivery.resubscribed();
        }
        self.listening.store(true, Ordering::Relaxed);
        *backoff = BACKOFF_MIN;
        self.count_by_shard(&subscribed);
        let every = self.probe_every;
        let mut probe = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                request = interest.recv() => {
                    let Some(first) = request else { return Ok(()) };
                    let (users, waiting) = gather(first, interest);
                    self.reconcile(&conn, &mut subscribed, &users, &mut own).await?;
                    for done in waiting {
                        let _ = done.send(());
                    }
                }
                push = pushes.recv() => {
                    let Some(push) = push else { return Err(lost("push stream ended")) };
                    if self.on_push(&subscribed, push, &mut own, &mut moved)? {
                        catch_up = Some(tokio::time::Instant::now() + SETTLE);
                    }
                }
                () = tokio::time::sleep_until(catch_up.unwrap_or_else(tokio::time::Instant::now)), if catch_up.is_some() => {
                    catch_up = None;
                    let again: Vec<Uuid> = moved.drain().filter(|u| subscribed.contains(u)).collect();
                    if !again.is_empty() {
                        tracing::info!(channels = again.len(), "sharded subscriptions moved with their slots; resubscribing");
                        let started = Instant::now();
                        let result = self.subscribe_all(&conn, &again).await;
                        crate::metrics::redis_operation("resubscribe", started.elapsed(), result.is_ok());
                        result?;
                        own.0 += again.len();
                    }
                    changed_at = Some(Instant::now());
                    self.delivery.resubscribed();
                }
                _ = probe.tick() => {
                    self.probe(&mut conn).await?;
                    self.count_by_shard(&subscribed);
                    if changed_at.is_some_and(|at| at.elapsed() < AFTERMATH) {
                        self.delivery.resubscribed();
                    }
                }
            }
        }
    }
}

impl ShardedSubscriber {
    async fn subscribe_all(
        &self,
        conn: &ClusterConnection,
        users: &[Uuid],
    ) -> redis::RedisResult<()> {
        let mut subscribes = Vec::with_capacity(users.len());
        for user in users {
            let mut conn = conn.clone();
            let name = channel(&self.prefix, *user);
            subscribes.push(async move { conn.ssubscribe(name).await });
        }
        stream::iter(subscribes)
            .buffer_unordered(SUBSCRIBES_AT_ONCE)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    /// Makes the subscriptions of `users` match the hub at this moment:
    /// each channel lives on its slot's shard, so the commands go out
    /// together, pipelined per shard by the cluster connection.
    async fn reconcile(
        &self,
        conn: &ClusterConnection,
        subscribed: &mut HashSet<Uuid>,
        users: &[Uuid],
        own: &mut Confirmations,
    ) -> redis::RedisResult<()> {
        let (add, drop) = differences(users, subscribed, &*self.delivery);
        if !add.is_empty() {
            let started = Instant::now();
            let result = self.subscribe_all(conn, &add).await;
            crate::metrics::redis_operation("subscribe", started.elapsed(), result.is_ok());
            result?;
            own.0 += add.len();
            subscribed.extend(add);
        }
        if !drop.is_empty() {
            // Forgotten first, so the confirmations that come back are not
            // taken for subscriptions the cluster dropped.
            for user in &drop {
                subscribed.remove(user);
            }
            let started = Instant::now();
            let mut unsubscribes = Vec::with_capacity(drop.len());
            for user in drop {
                let mut conn = conn.clone();
                let name = channel(&self.prefix, user);
                unsubscribes.push(async move { conn.sunsubscribe(name).await });
            }
            let result = stream::iter(unsubscribes)
                .buffer_unordered(SUBSCRIBES_AT_ONCE)
                .try_collect::<Vec<()>>()
                .await;
            crate::metrics::redis_operation("unsubscribe", started.elapsed(), result.is_ok());
            result?;
        }
        Ok(())
    }

    /// Handles one push; `Ok(true)` when the hub must catch up because the
    /// cluster changed a subscription by itself.
    fn on_push(
        &self,
        subscribed: &HashSet<Uuid>,
        push: PushInfo,
        own: &mut Confirmations,
        moved: &mut HashSet<Uuid>,
    ) -> redis::RedisResult<bool> {
        match push.kind {
            PushKind::SMessage | PushKind::Message => {
                if let (Some(Value::BulkString(name)), Some(Value::BulkString(payload))) =
                    (push.data.first(), push.data.get(1))
                {
                    dispatch(
                        &self.prefix,
                        &*self.delivery,
                        &String::from_utf8_lossy(name),
                        payload,
                    );
                }
                Ok(false)
            }
            PushKind::SSubscribe => {
                if own.0 > 0 {
                    own.0 -= 1;
                    return Ok(false);
                }
                // The cluster connection resubscribed by itself (after a
                // reconnect or a new slot map): there was a window.
                Ok(true)
            }
            PushKind::SUnsubscribe => {
                let Some(Value::BulkString(name)) = push.data.first() else {
                    return Ok(false);
                };
                let name = String::from_utf8_lossy(name);
                let user = name
                    .strip_prefix(&self.prefix)
                    .and_then(|rest| rest.strip_prefix(":user:"))
                    .and_then(|id| Uuid::parse_str(id).ok());
                let Some(user) = user.filter(|u| subscribed.contains(u)) else {
                    return Ok(false); // the confirmation of our own unsubscribe
                };
                // The slot moved: subscribe where it lives now (all channels
                // of a burst of moves together, when it settles), then fill
                // what was published while nobody listened.
                moved.insert(user);
                Ok(true)
            }
            PushKind::Disconnection => Err(lost("a shard connection dropped")),
            _ => Ok(false),
        }
    }

    /// Pings every master through the subscription connection, so a shard
    /// that died silently is noticed within a probe interval.
    async fn probe(&self, conn: &mut ClusterConnection) -> redis::RedisResult<()> {
        let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        match tokio::time::timeout(
            PROBE_TIMEOUT,
            conn.route_command(redis::cmd("PING"), routing),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(lost("a shard did not answer the probe in time")),
        }
    }

    /// The subscriptions gauge per shard; a shard that left (a failed
    /// master) is set to zero rather than left at its last count.
    fn count_by_shard(&self, subscribed: &HashSet<Uuid>) {
        let mut labels = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts: HashMap<String, usize> = self
            .shards
            .shards()
            .into_iter()
            .map(|s| (s.name, 0))
            .chain(labels.drain().map(|name| (name, 0)))
            .collect();
        for user in subscribed {
            let name = channel(&self.prefix, *user);
            *counts
                .entry(self.shards.owner(backplane::slot(name.as_bytes())))
                .or_default() += 1;
        }
        for (shard, count) in counts {
            crate::metrics::redis_shard_subscriptions(&shard, count);
            if count > 0 {
                labels.insert(shard);
            }
        }
    }
}
