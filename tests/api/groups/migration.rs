//! Direct chats stored before groups existed, after the groups migration:
//! the same ids, history and unread counts, and numbering that goes on
//! where it stopped.

use std::borrow::Cow;
use std::sync::Arc;

use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{Backend, TEST_SECRET, TestDatabase};

both_backends!(
    old_direct_chats_keep_their_ids_history_and_unread_counts,
    old_direct_chats_go_on_numbering_where_they_stopped,
);

/// A database as the release before groups left it (its first migration
/// only), holding one direct conversation between a and b: m1 from a, then
/// m2 from b, unread; both users' numbering stands at 2.
struct OldChat {
    db: TestDatabase,
    a: Uuid,
    b: Uuid,
    m1: Uuid,
    m2: Uuid,
    conversation: Uuid,
}

impl OldChat {
    async fn seed(backend: Backend) -> Self {
        let db = TestDatabase::new(backend).await;
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let (m1, m2) = (Uuid::now_v7(), Uuid::now_v7());
        let conversation = ochat::store::conversation_id(a, b);
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let at = ochat::store::now();
        match backend {
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
                let mut first =
                    sqlx::migrate::Migrator::new(std::path::Path::new("migrations/postgres"))
                        .await
                        .unwrap();
                first.migrations = Cow::Owned(first.migrations[..1].to_vec());
                first.run(&pool).await.unwrap();
                sqlx::query("INSERT INTO users (id, email, msg_seq) VALUES ($1, 'a@example.com', 2), ($2, 'b@example.com', 2)")
                    .bind(a)
                    .bind(b)
                    .execute(&pool)
                    .await
                    .unwrap();
                sqlx::query(
                    "INSERT INTO messages (id, sender_id, receiver_id, content, conversation_id, sender_seq, receiver_seq, created_at)
                     VALUES ($1, $3, $4, 'old one', $5, 1, 1, $6), ($2, $4, $3, 'old two', $5, 2, 2, $6)",
                )
                .bind(m1)
                .bind(m2)
                .bind(a)
                .bind(b)
                .bind(conversation)
                .bind(at)
                .execute(&pool)
                .await
                .unwrap();
                sqlx::query("INSERT INTO conversations (id, user_a, user_b, last_message_id, last_message_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(conversation)
                    .bind(lo)
                    .bind(hi)
                    .bind(m2)
                    .bind(at)
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
            Backend::Sqlite => {
                let options: sqlx::sqlite::SqliteConnectOptions = db.url.parse().unwrap();
                let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
                    .await
                    .unwrap();
                let mut first =
                    sqlx::migrate::Migrator::new(std::path::Path::new("migrations/sqlite"))
                        .await
                        .unwrap();
                first.migrations = Cow::Owned(first.migrations[..1].to_vec());
                first.run(&pool).await.unwrap();
                sqlx::query(
                    "INSERT INTO users (id, email, msg_seq, last_seen, created_at, updated_at)
                     VALUES (?1, 'a@example.com', 2, ?3, ?3, ?3), (?2, 'b@example.com', 2, ?3, ?3, ?3)",
                )
                .bind(a)
                .bind(b)
                .bind(at)
                .execute(&pool)
                .await
                .unwrap();
                sqlx::query(
                    "INSERT INTO messages (id, sender_id, receiver_id, content, conversation_id, sender_seq, receiver_seq, created_at, updated_at)
                     VALUES (?1, ?3, ?4, 'old one', ?5, 1, 1, ?6, ?6), (?2, ?4, ?3, 'old two', ?5, 2, 2, ?6, ?6)",
                )
                .bind(m1)
                .bind(m2)
                .bind(a)
                .bind(b)
                .bind(conversation)
                .bind(at)
                .execute(&pool)
                .await
                .unwrap();
                sqlx::query("INSERT INTO conversations (id, user_a, user_b, last_message_id, last_message_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)")
                    .bind(conversation)
                    .bind(lo)
                    .bind(hi)
                    .bind(m2)
                    .bind(at)
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
        }
        Self {
            db,
            a,
            b,
            m1,
            m2,
            conversation,
        }
    }

    /// Opens the store, which applies the rest of the migrations.
    async fn migrate(&self) -> Arc<dyn ochat::store::Store> {
        let config = ochat::config::Config::from_vars([
            ("DATABASE_URL", self.db.url.as_str()),
            ("JWT_SECRET", TEST_SECRET),
        ])
        .unwrap();
        ochat::store::open(&config).await.expect("migrated store")
    }
}

/// The conversation keeps its id and both messages, in order; a's list
/// has it with m2 unread; numbers and contacts are as they were.
async fn old_direct_chats_keep_their_ids_history_and_unread_counts(backend: Backend) {
    let old = OldChat::seed(backend).await;
    let (a, b, m1, m2, conversation) = (old.a, old.b, old.m1, old.m2, old.conversation);
    let store = old.migrate().await;

    let page = store.conversation(a, b, None, 10).await.unwrap();
    let ids: Vec<Uuid> = page.items.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![m1, m2]);
    assert_eq!(page.items[0].content, "old one");
    assert_eq!(page.items[1].receiver_id, Some(a));
    assert_eq!(page.items[1].conversation_id, conversation);
    let list = store.conversations(a, 10).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].conversation_id, conversation);
    assert_eq!(list[0].user_id, Some(b));
    assert_eq!(list[0].unread_count, 1);
    assert_eq!(store.seq_of(a, m2).await.unwrap(), Some(2));
    assert_eq!(
        store.contacts(a, 50).await.unwrap(),
        vec![b],
        "contacts still come from direct conversations"
    );
}

/// A new message takes each user's next number (3), and `sync` from m1
/// returns m2 and it, without a gap.
async fn old_direct_chats_go_on_numbering_where_they_stopped(backend: Backend) {
    let old = OldChat::seed(backend).await;
    let (a, b, m1) = (old.a, old.b, old.m1);
    let store = old.migrate().await;

    let outcome = store
        .insert_messages(&[ochat::store::NewMessage {
            id: Uuid::now_v7(),
            sender_id: a,
            to: ochat::store::Target::User(b),
            content: "new one".into(),
            client_id: None,
            created_at: ochat::store::now(),
            reply_to: None,
            attachments: Vec::new(),
        }])
        .await
        .unwrap();
    let ochat::store::InsertOutcome::Created(stored) = &outcome[0] else {
        panic!("{outcome:?}");
    };
    assert_eq!(stored.seqs, vec![(a, 3), (b, 3)]);
    let synced = store.sync(b, Some(m1).into(), 10).await.unwrap().0;
    let seqs: Vec<i64> = synced.items.iter().map(|s| s.seq()).collect();
    assert_eq!(seqs, vec![2, 3]);
}
