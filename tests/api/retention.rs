//! History kept by the week (`MESSAGE_RETENTION`): a week that ended before
//! the cutoff goes whole, with everything that belongs to its messages, and
//! nothing newer is touched. PostgreSQL drops the week's partition.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ochat::store::{
    Attachment, ChangeKind, Entry, InsertOutcome, Message, NewAttachment, NewChange, NewGroup,
    NewMessage, ReplyTo, Store, Target, now,
};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, eventually, test_store, token_for};
use crate::store_contract::user;

both_backends!(
    an_expired_week_goes_whole_and_newer_weeks_stay,
    a_node_with_a_retention_expires_old_weeks_on_its_own,
);

/// A UUIDv7 minted at `at`, as a node sending then would have.
fn id_at(at: DateTime<Utc>) -> Uuid {
    Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        at.timestamp() as u64,
        at.timestamp_subsec_nanos(),
    ))
}

async fn send_at(
    store: &Arc<dyn Store>,
    at: DateTime<Utc>,
    from: Uuid,
    to: Target,
    client_id: Option<&str>,
    reply_to: Option<&Message>,
    attachments: Vec<Attachment>,
) -> InsertOutcome {
    let new = NewMessage {
        id: id_at(at),
        sender_id: from,
        to,
        content: format!("sent {at}"),
        client_id: client_id.map(str::to_owned),
        created_at: at,
        reply_to: reply_to.map(|m| ReplyTo {
            id: m.id,
            sender_id: m.sender_id,
            preview: Some(m.content.clone()),
            deleted: false,
        }),
        attachments,
    };
    store.insert_messages(&[new]).await.unwrap().remove(0)
}

fn created(outcome: InsertOutcome) -> Message {
    match outcome {
        InsertOutcome::Created(s) => s.message,
        other => panic!("expected Created, got {other:?}"),
    }
}

/// The messages partitions of a PostgreSQL test database (none for SQLite).
async fn partitions(backend: Backend, url: &str) -> Vec<String> {
    if backend == Backend::Sqlite {
        return Vec::new();
    }
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let names = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'messages'::regclass ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    names
}

async fn an_expired_week_goes_whole_and_newer_weeks_stay(backend: Backend) {
    let (store, db) = test_store(backend).await;
    let (a, b, c) = (user(&store).await, user(&store).await, user(&store).await);
    let group = Uuid::now_v7();
    store
        .create_group(&NewGroup {
            id: group,
            title: "g".into(),
            avatar_url: None,
            creator: a,
            members: vec![b, c],
            at: now(),
        })
        .await
        .unwrap();

    // Two months ago: a direct message carrying a file, a reaction to it,
    // and a group message; its week (and the two after) made ready first,
    // as a node running then would have.
    let old = now() - chrono::Duration::days(60);
    store.prepare_weeks(old).await.unwrap();
    let file = Uuid::now_v7();
    let announced = NewAttachment {
        id: file,
        owner: a,
        name: "old.txt".into(),
        size: 3,
        content_type: "text/plain".into(),
        width: None,
        height: None,
        at: now(),
    };
    assert!(store.create_attachment(&announced, 20, old).await.unwrap());
    let carried = Attachment {
        id: file,
        name: "old.txt".into(),
        size: 3,
        content_type: "text/plain".into(),
        url: String::new(),
        width: None,
        height: None,
    };
    let old_direct = created(
        send_at(
            &store,
            old,
            a,
            Target::User(b),
            Some("k-old"),
            None,
            vec![carried],
        )
        .await,
    );
    let old_group =
        created(send_at(&store, old, a, Target::Group(group), None, None, vec![]).await);
    let reaction = NewChange {
        id: Uuid::now_v7(),
        actor: b,
        message_id: old_direct.id,
        kind: ChangeKind::React {
            emoji: "👍".into()
        },
        client_id: None,
        at: now(),
        edit_window: None,
        max_reactions: 20,
    };
    store.apply_changes(&[reaction]).await.unwrap();

    // Today: a reply quoting the old message, and a group message.
    let reply = created(
        send_at(
            &store,
            now(),
            b,
            Target::User(a),
            None,
            Some(&old_direct),
            vec![],
        )
        .await,
    );
    let new_group =
        created(send_at(&store, now(), b, Target::Group(group), None, None, vec![]).await);
    let before = partitions(backend, &db.url).await;

    let expired = store
        .expire_messages(now() - chrono::Duration::days(21))
        .await
        .unwrap();
    assert_eq!(expired.messages, 2, "{expired:?}");
    assert_eq!(expired.files, vec![file]);

    // Gone, with everything that was theirs.
    assert!(store.message(old_direct.id).await.unwrap().is_none());
    assert!(store.message(old_group.id).await.unwrap().is_none());
    assert!(store.attachment(file).await.unwrap().is_none());
    let kept = store
        .message(reply.id)
        .await
        .unwrap()
        .expect("the reply stays");
    assert_eq!(
        kept.reply_to, None,
        "a reply loses the quote of an expired message"
    );
    let page = store.conversation(a, b, None, 50).await.unwrap();
    assert_eq!(
        page.items.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![reply.id]
    );
    let page = store.group_history(c, group, None, 50).await.unwrap();
    assert_eq!(
        page.items.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![new_group.id]
    );
    let group_row = store.conversations(c, 10).await.unwrap();
    assert_eq!(group_row[0].unread_count, 1, "{group_row:?}");

    // Sync from the start sees what is left, in order, and numbering goes
    // on after it: no entry of an expired message or of its reaction.
    let entries = store.entries_after(b, 0, 100).await.unwrap().items;
    let ids: Vec<Uuid> = entries
        .iter()
        .map(|e| match e {
            Entry::Message(s) => s.message.id,
            Entry::Change { change, .. } => panic!("an expired message's change: {change:?}"),
        })
        .collect();
    assert_eq!(ids, vec![reply.id, new_group.id]);
    let last = entries.last().unwrap().seq();
    let next = created(
        send_at(
            &store,
            now(),
            a,
            Target::User(b),
            Some("k-old"),
            None,
            vec![],
        )
        .await,
    );
    let after = store.entries_after(b, last, 10).await.unwrap().items;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].seq(), last + 1);
    assert_ne!(
        next.id, old_direct.id,
        "an expired message's key is free again"
    );

    // PostgreSQL dropped the weeks rather than their rows; the current
    // week is untouched. A second run finds nothing more.
    let left = partitions(backend, &db.url).await;
    if backend == Backend::Postgres {
        let dropped: Vec<&String> = before.iter().filter(|p| !left.contains(p)).collect();
        assert_eq!(dropped.len(), 4, "{before:?} -> {left:?}");
        assert!(!left.is_empty());
    }
    let again = store
        .expire_messages(now() - chrono::Duration::days(21))
        .await
        .unwrap();
    assert_eq!(again.messages, 0);
    assert_eq!(partitions(backend, &db.url).await, left);
}

async fn a_node_with_a_retention_expires_old_weeks_on_its_own(backend: Backend) {
    let (store, db) = test_store(backend).await;
    let (a, b) = (user(&store).await, user(&store).await);
    let old = now() - chrono::Duration::days(90);
    store.prepare_weeks(old).await.unwrap();
    let expiring = created(send_at(&store, old, a, Target::User(b), None, None, vec![]).await);
    let kept = created(
        send_at(
            &store,
            now() - chrono::Duration::days(2),
            a,
            Target::User(b),
            None,
            None,
            vec![],
        )
        .await,
    );
    drop(store);

    let app = TestApp::spawn_on(Arc::new(db), &[("MESSAGE_RETENTION", "30days")]).await;
    let token = token_for(b, &format!("{}@example.com", b.simple()));
    let path = format!("/messages/conversation?with_user={a}");
    let gone = eventually(Duration::from_secs(10), || async {
        let (status, body) = app.get(&path, &token).await;
        assert_eq!(status, 200, "{body}");
        let ids: Vec<String> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        ids == vec![kept.id.to_string()]
    })
    .await;
    assert!(gone, "{} was not expired", expiring.id);
    app.shutdown().await;
}
