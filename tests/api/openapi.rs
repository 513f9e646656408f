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

/// `docs/openapi.json` is the document the server serves: the client
/// library's REST types are generated from that file, so a change to the
/// API that is not written there fails here (and a change written there
/// but not generated fails the client's check). `UPDATE_OPENAPI=1` rewrites
/// the file.
#[tokio::test]
async fn the_checked_in_document_is_the_served_one() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let served = document(&app).await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        // serde_json's maps are sorted: the file's order is stable.
        let text = serde_json::to_string_pretty(&served).unwrap() + "\n";
        std::fs::write(path, text).unwrap();
    }
    let checked_in: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(
        checked_in == served,
        "docs/openapi.json differs from the served document: run \
         `UPDATE_OPENAPI=1 cargo test --test api the_checked_in_document`, then \
         `npm run generate` in clients/js"
    );
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

/// The 200 answer of `GET path` for `token`, checked against the schema
/// the document gives for it.
async fn conforms(app: &TestApp, doc: &Value, path: &str, token: &str) -> Value {
    let (status, body) = app.get(path, token).await;
    assert_eq!(status, 200, "{path}: {body}");
    let template = path.split('?').next().unwrap();
    let (documented, op) = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .find_map(|(p, item)| {
            let same = p.trim_start_matches("/api/v1").split('/').count()
                == template.split('/').count()
                && p.trim_start_matches("/api/v1")
                    .split('/')
                    .zip(template.split('/'))
                    .all(|(a, b)| a == b || a.starts_with('{'));
            same.then(|| (p.clone(), item["get"].clone()))
        })
        .unwrap_or_else(|| panic!("{path} is documented"));
    let schema = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].clone();
    let errors = schema_errors(doc, &schema, &body);
    assert!(
        errors.is_empty(),
        "{documented} answers as documented: {errors:?}\n{body}"
    );
    body
}

/// Why `body` does not match the document's schema `reference`.
fn schema_errors(doc: &Value, reference: &Value, body: &Value) -> Vec<String> {
    let schema = json!({"$ref": reference, "components": doc["components"]});
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{reference}'s schema compiles: {e}"));
    validator
        .iter_errors(body)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

/// What fuzzing with random ids rarely reaches: real direct and group
/// conversations, read back through every REST read, match the document.
#[tokio::test]
async fn answers_about_real_conversations_match_their_schemas() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = TestApp::spawn(backend).await;
        let (a, b, c) = (
            app.new_user().await,
            app.new_user().await,
            app.new_user().await,
        );
        let first = app.send(&a, &b, "hello bob").await;
        app.send(&b, &a, "hello alice").await;
        let group = app.create_group(&a, "schemas", &[&b, &c]).await;
        let doc = document(&app).await;

        let list = conforms(&app, &doc, "/messages/conversations", &a.token).await;
        let kinds: Vec<&str> = list["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds.len(), 2, "a direct conversation and a group: {list}");
        assert!(kinds.contains(&"direct") && kinds.contains(&"group"));
        // And the check has teeth: a wrongly typed field fails it.
        let mut wrong = list.clone();
        wrong["conversations"][0]["unread_count"] = json!("two");
        let reference = json!("#/components/schemas/ConversationList");
        assert!(!schema_errors(&doc, &reference, &wrong).is_empty());
        let page = conforms(
            &app,
            &doc,
            &format!("/messages/conversation?with_user={}", b.id),
            &a.token,
        )
        .await;
        assert_eq!(page["messages"].as_array().unwrap().len(), 2);
        conforms(
            &app,
            &doc,
            &format!("/messages/conversation?conversation_id={group}"),
            &a.token,
        )
        .await;
        let found = conforms(&app, &doc, "/messages/search?query=hello", &b.token).await;
        assert_eq!(found["messages"].as_array().unwrap().len(), 2);
        conforms(&app, &doc, "/messages/stats", &a.token).await;
        conforms(&app, &doc, "/users/me", &a.token).await;
        conforms(&app, &doc, &format!("/users/{}", b.id), &a.token).await;
        conforms(&app, &doc, &format!("/conversations/{group}"), &c.token).await;
        assert_eq!(first.receiver_id, Some(b.id));
    }
}
