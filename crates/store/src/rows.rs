//! The rows the store keeps, and how they are read back from either backend.

use sqlx::Row;
use sqlx::any::AnyRow;

/// One used nonce of one signing key: replay protection that survives a restart.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NonceRow {
    /// The signing key that used the nonce.
    pub key_id: String,
    /// The nonce as sent in `X-BYTEBOT-NONCE`.
    pub nonce: String,
    /// The request's timestamp (unix seconds); rows older than the window are pruned.
    pub ts: i64,
}

/// One planned gateway task: the exact plan, its confirm token (hashed) and what became of it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskRow {
    /// Task id, unique.
    pub id: String,
    /// The key that planned it (the token is bound to it).
    pub key_id: String,
    /// The intent name, e.g. `screenshot`.
    pub intent: String,
    /// The intent's arguments as sent (JSON text).
    pub args_json: String,
    /// The plan as shown to the person (JSON text).
    pub plan_json: String,
    /// Digest of the plan the token is bound to.
    pub plan_digest: String,
    /// Estimated risk: `low`, `medium` or `high`.
    pub risk: String,
    /// `planned`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// Hash of the confirm token (never the token itself).
    pub token_hash: String,
    /// When the confirm token expires (unix seconds).
    pub expires_at: i64,
    /// When a person approved it through `/approve` (unix seconds).
    pub approved_at: Option<i64>,
    /// Who approved it.
    pub approved_by: Option<String>,
    /// When the confirm token was used (it is single-use).
    pub token_used_at: Option<i64>,
    /// The execution result (JSON text) once there is one.
    pub result_json: Option<String>,
    /// Creation time (unix seconds).
    pub created_at: i64,
    /// Time of the last change (unix seconds).
    pub updated_at: i64,
}

/// One event of a task's stream; `id` is the SSE event id, so streams resume after it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EventRow {
    /// Event id, given by the caller, increasing.
    pub id: i64,
    /// The task the event belongs to.
    pub task_id: String,
    /// The key allowed to see it.
    pub key_id: String,
    /// Kind, e.g. `plan.created` or `task.finished`.
    pub kind: String,
    /// The event's data (JSON text).
    pub data_json: String,
    /// When it happened (unix milliseconds).
    pub ts_ms: i64,
}

/// Metadata of one artifact; its bytes live in a file the gateway wrote.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ArtifactRow {
    /// Artifact id, unique.
    pub id: String,
    /// The task that produced it.
    pub task_id: String,
    /// The key allowed to fetch it.
    pub key_id: String,
    /// Kind, e.g. `screenshot` or `file`.
    pub kind: String,
    /// Content type served with the bytes.
    pub media_type: String,
    /// Size in bytes.
    pub bytes: i64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// Where the bytes are on disk.
    pub path: String,
    /// Creation time (unix seconds).
    pub created_at: i64,
}

/// Columns of `gateway_tasks` in the order [`task_from_row`] and the inserts use; a macro so
/// `concat!` can build `&'static str` queries from it.
macro_rules! task_columns {
    () => {
        "id, key_id, intent, args_json, plan_json, plan_digest, risk, state, token_hash, \
         expires_at, approved_at, approved_by, token_used_at, result_json, created_at, updated_at"
    };
}
pub(crate) use task_columns;

/// Columns of `events` in the order [`event_from_row`] and the inserts use.
macro_rules! event_columns {
    () => {
        "id, task_id, key_id, kind, data_json, ts_ms"
    };
}
pub(crate) use event_columns;

/// Columns of `artifacts` in the order [`artifact_from_row`] and the insert use.
macro_rules! artifact_columns {
    () => {
        "id, task_id, key_id, kind, media_type, bytes, sha256, path, created_at"
    };
}
pub(crate) use artifact_columns;

pub(crate) fn nonce_from_row(row: &AnyRow) -> Result<NonceRow, sqlx::Error> {
    Ok(NonceRow {
        key_id: row.try_get(0)?,
        nonce: row.try_get(1)?,
        ts: row.try_get(2)?,
    })
}

pub(crate) fn task_from_row(row: &AnyRow) -> Result<TaskRow, sqlx::Error> {
    Ok(TaskRow {
        id: row.try_get(0)?,
        key_id: row.try_get(1)?,
        intent: row.try_get(2)?,
        args_json: row.try_get(3)?,
        plan_json: row.try_get(4)?,
        plan_digest: row.try_get(5)?,
        risk: row.try_get(6)?,
        state: row.try_get(7)?,
        token_hash: row.try_get(8)?,
        expires_at: row.try_get(9)?,
        approved_at: row.try_get(10)?,
        approved_by: row.try_get(11)?,
        token_used_at: row.try_get(12)?,
        result_json: row.try_get(13)?,
        created_at: row.try_get(14)?,
        updated_at: row.try_get(15)?,
    })
}

pub(crate) fn event_from_row(row: &AnyRow) -> Result<EventRow, sqlx::Error> {
    Ok(EventRow {
        id: row.try_get(0)?,
        task_id: row.try_get(1)?,
        key_id: row.try_get(2)?,
        kind: row.try_get(3)?,
        data_json: row.try_get(4)?,
        ts_ms: row.try_get(5)?,
    })
}

pub(crate) fn artifact_from_row(row: &AnyRow) -> Result<ArtifactRow, sqlx::Error> {
    Ok(ArtifactRow {
        id: row.try_get(0)?,
        task_id: row.try_get(1)?,
        key_id: row.try_get(2)?,
        kind: row.try_get(3)?,
        media_type: row.try_get(4)?,
        bytes: row.try_get(5)?,
        sha256: row.try_get(6)?,
        path: row.try_get(7)?,
        created_at: row.try_get(8)?,
    })
}
