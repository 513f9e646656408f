-- Edits, deletes for everyone, reactions and replies; see the Postgres
-- migration of the same name for the model.

ALTER TABLE messages ADD COLUMN edited_at TEXT;
ALTER TABLE messages ADD COLUMN deleted_at TEXT;
ALTER TABLE messages ADD COLUMN reply_to BLOB REFERENCES messages(id) ON DELETE SET NULL;

-- Search follows an edit (and a delete, which empties the content).
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
    INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
END;

CREATE TABLE message_changes (
    id BLOB PRIMARY KEY,
    message_id BLOB NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    actor_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('edit', 'delete', 'react', 'unreact')),
    emoji TEXT,
    client_id TEXT,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX message_changes_actor_client_id ON message_changes (actor_id, client_id)
    WHERE client_id IS NOT NULL;

CREATE TABLE change_inbox (
    user_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    change_id BLOB NOT NULL REFERENCES message_changes(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX change_inbox_change ON change_inbox (change_id);

CREATE TABLE reactions (
    message_id BLOB NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    user_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    emoji TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id)
);

CREATE TABLE attachments (
    id BLOB PRIMARY KEY,
    owner_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    message_id BLOB REFERENCES messages(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    width INTEGER,
    height INTEGER,
    created_at TEXT NOT NULL
);
CREATE INDEX attachments_message ON attachments (message_id) WHERE message_id IS NOT NULL;
