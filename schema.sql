-- attachd schema: the whole of it, to read. `attachd migrate` does not run this file: it applies the
-- numbered migrations in services/core/migrations/ (and records them in attachd_migrations); a test
-- checks that they build exactly this schema. A change is a new migration plus the same change here.

CREATE TABLE IF NOT EXISTS attachments (
    id                    uuid PRIMARY KEY,            -- UUIDv7, chosen by the ingress; also the job id
    seq                   bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- integer id for integer-id clients
    account_id            text NOT NULL,
    -- placement
    target_type           text,                        -- null while an upload waits to be linked
    target_id             text,
    field                 text,
    parent_type           text,                        -- where an unlinked upload is headed (EspoCRM parentType)
    parent_attachment_id  uuid,                        -- the attachment this one nests under
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
    canceled_at           timestamptz,
    -- added by 0002, so last in the table
    version_of            uuid,                        -- the attachment this one is the next version of
    unlinked_at           timestamptz                  -- when it was last taken off a target (a link list)
);

-- List by target in the default order, live rows only: the hot read.
CREATE INDEX IF NOT EXISTS attachments_target_live
    ON attachments (account_id, target_type, target_id, display_order, created_at, id)
    WHERE canceled_at IS NULL AND is_latest;
-- Everything under an ancestor ("Ticket:42") of an account is one GIN probe on both keys (btree_gin):
-- exact per account even where two accounts use the same target ids, and no plan that ANDs a
-- separate account_id index into the probe (the planner takes account and ancestor as independent
-- and so prefers that for any big account: 15-25 ms instead of 1 ms at 2M rows; bench/RESULTS.md).
-- No fastupdate: every probe would also scan the pending list of recent inserts (29 pages made a
-- 0.08 ms probe 1.2 ms); an insert adds a handful of entries, cheap to put in place at once.
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE INDEX IF NOT EXISTS attachments_account_ancestors ON attachments USING gin (account_id, ancestors)
    WITH (fastupdate = off);
DROP INDEX IF EXISTS attachments_ancestors;
CREATE INDEX IF NOT EXISTS attachments_account_created ON attachments (account_id, created_at, id);
CREATE INDEX IF NOT EXISTS attachments_parent ON attachments (parent_attachment_id)
    WHERE parent_attachment_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS attachments_versions ON attachments (version_root) WHERE version_root IS NOT NULL;
CREATE INDEX IF NOT EXISTS attachments_session ON attachments (account_id, session_token)
    WHERE session_token IS NOT NULL;
-- The purge of uploads nobody (re)linked within the TTL: made, or taken off their target, that long ago.
CREATE INDEX IF NOT EXISTS attachments_unlinked ON attachments ((coalesce(unlinked_at, created_at)))
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

-- Live counts, so GET /v1/attachments/count answers "how many on this target" and "how many in this
-- account" from one row instead of counting index entries (68 ms for a 150k-row account).
-- "Live" is what a list shows by default: latest version, not canceled. A deferred constraint trigger
-- keeps them exact in the transaction of every insert, update and delete of `attachments`, whoever
-- writes it: it runs at commit, after the transaction's last statement, and takes the account's
-- count lock first, so one account's counters are only ever changed by one committing transaction at
-- a time and no transaction waits for a counter row while holding anything but that lock.
CREATE TABLE IF NOT EXISTS attachment_counts (
    account_id      text NOT NULL,
    target_type     text,                 -- both null: uploads not linked yet
    target_id       text,
    live            bigint NOT NULL DEFAULT 0,
    live_available  bigint NOT NULL DEFAULT 0,   -- live and available
    CONSTRAINT attachment_counts_target UNIQUE NULLS NOT DISTINCT (account_id, target_type, target_id)
);
CREATE TABLE IF NOT EXISTS account_attachment_counts (
    account_id      text PRIMARY KEY,
    live            bigint NOT NULL DEFAULT 0,
    live_available  bigint NOT NULL DEFAULT 0
);

CREATE OR REPLACE FUNCTION attachd_count_row() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_live int := 0;
    old_available int := 0;
    new_live int := 0;
    new_available int := 0;
    same_target boolean := coalesce(TG_OP = 'UPDATE' AND OLD.account_id = NEW.account_id
        AND OLD.target_type IS NOT DISTINCT FROM NEW.target_type AND OLD.target_id IS NOT DISTINCT FROM NEW.target_id,
        false);
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.canceled_at IS NULL AND OLD.is_latest THEN
        old_live := 1;
        old_available := OLD.available::int;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.canceled_at IS NULL AND NEW.is_latest THEN
        new_live := 1;
        new_available := NEW.available::int;
    END IF;
    IF same_target AND old_live = new_live AND old_available = new_available THEN
        RETURN NULL;
    END IF;
    IF old_live = 1 AND NOT same_target THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('attachd-counts:' || OLD.account_id, 0));
        INSERT INTO attachment_counts AS c (account_id, target_type, target_id, live, live_available)
        VALUES (OLD.account_id, OLD.target_type, OLD.target_id, -1, -old_available)
        ON CONFLICT ON CONSTRAINT attachment_counts_target
        DO UPDATE SET live = c.live + excluded.live, live_available = c.live_available + excluded.live_available;
        INSERT INTO account_attachment_counts AS c (account_id, live, live_available)
        VALUES (OLD.account_id, -1, -old_available)
        ON CONFLICT (account_id)
        DO UPDATE SET live = c.live + excluded.live, live_available = c.live_available + excluded.live_available;
        old_live := 0;
        old_available := 0;
    END IF;
    IF new_live - old_live <> 0 OR new_available - old_available <> 0 THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('attachd-counts:' || NEW.account_id, 0));
        INSERT INTO attachment_counts AS c (account_id, target_type, target_id, live, live_available)
        VALUES (NEW.account_id, NEW.target_type, NEW.target_id, new_live - old_live, new_available - old_available)
        ON CONFLICT ON CONSTRAINT attachment_counts_target
        DO UPDATE SET live = c.live + excluded.live, live_available = c.live_available + excluded.live_available;
        INSERT INTO account_attachment_counts AS c (account_id, live, live_available)
        VALUES (NEW.account_id, new_live - old_live, new_available - old_available)
        ON CONFLICT (account_id)
        DO UPDATE SET live = c.live + excluded.live, live_available = c.live_available + excluded.live_available;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION attachd_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE attachment_counts, account_attachment_counts;
    RETURN NULL;
END $$;

DO $$
DECLARE
    fresh boolean := NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'attachments_count_insert_delete'
                                 AND tgrelid = 'attachments'::regclass);
BEGIN
    IF NOT fresh THEN
        RETURN;
    END IF;
    -- Constraint triggers have no CREATE OR REPLACE; these run once, with the backfill below.
    CREATE CONSTRAINT TRIGGER attachments_count_insert_delete AFTER INSERT OR DELETE ON attachments
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION attachd_count_row();
    -- Only updates that can move a row in or out of a count are queued.
    CREATE CONSTRAINT TRIGGER attachments_count_update
        AFTER UPDATE OF account_id, target_type, target_id, canceled_at, is_latest, available ON attachments
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
        WHEN ((OLD.canceled_at IS NULL) IS DISTINCT FROM (NEW.canceled_at IS NULL)
              OR OLD.is_latest IS DISTINCT FROM NEW.is_latest OR OLD.available IS DISTINCT FROM NEW.available
              OR OLD.target_type IS DISTINCT FROM NEW.target_type OR OLD.target_id IS DISTINCT FROM NEW.target_id
              OR OLD.account_id IS DISTINCT FROM NEW.account_id)
        EXECUTE FUNCTION attachd_count_row();
    CREATE TRIGGER attachments_count_truncate AFTER TRUNCATE ON attachments
        FOR EACH STATEMENT EXECUTE FUNCTION attachd_count_truncate();
    -- Rows written before the triggers existed. Creating them locked out writers (SHARE ROW EXCLUSIVE)
    -- until this migration commits, so nothing is counted twice or missed.
    TRUNCATE attachment_counts, account_attachment_counts;
    INSERT INTO attachment_counts (account_id, target_type, target_id, live, live_available)
        SELECT account_id, target_type, target_id, count(*), count(*) FILTER (WHERE available)
        FROM attachments WHERE canceled_at IS NULL AND is_latest GROUP BY 1, 2, 3;
    INSERT INTO account_attachment_counts (account_id, live, live_available)
        SELECT account_id, sum(live), sum(live_available) FROM attachment_counts GROUP BY 1;
END $$;

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

-- API keys: only each key's SHA-256 is kept (services/core/apikeys.py says why that hash is enough). Every
-- request with a key reads its row by that hash, so a revoke or an expiry holds at once on every replica.
CREATE TABLE IF NOT EXISTS api_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_hash    bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    shown       text NOT NULL,                 -- the key's first characters, to tell it apart in a list
    account_id  text NOT NULL,
    name        text,
    actor_type  text NOT NULL CHECK (actor_type IN ('User', 'Application', 'Contact', 'Resource')),
    actor_id    text NOT NULL,
    scopes      text[] NOT NULL,
    profile     text,                          -- the compat profile it is limited to; null: native /v1 and every profile
    bindings    jsonb NOT NULL DEFAULT '{}',   -- path values the profile holds it to (Toggl's org and workspace)
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_account ON api_keys (account_id, id);
