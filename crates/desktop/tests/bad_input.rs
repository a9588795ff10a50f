//! Bad input and missing auth: clear 4xx answers naming the field, and the
//! daemon keeps serving afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestDesktop;
use serde_json::{Value, json};

async fn expect_400(d: &TestDesktop, body: Value, field: &str, words: &str) {
    let (status, text) = d.act(body.clone()).await;
    assert_eq!(status, 400, "{body} → {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["statusCode"], 400);
    assert_eq!(v["error"], "Bad Request");
    assert_eq!(v["field"], field, "{body} → {text}");
    assert!(
        v["message"].as_str().unwrap().contains(words),
        "{body} → {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_action_gets_a_400_naming_the_field() {
    let Some(d) = TestDesktop::start_with(|c| c.max_text_chars = 50).await else {
        return;
    };
    expect_400(
        &d,
        json!({"action": "teleport"}),
        "action",
        "unknown action",
    )
    .await;
    expect_400(
        &d,
        json!({"coordinates": {"x": 1, "y": 1}}),
        "action",
        "missing",
    )
    .await;
    expect_400(
        &d,
        json!({"action": "click_mouse", "button": "left"}),
        "clickCount",
        "required",
    )
    .await;
    expect_400(
        &d,
        json!({"action": "move_mouse", "coordinates": {"x": "1", "y": 1}}),
        "coordinates.x",
        "invalid type",
    )
    .await;
    expect_400(
        &d,
        json!({"action": "click_mouse", "button": "left", "clickCount": -2}),
        "clickCount",
        "invalid value",
    )
    .await;
    expect_400(
        &d,
        json!({"action": "click_mouse", "button": "left", "clickCount": 100000}),
        "clickCount",
        "out of range",
    )
    .await;
    expect_400(
        &d,
        json!({"action": "wait", "duration": 86_400_000}),
        "duration",
        "out of range",
    )
    .await;
    expect_400(
        &d,
        json!({"action": "scroll", "direction": "sideways", "scrollCount": 1}),
        "direction",
        "unknown variant",
    )
    .await;
    expect_400(
        &d,
        json!({"action": "type_keys", "keys": ["ctrl", "warp"]}),
        "keys[1]",
        "unknown key name",
    )
    .await;
    expect_400(
        &d,
        json!({"action": "click_mouse", "button": "left", "clickCount": 1, "holdKeys": ["nope"]}),
        "holdKeys[0]",
        "unknown key name",
    )
    .await;
    expect_400(
        &d,
        json!({"action": "move_mouse", "coordinates": {"x": 1280, "y": 5}}),
        "coordinates",
        "off the screen",
    )
    .await;
    expect_400(
        &d,
        json!({"action": "move_mouse", "coordinates": {"x": -1, "y": 5}}),
        "coordinates",
        "off the screen",
    )
    .await;
    expect_400(&d, json!({"action": "drag_mouse", "path": [{"x": 1, "y": 1}, {"x": 5000, "y": 1}], "button": "left"}), "path[1]", "off the screen").await;
    expect_400(
        &d,
        json!({"action": "type_text", "text": "x".repeat(51)}),
        "text",
        "over the limit",
    )
    .await;
    expect_400(
        &d,
        json!({"action": "paste_text", "text": "x".repeat(51)}),
        "text",
        "over the limit",
    )
    .await;
    expect_400(
        &d,
        json!({"action": "type_text", "text": "ok", "delay": 999_999}),
        "delay",
        "out of range",
    )
    .await;

    // Not JSON at all.
    let r = d
        .client
        .post(format!("{}/computer-use", d.url))
        .header("content-type", "application/json")
        .body("{\"action\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("not valid JSON"));

    // Still serving, and nothing moved.
    let (status, body) = d.act(json!({"action": "cursor_position"})).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_actions_answer_success_false_like_bytebot() {
    let Some(d) = TestDesktop::start_with(|c| c.max_file_bytes = 16).await else {
        return;
    };
    // Over the cap is refused before the file layer, as a 400 naming data.
    let (status, text) = d.act(json!({"action": "write_file", "path": "big.bin", "data": "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="})).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("max_file_bytes"), "{text}");
    assert!(!d.workspace.join("big.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_needs_the_token() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let anon = reqwest::Client::new();
    for path in [
        "/health",
        "/ready",
        "/metrics",
        "/v1/screenshot",
        "/v1/windows",
        "/v1/screen",
    ] {
        let r = anon.get(format!("{}{path}", d.url)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "unauthorized");
    }
    let r = anon
        .post(format!("{}/computer-use", d.url))
        .json(&json!({"action": "screenshot"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = anon
        .post(format!("{}/computer-use", d.url))
        .bearer_auth("test-token-0123456788")
        .json(&json!({"action": "screenshot"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a token one character off is refused");
    // The query and cookie forms work for browsers.
    let r = anon
        .get(format!("{}/health?token={}", d.url, d.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = anon
        .get(format!("{}/health", d.url))
        .header("cookie", format!("theme=dark; bytebot_token={}", d.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_may_skip_the_token_only_when_configured() {
    let Some(d) = TestDesktop::start_with(|c| c.allow_loopback_without_token = true).await else {
        return;
    };
    let r = reqwest::Client::new()
        .post(format!("{}/computer-use", d.url))
        .json(&json!({"action": "cursor_position"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_report() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    d.act(json!({"action": "move_mouse", "coordinates": {"x": 3, "y": 3}}))
        .await;
    d.act(json!({"action": "teleport"})).await;
    let v: Value = d
        .client
        .get(format!("{}/ready", d.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "ready");
    let m = d
        .client
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("bytebot_desktop_actions_total{action=\"move_mouse\",outcome=\"ok\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("bytebot_desktop_action_duration_seconds_bucket"),
        "{m}"
    );
    assert!(
        m.contains("bytebot_desktop_http_requests_total{status=\"400\"}"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_x_server_is_reported_and_reconnected() {
    if common::skip_without("Xvfb", "xvfb") {
        return;
    }
    // An X server of our own that we can kill and bring back on the same number.
    let num = 700 + (std::process::id() % 200);
    let display = format!(":{num}");
    let start_x = || {
        let child = std::process::Command::new("Xvfb")
            .args([&display, "-screen", "0", "800x600x24", "-nolisten", "tcp"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Generous: under a loaded CI machine Xvfb can take seconds to start.
        for _ in 0..500 {
            if std::path::Path::new(&format!("/tmp/.X11-unix/X{num}")).exists()
                && x11rb::rust_connection::RustConnection::connect(Some(&display)).is_ok()
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child
    };
    let mut x = start_x();
    let Some(d) = TestDesktop::start_with(|c| c.display = Some(display.clone())).await else {
        let _ = x.kill();
        let _ = x.wait();
        return;
    };
    assert_eq!(
        d.client
            .get(format!("{}/ready", d.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    x.kill().unwrap();
    x.wait().unwrap();
    let r = d
        .client
        .get(format!("{}/ready", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let (status, body) = d.act(json!({"action": "cursor_position"})).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("Failed to execute computer action"), "{body}");
    assert_eq!(
        d.client
            .get(format!("{}/health", d.url))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "still serving"
    );
    let mut x = start_x();
    let r = d
        .client
        .get(format!("{}/ready", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "reconnected");
    let (status, _) = d
        .act(json!({"action": "move_mouse", "coordinates": {"x": 10, "y": 10}}))
        .await;
    assert_eq!(status, 201);
    drop(d);
    x.kill().unwrap();
    let _ = x.wait();
}
