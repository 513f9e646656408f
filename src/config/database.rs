//! Where history lives: PostgreSQL (and its replica) or an SQLite file.

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, Secret, Vars, bad};

/// Where history lives.
#[derive(Debug, Clone)]
pub enum DatabaseConfig {
    /// Production: a Postgres URL (it may carry a password, hence `Secret`).
    Postgres(Secret),
    /// Embedded default: a SQLite file, created on first start.
    Sqlite(PathBuf),
}

impl DatabaseConfig {
    /// `DATABASE_URL`: PostgreSQL, or an SQLite file (the default).
    pub(super) fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
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

    /// `DATABASE_REPLICA_URL`: a PostgreSQL streaming replica beside a
    /// PostgreSQL database.
    pub(super) fn replica(&self, vars: &Vars) -> Result<Option<Secret>, ConfigError> {
        Ok(match (vars.get("DATABASE_REPLICA_URL"), self) {
            (None, _) => None,
            (Some(url), DatabaseConfig::Postgres(_))
                if url.starts_with("postgres://") || url.starts_with("postgresql://") =>
            {
                Some(Secret::new(url))
            }
            (Some(_), DatabaseConfig::Postgres(_)) => {
                return Err(bad("DATABASE_REPLICA_URL", "expected a postgres:// URL"));
            }
            (Some(_), DatabaseConfig::Sqlite(_)) => {
                return Err(bad(
                    "DATABASE_REPLICA_URL",
                    "a replica needs DATABASE_URL to name PostgreSQL (SQLite has no replicas)",
                ));
            }
        })
    }
}

/// `MESSAGE_RETENTION`: unset keeps messages forever. At least a week:
/// messages expire by the week, and a shorter setting would drop the
/// previous week that nodes keep ready; and a bare number (seconds,
/// elsewhere) cannot expire history by accident.
pub(super) fn retention(vars: &Vars) -> Result<Option<Duration>, ConfigError> {
    let Some(raw) = vars.get("MESSAGE_RETENTION") else {
        return Ok(None);
    };
    match humantime::parse_duration(raw) {
        Ok(d) if d >= WEEK => Ok(Some(d)),
        _ => Err(bad(
            "MESSAGE_RETENTION",
            format!("expected a duration of at least a week, like 90days or 52weeks, got {raw:?}"),
        )),
    }
}

const WEEK: Duration = Duration::from_secs(7 * 86_400);

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(pairs.iter().map(|(k, v)| (*k, *v)))
    }

    #[test]
    fn a_replica_is_a_postgres_url_beside_a_postgres_database() {
        let primary = ("DATABASE_URL", "postgres://db/ochat");
        let err = parse(&[primary, ("DATABASE_REPLICA_URL", "redis://replica")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid DATABASE_REPLICA_URL: expected a postgres:// URL"
        );
        let config = parse(&[
            primary,
            ("DATABASE_REPLICA_URL", "postgresql://replica/ochat"),
        ])
        .unwrap();
        assert_eq!(
            config.database_replica.as_ref().map(|r| r.expose()),
            Some("postgresql://replica/ochat")
        );
        assert!(parse(&[primary]).unwrap().database_replica.is_none());
    }

    #[test]
    fn retention_is_a_duration_of_at_least_a_week() {
        assert!(parse(&[]).unwrap().message_retention.is_none());
        let config = parse(&[("MESSAGE_RETENTION", "90days")]).unwrap();
        assert_eq!(
            config.message_retention,
            Some(std::time::Duration::from_secs(90 * 86_400))
        );
        for raw in ["30", "12h", "6days", "soon"] {
            let err = parse(&[("MESSAGE_RETENTION", raw)]).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid MESSAGE_RETENTION: expected a duration of at least a week, \
                     like 90days or 52weeks, got {raw:?}"
                )
            );
        }
    }
}
