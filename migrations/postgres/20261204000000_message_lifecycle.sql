-- A message can be edited, deleted for everyone, reacted to and replied to.
--
-- Every change to a message is a row of `message_changes`, numbered for
-- each user who can read the message in `change_inbox`, from the same
-- per-user counter (`users.msg_seq`) as messages and under the same row
-- locks. A reader's messages and changes so form one gap-free sequence:
-- `sync` from a cursor, and live delivery's catch-up, read both in commit
-- order, and an offline device converges to the view of one that stayed
-- online.
--
-- A change holds no text: an edit's content is the message's (the latest),
-- so deleting the message removes its content from storage once.

ALTER TABLE messages
    ADD COLUMN edited_at TIMESTAMPTZ,
    ADD COLUMN deleted_at TIMESTAMPTZ,
    ADD COLUMN reply_to UUID REFERENCES messages(id) ON DELETE SET NULL;

CREATE TABLE message_changes (
    id UUID PRIMARY KEY,
    message_id UUID NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    actor_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('edit', 'delete', 'react', 'unreact')),
    emoji TEXT,
    client_id VARCHAR(64),
    created_at TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX message_changes_actor_client_id ON message_changes (actor_id, client_id)
    WHERE client_id IS NOT NULL;

CREATE TABLE change_inbox (
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    change_id UUID NOT NULL REFERENCES message_changes(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX change_inbox_change ON change_inbox (change_id);

-- One of each emoji per user per message.
CREATE TABLE reactions (
    message_id UUID NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    emoji TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id)
);

-- Files a message carries. A row is made when the upload is announced
-- (`message_id` null: only its owner may see it), and names its message
-- once sent; deleting the message deletes the rows, and the node then the
-- bytes in the file store.
CREATE TABLE attachments (
    id UUID PRIMARY KEY,
    owner_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    message_id UUID REFERENCES messages(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    width INT,
    height INT,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX attachments_message ON attachments (message_id) WHERE message_id IS NOT NULL;
