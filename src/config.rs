//! Typed settings read once from the environment (and `.env`).
//!
//! Every variable is parsed here and nowhere else; a bad value stops start-up
//! with one line that names the variable. Secrets are wrapped in [`Secret`] so
//! no `Debug` print of the config can leak them.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A string that must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Where history lives.
#[derive(Debug, Clone)]
pub enum DatabaseConfig {
    /// Production: a Postgres URL (it may carry a password, hence `Secret`).
    Postgres(Secret),
    /// Embedded default: a SQLite file, created on first start.
    Sqlite(PathBuf),
}

/// Where the bus and presence of a multi-node deployment live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisConfig {
    /// One Redis server (`REDIS_URL`).
    Single(Secret),
    /// A Redis Cluster, found through these seed nodes (`REDIS_CLUSTER_URLS`):
    /// sharded pub/sub and slot-aware presence keys.
    Cluster(Vec<Secret>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// How tokens are verified.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Supabase's legacy shared secret (HS256).
    pub jwt_secret: Option<Secret>,
    /// Where RS256/ES256 public keys come from; derived from `SUPABASE_URL`
    /// unless `JWKS_URL` names it.
    pub jwks_url: Option<String>,
    /// Accepted `aud` value (Supabase: `authenticated`).
    pub audience: String,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    pub leeway_secs: u64,
    /// Least time between two JWKS fetches triggered by unknown `kid`s.
    pub jwks_refetch_interval: Duration,
    /// How old the fetched key set may grow before it is fetched again (a
    /// key the provider dropped stops verifying within this).
    pub jwks_refresh_interval: Duration,
}

impl AuthConfig {
    /// With neither a secret nor a JWKS source the node runs in development
    /// mode (a generated secret, loopback only).
    pub fn is_development(&self) -> bool {
        self.jwt_secret.is_none() && self.jwks_url.is_none()
    }
}

/// Per-connection and per-request limits. Defaults follow DESIGN.md.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Message content, in characters after trimming.
    pub max_content_chars: usize,
    /// Largest WebSocket frame accepted; larger closes the socket with 1009.
    pub max_frame_bytes: usize,
    /// Largest REST request body.
    pub max_body_bytes: usize,
    /// A signed-in user's budget (every frame and REST request, across
    /// their sockets on a node): refill per second.
    pub rate_per_sec: f64,
    /// A signed-in user's budget: burst.
    pub rate_burst: u32,
    /// An address's budget for requests without a valid token: refill per
    /// second.
    pub anonymous_rate_per_sec: f64,
    /// An address's budget: burst.
    pub anonymous_rate_burst: u32,
    /// Take a request's address from the last `X-Forwarded-For` entry (the
    /// one the load balancer in front added). Only behind one: otherwise
    /// a client picks its own address.
    pub trust_forwarded_for: bool,
    /// Sessions one user may hold on one node.
    pub max_sessions_per_user: usize,
    /// Frames queued for one session before it counts as slow.
    pub send_queue: usize,
    /// Bytes queued for one session before it counts as slow (a frame can
    /// be megabytes: the count of frames alone bounds nothing).
    pub send_queue_bytes: usize,
    /// How far behind a client may fall (its socket write blocked, or a
    /// ping written behind its frames not answered) before it is closed.
    pub slow_consumer_timeout: Duration,
    /// Sends of one socket committed concurrently.
    pub max_in_flight: usize,
    /// How often the server pings each socket.
    pub ping_interval: Duration,
    /// A socket silent for this long is dropped as dead.
    pub idle_timeout: Duration,
    /// Members of one group, its owner included (at least 2).
    pub max_group_members: u32,
    /// Presence and typing reach group co-members only in groups of at most
    /// this many members (0: never through groups).
    pub presence_group_limit: u32,
    /// Open TCP connections (WebSockets included) one node holds; past it a
    /// new connection is closed at once.
    pub max_connections: usize,
    /// A request's headers must arrive within this (slowloris).
    pub header_read_timeout: Duration,
    /// A REST request's body must arrive within this.
    pub request_body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_content_chars: 4000,
            max_frame_bytes: 64 * 1024,
            max_body_bytes: 64 * 1024,
            rate_per_sec: 20.0,
            // A device back from a long absence pages `sync` in a burst.
            rate_burst: 100,
            anonymous_rate_per_sec: 20.0,
            anonymous_rate_burst: 50,
            trust_forwarded_for: false,
            max_sessions_per_user: 10,
            send_queue: 256,
            send_queue_bytes: 1024 * 1024,
            slow_consumer_timeout: Duration::from_secs(5),
            max_in_flight: 32,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            max_group_members: 256,
            presence_group_limit: 50,
            max_connections: 20_000,
            header_read_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server_host: IpAddr,
    pub server_port: u16,
    /// Prometheus listener; `None` when `METRICS_PORT=off`.
    pub metrics_port: Option<u16>,
    pub database: DatabaseConfig,
    pub db_max_connections: u32,
    /// Concurrent group-commit writers (`None`: 2 for Postgres, 1 for SQLite).
    pub write_lanes: Option<usize>,
    /// Most messages in one group commit.
    pub write_batch: usize,
    /// How long a batch whose commit answer was lost (the connection died
    /// during it) waits for storage to say which of its messages landed.
    pub commit_settle_timeout: Duration,
    /// How long an embedded-database writer waits for the write lock before
    /// the send fails as `unavailable`.
    pub sqlite_busy_timeout: Duration,
    /// `None`: the embedded in-process bus and presence (one node).
    pub redis: Option<RedisConfig>,
    /// Prefix of every Redis key and channel, so deployments can share a server.
    pub redis_prefix: String,
    /// How often each node pings its pub/sub connection.
    pub redis_probe_interval: Duration,
    pub auth: AuthConfig,
    /// Browser origins allowed for CORS and WebSocket upgrades.
    pub allowed_origins: Vec<String>,
    pub node_id: String,
    pub log_format: LogFormat,
    pub limits: Limits,
    /// Presence keys expire this long after the owning node's last refresh.
    pub presence_ttl: Duration,
    /// How long a gap in a user's live message sequence may stay open
    /// (frames overtaking each other) before it is filled from storage.
    pub gap_grace: Duration,
    /// Longest a drain may take after SIGTERM.
    pub shutdown_grace: Duration,
}

/// A configuration problem, printed as one line naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

fn bad(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        problem: problem.into(),
    }
}

/// Reads variables, treating empty values as unset (as `.env` templates do).
struct Vars(HashMap<String, String>);

impl Vars {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn parse<T: std::str::FromStr>(
        &self,
        var: &'static str,
        default: T,
        what: &str,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|_| bad(var, format!("expected {what}, got {raw:?}"))),
        }
    }

    fn positive<T: std::str::FromStr + PartialOrd + Default>(
        &self,
        var: &'static str,
        default: T,
        what: &str,
    ) -> Result<T, ConfigError> {
        let value = self.parse(var, default, what)?;
        if value <= T::default() {
            return Err(bad(
                var,
                format!("expected {what}, got {:?}", self.get(var).unwrap_or("")),
            ));
        }
        Ok(value)
    }

    /// Durations as `30s`, `500ms`, `2m`, or a bare number of seconds.
    fn duration(&self, var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(default);
        };
        let parsed = match raw.parse::<u64>() {
            Ok(secs) => Ok(Duration::from_secs(secs)),
            Err(_) => humantime::parse_duration(raw),
        };
        match parsed {
            Ok(d) if !d.is_zero() => Ok(d),
            _ => Err(bad(
                var,
                format!("expected a positive duration like 30s or 500ms, got {raw:?}"),
            )),
        }
    }
}

impl Config {
    /// Reads the process environment; call `dotenvy::dotenv()` first to
    /// include `.env`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Builds a config from explicit pairs, as tests do.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
    ) -> Result<Self, ConfigError> {
        let vars = Vars(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );

        let server_host = match vars.get("SERVER_HOST") {
            None | Some("localhost") => IpAddr::from([127, 0, 0, 1]),
            Some(raw) => raw.parse().map_err(|_| {
                bad(
                    "SERVER_HOST",
                    format!("expected an IP address, got {raw:?}"),
                )
            })?,
        };
        let server_port = vars.parse("SERVER_PORT", 8080u16, "a port number 0-65535")?;
        let metrics_port = match vars.get("METRICS_PORT") {
            Some("off") => None,
            _ => Some(vars.parse("METRICS_PORT", 9090u16, "a port number 0-65535 or off")?),
        };

        let database = DatabaseConfig::from_vars(&vars)?;
        let db_max_connections = vars.positive(
            "DB_MAX_CONNECTIONS",
            20u32,
            "a positive number of connections",
        )?;

        let redis = RedisConfig::from_vars(&vars)?;
        let redis_prefix = vars.get("REDIS_PREFIX").unwrap_or("ochat").to_owned();

        let auth = AuthConfig::from_vars(&vars)?;

        let allowed_origins = allowed_origins(&vars)?;

        let node_id = match vars.get("NODE_ID") {
            Some(id) => id.to_owned(),
            None => hostname(),
        };
        let log_format = LogFormat::from_vars(&vars)?;

        let limits = Limits::from_vars(&vars)?;

        Ok(Config {
            server_host,
            server_port,
            metrics_port,
            database,
            db_max_connections,
            write_lanes: match vars.get("WRITE_LANES") {
                None => None,
                Some(_) => Some(vars.positive("WRITE_LANES", 1usize, "a positive number")?),
            },
            write_batch: vars.positive("WRITE_BATCH", 512usize, "a positive number")?,
            commit_settle_timeout: vars
                .duration("COMMIT_SETTLE_TIMEOUT", Duration::from_secs(10))?,
            sqlite_busy_timeout: vars.duration("SQLITE_BUSY_TIMEOUT", Duration::from_secs(5))?,
            redis,
            redis_prefix,
            redis_probe_interval: vars.duration("REDIS_PROBE_INTERVAL", Duration::from_secs(5))?,
            auth,
            allowed_origins,
            node_id,
            log_format,
            limits,
            presence_ttl: vars.duration("PRESENCE_TTL", Duration::from_secs(30))?,
            gap_grace: vars.duration("GAP_GRACE", Duration::from_millis(500))?,
            shutdown_grace: vars.duration("SHUTDOWN_GRACE", Duration::from_secs(25))?,
        })
    }
}

impl DatabaseConfig {
    fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(match vars.get("DATABASE_URL") {
            None => DatabaseConfig::Sqlite(PathBuf::from("ochat.db")),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                DatabaseConfig::Postgres(Secret::new(url))
            }
            Some(url) if url.starts_with("sqlite:") => {
                let path = url
                    .trim_start_matches("sqlite:")
                    .trim_start_matches("//")
                    .split('?')
                    .next()
                    .unwrap_or_default();
                if path.is_empty() {
                    return Err(bad(
                        "DATABASE_URL",
                        "a sqlite URL needs a file path, like sqlite://ochat.db",
                    ));
                }
                DatabaseConfig::Sqlite(PathBuf::from(path))
            }
            Some(_) => {
                return Err(bad(
                    "DATABASE_URL",
                    "expected a postgres:// or sqlite:// URL",
                ));
            }
        })
    }
}

impl RedisConfig {
    /// One Redis, a cluster's seed nodes, or none (embedded bus).
    fn from_vars(vars: &Vars) -> Result<Option<Self>, ConfigError> {
        let is_redis_url = |url: &str| url.starts_with("redis://") || url.starts_with("rediss://");
        Ok(
            match (vars.get("REDIS_URL"), vars.get("REDIS_CLUSTER_URLS")) {
                (None, None) => None,
                (Some(_), Some(_)) => {
                    return Err(bad(
                        "REDIS_CLUSTER_URLS",
                        "set either REDIS_URL (one Redis) or REDIS_CLUSTER_URLS (a Redis Cluster), not both",
                    ));
                }
                (Some(url), None) if is_redis_url(url) => {
                    Some(RedisConfig::Single(Secret::new(url)))
                }
                (Some(_), None) => {
                    return Err(bad("REDIS_URL", "expected a redis:// or rediss:// URL"));
                }
                (None, Some(list)) => {
                    let urls: Vec<&str> = list.split(',').map(str::trim).collect();
                    if urls.iter().any(|u| !is_redis_url(u)) {
                        return Err(bad(
                            "REDIS_CLUSTER_URLS",
                            "expected comma-separated redis:// or rediss:// seed node URLs",
                        ));
                    }
                    Some(RedisConfig::Cluster(
                        urls.into_iter().map(Secret::new).collect(),
                    ))
                }
            },
        )
    }
}

impl AuthConfig {
    fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        // Signing keys fetched over plain HTTP could be swapped by anyone
        // on the path: https only, but for a server on this machine.
        let supabase_url = match vars.get("SUPABASE_URL") {
            None => None,
            Some(url) if is_key_source(url) => Some(url.trim_end_matches('/').to_owned()),
            Some(_) => {
                return Err(bad(
                    "SUPABASE_URL",
                    "expected an https:// URL (http:// only on loopback)",
                ));
            }
        };
        let jwks_url = match vars.get("JWKS_URL") {
            Some(url) if is_key_source(url) => Some(url.to_owned()),
            Some(_) => {
                return Err(bad(
                    "JWKS_URL",
                    "expected an https:// URL (http:// only on loopback)",
                ));
            }
            None => supabase_url.map(|base| format!("{base}/auth/v1/.well-known/jwks.json")),
        };
        let jwt_secret = vars.get("JWT_SECRET").map(Secret::new);
        if jwt_secret.as_ref().is_some_and(|s| s.expose().len() < 32) {
            return Err(bad("JWT_SECRET", "must be at least 32 characters"));
        }
        Ok(AuthConfig {
            jwt_secret,
            jwks_url,
            audience: vars
                .get("JWT_AUDIENCE")
                .unwrap_or("authenticated")
                .to_owned(),
            issuer: vars.get("JWT_ISSUER").map(str::to_owned),
            leeway_secs: vars.parse("JWT_LEEWAY_SECS", 30u64, "a number of seconds")?,
            jwks_refetch_interval: vars
                .duration("JWKS_REFETCH_INTERVAL", Duration::from_secs(30))?,
            jwks_refresh_interval: vars
                .duration("JWKS_REFRESH_INTERVAL", Duration::from_secs(600))?,
        })
    }
}

/// Browser origins allowed to call the API (CORS) and open sockets.
fn allowed_origins(vars: &Vars) -> Result<Vec<String>, ConfigError> {
    let allowed_origins = vars
        .get("ALLOWED_ORIGINS")
        .map(|raw| {
            raw.split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for origin in &allowed_origins {
        if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
            return Err(bad(
                "ALLOWED_ORIGINS",
                format!("expected comma-separated http(s) origins, got {origin:?}"),
            ));
        }
    }
    Ok(allowed_origins)
}

impl LogFormat {
    fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(match vars.get("LOG_FORMAT") {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(bad(
                    "LOG_FORMAT",
                    format!("expected json or pretty, got {other:?}"),
                ));
            }
        })
    }
}

impl Limits {
    /// Every limit a client can push against, each defaulting to
    /// [`Limits::default`].
    fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let d = Limits::default();
        let limits = Limits {
            max_content_chars: vars.positive(
                "MAX_MESSAGE_CHARS",
                d.max_content_chars,
                "a positive number",
            )?,
            max_frame_bytes: vars.positive(
                "MAX_FRAME_BYTES",
                d.max_frame_bytes,
                "a positive number of bytes",
            )?,
            max_body_bytes: vars.positive(
                "MAX_BODY_BYTES",
                d.max_body_bytes,
                "a positive number of bytes",
            )?,
            rate_per_sec: vars.positive(
                "RATE_LIMIT_PER_SEC",
                d.rate_per_sec,
                "a positive number",
            )?,
            rate_burst: vars.positive("RATE_LIMIT_BURST", d.rate_burst, "a positive number")?,
            anonymous_rate_per_sec: vars.positive(
                "ANONYMOUS_RATE_LIMIT_PER_SEC",
                d.anonymous_rate_per_sec,
                "a positive number",
            )?,
            anonymous_rate_burst: vars.positive(
                "ANONYMOUS_RATE_LIMIT_BURST",
                d.anonymous_rate_burst,
                "a positive number",
            )?,
            trust_forwarded_for: vars.parse(
                "TRUST_X_FORWARDED_FOR",
                d.trust_forwarded_for,
                "true or false",
            )?,
            max_sessions_per_user: vars.positive(
                "MAX_SESSIONS_PER_USER",
                d.max_sessions_per_user,
                "a positive number",
            )?,
            send_queue: vars.positive("SEND_QUEUE", d.send_queue, "a positive number of frames")?,
            send_queue_bytes: vars.positive(
                "SEND_QUEUE_BYTES",
                d.send_queue_bytes,
                "a positive number of bytes",
            )?,
            slow_consumer_timeout: vars
                .duration("SLOW_CONSUMER_TIMEOUT", d.slow_consumer_timeout)?,
            max_in_flight: vars.positive(
                "MAX_IN_FLIGHT",
                d.max_in_flight,
                "a positive number of sends",
            )?,
            ping_interval: vars.duration("WS_PING_INTERVAL", d.ping_interval)?,
            idle_timeout: vars.duration("WS_IDLE_TIMEOUT", d.idle_timeout)?,
            max_group_members: vars.parse(
                "MAX_GROUP_MEMBERS",
                d.max_group_members,
                "a number of members of at least 2",
            )?,
            presence_group_limit: vars.parse(
                "PRESENCE_GROUP_LIMIT",
                d.presence_group_limit,
                "a number of members",
            )?,
            max_connections: vars.positive(
                "MAX_CONNECTIONS",
                d.max_connections,
                "a positive number of connections",
            )?,
            header_read_timeout: vars.duration("HEADER_READ_TIMEOUT", d.header_read_timeout)?,
            request_body_timeout: vars.duration("REQUEST_BODY_TIMEOUT", d.request_body_timeout)?,
        };
        if limits.max_group_members < 2 {
            return Err(bad(
                "MAX_GROUP_MEMBERS",
                format!(
                    "expected a number of members of at least 2, got {:?}",
                    vars.get("MAX_GROUP_MEMBERS").unwrap_or("")
                ),
            ));
        }
        Ok(limits)
    }
}

/// An https URL, or an http one whose host is this machine.
fn is_key_source(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ochat".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(pairs.iter().map(|(k, v)| (*k, *v)))
    }

    #[test]
    fn defaults_are_the_embedded_single_node() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.server_port, 8080);
        assert_eq!(config.server_host, IpAddr::from([127, 0, 0, 1]));
        assert!(
            matches!(config.database, DatabaseConfig::Sqlite(ref p) if p == &PathBuf::from("ochat.db"))
        );
        assert!(config.redis.is_none());
        assert!(config.auth.is_development());
        assert_eq!(config.metrics_port, Some(9090));
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "SERVER_PORT",
                "eighty",
                "invalid SERVER_PORT: expected a port number 0-65535, got \"eighty\"",
            ),
            (
                "SERVER_HOST",
                "not an ip",
                "invalid SERVER_HOST: expected an IP address, got \"not an ip\"",
            ),
            (
                "DATABASE_URL",
                "mysql://x",
                "invalid DATABASE_URL: expected a postgres:// or sqlite:// URL",
            ),
            (
                "REDIS_URL",
                "localhost:6379",
                "invalid REDIS_URL: expected a redis:// or rediss:// URL",
            ),
            (
                "REDIS_CLUSTER_URLS",
                "redis://127.0.0.1:7000,127.0.0.1:7001",
                "invalid REDIS_CLUSTER_URLS: expected comma-separated redis:// or rediss:// seed node URLs",
            ),
            (
                "JWT_SECRET",
                "short",
                "invalid JWT_SECRET: must be at least 32 characters",
            ),
            (
                "LOG_FORMAT",
                "xml",
                "invalid LOG_FORMAT: expected json or pretty, got \"xml\"",
            ),
            (
                "ALLOWED_ORIGINS",
                "example.com",
                "invalid ALLOWED_ORIGINS: expected comma-separated http(s) origins, got \"example.com\"",
            ),
            (
                "MAX_MESSAGE_CHARS",
                "0",
                "invalid MAX_MESSAGE_CHARS: expected a positive number, got \"0\"",
            ),
            (
                "SHUTDOWN_GRACE",
                "soon",
                "invalid SHUTDOWN_GRACE: expected a positive duration like 30s or 500ms, got \"soon\"",
            ),
            (
                "SUPABASE_URL",
                "project.supabase.co",
                "invalid SUPABASE_URL: expected an https:// URL (http:// only on loopback)",
            ),
            (
                "SUPABASE_URL",
                "http://abc.supabase.co",
                "invalid SUPABASE_URL: expected an https:// URL (http:// only on loopback)",
            ),
            (
                "JWKS_URL",
                "http://10.0.0.7/jwks.json",
                "invalid JWKS_URL: expected an https:// URL (http:// only on loopback)",
            ),
            (
                "JWKS_URL",
                "http://127.0.0.1@keys.example/jwks.json",
                "invalid JWKS_URL: expected an https:// URL (http:// only on loopback)",
            ),
            (
                "MAX_IN_FLIGHT",
                "0",
                "invalid MAX_IN_FLIGHT: expected a positive number of sends, got \"0\"",
            ),
            (
                "GAP_GRACE",
                "0ms",
                "invalid GAP_GRACE: expected a positive duration like 30s or 500ms, got \"0ms\"",
            ),
            (
                "MAX_GROUP_MEMBERS",
                "1",
                "invalid MAX_GROUP_MEMBERS: expected a number of members of at least 2, got \"1\"",
            ),
            (
                "PRESENCE_GROUP_LIMIT",
                "-5",
                "invalid PRESENCE_GROUP_LIMIT: expected a number of members, got \"-5\"",
            ),
        ];
        for (var, value, expected) in cases {
            let err = parse(&[(var, value)]).expect_err(var);
            assert_eq!(err.to_string(), *expected);
        }
    }

    #[test]
    fn one_redis_or_a_cluster_never_both() {
        let both = parse(&[
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("REDIS_CLUSTER_URLS", "redis://127.0.0.1:7000"),
        ])
        .expect_err("both set");
        assert_eq!(
            both.to_string(),
            "invalid REDIS_CLUSTER_URLS: set either REDIS_URL (one Redis) or REDIS_CLUSTER_URLS (a Redis Cluster), not both"
        );
        let cluster = parse(&[(
            "REDIS_CLUSTER_URLS",
            " redis://127.0.0.1:7000, redis://127.0.0.1:7001 ",
        )])
        .unwrap();
        assert_eq!(
            cluster.redis,
            Some(RedisConfig::Cluster(vec![
                Secret::new("redis://127.0.0.1:7000"),
                Secret::new("redis://127.0.0.1:7001"),
            ]))
        );
    }

    #[test]
    fn supabase_url_implies_its_jwks_endpoint() {
        let config = parse(&[("SUPABASE_URL", "https://abc.supabase.co/")]).unwrap();
        assert_eq!(
            config.auth.jwks_url.as_deref(),
            Some("https://abc.supabase.co/auth/v1/.well-known/jwks.json")
        );
        assert!(!config.auth.is_development());
    }

    #[test]
    fn plain_http_key_sources_only_on_loopback() {
        for url in [
            "https://abc.supabase.co/auth/v1/.well-known/jwks.json",
            "http://127.0.0.1:9999/jwks.json",
            "http://127.8.0.1/jwks.json",
            "http://localhost:54321/jwks.json",
            "http://[::1]:54321/jwks.json",
        ] {
            let config = parse(&[("JWKS_URL", url)]).expect(url);
            assert_eq!(config.auth.jwks_url.as_deref(), Some(url));
        }
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let config = parse(&[
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef-very-secret"),
            ("DATABASE_URL", "postgres://u:hunter2@db/ochat"),
        ])
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        let config = parse(&[("PRESENCE_TTL", "1500ms"), ("SHUTDOWN_GRACE", "10")]).unwrap();
        assert_eq!(config.presence_ttl, Duration::from_millis(1500));
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
    }
}
