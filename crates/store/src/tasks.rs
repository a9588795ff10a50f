//! Gateway tasks: one row per planned task, and the state changes the gateway makes.

use sqlx::Row;

use crate::rows::{task_columns, task_from_row};
use crate::writer::Op;
use crate::{Store, StoreError, TaskRow};

impl Store {
    /// Inserts a planned task. Group-committed; a task with the same id gives
    /// [`StoreError::Conflict`].
    pub async fn insert_task(&self, task: &TaskRow) -> Result<(), StoreError> {
        self.writer()
            .submit(Op::Task(Box::new(task.clone())))
            .await
            .map(|_| ())
    }

    /// The task with that id, if any.
    pub async fn get_task(&self, id: &str) -> Result<Option<TaskRow>, StoreError> {
        let op = || format!("get_task(task {id:?})");
        let sql = concat!(
            "SELECT ",
            task_columns!(),
            " FROM gateway_tasks WHERE id = $1"
        );
        let row = sqlx::query(sql)
            .bind(id.to_owned())
            .fetch_optional(self.pool())
            .await
            .map_err(|e| StoreError::query(op(), e))?;
        row.as_ref()
            .map(task_from_row)
            .transpose()
            .map_err(|e| StoreError::query(op(), e))
    }

    /// Uses the task's confirm token: marks it used and the task `running`, only if the task
    /// is `planned` and its token unused. One statement, so of many concurrent callers exactly
    /// one gets `Ok(true)`; the others (and a missing task) get `Ok(false)`.
    pub async fn claim_task(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE gateway_tasks SET state = 'running', token_used_at = $2, updated_at = $2 \
             WHERE id = $1 AND state = 'planned' AND token_used_at IS NULL",
        )
        .bind(id.to_owned())
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(|e| StoreError::query(format!("claim_task(task {id:?})"), e))?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a person's approval (through `/approve`) if the task is still `planned`;
    /// `Ok(false)` otherwise (or when there is no such task).
    pub async fn approve_task(&self, id: &str, by: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE gateway_tasks SET approved_at = $3, approved_by = $2, updated_at = $3 \
             WHERE id = $1 AND state = 'planned'",
        )
        .bind(id.to_owned())
        .bind(by.to_owned())
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(|e| StoreError::query(format!("approve_task(task {id:?})"), e))?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets the task's state (e.g. `running`, `succeeded`, `failed`, `cancelled`) and, when
    /// given, its result; `updated_at = now`. A missing task is [`StoreError::NotFound`].
    pub async fn set_task_state(
        &self,
        id: &str,
        state: &str,
        result_json: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE gateway_tasks SET state = $2, result_json = COALESCE($3, result_json), \
             updated_at = $4 WHERE id = $1",
        )
        .bind(id.to_owned())
        .bind(state.to_owned())
        .bind(result_json.map(str::to_owned))
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(|e| StoreError::query(format!("set_task_state(task {id:?}, {state:?})"), e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: format!("task {id:?}"),
            });
        }
        Ok(())
    }

    /// Cancels the task if it is `planned` or `running`. Returns its state after the call
    /// (`"cancelled"`, or the finished state it already had); `None` when there is no such task.
    pub async fn cancel_task(&self, id: &str, now: i64) -> Result<Option<String>, StoreError> {
        let op = || format!("cancel_task(task {id:?})");
        let done = sqlx::query(
            "UPDATE gateway_tasks SET state = 'cancelled', updated_at = $2 \
             WHERE id = $1 AND state IN ('planned', 'running')",
        )
        .bind(id.to_owned())
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(|e| StoreError::query(op(), e))?;
        if done.rows_affected() == 1 {
            return Ok(Some("cancelled".to_owned()));
        }
        let row = sqlx::query("SELECT state FROM gateway_tasks WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(self.pool())
            .await
            .map_err(|e| StoreError::query(op(), e))?;
        row.map(|r| r.try_get::<String, _>(0))
            .transpose()
            .map_err(|e| StoreError::query(op(), e))
    }

    /// Tasks, newest first, at most `limit` (a negative limit counts as 0); only those of
    /// `key_id` when given.
    pub async fn list_tasks(
        &self,
        key_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<TaskRow>, StoreError> {
        let op = || format!("list_tasks(key {key_id:?})");
        let limit = limit.max(0);
        let query = match key_id {
            Some(key_id) => sqlx::query(concat!(
                "SELECT ",
                task_columns!(),
                " FROM gateway_tasks WHERE key_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
            ))
            .bind(key_id.to_owned())
            .bind(limit),
            None => sqlx::query(concat!(
                "SELECT ",
                task_columns!(),
                " FROM gateway_tasks ORDER BY created_at DESC, id DESC LIMIT $1"
            ))
            .bind(limit),
        };
        let rows = query
            .fetch_all(self.pool())
            .await
            .map_err(|e| StoreError::query(op(), e))?;
        rows.iter()
            .map(task_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::query(op(), e))
    }
}
