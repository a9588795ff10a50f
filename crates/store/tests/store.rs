//! The store against real databases: a SQLite file in a temporary folder, and a throwaway
//! PostgreSQL server (tests/common/pg.rs). Every scenario runs on both backends; the
//! PostgreSQL half prints a reason and passes when PostgreSQL is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use bytebot_store::{ArtifactRow, Backend, EventRow, Store, StoreError, TaskRow};
use common::pg::PgServer;

/// A database for one test, and what keeps it alive.
struct TestDb {
    url: String,
    backend: Backend,
    _keep: Keep,
}

#[allow(dead_code)] // held only so it is dropped (folder deleted, server stopped) at the end
enum Keep {
    Dir(tempfile::TempDir),
    Pg(PgServer),
}

fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = bytebot_store::sqlite_url(&dir.path().join("store.db"));
    TestDb {
        url,
        backend: Backend::Sqlite,
        _keep: Keep::Dir(dir),
    }
}

/// A fresh database on a server of its own; `None` (after printing why) when PostgreSQL is
/// not installed.
async fn postgres_db() -> Option<TestDb> {
    let started = tokio::task::spawn_blocking(|| {
        PgServer::start().map(|server| {
            let url = server.create_database();
            (server, url)
        })
    })
    .await
    .unwrap();
    match started {
        Ok((server, url)) => Some(TestDb {
            url,
            backend: Backend::Postgres,
            _keep: Keep::Pg(server),
        }),
        Err(reason) => {
            println!("{reason}");
            None
        }
    }
}

/// Makes `<scenario>::sqlite` and `<scenario>::postgres` tests from `async fn scenario(TestDb)`.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$scenario(super::sqlite_db()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(db) = super::postgres_db().await else { return };
                super::$scenario(db).await;
            }
        }
    )*};
}

on_both_backends!(
    survives_close_and_reopen,
    nonces_are_single_use_per_key,
    group_commit_answers_every_caller,
    claim_is_exclusive,
    task_lifecycle,
    list_tasks_newest_first,
    events_after_filters,
    artifacts_round_trip,
    a_failing_write_fails_alone,
);

fn task(id: &str, key_id: &str, created_at: i64) -> TaskRow {
    TaskRow {
        id: id.to_owned(),
        key_id: key_id.to_owned(),
        intent: "screenshot".to_owned(),
        args_json: r#"{"format":"png"}"#.to_owned(),
        plan_json: r#"[{"summary":"take a screenshot"}]"#.to_owned(),
        plan_digest: format!("digest-{id}"),
        risk: "low".to_owned(),
        state: "planned".to_owned(),
        token_hash: format!("hash-{id}"),
        expires_at: created_at + 600,
        approved_at: None,
        approved_by: None,
        token_used_at: None,
        result_json: None,
        created_at,
        updated_at: created_at,
    }
}

fn event(id: i64, task_id: &str, key_id: &str) -> EventRow {
    EventRow {
        id,
        task_id: task_id.to_owned(),
        key_id: key_id.to_owned(),
        kind: "step.output".to_owned(),
        data_json: format!(r#"{{"n":{id}}}"#),
        ts_ms: 1_700_000_000_000 + id,
    }
}

fn artifact(id: &str, task_id: &str, created_at: i64) -> ArtifactRow {
    ArtifactRow {
        id: id.to_owned(),
        task_id: task_id.to_owned(),
        key_id: "k1".to_owned(),
        kind: "screenshot".to_owned(),
        media_type: "image/png".to_owned(),
        bytes: 12345,
        sha256: format!("{id:0>64}"),
        path: format!("/var/lib/bytebot/artifacts/{id}.png"),
        created_at,
    }
}

async fn survives_close_and_reopen(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    assert_eq!(store.backend(), db.backend);
    store.ping().await.unwrap();
    assert!(store.insert_nonce("k1", "n1", 1000).await.unwrap());
    let t1 = task("t1", "k1", 1000);
    store.insert_task(&t1).await.unwrap();
    store.append_event(&event(1, "t1", "k1")).await.unwrap();
    store
        .insert_artifact(&artifact("a1", "t1", 1000))
        .await
        .unwrap();
    store.close().await;

    // A closed store (and every clone of it) refuses work with a clear error.
    let clone = store.clone();
    assert!(matches!(
        clone.insert_nonce("k1", "n2", 1).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        clone.get_task("t1").await,
        Err(StoreError::Closed)
    ));
    assert!(clone.ping().await.is_err());

    // Opening again runs the migrations again (nothing to do) and finds every row.
    let store = Store::open(&db.url).await.unwrap();
    assert!(
        !store.insert_nonce("k1", "n1", 1000).await.unwrap(),
        "the nonce survived"
    );
    assert_eq!(store.get_task("t1").await.unwrap(), Some(t1));
    assert_eq!(
        store.events_after(0, None, None, 10).await.unwrap(),
        [event(1, "t1", "k1")]
    );
    assert_eq!(store.max_event_id().await.unwrap(), 1);
    assert_eq!(
        store.get_artifact("a1").await.unwrap(),
        Some(artifact("a1", "t1", 1000))
    );
    store.close().await;
}

async fn nonces_are_single_use_per_key(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    assert!(store.insert_nonce("k1", "n1", 100).await.unwrap());
    assert!(
        !store.insert_nonce("k1", "n1", 100).await.unwrap(),
        "replay"
    );
    assert!(
        store.insert_nonce("k2", "n1", 100).await.unwrap(),
        "other key, same nonce"
    );
    assert!(store.insert_nonce("k1", "n2", 200).await.unwrap());

    let recent = store.nonces_since(150).await.unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(
        (
            recent[0].key_id.as_str(),
            recent[0].nonce.as_str(),
            recent[0].ts
        ),
        ("k1", "n2", 200)
    );
    let all = store.nonces_since(0).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(
        all.windows(2).all(|w| w[0].ts <= w[1].ts),
        "oldest first: {all:?}"
    );

    assert_eq!(store.prune_nonces(150).await.unwrap(), 2);
    assert_eq!(store.nonces_since(0).await.unwrap().len(), 1);
    assert!(
        store.insert_nonce("k1", "n1", 300).await.unwrap(),
        "pruned nonces are forgotten"
    );
    // A nonce reused under another timestamp: PostgreSQL is the authority on replays and
    // refuses it; SQLite keys its nonce log by time (the owning gateway's cache refuses it).
    assert_eq!(
        store.insert_nonce("k1", "n1", 999).await.unwrap(),
        store.backend() == Backend::Sqlite,
        "replay with another time"
    );
    store.close().await;
}

/// 2,000 concurrent nonce inserts (some repeated inside the burst, some already stored) plus
/// tasks and events in the same burst: every caller gets its own, correct answer.
async fn group_commit_answers_every_caller(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    // Already used before the burst (with the same timestamp, as a replay has): n1400..n1599.
    for i in 1400..1600 {
        assert!(store.insert_nonce("k", &format!("n{i}"), 2).await.unwrap());
    }
    let before = store.write_stats();

    // Nonces n0..n1499; n0..n499 are sent twice.
    let mut nonce_calls = Vec::new();
    for i in 0..2000 {
        let id = i % 1500;
        let store = store.clone();
        nonce_calls.push(tokio::spawn(async move {
            (
                id,
                store.insert_nonce("k", &format!("n{id}"), 2).await.unwrap(),
            )
        }));
    }
    // Tasks t0..t179; t0..t19 are sent twice.
    let mut task_calls = Vec::new();
    for i in 0..200 {
        let id = format!("t{}", i % 180);
        let store = store.clone();
        task_calls.push(tokio::spawn(async move {
            let result = store.insert_task(&task(&id, "k", 5)).await;
            (id, result)
        }));
    }
    let mut event_calls = Vec::new();
    for id in 1..=300 {
        let store = store.clone();
        event_calls.push(tokio::spawn(async move {
            store.append_event(&event(id, "t0", "k")).await
        }));
    }

    let mut answers: HashMap<i64, Vec<bool>> = HashMap::new();
    for call in nonce_calls {
        let (id, new) = call.await.unwrap();
        answers.entry(id).or_default().push(new);
    }
    assert_eq!(answers.len(), 1500);
    for (id, got) in &answers {
        assert_eq!(got.len(), if *id < 500 { 2 } else { 1 }, "n{id}");
        let expected_new = if *id >= 1400 { 0 } else { 1 };
        assert_eq!(
            got.iter().filter(|n| **n).count(),
            expected_new,
            "n{id}: {got:?}"
        );
    }

    let mut task_results: HashMap<String, Vec<Result<(), StoreError>>> = HashMap::new();
    for call in task_calls {
        let (id, result) = call.await.unwrap();
        task_results.entry(id).or_default().push(result);
    }
    assert_eq!(task_results.len(), 180);
    for (id, results) in &task_results {
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{id}: {results:?}"
        );
        for r in results.iter().filter(|r| r.is_err()) {
            assert!(
                matches!(r, Err(StoreError::Conflict { what }) if *what == format!("task {id:?}")),
                "{r:?}"
            );
        }
    }
    for call in event_calls {
        call.await.unwrap().unwrap();
    }

    assert_eq!(store.nonces_since(0).await.unwrap().len(), 1600);
    assert_eq!(store.list_tasks(Some("k"), 1000).await.unwrap().len(), 180);
    assert_eq!(
        store.events_after(0, None, None, 1000).await.unwrap().len(),
        300
    );
    let stats = store.write_stats();
    assert_eq!(stats.ops - before.ops, 2000 + 200 + 300);
    assert!(stats.batches > before.batches);
    println!(
        "{:?}: {} writes in {} groups",
        db.backend,
        stats.ops - before.ops,
        stats.batches - before.batches
    );
    store.close().await;
}

async fn claim_is_exclusive(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    store.insert_task(&task("t1", "k1", 1000)).await.unwrap();
    let claims: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.claim_task("t1", 2000).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for claim in claims {
        if claim.await.unwrap() {
            won += 1;
        }
    }
    assert_eq!(won, 1, "exactly one of 50 concurrent claims wins");

    let t1 = store.get_task("t1").await.unwrap().unwrap();
    assert_eq!(t1.state, "running");
    assert_eq!(t1.token_used_at, Some(2000));
    assert_eq!(t1.updated_at, 2000);
    assert!(
        !store.claim_task("t1", 3000).await.unwrap(),
        "the token is single-use"
    );
    assert!(!store.claim_task("missing", 3000).await.unwrap());
    store.close().await;
}

async fn task_lifecycle(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    assert_eq!(store.get_task("t1").await.unwrap(), None);
    let t1 = task("t1", "k1", 1000);
    store.insert_task(&t1).await.unwrap();
    let err = store.insert_task(&t1).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(err.to_string(), r#"store: task "t1" already exists"#);

    // Approval only while planned.
    assert!(store.approve_task("t1", "alice", 1010).await.unwrap());
    let got = store.get_task("t1").await.unwrap().unwrap();
    assert_eq!(
        (got.approved_at, got.approved_by.as_deref()),
        (Some(1010), Some("alice"))
    );
    assert_eq!((got.state.as_str(), got.updated_at), ("planned", 1010));
    assert!(!store.approve_task("missing", "alice", 1010).await.unwrap());
    assert!(store.claim_task("t1", 1020).await.unwrap());
    assert!(
        !store.approve_task("t1", "bob", 1030).await.unwrap(),
        "running: too late"
    );

    // Result kept when a later state change gives none.
    store
        .set_task_state("t1", "succeeded", Some(r#"{"ok":true}"#), 1040)
        .await
        .unwrap();
    store
        .set_task_state("t1", "succeeded", None, 1050)
        .await
        .unwrap();
    let got = store.get_task("t1").await.unwrap().unwrap();
    assert_eq!(got.state, "succeeded");
    assert_eq!(got.result_json.as_deref(), Some(r#"{"ok":true}"#));
    assert_eq!(got.updated_at, 1050);
    assert_eq!(got.approved_by.as_deref(), Some("alice"));

    // Cancel: finished tasks stay finished; planned and running ones are cancelled.
    assert_eq!(
        store.cancel_task("t1", 1060).await.unwrap().as_deref(),
        Some("succeeded")
    );
    store.insert_task(&task("t2", "k1", 1000)).await.unwrap();
    assert_eq!(
        store.cancel_task("t2", 1070).await.unwrap().as_deref(),
        Some("cancelled")
    );
    assert!(
        !store.claim_task("t2", 1080).await.unwrap(),
        "a cancelled task cannot run"
    );
    store.insert_task(&task("t3", "k1", 1000)).await.unwrap();
    assert!(store.claim_task("t3", 1080).await.unwrap());
    assert_eq!(
        store.cancel_task("t3", 1090).await.unwrap().as_deref(),
        Some("cancelled")
    );
    let t3 = store.get_task("t3").await.unwrap().unwrap();
    assert_eq!((t3.state.as_str(), t3.updated_at), ("cancelled", 1090));
    assert_eq!(store.cancel_task("missing", 1090).await.unwrap(), None);

    let err = store
        .set_task_state("missing", "failed", None, 1100)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains(r#"task "missing""#), "{err}");
    store.close().await;
}

async fn list_tasks_newest_first(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    for (id, key, created) in [
        ("a", "k1", 1),
        ("b", "k1", 3),
        ("c", "k2", 2),
        ("d", "k1", 2),
        ("e", "k1", 5),
    ] {
        store.insert_task(&task(id, key, created)).await.unwrap();
    }
    let ids = |tasks: Vec<TaskRow>| tasks.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_tasks(Some("k1"), 10).await.unwrap()),
        ["e", "b", "d", "a"]
    );
    assert_eq!(
        ids(store.list_tasks(Some("k1"), 2).await.unwrap()),
        ["e", "b"]
    );
    assert_eq!(
        ids(store.list_tasks(None, 10).await.unwrap()),
        ["e", "b", "d", "c", "a"]
    );
    assert!(store.list_tasks(Some("k3"), 10).await.unwrap().is_empty());
    assert!(store.list_tasks(None, 0).await.unwrap().is_empty());
    assert!(store.list_tasks(None, -1).await.unwrap().is_empty());
    let full = store.list_tasks(Some("k2"), 1).await.unwrap();
    assert_eq!(full, [task("c", "k2", 2)]);
    store.close().await;
}

async fn events_after_filters(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    assert_eq!(store.max_event_id().await.unwrap(), 0);
    let events: Vec<EventRow> = (1..=12)
        .map(|id| event(id, &format!("t{}", id % 3), &format!("k{}", id % 2)))
        .collect();
    // Appended out of order: reads are by id, not by arrival.
    for e in events.iter().rev() {
        store.append_event(e).await.unwrap();
    }
    let ids = |rows: Vec<EventRow>| rows.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let expect = |after: i64, task: Option<&str>, key: Option<&str>, limit: usize| {
        events
            .iter()
            .filter(|e| e.id > after)
            .filter(|e| task.is_none_or(|t| e.task_id == t))
            .filter(|e| key.is_none_or(|k| e.key_id == k))
            .map(|e| e.id)
            .take(limit)
            .collect::<Vec<_>>()
    };

    assert_eq!(
        store.events_after(0, None, None, 100).await.unwrap(),
        events
    );
    assert_eq!(
        ids(store.events_after(5, None, None, 3).await.unwrap()),
        [6, 7, 8]
    );
    assert_eq!(
        ids(store.events_after(0, Some("t1"), None, 100).await.unwrap()),
        [1, 4, 7, 10]
    );
    assert_eq!(
        ids(store.events_after(4, Some("t1"), None, 100).await.unwrap()),
        [7, 10]
    );
    assert_eq!(
        ids(store
            .events_after(0, Some("t1"), Some("k0"), 100)
            .await
            .unwrap()),
        [4, 10]
    );
    for (after, task, key, limit) in [
        (0, None, Some("k0"), 100),
        (3, None, Some("k1"), 2),
        (2, Some("t2"), Some("k1"), 100),
        (0, Some("t0"), None, 1),
        (12, None, None, 100),
    ] {
        assert_eq!(
            ids(store
                .events_after(after, task, key, limit as i64)
                .await
                .unwrap()),
            expect(after, task, key, limit),
            "after {after}, task {task:?}, key {key:?}, limit {limit}"
        );
    }
    assert!(
        store
            .events_after(0, None, None, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .events_after(0, Some("t9"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.max_event_id().await.unwrap(), 12);

    let err = store.append_event(&event(5, "t0", "k0")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(
        store.events_after(4, None, None, 1).await.unwrap(),
        [events[4].clone()]
    );
    store.close().await;
}

async fn artifacts_round_trip(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let a1 = artifact("a1", "t1", 5);
    let a2 = artifact("a2", "t1", 3);
    let a3 = artifact("a3", "t2", 4);
    for a in [&a1, &a2, &a3] {
        store.insert_artifact(a).await.unwrap();
    }
    assert_eq!(store.get_artifact("a1").await.unwrap(), Some(a1.clone()));
    assert_eq!(store.get_artifact("nope").await.unwrap(), None);
    assert_eq!(store.task_artifacts("t1").await.unwrap(), [a2, a1.clone()]);
    assert_eq!(store.task_artifacts("t2").await.unwrap(), [a3]);
    assert!(store.task_artifacts("t3").await.unwrap().is_empty());
    let err = store.insert_artifact(&a1).await.unwrap_err();
    assert_eq!(err.to_string(), r#"store: artifact "a1" already exists"#);
    store.close().await;
}

/// A write that fails for a reason other than a duplicate key (here: its table is gone) fails
/// alone; the writes grouped with it are committed.
async fn a_failing_write_fails_alone(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    sqlx::any::install_default_drivers();
    let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
    sqlx::raw_sql("DROP TABLE events")
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;

    let mut nonces = Vec::new();
    let mut events = Vec::new();
    for i in 0..200 {
        let s = store.clone();
        nonces.push(tokio::spawn(async move {
            s.insert_nonce("k", &format!("n{i}"), 1).await
        }));
        if i % 20 == 0 {
            let store = store.clone();
            events.push(tokio::spawn(async move {
                store.append_event(&event(i, "t", "k")).await
            }));
        }
    }
    for call in nonces {
        assert!(call.await.unwrap().unwrap());
    }
    for call in events {
        let err = call.await.unwrap().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Query { .. }), "{msg}");
        assert!(
            msg.contains("append_event(event ") && msg.contains("events"),
            "{msg}"
        );
    }
    assert_eq!(store.nonces_since(0).await.unwrap().len(), 200);
    assert!(
        store.insert_nonce("k", "after", 1).await.unwrap(),
        "the writer carries on"
    );
    store.close().await;
}

// SQLite only.

#[tokio::test]
async fn sqlite_file_is_created_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    assert!(!path.exists());
    let url = bytebot_store::sqlite_url(&path);
    let store = Store::open(&url).await.unwrap();
    assert!(path.exists());
    assert!(store.insert_nonce("k", "n", 1).await.unwrap());

    sqlx::any::install_default_drivers();
    let raw = sqlx::AnyPool::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    raw.close().await;
    store.close().await;
}

#[tokio::test]
async fn sqlite_memory_database_works() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    let other = store.clone();
    let (a, b) = tokio::join!(
        store.insert_nonce("k", "n", 1),
        other.insert_nonce("k", "n", 1)
    );
    assert_eq!([a.unwrap(), b.unwrap()].iter().filter(|n| **n).count(), 1);
    store.insert_task(&task("t1", "k", 1)).await.unwrap();
    assert!(other.claim_task("t1", 2).await.unwrap());
    assert_eq!(
        store.get_task("t1").await.unwrap().unwrap().state,
        "running"
    );
    store.close().await;
}

#[tokio::test]
async fn sqlite_bad_paths_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("no-such-folder").join("store.db");
    let err = Store::open(&bytebot_store::sqlite_url(&missing))
        .await
        .unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, StoreError::Open { .. }), "{msg}");
    assert!(
        msg.contains(&missing.display().to_string()),
        "names the file: {msg}"
    );
    assert!(
        msg.contains("check that the folder exists"),
        "says what to check: {msg}"
    );

    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(
        &corrupt,
        b"this is not a SQLite database, just text\n".repeat(200),
    )
    .unwrap();
    let err = Store::open(&bytebot_store::sqlite_url(&corrupt))
        .await
        .unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(
        msg.contains(&corrupt.display().to_string()),
        "names the file: {msg}"
    );
    assert!(msg.contains("not a database"), "says what is wrong: {msg}");

    let folder = dir.path().join("a-folder");
    std::fs::create_dir(&folder).unwrap();
    let err = Store::open(&bytebot_store::sqlite_url(&folder))
        .await
        .unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(
        msg.contains(&folder.display().to_string()),
        "names the path: {msg}"
    );

    // Not writable even for root.
    let err = Store::open("sqlite:/proc/bytebot-store-test.db")
        .await
        .unwrap_err();
    println!("{err}");
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
}

// Either backend.

#[tokio::test]
async fn unsupported_url_is_refused() {
    let err = Store::open("mysql://root:secret@localhost/db")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::UnsupportedUrl { .. }), "{msg}");
    assert!(
        msg.contains("sqlite:/path/to/file.db"),
        "says what works: {msg}"
    );
    assert!(!msg.contains("secret"), "hides the password: {msg}");
}

#[tokio::test]
async fn unreachable_postgres_gives_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://postgres:secret@localhost/nodb?host={}&port=5999",
        dir.path().display()
    );
    let err = Store::open(&url).await.unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, StoreError::Open { .. }), "{msg}");
    assert!(msg.contains("check that the server runs"), "{msg}");
    assert!(!msg.contains("secret"), "hides the password: {msg}");
}
