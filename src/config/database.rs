//! Where history lives: PostgreSQL (and its replica) or an SQLite file.

use std::path::PathBuf;

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
}
