//! An existing database migrates forward with its data. A database written
//! as the previous schema left it (`PREVIOUS`: every migration up to that
//! version), holding direct chats and a group with read and unread
//! messages, is opened by this build, which applies the rest; then every
//! message, every read state and every user's cursor is as it was, and
//! numbering goes on where it stopped.
//!
//! When a migration changes the model, `PREVIOUS` moves to the last
//! version before it and `seed` writes that schema's rows.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use chrono::Duration;
use ochat::store::{Entry, NewMessage, Store, SyncFrom, Target, conversation_id, now};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{Backend, TEST_SECRET, TestDatabase};

/// The release before messages could be edited, deleted or reacted to
/// (and before attachments): the lifecycle and attachment migrations run
/// on its data.
const PREVIOUS: i64 = 20261203000001;

both_backends!(
    every_message_read_state_and_cursor_survives_the_migration,
    numbering_goes_on_where_it_stopped_after_the_migration,
    a_sent_client_id_stays_taken_after_the_migration,
    random_ids_are_kept_whole_and_never_expired,
);

/// One message as seeded: who reads it, and whether each has read it.
struct Seeded {
    id: Uuid,
    sender: Uuid,
    conversation: Uuid,
    content: String,
    /// The sender's idempotency key, on every fifth message.
    client_id: Option<String>,
    /// Every reader (a direct message's two users, a group's members)
    /// with their number for it and whether they have read it.
    readers: Vec<(Uuid, i64, bool)>,
}

struct OldDatabase {
    db: TestDatabase,
    users: Vec<Uuid>,
    group: Uuid,
    messages: Vec<Seeded>,
}

/// The rows as the previous schema holds them, engine by engine only where
/// their column types differ (SQLite keeps times as text and needs every
/// `NOT NULL` time given).
async fn seed(backend: Backend) -> OldDatabase {
    let db = TestDatabase::new(backend).await;
    let users: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    let group = Uuid::now_v7();
    let members = [users[0], users[1], users[2], users[5]];
    let pairs = [
        (users[0], users[1]),
        (users[0], users[2]),
        (users[3], users[4]),
    ];
    let start = now() - Duration::hours(1);
    let mut seq: HashMap<Uuid, i64> = HashMap::new();
    let mut next = |u: Uuid| {
        let n = seq.entry(u).or_default();
        *n += 1;
        *n
    };
    // Round robin over the three chats and the group, senders taking
    // turns, numbered as the writer numbers: each reader's next number.
    let mut messages = Vec::new();
    for i in 0..80usize {
        let at = start + Duration::milliseconds(i as i64 * 10);
        let (sender, conversation, readers) = match i % 4 {
            3 => {
                let sender = members[i / 4 % members.len()];
                let readers: Vec<Uuid> = members.to_vec();
                (sender, group, readers)
            }
            k => {
                let (x, y) = pairs[k];
                let (sender, receiver) = if i / 4 % 2 == 0 { (x, y) } else { (y, x) };
                (sender, conversation_id(x, y), vec![sender, receiver])
            }
        };
        // The older two thirds are read; a sender has read their own.
        let read = i < 54;
        messages.push((
            at,
            Seeded {
                id: Uuid::now_v7(),
                sender,
                conversation,
                content: format!("old message {i}"),
                client_id: (i % 5 == 0).then(|| format!("old-key-{i}")),
                readers: readers
                    .into_iter()
                    .map(|r| (r, next(r), read || r == sender))
                    .collect(),
            },
        ));
    }
    let seqs = seq;

    macro_rules! write_rows {
        ($pool:expr, $migrations:literal) => {{
            let pool = $pool;
            let mut previous = sqlx::migrate::Migrator::new(std::path::Path::new($migrations))
                .await
                .unwrap();
            previous.migrations = Cow::Owned(
                previous
                    .migrations
                    .iter()
                    .filter(|m| m.version <= PREVIOUS)
                    .cloned()
                    .collect(),
            );
            previous.run(&pool).await.unwrap();
            for (i, user) in users.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO users (id, email, username, msg_seq, last_seen, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $5, $5)",
                )
                .bind(user)
                .bind(format!("{}@example.com", user.simple()))
                .bind(format!("user{i}"))
                .bind(seqs.get(user).copied().unwrap_or(0))
                .bind(start)
                .execute(&pool)
                .await
                .unwrap();
            }
            sqlx::query(
                "INSERT INTO conversations (id, kind, title, created_by, member_count, created_at, updated_at)
                 VALUES ($1, 'group', 'old group', $2, $3, $4, $4)",
            )
            .bind(group)
            .bind(members[0])
            .bind(members.len() as i32)
            .bind(start)
            .execute(&pool)
            .await
            .unwrap();
            for (k, member) in members.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO conversation_members (conversation_id, user_id, role, joined_at)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(group)
                .bind(member)
                .bind(if k == 0 { "owner" } else { "member" })
                .bind(start)
                .execute(&pool)
                .await
                .unwrap();
            }
            for (at, m) in &messages {
                let direct = m.conversation != group;
                let number = |who: Uuid| m.readers.iter().find(|r| r.0 == who).unwrap();
                let receiver = m.readers.iter().map(|r| r.0).find(|r| *r != m.sender);
                let read_at = |read: bool| read.then_some(*at + Duration::seconds(1));
                sqlx::query(
                    "INSERT INTO messages (id, sender_id, receiver_id, content, conversation_id,
                         sender_seq, receiver_seq, is_read, read_at, created_at, updated_at,
                         client_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11)",
                )
                .bind(m.id)
                .bind(m.sender)
                .bind(direct.then(|| receiver.unwrap()))
                .bind(&m.content)
                .bind(m.conversation)
                .bind(direct.then(|| number(m.sender).1))
                .bind(direct.then(|| number(receiver.unwrap()).1))
                .bind(direct && number(receiver.unwrap()).2)
                .bind(if direct { read_at(number(receiver.unwrap()).2) } else { None })
                .bind(*at)
                .bind(&m.client_id)
                .execute(&pool)
                .await
                .unwrap();
                if direct {
                    let (lo, hi) = if m.sender < receiver.unwrap() {
                        (m.sender, receiver.unwrap())
                    } else {
                        (receiver.unwrap(), m.sender)
                    };
                    sqlx::query(
                        "INSERT INTO conversations (id, kind, user_a, user_b, last_message_id, last_message_at,
                             created_at, updated_at)
                         VALUES ($1, 'direct', $2, $3, $4, $5, $5, $5)
                         ON CONFLICT (id) DO UPDATE SET last_message_id = $4, last_message_at = $5",
                    )
                    .bind(m.conversation)
                    .bind(lo)
                    .bind(hi)
                    .bind(m.id)
                    .bind(*at)
                    .execute(&pool)
                    .await
                    .unwrap();
                } else {
                    for &(reader, n, read) in &m.readers {
                        sqlx::query(
                            "INSERT INTO inbox (user_id, seq, message_id, conversation_id, read_at)
                             VALUES ($1, $2, $3, $4, $5)",
                        )
                        .bind(reader)
                        .bind(n)
                        .bind(m.id)
                        .bind(group)
                        .bind(read_at(read))
                        .execute(&pool)
                        .await
                        .unwrap();
                    }
                }
            }
            pool.close().await;
        }};
    }
    match backend {
        Backend::Postgres => {
            write_rows!(
                sqlx::PgPool::connect(&db.url).await.unwrap(),
                "migrations/postgres"
            )
        }
        Backend::Sqlite => {
            let options: sqlx::sqlite::SqliteConnectOptions = db.url.parse().unwrap();
            write_rows!(
                sqlx::SqlitePool::connect_with(options.create_if_missing(true))
                    .await
                    .unwrap(),
                "migrations/sqlite"
            )
        }
    }
    OldDatabase {
        db,
        users,
        group,
        messages: messages.into_iter().map(|(_, m)| m).collect(),
    }
}

impl OldDatabase {
    /// Opens the store as this build does, which applies the migrations
    /// after `PREVIOUS`.
    async fn migrate(&self) -> Arc<dyn Store> {
        let config = ochat::config::Config::from_vars([
            ("DATABASE_URL", self.db.url.as_str()),
            ("JWT_SECRET", TEST_SECRET),
        ])
        .unwrap();
        ochat::store::open(&config).await.expect("migrated store")
    }

    /// What `user` reads, in their own numbering.
    fn feed(&self, user: Uuid) -> Vec<(i64, &Seeded)> {
        let mut feed: Vec<(i64, &Seeded)> = self
            .messages
            .iter()
            .filter_map(|m| m.readers.iter().find(|r| r.0 == user).map(|r| (r.1, m)))
            .collect();
        feed.sort_by_key(|(n, _)| *n);
        feed
    }
}

/// Every user's `sync` from the start returns exactly their messages, in
/// their numbers 1..n, with the same ids, senders, contents and read
/// states; from a cursor in the middle, exactly the rest. Every
/// conversation's history pages back to its first message, and every
/// conversation's unread count is as it was.
async fn every_message_read_state_and_cursor_survives_the_migration(backend: Backend) {
    let old = seed(backend).await;
    let store = old.migrate().await;
    for &user in &old.users {
        let feed = old.feed(user);
        let (page, cursor) = store.sync(user, SyncFrom::Start, 500).await.unwrap();
        assert!(!page.has_more);
        assert_eq!(cursor, feed.len() as i64);
        let synced: Vec<(i64, Uuid, Uuid, String)> = page
            .items
            .iter()
            .map(|e| match e {
                Entry::Message(s) => (
                    s.seq,
                    s.message.id,
                    s.message.sender_id,
                    s.message.content.clone(),
                ),
                Entry::Change { .. } => panic!("no changes were seeded"),
            })
            .collect();
        let expected: Vec<(i64, Uuid, Uuid, String)> = feed
            .iter()
            .map(|(n, m)| (*n, m.id, m.sender, m.content.clone()))
            .collect();
        assert_eq!(synced, expected, "sync of {user}");

        // A cursor in the middle: exactly the rest, nothing skipped.
        let half = feed.len() as i64 / 2;
        let (rest, _) = store.sync(user, SyncFrom::Cursor(half), 500).await.unwrap();
        let numbers: Vec<i64> = rest.items.iter().map(Entry::seq).collect();
        assert_eq!(
            numbers,
            ((half + 1)..=feed.len() as i64).collect::<Vec<_>>()
        );

        // Read states and unread counts, conversation by conversation.
        let mut unread: HashMap<Uuid, i64> = HashMap::new();
        for (_, m) in &feed {
            let read = m.readers.iter().find(|r| r.0 == user).unwrap().2;
            *unread.entry(m.conversation).or_default() += i64::from(!read);
        }
        let listed: HashMap<Uuid, i64> = store
            .conversations(user, 50)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.conversation_id, c.unread_count))
            .collect();
        assert_eq!(listed, unread, "unread counts of {user}");
        for (conversation, _) in unread {
            let history: Vec<(Uuid, bool)> = if conversation == old.group {
                store.group_history(user, old.group, None, 100).await
            } else {
                let peer = feed
                    .iter()
                    .find(|(_, m)| m.conversation == conversation)
                    .and_then(|(_, m)| m.readers.iter().map(|r| r.0).find(|r| *r != user))
                    .unwrap();
                store.conversation(user, peer, None, 100).await
            }
            .unwrap()
            .items
            .iter()
            .map(|m| (m.id, m.is_read))
            .collect();
            let expected: Vec<(Uuid, bool)> = old
                .messages
                .iter()
                .filter(|m| m.conversation == conversation)
                .map(|m| {
                    // A direct message's `is_read` is its receiver's; a
                    // group message's, the reader's own.
                    let reader = if conversation == old.group {
                        user
                    } else {
                        m.readers
                            .iter()
                            .map(|r| r.0)
                            .find(|r| *r != m.sender)
                            .unwrap()
                    };
                    (m.id, m.readers.iter().find(|r| r.0 == reader).unwrap().2)
                })
                .collect();
            assert_eq!(history, expected, "history of {conversation} for {user}");
        }
    }
}

/// A new message in each kind of conversation takes its readers' next
/// numbers, and `sync` from their old cursors returns just it.
async fn numbering_goes_on_where_it_stopped_after_the_migration(backend: Backend) {
    let old = seed(backend).await;
    let store = old.migrate().await;
    let (a, b) = (old.users[0], old.users[1]);
    let last = |user: Uuid| old.feed(user).len() as i64;
    let new = |to: Target| NewMessage {
        id: Uuid::now_v7(),
        sender_id: a,
        to,
        content: "after the migration".into(),
        client_id: None,
        created_at: now(),
        reply_to: None,
        attachments: Vec::new(),
    };
    for target in [Target::User(b), Target::Group(old.group)] {
        let before: HashMap<Uuid, i64> = old.users.iter().map(|u| (*u, last(*u))).collect();
        let outcome = store.insert_messages(&[new(target)]).await.unwrap();
        let ochat::store::InsertOutcome::Created(stored) = &outcome[0] else {
            panic!("{outcome:?}");
        };
        for &(reader, n) in &stored.seqs {
            let extra = match target {
                Target::Group(_) if reader == a || reader == b => 1,
                _ => 0,
            };
            assert_eq!(n, before[&reader] + 1 + extra, "{reader}'s next number");
            let (page, _) = store
                .sync(reader, SyncFrom::Cursor(n - 1), 10)
                .await
                .unwrap();
            let ids: Vec<Uuid> = page
                .items
                .iter()
                .map(|e| match e {
                    Entry::Message(s) => s.message.id,
                    Entry::Change { .. } => Uuid::nil(),
                })
                .collect();
            assert_eq!(ids, vec![stored.message.id]);
        }
    }
}

/// Resending a message stored before the migration, with its `client_id`,
/// answers the stored message (PostgreSQL moved the keys to a table of
/// their own when it partitioned the messages).
async fn a_sent_client_id_stays_taken_after_the_migration(backend: Backend) {
    let old = seed(backend).await;
    let store = old.migrate().await;
    let keyed: Vec<&Seeded> = old
        .messages
        .iter()
        .filter(|m| m.client_id.is_some())
        .collect();
    assert_eq!(keyed.len(), 16);
    for m in keyed {
        let to = if m.conversation == old.group {
            Target::Group(old.group)
        } else {
            Target::User(
                m.readers
                    .iter()
                    .map(|r| r.0)
                    .find(|r| *r != m.sender)
                    .unwrap(),
            )
        };
        let resent = NewMessage {
            id: Uuid::now_v7(),
            sender_id: m.sender,
            to,
            content: "resent".into(),
            client_id: m.client_id.clone(),
            created_at: now(),
            reply_to: None,
            attachments: Vec::new(),
        };
        let outcome = store.insert_messages(&[resent]).await.unwrap();
        match &outcome[0] {
            ochat::store::InsertOutcome::Duplicate(stored) => {
                assert_eq!((stored.id, &stored.content), (m.id, &m.content));
            }
            other => panic!("{:?} resent: {other:?}", m.client_id),
        }
    }
}

/// A message written with the seed schema's random id (UUIDv4), whose
/// first bits say nothing of its time: PostgreSQL keeps the old table as
/// one partition for every id, SQLite's expiry skips it, and sending goes
/// on in both.
async fn random_ids_are_kept_whole_and_never_expired(backend: Backend) {
    let old = seed(backend).await;
    let (a, b) = (old.users[0], old.users[1]);
    let random: Uuid = "00000000-0000-4000-8000-000000000001".parse().unwrap();
    let insert = "INSERT INTO messages (id, sender_id, receiver_id, content, conversation_id,
                      sender_seq, receiver_seq, created_at, updated_at)
                  VALUES ($1, $2, $3, 'from the seed app', $4, 1000, 1000, $5, $5)";
    // The two engines' pools differ in type; the statement is the same.
    macro_rules! insert_random {
        ($pool:expr) => {{
            let pool = $pool;
            sqlx::query(insert)
                .bind(random)
                .bind(a)
                .bind(b)
                .bind(conversation_id(a, b))
                .bind(now())
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }};
    }
    match backend {
        Backend::Postgres => insert_random!(sqlx::PgPool::connect(&old.db.url).await.unwrap()),
        Backend::Sqlite => insert_random!(sqlx::SqlitePool::connect(&old.db.url).await.unwrap()),
    }
    let store = old.migrate().await;
    if backend == Backend::Postgres {
        let pool = sqlx::PgPool::connect(&old.db.url).await.unwrap();
        let bounds: Vec<String> = sqlx::query_scalar(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'messages'::regclass",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(bounds, vec!["FOR VALUES FROM (MINVALUE) TO (MAXVALUE)"]);
        pool.close().await;
    }
    // Everything is older than a cutoff a month ahead.
    let expired = store
        .expire_messages(now() + Duration::days(30))
        .await
        .unwrap();
    let kept = store.message(random).await.unwrap();
    assert_eq!(
        kept.map(|m| m.content).as_deref(),
        Some("from the seed app")
    );
    let expected = match backend {
        // Nothing: the one partition holds every id.
        Backend::Postgres => 0,
        // Every seeded message but the random one.
        Backend::Sqlite => old.messages.len() as u64,
    };
    assert_eq!(expired.messages, expected);
    let sent = NewMessage {
        id: Uuid::now_v7(),
        sender_id: a,
        to: Target::User(b),
        content: "after".into(),
        client_id: None,
        created_at: now(),
        reply_to: None,
        attachments: Vec::new(),
    };
    let outcome = store.insert_messages(&[sent]).await.unwrap();
    assert!(
        matches!(outcome[0], ochat::store::InsertOutcome::Created(_)),
        "{outcome:?}"
    );
}
