-- A user is their token's `sub`. The identity provider owns email
-- uniqueness: an address one account here still carries (reused by a new
-- account, or changed elsewhere and refreshed here only at the next sign-in)
-- must never lock the other out, so the email is a label, not a key.
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_email_key;
