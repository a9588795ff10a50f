//! The `run` intent end to end in the bottle: planned, approved and executed
//! through the gateway's HTTP API, each run confined to a bubblewrap sandbox
//! under the caller's profile. Output and exit codes come back; files outside
//! the workspace stay out of reach; a profile without network gets none; an
//! allow-list goes through the egress proxy, which refuses the rest with 403
//! and audits both; every run leaves a signed provenance record as an
//! artifact. Test names start with `run_` (`cargo nextest run -p
//! bytebot-gateway run` selects them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytebot_bottle::provenance;
use common::{TestGateway, profile, sha256_hex, skip_without_bottle};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body the loopback test host answers with.
const HOST_BODY: &str = "hello from the host";

/// The standard policy with `run` rules replaced by `run` in every profile.
fn policy_with_run(run: Value) -> Value {
    let mut default = profile(false);
    default["run"] = run.clone();
    let mut approver = profile(true);
    approver["run"] = run;
    json!({"profiles": {"default": default, "approver": approver.clone(), "admin": approver}})
}

/// Starts a gateway whose profiles run `programs` with `network` (and
/// `network_private`); `None` (after printing why) when the host cannot run
/// the bottle or the desktop.
async fn gateway(programs: &[&str], network: &[&str], private: &[&str]) -> Option<TestGateway> {
    if skip_without_bottle().await {
        return None;
    }
    TestGateway::builder()
        .policy(policy_with_run(json!({
            "programs": programs,
            "timeout_s": 20,
            "max_timeout_s": 60,
            "memory_mb": 512,
            "processes": 64,
            "network": network,
            "network_private": private,
        })))
        .start()
        .await
}

/// Plans and executes a run as key `bot`; returns the plan and the answer.
async fn run(gw: &TestGateway, args: Value) -> (Value, Value) {
    let plan = gw.plan("bot", "run", args).await;
    let done = gw.execute("bot", &plan).await.ok();
    (plan, done)
}

/// An artifact's bytes, fetched through its signed link.
async fn fetch(gw: &TestGateway, artifact: &Value) -> Vec<u8> {
    let r = gw.download(artifact["url"].as_str().unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.headers["content-type"].to_str().unwrap(),
        artifact["media_type"].as_str().unwrap()
    );
    assert_eq!(sha256_hex(&r.body), artifact["sha256"].as_str().unwrap());
    r.body
}

fn artifacts_of<'a>(done: &'a Value, kind: &str) -> Vec<&'a Value> {
    done["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == kind)
        .collect()
}

/// A plain HTTP server on host loopback that answers every request with
/// [`HOST_BODY`] and records each request line.
async fn host_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                log.lock()
                    .unwrap()
                    .push(text.lines().next().unwrap_or_default().to_string());
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{HOST_BODY}",
                    HOST_BODY.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (port, seen)
}

/// The audit lines of one bottle run.
fn audit_lines(gw: &TestGateway, bottle_id: &str) -> Vec<Value> {
    let path = gw.data_dir.join("bottle/audit.jsonl");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["bottle"] == bottle_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_output_and_a_failing_exit_code_come_back() {
    let Some(gw) = gateway(&["sh"], &[], &[]).await else {
        return;
    };
    let (plan, done) = run(
        &gw,
        json!({"argv": ["sh", "-c", "echo out; echo err >&2; exit 3"]}),
    )
    .await;
    let summary = plan["plan"][0]["summary"].as_str().unwrap();
    assert!(summary.contains("inside the bottle"), "{summary}");
    assert!(summary.contains("64 processes"), "{summary}");
    assert_eq!(done["status"], "failed", "{done}");
    let obs = &done["observations"][0];
    assert_eq!(obs["ok"], false);
    let text = obs["text"].as_str().unwrap();
    assert!(text.contains("exited with code 3"), "{text}");
    assert!(text.contains("stdout:\nout\n"), "{text}");
    assert!(text.contains("stderr:\nerr\n"), "{text}");
    assert_eq!(fetch(&gw, artifacts_of(&done, "stdout")[0]).await, b"out\n");
    assert_eq!(fetch(&gw, artifacts_of(&done, "stderr")[0]).await, b"err\n");
    // The live events carry the output too.
    let id = plan["task_id"].as_str().unwrap();
    let events = gw
        .store()
        .events_after(0, Some(id), None, 100)
        .await
        .unwrap();
    let outputs: Vec<String> = events
        .iter()
        .filter(|e| e.kind == "step.output")
        .map(|e| e.data_json.clone())
        .collect();
    assert!(
        outputs
            .iter()
            .any(|d| d.contains("\"stream\":\"stdout\"") && d.contains("\"text\":\"out\\n\"")),
        "{outputs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_cannot_read_root_or_host_files_outside_the_workspace() {
    let Some(gw) = gateway(&["cat", "ls", "sh"], &[], &[]).await else {
        return;
    };
    // A real host secret: the HMAC secret of key `bot`, in a 0600 file beside the data folder.
    let secret_file = gw.data_dir.parent().unwrap().join("secrets/bot.secret");
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    assert!(secret.starts_with("sec_bot_"));
    gw.write("notes/mine.txt", "readable\n");

    let (_, done) = run(&gw, json!({"argv": ["cat", secret_file.to_str().unwrap()]})).await;
    assert_eq!(done["status"], "failed", "{done}");
    let data = &done["observations"][0]["text"];
    assert!(!data.to_string().contains(secret.trim()), "{done}");
    assert!(data.to_string().contains("No such file"), "{done}");

    for argv in [
        json!(["ls", "/root"]),
        json!(["cat", "/etc/shadow"]),
        json!(["ls", gw.data_dir.to_str().unwrap()]),
    ] {
        let (_, done) = run(&gw, json!({ "argv": argv })).await;
        assert_eq!(done["status"], "failed", "{argv}: {done}");
        let text = done["observations"][0]["text"].as_str().unwrap();
        assert!(text.contains("No such file"), "{argv}: {text}");
    }
    // The same run reads the workspace, which is where it runs.
    let (_, done) = run(&gw, json!({"argv": ["cat", "notes/mine.txt"]})).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["observations"][0]["data"]["stdout"], "readable\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_network_in_the_profile_cannot_connect_anywhere() {
    let Some(gw) = gateway(&["env", "curl"], &[], &[]).await else {
        return;
    };
    let (port, seen) = host_server().await;
    let (plan, done) = run(&gw, json!({"argv": ["env"]})).await;
    let network = plan["plan"][0]["action"]["network"].as_str().unwrap();
    assert!(network.starts_with("none"), "{network}");
    assert_eq!(plan["plan"][0]["action"]["network_allow"], json!([]));
    assert_eq!(done["status"], "succeeded", "{done}");
    let env = done["observations"][0]["data"]["stdout"].as_str().unwrap();
    assert!(env.contains("PWD=/workspace"), "{env}");
    assert!(!env.to_ascii_lowercase().contains("proxy"), "{env}");

    let url = format!("http://127.0.0.1:{port}/direct");
    let (plan, done) = run(
        &gw,
        json!({"argv": ["curl", "-sS", "--max-time", "5", &url]}),
    )
    .await;
    assert_eq!(done["status"], "failed", "{done}");
    // curl: (7) Failed to connect: the sandbox's 127.0.0.1 is its own, empty loopback.
    let text = done["observations"][0]["text"].as_str().unwrap();
    assert!(text.contains("exited with code 7"), "{text}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "the host server was reached"
    );
    // No proxy ran, so nothing was audited for the run.
    let id = format!("{}-0", plan["task_id"].as_str().unwrap());
    assert!(audit_lines(&gw, &id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_an_allow_list_reaches_its_host_through_the_proxy_and_gets_403_elsewhere() {
    let Some(gw) = gateway(&["sh"], &["127.0.0.1"], &["127.0.0.1"]).await else {
        return;
    };
    let (port, seen) = host_server().await;
    // The sandbox's NO_PROXY names 127.0.0.1 (servers inside the sandbox); `--noproxy ''`
    // sends even that through HTTP_PROXY, the way a request to any other host goes.
    let script = format!(
        "env | grep '^HTTP_PROXY='; \
         curl -sS --noproxy '' -w ' %{{http_code}}\\n' http://127.0.0.1:{port}/allowed; \
         curl -sS --noproxy '' -o /dev/null -w '%{{http_code}}\\n' http://denied.example.com/nope"
    );
    let (plan, done) = run(&gw, json!({"argv": ["sh", "-c", script]})).await;
    let action = &plan["plan"][0]["action"];
    assert_eq!(action["network_allow"], json!(["127.0.0.1"]));
    assert_eq!(action["network_private"], json!(["127.0.0.1"]));
    let network = action["network"].as_str().unwrap();
    assert!(
        network.contains("egress proxy") && network.contains("127.0.0.1"),
        "{network}"
    );
    assert_eq!(done["status"], "succeeded", "{done}");
    let data = &done["observations"][0]["data"];
    let stdout = data["stdout"].as_str().unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "HTTP_PROXY=http://127.0.0.1:3128",
            &format!("{HOST_BODY} 200"),
            "403"
        ],
        "{done}"
    );
    // Only the allowed request reached the host.
    assert_eq!(*seen.lock().unwrap(), ["GET /allowed HTTP/1.1".to_string()]);

    let id = format!("{}-0", plan["task_id"].as_str().unwrap());
    assert_eq!(data["bottle_id"], id);
    let audit = audit_lines(&gw, &id);
    assert_eq!(audit.len(), 2, "{audit:?}");
    let allowed = audit.iter().find(|l| l["host"] == "127.0.0.1").unwrap();
    assert_eq!(allowed["decision"], "allow", "{allowed}");
    assert_eq!(allowed["port"], port);
    assert_eq!(allowed["path"], "/allowed");
    assert_eq!(allowed["status"], 200);
    let denied = audit
        .iter()
        .find(|l| l["host"] == "denied.example.com")
        .unwrap();
    assert_eq!(denied["decision"], "deny", "{denied}");
    assert_eq!(denied["status"], 403);
    // The observation and the provenance record carry the same egress summary.
    let egress = &data["egress"];
    assert_eq!(egress["hosts"][0]["host"], "127.0.0.1", "{egress}");
    assert_eq!(
        egress["denied"][0]["host"], "denied.example.com",
        "{egress}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_leaves_a_signed_provenance_artifact_listing_the_file_it_wrote() {
    let Some(gw) = gateway(&["sh"], &[], &[]).await else {
        return;
    };
    gw.write("keep.txt", "unchanged\n");
    let argv = json!(["sh", "-c", "mkdir -p out && echo made > out/result.txt"]);
    let (plan, done) = run(&gw, json!({ "argv": argv })).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(gw.read("out/result.txt").unwrap(), "made\n");

    let records = artifacts_of(&done, "provenance");
    assert_eq!(records.len(), 1, "{done}");
    assert_eq!(records[0]["media_type"], "application/vnd.in-toto+json");
    let bytes = fetch(&gw, records[0]).await;

    let obs = &done["observations"][0];
    let path = obs["data"]["provenance"]["path"].as_str().unwrap();
    assert!(
        obs["text"].as_str().unwrap().contains(path),
        "{}",
        obs["text"]
    );
    assert_eq!(obs["data"]["provenance"]["artifact_id"], records[0]["id"]);
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    assert!(path.starts_with(gw.data_dir.join("bottle/runs").to_str().unwrap()));

    let key =
        provenance::VerifyingKey::from_file(&gw.data_dir.join("bottle/signing.key.pub")).unwrap();
    let verified = provenance::verify(&bytes, &key).unwrap();
    let names: Vec<&str> = verified.subjects.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["out/result.txt"]);
    assert_eq!(verified.subjects[0].sha256(), sha256_hex(b"made\n"));
    let run = &verified.predicate;
    assert_eq!(
        run.bottle_id,
        format!("{}-0", plan["task_id"].as_str().unwrap())
    );
    assert_eq!(run.backend, "bwrap");
    assert_eq!(serde_json::to_value(&run.argv).unwrap(), argv);
    assert_eq!(run.outcome.exit_code, Some(0));
    assert_ne!(run.workspace.before_sha256, run.workspace.after_sha256);
    // A changed byte fails verification.
    let mut tampered = bytes;
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    assert!(provenance::verify(&tampered, &key).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_is_refused_at_plan_time_when_the_bottle_cannot_start() {
    let Some(gw) = TestGateway::builder()
        .gateway(|c| c.bottle_init.clear())
        .start()
        .await
    else {
        return;
    };
    let body = json!({"intent": "run", "args": {"argv": ["echo", "hi"]}});
    let r = gw.bearer("bot", "POST", "/plan", Some(&body)).await;
    r.error(503, "unavailable");
    assert!(r.message().contains("bottle"), "{}", r.text());
    assert!(
        gw.store()
            .list_tasks(Some("bot"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Other intents are not affected.
    gw.plan("bot", "screenshot", json!({})).await;
}
