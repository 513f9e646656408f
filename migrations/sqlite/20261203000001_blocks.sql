-- See the Postgres migration of the same name.
CREATE TABLE blocks (
    blocker BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    blocked BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    PRIMARY KEY (blocker, blocked),
    CHECK (blocker <> blocked)
);
CREATE INDEX blocks_blocked ON blocks (blocked);
