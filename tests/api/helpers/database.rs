//! Databases a test owns: a fresh PostgreSQL database or SQLite file, a
//! store on one, and storage outages.

//! Shared test plumbing: fresh databases, real servers on port 0, tokens.

use std::sync::Arc;

use ochat::Config;
use ochat::store::Store;
use sqlx::Connection;
use uuid::Uuid;

use super::{Backend, TEST_SECRET, TestApp};

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test and is dropped after it. A test that
/// cannot reach Postgres fails: the suite never skips a backend silently.
pub struct TestDatabase {
    pub url: String,
    name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A database on a server the test started itself (which goes with
    /// it): nothing to drop.
    pub fn on_own_server(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            name: None,
            _dir: None,
        }
    }

    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => {
                let name = format!("ochat_test_{}", Uuid::now_v7().simple());
                let admin = postgres_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("Postgres must be reachable at {admin}: {e}"));
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                Self {
                    url: format!("{base}/{name}"),
                    name: Some(name),
                    _dir: None,
                }
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("ochat.db").display());
                Self {
                    url,
                    name: None,
                    _dir: Some(dir),
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.name.take() else { return };
        let admin = postgres_admin_url();
        // Drop runs inside a test's runtime; a fresh one on its own thread
        // can block on the cleanup without upsetting it.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// A store on a fresh database, for the contract suite.
pub async fn test_store(backend: Backend) -> (Arc<dyn Store>, TestDatabase) {
    let db = TestDatabase::new(backend).await;
    let config = Config::from_vars([
        ("DATABASE_URL", db.url.as_str()),
        ("JWT_SECRET", TEST_SECRET),
    ])
    .unwrap();
    let store = ochat::store::open(&config).await.expect("open store");
    (store, db)
}

/// Makes a node's storage unreachable while it lives: Postgres refuses the
/// test database's connections (and drops the open ones); SQLite's write lock
/// is held by another connection.
pub enum StorageOutage {
    Postgres {
        admin: sqlx::PgConnection,
        name: String,
    },
    Sqlite {
        conn: sqlx::SqliteConnection,
    },
}

impl StorageOutage {
    pub async fn start(app: &TestApp, backend: Backend) -> Self {
        let db = app.database();
        match backend {
            Backend::Postgres => {
                let name = db.name.clone().expect("postgres test database");
                let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
                    .await
                    .unwrap();
                for sql in [
                    format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
                    format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                    ),
                ] {
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut admin)
                        .await
                        .unwrap();
                }
                Self::Postgres { admin, name }
            }
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
                sqlx::query("BEGIN EXCLUSIVE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Self::Sqlite { conn }
            }
        }
    }

    pub async fn end(self) {
        match self {
            Self::Postgres { mut admin, name } => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER DATABASE {name} ALLOW_CONNECTIONS true"
                )))
                .execute(&mut admin)
                .await
                .unwrap();
            }
            Self::Sqlite { mut conn } => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
        }
    }
}
