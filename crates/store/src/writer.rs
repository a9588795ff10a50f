//! Group commit: one task does the hot-path writes (nonces, tasks, events) for everyone.
//!
//! Callers send an [`Op`] with a oneshot for the answer. The writer takes the first waiting op,
//! drains whatever else is queued (up to [`MAX_BATCH`]), writes them all in one transaction,
//! commits, and only then answers each caller with its own result. One commit (and, on SQLite,
//! one WAL append) thus serves hundreds of requests, and nobody hears "done" before the row is
//! committed.
//!
//! Inside the transaction the ops are grouped by table and written with multi-row
//! `INSERT .. ON CONFLICT DO NOTHING RETURNING <key>`: a duplicate key is the one failure we
//! expect (a replayed nonce, a reused id), and this way it costs no error at all — a key that is
//! not returned was a duplicate, and only that caller hears so. Any other failure (a statement
//! error) aborts the transaction on PostgreSQL, so then the whole group is rolled back and each
//! op is written again on its own: the failing op fails alone and the others succeed. That
//! keeps the common path at one statement per table per group instead of SAVEPOINT/RELEASE
//! round trips for every op. A failed COMMIT is not retried (its outcome is unknown), so every
//! caller of that group gets the commit error.
//!
//! There is one writer: SQLite takes one writer at a time anyway, and on PostgreSQL the group
//! grows with the number of waiting callers, so one commit (one WAL flush) still serves many.
//! Another hot-path insert (the agent's messages, say) becomes another [`Op`] variant with its
//! own grouped insert in [`apply`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sqlx::any::{Any, AnyArguments, AnyRow};
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Connection, Row};
use tokio::sync::{mpsc, oneshot};

use crate::rows::{EventRow, NonceRow, TaskRow, event_columns, task_columns};
use crate::{Backend, StoreError};

/// Most ops written in one transaction.
pub(crate) const MAX_BATCH: usize = 512;
/// Ops that may wait for the writer before senders are held back.
const QUEUE_CAPACITY: usize = 8192;

/// One write the writer can group.
#[derive(Debug)]
pub(crate) enum Op {
    Nonce(NonceRow),
    Task(Box<TaskRow>),
    Event(EventRow),
}

impl Op {
    fn describe(&self) -> String {
        match self {
            Op::Nonce(n) => format!("insert_nonce(key {:?}, nonce {:?})", n.key_id, n.nonce),
            Op::Task(t) => format!("insert_task(task {:?})", t.id),
            Op::Event(e) => format!("append_event(event {})", e.id),
        }
    }

    /// The answer when the insert returns no row: a duplicate key. A used nonce is an
    /// answer (`false`), a reused id an error.
    fn when_not_inserted(&self) -> Result<bool, StoreError> {
        match self {
            Op::Nonce(_) => Ok(false),
            Op::Task(t) => Err(StoreError::Conflict {
                what: format!("task {:?}", t.id),
            }),
            Op::Event(e) => Err(StoreError::Conflict {
                what: format!("event {}", e.id),
            }),
        }
    }
}

/// `Ok(true)`: written; `Ok(false)`: a nonce that was already used.
type Reply = oneshot::Sender<Result<bool, StoreError>>;

struct Job {
    op: Op,
    reply: Reply,
}

enum Msg {
    Job(Job),
    /// Finish what is queued, then stop and say so.
    Shutdown(oneshot::Sender<()>),
}

/// A queued write whose group has not necessarily been committed yet.
#[derive(Debug)]
#[must_use = "a queued write is only known to be durable once `committed` returns"]
pub struct PendingWrite {
    answer: oneshot::Receiver<Result<bool, StoreError>>,
}

impl PendingWrite {
    /// Waits until the write's group is committed: `Ok(true)` when written, `Ok(false)` for a
    /// nonce that was already used.
    pub async fn committed(self) -> Result<bool, StoreError> {
        // The writer answers everything it took before it stops (even on shutdown), so a
        // dropped answer means it died.
        self.answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

/// Counters of the group-commit writer, e.g. for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions committed (or attempted) by the writer.
    pub batches: u64,
    /// Ops written; `ops / batches` is the average group size.
    pub ops: u64,
    /// Groups that hit a statement error and were retried op by op.
    pub fallbacks: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    ops: AtomicU64,
    fallbacks: AtomicU64,
}

/// Where the writer writes.
struct Db {
    pool: AnyPool,
    backend: Backend,
    /// How to open the writer's own connection (`None`: borrow one from the pool per group, as
    /// an in-memory SQLite database must, having only the pool's one connection).
    own: Option<OwnConnection>,
}

/// The writer's own connection: no pool checkout per group, its prepared statements stay warm,
/// and reads never wait behind it for a pooled connection.
struct OwnConnection {
    url: String,
    /// Statements run on each new connection (SQLite's pragmas).
    setup: Option<&'static str>,
    conn: Option<AnyConnection>,
}

impl OwnConnection {
    async fn get(&mut self) -> Result<&mut AnyConnection, sqlx::Error> {
        if self.conn.is_none() {
            let mut conn = AnyConnection::connect(&self.url).await?;
            if let Some(setup) = self.setup {
                sqlx::raw_sql(setup).execute(&mut conn).await?;
            }
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| sqlx::Error::Protocol("the writer's connection is gone".into()))
    }

    /// After an error that is not the database refusing a statement (I/O, a closed
    /// connection), the next group starts on a fresh connection.
    fn forget_if_broken(&mut self, e: &sqlx::Error) {
        if !matches!(e, sqlx::Error::Database(_)) {
            self.conn = None;
        }
    }
}

/// Why a group could not be written as a whole.
#[derive(Debug)]
enum ApplyError {
    Sql(sqlx::Error),
    /// A counted insert wrote fewer rows than it was given: some key was taken. The group is
    /// rolled back and written op by op, each with `RETURNING`, to find out which.
    Conflict,
}

impl From<sqlx::Error> for ApplyError {
    fn from(e: sqlx::Error) -> Self {
        ApplyError::Sql(e)
    }
}

/// The sending side of the writer task.
pub(crate) struct Writer {
    tx: mpsc::Sender<Msg>,
    counters: Arc<Counters>,
    /// Set by [`Writer::shutdown`], so a refused op says "closed" rather than "stopped".
    closed: AtomicBool,
}

impl Writer {
    /// Starts the writer task on the current tokio runtime. With `own` (a connect URL and the
    /// statements each new connection runs) it writes on a connection of its own; without, it
    /// borrows one from `pool` for each group.
    pub(crate) fn spawn(
        pool: AnyPool,
        backend: Backend,
        own: Option<(String, Option<&'static str>)>,
    ) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let counters = Arc::new(Counters::default());
        let own = own.map(|(url, setup)| OwnConnection {
            url,
            setup,
            conn: None,
        });
        let db = Db { pool, backend, own };
        tokio::spawn(run(db, rx, Arc::clone(&counters)));
        Writer {
            tx,
            counters,
            closed: AtomicBool::new(false),
        }
    }

    /// Queues one op and waits until its group is committed: `Ok(true)` when written,
    /// `Ok(false)` for a nonce that was already used.
    pub(crate) async fn submit(&self, op: Op) -> Result<bool, StoreError> {
        self.enqueue(op).await?.committed().await
    }

    /// Queues one op and returns at once; [`PendingWrite::committed`] waits for its group.
    /// Ops are committed in the order they were queued, so a later op's commit implies the
    /// earlier ones'.
    pub(crate) async fn enqueue(&self, op: Op) -> Result<PendingWrite, StoreError> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Msg::Job(Job { op, reply })).await.is_err() {
            return Err(self.gone());
        }
        Ok(PendingWrite { answer })
    }

    fn gone(&self) -> StoreError {
        if self.closed.load(Ordering::Relaxed) {
            StoreError::Closed
        } else {
            StoreError::WriterStopped
        }
    }

    /// Writes everything already queued, then stops the writer. Later submits get `Closed`.
    pub(crate) async fn shutdown(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    pub(crate) fn stats(&self) -> WriteStats {
        WriteStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            ops: self.counters.ops.load(Ordering::Relaxed),
            fallbacks: self.counters.fallbacks.load(Ordering::Relaxed),
        }
    }
}

async fn run(mut db: Db, mut rx: mpsc::Receiver<Msg>, counters: Arc<Counters>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut acks = Vec::new();
    // After a shutdown message the receiver is closed: recv() still hands out what was queued
    // before it, then None.
    while let Some(msg) = rx.recv().await {
        take(msg, &mut jobs, &mut acks, &mut rx);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(msg) => take(msg, &mut jobs, &mut acks, &mut rx),
                Err(_) => break,
            }
        }
        if !jobs.is_empty() {
            let (ops, replies): (Vec<Op>, Vec<Reply>) =
                jobs.drain(..).map(|j| (j.op, j.reply)).unzip();
            let results = commit_group(&mut db, &ops, &counters).await;
            for (reply, result) in replies.into_iter().zip(results) {
                // A caller that gave up waiting is no error: its write is committed anyway.
                let _ = reply.send(result);
            }
        }
    }
    for ack in acks {
        let _ = ack.send(());
    }
}

fn take(
    msg: Msg,
    jobs: &mut Vec<Job>,
    acks: &mut Vec<oneshot::Sender<()>>,
    rx: &mut mpsc::Receiver<Msg>,
) {
    match msg {
        Msg::Job(job) => jobs.push(job),
        Msg::Shutdown(ack) => {
            rx.close();
            acks.push(ack);
        }
    }
}

enum Failed {
    /// Nothing was committed; writing again is safe.
    BeforeCommit(sqlx::Error),
    /// A counted insert met a taken key; nothing was committed.
    Conflict,
    /// COMMIT itself failed; the outcome is unknown.
    Commit(sqlx::Error),
}

/// Writes `ops` in one transaction and returns one result per op, in order.
async fn commit_group(
    db: &mut Db,
    ops: &[Op],
    counters: &Counters,
) -> Vec<Result<bool, StoreError>> {
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters.ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
    let outcome = match db.own.as_mut() {
        Some(own) => match own.get().await {
            Ok(conn) => in_one_transaction(conn, db.backend, ops).await,
            Err(e) => Err(Failed::BeforeCommit(e)),
        },
        None => match db.pool.acquire().await {
            Ok(mut conn) => in_one_transaction(&mut conn, db.backend, ops).await,
            Err(e) => Err(Failed::BeforeCommit(e)),
        },
    };
    if let (Some(own), Err(Failed::BeforeCommit(e) | Failed::Commit(e))) =
        (db.own.as_mut(), &outcome)
    {
        own.forget_if_broken(e);
    }
    match outcome {
        Ok(results) => results,
        Err(Failed::Commit(e)) => {
            tracing::error!(error = %e, ops = ops.len(), "store: committing a group of writes failed");
            let e = Arc::new(e);
            ops.iter()
                .map(|_| {
                    Err(StoreError::Commit {
                        ops: ops.len(),
                        source: Arc::clone(&e),
                    })
                })
                .collect()
        }
        Err(Failed::BeforeCommit(e)) if ops.len() == 1 => {
            vec![Err(StoreError::query(ops[0].describe(), e))]
        }
        Err(failed) => {
            if let Failed::BeforeCommit(e) = &failed {
                tracing::warn!(error = %e, ops = ops.len(), "store: a grouped write failed; writing each op on its own");
                counters.fallbacks.fetch_add(1, Ordering::Relaxed);
            }
            let mut results = Vec::with_capacity(ops.len());
            for op in ops {
                results.push(alone(db, op).await);
            }
            results
        }
    }
}

async fn in_one_transaction(
    conn: &mut AnyConnection,
    backend: Backend,
    ops: &[Op],
) -> Result<Vec<Result<bool, StoreError>>, Failed> {
    let mut tx = conn.begin().await.map_err(Failed::BeforeCommit)?;
    // On error `tx` is dropped here, which rolls it back.
    let results = apply(&mut tx, backend, ops, Check::Count)
        .await
        .map_err(|e| match e {
            ApplyError::Sql(e) => Failed::BeforeCommit(e),
            ApplyError::Conflict => Failed::Conflict,
        })?;
    tx.commit().await.map_err(Failed::Commit)?;
    Ok(results)
}

/// Writes one op in its own (autocommit) statement, asking which rows went in.
async fn alone(db: &mut Db, op: &Op) -> Result<bool, StoreError> {
    let describe = |e| StoreError::query(op.describe(), e);
    let one = std::slice::from_ref(op);
    let results = match db.own.as_mut() {
        Some(own) => {
            let conn = own.get().await.map_err(describe)?;
            apply(conn, db.backend, one, Check::Returning).await
        }
        None => {
            let mut conn = db.pool.acquire().await.map_err(describe)?;
            apply(&mut conn, db.backend, one, Check::Returning).await
        }
    };
    let results = results.map_err(|e| match e {
        ApplyError::Sql(e) => describe(e),
        ApplyError::Conflict => StoreError::Conflict {
            what: op.describe(),
        },
    })?;
    results
        .into_iter()
        .next()
        .unwrap_or_else(|| op.when_not_inserted())
}

/// How an insert learns which rows went in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// `RETURNING` the keys: exact, but every row comes back through the driver.
    Returning,
    /// Only the count, where a taken key is rare: one answer per statement. A short count is
    /// [`ApplyError::Conflict`].
    Count,
}

/// Runs the inserts of `ops`, grouped by table, on `conn`. Each op's result starts as "not
/// inserted" and flips when its key comes back from `RETURNING`; a key that appears twice in
/// one group is inserted once, for the first op that names it.
async fn apply(
    conn: &mut AnyConnection,
    backend: Backend,
    ops: &[Op],
    check: Check,
) -> Result<Vec<Result<bool, StoreError>>, ApplyError> {
    let mut results: Vec<Result<bool, StoreError>> =
        ops.iter().map(Op::when_not_inserted).collect();

    let mut nonce_first: HashMap<(&str, &str), usize> = HashMap::new();
    let mut task_first: HashMap<&str, usize> = HashMap::new();
    let mut event_first: HashMap<i64, usize> = HashMap::new();
    let (mut nonces, mut tasks, mut events) = (Vec::new(), Vec::new(), Vec::new());
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Nonce(n) => {
                if let Entry::Vacant(slot) =
                    nonce_first.entry((n.key_id.as_str(), n.nonce.as_str()))
                {
                    slot.insert(i);
                    nonces.push(n);
                }
            }
            Op::Task(t) => {
                if let Entry::Vacant(slot) = task_first.entry(t.id.as_str()) {
                    slot.insert(i);
                    tasks.push(&**t);
                }
            }
            Op::Event(e) => {
                if let Entry::Vacant(slot) = event_first.entry(e.id) {
                    slot.insert(i);
                    events.push(e);
                }
            }
        }
    }

    // No conflict target: the key is (key_id, nonce) on PostgreSQL and (ts, key_id, nonce) on
    // SQLite (see migration 0003). On PostgreSQL, the authority on replays, a taken nonce is an
    // expected answer, so it is always asked for by key.
    let nonce_check = if backend == Backend::Sqlite {
        check
    } else {
        Check::Returning
    };
    let nonce = Table {
        head: "INSERT INTO nonces (key_id, nonce, ts) VALUES ",
        columns: 3,
        tail: " ON CONFLICT DO NOTHING",
        returning: " RETURNING key_id, nonce",
    };
    let rows = nonce
        .insert(conn, backend, nonce_check, &nonces, bind_nonce)
        .await?;
    mark(&mut results, nonce_first.values().copied(), rows, |row| {
        let (key, nonce): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        Ok(nonce_first.get(&(key.as_str(), nonce.as_str())).copied())
    })?;

    let task = Table {
        head: concat!("INSERT INTO gateway_tasks (", task_columns!(), ") VALUES "),
        columns: 16,
        tail: " ON CONFLICT (id) DO NOTHING",
        returning: " RETURNING id",
    };
    let rows = task.insert(conn, backend, check, &tasks, bind_task).await?;
    mark(&mut results, task_first.values().copied(), rows, |row| {
        let id: String = row.try_get(0)?;
        Ok(task_first.get(id.as_str()).copied())
    })?;

    let event = Table {
        head: concat!("INSERT INTO events (", event_columns!(), ") VALUES "),
        columns: 6,
        tail: " ON CONFLICT (id) DO NOTHING",
        returning: " RETURNING id",
    };
    let rows = event
        .insert(conn, backend, check, &events, bind_event)
        .await?;
    mark(&mut results, event_first.values().copied(), rows, |row| {
        let id: i64 = row.try_get(0)?;
        Ok(event_first.get(&id).copied())
    })?;
    Ok(results)
}

/// One table's grouped insert.
struct Table {
    head: &'static str,
    columns: usize,
    /// The conflict clause.
    tail: &'static str,
    /// What `RETURNING` names: the key that maps a row back to its op.
    returning: &'static str,
}

impl Table {
    /// Inserts `rows`; with [`Check::Count`] all must go in (`None` back), with
    /// [`Check::Returning`] the keys that went in come back.
    async fn insert<T>(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
        check: Check,
        rows: &[&T],
        bind: for<'q> fn(AnyQuery<'q>, &T) -> AnyQuery<'q>,
    ) -> Result<Option<Vec<AnyRow>>, ApplyError> {
        match check {
            Check::Count => {
                counted(
                    conn,
                    backend,
                    rows,
                    self.head,
                    self.columns,
                    self.tail,
                    bind,
                )
                .await?;
                Ok(None)
            }
            Check::Returning => {
                let tail = format!("{}{}", self.tail, self.returning);
                let returned =
                    insert_returning(conn, backend, rows, self.head, self.columns, &tail, bind)
                        .await?;
                Ok(Some(returned))
            }
        }
    }
}

/// Marks the ops whose rows went in: every op of `all` when the insert only counted (`None`),
/// else those `index` finds for a returned key.
fn mark(
    results: &mut [Result<bool, StoreError>],
    all: impl Iterator<Item = usize>,
    returned: Option<Vec<AnyRow>>,
    index: impl Fn(&AnyRow) -> Result<Option<usize>, sqlx::Error>,
) -> Result<(), ApplyError> {
    match returned {
        None => all.for_each(|i| results[i] = Ok(true)),
        Some(rows) => {
            for row in rows {
                if let Some(i) = index(&row)? {
                    results[i] = Ok(true);
                }
            }
        }
    }
    Ok(())
}

/// Multi-row insert of `rows` that only counts: every row must go in, else
/// [`ApplyError::Conflict`] (the caller rolls back and asks row by row).
async fn counted<T>(
    conn: &mut AnyConnection,
    backend: Backend,
    rows: &[&T],
    head: &str,
    columns: usize,
    tail: &str,
    bind: for<'q> fn(AnyQuery<'q>, &T) -> AnyQuery<'q>,
) -> Result<(), ApplyError> {
    let mut written = 0u64;
    for chunk in chunks(rows) {
        let query = bound(
            values_sql(backend, head, columns, chunk.len(), tail),
            chunk,
            bind,
        );
        written += query.execute(&mut *conn).await?.rows_affected();
    }
    if written == rows.len() as u64 {
        Ok(())
    } else {
        Err(ApplyError::Conflict)
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, Any, AnyArguments>;

/// Multi-row insert of `rows` with `RETURNING`; returns the returned rows.
async fn insert_returning<T>(
    conn: &mut AnyConnection,
    backend: Backend,
    rows: &[&T],
    head: &str,
    columns: usize,
    tail: &str,
    bind: for<'q> fn(AnyQuery<'q>, &T) -> AnyQuery<'q>,
) -> Result<Vec<AnyRow>, sqlx::Error> {
    let mut returned = Vec::with_capacity(rows.len());
    for chunk in chunks(rows) {
        let query = bound(
            values_sql(backend, head, columns, chunk.len(), tail),
            chunk,
            bind,
        );
        returned.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(returned)
}

/// `rows` in chunks whose sizes are powers of two (at most [`MAX_BATCH`]), so each table needs
/// at most ten distinct statements and they all stay in the prepared-statement cache.
fn chunks<'a, T>(mut rest: &'a [&'a T]) -> impl Iterator<Item = &'a [&'a T]> {
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = (1usize << rest.len().ilog2()).min(MAX_BATCH);
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// `sql` with every row of `chunk` bound in order.
fn bound<'q, T>(
    sql: String,
    chunk: &[&T],
    bind: for<'b> fn(AnyQuery<'b>, &T) -> AnyQuery<'b>,
) -> AnyQuery<'q> {
    chunk
        .iter()
        .fold(sqlx::query(AssertSqlSafe(sql)), |q, row| bind(q, row))
}

/// `head ($1,$2),($3,$4) tail` for `rows` rows of `columns` placeholders (`?` on SQLite, see
/// below). Built from constants only; the values are always bound.
fn values_sql(backend: Backend, head: &str, columns: usize, rows: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * (columns * 6 + 3));
    sql.push_str(head);
    let mut n = 0;
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ",(" });
        for c in 0..columns {
            n += 1;
            if c > 0 {
                sql.push(',');
            }
            match backend {
                // SQLite looks up a named parameter (`$7`) by walking a list of all names, so
                // binding thousands of `$N` costs O(n²); anonymous `?`s bind in order for free.
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    let _ = write!(sql, "${n}");
                }
            }
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

fn bind_nonce<'q>(q: AnyQuery<'q>, n: &NonceRow) -> AnyQuery<'q> {
    q.bind(n.key_id.clone()).bind(n.nonce.clone()).bind(n.ts)
}

fn bind_task<'q>(q: AnyQuery<'q>, t: &TaskRow) -> AnyQuery<'q> {
    q.bind(t.id.clone())
        .bind(t.key_id.clone())
        .bind(t.intent.clone())
        .bind(t.args_json.clone())
        .bind(t.plan_json.clone())
        .bind(t.plan_digest.clone())
        .bind(t.risk.clone())
        .bind(t.state.clone())
        .bind(t.token_hash.clone())
        .bind(t.expires_at)
        .bind(t.approved_at)
        .bind(t.approved_by.clone())
        .bind(t.token_used_at)
        .bind(t.result_json.clone())
        .bind(t.created_at)
        .bind(t.updated_at)
}

fn bind_event<'q>(q: AnyQuery<'q>, e: &EventRow) -> AnyQuery<'q> {
    q.bind(e.id)
        .bind(e.task_id.clone())
        .bind(e.key_id.clone())
        .bind(e.kind.clone())
        .bind(e.data_json.clone())
        .bind(e.ts_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    fn nonce(key_id: &str, nonce: &str) -> Op {
        Op::Nonce(NonceRow {
            key_id: key_id.to_owned(),
            nonce: nonce.to_owned(),
            ts: 100,
        })
    }

    fn task(id: &str) -> Op {
        Op::Task(Box::new(TaskRow {
            id: id.to_owned(),
            key_id: "k".to_owned(),
            intent: "screenshot".to_owned(),
            args_json: "{}".to_owned(),
            plan_json: "[]".to_owned(),
            plan_digest: "d".to_owned(),
            risk: "low".to_owned(),
            state: "planned".to_owned(),
            token_hash: "h".to_owned(),
            expires_at: 1,
            approved_at: None,
            approved_by: None,
            token_used_at: None,
            result_json: None,
            created_at: 1,
            updated_at: 1,
        }))
    }

    fn event(id: i64) -> Op {
        Op::Event(EventRow {
            id,
            task_id: "t".to_owned(),
            key_id: "k".to_owned(),
            kind: "step.output".to_owned(),
            data_json: "{}".to_owned(),
            ts_ms: 1,
        })
    }

    /// Queues `ops` before the writer runs, so they are certain to form one group, then runs
    /// the writer until the queue is empty and returns each op's answer and the counters.
    async fn run_queued(
        store: &Store,
        ops: Vec<Op>,
    ) -> (Vec<Result<bool, StoreError>>, WriteStats) {
        let (tx, rx) = mpsc::channel(ops.len() + 1);
        let mut answers = Vec::new();
        for op in ops {
            let (reply, answer) = oneshot::channel();
            tx.try_send(Msg::Job(Job { op, reply })).unwrap();
            answers.push(answer);
        }
        drop(tx);
        let counters = Arc::new(Counters::default());
        let db = Db {
            pool: store.inner.pool.clone(),
            backend: store.inner.backend,
            own: None,
        };
        run(db, rx, Arc::clone(&counters)).await;
        let mut results = Vec::new();
        for answer in answers {
            results.push(answer.await.unwrap());
        }
        let stats = Writer {
            tx: mpsc::channel(1).0,
            counters,
            closed: AtomicBool::new(false),
        }
        .stats();
        (results, stats)
    }

    #[tokio::test]
    async fn queued_ops_share_one_commit_and_get_their_own_answers() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let ops = vec![
            nonce("k1", "a"),
            nonce("k1", "b"),
            nonce("k1", "a"),
            nonce("k2", "a"),
            task("t1"),
            task("t1"),
            event(7),
            event(8),
            event(7),
        ];
        let (results, stats) = run_queued(&store, ops).await;
        assert!(matches!(results[0], Ok(true)));
        assert!(matches!(results[1], Ok(true)));
        assert!(
            matches!(results[2], Ok(false)),
            "same key and nonce in one group"
        );
        assert!(
            matches!(results[3], Ok(true)),
            "another key may use the same nonce"
        );
        assert!(matches!(results[4], Ok(true)));
        assert!(matches!(&results[5], Err(StoreError::Conflict { what }) if what == "task \"t1\""));
        assert!(matches!(results[6], Ok(true)));
        assert!(matches!(results[7], Ok(true)));
        assert!(matches!(&results[8], Err(StoreError::Conflict { what }) if what == "event 7"));
        assert_eq!(
            stats,
            WriteStats {
                batches: 1,
                ops: 9,
                fallbacks: 0
            }
        );
        assert_eq!(store.nonces_since(0).await.unwrap().len(), 3);
        assert_eq!(store.max_event_id().await.unwrap(), 8);
    }

    #[tokio::test]
    async fn a_failing_op_fails_alone() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        sqlx::raw_sql("DROP TABLE events")
            .execute(&store.inner.pool)
            .await
            .unwrap();
        let (results, stats) =
            run_queued(&store, vec![nonce("k", "1"), event(1), nonce("k", "2")]).await;
        assert!(matches!(results[0], Ok(true)), "{:?}", results[0]);
        let err = results[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("append_event(event 1) failed"), "{err}");
        assert!(err.contains("events"), "names the missing table: {err}");
        assert!(matches!(results[2], Ok(true)), "{:?}", results[2]);
        assert_eq!(stats.fallbacks, 1);
        let stored: Vec<String> = store
            .nonces_since(0)
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.nonce)
            .collect();
        assert_eq!(stored, ["1", "2"]);
    }

    #[tokio::test]
    async fn a_full_group_is_split_into_statements_that_cover_every_op() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        // 511 = 256 + 128 + 64 + 32 + 16 + 8 + 4 + 2 + 1: every chunk size once.
        let ops: Vec<Op> = (0..511).map(|i| nonce("k", &i.to_string())).collect();
        let (results, stats) = run_queued(&store, ops).await;
        assert!(results.iter().all(|r| matches!(r, Ok(true))));
        assert_eq!(stats.batches, 1);
        assert_eq!(store.nonces_since(0).await.unwrap().len(), 511);
        // More than MAX_BATCH queued: two groups.
        let ops: Vec<Op> = (0..600).map(|i| nonce("k", &i.to_string())).collect();
        let (results, stats) = run_queued(&store, ops).await;
        assert_eq!(results.iter().filter(|r| matches!(r, Ok(true))).count(), 89);
        assert_eq!(
            results.iter().filter(|r| matches!(r, Ok(false))).count(),
            511
        );
        assert_eq!(stats.batches, 2);
    }

    #[test]
    fn values_sql_numbers_placeholders_row_by_row() {
        assert_eq!(
            values_sql(
                Backend::Postgres,
                "INSERT INTO t (a, b) VALUES ",
                2,
                3,
                " RETURNING a"
            ),
            "INSERT INTO t (a, b) VALUES ($1,$2),($3,$4),($5,$6) RETURNING a"
        );
        assert_eq!(
            values_sql(Backend::Sqlite, "INSERT INTO t (a) VALUES ", 1, 2, ""),
            "INSERT INTO t (a) VALUES (?),(?)"
        );
    }
}
