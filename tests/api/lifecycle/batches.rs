//! Changes and messages as a store commits them in batches: each change
//! judged after the batch's earlier ones and answered on its own, and a
//! batch whose commit answer was lost read back whole.

use ochat::store::{
    ChangeKind, ChangeOutcome, ChangeType, Entry, NewChange, NewMessage, Target, now,
};
use uuid::Uuid;

use super::store::{applied, change, edit, history, react, send};
use crate::both_backends;
use crate::helpers::{Backend, test_store};
use crate::store_contract::user;

both_backends!(
    a_batch_of_changes_applies_each_in_order_and_answers_each,
    a_settled_message_carries_its_attachments,
);

/// Changes committed together: each judged after the batch's earlier
/// changes to its message, each answered on its own, numbered for its
/// readers message by message.
async fn a_batch_of_changes_applies_each_in_order_and_answers_each(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b, c) = (user(&store).await, user(&store).await, user(&store).await);
    let m = send(&store, a, Target::User(b), "one").await;
    let other = send(&store, c, Target::User(a), "two").await;
    let keyed = |mut n: NewChange, key: &str| {
        n.client_id = Some(key.into());
        n
    };
    let batch = vec![
        keyed(react(b, m.id, "👍"), "k1"),
        react(b, m.id, "👍"),
        edit(a, m.id, "one!"),
        edit(b, m.id, "mine"),
        keyed(react(b, m.id, "🎉"), "k1"),
        react(c, m.id, "👍"),
        react(a, other.id, "❤️"),
        change(a, m.id, ChangeKind::Delete),
        react(b, m.id, "😂"),
        change(a, Uuid::now_v7(), ChangeKind::Delete),
    ];
    let outcomes = store.apply_changes(&batch).await.unwrap();
    assert_eq!(outcomes.len(), batch.len());
    let first = applied(outcomes[0].clone());
    assert!(
        matches!(&outcomes[1], ChangeOutcome::Unchanged(_)),
        "{:?}",
        outcomes[1]
    );
    let edited = applied(outcomes[2].clone());
    assert_eq!(edited.change.message.content, "one!");
    assert_eq!(outcomes[3], ChangeOutcome::NotAllowed);
    match &outcomes[4] {
        ChangeOutcome::Duplicate(change) => assert_eq!(change.id, batch[0].id),
        other => panic!("a key's second use answers its first: {other:?}"),
    }
    assert_eq!(outcomes[5], ChangeOutcome::NotFound, "c cannot read it");
    let elsewhere = applied(outcomes[6].clone());
    let deleted = applied(outcomes[7].clone());
    assert_eq!(deleted.change.message.content, "");
    assert_eq!(outcomes[8], ChangeOutcome::Deleted);
    assert_eq!(outcomes[9], ChangeOutcome::NotFound);

    // Each reader's numbers follow the batch's order message by message
    // (in id order), with no gap: the message was 1 for a and b, c's
    // message 2 for a.
    let numbers = |s: &ochat::store::StoredChange, who: Uuid| {
        s.seqs.iter().find(|(u, _)| *u == who).map(|(_, n)| *n)
    };
    assert_eq!(
        [&first, &edited, &deleted, &elsewhere].map(|s| numbers(s, a)),
        [Some(3), Some(4), Some(5), Some(6)]
    );
    assert_eq!(
        [&first, &edited, &deleted].map(|s| numbers(s, b)),
        [Some(2), Some(3), Some(4)]
    );
    assert_eq!(numbers(&elsewhere, c), Some(2));
    let entries = store.entries_after(b, 1, 10).await.unwrap().items;
    let kinds: Vec<(i64, ChangeType)> = entries
        .iter()
        .map(|e| match e {
            Entry::Change { seq, change } => (*seq, change.kind),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (2, ChangeType::React),
            (3, ChangeType::Edit),
            (4, ChangeType::Delete)
        ]
    );
    // The delete took the reaction made before it in the batch.
    assert!(history(&store, b, a).await[0].reactions.is_empty());
}

/// A message whose commit answer was lost is read back by id, with the
/// files it carries.
async fn a_settled_message_carries_its_attachments(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b) = (user(&store).await, user(&store).await);
    let id = Uuid::now_v7();
    let file = ochat::store::NewAttachment {
        id,
        owner: a,
        name: "cat.png".into(),
        size: 3,
        content_type: "image/png".into(),
        width: Some(4),
        height: Some(5),
        at: now(),
    };
    assert!(store.create_attachment(&file, 20, now()).await.unwrap());
    let attachment = ochat::store::Attachment {
        id,
        name: "cat.png".into(),
        size: 3,
        content_type: "image/png".into(),
        url: ochat::store::Attachment::url_of(id),
        width: Some(4),
        height: Some(5),
    };
    let new = NewMessage {
        id: Uuid::now_v7(),
        sender_id: a,
        to: Target::User(b),
        content: String::new(),
        client_id: None,
        created_at: now(),
        reply_to: None,
        attachments: vec![attachment.clone()],
    };
    store
        .insert_messages(std::slice::from_ref(&new))
        .await
        .unwrap();
    let settled = store.stored(&[new.id], &[a]).await.unwrap();
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].message.attachments, vec![attachment]);
}
