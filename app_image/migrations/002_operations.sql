-- phase: expand
-- Operational tables: site settings (kill switch, cache TTL), API keys, audit log.
CREATE TABLE site_settings (
    id          bigserial PRIMARY KEY,
    key         text NOT NULL CHECK (key ~ '^[a-z][a-z0-9_]{0,99}$'),
    value       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Guide, Database Optimization: idx_site_settings_key (unique: one value per key).
CREATE UNIQUE INDEX idx_site_settings_key ON site_settings (key);

-- Keys are stored as HMAC-SHA256(SECRET_KEY_BASE, key): a database dump reveals no key.
CREATE TABLE api_keys (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL,
    key_hash      text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    key_prefix    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX idx_api_keys_name ON api_keys (name);

CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    event        text NOT NULL,
    actor        text,
    client_ip    inet,
    request_id   text,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb
);
-- Retention cleanup deletes by age.
CREATE INDEX idx_audit_log_occurred_at ON audit_log (occurred_at);
