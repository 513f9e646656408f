//! The `ochat` binary as a new user runs it: a token from `ochat token`
//! works against a node, `ochat migrate` migrates, and bad config is one
//! clear line and a non-zero exit.

use std::process::Command;

use uuid::Uuid;

use crate::helpers::{Backend, TEST_SECRET, TestApp, TestDatabase};

fn ochat(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_ochat"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .output()
        .expect("run ochat")
}

#[tokio::test]
async fn a_token_from_the_cli_opens_the_api() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let id = Uuid::now_v7();
    let out = ochat(
        &[
            "token",
            "--sub",
            &id.to_string(),
            "--email",
            "cli@example.com",
            "--ttl",
            "10m",
        ],
        &[("JWT_SECRET", TEST_SECRET)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let (status, me) = app.get("/users/me", &token).await;
    assert_eq!(status, 200);
    assert_eq!(me["id"], serde_json::json!(id));
    assert_eq!(me["email"], "cli@example.com");
}

#[tokio::test]
async fn migrate_applies_migrations_and_exits() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let out = ochat(
        &["migrate"],
        &[("DATABASE_URL", &db.url), ("JWT_SECRET", TEST_SECRET)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('users', 'messages', 'conversations')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 3);
}

#[test]
fn bad_config_is_one_line_naming_the_variable() {
    let out = ochat(&["serve"], &[("SERVER_PORT", "eighty")]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ochat: invalid SERVER_PORT: expected a port number 0-65535, got \"eighty\"\n"
    );
}

#[test]
fn token_needs_a_secret_when_only_jwks_is_configured() {
    let out = ochat(
        &[
            "token",
            "--sub",
            &Uuid::now_v7().to_string(),
            "--email",
            "x@example.com",
        ],
        &[("JWKS_URL", "https://auth.example.com/jwks.json")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("ochat: ochat token needs JWT_SECRET")
    );
}

/// Logs written to a file or a pipe are plain text: colours are for a
/// terminal only.
#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ochat"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SERVER_PORT", "0")
        .env("METRICS_PORT", "off")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("o.db").display()),
        )
        .env("JWT_SECRET", TEST_SECRET)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run ochat serve");
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.contains("listening");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let output = lines.join("\n");
    assert!(
        output.contains("listening"),
        "the node logged its start:\n{output}"
    );
    assert!(
        !output.contains('\u{1b}'),
        "no escape codes in piped logs:\n{output}"
    );
}
