//! The `application` action against a real X server and window manager:
//! launch, focus instead of a second copy, show the desktop, bad names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytebot_desktop::config::AppSpec;
use common::{TestDesktop, skip_without};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn app(cmd: &[&str], class: &str) -> AppSpec {
    AppSpec {
        command: cmd.iter().map(|s| s.to_string()).collect(),
        window_class: Some(class.to_string()),
    }
}

async fn start() -> Option<TestDesktop> {
    if skip_without("xmessage", "x11-utils") || skip_without("openbox", "openbox") {
        return None;
    }
    TestDesktop::start_with(|c| {
        c.applications.insert(
            "hello".into(),
            app(
                &["xmessage", "-geometry", "+200+200", "hello from bytebot"],
                "xmessage",
            ),
        );
        c.applications.insert(
            "ghost".into(),
            app(&["bytebot-no-such-program", "--flag"], "ghost"),
        );
        c.applications
            .insert("quitter".into(), app(&["false"], "never-a-window"));
    })
    .await
}

async fn windows(d: &TestDesktop, class: &str) -> Vec<Value> {
    let v: Value = d
        .client
        .get(format!("{}/v1/windows", d.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["windows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| {
            w["class"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c.as_str().unwrap().eq_ignore_ascii_case(class))
        })
        .cloned()
        .collect()
}

/// Polls `check` for up to 3 s.
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn showing_desktop(d: &TestDesktop) -> bool {
    let out = d
        .command("xprop")
        .args(["-root", "_NET_SHOWING_DESKTOP"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().ends_with("= 1")
}

#[tokio::test]
async fn launches_focuses_and_shows_the_desktop() {
    let Some(d) = start().await else { return };

    let (status, text) = d
        .act(json!({"action": "application", "application": "hello"}))
        .await;
    assert_eq!(status, 201, "{text}");
    // We wait for the window before answering, so it is there now.
    let list = windows(&d, "xmessage").await;
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].clone();

    // Again (in another spelling): the same window, not a second copy.
    let (status, text) = d
        .act(json!({"action": "application", "application": "Hello"}))
        .await;
    assert_eq!(status, 201, "{text}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let list = windows(&d, "xmessage").await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], id);

    // `desktop` minimises everything.
    let (status, text) = d
        .act(json!({"action": "application", "application": "desktop"}))
        .await;
    assert_eq!(status, 201, "{text}");
    let hidden = eventually(async || {
        showing_desktop(&d)
            || windows(&d, "xmessage")
                .await
                .iter()
                .all(|w| w["minimized"] == true)
    })
    .await;
    assert!(
        hidden,
        "the desktop is not shown: {:?}",
        windows(&d, "xmessage").await
    );

    // Asking for the app brings its window back, focused.
    let (status, _) = d
        .act(json!({"action": "application", "application": "hello"}))
        .await;
    assert_eq!(status, 201);
    let back = eventually(async || {
        let list = windows(&d, "xmessage").await;
        list.len() == 1 && list[0]["active"] == true && list[0]["minimized"] == false
    })
    .await;
    assert!(back, "{:?}", windows(&d, "xmessage").await);
}

#[tokio::test]
async fn bad_names_and_programs_are_explained() {
    let Some(d) = start().await else { return };

    let (status, text) = d
        .act(json!({"action": "application", "application": "notepad"}))
        .await;
    assert_eq!(status, 400, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["field"], "application");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("notepad")
            && message.contains("hello")
            && message.contains("desktop.applications"),
        "{message}"
    );

    let (status, text) = d
        .act(json!({"action": "application", "application": "ghost"}))
        .await;
    assert_eq!(status, 500, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("desktop.applications.ghost.command")
            && message.contains("bytebot-no-such-program"),
        "{message}"
    );

    // A program that quits with an error before any window says so.
    let started = Instant::now();
    let (status, text) = d
        .act(json!({"action": "application", "application": "quitter"}))
        .await;
    assert_eq!(status, 500, "{text}");
    assert!(
        text.contains("desktop.applications.quitter.command"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "did not wait out the window timeout"
    );
}
