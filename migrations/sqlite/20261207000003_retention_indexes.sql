-- Expiring a week deletes its messages, and each deleted message clears
-- the replies quoting it and deletes its changes: indexes make those
-- lookups instead of a scan of both tables per message.
CREATE INDEX messages_reply_to ON messages (reply_to) WHERE reply_to IS NOT NULL;
CREATE INDEX message_changes_message ON message_changes (message_id);
