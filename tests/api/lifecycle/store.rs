//! The change rules as each store keeps them, checked under its locks.

use std::sync::Arc;

use ochat::store::{
    ChangeKind, ChangeOutcome, ChangeType, Entry, InsertOutcome, Message, NewChange, NewGroup,
    NewMessage, ReplyTo, SearchWords, Store, Target, now,
};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{Backend, test_store};
use crate::store_contract::user;

both_backends!(
    an_edit_shows_in_history_search_and_the_preview_once,
    only_the_sender_edits_and_a_deleted_message_is_a_tombstone,
    reactions_are_counted_per_emoji_and_capped,
    group_admins_delete_any_message_and_members_only_their_own,
    changes_follow_messages_in_each_readers_sequence,
    a_reply_shows_a_preview_of_what_it_answers,
    a_change_waiting_on_concurrent_sends_still_finds_its_message,
);

pub(super) async fn send(store: &Arc<dyn Store>, from: Uuid, to: Target, content: &str) -> Message {
    send_reply(store, from, to, content, None).await
}

async fn send_reply(
    store: &Arc<dyn Store>,
    from: Uuid,
    to: Target,
    content: &str,
    reply_to: Option<ReplyTo>,
) -> Message {
    let new = NewMessage {
        id: Uuid::now_v7(),
        sender_id: from,
        to,
        content: content.into(),
        client_id: None,
        created_at: now(),
        reply_to,
        attachments: Vec::new(),
    };
    match store.insert_messages(&[new]).await.unwrap().remove(0) {
        InsertOutcome::Created(s) => s.message,
        other => panic!("{other:?}"),
    }
}

pub(super) fn change(actor: Uuid, message: Uuid, kind: ChangeKind) -> NewChange {
    NewChange {
        id: Uuid::now_v7(),
        actor,
        message_id: message,
        kind,
        client_id: None,
        at: now(),
        edit_window: None,
        max_reactions: 20,
    }
}

pub(super) fn edit(actor: Uuid, message: Uuid, content: &str) -> NewChange {
    change(
        actor,
        message,
        ChangeKind::Edit {
            content: content.into(),
        },
    )
}

pub(super) fn react(actor: Uuid, message: Uuid, emoji: &str) -> NewChange {
    change(
        actor,
        message,
        ChangeKind::React {
            emoji: emoji.into(),
        },
    )
}

pub(super) fn applied(outcome: ChangeOutcome) -> ochat::store::StoredChange {
    match outcome {
        ChangeOutcome::Applied(stored) => stored,
        other => panic!("expected Applied, got {other:?}"),
    }
}

pub(super) async fn history(store: &Arc<dyn Store>, me: Uuid, peer: Uuid) -> Vec<Message> {
    store.conversation(me, peer, None, 50).await.unwrap().items
}

async fn search(store: &Arc<dyn Store>, me: Uuid, words: &str) -> Vec<Uuid> {
    let words = SearchWords::parse(words).unwrap();
    let found = store.search(me, &words, 50).await.unwrap();
    found.into_iter().map(|m| m.id).collect()
}

async fn an_edit_shows_in_history_search_and_the_preview_once(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b) = (user(&store).await, user(&store).await);
    let m = send(&store, a, Target::User(b), "meet at noon").await;

    let mut first = edit(a, m.id, "meet at dusk");
    first.client_id = Some("e1".into());
    let stored = applied(store.apply_change(&first).await.unwrap());
    assert_eq!(stored.change.kind, ChangeType::Edit);
    assert_eq!(stored.change.message.content, "meet at dusk");
    assert_eq!(stored.change.message.edited_at, Some(first.at));
    let mut seqs = stored.seqs.clone();
    seqs.sort();
    let mut want = vec![(a, 2), (b, 2)];
    want.sort();
    assert_eq!(seqs, want, "numbered after the message for both readers");

    // A retry with the same key is the same change, numbered once.
    let mut retry = edit(a, m.id, "something else entirely");
    retry.client_id = Some("e1".into());
    match store.apply_change(&retry).await.unwrap() {
        ChangeOutcome::Duplicate(c) => assert_eq!(c.id, first.id),
        other => panic!("{other:?}"),
    }
    let mut latest = store.msg_seqs(&[a, b]).await.unwrap();
    latest.sort();
    assert_eq!(latest, want);

    let shown = &history(&store, b, a).await[0];
    assert_eq!(
        (shown.content.as_str(), shown.edited_at),
        ("meet at dusk", Some(first.at))
    );
    assert!(
        search(&store, b, "noon").await.is_empty(),
        "the old text is gone"
    );
    assert_eq!(search(&store, b, "dusk").await, vec![m.id]);
    let list = store.conversations(b, 10).await.unwrap();
    assert_eq!(
        list[0].last_message.as_ref().unwrap().content,
        "meet at dusk"
    );
}

async fn only_the_sender_edits_and_a_deleted_message_is_a_tombstone(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b, c) = (user(&store).await, user(&store).await, user(&store).await);
    let earlier = send(&store, a, Target::User(b), "first words").await;
    let m = send(&store, a, Target::User(b), "regrettable words").await;

    let outcome = |n: NewChange| {
        let store = store.clone();
        async move { store.apply_change(&n).await.unwrap() }
    };
    assert_eq!(outcome(edit(b, m.id, "x")).await, ChangeOutcome::NotAllowed);
    assert_eq!(outcome(edit(c, m.id, "x")).await, ChangeOutcome::NotFound);
    assert_eq!(
        outcome(change(c, m.id, ChangeKind::Delete)).await,
        ChangeOutcome::NotFound,
        "a stranger does not learn the message exists"
    );
    assert_eq!(
        outcome(change(b, m.id, ChangeKind::Delete)).await,
        ChangeOutcome::NotAllowed
    );
    assert_eq!(
        outcome(edit(a, Uuid::now_v7(), "x")).await,
        ChangeOutcome::NotFound
    );
    let mut late = edit(a, m.id, "x");
    late.edit_window = Some(chrono::Duration::milliseconds(1));
    late.at = m.created_at + chrono::Duration::seconds(1);
    assert_eq!(outcome(late).await, ChangeOutcome::TooLate);
    applied(outcome(react(b, m.id, "👍")).await);
    assert_eq!(store.stats(b).await.unwrap().unread, 2);

    let delete = change(a, m.id, ChangeKind::Delete);
    let stored = applied(outcome(delete.clone()).await);
    assert_eq!(stored.change.message.deleted_at, Some(delete.at));
    assert_eq!(stored.change.message.content, "");

    let shown = history(&store, b, a).await;
    let tomb = shown.iter().find(|x| x.id == m.id).unwrap();
    assert_eq!(
        (tomb.content.as_str(), tomb.deleted_at, tomb.sender_id),
        ("", Some(delete.at), a)
    );
    assert!(tomb.reactions.is_empty(), "its reactions went with it");
    assert!(search(&store, a, "regrettable").await.is_empty());
    assert_eq!(outcome(edit(a, m.id, "x")).await, ChangeOutcome::Deleted);
    assert_eq!(outcome(react(b, m.id, "👍")).await, ChangeOutcome::Deleted);
    assert!(matches!(
        outcome(change(a, m.id, ChangeKind::Delete)).await,
        ChangeOutcome::Unchanged(_)
    ));
    let stats = store.stats(b).await.unwrap();
    assert_eq!((stats.total_received, stats.unread), (1, 1));
    assert_eq!(store.stats(a).await.unwrap().total_sent, 1);
    let list = store.conversations(b, 10).await.unwrap();
    assert_eq!(list[0].unread_count, 1);
    assert_eq!(
        list[0].last_message.as_ref().map(|x| x.id),
        Some(earlier.id),
        "the preview falls back to the latest message left"
    );

    applied(outcome(change(a, earlier.id, ChangeKind::Delete)).await);
    let list = store.conversations(b, 10).await.unwrap();
    assert_eq!(list[0].last_message, None, "nothing left to show");
    assert_eq!(list[0].unread_count, 0);
}

async fn reactions_are_counted_per_emoji_and_capped(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b, c) = (user(&store).await, user(&store).await, user(&store).await);
    let m = send(&store, a, Target::User(b), "news").await;
    let outcome = |n: NewChange| {
        let store = store.clone();
        async move { store.apply_change(&n).await.unwrap() }
    };
    applied(outcome(react(a, m.id, "👍")).await);
    applied(outcome(react(b, m.id, "👍")).await);
    applied(outcome(react(b, m.id, "🎉")).await);
    assert!(
        matches!(
            outcome(react(b, m.id, "👍")).await,
            ChangeOutcome::Unchanged(_)
        ),
        "one of each emoji per user"
    );
    assert_eq!(outcome(react(c, m.id, "👍")).await, ChangeOutcome::NotFound);

    let counts = |me: Uuid| {
        let store = store.clone();
        async move {
            let peer = if me == a { b } else { a };
            let shown = store.conversation(me, peer, None, 10).await.unwrap().items;
            shown[0]
                .reactions
                .iter()
                .map(|r| (r.emoji.clone(), r.count, r.me))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        counts(a).await,
        vec![("👍".to_string(), 2, true), ("🎉".to_string(), 1, false)]
    );
    assert_eq!(
        counts(b).await,
        vec![("👍".to_string(), 2, true), ("🎉".to_string(), 1, true)]
    );

    let mut third = react(a, m.id, ":tada:");
    third.max_reactions = 2;
    assert_eq!(outcome(third).await, ChangeOutcome::TooManyReactions);
    let mut same = react(a, m.id, "🎉");
    same.max_reactions = 2;
    applied(outcome(same).await);

    let unreact = |who: Uuid, emoji: &str| {
        change(
            who,
            m.id,
            ChangeKind::Unreact {
                emoji: emoji.into(),
            },
        )
    };
    let removed = applied(outcome(unreact(b, "🎉")).await);
    assert_eq!(removed.change.kind, ChangeType::Unreact);
    assert_eq!(removed.change.emoji.as_deref(), Some("🎉"));
    assert!(matches!(
        outcome(unreact(b, "🎉")).await,
        ChangeOutcome::Unchanged(_)
    ));
    assert_eq!(
        counts(b).await,
        vec![("👍".to_string(), 2, true), ("🎉".to_string(), 1, false)]
    );
}

async fn group_admins_delete_any_message_and_members_only_their_own(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (owner, x, y, outsider) = (
        user(&store).await,
        user(&store).await,
        user(&store).await,
        user(&store).await,
    );
    let group = Uuid::now_v7();
    store
        .create_group(&NewGroup {
            id: group,
            title: "g".into(),
            avatar_url: None,
            creator: owner,
            members: vec![x, y],
            at: now(),
        })
        .await
        .unwrap();
    let by_x = send(&store, x, Target::Group(group), "from x").await;
    let by_y = send(&store, y, Target::Group(group), "from y").await;
    let outcome = |n: NewChange| {
        let store = store.clone();
        async move { store.apply_change(&n).await.unwrap() }
    };
    assert_eq!(
        outcome(change(y, by_x.id, ChangeKind::Delete)).await,
        ChangeOutcome::NotAllowed
    );
    assert_eq!(
        outcome(react(outsider, by_x.id, "👍")).await,
        ChangeOutcome::NotFound
    );
    let reacted = applied(outcome(react(y, by_x.id, "👍")).await);
    let readers: Vec<Uuid> = reacted.seqs.iter().map(|(u, _)| *u).collect();
    for member in [owner, x, y] {
        assert!(readers.contains(&member), "every member is told");
    }
    applied(outcome(change(owner, by_x.id, ChangeKind::Delete)).await);
    applied(outcome(change(y, by_y.id, ChangeKind::Delete)).await);

    store.remove_member(group, owner, x, now()).await.unwrap();
    let left = send(&store, y, Target::Group(group), "after x left").await;
    assert_eq!(
        outcome(react(x, left.id, "👍")).await,
        ChangeOutcome::NotFound,
        "not a message x received"
    );
    let page = store.group_history(y, group, None, 10).await.unwrap().items;
    let deleted: Vec<bool> = page.iter().map(|m| m.deleted_at.is_some()).collect();
    assert_eq!(deleted, vec![true, true, false]);
    let list = store.conversations(y, 10).await.unwrap();
    assert_eq!(list[0].unread_count, 0, "deleted messages are not unread");
}

async fn changes_follow_messages_in_each_readers_sequence(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b) = (user(&store).await, user(&store).await);
    let m1 = send(&store, a, Target::User(b), "one").await;
    applied(store.apply_change(&edit(a, m1.id, "one!")).await.unwrap());
    let m2 = send(&store, b, Target::User(a), "two").await;
    applied(store.apply_change(&react(b, m1.id, "👍")).await.unwrap());
    applied(
        store
            .apply_change(&change(b, m2.id, ChangeKind::Delete))
            .await
            .unwrap(),
    );

    let page = store.entries_after(b, 0, 50).await.unwrap();
    let shape: Vec<(i64, String)> = page
        .items
        .iter()
        .map(|e| match e {
            Entry::Message(s) => (s.seq, format!("message {}", s.message.content)),
            Entry::Change { seq, change } => (
                *seq,
                format!("{} {}", change.kind.as_str(), change.message.id),
            ),
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (1, "message one!".to_string()),
            (2, format!("edit {}", m1.id)),
            (3, "message ".to_string()),
            (4, format!("react {}", m1.id)),
            (5, format!("delete {}", m2.id)),
        ],
        "messages as they stand now, changes in commit order"
    );
    let (tail, cursor) = store
        .sync(b, ochat::store::SyncFrom::Cursor(3), 1)
        .await
        .unwrap();
    assert!(tail.has_more);
    assert_eq!(cursor, 4);
    let (rest, cursor) = store
        .sync(b, ochat::store::SyncFrom::Cursor(cursor), 10)
        .await
        .unwrap();
    assert_eq!((rest.items.len(), rest.has_more, cursor), (1, false, 5));
    let (none, cursor) = store
        .sync(b, ochat::store::SyncFrom::Cursor(5), 10)
        .await
        .unwrap();
    assert!(none.items.is_empty());
    assert_eq!(cursor, 5, "an empty page keeps the cursor");
}

async fn a_reply_shows_a_preview_of_what_it_answers(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b) = (user(&store).await, user(&store).await);
    let long = "x".repeat(150);
    let original = send(&store, a, Target::User(b), &long).await;
    let reply = send_reply(
        &store,
        b,
        Target::User(a),
        "agreed",
        Some(ReplyTo::of(&original)),
    )
    .await;
    let preview = reply.reply_to.clone().unwrap();
    assert_eq!(preview.id, original.id);
    assert_eq!(preview.preview.as_deref(), Some("x".repeat(100).as_str()));

    let shown = history(&store, a, b).await;
    let stored = shown[1].reply_to.clone().unwrap();
    assert_eq!(stored, preview, "history reads the same preview");

    applied(
        store
            .apply_change(&change(a, original.id, ChangeKind::Delete))
            .await
            .unwrap(),
    );
    let shown = history(&store, a, b).await;
    let gone = shown[1].reply_to.clone().unwrap();
    assert_eq!(
        (gone.id, gone.sender_id, gone.preview, gone.deleted),
        (original.id, a, None, true)
    );
}

/// A change that waits for its readers' rows while sends number them (a
/// busy conversation) still finds the message and its reader.
async fn a_change_waiting_on_concurrent_sends_still_finds_its_message(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b) = (user(&store).await, user(&store).await);
    let m = send(&store, a, Target::User(b), "busy").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let sending = store.clone();
        tasks.spawn(async move {
            let batch: Vec<NewMessage> = (0..20)
                .map(|k| NewMessage {
                    id: Uuid::now_v7(),
                    sender_id: if k % 2 == 0 { a } else { b },
                    to: Target::User(if k % 2 == 0 { b } else { a }),
                    content: format!("more {i}.{k}"),
                    client_id: None,
                    created_at: now(),
                    reply_to: None,
                    attachments: Vec::new(),
                })
                .collect();
            sending.insert_messages(&batch).await.unwrap();
            None
        });
        let changing = store.clone();
        tasks.spawn(async move {
            let emoji = if i % 2 == 0 { "👍" } else { "🎉" };
            let kind = if i % 4 < 2 {
                ChangeKind::React {
                    emoji: emoji.into(),
                }
            } else {
                ChangeKind::Unreact {
                    emoji: emoji.into(),
                }
            };
            Some(changing.apply_change(&change(b, m.id, kind)).await.unwrap())
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Some(outcome) = done.unwrap() {
            assert!(
                matches!(
                    outcome,
                    ChangeOutcome::Applied(_) | ChangeOutcome::Unchanged(_)
                ),
                "{outcome:?}"
            );
        }
    }
}
