//! Typed settings read once from the environment (and `.env`).
//!
//! Every variable is parsed here and nowhere else; a bad value stops start-up
//! with one line that names the variable. Secrets are wrapped in [`Secret`] so
//! no `Debug` print of the config can leak them.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

mod auth;
mod database;
mod files;
mod limits;

pub use auth::AuthConfig;
pub use database::DatabaseConfig;
pub use files::{FileStoreConfig, FilesConfig};
pub use limits::Limits;

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

#[derive(Debug, Clone)]
pub struct Config {
    pub server_host: IpAddr,
    pub server_port: u16,
    /// Prometheus listener; `None` when `METRICS_PORT=off`.
    pub metrics_port: Option<u16>,
    pub database: DatabaseConfig,
    /// A PostgreSQL streaming replica for reads that tolerate lag
    /// (`DATABASE_REPLICA_URL`).
    pub database_replica: Option<Secret>,
    /// `MESSAGE_RETENTION`: how long messages are kept (whole weeks expire
    /// once they end this long ago); `None`, the default: forever.
    pub message_retention: Option<Duration>,
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
    /// Where attachments live and what may be attached.
    pub files: FilesConfig,
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
        let database_replica = database.replica(&vars)?;
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
        let files = FilesConfig::from_vars(&vars, &database)?;

        Ok(Config {
            server_host,
            server_port,
            metrics_port,
            database,
            database_replica,
            message_retention: database::retention(&vars)?,
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
            files,
            presence_ttl: vars.duration("PRESENCE_TTL", Duration::from_secs(30))?,
            gap_grace: vars.duration("GAP_GRACE", Duration::from_millis(500))?,
            shutdown_grace: vars.duration("SHUTDOWN_GRACE", Duration::from_secs(25))?,
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
    use std::path::PathBuf;

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
                "DATABASE_REPLICA_URL",
                "postgres://replica/ochat",
                "invalid DATABASE_REPLICA_URL: a replica needs DATABASE_URL to name PostgreSQL (SQLite has no replicas)",
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
            ("DATABASE_REPLICA_URL", "postgres://u:hunter3@replica/ochat"),
        ])
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("hunter3"), "{printed}");
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        let config = parse(&[("PRESENCE_TTL", "1500ms"), ("SHUTDOWN_GRACE", "10")]).unwrap();
        assert_eq!(config.presence_ttl, Duration::from_millis(1500));
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
    }
}
