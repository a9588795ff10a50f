-- Gateway tables: replay-protection nonces, planned tasks, resumable events, artifact metadata.
-- Times are unix seconds except events.ts_ms (milliseconds). No foreign keys between these
-- tables on purpose: events and artifacts will also belong to agent tasks, which live in
-- tables of their own (added by later migrations).

CREATE TABLE nonces (
    key_id TEXT NOT NULL,
    nonce  TEXT NOT NULL,
    ts     INTEGER NOT NULL,
    PRIMARY KEY (key_id, nonce)
) WITHOUT ROWID;
CREATE INDEX nonces_ts ON nonces (ts);

CREATE TABLE gateway_tasks (
    id            TEXT PRIMARY KEY NOT NULL,
    key_id        TEXT NOT NULL,
    intent        TEXT NOT NULL,
    args_json     TEXT NOT NULL,
    plan_json     TEXT NOT NULL,
    plan_digest   TEXT NOT NULL,
    risk          TEXT NOT NULL,
    state         TEXT NOT NULL,
    token_hash    TEXT NOT NULL,
    expires_at    INTEGER NOT NULL,
    approved_at   INTEGER,
    approved_by   TEXT,
    token_used_at INTEGER,
    result_json   TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX gateway_tasks_key_created ON gateway_tasks (key_id, created_at);

-- id is given by the caller (it is the SSE event id), so it is a plain rowid alias.
CREATE TABLE events (
    id        INTEGER PRIMARY KEY NOT NULL,
    task_id   TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    kind      TEXT NOT NULL,
    data_json TEXT NOT NULL,
    ts_ms     INTEGER NOT NULL
);
CREATE INDEX events_task_id ON events (task_id, id);

CREATE TABLE artifacts (
    id         TEXT PRIMARY KEY NOT NULL,
    task_id    TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    media_type TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    path       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX artifacts_task ON artifacts (task_id);
