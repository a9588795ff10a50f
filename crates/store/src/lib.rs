//! Persistence for bytebot: one [`Store`] over SQLite (embedded, the default) or PostgreSQL
//! (when several workers share a queue).
//!
//! Both backends go through `sqlx`'s `Any` driver with the same SQL wherever the dialects
//! agree (`$1` placeholders work in both); [`Backend`] covers the few places they differ.
//! The schema is migrated on [`Store::open`] from SQL files compiled into the binary
//! (`migrations/<backend>/NNNN_name.sql`).
//!
//! Hot-path inserts (nonces, tasks, events) go through one group-commit writer (see
//! `writer.rs`): callers wait until their row is committed, and one transaction serves many
//! callers. Everything else is a single statement on the pool.

mod agent_error;
mod agent_events;
mod agent_files;
mod agent_sql;
mod agent_tasks;
mod agent_usage;
mod artifacts;
mod blobs;
mod error;
mod events;
mod messages;
mod migrations;
mod nonces;
mod queue;
mod rows;
mod target;
mod tasks;
mod writer;

use std::sync::Arc;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Connection};

pub use agent_error::AgentStoreError;
pub use agent_events::{MAX_EVENT_PAGE, TaskEventRow};
pub use agent_files::{NewTaskFile, TaskFileRow};
pub use agent_tasks::{AgentTask, MAX_TASK_PAGE, NewAgentTask, TaskListQuery, TaskPage};
pub use agent_usage::{NewUsage, UsageRow, UsageTotals};
pub use blobs::{BlobError, Blobs, check_key as check_blob_key, task_blob_prefix};
pub use error::StoreError;
pub use messages::{MAX_MESSAGE_PAGE, MessageRow, Role, SummaryRow};
pub use rows::{ArtifactRow, EventRow, NonceRow, TaskRow};
pub use target::sqlite_url;
pub use writer::{PendingWrite, WriteStats};

use target::Target;
use writer::Writer;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// An embedded SQLite file (or `sqlite::memory:`).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Per-connection SQLite settings. `journal_mode = WAL` is set once at open (it is kept in
/// the file); these are per connection and must be set on each. NORMAL is durable in WAL mode
/// against a crash of the process; only a power loss can lose the last commits.
///
/// `wal_autocheckpoint` is raised from 1,000 pages to 16,384 (64 MB with 4 KB pages) because
/// an automatic checkpoint runs inside whichever commit crosses the mark, and its fsync then
/// stalls every caller waiting on that group (it was the gateway's p99). [`checkpoints`] copies
/// the WAL back in the background instead; the raised mark only bounds the WAL if that falls
/// behind.
const SQLITE_PRAGMAS: &str = "PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; \
     PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 16384;";

/// How often the background checkpoint runs on a SQLite file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Connections per pool. SQLite has one writer at a time anyway; WAL lets readers run beside it.
const SQLITE_MAX_CONNECTIONS: u32 = 8;
const POSTGRES_MAX_CONNECTIONS: u32 = 16;

/// The database handle: cheap to clone (an `Arc` inside); every clone shares one pool and one
/// group-commit writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    backend: Backend,
    /// The URL without its password, for messages.
    target: String,
    writer: Writer,
    /// The background WAL checkpoint of a SQLite file.
    checkpoints: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend)
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens `"sqlite:/path/to/file.db"` (created if missing; its folder must exist),
    /// `"sqlite::memory:"` or `"postgres://user@host/db"`, and brings the schema up to date.
    /// Must be called inside a tokio runtime: it starts the group-commit writer there.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let target = Target::parse(url)?;
        let backend = target.backend;
        let open_error = |source: sqlx::Error| StoreError::Open {
            target: target.display.clone(),
            hint: match backend {
                Backend::Sqlite => {
                    "check that the folder exists and is writable and that the file is a SQLite database"
                }
                Backend::Postgres => {
                    "check that the server runs and that the URL's user, password, host, port and database are right"
                }
            },
            source,
        };

        if !target.in_memory {
            // One plain connection first: a pool retries failed connects until its acquire
            // timeout and then reports only "timed out", while this gives the real reason
            // (no such folder, not a database, password refused) at once.
            let mut first = AnyConnection::connect(&target.connect_url)
                .await
                .map_err(open_error)?;
            if backend == Backend::Sqlite {
                // Kept in the file, so once is enough; and switching the journal mode takes a
                // lock that busy_timeout does not wait for, so it must not race the pool's
                // connections.
                sqlx::raw_sql("PRAGMA journal_mode = WAL")
                    .execute(&mut first)
                    .await
                    .map_err(open_error)?;
            }
            first.close().await.map_err(open_error)?;
        }

        let options = match backend {
            Backend::Sqlite => {
                let options = AnyPoolOptions::new().after_connect(|conn, _meta| {
                    Box::pin(async move {
                        sqlx::raw_sql(SQLITE_PRAGMAS).execute(&mut *conn).await?;
                        Ok(())
                    })
                });
                if target.in_memory {
                    // An in-memory database lives as long as a connection to it: keep exactly
                    // one, forever.
                    options
                        .max_connections(1)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                } else {
                    options.max_connections(SQLITE_MAX_CONNECTIONS)
                }
            }
            Backend::Postgres => AnyPoolOptions::new().max_connections(POSTGRES_MAX_CONNECTIONS),
        };
        let pool = options
            .connect(&target.connect_url)
            .await
            .map_err(open_error)?;
        migrations::migrator(backend)
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                target: target.display.clone(),
                source,
            })?;
        tracing::debug!(target = %target.display, ?backend, "store opened");
        // The writer gets a connection of its own, except where the database lives only as
        // long as the pool's single connection (in memory).
        let own = (!target.in_memory).then(|| {
            let setup = (backend == Backend::Sqlite).then_some(SQLITE_PRAGMAS);
            (target.connect_url.clone(), setup)
        });
        let writer = Writer::spawn(pool.clone(), backend, own);
        let checkpoints = (backend == Backend::Sqlite && !target.in_memory)
            .then(|| tokio::spawn(checkpoints(pool.clone())));
        Ok(Store {
            inner: Arc::new(Inner {
                pool,
                backend,
                target: target.display,
                writer,
                checkpoints,
            }),
        })
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Checks that the database answers (for `/ready`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(self.pool())
            .await
            .map_err(|e| StoreError::query(format!("ping({})", self.inner.target), e))?;
        Ok(())
    }

    /// Writes what is queued, then closes every connection. Calls on any clone afterwards
    /// fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        self.inner.writer.shutdown().await;
        if let Some(task) = &self.inner.checkpoints {
            task.abort();
        }
        self.inner.pool.close().await;
    }

    /// Counters of the group-commit writer (groups, ops, fallbacks), e.g. for `/metrics`.
    pub fn write_stats(&self) -> WriteStats {
        self.inner.writer.stats()
    }

    fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    fn writer(&self) -> &Writer {
        &self.inner.writer
    }
}

/// Copies a SQLite file's WAL back into the database now and then, off the commit path.
/// PASSIVE never waits for readers or the writer; what it cannot copy now it copies next time.
async fn checkpoints(pool: AnyPool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::raw_sql("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "store: background checkpoint failed; the next one retries");
        }
    }
}
