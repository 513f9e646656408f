//! The served OpenAPI document matches the routes: every documented
//! operation is served and answers only with a status it documents, and the
//! README's REST examples are exactly the documented operations.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Backend, TestApp};

async fn document(app: &TestApp) -> Value {
    let response = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "served as JSON"
    );
    response.json().await.unwrap()
}

/// Every (method, path template) the document lists.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.push((method.to_uppercase(), path.clone()));
        }
    }
    ops.sort();
    ops
}

#[tokio::test]
async fn every_documented_operation_is_served_and_answers_as_documented() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let user = app.new_user().await;
    let ops = operations(&doc);
    assert!(ops.len() >= 18, "the REST API is documented: {ops:?}");
    for (method, path) in &ops {
        let op = &doc["paths"][path][method.to_lowercase()];
        // Path parameters get fresh ids: the route must still match.
        let concrete: String = path
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    Uuid::now_v7().to_string()
                } else {
                    s.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let url = format!("http://127.0.0.1:{}{concrete}", app.port);
        let request = app
            .http
            .request(method.parse().unwrap(), &url)
            .bearer_auth(&user.token);
        let request = if matches!(method.as_str(), "POST" | "PATCH") {
            request.json(&json!({}))
        } else {
            request
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{method} {path} is served");
        if status == 404 {
            assert!(
                body["error"]["code"].is_string(),
                "{method} {path}: a 404 from the handler, not an unknown route: {body}"
            );
        }
        assert!(
            op["responses"].get(status.to_string()).is_some(),
            "{method} {path} answered {status}, which it does not document: {body}"
        );
        if status >= 400 {
            assert!(
                body["error"]["code"].is_string() && body["error"]["message"].is_string(),
                "{method} {path}: errors have the documented shape: {body}"
            );
        }
    }
}

/// The REST calls the README shows, as (method, path template): `$API/x/$ID`
/// becomes `/api/v1/x/{…}`; `-X` names the method, `-d` alone means POST.
fn readme_calls() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut calls = Vec::new();
    let mut command = String::new();
    for line in readme.lines() {
        let line = line.split(" # ").next().unwrap_or(line).trim_end();
        if let Some(start) = line.strip_suffix('\\') {
            command.push_str(start);
            continue;
        }
        command.push_str(line);
        let full = std::mem::take(&mut command);
        if !full.trim_start().starts_with("curl ") || !full.contains("$API/") {
            continue;
        }
        let url = full.split("$API/").nth(1).unwrap();
        let url = url.split(['"', ' ', '?']).next().unwrap();
        let template: Vec<String> = url
            .split('/')
            .map(|s| {
                if s.starts_with('$') {
                    "{}".to_owned()
                } else {
                    s.to_owned()
                }
            })
            .collect();
        let method = full
            .split("-X ")
            .nth(1)
            .and_then(|m| m.split_whitespace().next())
            .map(str::to_owned)
            .unwrap_or_else(|| if full.contains(" -d ") { "POST" } else { "GET" }.to_owned());
        calls.push((method, format!("/api/v1/{}", template.join("/"))));
    }
    calls.sort();
    calls.dedup();
    calls
}

#[tokio::test]
async fn the_readme_shows_every_documented_operation_and_nothing_else() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let doc = document(&app).await;
    let mut documented: Vec<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p)| {
            let template: Vec<&str> = p
                .split('/')
                .map(|s| if s.starts_with('{') { "{}" } else { s })
                .collect();
            (m, template.join("/"))
        })
        // Development sign-in exists only on a loopback node without auth.
        .filter(|(_, p)| !p.starts_with("/api/v1/dev/"))
        .collect();
    documented.sort();
    assert_eq!(readme_calls(), documented);
}
