//! The error of the agent's tables: a [`StoreError`] (the database failed, a row is missing or
//! already there) or one of the refusals only these tables have (a status or lease that moved
//! on, input the store cannot keep).

use bytebot_protocol::task::TaskStatus;

use crate::StoreError;

/// What the agent's store calls can fail with. Missing rows are
/// `Store(StoreError::NotFound { .. })` and duplicate ids `Store(StoreError::Conflict { .. })`,
/// as in the rest of the store; the other variants are refusals a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum AgentStoreError {
    /// The database failed, or the row is missing or already exists.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// A compare-and-set on the task's status found another status.
    #[error(
        "store: agent task {id:?} is {actual}, not {expected}, so it was left as it is; read it again and decide from its current status"
    )]
    WrongStatus {
        /// The task.
        id: String,
        /// Its status now.
        actual: TaskStatus,
        /// The statuses the change required, e.g. `PENDING or RUNNING`.
        expected: String,
    },

    /// A worker tried to renew, finish or release a task it no longer holds: its lease ran out
    /// and another worker took the task, or a person changed its status meanwhile.
    #[error(
        "store: worker {worker:?} no longer holds agent task {id:?} (it is {status}{}); stop working on it and drop this run's outcome",
        holder.as_ref().map(|h| format!(", held by {h:?}")).unwrap_or_default()
    )]
    LeaseLost {
        /// The task.
        id: String,
        /// The worker that asked.
        worker: String,
        /// The task's status now.
        status: TaskStatus,
        /// The worker that holds it now, if any.
        holder: Option<String>,
    },

    /// The input cannot be stored as given (a bad cursor, limit, key or JSON).
    #[error("store: {what}; {fix}")]
    Invalid {
        /// What was wrong, naming the value.
        what: String,
        /// What to do instead.
        fix: String,
    },
}

impl AgentStoreError {
    pub(crate) fn invalid(what: impl Into<String>, fix: impl Into<String>) -> AgentStoreError {
        AgentStoreError::Invalid {
            what: what.into(),
            fix: fix.into(),
        }
    }

    pub(crate) fn not_found(what: impl Into<String>) -> AgentStoreError {
        AgentStoreError::Store(StoreError::NotFound { what: what.into() })
    }

    /// True when the row asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, AgentStoreError::Store(StoreError::NotFound { .. }))
    }
}

/// `PENDING or RUNNING`, for messages.
pub(crate) fn status_list(statuses: &[TaskStatus]) -> String {
    let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    match names.split_last() {
        None => "any status".to_owned(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_statuses() {
        let e = AgentStoreError::WrongStatus {
            id: "t1".into(),
            actual: TaskStatus::Completed,
            expected: status_list(&[TaskStatus::Pending, TaskStatus::Running]),
        };
        assert_eq!(
            e.to_string(),
            "store: agent task \"t1\" is COMPLETED, not PENDING or RUNNING, so it was left as it is; \
             read it again and decide from its current status"
        );
        let e = AgentStoreError::LeaseLost {
            id: "t1".into(),
            worker: "w1".into(),
            status: TaskStatus::Running,
            holder: Some("w2".into()),
        };
        assert!(
            e.to_string()
                .contains("no longer holds agent task \"t1\" (it is RUNNING, held by \"w2\")"),
            "{e}"
        );
        assert_eq!(
            status_list(&[
                TaskStatus::NeedsHelp,
                TaskStatus::Pending,
                TaskStatus::Failed
            ]),
            "NEEDS_HELP, PENDING or FAILED"
        );
    }
}
