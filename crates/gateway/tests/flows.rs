//! The good paths through a real gateway in front of a real desktop: plan,
//! approve (by token, by a person, or automatically), execute, and what a
//! client sees afterwards (artifacts, events, capabilities, the OpenAPI
//! document, metrics).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{GUARD, TestGateway, key, sha256_hex, skip_without};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

fn task_id(plan: &Value) -> &str {
    plan["task_id"].as_str().unwrap()
}

/// Downloads an artifact through its signed link (no credentials) and checks
/// its bytes against the reference; returns them.
async fn fetch_artifact(gw: &TestGateway, artifact: &Value) -> Vec<u8> {
    let link = artifact["url"].as_str().unwrap();
    assert!(link.starts_with("/artifacts/"), "{artifact}");
    let r = gw.download(link).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ct = r.headers["content-type"].to_str().unwrap();
    assert_eq!(ct, artifact["media_type"].as_str().unwrap());
    assert_eq!(r.body.len() as i64, artifact["bytes"].as_i64().unwrap());
    assert_eq!(sha256_hex(&r.body), artifact["sha256"].as_str().unwrap());
    r.body
}

/// Replaces the signature in a link with a different one of the same length.
fn tamper_sig(link: &str) -> String {
    let last = link.chars().last().unwrap();
    let swapped = if last == '0' { '1' } else { '0' };
    format!("{}{swapped}", &link[..link.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshot_with_signed_requests_gives_a_png_link() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let plan = gw
        .signed(
            "bot",
            "POST",
            "/plan",
            Some(&json!({"intent": "screenshot", "args": {}})),
        )
        .await
        .ok();
    assert_eq!(plan["est_risk"], "low");
    assert_eq!(plan["needs_approval"], true);
    assert_eq!(plan["plan"][0]["action"]["op"], "screenshot");
    assert_eq!(plan["plan_digest"].as_str().unwrap().len(), 64);
    assert!(
        plan["approval_url"].as_str().unwrap().starts_with(&gw.url),
        "{plan}"
    );
    assert_eq!(gw.artifact_files(), 0, "planning took the screenshot");

    let body = json!({"task_id": plan["task_id"], "confirm_token": plan["confirm_token"]});
    let done = gw.signed("bot", "POST", "/execute", Some(&body)).await.ok();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["observations"][0]["ok"], true, "{done}");
    let artifacts = done["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 1, "{done}");
    let a = &artifacts[0];
    assert_eq!(a["kind"], "screenshot");
    assert_eq!(a["media_type"], "image/png");

    let png = fetch_artifact(&gw, a).await;
    assert!(png.starts_with(PNG_SIGNATURE), "not a PNG");
    // The PNG's IHDR says the screen's size (1280×960 by default).
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1280, 960));

    let view = gw
        .signed("bot", "GET", &format!("/tasks/{}", task_id(&plan)), None)
        .await
        .ok();
    assert_eq!(view["state"], "succeeded");
    assert_eq!(view["artifacts"][0]["id"], a["id"]);

    // A link with a changed signature, or a changed expiry, is refused.
    let link = a["url"].as_str().unwrap();
    gw.download(&tamper_sig(link)).await.error(403, "bad_link");
    let exp: i64 = link
        .split("exp=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let later = link.replace(&format!("exp={exp}"), &format!("exp={}", exp + 3600));
    gw.download(&later).await.error(403, "bad_link");
    // Without a link, the artifact needs a key that may see it.
    let bare = format!("/artifacts/{}", a["id"].as_str().unwrap());
    gw.download(&bare).await.error(401, "missing_credentials");
    gw.bearer("other", "GET", &bare, None)
        .await
        .error(404, "not_found");
    let own = gw.bearer("bot", "GET", &bare, None).await;
    assert_eq!(own.status, 200);
    assert_eq!(own.body, png);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_artifact_link_is_gone() {
    let Some(gw) = TestGateway::builder()
        .gateway(|c| c.artifact_ttl_s = 1)
        .start()
        .await
    else {
        return;
    };
    let plan = gw.plan("bot", "screenshot", json!({})).await;
    let done = gw.execute("bot", &plan).await.ok();
    assert_eq!(done["status"], "succeeded", "{done}");
    let link = done["artifacts"][0]["url"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = gw.download(&link).await;
    r.error(410, "link_expired");
    assert!(r.message().contains("expired"), "{}", r.text());
    // A tampered link stays a bad link, expired or not.
    gw.download(&tamper_sig(&link)).await.error(403, "bad_link");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_file_shows_the_diff_and_writes_only_on_execute() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    gw.write("notes/todo.txt", "one\ntwo\nthree\n");
    let plan = gw
        .plan(
            "bot",
            "edit_file",
            json!({"path": "notes/todo.txt", "content": "one\n2\nthree\n"}),
        )
        .await;
    assert_eq!(plan["est_risk"], "high");
    let action = &plan["plan"][0]["action"];
    assert_eq!(action["op"], "write_file");
    let diff = action["diff"].as_str().unwrap();
    assert!(
        diff.starts_with("--- a/notes/todo.txt\n+++ b/notes/todo.txt\n"),
        "{diff}"
    );
    assert!(diff.contains("\n-two\n+2\n"), "{diff}");
    assert!(diff.contains("@@"), "{diff}");
    assert_eq!(
        gw.read("notes/todo.txt").unwrap(),
        "one\ntwo\nthree\n",
        "planning wrote"
    );

    let done = gw.execute("bot", &plan).await.ok();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(gw.read("notes/todo.txt").unwrap(), "one\n2\nthree\n");
    assert_eq!(gw.task(task_id(&plan)).await["state"], "succeeded");

    // A new file diffs against /dev/null and does not exist before execute.
    let plan = gw
        .plan(
            "bot",
            "edit_file",
            json!({"path": "notes/sub/new.txt", "content": "hi\n"}),
        )
        .await;
    let diff = plan["plan"][0]["action"]["diff"].as_str().unwrap();
    assert!(
        diff.starts_with("--- /dev/null\n+++ b/notes/sub/new.txt\n"),
        "{diff}"
    );
    assert!(diff.contains("+hi\n"), "{diff}");
    assert!(gw.read("notes/sub/new.txt").is_none());
    assert_eq!(gw.execute("bot", &plan).await.ok()["status"], "succeeded");
    assert_eq!(gw.read("notes/sub/new.txt").unwrap(), "hi\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_file_with_find_and_replace() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    gw.write("notes/greek.txt", "alpha beta gamma\nepsilon\n");
    let args = json!({"path": "notes/greek.txt", "edits": [
        {"find": "beta", "replace": "BETA"},
        {"find": "gamma\n", "replace": "delta\n"},
    ]});
    let plan = gw.plan("bot", "edit_file", args).await;
    let diff = plan["plan"][0]["action"]["diff"].as_str().unwrap();
    assert!(
        diff.contains("-alpha beta gamma\n+alpha BETA delta\n"),
        "{diff}"
    );
    assert!(!diff.contains("-epsilon"), "{diff}");
    assert_eq!(
        gw.read("notes/greek.txt").unwrap(),
        "alpha beta gamma\nepsilon\n"
    );
    assert_eq!(gw.execute("bot", &plan).await.ok()["status"], "succeeded");
    assert_eq!(
        gw.read("notes/greek.txt").unwrap(),
        "alpha BETA delta\nepsilon\n"
    );

    // A find that does not occur is a bad argument naming the edit.
    let body = json!({"intent": "edit_file", "args": {"path": "notes/greek.txt",
        "edits": [{"find": "BETA", "replace": "b"}, {"find": "zeta", "replace": "z"}]}});
    let r = gw.bearer("bot", "POST", "/plan", Some(&body)).await;
    assert_eq!(r.error(422, "bad_request")["field"], "args.edits[1].find");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_file_does_not_overwrite_a_file_changed_since_the_plan() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    gw.write("notes/shared.txt", "version 1\n");
    let plan = gw
        .plan(
            "bot",
            "edit_file",
            json!({"path": "notes/shared.txt", "content": "planned\n"}),
        )
        .await;
    gw.write("notes/shared.txt", "changed meanwhile\n");
    let done = gw.execute("bot", &plan).await.ok();
    assert_eq!(done["status"], "failed", "{done}");
    let text = done["observations"][0]["text"].as_str().unwrap();
    assert!(text.contains("changed since the plan"), "{text}");
    assert_eq!(gw.read("notes/shared.txt").unwrap(), "changed meanwhile\n");
    assert_eq!(gw.task(task_id(&plan)).await["state"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_echo_reports_exit_code_and_stdout() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let plan = gw
        .plan("bot", "run", json!({"argv": ["echo", "hello"]}))
        .await;
    let action = &plan["plan"][0]["action"];
    assert_eq!(action["op"], "run");
    assert_eq!(action["argv"], json!(["echo", "hello"]));
    assert_eq!(action["cwd"], ".");
    assert_eq!(action["timeout_s"], 30);
    assert!(action["network"].is_string(), "{action}");

    let done = gw.execute("bot", &plan).await.ok();
    assert_eq!(done["status"], "succeeded", "{done}");
    let data = &done["observations"][0]["data"];
    assert_eq!(data["exit_code"], 0, "{done}");
    assert_eq!(data["stdout"], "hello\n");
    let stdout: Vec<&Value> = done["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "stdout")
        .collect();
    assert_eq!(stdout.len(), 1, "{done}");
    assert!(
        stdout[0]["media_type"]
            .as_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(fetch_artifact(&gw, stdout[0]).await, b"hello\n");

    // `command` is split without a shell; the same program runs.
    let plan = gw
        .plan("bot", "run", json!({"command": "echo 'two words'"}))
        .await;
    assert_eq!(
        plan["plan"][0]["action"]["argv"],
        json!(["echo", "two words"])
    );
    let done = gw.execute("bot", &plan).await.ok();
    assert_eq!(
        done["observations"][0]["data"]["stdout"], "two words\n",
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_of_a_program_not_in_the_policy_is_denied() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    gw.write("notes/keep.txt", "keep me\n");
    for args in [
        json!({"argv": ["rm", "-rf", "notes"]}),
        json!({"command": "ls -la"}),
        json!({"argv": ["/bin/echo", "hi"]}),
    ] {
        let body = json!({"intent": "run", "args": args});
        let r = gw.bearer("bot", "POST", "/plan", Some(&body)).await;
        let err = r.error(403, "denied");
        assert_eq!(err["rule"], "profiles.default.run.programs", "{}", r.text());
    }
    assert!(
        gw.store()
            .list_tasks(Some("bot"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(gw.read("notes/keep.txt").unwrap(), "keep me\n");
}

/// Pids of live `sleep 30` processes whose environment holds `TEST_RUN_MARK=<mark>` (a run
/// in the bottle sees the workspace as /workspace, so its working folder cannot tell it apart
/// from another test's run; the variable the plan hands in can).
fn sleepers_marked(mark: &str) -> Vec<u32> {
    let wanted = format!("TEST_RUN_MARK={mark}");
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let state = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = state
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        let marked = environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes());
        if cmdline == b"sleep\x0030\x00" && marked && !zombie {
            out.push(pid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_in_the_background_can_be_cancelled() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let mark = uuid::Uuid::new_v4().simple().to_string();
    let plan = gw
        .plan(
            "bot",
            "run",
            json!({"argv": ["sleep", "30"], "env": {"TEST_RUN_MARK": mark}}),
        )
        .await;
    let id = task_id(&plan).to_string();
    let mut events = gw.sse("bot", &format!("/events?task_id={id}"), None).await;
    assert_eq!(events.next().await.kind, "plan.created");

    let body = json!({"task_id": id, "confirm_token": plan["confirm_token"]});
    let r = gw
        .bearer("bot", "POST", "/execute?wait=false", Some(&body))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["status"], "running");
    // Wait until the program really runs.
    loop {
        let e = events.next().await;
        if e.kind == "step.started" {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + GUARD;
    while sleepers_marked(&mark).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sleep never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.task(&id).await["state"], "running");

    let view = gw
        .bearer("bot", "POST", &format!("/tasks/{id}/cancel"), None)
        .await
        .ok();
    assert_eq!(view["state"], "cancelled", "{view}");
    // The run ends long before sleep's 30 s: the hang guard is the only clock.
    let finished = loop {
        let e = events.next().await;
        if e.kind == "task.finished" {
            break e;
        }
    };
    assert_eq!(
        finished.data["data"]["status"], "cancelled",
        "{:?}",
        finished.data
    );
    let view = gw.task(&id).await;
    assert_eq!(view["state"], "cancelled");
    // What the run did is kept: the step that was cut short.
    assert_eq!(view["observations"][0]["ok"], false, "{view}");
    assert!(
        view["observations"][0]["text"]
            .as_str()
            .unwrap()
            .contains("cancelled"),
        "{view}"
    );
    while !sleepers_marked(&mark).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sleep survived the cancel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The cut-short run is on record, signed like any other.
    let record = gw.data_dir.join(format!("bottle/runs/{id}-0.intoto.jsonl"));
    let key = bytebot_bottle::provenance::VerifyingKey::from_file(
        &gw.data_dir.join("bottle/signing.key.pub"),
    )
    .unwrap();
    let run = bytebot_bottle::provenance::verify(&std::fs::read(&record).unwrap(), &key).unwrap();
    assert_eq!(run.predicate.outcome.signal, Some(libc::SIGKILL));
    assert_eq!(run.predicate.argv, ["sleep", "30"]);
    // A cancelled task cannot be executed again.
    gw.execute("bot", &plan).await.error(409, "token_used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_app_shows_its_window_and_a_screenshot() {
    if skip_without("xmessage", "x11-utils") {
        return;
    }
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    assert!(!gw.has_window_of_class("xmessage").await);
    let plan = gw.plan("bot", "open_app", json!({"app": "xmessage"})).await;
    assert_eq!(plan["est_risk"], "medium");
    let ops: Vec<&str> = plan["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["action"]["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["open_app", "settle", "screenshot"]);
    assert!(
        !gw.has_window_of_class("xmessage").await,
        "planning opened the app"
    );

    let done = gw.execute("bot", &plan).await.ok();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(
        gw.has_window_of_class("xmessage").await,
        "{:?}",
        gw.windows().await
    );
    let shots: Vec<&Value> = done["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "screenshot")
        .collect();
    assert_eq!(shots.len(), 1, "{done}");
    assert!(
        fetch_artifact(&gw, shots[0])
            .await
            .starts_with(PNG_SIGNATURE)
    );
}

/// Whether a process on `display` runs `program` with `arg` among its arguments.
fn process_with_arg(display: &str, program: &str, arg: &str) -> bool {
    let want_display = format!("DISPLAY={display}");
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        argv.first()
            .is_some_and(|p| p.ends_with(program.as_bytes()))
            && argv.contains(&arg.as_bytes())
            && environ
                .split(|b| *b == 0)
                .any(|v| v == want_display.as_bytes())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_opens_an_allowed_url_in_the_browser_app() {
    if skip_without("xmessage", "x11-utils") {
        return;
    }
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let url = "https://docs.example.com/gateway-test?x=1";
    let plan = gw.plan("bot", "browse", json!({"url": url})).await;
    let first = &plan["plan"][0];
    assert_eq!(first["action"]["op"], "open_app");
    assert_eq!(first["action"]["app"], "browser");
    assert_eq!(first["action"]["args"], json!([url]));
    let summary = first["summary"].as_str().unwrap();
    assert!(
        summary.contains("docs.example.com") && summary.contains("allowed"),
        "{summary}"
    );

    let done = gw.execute("bot", &plan).await.ok();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(
        gw.has_window_of_class("xmessage").await,
        "{:?}",
        gw.windows().await
    );
    assert!(
        process_with_arg(&gw.display, "xmessage", url),
        "no xmessage on {} shows {url}",
        gw.display
    );
    assert!(
        done["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "screenshot"),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_approves_a_plan() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let plan = gw
        .plan(
            "bot",
            "edit_file",
            json!({"path": "notes/approved.txt", "content": "ok\n"}),
        )
        .await;
    assert_eq!(plan["needs_approval"], true);
    let id = task_id(&plan).to_string();
    let without_token = json!({"task_id": id});

    let r = gw
        .bearer("bot", "POST", "/execute", Some(&without_token))
        .await;
    r.error(403, "approval_required");
    assert!(r.message().contains("/approve/"), "{}", r.text());

    // Neither the planner nor another non-approver may approve.
    for k in ["bot", "other"] {
        let r = gw.bearer(k, "POST", &format!("/approve/{id}"), None).await;
        r.error(403, "not_an_approver");
    }
    gw.assert_not_executed(&id).await;

    let view = gw
        .bearer("person", "POST", &format!("/approve/{id}"), None)
        .await
        .ok();
    assert_eq!(view["approved_by"], "person", "{view}");
    assert_eq!(view["state"], "planned");
    assert!(
        gw.read("notes/approved.txt").is_none(),
        "approving ran the plan"
    );

    let done = gw
        .bearer("bot", "POST", "/execute", Some(&without_token))
        .await
        .ok();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(gw.read("notes/approved.txt").unwrap(), "ok\n");
    // Approved once, run once.
    gw.bearer("bot", "POST", "/execute", Some(&without_token))
        .await
        .error(409, "token_used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_risk_is_auto_approved_where_the_profile_says_so() {
    let mut policy = common::standard_policy();
    policy["profiles"]["default"]["auto_approve"] = json!(["low"]);
    let Some(gw) = TestGateway::builder().policy(policy).start().await else {
        return;
    };
    let plan = gw.plan("bot", "screenshot", json!({})).await;
    assert_eq!(plan["needs_approval"], false);
    let done = gw
        .bearer(
            "bot",
            "POST",
            "/execute",
            Some(&json!({"task_id": plan["task_id"]})),
        )
        .await
        .ok();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["artifacts"][0]["kind"], "screenshot");

    // High risk still needs approval.
    let plan = gw.plan("bot", "run", json!({"argv": ["echo", "hi"]})).await;
    assert_eq!(plan["needs_approval"], true);
    gw.bearer(
        "bot",
        "POST",
        "/execute",
        Some(&json!({"task_id": plan["task_id"]})),
    )
    .await
    .error(403, "approval_required");
    gw.assert_not_executed(task_id(&plan)).await;
}

const SCREENSHOT_EVENTS: [&str; 6] = [
    "plan.created",
    "plan.approved",
    "step.started",
    "artifact",
    "step.finished",
    "task.finished",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_come_in_order_and_resume_after_last_event_id() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let plan = gw.plan("bot", "screenshot", json!({})).await;
    let id = task_id(&plan).to_string();
    let path = format!("/events?task_id={id}");
    let mut sse = gw.sse("bot", &path, None).await;
    let created = sse.next().await;
    assert_eq!(created.kind, "plan.created");
    assert_eq!(created.data["data"]["plan_digest"], plan["plan_digest"]);

    let done = gw.execute("bot", &plan).await.ok();
    assert_eq!(done["status"], "succeeded");
    let mut events = vec![created];
    for _ in 1..SCREENSHOT_EVENTS.len() {
        events.push(sse.next().await);
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, SCREENSHOT_EVENTS);
    for pair in events.windows(2) {
        assert!(pair[0].id < pair[1].id, "ids do not increase: {kinds:?}");
    }
    for e in &events {
        assert_eq!(e.data["task_id"], id.as_str());
        assert_eq!(e.data["id"], e.id);
    }
    assert_eq!(events[3].data["data"]["id"], done["artifacts"][0]["id"]);
    assert_eq!(events[5].data["data"]["status"], "succeeded");

    // Reconnect after the second event: exactly the rest, nothing more.
    let mut again = gw.sse("bot", &path, Some(events[1].id)).await;
    for want in &events[2..] {
        let got = again.next().await;
        assert_eq!((got.id, got.kind.as_str()), (want.id, want.kind.as_str()));
    }
    assert!(
        again
            .next_within(Duration::from_millis(500))
            .await
            .is_none()
    );

    // Another key cannot follow this task.
    let r = gw.bearer("other", "GET", &path, None).await;
    r.error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_gets_the_same_events() {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let plan = gw.plan("bot", "screenshot", json!({})).await;
    let id = task_id(&plan).to_string();
    let mut sse = gw.sse("bot", &format!("/events?task_id={id}"), None).await;

    let ws_url = format!(
        "{}/events/ws?task_id={id}",
        gw.url.replace("http://", "ws://")
    );
    let mut req = ws_url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", gw.key("bot").token).parse().unwrap(),
    );
    let (mut ws, _) = tokio::time::timeout(GUARD, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .unwrap();

    let done = gw.execute("bot", &plan).await.ok();
    assert_eq!(done["status"], "succeeded");
    let mut from_ws = Vec::new();
    while from_ws.len() < SCREENSHOT_EVENTS.len() {
        let msg = tokio::time::timeout(GUARD, ws.next())
            .await
            .expect("a WebSocket message before the hang guard")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = msg {
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            from_ws.push((
                v["id"].as_i64().unwrap(),
                v["kind"].as_str().unwrap().to_string(),
                v,
            ));
        }
    }
    let mut from_sse = Vec::new();
    for _ in 0..SCREENSHOT_EVENTS.len() {
        let e = sse.next().await;
        from_sse.push((e.id, e.kind));
    }
    let ws_pairs: Vec<(i64, String)> = from_ws.iter().map(|(i, k, _)| (*i, k.clone())).collect();
    assert_eq!(ws_pairs, from_sse);
    let kinds: Vec<&str> = ws_pairs.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(kinds, SCREENSHOT_EVENTS);
    for (_, _, v) in &from_ws {
        assert_eq!(v["task_id"], id.as_str());
    }
    ws.close(None).await.ok();

    // Without credentials there is no upgrade.
    let bare = format!(
        "{}/events/ws?task_id={id}",
        gw.url.replace("http://", "ws://")
    );
    let refused = tokio_tungstenite::connect_async(bare.into_client_request().unwrap()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401);
        }
        other => panic!("expected 401, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_list_only_the_profiles_intents() {
    let mut policy = common::standard_policy();
    let mut narrow = common::profile(false);
    narrow["intents"] = json!(["screenshot", "edit_file"]);
    narrow["files"] = json!({"write": ["notes/**"]});
    narrow["auto_approve"] = json!(["low"]);
    policy["profiles"]["narrow"] = narrow;
    let Some(gw) = TestGateway::builder()
        .policy(policy)
        .keys(vec![key("bot", "default"), key("slim", "narrow")])
        .start()
        .await
    else {
        return;
    };
    let caps = gw.bearer("slim", "GET", "/capabilities", None).await.ok();
    assert_eq!(caps["key_id"], "slim");
    assert_eq!(caps["profile"], "narrow");
    let intents: Vec<&String> = caps["intents"].as_object().unwrap().keys().collect();
    assert_eq!(intents, ["edit_file", "screenshot"]);
    assert_eq!(caps["caps"], json!(["screenshot", "fs.write"]));
    assert_eq!(caps["intents"]["screenshot"]["risk"], "low");
    assert_eq!(caps["intents"]["screenshot"]["needs_approval"], false);
    assert_eq!(caps["intents"]["edit_file"]["needs_approval"], true);
    assert_eq!(caps["intents"]["edit_file"]["args"]["type"], "object");
    assert!(caps["limits"]["max_upload_bytes"].is_u64(), "{caps}");
    // What is not listed cannot be planned.
    let r = gw
        .bearer(
            "slim",
            "POST",
            "/plan",
            Some(&json!({"intent": "run", "args": {"argv": ["echo"]}})),
        )
        .await;
    assert_eq!(r.error(403, "denied")["rule"], "profiles.narrow.intents");

    let full = gw.bearer("bot", "GET", "/capabilities", None).await.ok();
    let intents: Vec<&String> = full["intents"].as_object().unwrap().keys().collect();
    assert_eq!(
        intents,
        ["browse", "edit_file", "open_app", "run", "screenshot"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_3_1_with_an_operation_id_everywhere() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let doc = gw.bearer("bot", "GET", "/openapi.json", None).await.ok();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut ids = std::collections::BTreeSet::new();
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(!id.is_empty());
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
            assert!(
                op["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{method} {path} has no description"
            );
        }
    }
    for p in [
        "/capabilities",
        "/plan",
        "/execute",
        "/tasks/{id}",
        "/events",
        "/artifacts/{id}",
    ] {
        assert!(paths.contains_key(p), "{p} missing from the document");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

/// The value of the `plans` counter for an intent and outcome (0 if absent).
fn plans_counter(metrics: &str, intent: &str, outcome: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("bytebot_gateway_plans_total{"))
        .filter(|l| {
            l.contains(&format!("intent=\"{intent}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_plans() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let text = gw.bearer("bot", "GET", "/metrics", None).await.text();
    assert_eq!(plans_counter(&text, "screenshot", "planned"), 0.0);
    gw.plan("bot", "screenshot", json!({})).await;
    gw.plan("bot", "screenshot", json!({})).await;
    gw.bearer(
        "bot",
        "POST",
        "/plan",
        Some(&json!({"intent": "open_app", "args": {"app": "gimp"}})),
    )
    .await
    .error(403, "denied");
    let r = gw.bearer("bot", "GET", "/metrics", None).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert_eq!(plans_counter(&text, "screenshot", "planned"), 2.0, "{text}");
    assert_eq!(plans_counter(&text, "open_app", "denied"), 1.0, "{text}");
    assert!(
        text.contains("bytebot_gateway_http_requests_total{"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sse_stream_of_all_tasks_misses_nothing_under_concurrency() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let mut sse = gw.sse("bot", "/events", None).await;
    let start = gw.store().max_event_id().await.unwrap();

    // Many tasks at once, so their events are published concurrently.
    let one = |i: usize| {
        let gw = &gw;
        async move {
            let plan = if i.is_multiple_of(2) {
                gw.plan("bot", "run", json!({"argv": ["echo", format!("task {i}")]}))
                    .await
            } else {
                gw.plan(
                    "bot",
                    "edit_file",
                    json!({"path": format!("notes/{i}.txt"), "content": "x"}),
                )
                .await
            };
            assert_eq!(gw.execute("bot", &plan).await.ok()["status"], "succeeded");
        }
    };
    let tasks = 24;
    futures_util::future::join_all((0..tasks).map(one)).await;

    let stored: Vec<i64> = gw
        .store()
        .events_after(start, None, Some("bot"), 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    let mut seen = Vec::new();
    while seen.len() < stored.len() {
        match sse.next_within(Duration::from_secs(3)).await {
            Some(e) => seen.push(e.id),
            None => break,
        }
    }
    let missing: Vec<&i64> = stored.iter().filter(|id| !seen.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "the stream skipped events {missing:?} of {}",
        stored.len()
    );
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "ids out of order: {seen:?}"
    );

    // A reconnect from the middle gets exactly the rest.
    let middle = stored[stored.len() / 2];
    let mut again = gw.sse("bot", "/events", Some(middle)).await;
    for want in stored.iter().filter(|id| **id > middle) {
        assert_eq!(again.next().await.id, *want);
    }
    assert!(
        again
            .next_within(Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_survives_a_client_that_hangs_up() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let plan = gw.plan("bot", "run", json!({"argv": ["sleep", "2"]})).await;
    let id = task_id(&plan).to_string();
    let mut events = gw.sse("bot", &format!("/events?task_id={id}"), None).await;

    // The client gives up long before the program ends and closes the connection.
    let body = json!({"task_id": id, "confirm_token": plan["confirm_token"]});
    let impatient = gw
        .http
        .post(format!("{}/execute", gw.url))
        .bearer_auth(&gw.key("bot").token)
        .json(&body)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(
        impatient.is_err(),
        "the request should have timed out: {impatient:?}"
    );

    // The approved run still finishes and says so.
    let finished = loop {
        let e = events.next().await;
        if e.kind == "task.finished" {
            break e;
        }
    };
    assert_eq!(
        finished.data["data"]["status"], "succeeded",
        "{:?}",
        finished.data
    );
    assert_eq!(gw.task(&id).await["state"], "succeeded");
}
