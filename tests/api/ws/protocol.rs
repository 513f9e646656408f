//! The protocol document (`docs/asyncapi.json`) against the README: every
//! example the README shows is a frame of it, and it refuses what the
//! server refuses.

use serde_json::{Value, json};
use uuid::Uuid;

/// The README's protocol tables, with their placeholders filled in: every
/// example it shows is a frame of `docs/asyncapi.json`.
fn readme_examples(section: &str) -> Vec<Value> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find(section)
        .expect("the README has the protocol section");
    let table: String = readme[start + section.len()..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect::<Vec<_>>()
        .join("\n");
    let id = Uuid::now_v7().to_string();
    let mut frames = Vec::new();
    for example in table.split('`').skip(1).step_by(2) {
        if !example.starts_with('{') {
            continue;
        }
        // "<user uuid>", "…" and bare … are placeholders for an id, a time
        // or a number.
        let mut filled = String::new();
        let mut rest = example;
        while let Some(i) = rest.find(['"', '…']) {
            filled.push_str(&rest[..i]);
            if rest[i..].starts_with('…') {
                filled.push('1');
                rest = &rest[i + '…'.len_utf8()..];
                continue;
            }
            let end = rest[i + 1..].find('"').unwrap() + i + 1;
            let text = &rest[i + 1..end];
            let key_before = filled.trim_end().ends_with(':');
            let placeholder = text == "…" || text.starts_with('<');
            let time_key = ["\"timestamp\":", "_at\":"]
                .iter()
                .any(|k| filled.trim_end().ends_with(k));
            if placeholder && key_before && time_key {
                filled.push_str("\"2024-01-01T12:00:00Z\"");
            } else if placeholder {
                filled.push_str(&format!("\"{id}\""));
            } else {
                filled.push_str(&rest[i..=end]);
            }
            rest = &rest[end + 1..];
        }
        filled.push_str(rest);
        if let Ok(frame) = serde_json::from_str::<Value>(&filled) {
            frames.push(frame);
        }
    }
    frames
}

#[test]
fn the_protocol_document_describes_every_readme_example() {
    let protocol = crate::helpers::wsclient::Protocol::get();
    let client = readme_examples("### Client → server");
    assert_eq!(client.len(), 13, "every client example: {client:#?}");
    for frame in &client {
        assert_eq!(protocol.client_errors(frame), None, "{frame}");
    }
    let server = readme_examples("### Server → client");
    // The rows showing `<group>` or `<message frames>` are not JSON; every
    // test checks those frames live, as the server sends them.
    assert_eq!(server.len(), 13, "the server examples: {server:#?}");
    for frame in &server {
        assert_eq!(protocol.server_errors(frame), None, "{frame}");
    }
}

#[test]
fn the_protocol_document_refuses_what_the_server_refuses() {
    let protocol = crate::helpers::wsclient::Protocol::get();
    let id = Uuid::now_v7();
    for bad in [
        json!({"type": "dance"}),
        json!({"content": "no type"}),
        json!({"type": "message", "content": "to nobody"}),
        json!({"type": "message", "to": id, "conversation_id": id, "content": "both"}),
        json!({"type": "message", "to": "not-a-uuid", "content": "x"}),
        json!({"type": "message", "to": id, "content": "x", "client_id": "k".repeat(65)}),
        json!({"type": "typing", "to": id}),
        json!({"type": "mark_read"}),
        json!({"type": "sync", "limit": -1}),
        json!({"type": "sync", "since": id, "cursor": 3}),
        json!({"type": "sync", "cursor": -1}),
        json!({"type": "edit", "message_id": id}),
        json!({"type": "react", "message_id": id, "emoji": "👍", "extra": 1}),
    ] {
        assert!(protocol.client_errors(&bad).is_some(), "refused: {bad}");
    }
    // And a server frame missing what a client relies on is not one.
    assert!(
        protocol
            .server_errors(&json!({"type": "ack", "id": id}))
            .is_some()
    );
}
