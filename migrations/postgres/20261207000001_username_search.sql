-- Finding people by the start of their name (GET /users/search): one
-- range of this index, in the order pages are read. Byte order ("C") so
-- that every name with a prefix lies between the prefix and the prefix
-- followed by the last code point.
CREATE INDEX users_username_prefix ON users ((lower(username) COLLATE "C"), id);
