//! The Redis that a multi-node deployment shares: one server (`REDIS_URL`)
//! or a Redis Cluster (`REDIS_CLUSTER_URLS`).
//!
//! The bus publisher and presence talk through one [`RedisConn`], which
//! routes every command itself on a cluster (by its first key, following
//! `MOVED` and failovers). What only a cluster has lives here too: the view
//! of its shards, so readiness, logs and metrics can name the shard that is
//! down or busy without ever carrying a user id.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::config::{RedisConfig, Secret};

/// Timeouts shared by every Redis connection: while Redis is away, commands
/// fail fast (clients recover through catch-up) instead of piling up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Redis Cluster's fixed number of hash slots.
pub const SLOTS: u16 = 16384;

/// A command connection to one Redis or to a whole cluster.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// One master and the slots it serves, as the cluster last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// `host:port` of the master: the label metrics and logs use.
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Inclusive slot ranges.
    pub slots: Vec<(u16, u16)>,
}

impl Shard {
    fn describe(&self) -> String {
        let ranges: Vec<String> = self.slots.iter().map(|(a, b)| format!("{a}-{b}")).collect();
        format!("shard {} (slots {})", self.name, ranges.join(","))
    }
}

/// The cluster's shards, refreshed by every readiness probe (and so kept
/// current by the load balancer's polling and the node's own upkeep).
#[derive(Default)]
pub struct ShardMap {
    shards: RwLock<Vec<Shard>>,
}

impl ShardMap {
    /// The shard serving `slot`, by its label; `"unknown"` before the first
    /// refresh or while the slot is unassigned.
    pub fn owner(&self, slot: u16) -> String {
        let shards = self.shards.read().unwrap_or_else(|e| e.into_inner());
        shards
            .iter()
            .find(|s| s.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map_or_else(|| "unknown".to_owned(), |s| s.name.clone())
    }

    pub fn shards(&self) -> Vec<Shard> {
        self.shards
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn replace(&self, shards: Vec<Shard>) {
        *self.shards.write().unwrap_or_else(|e| e.into_inner()) = shards;
    }
}

/// The hash slot of a key or channel, as Redis Cluster computes it (CRC16
/// of the hash tag, or of the whole name). Used to label metrics by shard;
/// routing itself is the cluster connection's.
pub fn slot(name: &[u8]) -> u16 {
    let tagged = name
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &name[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .map(|close| &rest[..close])
        })
        .filter(|tag| !tag.is_empty())
        .unwrap_or(name);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % SLOTS
}

/// The shared Redis of a node, connected.
pub enum Backplane {
    Single {
        /// For the pub/sub connection, which the bus opens itself.
        client: redis::Client,
        conn: ConnectionManager,
    },
    Cluster {
        /// Seed nodes, for the bus's own sharded subscription connection.
        seeds: Vec<Secret>,
        conn: ClusterConnection,
        shards: Arc<ShardMap>,
        /// The last probe's answer: one readiness check asks for it twice
        /// (bus and presence), and load balancers poll often.
        last_probe: Arc<Mutex<Option<Probed>>>,
    },
}

/// A probe's answer and when it was had.
type Probed = (Instant, Result<(), String>);

/// How long a cluster probe's answer is reused.
const PROBE_REUSE: Duration = Duration::from_millis(500);

impl Backplane {
    /// Connects, or fails with one line that says what is wrong with the
    /// configured Redis.
    pub async fn connect(config: &RedisConfig) -> anyhow::Result<Self> {
        match config {
            RedisConfig::Single(url) => {
                let client =
                    redis::Client::open(url.expose()).context("Failed to parse REDIS_URL")?;
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(1));
                let conn = ConnectionManager::new_with_config(client.clone(), manager)
                    .await
                    .context("Failed to connect to Redis (REDIS_URL)")?;
                Ok(Self::Single { client, conn })
            }
            RedisConfig::Cluster(seeds) => {
                let client =
                    cluster_client(seeds, |b| b).context("Failed to parse REDIS_CLUSTER_URLS")?;
                let conn = client.get_async_connection().await.map_err(|e| {
                    anyhow::anyhow!(
                        "Failed to connect to Redis Cluster (REDIS_CLUSTER_URLS): {}",
                        cluster_error(&e)
                    )
                })?;
                let backplane = Self::Cluster {
                    seeds: seeds.clone(),
                    conn,
                    shards: Arc::new(ShardMap::default()),
                    last_probe: Arc::default(),
                };
                if let Err(e) = backplane.probe().await {
                    bail!("Redis Cluster (REDIS_CLUSTER_URLS) is not healthy: {e}");
                }
                Ok(backplane)
            }
        }
    }

    pub fn conn(&self) -> RedisConn {
        match self {
            Self::Single { conn, .. } => RedisConn::Single(conn.clone()),
            Self::Cluster { conn, .. } => RedisConn::Cluster(conn.clone()),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// Readiness: one Redis answers PING, or every master of the cluster
    /// does. The error names the shard that did not.
    pub async fn probe(&self) -> Result<(), String> {
        match self {
            Self::Single { conn, .. } => {
                let mut conn = conn.clone();
                let started = Instant::now();
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                crate::metrics::redis_operation("ping", started.elapsed(), pong.is_ok());
                pong.map(|_| ()).map_err(|e| e.to_string())
            }
            Self::Cluster {
                conn,
                shards,
                last_probe,
                ..
            } => {
                if let Some((at, answer)) = &*last_probe.lock().unwrap_or_else(|e| e.into_inner())
                    && at.elapsed() < PROBE_REUSE
                {
                    return answer.clone();
                }
                let answer = probe_cluster(conn, shards).await;
                *last_probe.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), answer.clone()));
                answer
            }
        }
    }

    /// The shard view, on a cluster.
    pub fn shards(&self) -> Option<Arc<ShardMap>> {
        match self {
            Self::Cluster { shards, .. } => Some(shards.clone()),
            Self::Single { .. } => None,
        }
    }
}

/// A cluster client on `seeds` with the node's timeouts; `extra` adds what
/// one connection needs beyond that (RESP3 and a push sender, for pub/sub).
pub fn cluster_client(
    seeds: &[Secret],
    extra: impl FnOnce(ClusterClientBuilder) -> ClusterClientBuilder,
) -> redis::RedisResult<ClusterClient> {
    let builder = ClusterClientBuilder::new(seeds.iter().map(|s| s.expose().to_owned()))
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(3)
        .max_retry_wait(500);
    extra(builder).build()
}

/// A start-up error in words an operator can act on (the crate's own text
/// for a non-cluster Redis is only "ERR This instance has cluster support
/// disabled", deep in a chain).
fn cluster_error(e: &redis::RedisError) -> String {
    let text = e.to_string();
    if text.contains("cluster support disabled") {
        "the seed nodes are not in cluster mode (cluster support disabled); use REDIS_URL for a single Redis".into()
    } else {
        text
    }
}

/// Refreshes the shard map from `CLUSTER SLOTS`, then pings every master
/// by address.
async fn probe_cluster(conn: &ClusterConnection, shards: &ShardMap) -> Result<(), String> {
    let mut conn = conn.clone();
    let started = Instant::now();
    let slots: redis::RedisResult<Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await;
    crate::metrics::redis_operation("cluster_slots", started.elapsed(), slots.is_ok());
    let slots = slots.map_err(|e| format!("CLUSTER SLOTS failed: {e}"))?;
    let current = parse_slots(&slots);
    if current.is_empty() {
        return Err("the cluster reports no slots".into());
    }
    let covered: u32 = current
        .iter()
        .flat_map(|s| s.slots.iter())
        .map(|(a, b)| u32::from(*b).saturating_sub(u32::from(*a)) + 1)
        .sum();
    shards.replace(current.clone());
    let pings = current.iter().map(|shard| {
        let mut conn = conn.clone();
        async move {
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: shard.host.clone(),
                port: shard.port,
            });
            let started = Instant::now();
            let answer = conn.route_command(redis::cmd("PING"), routing).await;
            crate::metrics::redis_shard_operation(
                "ping",
                &shard.name,
                started.elapsed(),
                answer.is_ok(),
            );
            answer.map_err(|e| format!("{} is unreachable: {e}", shard.describe()))
        }
    });
    for answer in futures_util::future::join_all(pings).await {
        answer?;
    }
    if covered < u32::from(SLOTS) {
        return Err(format!(
            "only {covered} of {SLOTS} slots are served (a shard lost its master)"
        ));
    }
    Ok(())
}

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id, ...], replicas...], ...]`,
/// grouped by master.
fn parse_slots(value: &Value) -> Vec<Shard> {
    let mut shards: Vec<Shard> = Vec::new();
    let Value::Array(ranges) = value else {
        return shards;
    };
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        let Some(Value::Int(port)) = master.get(1) else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(port)) = (
            u16::try_from(*start),
            u16::try_from(*end),
            u16::try_from(*port),
        ) else {
            continue;
        };
        if start > end || end >= SLOTS {
            continue;
        }
        let name = format!("{host}:{port}");
        let range = (start, end);
        match shards.iter_mut().find(|s| s.name == name) {
            Some(shard) => shard.slots.push(range),
            None => shards.push(Shard {
                name,
                host,
                port,
                slots: vec![range],
            }),
        }
    }
    shards.sort_by(|a, b| a.slots.first().cmp(&b.slots.first()));
    shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_hash_tags() {
        // Values from Redis' own CLUSTER KEYSLOT.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        // An empty tag does not count: the whole name is hashed.
        assert_eq!(slot(b"{}x"), 10595);
    }

    #[test]
    fn slot_ranges_group_by_master() {
        let node = |port: i64| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let value = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node(7002),
                node(7005),
            ]),
            Value::Array(vec![Value::Int(0), Value::Int(5460), node(7001)]),
            Value::Array(vec![Value::Int(10923), Value::Int(16383), node(7001)]),
        ]);
        let shards = parse_slots(&value);
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].name, "127.0.0.1:7001");
        assert_eq!(shards[0].slots, vec![(0, 5460), (10923, 16383)]);
        assert_eq!(
            shards[1].describe(),
            "shard 127.0.0.1:7002 (slots 5461-10922)"
        );
        let map = ShardMap::default();
        map.replace(shards);
        assert_eq!(map.owner(6000), "127.0.0.1:7002");
        assert_eq!(map.owner(16383), "127.0.0.1:7001");
    }
}
