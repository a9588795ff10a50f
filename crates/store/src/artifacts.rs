//! Artifact metadata; the bytes live in files the gateway writes.

use crate::rows::{artifact_columns, artifact_from_row};
use crate::{ArtifactRow, Store, StoreError};

impl Store {
    /// Records an artifact. An id already used gives [`StoreError::Conflict`].
    pub async fn insert_artifact(&self, a: &ArtifactRow) -> Result<(), StoreError> {
        let done = sqlx::query(concat!(
            "INSERT INTO artifacts (",
            artifact_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING"
        ))
        .bind(a.id.clone())
        .bind(a.task_id.clone())
        .bind(a.key_id.clone())
        .bind(a.kind.clone())
        .bind(a.media_type.clone())
        .bind(a.bytes)
        .bind(a.sha256.clone())
        .bind(a.path.clone())
        .bind(a.created_at)
        .execute(self.pool())
        .await
        .map_err(|e| StoreError::query(format!("insert_artifact(artifact {:?})", a.id), e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict {
                what: format!("artifact {:?}", a.id),
            });
        }
        Ok(())
    }

    /// The artifact with that id, if any.
    pub async fn get_artifact(&self, id: &str) -> Result<Option<ArtifactRow>, StoreError> {
        let op = || format!("get_artifact(artifact {id:?})");
        let row = sqlx::query(concat!(
            "SELECT ",
            artifact_columns!(),
            " FROM artifacts WHERE id = $1"
        ))
        .bind(id.to_owned())
        .fetch_optional(self.pool())
        .await
        .map_err(|e| StoreError::query(op(), e))?;
        row.as_ref()
            .map(artifact_from_row)
            .transpose()
            .map_err(|e| StoreError::query(op(), e))
    }

    /// The artifacts of a task, oldest first.
    pub async fn task_artifacts(&self, task_id: &str) -> Result<Vec<ArtifactRow>, StoreError> {
        let op = || format!("task_artifacts(task {task_id:?})");
        let rows = sqlx::query(concat!(
            "SELECT ",
            artifact_columns!(),
            " FROM artifacts WHERE task_id = $1 ORDER BY created_at, id"
        ))
        .bind(task_id.to_owned())
        .fetch_all(self.pool())
        .await
        .map_err(|e| StoreError::query(op(), e))?;
        rows.iter()
            .map(artifact_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::query(op(), e))
    }
}
