-- The agent's tables: tasks (which are also the work queue), their conversation (messages and
-- summaries), live events, files, and token/cost usage. Same shape as
-- migrations/postgres/0002_agent.sql. Times are unix milliseconds. JSON is kept as text.
-- Everything a task owns goes with it (ON DELETE CASCADE); Store::delete_agent_task also
-- deletes those rows itself, first, to collect the blob keys they name.

CREATE TABLE agent_tasks (
    id              TEXT PRIMARY KEY NOT NULL,
    description     TEXT NOT NULL,
    -- TaskStatus spelled as on the wire: PENDING, RUNNING, NEEDS_HELP, ...
    status          TEXT NOT NULL,
    -- Priority::rank(): 0 LOW .. 3 URGENT, so the queue can sort on it.
    priority        INTEGER NOT NULL,
    task_type       TEXT NOT NULL,
    scheduled_for   INTEGER,
    control         TEXT NOT NULL,
    model           TEXT NOT NULL,
    fallback_models TEXT NOT NULL,
    result          TEXT,
    error           TEXT,
    created_by      TEXT NOT NULL,
    parent_id       TEXT REFERENCES agent_tasks (id) ON DELETE SET NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    executed_at     INTEGER,
    completed_at    INTEGER,
    -- The queue: which worker holds the task and until when (both set exactly while RUNNING).
    lease_owner     TEXT,
    lease_until     INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0,
    desktop         TEXT,
    cost_usd        REAL NOT NULL DEFAULT 0,
    input_tokens    INTEGER NOT NULL DEFAULT 0,
    output_tokens   INTEGER NOT NULL DEFAULT 0
);
-- The claim query walks this in its ORDER BY and stops at the first claimable row; only
-- PENDING and RUNNING rows are in it, so finished tasks never slow the queue down.
CREATE INDEX agent_tasks_queue ON agent_tasks (priority DESC, COALESCE(scheduled_for, created_at), id)
    WHERE status IN ('PENDING', 'RUNNING');
CREATE INDEX agent_tasks_created ON agent_tasks (created_at, id);
CREATE INDEX agent_tasks_parent ON agent_tasks (parent_id);

CREATE TABLE agent_summaries (
    -- AUTOINCREMENT: ids are never reused, even after the newest rows are deleted.
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id      TEXT NOT NULL REFERENCES agent_tasks (id) ON DELETE CASCADE,
    content      TEXT NOT NULL,
    covers_up_to INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX agent_summaries_task ON agent_summaries (task_id, id);

CREATE TABLE agent_messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id    TEXT NOT NULL REFERENCES agent_tasks (id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content    TEXT NOT NULL,
    state      TEXT,
    summary_id INTEGER REFERENCES agent_summaries (id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX agent_messages_task ON agent_messages (task_id, id);
CREATE INDEX agent_messages_summary ON agent_messages (summary_id);

CREATE TABLE agent_task_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id    TEXT NOT NULL REFERENCES agent_tasks (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX agent_task_events_task ON agent_task_events (task_id, id);

CREATE TABLE agent_task_files (
    id         TEXT PRIMARY KEY NOT NULL,
    task_id    TEXT NOT NULL REFERENCES agent_tasks (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size       INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    blob_key   TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX agent_task_files_task ON agent_task_files (task_id, created_at);

CREATE TABLE agent_task_usage (
    id                          INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id                     TEXT NOT NULL REFERENCES agent_tasks (id) ON DELETE CASCADE,
    provider                    TEXT NOT NULL,
    model                       TEXT NOT NULL,
    input_tokens                INTEGER NOT NULL,
    output_tokens               INTEGER NOT NULL,
    cache_creation_input_tokens INTEGER NOT NULL,
    cache_read_input_tokens     INTEGER NOT NULL,
    cost_usd                    REAL NOT NULL,
    created_at                  INTEGER NOT NULL
);
CREATE INDEX agent_task_usage_task ON agent_task_usage (task_id);
