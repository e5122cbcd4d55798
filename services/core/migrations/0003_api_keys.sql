-- 0003: API keys (attachd keys create / list / revoke).

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
