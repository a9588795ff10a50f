//! Files of a task (uploads, and what the agent produced): metadata rows only; the bytes are
//! in the blob store under `blob_key`.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::agent_sql::{check_non_negative, is_foreign_key_violation, is_unique_violation, now_ms};
use crate::agent_tasks::{check_id, task_what};
use crate::blobs::check_key;
use crate::{AgentStoreError, Store, StoreError};

/// A file to record. Put its bytes with [`crate::Blobs::put`] first.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTaskFile {
    /// The id to use; `None` makes a uuid v7.
    pub id: Option<String>,
    /// The task it belongs to.
    pub task_id: String,
    /// Its name as shown (e.g. the uploaded file's name).
    pub name: String,
    /// Its content type, e.g. `application/pdf`.
    pub media_type: String,
    /// Size in bytes.
    pub size: i64,
    /// Hex SHA-256 of the bytes (64 characters).
    pub sha256: String,
    /// Where the bytes are in the blob store.
    pub blob_key: String,
}

/// One stored file's metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskFileRow {
    /// File id.
    pub id: String,
    /// The task it belongs to.
    pub task_id: String,
    /// Its name as shown.
    pub name: String,
    /// Its content type.
    pub media_type: String,
    /// Size in bytes.
    pub size: i64,
    /// Hex SHA-256 of the bytes, lower case.
    pub sha256: String,
    /// Where the bytes are in the blob store.
    pub blob_key: String,
    /// When it was recorded (unix ms).
    pub created_at: i64,
}

macro_rules! file_columns {
    () => {
        "id, task_id, name, media_type, size, sha256, blob_key, created_at"
    };
}

fn file_from_row(row: &AnyRow) -> Result<TaskFileRow, sqlx::Error> {
    Ok(TaskFileRow {
        id: row.try_get(0)?,
        task_id: row.try_get(1)?,
        name: row.try_get(2)?,
        media_type: row.try_get(3)?,
        size: row.try_get(4)?,
        sha256: row.try_get(5)?,
        blob_key: row.try_get(6)?,
        created_at: row.try_get(7)?,
    })
}

impl NewTaskFile {
    fn check(&self) -> Result<(), AgentStoreError> {
        if let Some(id) = &self.id {
            check_id("file id", id)?;
        }
        if self.name.is_empty() || self.name.chars().any(char::is_control) {
            return Err(AgentStoreError::invalid(
                format!(
                    "file name {:?} is empty or has control characters",
                    self.name
                ),
                "give the file a printable name",
            ));
        }
        if self.media_type.is_empty() {
            return Err(AgentStoreError::invalid(
                format!("file {:?} has no media type", self.name),
                "give its content type, e.g. application/octet-stream",
            ));
        }
        check_non_negative("the file's size", self.size)?;
        if self.sha256.len() != 64 || !self.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(AgentStoreError::invalid(
                format!(
                    "sha256 {:?} of file {:?} is not 64 hex digits",
                    self.sha256, self.name
                ),
                "give the hex SHA-256 of the file's bytes",
            ));
        }
        check_key(&self.blob_key).map_err(|e| {
            AgentStoreError::invalid(
                format!("file {:?}: {e}", self.name),
                "store a valid blob key",
            )
        })?;
        Ok(())
    }
}

impl Store {
    /// Records a file of a task and returns the row. The task must exist
    /// (`StoreError::NotFound`), the id must be new (`StoreError::Conflict`).
    pub async fn insert_task_file(
        &self,
        new: &NewTaskFile,
    ) -> Result<TaskFileRow, AgentStoreError> {
        new.check()?;
        let id = new
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let op = || format!("insert_task_file(file {id:?}, task {:?})", new.task_id);
        let row = sqlx::query(concat!(
            "INSERT INTO agent_task_files (",
            file_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
            file_columns!()
        ))
        .bind(id.clone())
        .bind(new.task_id.clone())
        .bind(new.name.clone())
        .bind(new.media_type.clone())
        .bind(new.size)
        .bind(new.sha256.to_ascii_lowercase())
        .bind(new.blob_key.clone())
        .bind(now_ms())
        .fetch_one(self.pool())
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                AgentStoreError::not_found(task_what(&new.task_id))
            } else if is_unique_violation(&e) {
                AgentStoreError::Store(StoreError::Conflict {
                    what: format!("task file {id:?}"),
                })
            } else {
                StoreError::query(op(), e).into()
            }
        })?;
        file_from_row(&row).map_err(|e| StoreError::query(op(), e).into())
    }

    /// The files of a task, oldest first. A task that does not exist gives
    /// `StoreError::NotFound`.
    pub async fn task_files(&self, task_id: &str) -> Result<Vec<TaskFileRow>, AgentStoreError> {
        let op = || format!("task_files(task {task_id:?})");
        let rows = sqlx::query(concat!(
            "SELECT ",
            file_columns!(),
            " FROM agent_task_files WHERE task_id = $1 ORDER BY created_at, id"
        ))
        .bind(task_id.to_owned())
        .fetch_all(self.pool())
        .await
        .map_err(|e| StoreError::query(op(), e))?;
        if rows.is_empty() {
            self.require_agent_task(task_id).await?;
        }
        rows.iter()
            .map(file_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::query(op(), e).into())
    }

    /// The file with that id, if any.
    pub async fn get_task_file(&self, id: &str) -> Result<Option<TaskFileRow>, AgentStoreError> {
        let op = || format!("get_task_file(file {id:?})");
        let row = sqlx::query(concat!(
            "SELECT ",
            file_columns!(),
            " FROM agent_task_files WHERE id = $1"
        ))
        .bind(id.to_owned())
        .fetch_optional(self.pool())
        .await
        .map_err(|e| StoreError::query(op(), e))?;
        row.as_ref()
            .map(file_from_row)
            .transpose()
            .map_err(|e| StoreError::query(op(), e).into())
    }
}
