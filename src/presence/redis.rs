//! Multi-node presence in Redis.
//!
//! Keys (all under the configured prefix):
//! - `<p>:presence:user:<uuid>`: a sorted set of that user's sessions,
//!   scored by the time (ms) they expire unless refreshed;
//! - `<p>:presence:all`: every session as `<user>:<session>`, same scores,
//!   so a sweep finds expired sessions without scanning users.
//!
//! Every change is a Lua script using Redis' own clock, so nodes with skewed
//! clocks agree, and each transition (online, offline) is decided atomically:
//! when a dead node's sessions expire, exactly one sweeping node learns that
//! the user went offline.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::{Presence, PresenceError};
use crate::bus::SessionId;

/// `now_ms()` in Redis time; shared prelude of every script.
const NOW: &str =
    "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)\n";

/// KEYS: user set, all set. ARGV: session, ttl ms, all-set member.
/// Returns 1 when the user had no live session before.
const OPENED: &str = "
local before = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
redis.call('ZADD', KEYS[1], now + ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], now + ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2] * 4)
if before == 0 then return 1 end
return 0";

/// KEYS: user set, all set. ARGV: session, all-set member, user id.
/// Removes the session (and the user's expired ones, so a later sweep does
/// not announce them again). Returns 1 when no live session is left.
const CLOSED: &str = "
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
for _, s in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], s)
  redis.call('ZREM', KEYS[2], ARGV[3] .. ':' .. s)
end
if removed == 1 and redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf') == 0 then return 1 end
return 0";

/// KEYS: all set. ARGV: ttl ms, then (user set key, session, member) triples.
const HEARTBEAT: &str = "
for i = 2, #ARGV, 3 do
  redis.call('ZADD', ARGV[i], now + ARGV[1], ARGV[i + 1])
  redis.call('PEXPIRE', ARGV[i], ARGV[1] * 4)
  redis.call('ZADD', KEYS[1], now + ARGV[1], ARGV[i + 2])
end
return 0";

/// KEYS: all set. ARGV: user-set key prefix, batch size.
/// Removes expired sessions; returns users left with no live session. A
/// user's expired sessions all go at once, so each user is returned once.
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
    if redis.call('ZCOUNT', key, '(' .. now, '+inf') == 0 then table.insert(gone, user) end
  end
end
return gone";

/// KEYS: user set. Returns the number of live sessions.
const LIVE: &str = "return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')";

pub struct RedisPresence {
    conn: ConnectionManager,
    prefix: String,
    ttl_ms: u64,
    opened: Script,
    closed: Script,
    heartbeat: Script,
    sweep: Script,
    live: Script,
}

impl RedisPresence {
    pub fn new(conn: ConnectionManager, prefix: &str, ttl: Duration) -> Self {
        let script = |body: &str| Script::new(&format!("{NOW}{body}"));
        Self {
            conn,
            prefix: prefix.to_owned(),
            ttl_ms: ttl.as_millis() as u64,
            opened: script(OPENED),
            closed: script(CLOSED),
            heartbeat: script(HEARTBEAT),
            sweep: script(SWEEP),
            live: script(LIVE),
        }
    }

    fn user_key(&self, user: Uuid) -> String {
        format!("{}:presence:user:{user}", self.prefix)
    }

    fn all_key(&self) -> String {
        format!("{}:presence:all", self.prefix)
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

#[async_trait]
impl Presence for RedisPresence {
    async fn session_opened(&self, user: Uuid, session: SessionId) -> Result<bool, PresenceError> {
        let mut call = self.opened.prepare_invoke();
        call.key(self.user_key(user))
            .key(self.all_key())
            .arg(session.to_string())
            .arg(self.ttl_ms)
            .arg(format!("{user}:{session}"));
        Ok(self.run::<i64>("presence_open", call).await? == 1)
    }

    async fn session_closed(&self, user: Uuid, session: SessionId) -> Result<bool, PresenceError> {
        let mut call = self.closed.prepare_invoke();
        call.key(self.user_key(user))
            .key(self.all_key())
            .arg(session.to_string())
            .arg(format!("{user}:{session}"))
            .arg(user.to_string());
        Ok(self.run::<i64>("presence_close", call).await? == 1)
    }

    async fn is_online(&self, user: Uuid) -> Result<bool, PresenceError> {
        let mut call = self.live.prepare_invoke();
        call.key(self.user_key(user));
        Ok(self.run::<i64>("presence_get", call).await? > 0)
    }

    async fn heartbeat(&self, sessions: &[(Uuid, SessionId)]) -> Result<(), PresenceError> {
        for chunk in sessions.chunks(500) {
            let mut call = self.heartbeat.prepare_invoke();
            call.key(self.all_key()).arg(self.ttl_ms);
            for (user, session) in chunk {
                call.arg(self.user_key(*user))
                    .arg(session.to_string())
                    .arg(format!("{user}:{session}"));
            }
            self.run::<i64>("presence_heartbeat", call).await?;
        }
        Ok(())
    }

    /// One bounded batch per call (the upkeep task calls it every third of
    /// the TTL), so a mass expiry cannot block Redis for long.
    async fn sweep(&self) -> Result<Vec<Uuid>, PresenceError> {
        let mut call = self.sweep.prepare_invoke();
        call.key(self.all_key())
            .arg(format!("{}:presence:user:", self.prefix))
            .arg(1000);
        let users: Vec<String> = self.run("presence_sweep", call).await?;
        Ok(users
            .iter()
            .filter_map(|u| Uuid::parse_str(u).ok())
            .collect())
    }

    async fn ping(&self) -> Result<(), PresenceError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| PresenceError::Unavailable(e.to_string()))
    }

    fn describe(&self) -> String {
        format!("redis (ttl {} ms)", self.ttl_ms)
    }
}
