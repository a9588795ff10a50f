//! The agent's persistence against real databases: tasks, the queue, messages, summaries,
//! events, files, usage and deletion, each scenario on a SQLite file and on a throwaway
//! PostgreSQL server (the PostgreSQL half prints a reason and passes when PostgreSQL is not
//! installed). The blob store is tested on a local folder and in memory; there is no S3
//! server here, so S3 is only checked to build its client (src/blobs.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytebot_protocol::task::{Control, Priority, TaskStatus, TaskType};
use bytebot_store::{
    AgentStoreError, BlobError, Blobs, NewAgentTask, NewTaskFile, NewUsage, Role, Store,
    StoreError, TaskListQuery, task_blob_prefix,
};
use common::db::TestDb;
use serde_json::json;

/// Makes `<scenario>::sqlite` and `<scenario>::postgres` tests from `async fn scenario(TestDb)`.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$scenario(crate::common::db::sqlite_db()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(db) = crate::common::db::postgres_db().await else { return };
                super::$scenario(db).await;
            }
        }
    )*};
}

on_both_backends!(
    tasks_round_trip,
    status_changes_compare_and_set,
    list_filters_searches_and_pages,
    claims_go_by_priority_then_due_time,
    an_expired_lease_passes_the_task_on_and_fences_the_old_worker,
    messages_and_summaries,
    events_resume_after_an_id,
    files_and_usage,
    deleting_a_task_removes_its_rows_and_names_its_blobs,
    four_workers_complete_a_thousand_tasks_exactly_once,
    a_task_a_person_controls_is_not_claimed,
);

const LEASE: Duration = Duration::from_millis(300);

fn new_task(description: &str) -> NewAgentTask {
    NewAgentTask::new(description, "claude-sonnet", "key-1")
}

fn is_not_found(e: &AgentStoreError, what: &str) -> bool {
    matches!(e, AgentStoreError::Store(StoreError::NotFound { what: w }) if w == what)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn tasks_round_trip(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();

    // Defaults, and an id made by the store (a uuid v7).
    let t = store
        .insert_agent_task(&new_task("open firefox"))
        .await
        .unwrap();
    assert_eq!(t.id.len(), 36, "{}", t.id);
    assert_eq!(&t.id[14..15], "7", "uuid v7: {}", t.id);
    assert_eq!(t.status, TaskStatus::Pending);
    assert_eq!(t.priority, Priority::Medium);
    assert_eq!(t.task_type, TaskType::Immediate);
    assert_eq!(t.control, Control::Assistant);
    assert_eq!(
        (t.attempts, t.cost_usd, t.input_tokens, t.output_tokens),
        (0, 0.0, 0, 0)
    );
    assert_eq!(t.created_at, t.updated_at);
    assert!(t.lease_owner.is_none() && t.executed_at.is_none() && t.completed_at.is_none());
    assert_eq!(store.get_agent_task(&t.id).await.unwrap(), Some(t.clone()));

    // Every field given.
    let full = NewAgentTask {
        id: Some("0190a000-0000-7000-8000-000000000001".into()),
        description: "write the report ü".into(),
        priority: Priority::Urgent,
        task_type: TaskType::Scheduled,
        scheduled_for: Some(1_900_000_000_000),
        control: Control::User,
        model: "gpt-4.1".into(),
        fallback_models: vec!["claude-sonnet".into(), "gemini-2.5-pro".into()],
        created_by: "key-2".into(),
        parent_id: Some(t.id.clone()),
        created_at: Some(1_700_000_000_000),
    };
    let f = store.insert_agent_task(&full).await.unwrap();
    assert_eq!(f.id, "0190a000-0000-7000-8000-000000000001");
    assert_eq!(f.description, "write the report ü");
    assert_eq!(f.priority, Priority::Urgent);
    assert_eq!(f.task_type, TaskType::Scheduled);
    assert_eq!(f.scheduled_for, Some(1_900_000_000_000));
    assert_eq!(f.control, Control::User);
    assert_eq!(f.model, "gpt-4.1");
    assert_eq!(f.fallback_models, ["claude-sonnet", "gemini-2.5-pro"]);
    assert_eq!(f.created_by, "key-2");
    assert_eq!(f.parent_id.as_deref(), Some(t.id.as_str()));
    assert_eq!(
        (f.created_at, f.updated_at),
        (1_700_000_000_000, 1_700_000_000_000)
    );
    assert_eq!(store.get_agent_task(&f.id).await.unwrap(), Some(f.clone()));

    // The JSON shape (Bytebot's enum spellings, `type`).
    let v = serde_json::to_value(&f).unwrap();
    assert_eq!(v["type"], "SCHEDULED");
    assert_eq!(v["status"], "PENDING");
    assert_eq!(v["priority"], "URGENT");
    assert_eq!(v["control"], "USER");
    assert_eq!(
        v["fallback_models"],
        json!(["claude-sonnet", "gemini-2.5-pro"])
    );

    // Bad input.
    let e = store.insert_agent_task(&full).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"store: agent task "0190a000-0000-7000-8000-000000000001" already exists"#
    );
    let mut orphan = new_task("orphan");
    orphan.parent_id = Some("no-such-parent".into());
    let e = store.insert_agent_task(&orphan).await.unwrap_err();
    assert!(
        is_not_found(&e, r#"parent agent task "no-such-parent""#),
        "{e}"
    );
    let mut bad = new_task("x");
    bad.task_type = TaskType::Scheduled;
    let e = store.insert_agent_task(&bad).await.unwrap_err();
    assert!(matches!(e, AgentStoreError::Invalid { .. }), "{e}");
    assert!(store.get_agent_task("missing").await.unwrap().is_none());

    // Control and result.
    let c = store.set_task_control(&t.id, Control::User).await.unwrap();
    assert_eq!(c.control, Control::User);
    assert!(c.updated_at >= t.updated_at);
    let r = store
        .update_task_result(&t.id, Some(&json!({"answer": 42})), Some("partly"))
        .await
        .unwrap();
    assert_eq!(r.result, Some(json!({"answer": 42})));
    assert_eq!(r.error.as_deref(), Some("partly"));
    let r = store.update_task_result(&t.id, None, None).await.unwrap();
    assert_eq!((r.result, r.error), (None, None));
    assert_eq!(
        store.get_agent_task(&t.id).await.unwrap().unwrap().control,
        Control::User
    );
    let e = store
        .set_task_control("missing", Control::User)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"store: agent task "missing" does not exist"#
    );
    assert!(e.is_not_found());
    let e = store
        .update_task_result("missing", None, None)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");

    // Survives a reopen.
    store.close().await;
    let store = Store::open(&db.url).await.unwrap();
    assert_eq!(store.get_agent_task(&f.id).await.unwrap(), Some(f));
    store.close().await;
}

async fn status_changes_compare_and_set(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let t = store.insert_agent_task(&new_task("a")).await.unwrap();

    let c = store
        .set_task_status(
            &t.id,
            &[TaskStatus::Pending, TaskStatus::Running],
            TaskStatus::Cancelled,
        )
        .await
        .unwrap();
    assert_eq!(c.status, TaskStatus::Cancelled);
    assert!(
        c.completed_at.is_some(),
        "a final status stamps completed_at"
    );

    // The wrong current status: refused, and the error says what the status is.
    let e = store
        .set_task_status(
            &t.id,
            &[TaskStatus::Pending, TaskStatus::Running],
            TaskStatus::Failed,
        )
        .await
        .unwrap_err();
    match &e {
        AgentStoreError::WrongStatus {
            id,
            actual,
            expected,
        } => {
            assert_eq!(
                (id.as_str(), *actual),
                (t.id.as_str(), TaskStatus::Cancelled)
            );
            assert_eq!(expected, "PENDING or RUNNING");
        }
        other => panic!("{other}"),
    }
    assert!(
        e.to_string()
            .contains("is CANCELLED, not PENDING or RUNNING"),
        "{e}"
    );
    assert_eq!(
        store.get_agent_task(&t.id).await.unwrap().unwrap().status,
        TaskStatus::Cancelled,
        "unchanged"
    );

    // Back to the queue: completed_at is cleared again.
    let p = store
        .set_task_status(&t.id, &[TaskStatus::Cancelled], TaskStatus::Pending)
        .await
        .unwrap();
    assert_eq!((p.status, p.completed_at), (TaskStatus::Pending, None));

    // Resume: only from NEEDS_HELP.
    let e = store.requeue_task(&t.id).await.unwrap_err();
    assert!(
        matches!(
            e,
            AgentStoreError::WrongStatus {
                actual: TaskStatus::Pending,
                ..
            }
        ),
        "{e}"
    );
    store
        .set_task_status(&t.id, &[TaskStatus::Pending], TaskStatus::NeedsHelp)
        .await
        .unwrap();
    let r = store.requeue_task(&t.id).await.unwrap();
    assert_eq!(r.status, TaskStatus::Pending);

    // Bad input.
    let e = store
        .set_task_status("missing", TaskStatus::ALL, TaskStatus::Failed)
        .await
        .unwrap_err();
    assert!(is_not_found(&e, r#"agent task "missing""#), "{e}");
    let e = store
        .set_task_status(&t.id, &[TaskStatus::Pending], TaskStatus::Running)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("only through claim_agent_task"),
        "{e}"
    );
    let e = store
        .set_task_status(&t.id, &[], TaskStatus::Failed)
        .await
        .unwrap_err();
    assert!(matches!(e, AgentStoreError::Invalid { .. }), "{e}");
    store.close().await;
}

async fn list_filters_searches_and_pages(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    // 30 tasks; created_at repeats (three per millisecond) so ids break the ties.
    let descriptions = [
        "Hello world",
        "say HELLO",
        "50% off",
        "500 items",
        "a_c literal",
        "abc plain",
        "back\\slash",
    ];
    let mut expected = Vec::new();
    for i in 0..30 {
        let mut t = new_task(descriptions[i % descriptions.len()]);
        t.id = Some(format!("t{i:02}"));
        t.created_at = Some(1_000 + (i as i64) / 3);
        t.created_by = if i % 2 == 0 { "even" } else { "odd" }.into();
        store.insert_agent_task(&t).await.unwrap();
        expected.push((1_000 + (i as i64) / 3, format!("t{i:02}")));
    }
    for i in [3, 4, 5] {
        store
            .set_task_status(
                &format!("t{i:02}"),
                &[TaskStatus::Pending],
                TaskStatus::Completed,
            )
            .await
            .unwrap();
    }
    store
        .set_task_status("t06", &[TaskStatus::Pending], TaskStatus::Failed)
        .await
        .unwrap();
    expected.sort_by(|a, b| b.cmp(a));
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();

    // Every page of 7, newest first, ties by id descending; the total on each page.
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store
            .list_agent_tasks(&TaskListQuery {
                limit: 7,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        pages += 1;
        assert_eq!(page.total, 30);
        assert!(page.items.len() <= 7);
        seen.extend(page.items.iter().map(|t| t.id.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(seen, expected);

    let list = |q: TaskListQuery| {
        let store = store.clone();
        async move { store.list_agent_tasks(&q).await.unwrap() }
    };
    let ids = |page: &bytebot_store::TaskPage| -> BTreeSet<String> {
        page.items.iter().map(|t| t.id.clone()).collect()
    };

    let done = list(TaskListQuery {
        statuses: vec![TaskStatus::Completed, TaskStatus::Failed],
        ..Default::default()
    })
    .await;
    assert_eq!(done.total, 4);
    assert_eq!(
        ids(&done),
        ["t03", "t04", "t05", "t06"].map(String::from).into()
    );

    // Case is ignored; % and _ match only themselves.
    let hello = list(TaskListQuery {
        search: Some("hello".into()),
        limit: 200,
        ..Default::default()
    })
    .await;
    assert_eq!(
        hello.total,
        10,
        "Hello world and say HELLO: {:?}",
        ids(&hello)
    );
    assert!(
        hello
            .items
            .iter()
            .all(|t| t.description.to_lowercase().contains("hello"))
    );
    let percent = list(TaskListQuery {
        search: Some("50%".into()),
        ..Default::default()
    })
    .await;
    assert!(
        percent.items.iter().all(|t| t.description == "50% off"),
        "{:?}",
        ids(&percent)
    );
    assert_eq!(percent.total, 4);
    let underscore = list(TaskListQuery {
        search: Some("A_C".into()),
        ..Default::default()
    })
    .await;
    assert!(
        underscore
            .items
            .iter()
            .all(|t| t.description == "a_c literal")
    );
    assert_eq!(underscore.total, 4);
    let backslash = list(TaskListQuery {
        search: Some("k\\s".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(backslash.total, 4);

    // Filters together, and paged.
    let q = TaskListQuery {
        statuses: vec![TaskStatus::Pending],
        search: Some("hello".into()),
        created_by: Some("even".into()),
        limit: 2,
        cursor: None,
    };
    let first = list(q.clone()).await;
    assert_eq!(first.total, 5);
    let second = list(TaskListQuery {
        cursor: first.next_cursor.clone(),
        ..q.clone()
    })
    .await;
    assert!(ids(&first).is_disjoint(&ids(&second)));
    assert!(second.items.iter().all(|t| t.created_by == "even"));

    // Bad input.
    for (limit, cursor) in [
        (0, None),
        (201, None),
        (10, Some("nonsense")),
        (10, Some("12:")),
    ] {
        let e = store
            .list_agent_tasks(&TaskListQuery {
                limit,
                cursor: cursor.map(String::from),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(e, AgentStoreError::Invalid { .. }), "{e}");
    }
    store.close().await;
}

async fn a_task_a_person_controls_is_not_claimed(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let t = store.insert_agent_task(&new_task("held")).await.unwrap();
    store.set_task_control(&t.id, Control::User).await.unwrap();
    assert_eq!(
        store.claim_agent_task("w1", "d1", LEASE).await.unwrap(),
        None
    );
    store
        .set_task_control(&t.id, Control::Assistant)
        .await
        .unwrap();
    let claimed = store
        .claim_agent_task("w1", "d1", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, t.id);
}

async fn claims_go_by_priority_then_due_time(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let now = now_ms();
    let add = |id: &str, priority: Priority, created_at: i64, scheduled_for: Option<i64>| {
        let mut t = new_task(id);
        t.id = Some(id.into());
        t.priority = priority;
        t.created_at = Some(created_at);
        t.scheduled_for = scheduled_for;
        if scheduled_for.is_some() {
            t.task_type = TaskType::Scheduled;
        }
        let store = store.clone();
        async move { store.insert_agent_task(&t).await.unwrap() }
    };
    add("low-old", Priority::Low, now - 10_000, None).await;
    add("medium", Priority::Medium, now - 5_000, None).await;
    // Created later than "medium" but due earlier.
    add(
        "medium-due-early",
        Priority::Medium,
        now - 1_000,
        Some(now - 8_000),
    )
    .await;
    add("urgent-new", Priority::Urgent, now - 100, None).await;
    add(
        "high-future",
        Priority::High,
        now - 20_000,
        Some(now + 3_600_000),
    )
    .await;
    add(
        "urgent-future",
        Priority::Urgent,
        now - 20_000,
        Some(now + 3_600_000),
    )
    .await;
    // Not in the queue at all.
    add("done", Priority::Urgent, now - 30_000, None).await;
    store
        .set_task_status("done", &[TaskStatus::Pending], TaskStatus::Completed)
        .await
        .unwrap();

    let mut order = Vec::new();
    while let Some(t) = store
        .claim_agent_task("w1", "desktop-1", Duration::from_secs(60))
        .await
        .unwrap()
    {
        assert_eq!(t.status, TaskStatus::Running);
        assert_eq!(t.lease_owner.as_deref(), Some("w1"));
        assert_eq!(t.desktop.as_deref(), Some("desktop-1"));
        assert_eq!(t.attempts, 1);
        let executed = t.executed_at.expect("executed_at is set");
        assert!(t.lease_until.unwrap() > executed);
        assert_eq!(store.get_agent_task(&t.id).await.unwrap(), Some(t.clone()));
        order.push(t.id);
    }
    assert_eq!(
        order,
        ["urgent-new", "medium-due-early", "medium", "low-old"]
    );
    for id in ["high-future", "urgent-future"] {
        let t = store.get_agent_task(id).await.unwrap().unwrap();
        assert_eq!(t.status, TaskStatus::Pending, "{id} is not due yet");
    }

    let e = store.claim_agent_task("", "d", LEASE).await.unwrap_err();
    assert!(matches!(e, AgentStoreError::Invalid { .. }), "{e}");
    let e = store
        .claim_agent_task("w1", "d", Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(e, AgentStoreError::Invalid { .. }), "{e}");
    store.close().await;
}

async fn an_expired_lease_passes_the_task_on_and_fences_the_old_worker(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let t = store.insert_agent_task(&new_task("one")).await.unwrap();

    // A long first lease, so a slow machine cannot let it run out before w2 tries.
    let first = store
        .claim_agent_task("w1", "d1", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.id, t.id);
    assert!(
        store
            .claim_agent_task("w2", "d2", LEASE)
            .await
            .unwrap()
            .is_none(),
        "held by w1"
    );
    assert!(
        !store.renew_lease(&t.id, "w2", LEASE).await.unwrap(),
        "w2 does not hold it"
    );
    // The renewal shortens the lease to LEASE from now; then w1 stops renewing, and once
    // its lease is over w2 takes the task.
    assert!(store.renew_lease(&t.id, "w1", LEASE).await.unwrap());
    tokio::time::sleep(LEASE + Duration::from_millis(150)).await;
    let second = store
        .claim_agent_task("w2", "d2", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.id, t.id);
    assert_eq!(second.attempts, 2);
    assert_eq!(second.lease_owner.as_deref(), Some("w2"));
    assert_eq!(second.desktop.as_deref(), Some("d2"));
    assert_eq!(
        second.executed_at, first.executed_at,
        "the first run's start is kept"
    );

    // w1 is fenced out.
    assert!(!store.renew_lease(&t.id, "w1", LEASE).await.unwrap());
    let e = store
        .finish_task(
            &t.id,
            "w1",
            TaskStatus::Completed,
            Some(&json!("w1's")),
            None,
        )
        .await
        .unwrap_err();
    match &e {
        AgentStoreError::LeaseLost {
            worker,
            status,
            holder,
            ..
        } => {
            assert_eq!(worker, "w1");
            assert_eq!(*status, TaskStatus::Running);
            assert_eq!(holder.as_deref(), Some("w2"));
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("held by \"w2\""), "{e}");
    let e = store.release_task(&t.id, "w1").await.unwrap_err();
    assert!(matches!(e, AgentStoreError::LeaseLost { .. }), "{e}");

    let done = store
        .finish_task(
            &t.id,
            "w2",
            TaskStatus::Completed,
            Some(&json!({"ok": true})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.result, Some(json!({"ok": true})));
    assert!(done.completed_at.is_some());
    assert_eq!((done.lease_owner, done.lease_until), (None, None));
    let e = store
        .finish_task(&t.id, "w2", TaskStatus::Completed, None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            AgentStoreError::LeaseLost {
                status: TaskStatus::Completed,
                holder: None,
                ..
            }
        ),
        "finishing twice: {e}"
    );

    // Release hands a task back; the next claim takes it again.
    let u = store.insert_agent_task(&new_task("two")).await.unwrap();
    store
        .claim_agent_task("w1", "d1", LEASE)
        .await
        .unwrap()
        .unwrap();
    let released = store.release_task(&u.id, "w1").await.unwrap();
    assert_eq!(released.status, TaskStatus::Pending);
    assert_eq!(released.lease_owner, None);
    let again = store
        .claim_agent_task("w2", "d2", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.id.as_str(), again.attempts), (u.id.as_str(), 2));

    // A person cancels a running task: the worker learns it at its next renew or finish.
    store
        .set_task_status(&u.id, &[TaskStatus::Running], TaskStatus::Cancelled)
        .await
        .unwrap();
    assert!(!store.renew_lease(&u.id, "w2", LEASE).await.unwrap());
    let e = store
        .finish_task(&u.id, "w2", TaskStatus::Completed, None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            AgentStoreError::LeaseLost {
                status: TaskStatus::Cancelled,
                ..
            }
        ),
        "{e}"
    );

    // Finishing with NEEDS_HELP keeps the error and is not final.
    let v = store.insert_agent_task(&new_task("three")).await.unwrap();
    store
        .claim_agent_task("w1", "d1", LEASE)
        .await
        .unwrap()
        .unwrap();
    let help = store
        .finish_task(
            &v.id,
            "w1",
            TaskStatus::NeedsHelp,
            None,
            Some("which account?"),
        )
        .await
        .unwrap();
    assert_eq!(help.status, TaskStatus::NeedsHelp);
    assert_eq!(help.error.as_deref(), Some("which account?"));
    assert_eq!(help.completed_at, None);
    let back = store.requeue_task(&v.id).await.unwrap();
    assert_eq!(back.status, TaskStatus::Pending);

    // Bad input.
    let e = store
        .finish_task("missing", "w1", TaskStatus::Completed, None, None)
        .await
        .unwrap_err();
    assert!(is_not_found(&e, r#"agent task "missing""#), "{e}");
    let e = store
        .finish_task(&v.id, "w1", TaskStatus::Running, None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, AgentStoreError::Invalid { .. }), "{e}");
    let e = store.release_task("missing", "w1").await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(!store.renew_lease("missing", "w1", LEASE).await.unwrap());
    store.close().await;
}

async fn messages_and_summaries(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let t = store.insert_agent_task(&new_task("chat")).await.unwrap();
    let other = store.insert_agent_task(&new_task("other")).await.unwrap();

    let m1 = store
        .append_message(
            &t.id,
            Role::User,
            &json!([{"type": "text", "text": "hi"}]),
            None,
        )
        .await
        .unwrap();
    let screenshot = json!([{"type": "image", "image": {"media_type": "image/png", "width": 2, "height": 1, "blob": "tasks/x/1.png"}}]);
    let m2 = store
        .append_message(
            &t.id,
            Role::Assistant,
            &screenshot,
            Some(&json!({"reasoning": "abc"})),
        )
        .await
        .unwrap();
    let o1 = store
        .append_message(&other.id, Role::User, &json!("elsewhere"), None)
        .await
        .unwrap();
    let m3 = store
        .append_message(
            &t.id,
            Role::User,
            &json!([{"type": "text", "text": "more"}]),
            None,
        )
        .await
        .unwrap();
    assert!(
        m1.id < m2.id && m2.id < o1.id && o1.id < m3.id,
        "ids increase"
    );
    assert_eq!(m2.role, Role::Assistant);
    assert_eq!(m2.content, screenshot);
    assert_eq!(m2.state, Some(json!({"reasoning": "abc"})));
    assert_eq!((m2.summary_id, m2.task_id.as_str()), (None, t.id.as_str()));
    assert_eq!(serde_json::to_value(&m2).unwrap()["role"], "assistant");

    // Pages, oldest first.
    let all = store.messages(&t.id, 0, 100).await.unwrap();
    assert_eq!(all, [m1.clone(), m2.clone(), m3.clone()]);
    let page1 = store.messages(&t.id, 0, 2).await.unwrap();
    assert_eq!(page1, [m1.clone(), m2.clone()]);
    let page2 = store.messages(&t.id, page1[1].id, 2).await.unwrap();
    assert_eq!(page2, std::slice::from_ref(&m3));
    assert!(store.messages(&t.id, m3.id, 2).await.unwrap().is_empty());

    // Bad input.
    let e = store
        .append_message("missing", Role::User, &json!("x"), None)
        .await
        .unwrap_err();
    assert!(is_not_found(&e, r#"agent task "missing""#), "{e}");
    let e = store.messages("missing", 0, 10).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let e = store.messages(&t.id, 0, 0).await.unwrap_err();
    assert!(matches!(e, AgentStoreError::Invalid { .. }), "{e}");
    let inline = json!([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]);
    let e = store
        .append_message(&t.id, Role::User, &inline, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("image bytes inline"), "{e}");
    assert_eq!(
        store.messages(&t.id, 0, 100).await.unwrap().len(),
        3,
        "nothing stored"
    );

    // Summaries.
    assert_eq!(store.latest_summary(&t.id).await.unwrap(), None);
    let s1 = store
        .insert_summary(&t.id, "greeted; took a screenshot", m2.id)
        .await
        .unwrap();
    assert_eq!(
        (s1.task_id.as_str(), s1.covers_up_to),
        (t.id.as_str(), m2.id)
    );
    let marks: Vec<Option<i64>> = store
        .messages(&t.id, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.summary_id)
        .collect();
    assert_eq!(marks, [Some(s1.id), Some(s1.id), None]);
    assert_eq!(
        store.messages(&other.id, 0, 10).await.unwrap()[0].summary_id,
        None,
        "another task's messages are untouched"
    );

    let s2 = store
        .insert_summary(&t.id, "everything", m3.id)
        .await
        .unwrap();
    assert!(s2.id > s1.id);
    assert_eq!(store.latest_summary(&t.id).await.unwrap(), Some(s2.clone()));
    let marks: Vec<Option<i64>> = store
        .messages(&t.id, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.summary_id)
        .collect();
    assert_eq!(
        marks,
        [Some(s1.id), Some(s1.id), Some(s2.id)],
        "older marks stay"
    );

    // Marking a range by hand.
    assert_eq!(
        store
            .mark_summarised(&t.id, s2.id, m1.id, m2.id)
            .await
            .unwrap(),
        2
    );
    assert!(
        store
            .messages(&t.id, 0, 100)
            .await
            .unwrap()
            .iter()
            .all(|m| m.summary_id == Some(s2.id))
    );
    let e = store
        .mark_summarised(&other.id, s2.id, 0, i64::MAX)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "a summary of another task: {e}");

    // A summary must cover one of its own task's messages; nothing is stored otherwise.
    let e = store
        .insert_summary(&t.id, "wrong", o1.id)
        .await
        .unwrap_err();
    assert!(matches!(e, AgentStoreError::Invalid { .. }), "{e}");
    assert_eq!(store.latest_summary(&t.id).await.unwrap(), Some(s2));
    let e = store.insert_summary("missing", "x", 1).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    store.close().await;
}

async fn events_resume_after_an_id(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    assert_eq!(store.max_task_event_id().await.unwrap(), 0);
    let a = store.insert_agent_task(&new_task("a")).await.unwrap();
    let b = store.insert_agent_task(&new_task("b")).await.unwrap();

    // Concurrent appends to both tasks.
    let mut calls = Vec::new();
    for i in 0..100 {
        let store = store.clone();
        let task = if i % 2 == 0 {
            a.id.clone()
        } else {
            b.id.clone()
        };
        calls.push(tokio::spawn(async move {
            store
                .append_task_event(&task, "step", &json!({"n": i}))
                .await
                .unwrap()
        }));
    }
    let mut appended = Vec::new();
    for call in calls {
        appended.push(call.await.unwrap());
    }
    let ids: BTreeSet<i64> = appended.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 100, "ids are unique");
    assert_eq!(
        store.max_task_event_id().await.unwrap(),
        *ids.last().unwrap()
    );

    // Everything, in id order, in pages.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = store.task_events_after(None, after, 30).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap().id;
        seen.extend(page);
    }
    assert_eq!(seen.len(), 100);
    assert!(seen.windows(2).all(|w| w[0].id < w[1].id));
    let by_id: HashMap<i64, _> = appended.iter().map(|e| (e.id, e)).collect();
    for e in &seen {
        assert_eq!(by_id[&e.id], e, "stored as appended");
    }

    // One task's, after an id.
    let of_a = store.task_events_after(Some(&a.id), 0, 1000).await.unwrap();
    assert_eq!(of_a.len(), 50);
    assert!(of_a.iter().all(|e| e.task_id == a.id && e.kind == "step"));
    let middle = of_a[24].id;
    let rest = store
        .task_events_after(Some(&a.id), middle, 1000)
        .await
        .unwrap();
    assert_eq!(rest, of_a[25..]);

    // Bad input.
    let e = store
        .append_task_event("missing", "step", &json!({}))
        .await
        .unwrap_err();
    assert!(is_not_found(&e, r#"agent task "missing""#), "{e}");
    let e = store
        .task_events_after(Some("missing"), 0, 10)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let e = store.task_events_after(None, 0, 1001).await.unwrap_err();
    assert!(matches!(e, AgentStoreError::Invalid { .. }), "{e}");
    let e = store
        .append_task_event(&a.id, "", &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(e, AgentStoreError::Invalid { .. }), "{e}");
    store.close().await;
}

fn file(task_id: &str, name: &str) -> NewTaskFile {
    NewTaskFile {
        id: None,
        task_id: task_id.into(),
        name: name.into(),
        media_type: "text/plain".into(),
        size: 5,
        sha256: "2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824".into(),
        blob_key: format!("{}/files/{name}", task_blob_prefix(task_id)),
    }
}

async fn files_and_usage(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let t = store.insert_agent_task(&new_task("files")).await.unwrap();

    let f1 = store.insert_task_file(&file(&t.id, "a.txt")).await.unwrap();
    let mut second = file(&t.id, "b.txt");
    second.id = Some("file-2".into());
    let f2 = store.insert_task_file(&second).await.unwrap();
    assert_eq!(f1.id.len(), 36);
    assert_eq!(
        f1.sha256,
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert_eq!(
        (f1.name.as_str(), f1.size, f1.task_id.as_str()),
        ("a.txt", 5, t.id.as_str())
    );
    assert_eq!(store.get_task_file(&f1.id).await.unwrap(), Some(f1.clone()));
    assert_eq!(store.get_task_file("missing").await.unwrap(), None);
    let listed = store.task_files(&t.id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&f1) && listed.contains(&f2));

    let e = store.insert_task_file(&second).await.unwrap_err();
    assert!(
        matches!(e, AgentStoreError::Store(StoreError::Conflict { .. })),
        "{e}"
    );
    let e = store
        .insert_task_file(&file("missing", "a.txt"))
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let mut bad = file(&t.id, "c.txt");
    bad.sha256 = "abc".into();
    assert!(matches!(
        store.insert_task_file(&bad).await.unwrap_err(),
        AgentStoreError::Invalid { .. }
    ));
    let mut bad = file(&t.id, "c.txt");
    bad.blob_key = "../etc/passwd".into();
    let e = store.insert_task_file(&bad).await.unwrap_err();
    assert!(e.to_string().contains(". or .."), "{e}");
    assert!(
        store
            .task_files("missing")
            .await
            .unwrap_err()
            .is_not_found()
    );

    // Usage: rows per call, totals on the task.
    let call = |provider: &str, model: &str, input: i64, cost: f64| NewUsage {
        provider: provider.into(),
        model: model.into(),
        input_tokens: input,
        output_tokens: 10,
        cache_creation_input_tokens: 100,
        cache_read_input_tokens: 1000,
        cost_usd: cost,
    };
    let u1 = store
        .add_task_usage(&t.id, &call("anthropic", "claude-sonnet-4", 1, 0.25))
        .await
        .unwrap();
    store
        .add_task_usage(&t.id, &call("anthropic", "claude-sonnet-4", 2, 0.5))
        .await
        .unwrap();
    let u3 = store
        .add_task_usage(&t.id, &call("openai", "gpt-4.1", 3, 0.125))
        .await
        .unwrap();
    assert!(u1.id < u3.id);
    assert_eq!(
        (u1.provider.as_str(), u1.cache_read_input_tokens),
        ("anthropic", 1000)
    );

    let task = store.get_agent_task(&t.id).await.unwrap().unwrap();
    assert_eq!(task.input_tokens, 1 + 2 + 3 + 3 * 1100, "every input kind");
    assert_eq!(task.output_tokens, 30);
    assert!((task.cost_usd - 0.875).abs() < 1e-9, "{}", task.cost_usd);

    let by_model = store.usage_by_model(&t.id).await.unwrap();
    assert_eq!(by_model.len(), 2);
    let claude = &by_model[0];
    assert_eq!(
        (claude.provider.as_str(), claude.model.as_str()),
        ("anthropic", "claude-sonnet-4")
    );
    assert_eq!(
        (claude.calls, claude.input_tokens, claude.output_tokens),
        (2, 3, 20)
    );
    assert_eq!(
        (
            claude.cache_creation_input_tokens,
            claude.cache_read_input_tokens
        ),
        (200, 2000)
    );
    assert!((claude.cost_usd - 0.75).abs() < 1e-9);
    assert_eq!(
        (by_model[1].model.as_str(), by_model[1].calls),
        ("gpt-4.1", 1)
    );

    let totals = store.usage_totals(Some(&t.id)).await.unwrap();
    assert_eq!(
        (
            totals.calls,
            totals.input_tokens,
            totals.cache_read_input_tokens
        ),
        (3, 6, 3000)
    );
    assert!((totals.cost_usd - 0.875).abs() < 1e-9);
    let other = store.insert_agent_task(&new_task("other")).await.unwrap();
    assert!(store.usage_by_model(&other.id).await.unwrap().is_empty());
    let none = store.usage_totals(Some(&other.id)).await.unwrap();
    assert_eq!((none.calls, none.input_tokens, none.cost_usd), (0, 0, 0.0));
    store
        .add_task_usage(&other.id, &call("gemini", "gemini-2.5-pro", 7, 1.0))
        .await
        .unwrap();
    let everything = store.usage_totals(None).await.unwrap();
    assert_eq!((everything.calls, everything.input_tokens), (4, 13));
    assert!((everything.cost_usd - 1.875).abs() < 1e-9);

    let e = store
        .add_task_usage("missing", &call("a", "b", 1, 0.0))
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert_eq!(
        store.usage_totals(None).await.unwrap().calls,
        4,
        "nothing stored"
    );
    let e = store
        .add_task_usage(&t.id, &call("a", "b", -1, 0.0))
        .await
        .unwrap_err();
    assert!(matches!(e, AgentStoreError::Invalid { .. }), "{e}");
    let e = store
        .add_task_usage(&t.id, &call("a", "b", 1, f64::NAN))
        .await
        .unwrap_err();
    assert!(matches!(e, AgentStoreError::Invalid { .. }), "{e}");
    assert!(
        store
            .usage_by_model("missing")
            .await
            .unwrap_err()
            .is_not_found()
    );
    store.close().await;
}

async fn deleting_a_task_removes_its_rows_and_names_its_blobs(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let blobs = Blobs::open("memory:").unwrap();
    let t = store.insert_agent_task(&new_task("doomed")).await.unwrap();
    let keep = store.insert_agent_task(&new_task("kept")).await.unwrap();
    let mut child = new_task("child");
    child.parent_id = Some(t.id.clone());
    let child = store.insert_agent_task(&child).await.unwrap();

    let prefix = task_blob_prefix(&t.id);
    let shot = blobs
        .put(&format!("{prefix}/shots/1.png"), b"png".to_vec())
        .await
        .unwrap();
    let upload = blobs
        .put(&format!("{prefix}/files/a.txt"), b"hello".to_vec())
        .await
        .unwrap();
    let kept_blob = blobs
        .put(
            &format!("{}/shots/1.png", task_blob_prefix(&keep.id)),
            b"keep".to_vec(),
        )
        .await
        .unwrap();
    let mut f = file(&t.id, "a.txt");
    f.blob_key = upload.clone();
    store.insert_task_file(&f).await.unwrap();
    let image = json!({"type": "image", "image": {"media_type": "image/png", "width": 1, "height": 1, "blob": shot}});
    let m = store
        .append_message(&t.id, Role::Assistant, &json!([image.clone(), image]), None)
        .await
        .unwrap();
    store.insert_summary(&t.id, "s", m.id).await.unwrap();
    store
        .append_task_event(&t.id, "step", &json!({}))
        .await
        .unwrap();
    let kept_event = store
        .append_task_event(&keep.id, "step", &json!({}))
        .await
        .unwrap();
    store
        .add_task_usage(
            &t.id,
            &NewUsage {
                provider: "p".into(),
                model: "m".into(),
                cost_usd: 1.0,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let kept_message = store
        .append_message(&keep.id, Role::User, &json!("hi"), None)
        .await
        .unwrap();

    let keys = store.delete_agent_task(&t.id).await.unwrap();
    let mut expected = vec![shot.clone(), upload.clone()];
    expected.sort();
    assert_eq!(keys, expected, "sorted, each once");

    assert_eq!(store.get_agent_task(&t.id).await.unwrap(), None);
    assert!(
        store
            .messages(&t.id, 0, 10)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(store.task_files(&t.id).await.unwrap_err().is_not_found());
    assert_eq!(store.usage_totals(Some(&t.id)).await.unwrap().calls, 0);
    assert_eq!(store.latest_summary(&t.id).await.unwrap(), None);
    assert_eq!(
        store.task_events_after(None, 0, 100).await.unwrap(),
        [kept_event],
        "only the other task's event is left"
    );
    assert_eq!(
        store.messages(&keep.id, 0, 10).await.unwrap(),
        [kept_message]
    );
    let orphan = store.get_agent_task(&child.id).await.unwrap().unwrap();
    assert_eq!(orphan.parent_id, None, "the child stays, without a parent");

    // What the caller does next: delete the blobs.
    for key in &keys {
        blobs.delete(key).await.unwrap();
    }
    assert_eq!(
        blobs.delete_prefix(&prefix).await.unwrap(),
        0,
        "nothing left"
    );
    assert!(matches!(
        blobs.get(&shot).await,
        Err(BlobError::NotFound { .. })
    ));
    assert_eq!(blobs.get(&kept_blob).await.unwrap(), b"keep");

    let e = store.delete_agent_task(&t.id).await.unwrap_err();
    assert!(is_not_found(&e, &format!("agent task {:?}", t.id)), "{e}");
    store.close().await;
}

/// 1,000 tasks, 4 workers with a store (and pool) each. Every task takes one lease renewal;
/// every 100th works longer than a lease and lives on its renewals. Worker 0 dies on its 5th
/// task (stops renewing, never finishes); another worker takes that task once the lease is
/// over. Every task must be completed exactly once.
async fn four_workers_complete_a_thousand_tasks_exactly_once(db: TestDb) {
    const TASKS: usize = 1000;
    let store = Store::open(&db.url).await.unwrap();
    let mut inserts = Vec::new();
    for i in 0..TASKS {
        let store = store.clone();
        inserts.push(tokio::spawn(async move {
            let mut t = new_task(&format!("task {i}"));
            t.id = Some(format!("task-{i:04}"));
            t.priority = Priority::ALL[i % 4];
            store.insert_agent_task(&t).await.unwrap();
        }));
    }
    for insert in inserts {
        insert.await.unwrap();
    }

    // task id -> the workers whose finish was accepted.
    let finished: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let died: Arc<Mutex<Option<String>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    // task id -> a time its holder's lease lasts at least until (unix ms, the claim's exact
    // lease_until or the time just before a successful renewal plus the lease). A claim stamped
    // (updated_at) before that took a task another worker still held.
    let leased: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let double_claims: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..4 {
        let store = Store::open(&db.url).await.unwrap();
        let (finished, died, refused) = (finished.clone(), died.clone(), refused.clone());
        let (leased, double_claims) = (leased.clone(), double_claims.clone());
        workers.push(tokio::spawn(async move {
            let name = format!("worker-{w}");
            let mut claimed = 0;
            loop {
                if finished.lock().unwrap().len() >= TASKS {
                    break;
                }
                let Some(task) = store
                    .claim_agent_task(&name, &format!("desktop-{w}"), LEASE)
                    .await
                    .unwrap()
                else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                claimed += 1;
                {
                    let mut leased = leased.lock().unwrap();
                    let until = leased.entry(task.id.clone()).or_default();
                    if task.updated_at <= *until {
                        double_claims.lock().unwrap().push(format!(
                            "{name} claimed {} at {} while it was held until {until} or later",
                            task.id, task.updated_at
                        ));
                    }
                    *until = (*until).max(task.lease_until.unwrap());
                }
                if w == 0 && claimed == 5 {
                    // Dies mid-task: no more renewals, no finish.
                    *died.lock().unwrap() = Some(task.id.clone());
                    return store;
                }
                let long = task.id.ends_with("00");
                let steps = if long { 4 } else { 1 };
                let mut holds = true;
                for _ in 0..steps {
                    if long {
                        tokio::time::sleep(LEASE / 3).await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                    let before = now_ms();
                    if !store.renew_lease(&task.id, &name, LEASE).await.unwrap() {
                        holds = false;
                        break;
                    }
                    let mut leased = leased.lock().unwrap();
                    let until = leased.entry(task.id.clone()).or_default();
                    *until = (*until).max(before + LEASE.as_millis() as i64);
                }
                if !holds {
                    refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let result = json!({"by": name});
                match store
                    .finish_task(&task.id, &name, TaskStatus::Completed, Some(&result), None)
                    .await
                {
                    Ok(done) => {
                        assert_eq!(done.status, TaskStatus::Completed);
                        finished
                            .lock()
                            .unwrap()
                            .entry(task.id.clone())
                            .or_default()
                            .push(name.clone());
                    }
                    Err(AgentStoreError::LeaseLost { .. }) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("{name}: {e}"),
                }
            }
            store
        }));
    }

    let mut stores = Vec::new();
    let all = async {
        for worker in workers {
            stores.push(worker.await.unwrap());
        }
    };
    if tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .is_err()
    {
        let done = finished.lock().unwrap().len();
        panic!("the workers did not finish in 120 s: {done} of {TASKS} tasks completed");
    }

    let finished = finished.lock().unwrap().clone();
    let double_claims = double_claims.lock().unwrap().clone();
    assert!(double_claims.is_empty(), "{double_claims:#?}");
    assert_eq!(finished.len(), TASKS, "no task is missing");
    for (id, by) in &finished {
        assert_eq!(by.len(), 1, "{id} was completed more than once: {by:?}");
    }
    let died = died
        .lock()
        .unwrap()
        .clone()
        .expect("worker-0 died on its 5th task");
    let rescuer = &finished[&died][0];
    assert_ne!(
        rescuer, "worker-0",
        "another worker finished the dead worker's task"
    );

    let rescued = store.get_agent_task(&died).await.unwrap().unwrap();
    assert_eq!(rescued.status, TaskStatus::Completed);
    assert!(rescued.attempts >= 2, "{rescued:?}");
    assert_eq!(rescued.result, Some(json!({"by": rescuer})));
    assert_eq!(
        rescued.desktop.as_deref(),
        Some(format!("desktop-{}", &rescuer["worker-".len()..]).as_str())
    );
    let completed = store
        .list_agent_tasks(&TaskListQuery {
            statuses: vec![TaskStatus::Completed],
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(completed.total, TASKS as i64);
    assert!(
        store
            .claim_agent_task("late", "d", LEASE)
            .await
            .unwrap()
            .is_none()
    );

    // The dead worker comes back and tries to finish: refused.
    let e = stores[0]
        .finish_task(&died, "worker-0", TaskStatus::Completed, None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, AgentStoreError::LeaseLost { .. }), "{e}");

    println!(
        "{:?}: {TASKS} tasks, {} refused renewals or finishes",
        db.backend,
        refused.load(Ordering::Relaxed)
    );
    for s in stores {
        s.close().await;
    }
    store.close().await;
}

// The blob store, for real on a local folder and in memory.

#[tokio::test]
async fn blobs_on_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs").join("nested");
    let blobs = Blobs::open(root.to_str().unwrap()).unwrap();
    assert!(root.is_dir(), "the folder is created");
    exercise_blobs(&blobs).await;

    // Bytes are files under the folder, and stay there.
    blobs
        .put("tasks/t1/files/a.txt", b"hello".to_vec())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(root.join("tasks/t1/files/a.txt")).unwrap(),
        b"hello"
    );
    let again = Blobs::open(&format!("file://{}", root.display())).unwrap();
    assert_eq!(again.get("tasks/t1/files/a.txt").await.unwrap(), b"hello");

    // Nothing escapes the folder.
    for bad in ["../escape", "/etc/passwd", "tasks/../../escape"] {
        assert!(matches!(
            blobs.put(bad, b"x".to_vec()).await,
            Err(BlobError::BadKey { .. })
        ));
    }
    assert!(!dir.path().join("blobs/escape").exists());

    // delete_prefix removes the files (and, with them, the empty folders).
    assert_eq!(blobs.delete_prefix("tasks/t1/").await.unwrap(), 1);
    assert!(!root.join("tasks/t1/files/a.txt").exists());

    // A folder that cannot be made.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let e = Blobs::open(file.join("sub").to_str().unwrap()).unwrap_err();
    assert!(e.to_string().contains("cannot create the folder"), "{e}");
}

#[tokio::test]
async fn blobs_in_memory() {
    let blobs = Blobs::open("memory:").unwrap();
    exercise_blobs(&blobs).await;
}

async fn exercise_blobs(blobs: &Blobs) {
    let key = blobs
        .put("tasks/t/shots/1.png", vec![1, 2, 3])
        .await
        .unwrap();
    assert_eq!(key, "tasks/t/shots/1.png");
    assert_eq!(blobs.get(&key).await.unwrap(), [1, 2, 3]);
    blobs.put(&key, vec![4]).await.unwrap();
    assert_eq!(blobs.get(&key).await.unwrap(), [4], "put replaces");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    blobs.put("tasks/t/big.bin", big.clone()).await.unwrap();
    assert_eq!(blobs.get("tasks/t/big.bin").await.unwrap(), big);

    let e = blobs.get("tasks/t/missing.png").await.unwrap_err();
    assert!(
        matches!(&e, BlobError::NotFound { key } if key == "tasks/t/missing.png"),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "blobs: no blob has the key \"tasks/t/missing.png\" (it was never stored, or was deleted)"
    );
    blobs.delete("tasks/t/missing.png").await.unwrap();

    blobs.delete(&key).await.unwrap();
    assert!(matches!(
        blobs.get(&key).await,
        Err(BlobError::NotFound { .. })
    ));

    // Prefixes cover whole parts.
    for k in ["p/a/1", "p/a/2", "p/a/deep/3", "p/ab/4", "q/a/5"] {
        blobs.put(k, k.as_bytes().to_vec()).await.unwrap();
    }
    assert_eq!(blobs.delete_prefix("p/a").await.unwrap(), 3);
    for gone in ["p/a/1", "p/a/2", "p/a/deep/3"] {
        assert!(matches!(
            blobs.get(gone).await,
            Err(BlobError::NotFound { .. })
        ));
    }
    assert_eq!(blobs.get("p/ab/4").await.unwrap(), b"p/ab/4");
    assert_eq!(blobs.get("q/a/5").await.unwrap(), b"q/a/5");
    assert_eq!(blobs.delete_prefix("nothing/here").await.unwrap(), 0);

    for bad in ["", "a//b", "a/./b", "..", "a b", "/abs"] {
        let e = blobs.get(bad).await.unwrap_err();
        assert!(matches!(e, BlobError::BadKey { .. }), "{bad:?}: {e}");
    }
    assert!(matches!(
        blobs.delete_prefix("").await,
        Err(BlobError::BadKey { .. })
    ));
}
