//! The event stream and input tracking, on a real Xvfb: a person's input
//! (xdotool, from outside the daemon) is reported; our own API actions are not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestDesktop, skip_without};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A `/v1/events` connection, read frame by frame.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(d: &TestDesktop, last_event_id: Option<&str>) -> Self {
        let mut req = d.client.get(format!("{}/v1/events", d.url));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (its `id:` and parsed `data:`), or `None` at the deadline.
    async fn next(&mut self, deadline: Instant) -> Option<(Option<u64>, Value)> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                // Frames without data are keep-alive comments.
                if !data.is_empty() {
                    return Some((id, serde_json::from_str(&data).unwrap()));
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(chunk))) => self
                    .buf
                    .push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n")),
                Ok(Ok(None)) => panic!("the event stream ended"),
                Ok(Err(e)) => panic!("reading the event stream failed: {e}"),
                Err(_) => return None,
            }
        }
    }

    /// Collects events until `done` says so (inclusive); panics at the deadline.
    async fn until(
        &mut self,
        what: &str,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Vec<(Option<u64>, Value)> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut seen = Vec::new();
        loop {
            let Some((id, v)) = self.next(deadline).await else {
                panic!("no {what} within 15 s; got {seen:#?}");
            };
            let stop = done(&v);
            seen.push((id, v));
            if stop {
                return seen;
            }
        }
    }
}

async fn xdotool(d: &TestDesktop, args: &[&str]) {
    let mut cmd = tokio::process::Command::from(d.command("xdotool"));
    let status = cmd.args(args).status().await.unwrap();
    assert!(status.success(), "xdotool {args:?} failed");
}

async fn post(d: &TestDesktop, path: &str) -> (u16, Value) {
    let r = d
        .client
        .post(format!("{}{path}", d.url))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn is_input(v: &Value) -> bool {
    v["type"] == "input"
}

fn is_button(v: &Value, down: bool, x: f64, y: f64) -> bool {
    is_input(v)
        && v["kind"] == "button"
        && v["button"] == "left"
        && v["down"] == down
        && v["coordinates"] == json!({ "x": x, "y": y })
}

fn is_key(v: &Value, key: &str, down: bool) -> bool {
    is_input(v) && v["kind"] == "key" && v["key"] == key && v["down"] == down
}

fn tools_missing() -> bool {
    skip_without("xdotool", "xdotool")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_input_is_reported() {
    if tools_missing() {
        return;
    }
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let (status, body) = post(&d, "/v1/input-tracking/start").await;
    assert_eq!(
        (status, &body),
        (200, &json!({ "tracking": true, "changed": true }))
    );
    // Starting twice is fine and changes nothing.
    let (status, body) = post(&d, "/v1/input-tracking/start").await;
    assert_eq!(
        (status, &body),
        (200, &json!({ "tracking": true, "changed": false }))
    );
    let r = d
        .client
        .get(format!("{}/v1/input-tracking", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({ "tracking": true })
    );

    let mut events = Events::open(&d, Some("0")).await;
    xdotool(&d, &["mousemove", "100", "150", "click", "1"]).await;
    xdotool(&d, &["key", "a"]).await;

    let seen = events.until("key a up", |v| is_key(v, "a", false)).await;
    let values: Vec<&Value> = seen.iter().map(|(_, v)| v).collect();
    // The first tracking event comes first and only once.
    let tracking: Vec<&&Value> = values.iter().filter(|v| v["type"] == "tracking").collect();
    assert_eq!(tracking, [&&json!({ "type": "tracking", "enabled": true })]);
    let pos = |f: &dyn Fn(&Value) -> bool| values.iter().position(|v| f(v));
    let down = pos(&|v| is_button(v, true, 100.0, 150.0)).expect("button down at (100,150)");
    let up = pos(&|v| is_button(v, false, 100.0, 150.0)).expect("button up at (100,150)");
    let key_down = pos(&|v| is_key(v, "a", true)).expect("key a down");
    let key_up = values.len() - 1;
    assert!(
        down < up && up < key_down && key_down < key_up,
        "{values:#?}"
    );
    // The move to (100,150) is reported before the click.
    let moved = pos(&|v| {
        is_input(v)
            && v["kind"] == "mouse_move"
            && v["coordinates"] == json!({ "x": 100.0, "y": 150.0 })
    });
    assert!(moved.is_some_and(|m| m < down), "{values:#?}");
    // Ids rise by one, and input carries a wall-clock time.
    let ids: Vec<u64> = seen.iter().map(|(id, _)| id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let at = values[down]["at_ms"].as_u64().unwrap();
    assert!(at <= now_ms && now_ms - at < 60_000, "{at} vs {now_ms}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wheel_notches_are_scrolls_on_press_only() {
    if tools_missing() {
        return;
    }
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    assert_eq!(post(&d, "/v1/input-tracking/start").await.0, 200);
    let mut events = Events::open(&d, Some("0")).await;
    xdotool(&d, &["mousemove", "200", "220", "click", "5", "click", "4"]).await;
    xdotool(&d, &["key", "Return"]).await;
    let seen = events
        .until("key Return up", |v| is_key(v, "Return", false))
        .await;
    let scrolls: Vec<&Value> = seen
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["kind"] == "scroll")
        .collect();
    let at = json!({ "x": 200.0, "y": 220.0 });
    assert_eq!(scrolls.len(), 2, "{seen:#?}");
    assert_eq!(
        (&scrolls[0]["direction"], &scrolls[0]["coordinates"]),
        (&json!("down"), &at)
    );
    assert_eq!(
        (&scrolls[1]["direction"], &scrolls[1]["coordinates"]),
        (&json!("up"), &at)
    );
    assert!(
        !seen.iter().any(|(_, v)| v["kind"] == "button"),
        "wheel buttons are not buttons: {seen:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_actions_are_not_reported_as_input() {
    if tools_missing() {
        return;
    }
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    assert_eq!(post(&d, "/v1/input-tracking/start").await.0, 200);
    let actions = [
        json!({ "action": "move_mouse", "coordinates": { "x": 300, "y": 300 } }),
        json!({ "action": "click_mouse", "coordinates": { "x": 310, "y": 310 }, "button": "left", "clickCount": 2 }),
        json!({ "action": "scroll", "coordinates": { "x": 320, "y": 320 }, "direction": "down", "scrollCount": 2 }),
        json!({ "action": "type_keys", "keys": ["b"] }),
        json!({ "action": "type_text", "text": "xyz" }),
        json!({ "action": "drag_mouse", "path": [{ "x": 330, "y": 330 }, { "x": 340, "y": 340 }], "button": "left" }),
    ];
    for a in &actions {
        let (status, body) = d.act(a.clone()).await;
        assert_eq!(status, 201, "{a}: {body}");
    }
    // Past the injection window, a person clicks: that one is reported.
    tokio::time::sleep(Duration::from_millis(300)).await;
    xdotool(&d, &["mousemove", "100", "150", "click", "1"]).await;

    let mut events = Events::open(&d, Some("0")).await;
    let seen = events
        .until("the person's click", |v| is_button(v, false, 100.0, 150.0))
        .await;
    let values: Vec<&Value> = seen.iter().map(|(_, v)| v).collect();
    let api_actions = values
        .iter()
        .filter(|v| v["type"] == "action" && v["ok"] == true)
        .count();
    assert_eq!(api_actions, actions.len(), "{values:#?}");
    for v in &values {
        if !is_input(v) {
            continue;
        }
        assert_ne!(v["kind"], "key", "our typing was reported: {values:#?}");
        assert_ne!(v["kind"], "scroll", "our scroll was reported: {values:#?}");
        let x = v["coordinates"]["x"].as_f64().unwrap();
        assert!(x < 300.0, "our pointer input was reported: {v}");
    }
    assert!(values.iter().any(|v| is_button(v, true, 100.0, 150.0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_reporting_and_start_resumes_it() {
    if tools_missing() {
        return;
    }
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    // Stopping when off is fine.
    assert_eq!(
        post(&d, "/v1/input-tracking/stop").await,
        (200, json!({ "tracking": false, "changed": false }))
    );
    // Not tracking yet: this click is not reported.
    xdotool(&d, &["mousemove", "50", "60", "click", "1"]).await;
    assert_eq!(post(&d, "/v1/input-tracking/start").await.0, 200);
    xdotool(&d, &["mousemove", "100", "150", "click", "1"]).await;
    let mut events = Events::open(&d, Some("0")).await;
    events
        .until("the click while tracking", |v| {
            is_button(v, false, 100.0, 150.0)
        })
        .await;

    assert_eq!(
        post(&d, "/v1/input-tracking/stop").await,
        (200, json!({ "tracking": false, "changed": true }))
    );
    let r = d
        .client
        .get(format!("{}/v1/input-tracking", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({ "tracking": false })
    );
    xdotool(&d, &["mousemove", "200", "250", "click", "1"]).await;
    xdotool(&d, &["key", "a"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // An API action marks the end of what to look at.
    assert_eq!(d.act(json!({ "action": "cursor_position" })).await.0, 201);
    let after_stop = events
        .until("the marker action", |v| v["type"] == "action")
        .await;
    let values: Vec<&Value> = after_stop.iter().map(|(_, v)| v).collect();
    assert_eq!(
        values.first(),
        Some(&&json!({ "type": "tracking", "enabled": false })),
        "{values:#?}"
    );
    assert!(
        !values.iter().any(|v| is_input(v)),
        "input after stop: {values:#?}"
    );

    // And on again; past the marker action's injection window, a person clicks.
    assert_eq!(
        post(&d, "/v1/input-tracking/start").await,
        (200, json!({ "tracking": true, "changed": true }))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    xdotool(&d, &["mousemove", "400", "410", "click", "1"]).await;
    let again = events
        .until("the click after restart", |v| {
            is_button(v, false, 400.0, 410.0)
        })
        .await;
    assert_eq!(again[0].1, json!({ "type": "tracking", "enabled": true }));

    // The full history never showed the click made before tracking began.
    let mut all = Events::open(&d, Some("0")).await;
    let everything = all
        .until("the last click", |v| is_button(v, false, 400.0, 410.0))
        .await;
    assert!(
        !everything
            .iter()
            .any(|(_, v)| is_button(v, true, 50.0, 60.0) || is_button(v, true, 200.0, 250.0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_from_the_right_place() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    for _ in 0..4 {
        assert_eq!(d.act(json!({ "action": "cursor_position" })).await.0, 201);
    }
    let mut first = Events::open(&d, Some("0")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let (id, v) = first.next(deadline).await.expect("an event");
        assert_eq!(v["type"], "action");
        ids.push(id.expect("every event has an id"));
    }
    drop(first);

    let second = ids[1].to_string();
    let mut resumed = Events::open(&d, Some(&second)).await;
    let (id, _) = resumed.next(deadline).await.unwrap();
    assert_eq!(id, Some(ids[2]));
    let (id, _) = resumed.next(deadline).await.unwrap();
    assert_eq!(id, Some(ids[3]));
    // Then live events follow.
    assert_eq!(d.act(json!({ "action": "cursor_position" })).await.0, 201);
    let (id, v) = resumed.next(deadline).await.unwrap();
    assert_eq!(
        (id, &v["action"]),
        (Some(ids[3] + 1), &json!("cursor_position"))
    );

    // Without the header: live events only.
    let mut live = Events::open(&d, None).await;
    assert!(
        live.next(Instant::now() + Duration::from_millis(300))
            .await
            .is_none()
    );
    assert_eq!(d.act(json!({ "action": "cursor_position" })).await.0, 201);
    let (id, _) = live.next(deadline).await.unwrap();
    assert_eq!(id, Some(ids[3] + 2));

    // A bad header says which and how.
    let r = d
        .client
        .get(format!("{}/v1/events", d.url))
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["field"], "Last-Event-ID");
    assert!(
        body["message"].as_str().unwrap().contains("yesterday"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytebot_paths_answer_201() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    assert_eq!(
        post(&d, "/input-tracking/start").await,
        (201, json!({ "status": "started" }))
    );
    assert_eq!(
        post(&d, "/input-tracking/start").await,
        (201, json!({ "status": "started" }))
    );
    assert_eq!(
        post(&d, "/input-tracking/stop").await,
        (201, json!({ "status": "stopped" }))
    );
    assert_eq!(
        post(&d, "/input-tracking/stop").await,
        (201, json!({ "status": "stopped" }))
    );
    // GET is not how Bytebot starts tracking.
    let r = d
        .client
        .get(format!("{}/input-tracking/start", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_needs_the_token() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let anon = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/v1/events"),
        ("GET", "/v1/input-tracking"),
        ("POST", "/v1/input-tracking/start"),
        ("POST", "/v1/input-tracking/stop"),
        ("POST", "/input-tracking/start"),
        ("POST", "/input-tracking/stop"),
    ] {
        let url = format!("{}{path}", d.url);
        let req = if method == "GET" {
            anon.get(&url)
        } else {
            anon.post(&url)
        };
        assert_eq!(req.send().await.unwrap().status(), 401, "{method} {path}");
        let wrong = if method == "GET" {
            anon.get(&url)
        } else {
            anon.post(&url)
        };
        let r = wrong.bearer_auth("not-the-token").send().await.unwrap();
        assert_eq!(r.status(), 401, "{method} {path} with a wrong token");
    }
    // Nothing was started by the refused requests.
    let r = d
        .client
        .get(format!("{}/v1/input-tracking", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({ "tracking": false })
    );
}
