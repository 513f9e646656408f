//! The SQL both engines run word for word.
//!
//! sqlx binds `$1`-style parameters in SQLite as it does in PostgreSQL, so
//! a query written once in the dialect the two share is expanded by the
//! macros here into each engine's own `impl` (`portable_users!(PgStore)`
//! in `postgres/users.rs`, and so on). An engine's files then hold only
//! what its dialect writes differently: arrays against `IN` lists, row
//! locks against the database write lock, full-text search, the write path.
//!
//! A macro expands where it is called, so the code here may name what
//! each engine provides: its `pool`, `begin_write` and, for groups,
//! `lock_group`, `present_members` and `join_members`.

/// What every message read adds to the seed's columns: edit and delete
/// times, and the message it answers with a preview of it (`NULL` once
/// that one was deleted).
macro_rules! reply_columns {
    () => {
        "m.edited_at, m.deleted_at, m.reply_to, \
         (SELECT r.sender_id FROM messages r WHERE r.id = m.reply_to) AS reply_sender, \
         (SELECT CASE WHEN r.deleted_at IS NULL THEN substr(r.content, 1, 100) END \
            FROM messages r WHERE r.id = m.reply_to) AS reply_preview"
    };
}

/// Columns of a message, in the order [`super::rows::MessageRow`] reads them.
macro_rules! message_columns {
    () => {
        concat!("m.id, m.sender_id, m.receiver_id, m.content, CAST(m.message_type AS TEXT) AS message_type, \
         m.is_read, m.read_at, m.created_at, m.updated_at, m.client_id, m.conversation_id, ",
        reply_columns!())
    };
}

/// The same, with the read state of the reader's inbox row `i`: in a group
/// each member has their own.
macro_rules! inbox_message_columns {
    () => {
        concat!("m.id, m.sender_id, m.receiver_id, m.content, CAST(m.message_type AS TEXT) AS message_type, \
         (i.read_at IS NOT NULL) AS is_read, i.read_at, m.created_at, m.updated_at, m.client_id, \
         m.conversation_id, ",
        reply_columns!())
    };
}

/// Either: the message's own read state for a direct message, the reader's
/// (a `LEFT JOIN inbox i`) for a group message.
macro_rules! viewer_message_columns {
    () => {
        concat!("m.id, m.sender_id, m.receiver_id, m.content, CAST(m.message_type AS TEXT) AS message_type, \
         CASE WHEN m.receiver_id IS NULL THEN i.read_at IS NOT NULL ELSE m.is_read END AS is_read, \
         CASE WHEN m.receiver_id IS NULL THEN i.read_at ELSE m.read_at END AS read_at, \
         m.created_at, m.updated_at, m.client_id, m.conversation_id, ",
        reply_columns!())
    };
}

#[macro_use]
mod changes;
#[macro_use]
mod groups;
#[macro_use]
mod messages;
#[macro_use]
mod users;

pub(super) use users::contacts_sql;
