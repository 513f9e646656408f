//! The multi-node bus: one Redis channel per user (`<prefix>:user:<uuid>`),
//! on one Redis (`PUBLISH`/`SUBSCRIBE`) or a Redis Cluster (sharded pub/sub:
//! `SPUBLISH`/`SSUBSCRIBE`, so a publish goes to the one shard that owns the
//! channel's slot instead of being copied to every shard; see [`super::sharded`]).
//!
//! Publishing goes through a queue drained by one task that sends whatever
//! has accumulated as a single pipeline, so the hot path costs a channel send,
//! not a round trip, and a Redis outage never delays an `ack`. A pipeline that
//! fails is retried until Redis answers (typing indicators and events older
//! than `RETRY_MAX_AGE` are dropped on the way), and on shutdown the queue is
//! flushed before the task stops, so what a draining node committed still
//! goes out. Each node keeps one pub/sub connection, owned by a second task
//! that subscribes to the channels of users with a session here, and on a
//! lost connection reconnects with backoff, resubscribes every channel still
//! wanted and tells the hub, which catches up what was missed from storage.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::PubSubSink;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::listen::{
    BACKOFF_MAX, BACKOFF_MIN, InterestRequest, Listener, PROBE_TIMEOUT, channel, differences,
    dispatch, gather, keep_listening,
};
use super::{Bus, BusError, Delivery, Envelope};
use crate::backplane::{self, Backplane, RedisConn, ShardMap};

/// Publishes (a batch of events each) waiting to go out; beyond this, new
/// ones are dropped (and counted) rather than held in memory while Redis is
/// away.
const PUBLISH_QUEUE: usize = 8192;
/// Most publishes gathered into one pipeline.
const PIPELINE_MAX: usize = 256;
/// Most failed events kept for retrying; beyond, the oldest are dropped.
const RETRY_MAX_EVENTS: usize = 8192;
/// A failed event older than this is not retried: messages are caught up
/// from storage by the receiving node, presence is repaired by its owner.
const RETRY_MAX_AGE: Duration = Duration::from_secs(30);
/// Publishes in flight at once on a cluster, where each is its own command
/// (a pipeline may not cross slots); the connection pipelines them per shard.
const CLUSTER_PUBLISHES_AT_ONCE: usize = 256;

/// One publish: its events, and who waits to hear that Redis took them.
struct Outgoing {
    events: Vec<(Uuid, Envelope)>,
    confirm: Option<oneshot::Sender<bool>>,
}

pub struct RedisBus {
    publish: mpsc::Sender<Outgoing>,
    interest: mpsc::Sender<InterestRequest>,
    backplane: Arc<Backplane>,
    /// True while the pub/sub connection is up and subscribed.
    listening: Arc<AtomicBool>,
}

impl RedisBus {
    /// Starts the subscriber under `tasks`, stopped by `shutdown`, and the
    /// publisher under `late`, stopped by `flush`: the node cancels that only
    /// after its sessions and writers are done, and the publisher sends what
    /// is queued before it stops.
    /// `probe_every`: how often the pub/sub connection is pinged, so a
    /// silently dead connection is noticed.
    pub fn start(
        backplane: Arc<Backplane>,
        prefix: String,
        probe_every: Duration,
        delivery: Arc<dyn Delivery>,
        (shutdown, tasks): (CancellationToken, &TaskTracker),
        (flush, late): (CancellationToken, &TaskTracker),
    ) -> Self {
        let (publish, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (interest, interest_rx) = mpsc::channel(1024);
        let listening = Arc::new(AtomicBool::new(false));
        late.spawn(publisher(
            Publisher {
                conn: backplane.conn(),
                prefix: prefix.clone(),
                shards: backplane.shards(),
            },
            publish_rx,
            flush,
        ));
        match &*backplane {
            Backplane::Single { client, .. } => tasks.spawn(keep_listening(
                Subscriber {
                    client: client.clone(),
                    prefix,
                    probe_every,
                    delivery,
                    listening: listening.clone(),
                },
                interest_rx,
                shutdown,
            )),
            Backplane::Cluster { seeds, shards, .. } => tasks.spawn(keep_listening(
                super::sharded::ShardedSubscriber {
                    seeds: seeds.clone(),
                    prefix,
                    probe_every,
                    delivery,
                    listening: listening.clone(),
                    shards: shards.clone(),
                    labelled: Default::default(),
                },
                interest_rx,
                shutdown,
            )),
        };
        Self {
            publish,
            interest,
            backplane,
            listening,
        }
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, events: Vec<(Uuid, Envelope)>) -> Result<(), BusError> {
        self.enqueue(Outgoing {
            events,
            confirm: None,
        })
    }

    async fn publish_confirmed(&self, events: Vec<(Uuid, Envelope)>) -> Result<(), BusError> {
        let (confirm, confirmed) = oneshot::channel();
        self.enqueue(Outgoing {
            events,
            confirm: Some(confirm),
        })?;
        match tokio::time::timeout(PROBE_TIMEOUT, confirmed).await {
            Ok(Ok(true)) => Ok(()),
            _ => Err(BusError::Unavailable("publish not confirmed".into())),
        }
    }

    async fn interest_changed(&self, user: Uuid) -> Result<(), BusError> {
        let (done, wait) = oneshot::channel();
        // Waiting means the first session's subscription is live before the
        // session announces itself, so nothing sent in reply is missed. The
        // bound covers queueing the request too: while Redis is away the
        // queue is not drained, and an upgrade may be waiting on this.
        let asked = async {
            self.interest.send((user, done)).await.ok()?;
            wait.await.ok()
        };
        match tokio::time::timeout(Duration::from_secs(5), asked).await {
            Ok(Some(())) => Ok(()),
            _ => Err(BusError::Unavailable(
                "subscription pending until Redis is back".into(),
            )),
        }
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.backplane
            .probe()
            .await
            .map_err(BusError::Unavailable)?;
        if !self.listening.load(Ordering::Relaxed) {
            return Err(BusError::Unavailable("pub/sub connection down".into()));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        if self.backplane.is_cluster() {
            "redis cluster sharded pub/sub".into()
        } else {
            "redis pub/sub".into()
        }
    }
}

impl RedisBus {
    fn enqueue(&self, outgoing: Outgoing) -> Result<(), BusError> {
        if outgoing.events.is_empty() {
            return Ok(());
        }
        self.publish.try_send(outgoing).map_err(|_| {
            crate::metrics::redis_operation("publish_dropped", Duration::ZERO, false);
            BusError::Unavailable("publish queue full".into())
        })
    }
}

/// Sends queued events as pipelines of PUBLISH (or, on a cluster, SPUBLISH
/// commands). What failed is retried with backoff, together with whatever
/// was queued since, so on a cluster one shard that is down (its events are
/// the ones retried) holds up no other shard's; once `flush` is cancelled,
/// whatever is queued goes out in a last attempt and the task stops.
async fn publisher(
    mut publisher: Publisher,
    mut rx: mpsc::Receiver<Outgoing>,
    flush: CancellationToken,
) {
    let mut batch: Vec<(Uuid, Envelope)> = Vec::new();
    let mut received = Vec::with_capacity(PIPELINE_MAX);
    let mut backoff = BACKOFF_MIN;
    let mut stopping = false;
    loop {
        if batch.is_empty() && !stopping {
            tokio::select! {
                () = flush.cancelled() => stopping = true,
                n = rx.recv_many(&mut received, PIPELINE_MAX) => if n == 0 { return },
            }
        }
        while received.len() < PIPELINE_MAX {
            match rx.try_recv() {
                Ok(outgoing) => received.push(outgoing),
                Err(_) => break,
            }
        }
        if batch.is_empty() && received.is_empty() {
            if stopping {
                return;
            }
            continue;
        }
        let mut confirms = Vec::new();
        for outgoing in received.drain(..) {
            batch.extend(outgoing.events);
            confirms.extend(outgoing.confirm);
        }
        let result = publisher.send(&mut batch).await;
        for confirm in confirms {
            let _ = confirm.send(result.is_ok());
        }
        match result {
            Ok(()) => backoff = BACKOFF_MIN,
            Err(failure) => {
                tracing::warn!(error = %failure.error, events = batch.len(), "publish failed");
                if stopping {
                    return;
                }
                let oldest =
                    chrono::Utc::now().timestamp_micros() - RETRY_MAX_AGE.as_micros() as i64;
                batch.retain(|(_, e)| e.kind != "typing" && e.published_at_micros >= oldest);
                if batch.len() > RETRY_MAX_EVENTS {
                    // The oldest go: messages among them are caught up by
                    // the receiving nodes, presence is repaired by its owner.
                    let dropped = batch.len() - RETRY_MAX_EVENTS;
                    batch.drain(..dropped);
                    crate::metrics::redis_operation("publish_dropped", Duration::ZERO, false);
                }
                // Some went out (a cluster with one shard down): retry soon,
                // so the shards that work keep getting new events.
                let wait = if failure.partial {
                    BACKOFF_MIN
                } else {
                    backoff
                };
                tokio::select! {
                    () = flush.cancelled() => {}
                    () = tokio::time::sleep(wait) => {}
                }
                if !failure.partial {
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// Where the publisher task sends: the connection, and on a cluster the
/// shard view that labels its metrics.
struct Publisher {
    conn: RedisConn,
    prefix: String,
    shards: Option<Arc<ShardMap>>,
}

/// A send that did not fully go out; the events left are the ones to retry.
struct SendFailure {
    error: redis::RedisError,
    /// Some events did go out.
    partial: bool,
}

impl Publisher {
    /// Publishes `events`, leaving in it only those that failed.
    async fn send(&mut self, events: &mut Vec<(Uuid, Envelope)>) -> Result<(), SendFailure> {
        if events.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let result = match &self.shards {
            None => {
                let mut pipe = redis::pipe();
                for (user, envelope) in events.iter() {
                    pipe.cmd("PUBLISH")
                        .arg(channel(&self.prefix, *user))
                        .arg(envelope.encode())
                        .ignore();
                }
                match pipe.query_async::<()>(&mut self.conn).await {
                    Ok(()) => {
                        events.clear();
                        Ok(())
                    }
                    Err(error) => Err(SendFailure {
                        error,
                        partial: false,
                    }),
                }
            }
            Some(shards) => {
                let shards = shards.clone();
                self.send_sharded(&shards, events).await
            }
        };
        crate::metrics::redis_operation("publish", started.elapsed(), result.is_ok());
        result
    }

    /// One `SPUBLISH` per event, many in flight: the cluster connection
    /// routes each to its channel's shard and pipelines them per shard.
    /// Only the events whose shard failed stay in `events`.
    async fn send_sharded(
        &self,
        shards: &ShardMap,
        events: &mut Vec<(Uuid, Envelope)>,
    ) -> Result<(), SendFailure> {
        let mut per_shard: std::collections::HashMap<String, u64> = Default::default();
        let mut publishes = Vec::with_capacity(events.len());
        for (i, (user, envelope)) in events.iter().enumerate() {
            let name = channel(&self.prefix, *user);
            *per_shard
                .entry(shards.owner(backplane::slot(name.as_bytes())))
                .or_default() += 1;
            let mut cmd = redis::cmd("SPUBLISH");
            cmd.arg(name).arg(envelope.encode());
            let mut conn = self.conn.clone();
            publishes.push(async move { (i, cmd.query_async::<redis::Value>(&mut conn).await) });
        }
        let results: Vec<(usize, redis::RedisResult<redis::Value>)> =
            futures_util::stream::iter(publishes)
                .buffer_unordered(CLUSTER_PUBLISHES_AT_ONCE)
                .collect()
                .await;
        for (shard, count) in per_shard {
            crate::metrics::redis_shard_published(&shard, count);
        }
        let mut failed = vec![false; events.len()];
        let mut error = None;
        for (i, result) in results {
            if let Err(e) = result {
                failed[i] = true;
                error = Some(e);
            }
        }
        let Some(error) = error else {
            events.clear();
            return Ok(());
        };
        let total = events.len();
        let mut i = 0;
        events.retain(|_| {
            let keep = failed[i];
            i += 1;
            keep
        });
        Err(SendFailure {
            error,
            partial: events.len() < total,
        })
    }
}

struct Subscriber {
    client: redis::Client,
    prefix: String,
    probe_every: Duration,
    delivery: Arc<dyn Delivery>,
    listening: Arc<AtomicBool>,
}

impl Listener for Subscriber {
    fn listening(&self) -> &AtomicBool {
        &self.listening
    }

    /// One connection's life: subscribe to everything wanted, then serve
    /// events and interest changes until the connection fails (`Err`) or the
    /// node stops (`Ok`).
    async fn listen(
        &self,
        interest: &mut mpsc::Receiver<InterestRequest>,
        shutdown: &CancellationToken,
        first: bool,
        backoff: &mut Duration,
    ) -> redis::RedisResult<()> {
        let (mut sink, mut stream) = self.client.get_async_pubsub().await?.split();
        let mut subscribed: HashSet<Uuid> = HashSet::new();
        let wanted = self.delivery.users();
        for chunk in wanted.chunks(1000) {
            let channels: Vec<String> = chunk.iter().map(|u| channel(&self.prefix, *u)).collect();
            sink.subscribe(&channels).await?;
            subscribed.extend(chunk);
        }
        if !first {
            crate::metrics::redis_reconnect();
            tracing::info!(
                channels = subscribed.len(),
                "redis pub/sub reconnected and resubscribed"
            );
            self.delivery.resubscribed();
        }
        self.listening.store(true, Ordering::Relaxed);
        *backoff = BACKOFF_MIN;
        let every = self.probe_every;
        let mut probe = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                request = interest.recv() => {
                    let Some(first) = request else { return Ok(()) };
                    let (users, waiting) = gather(first, interest);
                    self.reconcile(&mut sink, &mut subscribed, &users).await?;
                    for done in waiting {
                        let _ = done.send(());
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else {
                        return Err(redis::RedisError::from((redis::ErrorKind::Io, "pub/sub stream ended")));
                    };
                    self.dispatch(&message);
                }
                _ = probe.tick() => {
                    // In subscribed mode PING answers ["pong", ""], not PONG.
                    match tokio::time::timeout(PROBE_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e),
                        Err(_) => return Err(redis::RedisError::from((redis::ErrorKind::Io, "pub/sub ping timed out"))),
                    }
                }
            }
        }
    }
}

impl Subscriber {
    /// Makes the subscriptions of `users` match the hub at this moment, so
    /// racing first/last sessions always end consistent: one SUBSCRIBE for
    /// all that are wanted and not subscribed, one UNSUBSCRIBE for the
    /// reverse.
    async fn reconcile(
        &self,
        sink: &mut PubSubSink,
        subscribed: &mut HashSet<Uuid>,
        users: &[Uuid],
    ) -> redis::RedisResult<()> {
        let (add, drop) = differences(users, subscribed, &*self.delivery);
        let names = |users: &[Uuid]| -> Vec<String> {
            users.iter().map(|u| channel(&self.prefix, *u)).collect()
        };
        if !add.is_empty() {
            let started = Instant::now();
            let result = sink.subscribe(names(&add)).await;
            crate::metrics::redis_operation("subscribe", started.elapsed(), result.is_ok());
            result?;
            subscribed.extend(add);
        }
        if !drop.is_empty() {
            let started = Instant::now();
            let result = sink.unsubscribe(names(&drop)).await;
            crate::metrics::redis_operation("unsubscribe", started.elapsed(), result.is_ok());
            result?;
            for user in drop {
                subscribed.remove(&user);
            }
        }
        Ok(())
    }

    fn dispatch(&self, message: &redis::Msg) {
        dispatch(
            &self.prefix,
            &*self.delivery,
            message.get_channel_name(),
            message.get_payload_bytes(),
        );
    }
}
