-- ochat schema (Postgres). The seed's users and messages tables, plus what
-- the design needs: per-user sequence numbers for gap-free sync, idempotency
-- keys, read times, a conversations table for the list view, and a full-text
-- index for search.

CREATE TYPE message_type AS ENUM ('text', 'image', 'file', 'system');

CREATE TABLE users (
    id UUID PRIMARY KEY,
    email VARCHAR NOT NULL UNIQUE,
    username VARCHAR,
    avatar_url VARCHAR,
    is_online BOOLEAN NOT NULL DEFAULT false,
    last_seen TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    -- Last sequence number handed to a message this user sent or received.
    msg_seq BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE messages (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    sender_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    receiver_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    content TEXT NOT NULL,
    message_type message_type NOT NULL DEFAULT 'text',
    is_read BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    read_at TIMESTAMPTZ,
    client_id VARCHAR(64),
    conversation_id UUID NOT NULL,
    sender_seq BIGINT NOT NULL,
    receiver_seq BIGINT NOT NULL,
    CHECK (sender_id <> receiver_id)
);

CREATE UNIQUE INDEX messages_sender_client_id ON messages (sender_id, client_id) WHERE client_id IS NOT NULL;
CREATE UNIQUE INDEX messages_sender_seq ON messages (sender_id, sender_seq);
CREATE UNIQUE INDEX messages_receiver_seq ON messages (receiver_id, receiver_seq);
CREATE INDEX messages_conversation ON messages (conversation_id, id);
CREATE INDEX messages_unread ON messages (receiver_id, conversation_id) WHERE NOT is_read;
CREATE INDEX messages_content_fts ON messages USING GIN (to_tsvector('simple', content));

CREATE TABLE conversations (
    id UUID PRIMARY KEY,
    user_a UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    user_b UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    last_message_id UUID NOT NULL,
    last_message_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CHECK (user_a < user_b)
);

CREATE INDEX conversations_user_a ON conversations (user_a, last_message_at DESC);
CREATE INDEX conversations_user_b ON conversations (user_b, last_message_at DESC);
