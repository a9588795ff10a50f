//! `PUT /v1/screen/resolution`: the screen really changes size (as another X
//! client and `xdpyinfo` see it), screenshots and coordinates follow, and bad
//! sizes or an X server without RandR get clear errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestDesktop;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::ConnectionExt as _;

/// The root window's size as a second, independent X connection sees it.
fn root_size(display: &str) -> (u16, u16) {
    let (conn, n) = x11rb::rust_connection::RustConnection::connect(Some(display)).unwrap();
    let g = conn
        .get_geometry(conn.setup().roots[n].root)
        .unwrap()
        .reply()
        .unwrap();
    (g.width, g.height)
}

/// `xdpyinfo`'s "dimensions: WxH pixels", when x11-utils is installed.
fn xdpyinfo_size(d: &TestDesktop) -> Option<String> {
    if common::skip_without("xdpyinfo", "x11-utils") {
        return None;
    }
    let out = d.command("xdpyinfo").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("dimensions:"))
        .unwrap_or_else(|| panic!("no dimensions in xdpyinfo output: {text}"));
    line.split_whitespace().nth(1).map(str::to_string)
}

async fn put_resolution(d: &TestDesktop, body: Value) -> (u16, Value) {
    let r = d
        .client
        .put(format!("{}/v1/screen/resolution", d.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn screen(d: &TestDesktop) -> Value {
    d.client
        .get(format!("{}/v1/screen", d.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Width and height of a full-screen PNG screenshot, read from the image itself.
async fn screenshot_size(d: &TestDesktop) -> (u32, u32) {
    let r = d
        .client
        .get(format!("{}/v1/screenshot", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    let reader = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()))
        .read_info()
        .unwrap();
    let info = reader.info();
    (info.width, info.height)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolution_changes_are_seen_by_other_clients_screenshots_and_actions() {
    // Xvfb never grows past its start size: start large so it can shrink and grow back.
    let Some(d) = TestDesktop::start_with(|c| c.resolution = "1920x1080".into()).await else {
        return;
    };
    let s = screen(&d).await;
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(1920), Some(1080))
    );
    let range = &s["resolution_range"];
    assert_eq!(
        (range["max_width"].as_u64(), range["max_height"].as_u64()),
        (Some(1920), Some(1080)),
        "{s}"
    );

    // Shrink, grow (screen before CRTC), an odd size, and back to the start.
    for (w, h) in [(1024u16, 768u16), (1280, 960), (1001, 777), (1920, 1080)] {
        let (status, body) = put_resolution(&d, json!({"width": w, "height": h})).await;
        assert_eq!(status, 200, "{w}x{h}: {body}");
        assert_eq!(
            (body["width"].as_u64(), body["height"].as_u64()),
            (Some(w.into()), Some(h.into()))
        );
        assert_eq!(
            root_size(&d.display),
            (w, h),
            "another X client sees {w}x{h}"
        );
        if let Some(dims) = xdpyinfo_size(&d) {
            assert_eq!(dims, format!("{w}x{h}"));
        }
        let s = screen(&d).await;
        assert_eq!(
            (s["width"].as_u64(), s["height"].as_u64()),
            (Some(w.into()), Some(h.into()))
        );
        assert_eq!(screenshot_size(&d).await, (u32::from(w), u32::from(h)));

        // Coordinates are checked against the new size: the far corner is
        // on the screen, one pixel past it is not.
        let corner = json!({"x": w - 1, "y": h - 1});
        let (status, body) = d
            .act(json!({"action": "move_mouse", "coordinates": corner}))
            .await;
        assert_eq!(status, 201, "{body}");
        let (_, pos) = d.act(json!({"action": "cursor_position"})).await;
        assert_eq!(serde_json::from_str::<Value>(&pos).unwrap(), corner);
        let (status, body) = d
            .act(json!({"action": "move_mouse", "coordinates": {"x": w, "y": 0}}))
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(&format!("{w}x{h}")), "{body}");
    }

    // Asking for the current size again is fine and changes nothing.
    let (status, body) = put_resolution(&d, json!({"width": 1920, "height": 1080})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(root_size(&d.display), (1920, 1080));
    // Past the start size: 400 naming the field, the limit and what to do.
    let (status, body) = put_resolution(&d, json!({"width": 2560, "height": 1080})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "width");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("at most 1920") && message.contains("desktop.resolution"),
        "{message}"
    );
    assert_eq!(root_size(&d.display), (1920, 1080));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_resolutions_get_400_naming_the_field_and_change_nothing() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let cases = [
        (json!({"width": 0, "height": 768}), "width", "too small"),
        (json!({"width": 1024, "height": 0}), "height", "too small"),
        (json!({"width": 1024, "height": 199}), "height", "320x200"),
        (json!({"width": 1024}), "height", "missing"),
        (
            json!({"width": "wide", "height": 768}),
            "width",
            "whole number",
        ),
        (json!({"width": -5, "height": 768}), "width", "whole number"),
        (
            json!({"width": 1024.5, "height": 768}),
            "width",
            "whole number",
        ),
        (json!({"width": 100, "height": 768}), "width", "too small"),
        (
            json!({"width": 1024, "height": 100_000}),
            "height",
            "too large",
        ),
        (
            json!({"width": 99_999_999_999u64, "height": 768}),
            "width",
            "too large",
        ),
        (
            json!({"width": 1024, "height": 768, "depth": 24}),
            "depth",
            "unknown field",
        ),
        (json!([1024, 768]), "body", "not a JSON object"),
    ];
    for (body, field, words) in cases {
        let (status, answer) = put_resolution(&d, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["field"], field, "{body} -> {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(words), "{body} -> {message}");
    }
    // Too large names the limit the server reports, so the caller can retry.
    let (_, answer) = put_resolution(&d, json!({"width": 1024, "height": 100_000})).await;
    let max = screen(&d).await["resolution_range"]["max_height"].clone();
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains(&format!("at most {max}")),
        "{answer}"
    );

    let r = d
        .client
        .put(format!("{}/v1/screen/resolution", d.url))
        .body("width=1024")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "body");

    // Same token rule as every route.
    let r = reqwest::Client::new()
        .put(format!("{}/v1/screen/resolution", d.url))
        .json(&json!({"width": 1024, "height": 768}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    assert_eq!(root_size(&d.display), (1280, 960), "nothing changed");
}

/// An Xvfb started by the test itself, without RandR; killed on drop.
struct BareXvfb {
    child: std::process::Child,
    display: String,
}

impl BareXvfb {
    fn start() -> Self {
        use std::io::BufRead;
        // -displayfd 1: Xvfb picks a free display and writes its number to stdout.
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1", "-screen", "0", "800x600x24"])
            .args(["-nolisten", "tcp", "-noreset", "-extension", "RANDR"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(!line.trim().is_empty(), "Xvfb did not start");
        Self {
            child,
            display: format!(":{}", line.trim()),
        }
    }
}

impl Drop for BareXvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_display_without_randr_answers_501_saying_what_to_do() {
    if common::skip_without("Xvfb", "xvfb") {
        return;
    }
    let x = BareXvfb::start();
    let display = x.display.clone();
    let Some(d) = TestDesktop::start_with(move |c| {
        c.display = Some(display);
        c.window_manager.clear();
    })
    .await
    else {
        return;
    };
    let s = screen(&d).await;
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(800), Some(600))
    );
    assert!(s["resolution_range"].is_null(), "{s}");
    let (status, body) = put_resolution(&d, json!({"width": 640, "height": 480})).await;
    assert_eq!(status, 501, "{body}");
    assert_eq!(body["error"], "unsupported");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("RandR") && message.contains("+extension RANDR"),
        "{message}"
    );
    // Bad input is still bad input first.
    let (status, _) = put_resolution(&d, json!({"width": 0, "height": 480})).await;
    assert_eq!(status, 400);
    assert_eq!(root_size(&x.display), (800, 600));
    drop(d);
}
