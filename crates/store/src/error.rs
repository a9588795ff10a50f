//! The one error type of the store.

use std::sync::Arc;

/// Everything that can go wrong in the store. Each message names what failed and, where the
/// caller can do something about it, what to check.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no backend the store knows.
    #[error(
        "unsupported database URL {url:?}: use sqlite:/path/to/file.db, sqlite::memory: or postgres://user@host/db"
    )]
    UnsupportedUrl {
        /// The URL as given, with any password removed.
        url: String,
    },

    /// The database could not be reached or opened.
    #[error("cannot open the database {target}: {source} ({hint})")]
    Open {
        /// Which database (URL without password).
        target: String,
        /// What to check, depending on the backend.
        hint: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// Bringing the schema up to date failed.
    #[error(
        "migrating the database {target} failed: {source} (was it changed by hand, or written by a newer bytebot?)"
    )]
    Migrate {
        /// Which database (URL without password).
        target: String,
        /// The migrator's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    /// One statement failed.
    #[error("store: {op} failed: {source}")]
    Query {
        /// The operation and the row it was about, e.g. `claim_task(task "t1")`.
        op: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// Committing a group of writes failed; whether they were saved is unknown.
    #[error(
        "store: committing a group of {ops} writes failed, they may not have been saved: {source}"
    )]
    Commit {
        /// How many writes were in the group.
        ops: usize,
        /// The driver's error, shared by every caller in the group.
        #[source]
        source: Arc<sqlx::Error>,
    },

    /// A row with that key already exists.
    #[error("store: {what} already exists")]
    Conflict {
        /// The row, e.g. `task "t1"`.
        what: String,
    },

    /// No row with that key exists.
    #[error("store: {what} does not exist")]
    NotFound {
        /// The row, e.g. `task "t1"`.
        what: String,
    },

    /// The store was closed with [`crate::Store::close`]; open it again to use it.
    #[error("store: the store is closed (Store::close was called); open it again")]
    Closed,

    /// The group-commit writer stopped without [`crate::Store::close`]: its tokio runtime
    /// ended or it failed.
    #[error(
        "store: the write queue stopped before answering (its tokio runtime ended or it failed; see the log)"
    )]
    WriterStopped,
}

impl StoreError {
    /// Wraps a driver error of one operation; a closed pool becomes [`StoreError::Closed`].
    pub(crate) fn query(op: impl Into<String>, source: sqlx::Error) -> StoreError {
        match source {
            sqlx::Error::PoolClosed => StoreError::Closed,
            source => StoreError::Query {
                op: op.into(),
                source,
            },
        }
    }
}
