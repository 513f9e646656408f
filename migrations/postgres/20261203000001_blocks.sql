-- A user can block another: the blocked user cannot message, type to, add
-- to a group, or see the presence or profile of the one who blocked them,
-- and gets the answers a user that does not exist gets.
CREATE TABLE blocks (
    blocker UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    blocked UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (blocker, blocked),
    CHECK (blocker <> blocked)
);
CREATE INDEX blocks_blocked ON blocks (blocked);
