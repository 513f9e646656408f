-- A group message writes one inbox row per member, and each row's two
-- foreign-key checks ran a lookup of its own: against the partitioned
-- messages table (pruned row by row) they made a 256-member group's
-- message cost PostgreSQL 17-18 ms of CPU instead of 8 (docs/benchmarks.md).
-- The rows' integrity is kept by how they are written and removed: the
-- statement that inserts a group message inserts its inbox rows, in the
-- same transaction, under the group's row lock and its members' row
-- locks; messages are never deleted one by one (a delete for everyone
-- keeps the row), and retention deletes a week's inbox rows before it
-- drops the week. Users are never deleted by ochat.
ALTER TABLE inbox
    DROP CONSTRAINT inbox_message_id_fkey,
    DROP CONSTRAINT inbox_user_id_fkey;
