-- Messages partitioned by week. Message ids are UUIDv7, which lead with
-- their millisecond timestamp, so a range of ids is a range of time: the
-- partition key is the primary key, every foreign key to messages(id) stays,
-- and retention drops a whole week at a time (see src/store/postgres/partitions.rs,
-- which creates the weeks ahead and drops the expired ones).
--
-- A partitioned table's unique indexes must contain the partition key, so:
-- * idempotency keys move to a table of their own, `message_keys`, written
--   by the same statement as the message (one key per sender and client_id,
--   for as long as the message is kept);
-- * the per-user number indexes stop being unique: the users' row locks
--   already hand each number out once.

CREATE TABLE message_keys (
    sender_id UUID NOT NULL,
    client_id VARCHAR(64) NOT NULL,
    message_id UUID NOT NULL,
    PRIMARY KEY (sender_id, client_id)
);
INSERT INTO message_keys (sender_id, client_id, message_id)
    SELECT sender_id, client_id, id FROM messages WHERE client_id IS NOT NULL;

-- The table as it is becomes the partition holding every message so far.
ALTER TABLE messages RENAME TO messages_before_weeks;
ALTER INDEX messages_pkey RENAME TO messages_before_weeks_pkey;
ALTER INDEX messages_conversation RENAME TO messages_before_weeks_conversation;
ALTER INDEX messages_unread RENAME TO messages_before_weeks_unread;
ALTER INDEX messages_search_direct RENAME TO messages_before_weeks_search_direct;
ALTER INDEX messages_search_group RENAME TO messages_before_weeks_search_group;
DROP INDEX messages_sender_client_id;
DROP INDEX messages_sender_seq;
DROP INDEX messages_receiver_seq;
-- Its foreign keys come back from the partitioned table when it is attached.
ALTER TABLE messages_before_weeks
    DROP CONSTRAINT messages_sender_id_fkey,
    DROP CONSTRAINT messages_receiver_id_fkey,
    DROP CONSTRAINT messages_reply_to_fkey;
ALTER TABLE inbox DROP CONSTRAINT inbox_message_id_fkey;
ALTER TABLE message_changes DROP CONSTRAINT message_changes_message_id_fkey;
ALTER TABLE reactions DROP CONSTRAINT reactions_message_id_fkey;
ALTER TABLE attachments DROP CONSTRAINT attachments_message_id_fkey;

CREATE TABLE messages (LIKE messages_before_weeks INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (id);
-- Ids come from the nodes (UUIDv7); the seed schema's random default would
-- scatter a message over the weeks.
ALTER TABLE messages ALTER COLUMN id DROP DEFAULT;
ALTER TABLE messages_before_weeks ALTER COLUMN id DROP DEFAULT;
ALTER TABLE messages
    ADD PRIMARY KEY (id),
    ADD FOREIGN KEY (sender_id) REFERENCES users(id) ON DELETE CASCADE,
    ADD FOREIGN KEY (receiver_id) REFERENCES users(id) ON DELETE CASCADE,
    ADD FOREIGN KEY (reply_to) REFERENCES messages(id) ON DELETE SET NULL;
CREATE INDEX messages_sender_seq ON messages (sender_id, sender_seq);
CREATE INDEX messages_receiver_seq ON messages (receiver_id, receiver_seq);
CREATE INDEX messages_conversation ON messages (conversation_id, id);
CREATE INDEX messages_unread ON messages (receiver_id, conversation_id) WHERE NOT is_read;
CREATE INDEX messages_search_direct ON messages
    USING GIN (sender_id, receiver_id, to_tsvector('simple', content))
    WITH (fastupdate = off)
    WHERE receiver_id IS NOT NULL;
CREATE INDEX messages_search_group ON messages
    USING GIN (conversation_id, to_tsvector('simple', content))
    WITH (fastupdate = off)
    WHERE receiver_id IS NULL;
-- Retention clears the replies quoting an expiring week, and the changes
-- made to it, by range.
CREATE INDEX messages_reply_to ON messages (reply_to) WHERE reply_to IS NOT NULL;
CREATE INDEX message_changes_message ON message_changes (message_id);

-- The old table covers everything up to the end of the week of its latest
-- message; an empty one is dropped, and the weeks are created by the nodes.
-- A table holding ids that are not UUIDv7 (written with the seed schema's
-- random default) cannot be cut into weeks: its random ids fall in any
-- week, past or future. It then stays the one partition for every id, as
-- unpartitioned as before, and retention cannot drop weeks of it (the
-- nodes log this whenever retention runs).
DO $$
DECLARE
    latest uuid;
    ms bigint;
    hex text;
BEGIN
    IF EXISTS (SELECT 1 FROM messages_before_weeks WHERE substr(id::text, 15, 1) <> '7') THEN
        RAISE NOTICE 'messages holds ids that are not UUIDv7: one partition for every id';
        ALTER TABLE messages ATTACH PARTITION messages_before_weeks
            FOR VALUES FROM (MINVALUE) TO (MAXVALUE);
        RETURN;
    END IF;
    SELECT id INTO latest FROM messages_before_weeks ORDER BY id DESC LIMIT 1;
    IF latest IS NULL THEN
        DROP TABLE messages_before_weeks;
        RETURN;
    END IF;
    ms := ('x' || substr(replace(latest::text, '-', ''), 1, 12))::bit(48)::bigint;
    ms := (extract(epoch FROM date_trunc('week', to_timestamp(ms / 1000.0) AT TIME ZONE 'UTC')
            + interval '7 days') * 1000)::bigint;
    hex := lpad(to_hex(ms), 12, '0');
    EXECUTE format(
        'ALTER TABLE messages ATTACH PARTITION messages_before_weeks FOR VALUES FROM (MINVALUE) TO (%L)',
        substr(hex, 1, 8) || '-' || substr(hex, 9, 4) || '-0000-0000-000000000000');
END
$$;

ALTER TABLE inbox ADD CONSTRAINT inbox_message_id_fkey
    FOREIGN KEY (message_id) REFERENCES messages(id) ON DELETE CASCADE;
ALTER TABLE message_changes ADD CONSTRAINT message_changes_message_id_fkey
    FOREIGN KEY (message_id) REFERENCES messages(id) ON DELETE CASCADE;
ALTER TABLE reactions ADD CONSTRAINT reactions_message_id_fkey
    FOREIGN KEY (message_id) REFERENCES messages(id) ON DELETE CASCADE;
ALTER TABLE attachments ADD CONSTRAINT attachments_message_id_fkey
    FOREIGN KEY (message_id) REFERENCES messages(id) ON DELETE CASCADE;
