-- Group conversations. A conversation is `direct` (the seed's 1:1, keyed by
-- the pair of users, rows created by the first message) or `group` (a title,
-- members with roles). Existing 1:1 rows and message ids stay as they are.
--
-- A group message is stored once in `messages` (no receiver) and numbered for
-- each member, the sender included, in `inbox`: one row per member, carrying
-- that member's sequence number and read state. So a member's history, unread
-- count, read state and `sync` all come from their own rows, and a removed
-- member keeps exactly what reached them before the removal.

ALTER TABLE conversations
    ADD COLUMN kind TEXT NOT NULL DEFAULT 'direct' CHECK (kind IN ('direct', 'group')),
    ADD COLUMN title VARCHAR,
    ADD COLUMN avatar_url VARCHAR,
    ADD COLUMN created_by UUID REFERENCES users(id) ON DELETE SET NULL,
    ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    ADD COLUMN member_count INT NOT NULL DEFAULT 2,
    ALTER COLUMN user_a DROP NOT NULL,
    ALTER COLUMN user_b DROP NOT NULL,
    ALTER COLUMN last_message_id DROP NOT NULL,
    ALTER COLUMN last_message_at DROP NOT NULL,
    ADD CONSTRAINT conversations_shape CHECK (
        (kind = 'direct' AND user_a IS NOT NULL AND user_b IS NOT NULL AND last_message_id IS NOT NULL)
        OR (kind = 'group' AND user_a IS NULL AND user_b IS NULL AND title IS NOT NULL));

CREATE TABLE conversation_members (
    conversation_id UUID NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at TIMESTAMPTZ NOT NULL,
    -- Set when the member leaves or is removed; cleared if they are added back.
    left_at TIMESTAMPTZ,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX conversation_members_user ON conversation_members (user_id) WHERE left_at IS NULL;

ALTER TABLE messages
    ALTER COLUMN receiver_id DROP NOT NULL,
    ALTER COLUMN sender_seq DROP NOT NULL,
    ALTER COLUMN receiver_seq DROP NOT NULL,
    ADD CONSTRAINT messages_shape CHECK (
        (receiver_id IS NOT NULL AND sender_seq IS NOT NULL AND receiver_seq IS NOT NULL)
        OR (receiver_id IS NULL AND sender_seq IS NULL AND receiver_seq IS NULL));

CREATE TABLE inbox (
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    message_id UUID NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    conversation_id UUID NOT NULL,
    read_at TIMESTAMPTZ,
    PRIMARY KEY (user_id, seq)
);
CREATE UNIQUE INDEX inbox_message_user ON inbox (message_id, user_id);
CREATE INDEX inbox_conversation ON inbox (user_id, conversation_id, message_id);
CREATE INDEX inbox_unread ON inbox (user_id, conversation_id) WHERE read_at IS NULL;
