//! The store's batch calls for users arriving and leaving together: one
//! statement for many users, each user answered as if asked alone.

use std::collections::HashSet;

use chrono::Duration;
use ochat::store::now;
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{Backend, test_store};
use crate::store_contract::user;

both_backends!(
    a_batch_of_users_keeps_the_last_email_given_for_each,
    a_batch_of_presence_records_keeps_the_last_for_each_user,
    a_batch_of_contact_lookups_answers_each_user,
);

async fn a_batch_of_users_keeps_the_last_email_given_for_each(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    store.upsert_users(&[]).await.unwrap();
    store
        .upsert_users(&[
            (a, "first@example.com".into()),
            (b, "b@example.com".into()),
            (a, "second@example.com".into()),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.user(a).await.unwrap().unwrap().email,
        "second@example.com"
    );
    assert_eq!(store.user(b).await.unwrap().unwrap().email, "b@example.com");
    // Known users among new ones: the known keep their row, changed
    // emails are refreshed.
    let c = Uuid::now_v7();
    store
        .upsert_users(&[
            (b, "b@example.com".into()),
            (c, "c@example.com".into()),
            (a, "third@example.com".into()),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.user(a).await.unwrap().unwrap().email,
        "third@example.com"
    );
    assert_eq!(store.user(c).await.unwrap().unwrap().email, "c@example.com");
}

async fn a_batch_of_presence_records_keeps_the_last_for_each_user(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b, c) = (user(&store).await, user(&store).await, user(&store).await);
    let earlier = now() - Duration::seconds(5);
    let later = now();
    store.set_presences(&[]).await.unwrap();
    store
        .set_presences(&[
            (a, true, earlier),
            (b, true, earlier),
            (a, false, later),
            (Uuid::now_v7(), true, later),
        ])
        .await
        .unwrap();
    let (ua, ub, uc) = (
        store.user(a).await.unwrap().unwrap(),
        store.user(b).await.unwrap().unwrap(),
        store.user(c).await.unwrap().unwrap(),
    );
    assert_eq!((ua.is_online, ua.last_seen), (false, later));
    assert_eq!((ub.is_online, ub.last_seen), (true, earlier));
    assert!(!uc.is_online, "a user not in the batch is untouched");
}

async fn a_batch_of_contact_lookups_answers_each_user(backend: Backend) {
    let (store, _db) = test_store(backend).await;
    let (a, b, c, d) = (
        user(&store).await,
        user(&store).await,
        user(&store).await,
        user(&store).await,
    );
    for (from, to) in [(a, b), (a, c), (c, a), (d, b)] {
        store
            .insert_messages(&[crate::store_contract::new_message(from, to, "hi", None)])
            .await
            .unwrap();
    }
    store.block(d, b, now()).await.unwrap();
    assert_eq!(store.contacts_of(&[], 50).await.unwrap(), Vec::new());
    let pairs: HashSet<(Uuid, Uuid)> = store
        .contacts_of(&[a, c, a, b, d, Uuid::now_v7()], 50)
        .await
        .unwrap()
        .into_iter()
        .collect();
    // a wrote to b and c; c to a; b wrote to no one; d blocked the one
    // they wrote to. A user asked twice is answered once.
    assert_eq!(pairs, HashSet::from([(a, b), (a, c), (c, a)]));
    for one in [a, b, c, d] {
        let alone: HashSet<Uuid> = store.contacts(one, 50).await.unwrap().into_iter().collect();
        let batched: HashSet<Uuid> = pairs.iter().filter(|p| p.0 == one).map(|p| p.1).collect();
        assert_eq!(alone, batched);
    }
}
