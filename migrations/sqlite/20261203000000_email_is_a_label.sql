-- no-transaction
-- A user is their token's `sub`; the email is a label, not a key (see the
-- Postgres migration of the same name). SQLite cannot drop a column's
-- UNIQUE in place, so `users` is rebuilt with every row. Foreign keys are
-- off while the old table is dropped: with them on, the drop would first
-- delete every user and cascade to their messages. (Off and on must be
-- outside a transaction, hence `no-transaction` and the explicit one.)
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE users_new (
    id BLOB PRIMARY KEY,
    email TEXT NOT NULL,
    username TEXT,
    avatar_url TEXT,
    is_online INTEGER NOT NULL DEFAULT 0,
    last_seen TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    msg_seq INTEGER NOT NULL DEFAULT 0
);
INSERT INTO users_new (id, email, username, avatar_url, is_online, last_seen, created_at, updated_at, msg_seq)
    SELECT id, email, username, avatar_url, is_online, last_seen, created_at, updated_at, msg_seq FROM users;
DROP TABLE users;
ALTER TABLE users_new RENAME TO users;
COMMIT;
PRAGMA foreign_keys = ON;
