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

/// Columns of a message, in the order [`super::rows::MessageRow`] reads them.
macro_rules! message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, CAST(m.message_type AS TEXT) AS message_type, \
         m.is_read, m.read_at, m.created_at, m.updated_at, m.client_id, m.conversation_id"
    };
}

/// The same, with the read state of the reader's inbox row `i`: in a group
/// each member has their own.
macro_rules! inbox_message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, CAST(m.message_type AS TEXT) AS message_type, \
         (i.read_at IS NOT NULL) AS is_read, i.read_at, m.created_at, m.updated_at, m.client_id, \
         m.conversation_id"
    };
}

/// Either: the message's own read state for a direct message, the reader's
/// (a `LEFT JOIN inbox i`) for a group message.
macro_rules! viewer_message_columns {
    () => {
        "m.id, m.sender_id, m.receiver_id, m.content, CAST(m.message_type AS TEXT) AS message_type, \
         CASE WHEN m.receiver_id IS NULL THEN i.read_at IS NOT NULL ELSE m.is_read END AS is_read, \
         CASE WHEN m.receiver_id IS NULL THEN i.read_at ELSE m.read_at END AS read_at, \
         m.created_at, m.updated_at, m.client_id, m.conversation_id"
    };
}

#[macro_use]
mod groups;
#[macro_use]
mod messages;
#[macro_use]
mod users;
