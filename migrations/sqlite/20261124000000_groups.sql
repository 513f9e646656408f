-- Group conversations; see the Postgres migration of the same name for the
-- model. SQLite cannot drop NOT NULL in place, so `conversations` and
-- `messages` are rebuilt, keeping every row, id and rowid (the full-text
-- index refers to messages by rowid).

CREATE TABLE conversations_new (
    id BLOB PRIMARY KEY,
    kind TEXT NOT NULL DEFAULT 'direct' CHECK (kind IN ('direct', 'group')),
    user_a BLOB REFERENCES users(id) ON DELETE CASCADE,
    user_b BLOB REFERENCES users(id) ON DELETE CASCADE,
    title TEXT,
    avatar_url TEXT,
    created_by BLOB REFERENCES users(id) ON DELETE SET NULL,
    member_count INTEGER NOT NULL DEFAULT 2,
    last_message_id BLOB,
    last_message_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CHECK (user_a < user_b),
    CHECK ((kind = 'direct' AND user_a IS NOT NULL AND user_b IS NOT NULL AND last_message_id IS NOT NULL)
        OR (kind = 'group' AND user_a IS NULL AND user_b IS NULL AND title IS NOT NULL))
);
INSERT INTO conversations_new (id, kind, user_a, user_b, last_message_id, last_message_at, created_at, updated_at)
    SELECT id, 'direct', user_a, user_b, last_message_id, last_message_at, created_at, created_at FROM conversations;
DROP TABLE conversations;
ALTER TABLE conversations_new RENAME TO conversations;
CREATE INDEX conversations_user_a ON conversations (user_a, last_message_at DESC);
CREATE INDEX conversations_user_b ON conversations (user_b, last_message_at DESC);

CREATE TABLE messages_new (
    id BLOB PRIMARY KEY,
    sender_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    receiver_id BLOB REFERENCES users(id) ON DELETE CASCADE,
    content TEXT NOT NULL,
    message_type TEXT NOT NULL DEFAULT 'text' CHECK (message_type IN ('text', 'image', 'file', 'system')),
    is_read INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    read_at TEXT,
    client_id TEXT,
    conversation_id BLOB NOT NULL,
    sender_seq INTEGER,
    receiver_seq INTEGER,
    CHECK (sender_id <> receiver_id),
    CHECK ((receiver_id IS NOT NULL AND sender_seq IS NOT NULL AND receiver_seq IS NOT NULL)
        OR (receiver_id IS NULL AND sender_seq IS NULL AND receiver_seq IS NULL))
);
INSERT INTO messages_new (rowid, id, sender_id, receiver_id, content, message_type, is_read, created_at,
        updated_at, read_at, client_id, conversation_id, sender_seq, receiver_seq)
    SELECT rowid, id, sender_id, receiver_id, content, message_type, is_read, created_at,
        updated_at, read_at, client_id, conversation_id, sender_seq, receiver_seq FROM messages;
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE UNIQUE INDEX messages_sender_client_id ON messages (sender_id, client_id) WHERE client_id IS NOT NULL;
CREATE UNIQUE INDEX messages_sender_seq ON messages (sender_id, sender_seq);
CREATE UNIQUE INDEX messages_receiver_seq ON messages (receiver_id, receiver_seq);
CREATE INDEX messages_conversation ON messages (conversation_id, id);
CREATE INDEX messages_unread ON messages (receiver_id, conversation_id) WHERE NOT is_read;
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
END;

CREATE TABLE conversation_members (
    conversation_id BLOB NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    user_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at TEXT NOT NULL,
    left_at TEXT,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX conversation_members_user ON conversation_members (user_id) WHERE left_at IS NULL;

CREATE TABLE inbox (
    user_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    message_id BLOB NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    conversation_id BLOB NOT NULL,
    read_at TEXT,
    PRIMARY KEY (user_id, seq)
);
CREATE UNIQUE INDEX inbox_message_user ON inbox (message_id, user_id);
CREATE INDEX inbox_conversation ON inbox (user_id, conversation_id, message_id);
CREATE INDEX inbox_unread ON inbox (user_id, conversation_id) WHERE read_at IS NULL;
