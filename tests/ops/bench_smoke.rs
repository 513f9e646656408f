//! A few seconds of every load-tool scenario against a real node, so the
//! tool cannot rot. Nothing here is timed: numbers live in docs/benchmarks.md.

use std::process::Command;

use serde_json::Value;

use crate::helpers::{Backend, TEST_SECRET, TestApp, TestDatabase};

fn bench(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("result.json");
    let status = Command::new(env!("CARGO_BIN_EXE_ochat-bench"))
        .args(args)
        .args(["--out", out.to_str().unwrap()])
        .env("JWT_SECRET", TEST_SECRET)
        .status()
        .expect("run ochat-bench");
    assert!(status.success(), "ochat-bench {args:?}: {status}");
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tool_runs_every_scenario() {
    let limits = [
        ("RATE_LIMIT_PER_SEC", "100000"),
        ("RATE_LIMIT_BURST", "100000"),
        // The product's default: the tests' 500 ms (which makes a test that
        // holds the write lock fail fast) refused a batch of 49 connects
        // once, while the suite's other servers loaded the disk and the
        // idle scenario's 60 departures were being written.
        ("SQLITE_BUSY_TIMEOUT", "5s"),
    ];
    let app = TestApp::spawn_with(Backend::Sqlite, &limits).await;
    let url = format!("http://127.0.0.1:{}", app.port);
    let url2 = url.clone();
    let latency = tokio::task::spawn_blocking(move || {
        bench(&[
            "latency",
            "--urls",
            &url2,
            "--rate",
            "200",
            "--pairs",
            "4",
            "--duration",
            "1s",
        ])
    })
    .await
    .unwrap();
    let step = &latency["steps"][0];
    assert!(step["sent"].as_u64().unwrap() > 0, "{latency}");
    assert_eq!(step["delivered"], step["sent"], "{latency}");
    assert_eq!(step["acked"], step["sent"], "{latency}");

    let url2 = url.clone();
    let idle = tokio::task::spawn_blocking(move || {
        bench(&[
            "idle",
            "--urls",
            &url2,
            "--connections",
            "60",
            "--hold",
            "100ms",
            "--sources",
            "2",
        ])
    })
    .await
    .unwrap();
    assert_eq!(idle["held"], 60, "{idle}");

    let url2 = url.clone();
    let storm = tokio::task::spawn_blocking(move || {
        bench(&["connect", "--urls", &url2, "--connections", "50"])
    })
    .await
    .unwrap();
    assert_eq!(storm["opened"], 50, "{storm}");

    let url2 = url.clone();
    let group = tokio::task::spawn_blocking(move || {
        bench(&[
            "group",
            "--urls",
            &url2,
            "--members",
            "8",
            "--senders",
            "2",
            "--rates",
            "20",
            "--duration",
            "1s",
        ])
    })
    .await
    .unwrap();
    let step = &group["steps"][0];
    let sent = step["sent"].as_u64().unwrap();
    assert!(sent > 0, "{group}");
    assert_eq!(
        step["delivered"],
        sent * 6,
        "every receiving member: {group}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_data_serves_the_rest_scenario() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let url = db.url.clone();
    let status = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ochat-bench"))
            .args([
                "seed",
                "--database-url",
                &url,
                "--users",
                "20",
                "--messages",
                "400",
                "--partners",
                "3",
            ])
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(status.success());
    let app = TestApp::spawn_on(std::sync::Arc::new(db), &[]).await;
    let url = format!("http://127.0.0.1:{}", app.port);
    let rest = tokio::task::spawn_blocking(move || {
        bench(&[
            "rest",
            "--urls",
            &url,
            "--users",
            "20",
            "--requests",
            "20",
            "--concurrency",
            "2",
        ])
    })
    .await
    .unwrap();
    for kind in ["conversation", "conversations", "search", "stats"] {
        assert_eq!(rest["results"][kind]["failures"], 0, "{kind}: {rest}");
        assert_eq!(
            rest["results"][kind]["latency_ms"]["count"], 20,
            "{kind}: {rest}"
        );
    }
}
