//! The agent's tasks, with Bytebot's fields: create, read, list, compare-and-set the status,
//! control and result, and delete with everything the task owns.
//!
//! Invariant: a task is `RUNNING` exactly when a worker holds its lease (`lease_owner` and
//! `lease_until` set). Only the queue (queue.rs) makes a task `RUNNING`; every other status
//! change clears the lease, which is how a worker learns that a person cancelled its task.

use bytebot_protocol::task::{Control, Priority, TaskStatus, TaskType};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::agent_error::status_list;
use crate::agent_sql::{Arg, Sql, check_limit, is_foreign_key_violation, is_unique_violation};
use crate::{AgentStoreError, Store, StoreError};

/// Longest accepted task id (uuids are 36 characters).
const MAX_ID_LEN: usize = 200;
/// Most tasks one [`Store::list_agent_tasks`] page returns.
pub const MAX_TASK_PAGE: u32 = 200;

/// A task to create. Start from [`NewAgentTask::new`] and set what differs from the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAgentTask {
    /// The id to use (a uuid v7 string, say); `None` makes a uuid v7.
    pub id: Option<String>,
    /// What to do, in the person's words.
    pub description: String,
    /// How soon, relative to the other tasks.
    pub priority: Priority,
    /// `IMMEDIATE`, or `SCHEDULED` with `scheduled_for` set.
    pub task_type: TaskType,
    /// Not before this time (unix ms); set exactly when `task_type` is `SCHEDULED`.
    pub scheduled_for: Option<i64>,
    /// Who drives the desktop at the start.
    pub control: Control,
    /// Our id of the model to run it with.
    pub model: String,
    /// Models to fall back to, in order.
    pub fallback_models: Vec<String>,
    /// The key (or user) that created it.
    pub created_by: String,
    /// The task whose `create_task` tool call made this one.
    pub parent_id: Option<String>,
    /// Creation time (unix ms); `None` means now. For imports and tests.
    pub created_at: Option<i64>,
}

impl NewAgentTask {
    /// An immediate, medium-priority task the agent drives, with no fallback models.
    pub fn new(
        description: impl Into<String>,
        model: impl Into<String>,
        created_by: impl Into<String>,
    ) -> NewAgentTask {
        NewAgentTask {
            id: None,
            description: description.into(),
            priority: Priority::Medium,
            task_type: TaskType::Immediate,
            scheduled_for: None,
            control: Control::Assistant,
            model: model.into(),
            fallback_models: Vec::new(),
            created_by: created_by.into(),
            parent_id: None,
            created_at: None,
        }
    }

    fn check(&self) -> Result<(), AgentStoreError> {
        if let Some(id) = &self.id {
            check_id("task id", id)?;
        }
        if self.description.trim().is_empty() {
            return Err(AgentStoreError::invalid(
                "the task's description is empty",
                "say what the agent should do",
            ));
        }
        if self.model.trim().is_empty() {
            return Err(AgentStoreError::invalid(
                "the task names no model",
                "give the id of a configured model",
            ));
        }
        if let Some(bad) = self.fallback_models.iter().find(|m| m.trim().is_empty()) {
            return Err(AgentStoreError::invalid(
                format!("fallback model {bad:?} is empty"),
                "list model ids only",
            ));
        }
        if self.created_by.is_empty() {
            return Err(AgentStoreError::invalid(
                "the task has no created_by",
                "give the key id (or user) that creates it",
            ));
        }
        match (self.task_type, self.scheduled_for) {
            (TaskType::Scheduled, None) => Err(AgentStoreError::invalid(
                "a SCHEDULED task has no scheduled_for time",
                "give the time (unix ms) it may start, or make it IMMEDIATE",
            )),
            (TaskType::Immediate, Some(at)) => Err(AgentStoreError::invalid(
                format!("an IMMEDIATE task has scheduled_for = {at}"),
                "make it SCHEDULED, or leave scheduled_for empty",
            )),
            _ => Ok(()),
        }
    }
}

/// One task as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AgentTask {
    /// Task id.
    pub id: String,
    /// What to do.
    pub description: String,
    /// Where it is in its life.
    pub status: TaskStatus,
    /// How soon.
    pub priority: Priority,
    /// `IMMEDIATE` or `SCHEDULED`.
    #[serde(rename = "type")]
    pub task_type: TaskType,
    /// Not before this time (unix ms).
    pub scheduled_for: Option<i64>,
    /// Who drives the desktop now.
    pub control: Control,
    /// Our id of its model.
    pub model: String,
    /// Models to fall back to, in order.
    pub fallback_models: Vec<String>,
    /// What it produced (JSON), once there is something.
    pub result: Option<Value>,
    /// Why it failed or stopped, in words.
    pub error: Option<String>,
    /// The key (or user) that created it.
    pub created_by: String,
    /// The task that created it, if any.
    pub parent_id: Option<String>,
    /// Creation time (unix ms).
    pub created_at: i64,
    /// Time of the last change (unix ms).
    pub updated_at: i64,
    /// When a worker first took it (unix ms).
    pub executed_at: Option<i64>,
    /// When it reached a final status (unix ms).
    pub completed_at: Option<i64>,
    /// The worker holding it (only while `RUNNING`).
    pub lease_owner: Option<String>,
    /// Until when that worker holds it (unix ms).
    pub lease_until: Option<i64>,
    /// How many times a worker took it.
    pub attempts: i64,
    /// The desktop the last worker ran it on.
    pub desktop: Option<String>,
    /// What its model calls cost so far, in US dollars.
    pub cost_usd: f64,
    /// Input tokens so far (every kind: normal, cache writes, cache reads).
    pub input_tokens: i64,
    /// Output tokens so far.
    pub output_tokens: i64,
}

/// Which tasks [`Store::list_agent_tasks`] returns. The default lists every task, 50 a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskListQuery {
    /// Only tasks in one of these statuses (all when empty).
    pub statuses: Vec<TaskStatus>,
    /// Only tasks whose description contains this text. `%` and `_` match themselves. Case is
    /// ignored; on SQLite only for ASCII letters.
    pub search: Option<String>,
    /// Only tasks of this creator.
    pub created_by: Option<String>,
    /// Page size, 1 to [`MAX_TASK_PAGE`].
    pub limit: u32,
    /// Where to continue: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Default for TaskListQuery {
    fn default() -> TaskListQuery {
        TaskListQuery {
            statuses: Vec::new(),
            search: None,
            created_by: None,
            limit: 50,
            cursor: None,
        }
    }
}

/// One page of tasks, newest first.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskPage {
    /// The tasks.
    pub items: Vec<AgentTask>,
    /// Pass this as [`TaskListQuery::cursor`] for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
    /// How many tasks match the filters in all (on every page).
    pub total: i64,
}

/// Columns of `agent_tasks` in the order [`agent_task_from_row`] reads them.
macro_rules! agent_task_columns {
    () => {
        "id, description, status, priority, task_type, scheduled_for, control, model, \
         fallback_models, result, error, created_by, parent_id, created_at, updated_at, \
         executed_at, completed_at, lease_owner, lease_until, attempts, desktop, cost_usd, \
         input_tokens, output_tokens"
    };
}
pub(crate) use agent_task_columns;

fn decode_error(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

pub(crate) fn agent_task_from_row(row: &AnyRow) -> Result<AgentTask, sqlx::Error> {
    let status: String = row.try_get(2)?;
    let task_type: String = row.try_get(4)?;
    let control: String = row.try_get(6)?;
    let fallback_models: String = row.try_get(8)?;
    let result: Option<String> = row.try_get(9)?;
    Ok(AgentTask {
        id: row.try_get(0)?,
        description: row.try_get(1)?,
        status: TaskStatus::parse(&status).map_err(decode_error)?,
        priority: Priority::from_rank(row.try_get(3)?),
        task_type: TaskType::parse(&task_type).map_err(decode_error)?,
        scheduled_for: row.try_get(5)?,
        control: Control::parse(&control).map_err(decode_error)?,
        model: row.try_get(7)?,
        fallback_models: serde_json::from_str(&fallback_models)
            .map_err(|e| decode_error(format!("fallback_models: {e}")))?,
        result: result
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|e| decode_error(format!("result: {e}")))?,
        error: row.try_get(10)?,
        created_by: row.try_get(11)?,
        parent_id: row.try_get(12)?,
        created_at: row.try_get(13)?,
        updated_at: row.try_get(14)?,
        executed_at: row.try_get(15)?,
        completed_at: row.try_get(16)?,
        lease_owner: row.try_get(17)?,
        lease_until: row.try_get(18)?,
        attempts: row.try_get(19)?,
        desktop: row.try_get(20)?,
        cost_usd: row.try_get(21)?,
        input_tokens: row.try_get(22)?,
        output_tokens: row.try_get(23)?,
    })
}

/// Checks an id given by a caller.
pub(crate) fn check_id(what: &str, id: &str) -> Result<(), AgentStoreError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(AgentStoreError::invalid(
            format!(
                "{what} {id:?} is empty, longer than {MAX_ID_LEN} bytes or has control characters"
            ),
            "use a uuid, or leave it out to get one",
        ));
    }
    Ok(())
}

/// What `agent task "id"` errors say.
pub(crate) fn task_what(id: &str) -> String {
    format!("agent task {id:?}")
}

fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// A position in the newest-first task order, as text: `<created_at>:<id>`.
fn encode_cursor(task: &AgentTask) -> String {
    format!("{}:{}", task.created_at, task.id)
}

fn decode_cursor(cursor: &str) -> Result<(i64, String), AgentStoreError> {
    let bad = || {
        AgentStoreError::invalid(
            format!("task list cursor {cursor:?} is not one this store gave out"),
            "pass the next_cursor of the previous page unchanged, or none for the first page",
        )
    };
    let (at, id) = cursor.split_once(':').ok_or_else(bad)?;
    let at: i64 = at.parse().map_err(|_| bad())?;
    if id.is_empty() {
        return Err(bad());
    }
    Ok((at, id.to_owned()))
}

/// Blob keys named in a message's content: the `blob` field of every image in it (how the
/// agent's images serialise).
pub(crate) fn collect_blob_keys(value: &Value, keys: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) if k == "blob" => keys.push(s.clone()),
                    _ => collect_blob_keys(v, keys),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_blob_keys(v, keys)),
        _ => {}
    }
}

impl Store {
    /// Creates a task (status `PENDING`) and returns it as stored. An id already used gives
    /// `StoreError::Conflict`; a `parent_id` that does not exist gives `StoreError::NotFound`.
    pub async fn insert_agent_task(
        &self,
        new: &NewAgentTask,
    ) -> Result<AgentTask, AgentStoreError> {
        new.check()?;
        let id = new
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let now = crate::agent_sql::now_ms();
        let created_at = new.created_at.unwrap_or(now);
        let fallback_models = serde_json::to_string(&new.fallback_models).map_err(|e| {
            AgentStoreError::invalid(format!("fallback models: {e}"), "list model ids")
        })?;
        let op = || format!("insert_agent_task(task {id:?})");
        let row = sqlx::query(concat!(
            "INSERT INTO agent_tasks (id, description, status, priority, task_type, \
             scheduled_for, control, model, fallback_models, created_by, parent_id, created_at, \
             updated_at) VALUES ($1, $2, 'PENDING', $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
             RETURNING ",
            agent_task_columns!()
        ))
        .bind(id.clone())
        .bind(new.description.clone())
        .bind(i64::from(new.priority.rank()))
        .bind(new.task_type.as_str())
        .bind(new.scheduled_for)
        .bind(new.control.as_str())
        .bind(new.model.clone())
        .bind(fallback_models)
        .bind(new.created_by.clone())
        .bind(new.parent_id.clone())
        .bind(created_at)
        .fetch_one(self.pool())
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                AgentStoreError::Store(StoreError::Conflict {
                    what: task_what(&id),
                })
            } else if is_foreign_key_violation(&e) {
                AgentStoreError::not_found(format!(
                    "parent agent task {:?}",
                    new.parent_id.as_deref().unwrap_or_default()
                ))
            } else {
                StoreError::query(op(), e).into()
            }
        })?;
        agent_task_from_row(&row).map_err(|e| StoreError::query(op(), e).into())
    }

    /// The task with that id, if any.
    pub async fn get_agent_task(&self, id: &str) -> Result<Option<AgentTask>, AgentStoreError> {
        let op = || format!("get_agent_task(task {id:?})");
        let row = sqlx::query(concat!(
            "SELECT ",
            agent_task_columns!(),
            " FROM agent_tasks WHERE id = $1"
        ))
        .bind(id.to_owned())
        .fetch_optional(self.pool())
        .await
        .map_err(|e| StoreError::query(op(), e))?;
        row.as_ref()
            .map(agent_task_from_row)
            .transpose()
            .map_err(|e| StoreError::query(op(), e).into())
    }

    /// The task, or `StoreError::NotFound`.
    pub(crate) async fn require_agent_task(&self, id: &str) -> Result<AgentTask, AgentStoreError> {
        self.get_agent_task(id)
            .await?
            .ok_or_else(|| AgentStoreError::not_found(task_what(id)))
    }

    /// Tasks newest first (by `created_at`, then id), filtered, one page at a time, with the
    /// number of matching tasks. A cursor that this store did not give out, or a limit outside
    /// 1..=[`MAX_TASK_PAGE`], is refused.
    pub async fn list_agent_tasks(&self, q: &TaskListQuery) -> Result<TaskPage, AgentStoreError> {
        let limit = check_limit("list_agent_tasks", q.limit, MAX_TASK_PAGE)?;
        let cursor = q.cursor.as_deref().map(decode_cursor).transpose()?;
        let op = "list_agent_tasks";

        let filters = |sql: &mut Sql| {
            if !q.statuses.is_empty() {
                sql.push(" AND status IN (");
                for (i, s) in q.statuses.iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.arg(Arg::Text(s.as_str().to_owned()));
                }
                sql.push(")");
            }
            if let Some(by) = &q.created_by {
                sql.push(" AND created_by = ").arg(Arg::Text(by.clone()));
            }
            if let Some(text) = q.search.as_deref().filter(|t| !t.is_empty()) {
                sql.push(match self.backend() {
                    // SQLite's LIKE ignores the case of ASCII letters; PostgreSQL needs ILIKE.
                    crate::Backend::Sqlite => " AND description LIKE ",
                    crate::Backend::Postgres => " AND description ILIKE ",
                })
                .arg(Arg::Text(escape_like(text)))
                .push(" ESCAPE '\\'");
            }
        };

        let mut count = Sql::new("SELECT COUNT(*) FROM agent_tasks WHERE 1 = 1");
        filters(&mut count);
        let total: i64 = count
            .query()
            .fetch_one(self.pool())
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| StoreError::query(op, e))?;

        let mut page = Sql::new(concat!(
            "SELECT ",
            agent_task_columns!(),
            " FROM agent_tasks WHERE 1 = 1"
        ));
        filters(&mut page);
        if let Some((at, id)) = cursor {
            page.push(" AND (created_at < ")
                .arg(Arg::Int(at))
                .push(" OR (created_at = ")
                .arg(Arg::Int(at))
                .push(" AND id < ")
                .arg(Arg::Text(id))
                .push("))");
        }
        // One more than asked: whether it exists tells if there is a next page.
        page.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .arg(Arg::Int(limit + 1));
        let rows = page
            .query()
            .fetch_all(self.pool())
            .await
            .map_err(|e| StoreError::query(op, e))?;
        let mut items = rows
            .iter()
            .map(agent_task_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::query(op, e))?;
        let more = items.len() > q.limit as usize;
        items.truncate(q.limit as usize);
        let next_cursor = if more {
            items.last().map(encode_cursor)
        } else {
            None
        };
        Ok(TaskPage {
            items,
            next_cursor,
            total,
        })
    }

    /// Moves the task to `to` if its status is one of `from` (compare-and-set) and returns it
    /// as changed. Clears the lease: a worker that held the task finds out at its next renew
    /// or finish. `completed_at` is set when `to` is final (COMPLETED, CANCELLED, FAILED) and
    /// cleared otherwise. `to` cannot be `RUNNING` (only a claim makes a task run).
    ///
    /// Errors: `StoreError::NotFound` for a missing task, [`AgentStoreError::WrongStatus`]
    /// (naming the status it has) when it is in none of `from`.
    pub async fn set_task_status(
        &self,
        id: &str,
        from: &[TaskStatus],
        to: TaskStatus,
    ) -> Result<AgentTask, AgentStoreError> {
        if to == TaskStatus::Running {
            return Err(AgentStoreError::invalid(
                format!("set_task_status(task {id:?}) to RUNNING"),
                "tasks start running only through claim_agent_task, which gives the worker a lease",
            ));
        }
        if from.is_empty() {
            return Err(AgentStoreError::invalid(
                format!("set_task_status(task {id:?}) names no current status to compare with"),
                "list the statuses the task may be in (TaskStatus::ALL for any)",
            ));
        }
        let now = crate::agent_sql::now_ms();
        let mut sql = Sql::new("UPDATE agent_tasks SET status = ");
        sql.arg(Arg::Text(to.as_str().to_owned()))
            .push(", updated_at = ")
            .arg(Arg::Int(now))
            .push(", lease_owner = NULL, lease_until = NULL, completed_at = ");
        if to.is_terminal() {
            sql.arg(Arg::Int(now));
        } else {
            sql.push("NULL");
        }
        sql.push(" WHERE id = ")
            .arg(Arg::Text(id.to_owned()))
            .push(" AND status IN (");
        for (i, s) in from.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.arg(Arg::Text(s.as_str().to_owned()));
        }
        sql.push(concat!(") RETURNING ", agent_task_columns!()));
        let op = || format!("set_task_status(task {id:?}, {to})");
        let row = sql
            .query()
            .fetch_optional(self.pool())
            .await
            .map_err(|e| StoreError::query(op(), e))?;
        match row {
            Some(row) => agent_task_from_row(&row).map_err(|e| StoreError::query(op(), e).into()),
            None => {
                let task = self.require_agent_task(id).await?;
                Err(AgentStoreError::WrongStatus {
                    id: id.to_owned(),
                    actual: task.status,
                    expected: status_list(from),
                })
            }
        }
    }

    /// Sets who drives the task's desktop (a person taking over, or handing back).
    pub async fn set_task_control(
        &self,
        id: &str,
        control: Control,
    ) -> Result<AgentTask, AgentStoreError> {
        let op = || format!("set_task_control(task {id:?}, {control})");
        let row = sqlx::query(concat!(
            "UPDATE agent_tasks SET control = $2, updated_at = $3 WHERE id = $1 RETURNING ",
            agent_task_columns!()
        ))
        .bind(id.to_owned())
        .bind(control.as_str())
        .bind(crate::agent_sql::now_ms())
        .fetch_optional(self.pool())
        .await
        .map_err(|e| StoreError::query(op(), e))?
        .ok_or_else(|| AgentStoreError::not_found(task_what(id)))?;
        agent_task_from_row(&row).map_err(|e| StoreError::query(op(), e).into())
    }

    /// Replaces the task's result and error (`None` clears them), whatever its status.
    pub async fn update_task_result(
        &self,
        id: &str,
        result: Option<&Value>,
        error: Option<&str>,
    ) -> Result<AgentTask, AgentStoreError> {
        let op = || format!("update_task_result(task {id:?})");
        let row = sqlx::query(concat!(
            "UPDATE agent_tasks SET result = $2, error = $3, updated_at = $4 WHERE id = $1 \
             RETURNING ",
            agent_task_columns!()
        ))
        .bind(id.to_owned())
        .bind(result.map(Value::to_string))
        .bind(error.map(str::to_owned))
        .bind(crate::agent_sql::now_ms())
        .fetch_optional(self.pool())
        .await
        .map_err(|e| StoreError::query(op(), e))?
        .ok_or_else(|| AgentStoreError::not_found(task_what(id)))?;
        agent_task_from_row(&row).map_err(|e| StoreError::query(op(), e).into())
    }

    /// Deletes the task and every row it owns (messages, summaries, events, usage, files) in
    /// one transaction, and returns the blob keys those rows named (its files' keys and the
    /// `blob` of every image in its messages), sorted and without repeats: delete those from
    /// the blob store next. Tasks it created keep existing, without a parent. A task still
    /// running is deleted too; its worker's next renew or finish fails.
    pub async fn delete_agent_task(&self, id: &str) -> Result<Vec<String>, AgentStoreError> {
        let op = |step: &str| format!("delete_agent_task(task {id:?}): {step}");
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(|e| StoreError::query(op("begin"), e))?;
        let mut keys = Vec::new();
        // Writes only, and the first statement writes: a SQLite transaction that read first
        // could not upgrade to writing when another connection wrote meanwhile.
        let files =
            sqlx::query("DELETE FROM agent_task_files WHERE task_id = $1 RETURNING blob_key")
                .bind(id.to_owned())
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| StoreError::query(op("files"), e))?;
        for row in &files {
            keys.push(
                row.try_get(0)
                    .map_err(|e| StoreError::query(op("files"), e))?,
            );
        }
        let messages =
            sqlx::query("DELETE FROM agent_messages WHERE task_id = $1 RETURNING content")
                .bind(id.to_owned())
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| StoreError::query(op("messages"), e))?;
        for row in &messages {
            let content: String = row
                .try_get(0)
                .map_err(|e| StoreError::query(op("messages"), e))?;
            // A row that is not JSON names no blob we could find; it is deleted all the same.
            if let Ok(value) = serde_json::from_str::<Value>(&content) {
                collect_blob_keys(&value, &mut keys);
            }
        }
        for (table, sql) in [
            (
                "summaries",
                "DELETE FROM agent_summaries WHERE task_id = $1",
            ),
            ("events", "DELETE FROM agent_task_events WHERE task_id = $1"),
            ("usage", "DELETE FROM agent_task_usage WHERE task_id = $1"),
        ] {
            sqlx::query(sql)
                .bind(id.to_owned())
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::query(op(table), e))?;
        }
        let done = sqlx::query("DELETE FROM agent_tasks WHERE id = $1")
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::query(op("task"), e))?;
        if done.rows_affected() == 0 {
            // Nothing was deleted; dropping the transaction rolls it back.
            return Err(AgentStoreError::not_found(task_what(id)));
        }
        tx.commit()
            .await
            .map_err(|e| StoreError::query(op("commit"), e))?;
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(escape_like("50%_off\\"), "%50\\%\\_off\\\\%");
    }

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        assert_eq!(
            decode_cursor("1700:0190-ab:c").unwrap(),
            (1700, "0190-ab:c".to_owned())
        );
        for bad in ["", "abc", "12:", "x:1", ":id"] {
            let e = decode_cursor(bad).unwrap_err();
            assert!(
                e.to_string().contains("is not one this store gave out"),
                "{e}"
            );
        }
    }

    #[test]
    fn blob_keys_are_found_anywhere_in_content() {
        let content = serde_json::json!([
            {"type": "text", "text": "blob"},
            {"type": "image", "image": {"media_type": "image/png", "blob": "tasks/t/a.png"}},
            {"type": "tool_result", "result": {"image": {"blob": "tasks/t/b.png"}, "blob": 3}}
        ]);
        let mut keys = Vec::new();
        collect_blob_keys(&content, &mut keys);
        assert_eq!(keys, ["tasks/t/a.png", "tasks/t/b.png"]);
    }

    #[test]
    fn new_tasks_are_checked() {
        let ok = NewAgentTask::new("open the browser", "claude", "k1");
        assert!(ok.check().is_ok());
        let mut t = ok.clone();
        t.task_type = TaskType::Scheduled;
        assert!(
            t.check()
                .unwrap_err()
                .to_string()
                .contains("no scheduled_for")
        );
        let mut t = ok.clone();
        t.scheduled_for = Some(5);
        assert!(t.check().is_err());
        let mut t = ok.clone();
        t.description = "  ".into();
        assert!(t.check().is_err());
        let mut t = ok;
        t.id = Some(String::new());
        assert!(t.check().is_err());
    }
}
