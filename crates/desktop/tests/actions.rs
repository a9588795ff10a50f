//! Every computer-use action, checked by its effect on a real X server as
//! seen by an independent X client (tests/support/xrecorder.py).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Recorder, TestDesktop};
use serde_json::{Value, json};

fn presses(r: &Recorder, button: u64) -> Vec<Value> {
    r.of_type("button_press")
        .into_iter()
        .filter(|e| e["button"] == button)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_land_where_asked_with_the_right_button_and_count() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let Some(mut r) = Recorder::open(&d, 100, 100, 400, 300) else {
        return;
    };
    let (status, body) = d.act(json!({"action": "click_mouse", "coordinates": {"x": 150, "y": 170}, "button": "left", "clickCount": 1})).await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body.is_empty(),
        "void actions answer with an empty body, got {body}"
    );
    assert!(r.wait_for(|s| s.iter().any(|e| e["type"] == "button_release")));
    let p = presses(&r, 1);
    assert_eq!(
        (p[0]["x"].as_i64(), p[0]["y"].as_i64()),
        (Some(150), Some(170))
    );

    r.clear();
    d.act(json!({"action": "click_mouse", "coordinates": {"x": 300, "y": 200}, "button": "right", "clickCount": 2})).await;
    assert!(r.wait_for(|s| s.iter().filter(|e| e["type"] == "button_release").count() == 2));
    assert_eq!(presses(&r, 3).len(), 2);
    assert_eq!(presses(&r, 3)[1]["x"], 300);

    // Without coordinates the click happens where the pointer is.
    r.clear();
    d.act(json!({"action": "click_mouse", "button": "middle", "clickCount": 1}))
        .await;
    assert!(r.wait_for(|s| !presses_in(s, 2).is_empty()));
    assert_eq!(presses_in(&r.seen, 2)[0]["x"], 300);
}

fn presses_in(s: &[Value], button: u64) -> Vec<Value> {
    s.iter()
        .filter(|e| e["type"] == "button_press" && e["button"] == button)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_keys_wrap_the_click_and_scroll_sends_wheel_buttons() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let Some(mut r) = Recorder::open(&d, 50, 50, 300, 300) else {
        return;
    };
    let (status, body) = d.act(json!({"action": "click_mouse", "coordinates": {"x": 100, "y": 100}, "button": "left", "clickCount": 1, "holdKeys": ["LeftShift"]})).await;
    assert_eq!(status, 201, "{body}");
    assert!(r.wait_for(|s| s.iter().any(|e| e["type"] == "key_release")));
    let p = presses(&r, 1);
    assert_ne!(
        p[0]["state"].as_u64().unwrap() & 1,
        0,
        "Shift was down during the click: {p:?}"
    );

    r.clear();
    let (status, body) = d.act(json!({"action": "scroll", "coordinates": {"x": 120, "y": 130}, "direction": "down", "scrollCount": 3})).await;
    assert_eq!(status, 201, "{body}");
    assert!(r.wait_for(|s| presses_in(s, 5).len() == 3));
    assert_eq!(presses(&r, 5)[0]["x"], 120);
    d.act(json!({"action": "scroll", "direction": "up", "scrollCount": 1}))
        .await;
    assert!(r.wait_for(|s| presses_in(s, 4).len() == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drag_presses_moves_and_releases_along_the_path() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let Some(mut r) = Recorder::open(&d, 0, 0, 500, 500) else {
        return;
    };
    let path = json!([{"x": 10, "y": 10}, {"x": 200, "y": 50}, {"x": 300, "y": 400}]);
    let (status, body) = d
        .act(json!({"action": "drag_mouse", "path": path, "button": "left"}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(r.wait_for(|s| s.iter().any(|e| e["type"] == "button_release")));
    let press = &r.of_type("button_press")[0];
    let release = &r.of_type("button_release")[0];
    assert_eq!(
        (press["x"].as_i64(), press["y"].as_i64()),
        (Some(10), Some(10))
    );
    assert_eq!(
        (release["x"].as_i64(), release["y"].as_i64()),
        (Some(300), Some(400))
    );
    assert!(
        r.of_type("motion")
            .iter()
            .any(|m| m["x"] == 200 && m["y"] == 50),
        "passed through the middle point"
    );

    r.clear();
    let (status, _) = d
        .act(json!({"action": "trace_mouse", "path": [{"x": 40, "y": 41}, {"x": 42, "y": 43}]}))
        .await;
    assert_eq!(status, 201);
    assert!(r.wait_for(|s| {
        s.iter()
            .any(|e| e["type"] == "motion" && e["x"] == 42 && e["y"] == 43)
    }));
    let (status, _) = d.act(json!({"action": "press_mouse", "coordinates": {"x": 60, "y": 61}, "button": "left", "press": "down"})).await;
    assert_eq!(status, 201);
    d.act(json!({"action": "press_mouse", "button": "left", "press": "up"}))
        .await;
    assert!(r.wait_for(|s| {
        s.iter()
            .any(|e| e["type"] == "button_release" && e["x"] == 60)
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_position_matches_what_another_x_client_sees() {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::ConnectionExt as _;
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let (status, _) = d
        .act(json!({"action": "move_mouse", "coordinates": {"x": 321.4, "y": 654.6}}))
        .await;
    assert_eq!(status, 201);
    let (status, body) = d.act(json!({"action": "cursor_position"})).await;
    assert_eq!(status, 201);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"x": 321, "y": 655})
    );
    let (conn, n) = x11rb::rust_connection::RustConnection::connect(Some(&d.display)).unwrap();
    let p = conn
        .query_pointer(conn.setup().roots[n].root)
        .unwrap()
        .reply()
        .unwrap();
    assert_eq!((p.root_x, p.root_y), (321, 655));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_text_arrives_intact() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let Some(mut r) = Recorder::open(&d, 0, 0, 200, 200) else {
        return;
    };
    let text = "Hello, World! ~`|{}<>?\nçà ñ ß Ωμ Привет 世界 こんにちは 🎉\tend";
    let (status, body) = d.act(json!({"action": "type_text", "text": text})).await;
    assert_eq!(status, 201, "{body}");
    let want = text.chars().count();
    assert!(
        r.wait_for(|s| s
            .iter()
            .filter(|e| e["type"] == "key_press" && !e["char"].is_null())
            .count()
            >= want),
        "got {:?}",
        r.text()
    );
    assert_eq!(r.text(), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_text_with_many_distinct_characters_arrives_intact() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let Some(mut r) = Recorder::open(&d, 0, 0, 200, 200) else {
        return;
    };
    // More distinct non-keyboard characters than there are spare keycodes.
    let text: String = (0x4e00u32..0x4e00 + 300)
        .filter_map(char::from_u32)
        .collect();
    let (status, body) = d
        .act(json!({"action": "type_text", "text": text, "sensitive": true}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        r.wait_for(|s| s.iter().filter(|e| e["type"] == "key_press").count() >= 300),
        "got {}",
        r.text().chars().count()
    );
    assert_eq!(r.text(), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_keys_is_a_chord_pressed_in_order_released_in_reverse() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let Some(mut r) = Recorder::open(&d, 0, 0, 200, 200) else {
        return;
    };
    let (status, body) = d
        .act(json!({"action": "type_keys", "keys": ["ctrl+shift+t"]}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(r.wait_for(|s| s.iter().filter(|e| e["type"] == "key_release").count() == 3));
    let order: Vec<(String, u64)> = r
        .seen
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["keysym"].as_u64().unwrap(),
            )
        })
        .collect();
    let (ctrl, shift) = (0xffe3, 0xffe1);
    let t = u64::from(b'T'); // with Shift held, the recorder's keymap reads 'T'
    assert_eq!(
        order,
        vec![
            ("key_press".into(), ctrl),
            ("key_press".into(), shift),
            ("key_press".into(), t),
            ("key_release".into(), t),
            ("key_release".into(), shift),
            ("key_release".into(), ctrl),
        ]
    );

    r.clear();
    d.act(json!({"action": "press_keys", "keys": ["LeftAlt"], "press": "down"}))
        .await;
    d.act(json!({"action": "type_keys", "keys": ["Return"]}))
        .await;
    d.act(json!({"action": "press_keys", "keys": ["alt"], "press": "up"}))
        .await;
    assert!(r.wait_for(|s| s.iter().filter(|e| e["type"] == "key_release").count() == 2));
    let enter = r
        .of_type("key_press")
        .into_iter()
        .find(|e| e["keysym"] == 0xff0d)
        .unwrap();
    assert_ne!(
        enter["state"].as_u64().unwrap() & 8,
        0,
        "Alt (Mod1) held during Return"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshot_pixels_match_the_test_pattern_exactly() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let Some(r) = Recorder::open(&d, 200, 100, 400, 200) else {
        return;
    };
    // Let the window paint.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (status, body) = d.act(json!({"action": "screenshot"})).await;
    assert_eq!(status, 201);
    let v: Value = serde_json::from_str(&body).unwrap();
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(v["image"].as_str().unwrap())
        .unwrap();
    let (w, h, rgb) = decode_png(&png);
    assert_eq!((w, h), (1280, 960));
    let px = |x: i64, y: i64| {
        let i = ((y as usize) * w as usize + x as usize) * 3;
        [rgb[i], rgb[i + 1], rgb[i + 2]]
    };
    let (ox, oy) = (r.x, r.y);
    assert_eq!(px(ox + 8, oy + 8), [17, 34, 51], "marker");
    assert_eq!(px(ox + 50, oy + 50), [255, 0, 0], "top left");
    assert_eq!(px(ox + 350, oy + 50), [0, 255, 0], "top right");
    assert_eq!(px(ox + 50, oy + 150), [0, 0, 255], "bottom left");
    assert_eq!(
        px(ox + 399, oy + 199),
        [255, 255, 255],
        "bottom right corner"
    );

    // Our endpoint: a region, as PNG, pixel-exact too.
    let resp = d
        .client
        .get(format!(
            "{}/v1/screenshot?x={}&y={}&width=20&height=20",
            d.url, ox, oy
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert_eq!(
        resp.headers()["x-bytebot-region"],
        format!("{ox},{oy},20,20").as_str()
    );
    let (w, h, rgb) = decode_png(&resp.bytes().await.unwrap());
    assert_eq!((w, h), (20, 20));
    let i = (8 * 20 + 8) * 3;
    assert_eq!(&rgb[i..i + 3], &[17, 34, 51]);

    // JPEG scaled to 640 wide reports a scale of 2.
    let resp = d
        .client
        .get(format!(
            "{}/v1/screenshot?format=jpeg&quality=60&max_width=640&encoding=json",
            d.url
        ))
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (
            v["width"].as_u64(),
            v["height"].as_u64(),
            v["scale"].as_f64()
        ),
        (Some(640), Some(480), Some(2.0))
    );
}

fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paste_text_puts_it_on_the_clipboard_and_presses_ctrl_v() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    if common::skip_without("xclip", "xclip") {
        return;
    }
    let Some(mut r) = Recorder::open(&d, 0, 0, 200, 200) else {
        return;
    };
    let text = "pasted: naïve 日本語 ✓";
    let (status, body) = d.act(json!({"action": "paste_text", "text": text})).await;
    assert_eq!(status, 201, "{body}");
    let out = d
        .command("xclip")
        .args(["-o", "-selection", "clipboard"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), text);
    let out = d
        .command("xclip")
        .args(["-o", "-selection", "clipboard", "-t", "TARGETS"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("UTF8_STRING"));
    assert!(r.wait_for(|s| s.iter().filter(|e| e["type"] == "key_release").count() == 2));
    let pressed: Vec<u64> = r
        .of_type("key_press")
        .iter()
        .map(|e| e["keysym"].as_u64().unwrap())
        .collect();
    assert_eq!(pressed, vec![0xffe3, u64::from(b'v')]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_waits_and_batches_stop_at_the_first_failure() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let start = std::time::Instant::now();
    let (status, _) = d.act(json!({"action": "wait", "duration": 120})).await;
    assert_eq!(status, 201);
    assert!(start.elapsed() >= std::time::Duration::from_millis(120));

    let body = json!({"actions": [
        {"action": "move_mouse", "coordinates": {"x": 5, "y": 6}},
        {"action": "cursor_position"},
        {"action": "application", "application": "no-such-app"},
        {"action": "move_mouse", "coordinates": {"x": 7, "y": 8}},
    ]});
    let v: Value = d
        .client
        .post(format!("{}/v1/actions", d.url))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["completed"], 3);
    assert_eq!(v["total"], 4);
    assert_eq!(v["results"][1]["result"], json!({"x": 5, "y": 6}));
    assert_eq!(v["results"][2]["ok"], false);
    assert!(
        v["results"][2]["error"]
            .as_str()
            .unwrap()
            .contains("no-such-app"),
        "{v}"
    );
    // The fourth action never ran.
    let (_, pos) = d.act(json!({"action": "cursor_position"})).await;
    assert_eq!(
        serde_json::from_str::<Value>(&pos).unwrap(),
        json!({"x": 5, "y": 6})
    );

    // A malformed action anywhere refuses the whole batch before anything runs.
    let body = json!({"actions": [{"action": "move_mouse", "coordinates": {"x": 9, "y": 9}}, {"action": "click_mouse", "button": "left"}]});
    let resp = d
        .client
        .post(format!("{}/v1/actions", d.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["field"], "actions[1].clickCount");
    let (_, pos) = d.act(json!({"action": "cursor_position"})).await;
    assert_eq!(
        serde_json::from_str::<Value>(&pos).unwrap(),
        json!({"x": 5, "y": 6})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_reports_a_quiet_screen() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let v: Value = d
        .client
        .post(format!("{}/v1/settle", d.url))
        .json(&json!({"quiet_ms": 50, "timeout_ms": 2000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["settled"], true, "{v}");
    let resp = d
        .client
        .post(format!("{}/v1/settle", d.url))
        .json(&json!({"quiet_ms": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_true_draws_the_pointer_from_xfixes_into_the_screenshot() {
    let Some(d) = TestDesktop::start_with(|c| c.window_manager.clear()).await else {
        return;
    };
    let (status, _) = d
        .act(json!({"action": "move_mouse", "coordinates": {"x": 400, "y": 300}}))
        .await;
    assert_eq!(status, 201);
    let region = "x=380&y=280&width=40&height=40";
    let shot = |extra: &'static str| {
        let (client, url) = (
            d.client.clone(),
            format!("{}/v1/screenshot?{region}{extra}", d.url),
        );
        async move {
            let r = client.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            decode_png(&r.bytes().await.unwrap()).2
        }
    };
    let plain = shot("").await;
    let with_cursor = shot("&cursor=true").await;
    // Xvfb's root window is a flat pattern without the pointer; with cursor=true
    // pixels around the hot spot change.
    let changed = plain
        .iter()
        .zip(&with_cursor)
        .filter(|(a, b)| a != b)
        .count();
    assert!(changed > 10, "only {changed} bytes differ");
    let again = shot("&cursor=true").await;
    assert_eq!(again, with_cursor, "same pointer, same picture");
}

/// Whether Shift is in effect on the display, asked on a connection of our own.
fn shift_is_down(display: &str) -> bool {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{ConnectionExt as _, KeyButMask};
    let (conn, n) = x11rb::rust_connection::RustConnection::connect(Some(display)).unwrap();
    let p = conn
        .query_pointer(conn.setup().roots[n].root)
        .unwrap()
        .reply()
        .unwrap();
    u16::from(p.mask) & u16::from(KeyButMask::SHIFT) != 0
}

/// Key presses seen so far as (keysym, state) pairs.
fn key_presses(r: &Recorder) -> Vec<(u64, u64)> {
    r.of_type("key_press")
        .iter()
        .map(|e| (e["keysym"].as_u64().unwrap(), e["state"].as_u64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_keys_holds_shift_for_keysyms_on_the_shifted_level() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let Some(mut r) = Recorder::open(&d, 0, 0, 200, 200) else {
        return;
    };
    // Each entry is one type_keys action and the text it must produce.
    // "A" is nut-js's A *key* (Bytebot's agent sends it for ctrl+A), so it
    // types "a", as it does in Bytebot; "shift+a" gives the capital.
    let cases: [(&[&str], &str); 11] = [
        (&["percent"], "%"),
        (&["%"], "%"),
        (&["exclam"], "!"),
        (&["plus"], "+"),
        (&["colon"], ":"),
        (&["braceleft"], "{"),
        (&["A"], "a"),
        (&["shift+a"], "A"),
        (&["shift+percent"], "%"),
        (&["exclam", "a"], "!a"),
        (&["less"], "<"),
    ];
    for (keys, want) in cases {
        r.clear();
        let (status, body) = d.act(json!({"action": "type_keys", "keys": keys})).await;
        assert_eq!(status, 201, "{keys:?}: {body}");
        let presses = |s: &[Value]| s.iter().filter(|e| e["type"] == "key_press").count();
        let releases = |s: &[Value]| s.iter().filter(|e| e["type"] == "key_release").count();
        assert!(
            r.wait_for(|s| presses(s) > 0 && releases(s) == presses(s)),
            "{keys:?}: {:?}",
            r.seen
        );
        assert_eq!(r.text(), want, "{keys:?}: {:?}", r.seen);
        assert!(!shift_is_down(&d.display), "{keys:?} left Shift down");
    }

    // One Shift around the key: press Shift, the key, release the key, Shift.
    r.clear();
    d.act(json!({"action": "type_keys", "keys": ["percent"]}))
        .await;
    assert!(r.wait_for(|s| s.iter().filter(|e| e["type"] == "key_release").count() == 2));
    let order: Vec<(String, u64)> = r
        .seen
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["keysym"].as_u64().unwrap(),
            )
        })
        .collect();
    let (shift, percent) = (0xffe1, u64::from(b'%'));
    assert_eq!(
        order,
        vec![
            ("key_press".into(), shift),
            ("key_press".into(), percent),
            ("key_release".into(), percent),
            ("key_release".into(), shift),
        ]
    );

    // With Shift already in the combo, no second Shift is pressed.
    r.clear();
    d.act(json!({"action": "type_keys", "keys": ["shift+colon"]}))
        .await;
    assert!(r.wait_for(|s| s.iter().filter(|e| e["type"] == "key_release").count() == 2));
    assert_eq!(
        key_presses(&r).iter().filter(|(k, _)| *k == shift).count(),
        1,
        "{:?}",
        r.seen
    );
    assert_eq!(r.text(), ":");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifted_keys_in_combos_and_held_keys_keep_their_modifiers() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let Some(mut r) = Recorder::open(&d, 0, 0, 200, 200) else {
        return;
    };
    // ctrl+plus is Control, Shift, plus: the plus arrives with both held.
    let (status, body) = d
        .act(json!({"action": "type_keys", "keys": ["ctrl+plus"]}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(r.wait_for(|s| s.iter().filter(|e| e["type"] == "key_release").count() == 3));
    let plus = key_presses(&r)
        .into_iter()
        .find(|(k, _)| *k == u64::from(b'+'))
        .unwrap_or_else(|| panic!("no plus in {:?}", r.seen));
    assert_eq!(plus.1 & 0b101, 0b101, "Shift and Control held: {plus:?}");
    assert!(!shift_is_down(&d.display));

    // press_keys holds Shift from the key's press to its release.
    r.clear();
    let (status, body) = d
        .act(json!({"action": "press_keys", "keys": ["colon"], "press": "down"}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(r.wait_for(|s| s.iter().any(|e| e["char"] == ":")));
    assert!(shift_is_down(&d.display), "Shift held while colon is down");
    d.act(json!({"action": "press_keys", "keys": ["colon"], "press": "up"}))
        .await;
    assert!(r.wait_for(|s| s.iter().filter(|e| e["type"] == "key_release").count() == 2));
    assert!(!shift_is_down(&d.display), "Shift released with colon");

    // A Shift the caller holds is left alone: still down after the key.
    r.clear();
    d.act(json!({"action": "press_keys", "keys": ["LeftShift"], "press": "down"}))
        .await;
    d.act(json!({"action": "type_keys", "keys": ["percent"]}))
        .await;
    assert!(r.wait_for(
        |s| s.iter().any(|e| e["char"] == "%") && s.iter().any(|e| e["type"] == "key_release")
    ));
    assert!(
        shift_is_down(&d.display),
        "the caller's Shift is still down"
    );
    d.act(json!({"action": "press_keys", "keys": ["LeftShift"], "press": "up"}))
        .await;
    assert!(!shift_is_down(&d.display));
    assert_eq!(
        key_presses(&r).iter().filter(|(k, _)| *k == 0xffe1).count(),
        1,
        "{:?}",
        r.seen
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keysyms_only_on_higher_levels_are_typed_through_a_spare_keycode() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let Some(mut r) = Recorder::open(&d, 0, 0, 200, 200) else {
        return;
    };
    // brokenbar sits at level 5 of the <> key on a US layout: unreachable
    // with Shift alone, so it is mapped onto a free keycode.
    let (status, body) = d
        .act(json!({"action": "type_keys", "keys": ["brokenbar"]}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(r.wait_for(|s| s.iter().any(|e| e["type"] == "key_release")));
    assert_eq!(r.text(), "\u{a6}", "{:?}", r.seen);
    assert!(
        key_presses(&r).iter().all(|(k, _)| *k != 0xffe1),
        "no Shift needed: {:?}",
        r.seen
    );
}
