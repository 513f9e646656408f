//! The store contract: every query behaves the same on Postgres and SQLite.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use ochat::store::{
    InsertOutcome, Message, NewMessage, ProfilePatch, SearchWords, Store, StoreError, now,
};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{Backend, test_store};

pub(crate) async fn user(store: &Arc<dyn Store>) -> Uuid {
    let id = Uuid::now_v7();
    store
        .upsert_user(id, &format!("{}@example.com", id.simple()))
        .await
        .unwrap();
    id
}

pub(crate) fn new_message(
    from: Uuid,
    to: Uuid,
    content: &str,
    client_id: Option<&str>,
) -> NewMessage {
    NewMessage {
        id: Uuid::now_v7(),
        sender_id: from,
        to: ochat::store::Target::User(to),
        content: content.into(),
        client_id: client_id.map(str::to_owned),
        created_at: now(),
        reply_to: None,
        attachments: Vec::new(),
    }
}

async fn insert(store: &Arc<dyn Store>, from: Uuid, to: Uuid, content: &str) -> Message {
    match store
        .insert_messages(&[new_message(from, to, content, None)])
        .await
        .unwrap()
        .remove(0)
    {
        InsertOutcome::Created(m) => m.message,
        other => panic!("expected Created, got {other:?}"),
    }
}

both_backends!(
    users_are_upserted_and_patched,
    two_users_may_carry_the_same_email,
    inserts_are_idempotent_per_sender_and_client_id,
    a_batch_numbers_each_user_across_both_roles,
    a_stored_key_at_the_end_of_a_batch_leaves_the_conversation_on_the_last_new_message,
    unknown_recipients_are_reported_per_message,
    conversation_pages_back_oldest_first,
    conversations_list_most_recent_first_with_unread_counts,
    search_sees_only_own_messages_by_whole_word,
    stats_count_what_the_user_sees,
    only_the_receiver_marks_read,
    sync_pages_in_commit_order_and_checks_since,
    sync_never_skips_under_concurrent_writers,
    contacts_and_presence_are_recorded,
);

async fn users_are_upserted_and_patched(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let id = Uuid::now_v7();
    store.upsert_user(id, "a@example.com").await.unwrap();
    store.upsert_user(id, "a@example.com").await.unwrap();
    store.upsert_user(id, "b@example.com").await.unwrap();
    let user = store.user(id).await.unwrap().expect("user exists");
    assert_eq!(user.email, "b@example.com");
    assert_eq!(user.username, None);

    let patch = ProfilePatch {
        username: Some(Some("alice".into())),
        avatar_url: Some(Some("https://x/a.png".into())),
    };
    let user = store.update_profile(id, &patch).await.unwrap().unwrap();
    assert_eq!(
        (user.username.as_deref(), user.avatar_url.as_deref()),
        (Some("alice"), Some("https://x/a.png"))
    );

    let clear_avatar = ProfilePatch {
        username: None,
        avatar_url: Some(None),
    };
    let user = store
        .update_profile(id, &clear_avatar)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (user.username.as_deref(), user.avatar_url),
        (Some("alice"), None)
    );

    assert_eq!(
        store
            .update_profile(Uuid::now_v7(), &clear_avatar)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.user(Uuid::now_v7()).await.unwrap(), None);
}

/// An email is a label: two users may carry the same one (the identity
/// provider owns its uniqueness), and each keeps their own.
async fn two_users_may_carry_the_same_email(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    store.upsert_user(first, "same@example.com").await.unwrap();
    store.upsert_user(second, "same@example.com").await.unwrap();
    store.upsert_user(first, "new@example.com").await.unwrap();
    let email = |u: Option<ochat::store::User>| u.unwrap().email;
    assert_eq!(email(store.user(first).await.unwrap()), "new@example.com");
    assert_eq!(email(store.user(second).await.unwrap()), "same@example.com");
}

async fn inserts_are_idempotent_per_sender_and_client_id(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b, c) = (user(&store).await, user(&store).await, user(&store).await);

    let first = store
        .insert_messages(&[new_message(a, b, "hi", Some("k1"))])
        .await
        .unwrap();
    let InsertOutcome::Created(original) = &first[0] else {
        panic!("{first:?}")
    };

    // Same key again, alone and twice inside one batch: nothing new.
    let again = store
        .insert_messages(&[
            new_message(a, b, "hi (retry)", Some("k1")),
            new_message(a, b, "x", Some("k2")),
            new_message(a, b, "y", Some("k2")),
        ])
        .await
        .unwrap();
    assert_eq!(again[0], InsertOutcome::Duplicate(original.message.clone()));
    let InsertOutcome::Created(k2) = &again[1] else {
        panic!("{again:?}")
    };
    assert_eq!(again[2], InsertOutcome::Duplicate(k2.message.clone()));

    // The key belongs to the sender: another sender may reuse it.
    let other = store
        .insert_messages(&[new_message(c, b, "hi", Some("k1"))])
        .await
        .unwrap();
    assert!(matches!(other[0], InsertOutcome::Created(_)), "{other:?}");

    let page = store.conversation(a, b, None, 100).await.unwrap();
    let contents: Vec<&str> = page.items.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["hi", "x"]);
}

async fn a_batch_numbers_each_user_across_both_roles(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b, c) = (user(&store).await, user(&store).await, user(&store).await);
    insert(&store, a, b, "before").await;
    let outcomes = store
        .insert_messages(&[
            new_message(b, a, "1", None),
            new_message(a, c, "2", None),
            new_message(c, b, "3", None),
            new_message(a, b, "4", None),
        ])
        .await
        .unwrap();
    let seqs: Vec<Vec<(Uuid, i64)>> = outcomes
        .iter()
        .map(|o| match o {
            InsertOutcome::Created(s) => s.seqs.clone(),
            other => panic!("expected Created, got {other:?}"),
        })
        .collect();
    // a and b had number 1 from "before"; c starts at 1.
    assert_eq!(
        seqs,
        [
            vec![(b, 2), (a, 2)],
            vec![(a, 3), (c, 1)],
            vec![(c, 2), (b, 3)],
            vec![(a, 4), (b, 4)],
        ]
    );
    // What was handed out is what was stored.
    for (user, expected) in [
        (a, vec![1, 2, 3, 4]),
        (b, vec![1, 2, 3, 4]),
        (c, vec![1, 2]),
    ] {
        let page = store.sync(user, None.into(), 50).await.unwrap().0;
        let stored: Vec<i64> = page.items.iter().map(|m| m.seq()).collect();
        assert_eq!(stored, expected, "numbers of {user}");
    }
    assert_eq!(store.msg_seqs(&[c]).await.unwrap(), [(c, 2)]);
    // The next batch continues after them.
    let next = store
        .insert_messages(&[new_message(c, a, "5", None)])
        .await
        .unwrap();
    let InsertOutcome::Created(next) = &next[0] else {
        panic!("{next:?}")
    };
    assert_eq!(next.seqs, [(c, 3), (a, 5)]);
}

async fn a_stored_key_at_the_end_of_a_batch_leaves_the_conversation_on_the_last_new_message(
    backend: Backend,
) {
    let (store, _db) = test_store(backend).await;
    let (a, b) = (user(&store).await, user(&store).await);
    let first = store
        .insert_messages(&[new_message(a, b, "first", Some("k1"))])
        .await
        .unwrap();
    let InsertOutcome::Created(first) = &first[0] else {
        panic!("{first:?}")
    };
    // The batch's last message repeats a stored key: it is answered with the
    // stored message, and the conversation points at the new one before it.
    let outcomes = store
        .insert_messages(&[
            new_message(a, b, "new", Some("k2")),
            new_message(a, b, "retry", Some("k1")),
        ])
        .await
        .unwrap();
    let InsertOutcome::Created(new) = &outcomes[0] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(outcomes[1], InsertOutcome::Duplicate(first.message.clone()));
    let list = store.conversations(a, 50).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].last_message.as_ref(), Some(&new.message));
    let page = store.conversation(a, b, None, 100).await.unwrap();
    let contents: Vec<&str> = page.items.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["first", "new"]);
}

async fn unknown_recipients_are_reported_per_message(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b) = (user(&store).await, user(&store).await);
    let outcomes = store
        .insert_messages(&[
            new_message(a, Uuid::now_v7(), "lost", None),
            new_message(a, b, "kept", None),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes[0], InsertOutcome::RecipientNotFound);
    assert!(matches!(outcomes[1], InsertOutcome::Created(_)));
    assert_eq!(store.stats(a).await.unwrap().total_sent, 1);
}

async fn conversation_pages_back_oldest_first(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b, c) = (user(&store).await, user(&store).await, user(&store).await);
    let mut sent = Vec::new();
    for i in 0..5 {
        let (from, to) = if i % 2 == 0 { (a, b) } else { (b, a) };
        sent.push(insert(&store, from, to, &format!("m{i}")).await.id);
    }
    insert(&store, a, c, "elsewhere").await;

    let newest = store.conversation(a, b, None, 2).await.unwrap();
    assert_eq!(
        newest.items.iter().map(|m| m.id).collect::<Vec<_>>(),
        sent[3..5]
    );
    assert!(newest.has_more);

    let older = store
        .conversation(b, a, Some(newest.items[0].id), 2)
        .await
        .unwrap();
    assert_eq!(
        older.items.iter().map(|m| m.id).collect::<Vec<_>>(),
        sent[1..3]
    );
    assert!(older.has_more);

    let oldest = store
        .conversation(a, b, Some(older.items[0].id), 2)
        .await
        .unwrap();
    assert_eq!(
        oldest.items.iter().map(|m| m.id).collect::<Vec<_>>(),
        sent[0..1]
    );
    assert!(!oldest.has_more);

    // Someone outside the conversation sees nothing of it.
    assert!(
        store
            .conversation(c, b, None, 50)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn conversations_list_most_recent_first_with_unread_counts(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b, c) = (user(&store).await, user(&store).await, user(&store).await);
    store
        .update_profile(
            c,
            &ProfilePatch {
                username: Some(Some("carol".into())),
                avatar_url: None,
            },
        )
        .await
        .unwrap();
    insert(&store, b, a, "from b 1").await;
    insert(&store, b, a, "from b 2").await;
    insert(&store, a, c, "to c").await;
    let last = insert(&store, c, a, "from c").await;

    let list = store.conversations(a, 50).await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].user_id, Some(c));
    assert_eq!(list[0].username.as_deref(), Some("carol"));
    assert_eq!(list[0].last_message, Some(last));
    assert_eq!(list[0].unread_count, 1);
    assert_eq!(list[1].user_id, Some(b));
    assert_eq!(list[1].unread_count, 2);
    assert_eq!(list[1].last_message.as_ref().unwrap().content, "from b 2");

    // The other side sees the same conversation with its own unread count.
    let for_c = store.conversations(c, 50).await.unwrap();
    assert_eq!((for_c[0].user_id, for_c[0].unread_count), (Some(a), 1));
    assert_eq!(store.conversations(a, 1).await.unwrap().len(), 1);
}

async fn search_sees_only_own_messages_by_whole_word(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b, c) = (user(&store).await, user(&store).await, user(&store).await);
    let mine = insert(&store, a, b, "Hello World from Alice").await;
    let to_me = insert(&store, b, a, "hello again").await;
    insert(&store, b, c, "hello Carol, not for Alice").await;

    let search = |q: &str| {
        let store = store.clone();
        let q = q.to_owned();
        async move {
            let words = SearchWords::parse(&q).unwrap();
            store
                .search(a, &words, 20)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        search("HELLO").await,
        vec![to_me.id, mine.id],
        "newest first, case-insensitive"
    );
    assert_eq!(
        search("hello world").await,
        vec![mine.id],
        "every word must match"
    );
    assert_eq!(
        search("hell").await,
        Vec::<Uuid>::new(),
        "whole words, not substrings"
    );
    assert_eq!(
        search("carol").await,
        Vec::<Uuid>::new(),
        "others' messages are invisible"
    );
    assert_eq!(
        search("\"Alice\" -hello*").await,
        vec![mine.id],
        "query syntax is never interpreted"
    );
}

async fn stats_count_what_the_user_sees(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b, c) = (user(&store).await, user(&store).await, user(&store).await);
    insert(&store, a, b, "1").await;
    insert(&store, a, c, "2").await;
    let read = insert(&store, b, a, "3").await;
    insert(&store, c, a, "4").await;
    insert(&store, b, c, "not a's").await;
    store.mark_read(a, &[read.id], Utc::now()).await.unwrap();
    let stats = store.stats(a).await.unwrap();
    assert_eq!(
        (
            stats.total_sent,
            stats.total_received,
            stats.unread,
            stats.conversations
        ),
        (2, 2, 1, 2)
    );
}

async fn only_the_receiver_marks_read(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b, c) = (user(&store).await, user(&store).await, user(&store).await);
    let m1 = insert(&store, a, b, "one").await;
    let m2 = insert(&store, a, b, "two").await;

    assert!(
        store
            .mark_read(a, &[m1.id], now())
            .await
            .unwrap()
            .is_empty(),
        "the sender cannot"
    );
    assert!(
        store
            .mark_read(c, &[m1.id], now())
            .await
            .unwrap()
            .is_empty(),
        "a stranger cannot"
    );

    let marks = store
        .mark_read(b, &[m1.id, m2.id, Uuid::now_v7()], now())
        .await
        .unwrap();
    let ids: HashSet<Uuid> = marks.iter().map(|m| m.message_id).collect();
    assert_eq!(ids, HashSet::from([m1.id, m2.id]));
    assert!(marks.iter().all(|m| m.sender_id == a));
    assert!(
        store
            .mark_read(b, &[m1.id], now())
            .await
            .unwrap()
            .is_empty(),
        "read once only"
    );

    let stored = store.message(m1.id).await.unwrap().unwrap();
    assert!(stored.is_read && stored.read_at.is_some());
}

async fn sync_pages_in_commit_order_and_checks_since(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b, c) = (user(&store).await, user(&store).await, user(&store).await);
    let mut expected = Vec::new();
    for i in 0..7 {
        let m = match i % 3 {
            0 => insert(&store, a, b, "a→b").await,
            1 => insert(&store, c, a, "c→a").await,
            _ => insert(&store, a, c, "a→c").await,
        };
        expected.push(m.id);
    }
    insert(&store, b, c, "not a's").await;

    let mut seen = Vec::new();
    let mut seqs = Vec::new();
    let mut since = None;
    loop {
        let page = store.sync(a, since.into(), 3).await.unwrap().0;
        seen.extend(page.items.iter().map(|m| m.message().unwrap().id));
        seqs.extend(page.items.iter().map(|m| m.seq()));
        since = page.items.last().map(|m| m.message().unwrap().id).or(since);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seen, expected);
    assert_eq!(
        seqs,
        (1..=7).collect::<Vec<i64>>(),
        "a's own numbers, gap-free"
    );
    assert!(
        store
            .sync(a, since.into(), 10)
            .await
            .unwrap()
            .0
            .items
            .is_empty()
    );
    // Catch-up reads the same numbers: the latest per user, and what follows one.
    let mut latest = store.msg_seqs(&[a, b, Uuid::now_v7()]).await.unwrap();
    latest.sort();
    let mut want = vec![(a, 7), (b, 4)];
    want.sort();
    assert_eq!(latest, want, "unknown users are left out");
    let after = store.entries_after(a, 5, 10).await.unwrap();
    let tail: Vec<(i64, Uuid)> = after
        .items
        .iter()
        .map(|e| (e.seq(), e.message().unwrap().id))
        .collect();
    assert_eq!(tail, vec![(6, expected[5]), (7, expected[6])]);

    let err = store
        .sync(a, Some(Uuid::now_v7()).into(), 10)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let not_mine = store
        .sync(b, Some(expected[1]).into(), 10)
        .await
        .unwrap_err();
    assert!(matches!(not_mine, StoreError::NotFound(_)), "{not_mine:?}");
}

/// Many writers commit to one receiver while the receiver keeps syncing from
/// the last id it saw. Ids are handed out before commit, so commits land out
/// of id order; a cursor that skipped a late commit would lose messages here.
async fn sync_never_skips_under_concurrent_writers(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let receiver = user(&store).await;
    let mut senders = Vec::new();
    for _ in 0..6 {
        senders.push(user(&store).await);
    }
    let per_sender = 40;
    let mut writers = tokio::task::JoinSet::new();
    for sender in senders.clone() {
        let store = store.clone();
        writers.spawn(async move {
            let mut ids = Vec::new();
            for i in 0..per_sender {
                let batch = [new_message(sender, receiver, &format!("{i}"), None)];
                if let InsertOutcome::Created(m) =
                    store.insert_messages(&batch).await.unwrap().remove(0)
                {
                    ids.push(m.message.id);
                }
            }
            ids
        });
    }
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut since = None;
            while seen.len() < 6 * per_sender {
                let page = store.sync(receiver, since.into(), 7).await.unwrap().0;
                if let Some(last) = page.items.last() {
                    since = Some(last.message().unwrap().id);
                }
                seen.extend(page.items.iter().map(|m| m.message().unwrap().id));
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let mut written = HashSet::new();
    while let Some(ids) = writers.join_next().await {
        written.extend(ids.unwrap());
    }
    let seen = tokio::time::timeout(std::time::Duration::from_secs(60), reader)
        .await
        .expect("the reader saw every message (a skip would leave it waiting)")
        .unwrap();
    assert_eq!(seen.len(), written.len(), "no message seen twice");
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), written);
}

async fn contacts_and_presence_are_recorded(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b, c, d) = (
        user(&store).await,
        user(&store).await,
        user(&store).await,
        user(&store).await,
    );
    insert(&store, a, b, "1").await;
    insert(&store, c, a, "2").await;
    insert(&store, c, a, "3").await;
    // a's presence goes to whom a has talked to: b, not c (who only wrote
    // to a); c's goes to a.
    let contacts: HashSet<Uuid> = store.contacts(a, 50).await.unwrap().into_iter().collect();
    assert_eq!(contacts, HashSet::from([b]));
    assert_eq!(store.contacts(c, 50).await.unwrap(), vec![a]);
    assert!(store.talked_to(a, b, 50).await.unwrap());
    assert!(!store.talked_to(a, c, 50).await.unwrap());
    assert!(store.talked_to(c, a, 50).await.unwrap());
    assert!(store.is_contact(b, a).await.unwrap());
    assert!(!store.is_contact(a, d).await.unwrap());
    // Blocking: a blocks b, so b no longer gets a's presence.
    store.block(a, b, now()).await.unwrap();
    store.block(a, b, now()).await.unwrap();
    assert_eq!(store.contacts(a, 50).await.unwrap(), Vec::<Uuid>::new());
    assert_eq!(
        store.blocked(&[(a, b), (b, a), (a, c)]).await.unwrap(),
        vec![(a, b)]
    );
    let blocks = store.blocks(a, 10).await.unwrap();
    assert_eq!(
        blocks.iter().map(|b| b.user_id).collect::<Vec<_>>(),
        vec![b]
    );
    store.unblock(a, b).await.unwrap();
    assert_eq!(store.contacts(a, 50).await.unwrap(), vec![b]);
    assert!(store.blocked(&[(a, b)]).await.unwrap().is_empty());

    let at = now();
    store.set_presence(a, true, at).await.unwrap();
    let user = store.user(a).await.unwrap().unwrap();
    assert!(user.is_online);
    assert_eq!(user.last_seen, at);
    store.set_presence(a, false, at).await.unwrap();
    assert!(!store.user(a).await.unwrap().unwrap().is_online);
}
