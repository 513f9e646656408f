-- ochat schema (embedded SQLite). Same shape as the Postgres schema; UUIDs are
-- 16-byte blobs, times are RFC 3339 text, search uses FTS5.

CREATE TABLE users (
    id BLOB PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    username TEXT,
    avatar_url TEXT,
    is_online INTEGER NOT NULL DEFAULT 0,
    last_seen TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    msg_seq INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE messages (
    id BLOB PRIMARY KEY,
    sender_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    receiver_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    content TEXT NOT NULL,
    message_type TEXT NOT NULL DEFAULT 'text' CHECK (message_type IN ('text', 'image', 'file', 'system')),
    is_read INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    read_at TEXT,
    client_id TEXT,
    conversation_id BLOB NOT NULL,
    sender_seq INTEGER NOT NULL,
    receiver_seq INTEGER NOT NULL,
    CHECK (sender_id <> receiver_id)
);

CREATE UNIQUE INDEX messages_sender_client_id ON messages (sender_id, client_id) WHERE client_id IS NOT NULL;
CREATE UNIQUE INDEX messages_sender_seq ON messages (sender_id, sender_seq);
CREATE UNIQUE INDEX messages_receiver_seq ON messages (receiver_id, receiver_seq);
CREATE INDEX messages_conversation ON messages (conversation_id, id);
CREATE INDEX messages_unread ON messages (receiver_id, conversation_id) WHERE NOT is_read;

CREATE VIRTUAL TABLE messages_fts USING fts5(
    content,
    content = 'messages',
    content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 0'
);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
END;

CREATE TABLE conversations (
    id BLOB PRIMARY KEY,
    user_a BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    user_b BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    last_message_id BLOB NOT NULL,
    last_message_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    CHECK (user_a < user_b)
);

CREATE INDEX conversations_user_a ON conversations (user_a, last_message_at DESC);
CREATE INDEX conversations_user_b ON conversations (user_b, last_message_at DESC);
