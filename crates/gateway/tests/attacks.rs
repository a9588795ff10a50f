//! Attacks on the gateway, each against a real gateway in front of a real
//! desktop: every refusal must have the documented status, error code and a
//! clear message, and must leave nothing executed (the task stays planned,
//! no file is written, no artifact exists).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{LOCAL, TestGateway, bearer, fresh_nonce, hmac_hex, key, now_s, signed, signed_at};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use std::time::Duration;

/// Plans writing `notes/<name>` (a high-risk plan that must not run).
async fn planned_edit(gw: &TestGateway, key_id: &str, name: &str) -> Value {
    let plan = gw
        .plan(
            key_id,
            "edit_file",
            json!({"path": format!("notes/{name}"), "content": "written by the attack\n"}),
        )
        .await;
    assert_eq!(plan["est_risk"], "high", "{plan}");
    assert!(
        gw.read(&format!("notes/{name}")).is_none(),
        "planning wrote the file"
    );
    plan
}

fn execute_body(plan: &Value) -> Vec<u8> {
    json!({"task_id": plan["task_id"], "confirm_token": plan["confirm_token"]})
        .to_string()
        .into_bytes()
}

fn task_id(plan: &Value) -> &str {
    plan["task_id"].as_str().unwrap()
}

/// Nothing ran for the planned edit of `notes/<name>`.
async fn assert_untouched(gw: &TestGateway, plan: &Value, name: &str) {
    gw.assert_not_executed(task_id(plan)).await;
    assert!(
        gw.read(&format!("notes/{name}")).is_none(),
        "the file was written"
    );
    assert_eq!(gw.artifact_files(), 0, "an artifact was stored");
}

/// The refused request did not spend the token: the rightful call still works.
async fn assert_still_executable(gw: &TestGateway, key_id: &str, plan: &Value, name: &str) {
    let done = gw.execute(key_id, plan).await.ok();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        gw.read(&format!("notes/{name}")).unwrap(),
        "written by the attack\n"
    );
}

/// How many tasks a key has in the store.
async fn tasks_of(gw: &TestGateway, key_id: &str) -> usize {
    gw.store()
        .list_tasks(Some(key_id), 1000)
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signature_is_refused() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let plan = planned_edit(&gw, "bot", "badsig.txt").await;
    let body = execute_body(&plan);

    // Signed with a secret that is not the key's.
    let forged = signed(
        "bot",
        "not-the-secret-of-bot-0123456789",
        "POST",
        "/execute",
        &body,
    );
    let r = gw.send("POST", "/execute", forged, body.clone()).await;
    r.error(401, "bad_signature");
    assert!(r.message().contains("signature"), "{}", r.text());
    assert!(r.headers.contains_key("www-authenticate"));

    // The right signature with one hex digit changed.
    let mut h = signed("bot", &gw.key("bot").secret, "POST", "/execute", &body);
    let sig = h["x-bytebot-sig"].to_str().unwrap().to_string();
    let flipped = format!(
        "{}{}",
        &sig[..63],
        if sig.ends_with('0') { '1' } else { '0' }
    );
    h.insert("x-bytebot-sig", HeaderValue::from_str(&flipped).unwrap());
    gw.send("POST", "/execute", h, body.clone())
        .await
        .error(401, "bad_signature");

    // Signed over another path.
    let wrong_path = signed("bot", &gw.key("bot").secret, "POST", "/plan", &body);
    gw.send("POST", "/execute", wrong_path, body.clone())
        .await
        .error(401, "bad_signature");

    assert_untouched(&gw, &plan, "badsig.txt").await;
    // A correct signature over the same request is accepted.
    let good = signed("bot", &gw.key("bot").secret, "POST", "/execute", &body);
    let done = gw.send("POST", "/execute", good, body).await.ok();
    assert_eq!(done["status"], "succeeded", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_future_timestamps_are_refused() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let plan = planned_edit(&gw, "bot", "stale.txt").await;
    let body = execute_body(&plan);
    let secret = gw.key("bot").secret.clone();
    for offset in [-400, 400] {
        let h = signed_at(
            "bot",
            &secret,
            now_s() + offset,
            &fresh_nonce(),
            "POST",
            "/execute",
            &body,
        );
        let r = gw.send("POST", "/execute", h, body.clone()).await;
        r.error(401, "stale_timestamp");
        let m = r.message();
        assert!(
            m.contains("300") && m.contains("clock"),
            "offset {offset}: {m}"
        );
    }
    // Timestamps at the ends of the range are refused the same way, not by a crash.
    for ts in [i64::MIN, i64::MAX, 0] {
        let h = signed_at(
            "bot",
            &secret,
            ts,
            &fresh_nonce(),
            "POST",
            "/execute",
            &body,
        );
        gw.send("POST", "/execute", h, body.clone())
            .await
            .error(401, "stale_timestamp");
    }
    assert_untouched(&gw, &plan, "stale.txt").await;
    assert_still_executable(&gw, "bot", &plan, "stale.txt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_nonce_is_refused() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let secret = gw.key("bot").secret.clone();

    // A replayed plan request creates no second task.
    let body = json!({"intent": "screenshot", "args": {}})
        .to_string()
        .into_bytes();
    let h = signed("bot", &secret, "POST", "/plan", &body);
    gw.send("POST", "/plan", h.clone(), body.clone()).await.ok();
    let r = gw.send("POST", "/plan", h, body.clone()).await;
    r.error(401, "replayed_nonce");
    assert!(r.message().contains("nonce"), "{}", r.text());
    assert_eq!(tasks_of(&gw, "bot").await, 1);

    // The same signed request sent many times at once is accepted once.
    let h = signed("bot", &secret, "POST", "/plan", &body);
    let sends = (0..10).map(|_| gw.send("POST", "/plan", h.clone(), body.clone()));
    let answers = futures_util::future::join_all(sends).await;
    assert_eq!(answers.iter().filter(|r| r.status == 200).count(), 1);
    for r in answers.iter().filter(|r| r.status != 200) {
        r.error(401, "replayed_nonce");
    }
    assert_eq!(tasks_of(&gw, "bot").await, 2);

    // A replayed execute is refused as a replay, before the token is looked at.
    let plan = planned_edit(&gw, "bot", "replay.txt").await;
    let body = execute_body(&plan);
    let h = signed("bot", &secret, "POST", "/execute", &body);
    let done = gw
        .send("POST", "/execute", h.clone(), body.clone())
        .await
        .ok();
    assert_eq!(done["status"], "succeeded", "{done}");
    gw.write("notes/replay.txt", "changed after the first execute\n");
    gw.send("POST", "/execute", h, body)
        .await
        .error(401, "replayed_nonce");
    assert_eq!(
        gw.read("notes/replay.txt").unwrap(),
        "changed after the first execute\n"
    );
    let finished = gw
        .store()
        .events_after(0, Some(task_id(&plan)), None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "task.finished")
        .count();
    assert_eq!(finished, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_is_refused_after_restart() {
    let Some(mut gw) = TestGateway::start().await else {
        return;
    };
    let secret = gw.key("bot").secret.clone();
    let body = json!({"intent": "screenshot", "args": {}})
        .to_string()
        .into_bytes();
    let h = signed("bot", &secret, "POST", "/plan", &body);
    gw.send("POST", "/plan", h.clone(), body.clone()).await.ok();
    let before = gw.url.clone();

    gw.restart_gateway().await;
    assert_ne!(gw.url, before, "a new server answers");
    let r = gw.send("POST", "/plan", h.clone(), body.clone()).await;
    r.error(401, "replayed_nonce");
    assert_eq!(tasks_of(&gw, "bot").await, 1, "the replay planned a task");
    // The same nonce signed again under another timestamp is still a replay (the store keys its
    // SQLite nonce log by time; the cache warmed from it knows the nonce).
    let nonce = h["x-bytebot-nonce"].to_str().unwrap().to_string();
    let ts: i64 = h["x-bytebot-timestamp"].to_str().unwrap().parse().unwrap();
    let retimed = signed_at("bot", &secret, ts + 1, &nonce, "POST", "/plan", &body);
    gw.send("POST", "/plan", retimed, body.clone())
        .await
        .error(401, "replayed_nonce");
    assert_eq!(
        tasks_of(&gw, "bot").await,
        1,
        "the re-timed replay planned a task"
    );

    // The restarted gateway works: a fresh nonce is accepted.
    let fresh = signed("bot", &secret, "POST", "/plan", &body);
    gw.send("POST", "/plan", fresh, body).await.ok();
    assert_eq!(tasks_of(&gw, "bot").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_is_refused() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let plan = planned_edit(&gw, "bot", "unknown.txt").await;
    let body = execute_body(&plan);

    let h = signed(
        "mallory",
        "a-secret-mallory-made-up-0123",
        "POST",
        "/execute",
        &body,
    );
    let r = gw.send("POST", "/execute", h, body.clone()).await;
    r.error(401, "unknown_key");
    assert!(r.message().contains("mallory"), "{}", r.text());

    // A bearer token no key has.
    let r = gw
        .send("POST", "/execute", bearer("tok_mallory_0123456789"), body)
        .await;
    r.error(401, "bad_token");

    assert_untouched(&gw, &plan, "unknown.txt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_credentials() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let plan = planned_edit(&gw, "bot", "noauth.txt").await;
    let id = task_id(&plan).to_string();

    // Every operation the OpenAPI document lists, plus the document itself.
    let doc = gw.bearer(LOCAL, "GET", "/openapi.json", None).await.ok();
    // MCP is not in the OpenAPI document but is behind the same authentication.
    let mut routes: Vec<(String, String)> = vec![
        ("get".into(), "/openapi.json".into()),
        ("post".into(), "/mcp".into()),
    ];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("/artifacts/{id}", "/artifacts/a_missing")
                .replace("{id}", &id)
                .replace("{task_id}", &id);
            routes.push((method.clone(), concrete));
        }
    }
    for must in [
        "/openapi.json",
        "/health",
        "/metrics",
        "/plan",
        "/execute",
        "/events",
    ] {
        assert!(
            routes.iter().any(|(_, p)| p == must),
            "{must} not covered: {routes:?}"
        );
    }
    let body = execute_body(&plan);
    for (method, path) in &routes {
        let method = method.to_uppercase();
        let send = if method == "POST" {
            body.clone()
        } else {
            Vec::new()
        };
        let r = gw.send(&method, path, HeaderMap::new(), send).await;
        r.error(401, "missing_credentials");
        assert!(
            r.message().contains("bearer"),
            "{method} {path}: {}",
            r.text()
        );
        assert!(
            r.headers.contains_key("www-authenticate"),
            "{method} {path}"
        );
    }

    // Neither the execute, the cancel nor the approve without credentials did anything.
    assert_untouched(&gw, &plan, "noauth.txt").await;
    let row = gw.store().get_task(&id).await.unwrap().unwrap();
    assert!(
        row.approved_at.is_none(),
        "approved without credentials: {row:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_body_is_refused() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let a = planned_edit(&gw, "bot", "tamper-a.txt").await;
    let b = planned_edit(&gw, "bot", "tamper-b.txt").await;
    // Signed over executing A, sent as executing B.
    let h = signed(
        "bot",
        &gw.key("bot").secret,
        "POST",
        "/execute",
        &execute_body(&a),
    );
    let r = gw.send("POST", "/execute", h, execute_body(&b)).await;
    r.error(401, "bad_signature");
    assert_untouched(&gw, &a, "tamper-a.txt").await;
    gw.assert_not_executed(task_id(&b)).await;
    assert!(gw.read("notes/tamper-b.txt").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_token_of_another_task_is_refused() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let a = planned_edit(&gw, "bot", "mix-a.txt").await;
    let b = planned_edit(&gw, "bot", "mix-b.txt").await;
    let body = json!({"task_id": a["task_id"], "confirm_token": b["confirm_token"]});
    let r = gw.bearer("bot", "POST", "/execute", Some(&body)).await;
    let err = r.error(409, "token_mismatch");
    assert_eq!(err["field"], "confirm_token");
    assert!(r.message().contains("token"), "{}", r.text());

    assert_untouched(&gw, &a, "mix-a.txt").await;
    gw.assert_not_executed(task_id(&b)).await;
    assert!(gw.read("notes/mix-b.txt").is_none());
    assert_still_executable(&gw, "bot", &a, "mix-a.txt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_token_works_once() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let plan = planned_edit(&gw, "bot", "once.txt").await;
    let first = gw.execute("bot", &plan).await.ok();
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(
        gw.read("notes/once.txt").unwrap(),
        "written by the attack\n"
    );

    // A person changes the file; a second execute must not write it again.
    gw.write("notes/once.txt", "changed by a person\n");
    let artifacts_before = gw.artifact_files();
    let r = gw.execute("bot", &plan).await;
    r.error(409, "token_used");
    assert!(r.message().contains("once"), "{}", r.text());
    assert_eq!(gw.read("notes/once.txt").unwrap(), "changed by a person\n");
    assert_eq!(gw.artifact_files(), artifacts_before);
    let kinds: Vec<String> = gw
        .store()
        .events_after(0, Some(task_id(&plan)), None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "task.finished").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "plan.approved").count(),
        1,
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn args_changed_after_approval_are_refused() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let plan = planned_edit(&gw, "bot", "swap.txt").await;
    let token = plan["confirm_token"].clone();
    let id = plan["task_id"].clone();

    let swapped = [
        json!({"path": "notes/swap.txt", "content": "swapped after approval\n"}),
        json!({"path": "notes/other.txt", "content": "written by the attack\n"}),
    ];
    for args in swapped {
        let body =
            json!({"task_id": id, "confirm_token": token, "intent": "edit_file", "args": args});
        let r = gw.bearer("bot", "POST", "/execute", Some(&body)).await;
        let err = r.error(409, "plan_mismatch");
        assert_eq!(err["field"], "args");
        assert!(r.message().contains("plan again"), "{}", r.text());
    }
    let other_intent = json!({"task_id": id, "confirm_token": token, "intent": "run",
        "args": {"argv": ["echo", "pwned"]}});
    let r = gw
        .bearer("bot", "POST", "/execute", Some(&other_intent))
        .await;
    assert_eq!(r.error(409, "plan_mismatch")["field"], "intent");

    assert_untouched(&gw, &plan, "swap.txt").await;
    assert!(gw.read("notes/other.txt").is_none());

    // Sending the planned arguments unchanged is allowed.
    let same = json!({"task_id": id, "confirm_token": token, "intent": "edit_file",
        "args": {"path": "notes/swap.txt", "content": "written by the attack\n"}});
    let done = gw.bearer("bot", "POST", "/execute", Some(&same)).await.ok();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        gw.read("notes/swap.txt").unwrap(),
        "written by the attack\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_confirm_token_is_refused() {
    let Some(gw) = TestGateway::builder()
        .gateway(|c| c.confirm_ttl_s = 1)
        .start()
        .await
    else {
        return;
    };
    let plan = planned_edit(&gw, "bot", "expired.txt").await;
    assert!(
        plan["expires_at"].as_i64().unwrap() <= now_s() + 1,
        "{plan}"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = gw.execute("bot", &plan).await;
    r.error(410, "token_expired");
    assert!(r.message().contains("expired"), "{}", r.text());
    assert_eq!(gw.task(task_id(&plan)).await["state"], "expired");
    assert_untouched(&gw, &plan, "expired.txt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_of_another_key_is_refused() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let plan = planned_edit(&gw, "bot", "wrongkey.txt").await;
    // Key `other` holds bot's token (leaked) and tries to run bot's plan.
    let r = gw.execute("other", &plan).await;
    r.error(403, "wrong_key");
    assert!(r.message().contains("another key"), "{}", r.text());
    // It cannot even see the task.
    gw.bearer("other", "GET", &format!("/tasks/{}", task_id(&plan)), None)
        .await
        .error(404, "not_found");
    assert_untouched(&gw, &plan, "wrongkey.txt").await;
    assert_still_executable(&gw, "bot", &plan, "wrongkey.txt").await;
}

/// Plans as `bot` and expects a policy refusal naming `rule`; nothing may be stored.
async fn assert_denied(gw: &TestGateway, intent: &str, args: Value, rule: &str) {
    let body = json!({"intent": intent, "args": args});
    let r = gw.bearer("bot", "POST", "/plan", Some(&body)).await;
    let err = r.error(403, "denied");
    assert_eq!(err["rule"], rule, "{}", r.text());
    assert!(r.message().contains("denied by policy"), "{}", r.text());
    assert_eq!(tasks_of(gw, "bot").await, 0, "a denied plan was stored");
    assert_eq!(gw.artifact_files(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_denies_an_intent() {
    let mut policy = common::standard_policy();
    policy["profiles"]["default"]["intents"] = json!(["screenshot", "edit_file"]);
    let Some(gw) = TestGateway::builder().policy(policy).start().await else {
        return;
    };
    assert_denied(
        &gw,
        "run",
        json!({"argv": ["echo", "hi"]}),
        "profiles.default.intents",
    )
    .await;
    assert_denied(
        &gw,
        "open_app",
        json!({"app": "xmessage"}),
        "profiles.default.intents",
    )
    .await;
    assert!(!gw.has_window_of_class("xmessage").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_denies_an_app() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    assert_denied(
        &gw,
        "open_app",
        json!({"app": "terminal"}),
        "profiles.default.apps",
    )
    .await;
    // The browser app is not an open_app app either.
    assert_denied(
        &gw,
        "open_app",
        json!({"app": "browser"}),
        "profiles.default.apps",
    )
    .await;
    assert!(!gw.has_window_of_class("xmessage").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_denies_a_host() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    // On the deny list (which wins over the `*.example.com` allow).
    assert_denied(
        &gw,
        "browse",
        json!({"url": "https://secret.example.com/admin"}),
        "profiles.default.browse.deny[0]",
    )
    .await;
    // Not on the allow list; look-alikes of allowed hosts included.
    for url in [
        "https://evil.test/",
        "https://example.com.evil.test/",
        "https://notexample.com/",
        "http://127.0.0.1:9990/",
    ] {
        assert_denied(
            &gw,
            "browse",
            json!({"url": url}),
            "profiles.default.browse.allow",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_denies_a_path() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    // The write globs are `notes/**`.
    for path in ["secrets.txt", "config/policy.json", "notesx/a.txt"] {
        assert_denied(
            &gw,
            "edit_file",
            json!({"path": path, "content": "x"}),
            "profiles.default.files.write",
        )
        .await;
        assert!(gw.read(path).is_none(), "{path} was written");
    }
    // Inside the globs but over the size cap (65536 bytes).
    assert_denied(
        &gw,
        "edit_file",
        json!({"path": "notes/big.txt", "content": "x".repeat(70_000)}),
        "profiles.default.files.max_bytes",
    )
    .await;
    assert!(gw.read("notes/big.txt").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_is_refused() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let outside = gw.workspace.parent().unwrap().join("x");
    let passwd = std::fs::read("/etc/passwd").ok();
    for path in ["../x", "/etc/passwd", "a/../../x", "notes/../../x"] {
        let body = json!({"intent": "edit_file", "args": {"path": path, "content": "pwned\n"}});
        let r = gw.bearer("bot", "POST", "/plan", Some(&body)).await;
        let err = r.error(422, "bad_request");
        assert_eq!(err["field"], "args.path", "{path}: {}", r.text());
        assert!(
            r.message().contains("workspace") || r.message().contains(".."),
            "{}",
            r.text()
        );
    }
    assert_eq!(tasks_of(&gw, "bot").await, 0);
    assert!(!outside.exists());
    assert_eq!(std::fs::read("/etc/passwd").ok(), passwd);

    // A symlink inside the workspace that leads out of it.
    let escape = gw.workspace.parent().unwrap().join("escape");
    std::fs::create_dir(&escape).unwrap();
    std::fs::create_dir_all(gw.file("notes")).unwrap();
    std::os::unix::fs::symlink(&escape, gw.file("notes/link")).unwrap();
    let body =
        json!({"intent": "edit_file", "args": {"path": "notes/link/x.txt", "content": "pwned\n"}});
    let r = gw.bearer("bot", "POST", "/plan", Some(&body)).await;
    assert_eq!(r.error(422, "bad_request")["field"], "args.path");
    assert!(
        r.message().contains("outside the workspace"),
        "{}",
        r.text()
    );
    assert_eq!(tasks_of(&gw, "bot").await, 0);
    assert!(!escape.join("x.txt").exists());

    // A symlink planted between plan and execute: the run fails, nothing is written outside.
    let plan = gw
        .plan(
            "bot",
            "edit_file",
            json!({"path": "notes/later/x.txt", "content": "pwned\n"}),
        )
        .await;
    std::os::unix::fs::symlink(&escape, gw.file("notes/later")).unwrap();
    let done = gw.execute("bot", &plan).await.ok();
    assert_eq!(done["status"], "failed", "{done}");
    assert!(!escape.join("x.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_refused() {
    let Some(gw) = TestGateway::builder()
        .gateway(|c| c.max_body_bytes = 4096)
        .start()
        .await
    else {
        return;
    };
    let big = json!({"intent": "edit_file", "args": {"path": "notes/big.txt", "content": "x".repeat(10_000)}});
    let r = gw.bearer("bot", "POST", "/plan", Some(&big)).await;
    r.error(413, "too_large");
    assert!(r.message().contains("max_body_bytes"), "{}", r.text());
    // Signed too: the size is checked before anything else.
    gw.signed("bot", "POST", "/plan", Some(&big))
        .await
        .error(413, "too_large");
    assert_eq!(tasks_of(&gw, "bot").await, 0);
    assert!(gw.read("notes/big.txt").is_none());
    // Just under the limit is fine.
    let fits = json!({"intent": "edit_file", "args": {"path": "notes/big.txt", "content": "x".repeat(3000)}});
    gw.bearer("bot", "POST", "/plan", Some(&fits)).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_refused() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let plan = planned_edit(&gw, "bot", "malformed.txt").await;
    let token = bearer(&gw.key("bot").token);
    for (path, body) in [
        ("/plan", r#"{"intent": "screenshot", "#.to_string()),
        ("/plan", "not json at all".to_string()),
        ("/plan", r#"{"intent": "screenshot"} trailing"#.to_string()),
        (
            "/execute",
            format!(r#"{{"task_id": "{}", "confirm_token": "#, task_id(&plan)),
        ),
    ] {
        let r = gw
            .send("POST", path, token.clone(), body.into_bytes())
            .await;
        r.error(400, "malformed_json");
        assert!(r.message().contains("json"), "{}", r.text());
    }
    assert_eq!(tasks_of(&gw, "bot").await, 1);
    assert_untouched(&gw, &plan, "malformed.txt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_intent_is_refused() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let body = json!({"intent": "format_disk", "args": {}});
    let r = gw.bearer("bot", "POST", "/plan", Some(&body)).await;
    let err = r.error(422, "unknown_intent");
    assert_eq!(err["field"], "intent");
    let m = r.message();
    assert!(m.contains("format_disk") && m.contains("screenshot"), "{m}");
    assert_eq!(tasks_of(&gw, "bot").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_field_in_args_is_refused() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let cases = [
        (
            json!({"intent": "screenshot", "args": {"windw": "desktop"}}),
            "windw",
        ),
        (
            json!({"intent": "edit_file", "args": {"path": "notes/a.txt", "content": "x", "mode": "0777"}}),
            "mode",
        ),
        (
            json!({"intent": "edit_file", "args": {"path": "notes/a.txt", "edits": [{"find": "a", "replace": "b", "all": true}]}}),
            "all",
        ),
        (
            json!({"intent": "run", "args": {"argv": ["echo"], "shell": true}}),
            "shell",
        ),
        (
            json!({"intent": "screenshot", "args": {}, "force": true}),
            "force",
        ),
    ];
    for (body, name) in cases {
        let r = gw.bearer("bot", "POST", "/plan", Some(&body)).await;
        let err = r.error(422, "bad_request");
        assert!(r.message().contains(name), "{name}: {}", r.text());
        assert!(err["field"].is_string(), "{}", r.text());
    }
    assert_eq!(tasks_of(&gw, "bot").await, 0);

    // An unknown field on /execute is refused too, and nothing runs.
    let plan = planned_edit(&gw, "bot", "unknown-field.txt").await;
    let body =
        json!({"task_id": plan["task_id"], "confirm_token": plan["confirm_token"], "force": true});
    let r = gw.bearer("bot", "POST", "/execute", Some(&body)).await;
    r.error(422, "bad_request");
    assert!(r.message().contains("force"), "{}", r.text());
    assert_untouched(&gw, &plan, "unknown-field.txt").await;
}

/// The draft integration's signature: hex HMAC of the body alone.
fn legacy_headers(key_id: Option<&str>, secret: &str, body: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(id) = key_id {
        h.insert("x-bytebot-key-id", HeaderValue::from_str(id).unwrap());
    }
    h.insert(
        "x-bytebot-sig",
        HeaderValue::from_str(&hmac_hex(secret.as_bytes(), body)).unwrap(),
    );
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_body_signature_only_where_allowed() {
    let Some(gw) = TestGateway::builder()
        .keys(vec![key("bot", "default"), key("old", "default").legacy()])
        .start()
        .await
    else {
        return;
    };
    let body = json!({"intent": "screenshot", "args": {}})
        .to_string()
        .into_bytes();

    // A key without legacy_body_signature: refused, however correct the HMAC.
    let bot = gw.key("bot").secret.clone();
    let r = gw
        .send(
            "POST",
            "/plan",
            legacy_headers(Some("bot"), &bot, &body),
            body.clone(),
        )
        .await;
    r.error(401, "bad_header");
    assert!(
        r.message().contains("legacy_body_signature"),
        "{}",
        r.text()
    );
    let r = gw
        .send(
            "POST",
            "/plan",
            legacy_headers(None, &bot, &body),
            body.clone(),
        )
        .await;
    r.error(401, "bad_header");
    assert_eq!(tasks_of(&gw, "bot").await, 0);

    // The legacy key: accepted with the right HMAC, refused with a wrong one.
    let old = gw.key("old").secret.clone();
    let planned = gw
        .send(
            "POST",
            "/plan",
            legacy_headers(Some("old"), &old, &body),
            body.clone(),
        )
        .await
        .ok();
    assert_eq!(
        planned["plan"][0]["action"]["op"], "screenshot",
        "{planned}"
    );
    let wrong = legacy_headers(Some("old"), "not-the-secret-of-old-012345", &body);
    gw.send("POST", "/plan", wrong, body.clone())
        .await
        .error(401, "bad_header");
    assert_eq!(tasks_of(&gw, "old").await, 1);
    let caps = gw
        .send(
            "GET",
            "/capabilities",
            legacy_headers(Some("old"), &old, b""),
            Vec::new(),
        )
        .await
        .ok();
    assert_eq!(caps["key_id"], "old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429() {
    let mut policy = common::standard_policy();
    policy["profiles"]["default"]["rate_limit"] = json!({"per_minute": 1, "burst": 3});
    let Some(gw) = TestGateway::builder().policy(policy).start().await else {
        return;
    };
    let plan = planned_edit(&gw, "bot", "ratelimit.txt").await; // 1
    gw.bearer("bot", "GET", "/capabilities", None).await.ok(); // 2
    gw.signed("bot", "GET", "/capabilities", None).await.ok(); // 3
    let r = gw.execute("bot", &plan).await; // 4: over the burst
    r.error(429, "rate_limited");
    assert!(r.message().contains("rate limit"), "{}", r.text());
    gw.signed("bot", "GET", "/capabilities", None)
        .await
        .error(429, "rate_limited");
    // Per key: another key with the same profile is not limited by bot's use.
    gw.bearer("other", "GET", "/capabilities", None).await.ok();
    assert_untouched(&gw, &plan, "ratelimit.txt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_executes_of_one_token_run_once() {
    let Some(gw) = TestGateway::start().await else {
        return;
    };
    let plan = gw.plan("bot", "screenshot", json!({})).await;
    let calls = (0..20).map(|_| gw.execute("bot", &plan));
    let answers = futures_util::future::join_all(calls).await;
    let ok: Vec<_> = answers.iter().filter(|r| r.status == 200).collect();
    let conflicts: Vec<_> = answers.iter().filter(|r| r.status == 409).collect();
    assert_eq!(
        ok.len(),
        1,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(conflicts.len(), 19);
    for r in conflicts {
        r.error(409, "token_used");
    }
    assert_eq!(ok[0].json()["status"], "succeeded");
    let id = task_id(&plan);
    let finished = gw
        .store()
        .events_after(0, Some(id), None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "task.finished")
        .count();
    assert_eq!(finished, 1);
    assert_eq!(gw.store().task_artifacts(id).await.unwrap().len(), 1);
    assert_eq!(gw.artifact_files(), 1);
}
