-- schema.sql as attachd shipped it at commit 4e2f0b1, before the live counters and the btree_gin index and
-- long before numbered migrations: tests/test_migrations.py upgrades a database made by it.
-- attachd schema. Idempotent: `attachd migrate` applies it on every start-up.

CREATE TABLE IF NOT EXISTS attachments (
    id                    uuid PRIMARY KEY,            -- UUIDv7, chosen by the ingress; also the job id
    seq                   bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- integer id for integer-id clients
    account_id            text NOT NULL,
    -- placement
    target_type           text,                        -- null while an upload waits to be linked
    target_id             text,
    field                 text,
    parent_type           text,                        -- where an unlinked upload is headed (EspoCRM parentType)
    parent_attachment_id  uuid,                        -- the attachment this one nests under or revises
    version               integer NOT NULL DEFAULT 1,
    version_root          uuid,                        -- the first version, for every later one
    is_latest             boolean NOT NULL DEFAULT true,
    ancestors             text[] NOT NULL DEFAULT '{}',  -- 'Ticket:42': the target and all its ancestors
    -- content
    attachment_type       text NOT NULL DEFAULT 'FILE_ATTACHMENT'
                          CHECK (attachment_type IN ('FILE_ATTACHMENT', 'FILE_LINK', 'FOLDER_LINK', 'URL')),
    name                  text NOT NULL CHECK (length(name) <= 255),
    filename              text CHECK (octet_length(filename) <= 255),
    content_type          text CHECK (length(content_type) <= 100),
    size                  bigint,
    sha256                bytea,
    storage_key           text,
    url                   text,
    width                 integer,
    height                integer,
    variants              jsonb,                        -- {"thumbnail": key, "small": key} or null
    -- workflow
    display_order         integer NOT NULL DEFAULT 0,
    available             boolean NOT NULL DEFAULT true,
    status                text CHECK (status IN ('approved', 'pending', 'required')),
    created_from          text NOT NULL DEFAULT 'api'
                          CHECK (created_from IN ('task_panel', 'rework', 'feedback', 'api')),
    publish               text NOT NULL DEFAULT 'all' CHECK (publish IN ('all', 'internal')),
    session_token         text,
    -- provenance
    created_by_type       text NOT NULL DEFAULT 'User'
                          CHECK (created_by_type IN ('User', 'Application', 'Contact', 'Resource')),
    created_by_id         text,
    impersonator_id       text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    canceled_at           timestamptz
);

-- List by target in the default order, live rows only: the hot read.
CREATE INDEX IF NOT EXISTS attachments_target_live
    ON attachments (account_id, target_type, target_id, display_order, created_at, id)
    WHERE canceled_at IS NULL AND is_latest;
-- Everything under an ancestor ("Ticket:42") is one GIN probe.
CREATE INDEX IF NOT EXISTS attachments_ancestors ON attachments USING gin (ancestors);
CREATE INDEX IF NOT EXISTS attachments_account_created ON attachments (account_id, created_at, id);
CREATE INDEX IF NOT EXISTS attachments_parent ON attachments (parent_attachment_id)
    WHERE parent_attachment_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS attachments_versions ON attachments (version_root) WHERE version_root IS NOT NULL;
CREATE INDEX IF NOT EXISTS attachments_session ON attachments (account_id, session_token)
    WHERE session_token IS NOT NULL;
CREATE INDEX IF NOT EXISTS attachments_unlinked ON attachments (created_at)
    WHERE target_id IS NULL AND canceled_at IS NULL;

-- The target hierarchy: a ticket note's parent is its ticket, and so on.
CREATE TABLE IF NOT EXISTS targets (
    account_id   text NOT NULL,
    target_type  text NOT NULL,
    target_id    text NOT NULL,
    parent_type  text,
    parent_id    text,
    ancestors    text[] NOT NULL DEFAULT '{}',   -- itself, then its parent chain, nearest first: 'Type:id'
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, target_type, target_id)
);
CREATE INDEX IF NOT EXISTS targets_ancestors ON targets USING gin (ancestors);

-- Events, written in the transaction of the change they describe; a relay publishes them.
CREATE TABLE IF NOT EXISTS outbox (
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id    text NOT NULL,
    event_type    text NOT NULL,
    attachment_id uuid,
    job_id        text,                          -- the job that made the change: re-runs add nothing
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
-- One event per change, however often the job that made it runs.
CREATE UNIQUE INDEX IF NOT EXISTS outbox_once_per_job ON outbox (job_id, event_type, attachment_id);

CREATE TABLE IF NOT EXISTS upload_sessions (
    account_id     text NOT NULL,
    session_token  text NOT NULL,
    opened_at      timestamptz NOT NULL DEFAULT now(),
    last_upload_at timestamptz NOT NULL DEFAULT now(),
    closed_at      timestamptz,
    PRIMARY KEY (account_id, session_token)
);
-- The idle-session closer's scan: open sessions, oldest upload first.
CREATE INDEX IF NOT EXISTS upload_sessions_open ON upload_sessions (last_upload_at) WHERE closed_at IS NULL;
