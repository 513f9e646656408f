-- Finding people by the start of their name (GET /users/search); SQLite
-- compares text bytewise, so every name with a prefix lies between the
-- prefix and the prefix followed by the last code point.
CREATE INDEX users_username_prefix ON users (lower(username), id);
