-- Search per user. The full-text index over every message made a search
-- read the whole posting list of its word before keeping the caller's
-- messages, so a common word cost in proportion to everyone's messages that
-- contain it (seconds on 1M messages). These indexes key each message's
-- words by its participants (btree_gin lets a GIN index hold the uuid
-- columns beside the tsvector), and GIN intersects the two posting lists,
-- so a search costs about what the caller's own matches cost, whether the
-- word is common or rare. Each message is indexed once, in the index of
-- its kind: direct messages by sender and receiver, group messages by
-- group (a member's visibility then comes from their inbox rows).
--
-- They are built without GIN's pending list (fastupdate = off): with it,
-- an insert every few thousand messages has to merge the list into the
-- index while its batch holds its users' row locks, which stalled sends for
-- up to ~90 ms at 5,000 msgs/s (p99 37-118 ms against 19-25 ms without);
-- without it each insert updates the index directly, about 45 us per
-- message, and a search never scans an unmerged list.
--
-- btree_gin ships with PostgreSQL (contrib) and is a trusted extension: the
-- database owner may create it. Building the indexes reads every message
-- once (about 10 s per million on two cores) and blocks writes meanwhile;
-- on a large database they can be built beforehand with CREATE INDEX
-- CONCURRENTLY under these names, which this migration then keeps.

CREATE EXTENSION IF NOT EXISTS btree_gin;

DROP INDEX IF EXISTS messages_content_fts;
CREATE INDEX IF NOT EXISTS messages_search_direct ON messages
    USING GIN (sender_id, receiver_id, to_tsvector('simple', content))
    WITH (fastupdate = off)
    WHERE receiver_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_search_group ON messages
    USING GIN (conversation_id, to_tsvector('simple', content))
    WITH (fastupdate = off)
    WHERE receiver_id IS NULL;

-- Search walks every group a user was ever in, left ones included (what
-- reached them stays theirs); the older index held current members only.
DROP INDEX conversation_members_user;
CREATE INDEX conversation_members_user ON conversation_members (user_id);
