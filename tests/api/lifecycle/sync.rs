//! A device offline while messages are edited, deleted and reacted to
//! converges through `sync` to exactly what a device that stayed online saw.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::wsclient::WsClient;
use crate::helpers::{Backend, TestApp};

both_backends!(an_offline_device_converges_to_the_online_view);

/// What a device shows of one message: its text, whether it is a
/// tombstone, and who reacted with what.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Shown {
    content: String,
    deleted: bool,
    reactions: BTreeSet<(String, String)>,
}

/// A device's view, built from frames as a client would.
#[derive(Debug, Default, PartialEq, Eq)]
struct View(BTreeMap<String, Shown>);

impl View {
    fn apply(&mut self, frame: &Value) {
        let id = |key: &str| frame[key].as_str().unwrap().to_owned();
        let text = |key: &str| frame[key].as_str().unwrap_or_default().to_owned();
        match frame["type"].as_str() {
            Some("message") | None => {
                let shown = self.0.entry(id("id")).or_default();
                shown.content = text("content");
                shown.deleted = frame.get("deleted_at").is_some();
            }
            Some("message_updated") => {
                self.0.get_mut(&id("id")).unwrap().content = text("content");
            }
            Some("message_deleted") => {
                let shown = self.0.get_mut(&id("id")).unwrap();
                *shown = Shown {
                    deleted: true,
                    ..Shown::default()
                };
            }
            Some("reaction_added") => {
                let shown = self.0.get_mut(&id("message_id")).unwrap();
                shown.reactions.insert((text("user_id"), text("emoji")));
            }
            Some("reaction_removed") => {
                let shown = self.0.get_mut(&id("message_id")).unwrap();
                shown.reactions.remove(&(text("user_id"), text("emoji")));
            }
            other => panic!("not a message or a change: {other:?}"),
        }
    }
}

async fn an_offline_device_converges_to_the_online_view(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let mut online = WsClient::connect(&app, &b.token).await;
    let mut sender = WsClient::connect(&app, &a.token).await;
    let mut view = View::default();
    let mut ids = Vec::new();
    for i in 0..20 {
        sender
            .send(json!({"type":"message","to":b.id,"content":format!("message {i}"),"client_id":format!("m{i}")}))
            .await;
        ids.push(
            sender.recv_type("ack").await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        view.apply(&online.recv_type("message").await);
    }

    // A device that synced up to here, then went offline.
    let mut device = WsClient::connect(&app, &b.token).await;
    let (mut offline, cursor) = sync_all(&mut device, View::default(), json!(0)).await;
    device.close().await;
    assert_eq!(offline, view);

    // 100 changes by both users, in a fixed pseudo-random mix; every one
    // goes to `online` (REST changes come from no session, so the actor's
    // own sessions hear them too).
    let emojis = ["%F0%9F%91%8D", "%E2%9D%A4%EF%B8%8F", ":tada:"];
    let mut state: u64 = 0x5eed;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut changed = 0;
    while changed < 100 {
        let id = &ids[next(ids.len() as u64) as usize];
        let (user, token) = if next(2) == 0 {
            (&a, &a.token)
        } else {
            (&b, &b.token)
        };
        let emoji = emojis[next(3) as usize];
        let status = match next(10) {
            0..=3 => {
                app.put_empty(&format!("/messages/{id}/reactions/{emoji}"), token)
                    .await
            }
            4..=5 => {
                app.delete(&format!("/messages/{id}/reactions/{emoji}"), token)
                    .await
                    .0
            }
            6..=8 if user.id == a.id => {
                let content = json!({"content": format!("edit {changed}")});
                app.patch(&format!("/messages/{id}"), &a.token, &content)
                    .await
                    .0
            }
            9 if user.id == a.id && next(4) == 0 => {
                app.delete(&format!("/messages/{id}"), &a.token).await.0
            }
            _ => continue,
        };
        // A deleted message refuses edits and reactions: those are refusals, not changes.
        assert!([200, 204, 409].contains(&status), "{status}");
        changed += 1;
    }
    // Everything the online device was sent, in order, then nothing more.
    let online_events = {
        let mut events = Vec::new();
        while let Some(frame) = online
            .next_within(std::time::Duration::from_millis(500))
            .await
        {
            events.push(frame);
        }
        events
    };
    for frame in &online_events {
        view.apply(frame);
    }

    offline = sync_all(
        &mut WsClient::connect(&app, &b.token).await,
        offline,
        cursor,
    )
    .await
    .0;
    assert_eq!(
        offline, view,
        "the offline device sees what the online one saw"
    );

    // And both show what history says now.
    let (_, page) = app
        .get(
            &format!("/messages/conversation?with_user={}&limit=100", a.id),
            &b.token,
        )
        .await;
    for m in page["messages"].as_array().unwrap() {
        let shown = &view.0[m["id"].as_str().unwrap()];
        assert_eq!(shown.content, m["content"].as_str().unwrap());
        assert_eq!(shown.deleted, m.get("deleted_at").is_some());
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for (_, emoji) in &shown.reactions {
            *counts.entry(emoji.clone()).or_default() += 1;
        }
        let listed: BTreeMap<String, i64> = m
            .get("reactions")
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        (
                            r["emoji"].as_str().unwrap().to_owned(),
                            r["count"].as_i64().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(counts, listed, "{m}");
    }
}

/// Pages `sync` from `cursor` to the end, applying messages and changes in
/// sequence order; the view and the cursor to go on from.
async fn sync_all(ws: &mut WsClient, mut view: View, mut cursor: Value) -> (View, Value) {
    loop {
        ws.send(json!({"type":"sync","cursor":cursor,"limit":7}))
            .await;
        let page = ws.recv_type("sync").await;
        let mut entries: Vec<&Value> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .chain(page["changes"].as_array().unwrap())
            .collect();
        entries.sort_by_key(|e| e["seq"].as_i64().unwrap());
        for entry in entries {
            view.apply(entry);
        }
        cursor = page["cursor"].clone();
        if page["has_more"] == false {
            return (view, cursor);
        }
    }
}
