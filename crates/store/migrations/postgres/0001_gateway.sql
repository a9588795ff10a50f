-- Gateway tables: replay-protection nonces, planned tasks, resumable events, artifact metadata.
-- Same shape as migrations/sqlite/0001_gateway.sql; integers are BIGINT so they decode as i64.
-- No foreign keys between these tables on purpose: events and artifacts will also belong to
-- agent tasks, which live in tables of their own (added by later migrations).

CREATE TABLE nonces (
    key_id TEXT NOT NULL,
    nonce  TEXT NOT NULL,
    ts     BIGINT NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX nonces_ts ON nonces (ts);

CREATE TABLE gateway_tasks (
    id            TEXT PRIMARY KEY,
    key_id        TEXT NOT NULL,
    intent        TEXT NOT NULL,
    args_json     TEXT NOT NULL,
    plan_json     TEXT NOT NULL,
    plan_digest   TEXT NOT NULL,
    risk          TEXT NOT NULL,
    state         TEXT NOT NULL,
    token_hash    TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,
    approved_at   BIGINT,
    approved_by   TEXT,
    token_used_at BIGINT,
    result_json   TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX gateway_tasks_key_created ON gateway_tasks (key_id, created_at);

CREATE TABLE events (
    id        BIGINT PRIMARY KEY,
    task_id   TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    kind      TEXT NOT NULL,
    data_json TEXT NOT NULL,
    ts_ms     BIGINT NOT NULL
);
CREATE INDEX events_task_id ON events (task_id, id);

CREATE TABLE artifacts (
    id         TEXT PRIMARY KEY,
    task_id    TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    media_type TEXT NOT NULL,
    bytes      BIGINT NOT NULL,
    sha256     TEXT NOT NULL,
    path       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX artifacts_task ON artifacts (task_id);
