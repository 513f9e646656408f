-- Attachments announced and never sent are swept after a day: found by age.
CREATE INDEX attachments_unsent ON attachments (created_at) WHERE message_id IS NULL;
