-- 0002: a version and a nested attachment name their attachment in separate columns; an upload taken off
-- a target is kept (unlinked) until the unlinked TTL, counted from when it was taken off.

-- The attachment a row is the next version of. parent_attachment_id now only ever means nesting.
ALTER TABLE attachments ADD COLUMN IF NOT EXISTS version_of uuid;
-- When the upload was last taken off a target (a link list that no longer names it); null otherwise.
ALTER TABLE attachments ADD COLUMN IF NOT EXISTS unlinked_at timestamptz;

-- Until now a version named the attachment it revises in parent_attachment_id; versions are the rows
-- with a version_root (nested ones have none).
UPDATE attachments SET version_of = parent_attachment_id, parent_attachment_id = NULL
    WHERE version_root IS NOT NULL AND parent_attachment_id IS NOT NULL;

-- The purge of uploads nobody (re)linked: by when they were made or taken off their target.
DROP INDEX IF EXISTS attachments_unlinked;
CREATE INDEX IF NOT EXISTS attachments_unlinked ON attachments ((coalesce(unlinked_at, created_at)))
    WHERE target_id IS NULL AND canceled_at IS NULL;
