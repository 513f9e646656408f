//! Multi-node presence in Redis, on one server or a Redis Cluster.
//!
//! Users are spread over `BUCKETS` buckets; every key of a user and its
//! bucket's index share the bucket's hash tag, so on a cluster each script
//! touches one slot and the buckets spread over every shard (no single hot
//! key). Keys (all under the configured prefix `<p>`, bucket tag `{<p>:b<n>}`):
//! - `<p>:presence:{<p>:b<n>}:user:<uuid>`: a sorted set of that user's
//!   sessions, scored by the time (ms) they expire unless refreshed;
//! - `<p>:presence:{<p>:b<n>}:all`: every session of the bucket's users as
//!   `<user>:<session>`, same scores, so a sweep finds expired sessions
//!   without scanning users;
//! - `<p>:presence:{<p>:b<n>}:ver:<uuid>`: the version of the user's last
//!   transition.
//!
//! Every change is a Lua script using Redis' own clock, so nodes with skewed
//! clocks agree, and each transition (online, offline) is decided atomically
//! together with its version: when a dead node's sessions expire, exactly one
//! sweeping node learns that the user went offline, and two nodes deciding
//! two transitions of one user hand out versions in the order they decided.
//! Heartbeats and sweeps run one script per bucket, a few at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::{StreamExt, stream};
use redis::Script;
use uuid::Uuid;

use super::{Closed, Presence, PresenceError, Transition};
use crate::backplane::{Backplane, RedisConn};
use crate::bus::SessionId;

/// How many buckets users are spread over: enough to spread a cluster's
/// load over its shards, few enough that a sweep of all of them is cheap.
const BUCKETS: u32 = 64;
/// Bucket scripts in flight at once during a heartbeat or sweep.
const BUCKETS_AT_ONCE: usize = 8;

/// Shared prelude of every script: `now` (ms) and `now_us` in Redis time,
/// and `bump(key)`, which stores and returns the next version of a user: the
/// clock in microseconds, strictly above the last one (formatted, since Lua
/// would print a large number in exponent form).
const PRELUDE: &str = "
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local now_us = t[1] * 1000000 + t[2]
local function bump(key)
  local v = now_us
  local last = tonumber(redis.call('GET', key) or '0')
  if v <= last then v = last + 1 end
  v = string.format('%.0f', v)
  redis.call('SET', key, v, 'PX', 86400000)
  return v
end
";

/// KEYS: user set, all set, version key. ARGV: session, ttl ms, all-set
/// member. Returns the new version when the user had no live session
/// before, else '0'.
const OPENED: &str = "
local before = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
redis.call('ZADD', KEYS[1], now + ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], now + ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2] * 4)
if before == 0 then return bump(KEYS[3]) end
return '0'";

/// KEYS: user set, all set, version key. ARGV: session, all-set member,
/// user id. Removes the session (and the user's expired ones, so a later
/// sweep does not announce them again). Returns the new version when that
/// was the last live session, '0' when one is left, '-1' when the session
/// was unknown and none is left (the state was lost).
const CLOSED: &str = "
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
for _, s in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], s)
  redis.call('ZREM', KEYS[2], ARGV[3] .. ':' .. s)
end
if redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf') > 0 then return '0' end
if removed == 1 then return bump(KEYS[3]) end
return '-1'";

/// KEYS: the bucket's all set. ARGV: ttl ms, version-key prefix, then (user,
/// user set key, session, member) quads, all of that bucket. Refreshes every session; returns
/// (user, version) pairs for users that had no live session left (a flush,
/// a restart, or an outage longer than the TTL) and so came back online.
const HEARTBEAT: &str = "
local back = {}
for i = 3, #ARGV, 4 do
  local key = ARGV[i + 1]
  if redis.call('ZCOUNT', key, '(' .. now, '+inf') == 0 then
    table.insert(back, ARGV[i])
    table.insert(back, bump(ARGV[2] .. ARGV[i]))
  end
  redis.call('ZADD', key, now + ARGV[1], ARGV[i + 2])
  redis.call('PEXPIRE', key, ARGV[1] * 4)
  redis.call('ZADD', KEYS[1], now + ARGV[1], ARGV[i + 3])
end
return back";

/// KEYS: the bucket's all set. ARGV: user-set key prefix, batch size,
/// version-key prefix (all of that bucket).
/// Removes expired sessions; returns (user, version) pairs for users left
/// with no live session. A user's expired sessions all go at once, so each
/// user is returned once.
const SWEEP: &str = "
local gone = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[2])) do
  local sep = string.find(member, ':', 1, true)
  local user = string.sub(member, 1, sep - 1)
  local key = ARGV[1] .. user
  if redis.call('ZREM', KEYS[1], member) == 1 then
    for _, s in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', now)) do
      redis.call('ZREM', key, s)
      redis.call('ZREM', KEYS[1], user .. ':' .. s)
    end
    redis.call('ZREM', key, string.sub(member, sep + 1))
    if redis.call('ZCOUNT', key, '(' .. now, '+inf') == 0 then
      table.insert(gone, user)
      table.insert(gone, bump(ARGV[3] .. user))
    end
  end
end
return gone";

/// KEYS: user set, version key. Returns (live session count, version); an
/// offline user, or one whose version was lost, gets a new version.
const SETTLE: &str = "
local live = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local v = redis.call('GET', KEYS[2])
if live == 0 or not v then v = bump(KEYS[2]) end
return {tostring(live), v}";

/// KEYS: user set. Returns the number of live sessions.
const LIVE: &str = "return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')";

pub struct RedisPresence {
    backplane: Arc<Backplane>,
    conn: RedisConn,
    prefix: String,
    ttl_ms: u64,
    opened: Script,
    closed: Script,
    heartbeat: Script,
    sweep: Script,
    settle: Script,
    live: Script,
}

impl RedisPresence {
    pub fn new(backplane: Arc<Backplane>, prefix: &str, ttl: Duration) -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Self {
            conn: backplane.conn(),
            backplane,
            prefix: prefix.to_owned(),
            ttl_ms: ttl.as_millis() as u64,
            opened: script(OPENED),
            closed: script(CLOSED),
            heartbeat: script(HEARTBEAT),
            sweep: script(SWEEP),
            settle: script(SETTLE),
            live: script(LIVE),
        }
    }

    fn bucket_base(&self, bucket: u32) -> String {
        bucket_base(&self.prefix, bucket)
    }

    fn user_key(&self, user: Uuid) -> String {
        session_set_key(&self.prefix, user)
    }

    fn all_key(&self, bucket: u32) -> String {
        format!("{}all", self.bucket_base(bucket))
    }

    fn version_key(&self, user: Uuid) -> String {
        format!("{}ver:{user}", self.bucket_base(bucket(user)))
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, PresenceError> {
        let mut conn = self.conn.clone();
        let started = Instant::now();
        let result = invocation.invoke_async(&mut conn).await;
        crate::metrics::redis_operation(op, started.elapsed(), result.is_ok());
        result.map_err(|e| PresenceError::Unavailable(e.to_string()))
    }
}

/// `<p>:presence:{<p>:b<n>}:`, the start of every key of bucket `n`.
fn bucket_base(prefix: &str, bucket: u32) -> String {
    format!("{prefix}:presence:{{{prefix}:b{bucket}}}:")
}

/// The sorted set of `user`'s live sessions under `prefix` (public so
/// operators' tools and tests can inspect it).
pub fn session_set_key(prefix: &str, user: Uuid) -> String {
    format!("{}user:{user}", bucket_base(prefix, bucket(user)))
}

/// The bucket a user's keys live in.
fn bucket(user: Uuid) -> u32 {
    (user.as_u128() % u128::from(BUCKETS)) as u32
}

/// Runs one script per bucket, a few at a time. A bucket that failed (its
/// shard is down) does not discard what the others did: their scripts have
/// already changed Redis and handed out versions, so their transitions must
/// be announced. Only when every bucket failed is it an error.
async fn every_bucket(
    calls: Vec<impl Future<Output = Result<Vec<String>, PresenceError>>>,
    online: bool,
) -> Result<Vec<Transition>, PresenceError> {
    let answers: Vec<Result<Vec<String>, PresenceError>> = stream::iter(calls)
        .buffer_unordered(BUCKETS_AT_ONCE)
        .collect()
        .await;
    let total = answers.len();
    let mut changed = Vec::new();
    let mut failed = None;
    let mut failures = 0;
    for answer in answers {
        match answer {
            Ok(flat) => changed.extend(transitions(&flat, online)),
            Err(e) => {
                failures += 1;
                failed = Some(e);
            }
        }
    }
    match failed {
        Some(e) if failures == total => Err(e),
        Some(e) => {
            tracing::warn!(error = %e, buckets = failures, "some presence buckets failed");
            Ok(changed)
        }
        None => Ok(changed),
    }
}

/// A script's version answer: a positive number is a transition.
fn version(raw: &str) -> Result<i64, PresenceError> {
    raw.parse()
        .map_err(|_| PresenceError::Unavailable(format!("unexpected script answer {raw:?}")))
}

/// `[user, version, user, version, ...]` as transitions.
fn transitions(flat: &[String], online: bool) -> Vec<Transition> {
    flat.chunks_exact(2)
        .filter_map(|pair| {
            Some(Transition {
                user: Uuid::parse_str(&pair[0]).ok()?,
                online,
                version: pair[1].parse().ok()?,
            })
        })
        .collect()
}

#[async_trait]
impl Presence for RedisPresence {
    async fn session_opened(
        &self,
        user: Uuid,
        session: SessionId,
    ) -> Result<Option<Transition>, PresenceError> {
        let mut call = self.opened.prepare_invoke();
        call.key(self.user_key(user))
            .key(self.all_key(bucket(user)))
            .key(self.version_key(user))
            .arg(session.to_string())
            .arg(self.ttl_ms)
            .arg(format!("{user}:{session}"));
        let answer: String = self.run("presence_open", call).await?;
        let v = version(&answer)?;
        Ok((v > 0).then_some(Transition {
            user,
            online: true,
            version: v as u64,
        }))
    }

    async fn session_closed(
        &self,
        user: Uuid,
        session: SessionId,
    ) -> Result<Closed, PresenceError> {
        let mut call = self.closed.prepare_invoke();
        call.key(self.user_key(user))
            .key(self.all_key(bucket(user)))
            .key(self.version_key(user))
            .arg(session.to_string())
            .arg(format!("{user}:{session}"))
            .arg(user.to_string());
        let answer: String = self.run("presence_close", call).await?;
        Ok(match version(&answer)? {
            v if v > 0 => Closed::Offline(Transition {
                user,
                online: false,
                version: v as u64,
            }),
            0 => Closed::Unchanged,
            _ => Closed::Lost,
        })
    }

    async fn is_online(&self, user: Uuid) -> Result<bool, PresenceError> {
        let mut call = self.live.prepare_invoke();
        call.key(self.user_key(user));
        Ok(self.run::<i64>("presence_get", call).await? > 0)
    }

    async fn heartbeat(
        &self,
        sessions: &[(Uuid, SessionId)],
    ) -> Result<Vec<Transition>, PresenceError> {
        let mut by_bucket: Vec<Vec<(Uuid, SessionId)>> = vec![Vec::new(); BUCKETS as usize];
        for (user, session) in sessions {
            by_bucket[bucket(*user) as usize].push((*user, *session));
        }
        // Futures gathered first, then run a few at a time (a closure over
        // borrowed chunks would not be `Send` for every lifetime).
        let mut calls = Vec::new();
        for (b, list) in by_bucket.iter().enumerate() {
            let b = b as u32;
            for chunk in list.chunks(500) {
                let mut call = self.heartbeat.prepare_invoke();
                call.key(self.all_key(b))
                    .arg(self.ttl_ms)
                    .arg(format!("{}ver:", self.bucket_base(b)));
                for (user, session) in chunk {
                    call.arg(user.to_string())
                        .arg(self.user_key(*user))
                        .arg(session.to_string())
                        .arg(format!("{user}:{session}"));
                }
                calls.push(self.run::<Vec<String>>("presence_heartbeat", call));
            }
        }
        every_bucket(calls, true).await
    }

    /// One bounded batch per bucket per call (the upkeep task calls it every
    /// third of the TTL), so a mass expiry cannot block Redis for long.
    async fn sweep(&self) -> Result<Vec<Transition>, PresenceError> {
        let mut calls = Vec::new();
        for b in 0..BUCKETS {
            let base = self.bucket_base(b);
            let mut call = self.sweep.prepare_invoke();
            call.key(self.all_key(b))
                .arg(format!("{base}user:"))
                .arg(1000)
                .arg(format!("{base}ver:"));
            calls.push(self.run::<Vec<String>>("presence_sweep", call));
        }
        every_bucket(calls, false).await
    }

    async fn settle(&self, user: Uuid) -> Result<Transition, PresenceError> {
        let mut call = self.settle.prepare_invoke();
        call.key(self.user_key(user)).key(self.version_key(user));
        let (live, v): (String, String) = self.run("presence_settle", call).await?;
        Ok(Transition {
            user,
            online: version(&live)? > 0,
            version: version(&v)?.max(0) as u64,
        })
    }

    async fn ping(&self) -> Result<(), PresenceError> {
        self.backplane
            .probe()
            .await
            .map_err(PresenceError::Unavailable)
    }

    fn describe(&self) -> String {
        let kind = if self.backplane.is_cluster() {
            "redis cluster"
        } else {
            "redis"
        };
        format!("{kind} (ttl {} ms, {BUCKETS} buckets)", self.ttl_ms)
    }
}
