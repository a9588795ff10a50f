//! The work queue over `agent_tasks`: workers claim tasks with a lease, renew it while they
//! work, and finish or release them. A worker that dies stops renewing; once its lease runs
//! out another worker claims the task again, and the dead worker's late finish is refused
//! (every write of a worker is fenced on `lease_owner = worker`).
//!
//! Claiming is one statement on both backends. PostgreSQL: `UPDATE … WHERE id = (SELECT …
//! FOR UPDATE SKIP LOCKED LIMIT 1)`, so concurrent workers skip each other's candidate rows
//! instead of queueing on them. SQLite: the same `UPDATE … WHERE id = (SELECT … LIMIT 1)`; a
//! writing statement takes SQLite's single write lock before it reads, so the choice and the
//! update are atomic, and `busy_timeout` (set on every connection) makes other writers wait.

use std::time::Duration;

use bytebot_protocol::task::TaskStatus;
use serde_json::Value;
use sqlx::Row;

use crate::agent_sql::{lease_ms, now_ms};
use crate::agent_tasks::{agent_task_columns, agent_task_from_row, task_what};
use crate::{AgentStoreError, AgentTask, Backend, Store, StoreError};

/// The claim statement; `$1` worker, `$2` lease end, `$3` desktop, `$4` now. The candidate
/// query repeats the partial index's `status IN (…)` term so SQLite uses the index
/// `agent_tasks_queue` (its ORDER BY is the index's order, so the scan stops at the first
/// claimable row).
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE agent_tasks SET status = 'RUNNING', lease_owner = $1, lease_until = $2, \
             attempts = attempts + 1, desktop = $3, executed_at = COALESCE(executed_at, $4), \
             updated_at = $4 \
             WHERE id = (SELECT id FROM agent_tasks \
                 WHERE status IN ('PENDING', 'RUNNING') AND control = 'ASSISTANT' \
                 AND ((status = 'PENDING' AND (scheduled_for IS NULL OR scheduled_for <= $4)) \
                     OR (status = 'RUNNING' AND lease_until < $4)) \
                 ORDER BY priority DESC, COALESCE(scheduled_for, created_at), id \
                 LIMIT 1",
            $lock,
            ") RETURNING ",
            agent_task_columns!()
        )
    };
}

const CLAIM_SQLITE: &str = claim_sql!("");
const CLAIM_POSTGRES: &str = claim_sql!(" FOR UPDATE SKIP LOCKED");

impl Store {
    /// Takes the next task for `worker` on `desktop` that the agent controls (a task a person
    /// took over waits until it is handed back): a `PENDING` task whose time has come
    /// (`scheduled_for` empty or past), or a `RUNNING` task whose lease ran out (its worker
    /// died), highest priority first, then the one due longest (`scheduled_for`, else
    /// `created_at`), then by id. The task becomes `RUNNING`, held by `worker` for `lease`;
    /// `attempts` goes up by one and `executed_at` is set on the first claim. `None` when
    /// nothing is due.
    ///
    /// A task that keeps killing its workers comes back each time; check `attempts` after a
    /// claim and fail the task past a limit of your choice.
    ///
    /// (Named `claim_agent_task` because [`Store::claim_task`] is the gateway's.)
    pub async fn claim_agent_task(
        &self,
        worker: &str,
        desktop: &str,
        lease: Duration,
    ) -> Result<Option<AgentTask>, AgentStoreError> {
        check_worker(worker)?;
        let lease = lease_ms(lease)?;
        let now = now_ms();
        let sql = match self.backend() {
            Backend::Sqlite => CLAIM_SQLITE,
            Backend::Postgres => CLAIM_POSTGRES,
        };
        let op = || format!("claim_agent_task(worker {worker:?})");
        let row = sqlx::query(sql)
            .bind(worker.to_owned())
            .bind(now.saturating_add(lease))
            .bind(desktop.to_owned())
            .bind(now)
            .fetch_optional(self.pool())
            .await
            .map_err(|e| StoreError::query(op(), e))?;
        row.as_ref()
            .map(agent_task_from_row)
            .transpose()
            .map_err(|e| StoreError::query(op(), e).into())
    }

    /// Sets `worker`'s lease on the task to end `lease` from now (renew well before it ends,
    /// e.g. every third of it). Still holding means nobody claimed the task since, even if
    /// the lease ran out meanwhile. `Ok(false)` when the worker
    /// no longer holds it (it was claimed by another worker after the lease ran out, or a
    /// person changed its status): the worker must stop working on it.
    pub async fn renew_lease(
        &self,
        id: &str,
        worker: &str,
        lease: Duration,
    ) -> Result<bool, AgentStoreError> {
        let lease = lease_ms(lease)?;
        let done = sqlx::query(
            "UPDATE agent_tasks SET lease_until = $3 \
             WHERE id = $1 AND status = 'RUNNING' AND lease_owner = $2",
        )
        .bind(id.to_owned())
        .bind(worker.to_owned())
        .bind(now_ms().saturating_add(lease))
        .execute(self.pool())
        .await
        .map_err(|e| {
            StoreError::query(format!("renew_lease(task {id:?}, worker {worker:?})"), e)
        })?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends `worker`'s run of the task with `status` (COMPLETED, FAILED, NEEDS_HELP,
    /// NEEDS_REVIEW or CANCELLED), the result and error when given (`None` keeps what is
    /// stored), and drops the lease. Only the worker holding the task may: anyone else gets
    /// [`AgentStoreError::LeaseLost`] and nothing changes. A worker whose lease ran out but
    /// whose task nobody claimed yet still holds it and may finish.
    pub async fn finish_task(
        &self,
        id: &str,
        worker: &str,
        status: TaskStatus,
        result: Option<&Value>,
        error: Option<&str>,
    ) -> Result<AgentTask, AgentStoreError> {
        if matches!(status, TaskStatus::Running | TaskStatus::Pending) {
            return Err(AgentStoreError::invalid(
                format!("finish_task(task {id:?}) with status {status}"),
                "finish with COMPLETED, FAILED, NEEDS_HELP, NEEDS_REVIEW or CANCELLED; use release_task to hand a task back",
            ));
        }
        let now = now_ms();
        let op = || format!("finish_task(task {id:?}, worker {worker:?}, {status})");
        let row = sqlx::query(concat!(
            "UPDATE agent_tasks SET status = $3, result = COALESCE($4, result), \
             error = COALESCE($5, error), lease_owner = NULL, lease_until = NULL, \
             updated_at = $6, completed_at = $7 \
             WHERE id = $1 AND status = 'RUNNING' AND lease_owner = $2 RETURNING ",
            agent_task_columns!()
        ))
        .bind(id.to_owned())
        .bind(worker.to_owned())
        .bind(status.as_str())
        .bind(result.map(Value::to_string))
        .bind(error.map(str::to_owned))
        .bind(now)
        .bind(status.is_terminal().then_some(now))
        .fetch_optional(self.pool())
        .await
        .map_err(|e| StoreError::query(op(), e))?;
        match row {
            Some(row) => agent_task_from_row(&row).map_err(|e| StoreError::query(op(), e).into()),
            None => Err(self.lease_lost(id, worker).await),
        }
    }

    /// Hands the task back to the queue (`PENDING`, no lease), e.g. when the worker shuts
    /// down; the next claim takes it again. Fenced like [`Store::finish_task`].
    pub async fn release_task(&self, id: &str, worker: &str) -> Result<AgentTask, AgentStoreError> {
        let op = || format!("release_task(task {id:?}, worker {worker:?})");
        let row = sqlx::query(concat!(
            "UPDATE agent_tasks SET status = 'PENDING', lease_owner = NULL, lease_until = NULL, \
             updated_at = $3 WHERE id = $1 AND status = 'RUNNING' AND lease_owner = $2 RETURNING ",
            agent_task_columns!()
        ))
        .bind(id.to_owned())
        .bind(worker.to_owned())
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await
        .map_err(|e| StoreError::query(op(), e))?;
        match row {
            Some(row) => agent_task_from_row(&row).map_err(|e| StoreError::query(op(), e).into()),
            None => Err(self.lease_lost(id, worker).await),
        }
    }

    /// Puts a task that asked for help (`NEEDS_HELP`) back in the queue (`PENDING`), e.g.
    /// after a person answered; [`AgentStoreError::WrongStatus`] from any other status.
    pub async fn requeue_task(&self, id: &str) -> Result<AgentTask, AgentStoreError> {
        self.set_task_status(id, &[TaskStatus::NeedsHelp], TaskStatus::Pending)
            .await
    }

    /// Why a fenced write changed nothing: the task is gone, or someone else holds it.
    async fn lease_lost(&self, id: &str, worker: &str) -> AgentStoreError {
        let op = || format!("lease check (task {id:?}, worker {worker:?})");
        let row = match sqlx::query("SELECT status, lease_owner FROM agent_tasks WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(self.pool())
            .await
        {
            Ok(row) => row,
            Err(e) => return StoreError::query(op(), e).into(),
        };
        let Some(row) = row else {
            return AgentStoreError::not_found(task_what(id));
        };
        let read = || -> Result<(String, Option<String>), sqlx::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?))
        };
        match read() {
            Ok((status, holder)) => match TaskStatus::parse(&status) {
                Ok(status) => AgentStoreError::LeaseLost {
                    id: id.to_owned(),
                    worker: worker.to_owned(),
                    status,
                    holder,
                },
                Err(e) => StoreError::query(op(), sqlx::Error::Decode(e.into())).into(),
            },
            Err(e) => StoreError::query(op(), e).into(),
        }
    }
}

fn check_worker(worker: &str) -> Result<(), AgentStoreError> {
    if worker.is_empty() {
        return Err(AgentStoreError::invalid(
            "the worker name is empty",
            "give each worker a unique name (host and process id, say): leases are fenced on it",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The claim's candidate query walks the partial index instead of scanning the table.
    #[tokio::test]
    async fn sqlite_claim_uses_the_queue_index() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let start = CLAIM_SQLITE.find("(SELECT").unwrap() + 1;
        let end = CLAIM_SQLITE.find(") RETURNING").unwrap();
        let explain = format!("EXPLAIN QUERY PLAN {}", &CLAIM_SQLITE[start..end]);
        let rows = sqlx::query(sqlx::AssertSqlSafe(explain))
            .bind(0_i64)
            .bind(0_i64)
            .bind(0_i64)
            .bind(0_i64)
            .fetch_all(store.pool())
            .await
            .unwrap();
        let plan: Vec<String> = rows.iter().map(|r| r.try_get(3).unwrap()).collect();
        let plan = plan.join("\n");
        assert!(plan.contains("agent_tasks_queue"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "no sort needed: {plan}");
        store.close().await;
    }
}
