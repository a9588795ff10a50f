//! Find-text and click-text on a real Xvfb, with real windows (xmessage)
//! drawing known text, and real tesseract processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestDesktop, skip_without};
use serde_json::{Value, json};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A big, plain font every X server has (scaled Type 1 Helvetica).
const FONT: &str = "-adobe-helvetica-bold-r-normal--34-*-*-*-*-*-iso8859-1";

/// An xmessage window, killed on drop.
struct Message {
    child: Child,
    /// Absolute left, top, width, height of its window.
    rect: (i64, i64, i64, i64),
}

impl Drop for Message {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens an xmessage at `(x, y)` showing `text` with one button, and waits
/// until its window is on screen. Styled like a toolkit dialog: no scroll
/// bars (their hatched thumb against the first letter confuses OCR), no box
/// hugging the text, and a button with padding around its label.
fn message(d: &TestDesktop, x: u32, y: u32, text: &str, button: &str) -> Message {
    open_xmessage(
        d,
        &[
            "-geometry",
            &format!("+{x}+{y}"),
            "-fn",
            FONT,
            "-buttons",
            button,
            text,
        ],
    )
}

fn open_xmessage(d: &TestDesktop, args: &[&str]) -> Message {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let title = format!(
        "ocr-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let child = d
        .command("xmessage")
        .args(["-title", &title, "-print"])
        .args([
            "-xrm",
            "*message.scrollVertical: never",
            "-xrm",
            "*message.scrollHorizontal: never",
        ])
        .args([
            "-xrm",
            "*message.borderWidth: 0",
            "-xrm",
            "*message*leftMargin: 16",
            "-xrm",
            "*message*topMargin: 8",
            "-xrm",
            "*message*rightMargin: 16",
        ])
        .args([
            "-xrm",
            "*Command.internalWidth: 16",
            "-xrm",
            "*Command.internalHeight: 6",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Owned by a Message at once, so a failed wait below still reaps it.
    let mut msg = Message {
        child,
        rect: (0, 0, 0, 0),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut nudged = false;
    loop {
        let out = d
            .command("xwininfo")
            .args(["-name", &title])
            .output()
            .unwrap();
        let info = String::from_utf8_lossy(&out.stdout);
        let get = |key: &str| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        if info.contains("IsViewable") {
            msg.rect = (
                get("Absolute upper-left X:").unwrap(),
                get("Absolute upper-left Y:").unwrap(),
                get("Width:").unwrap(),
                get("Height:").unwrap(),
            );
            return msg;
        }
        // Under heavy load openbox, just started, has been seen to leave a
        // new window unmapped; asking again for the map gets it shown.
        if !nudged
            && deadline.saturating_duration_since(Instant::now()) < Duration::from_secs(25)
            && let Some(id) = info.split_whitespace().skip_while(|w| *w != "id:").nth(1)
        {
            eprintln!("window {id} still unmapped after 5 s; mapping it again");
            let _ = d.command("xdotool").args(["windowmap", id]).status();
            nudged = true;
        }
        assert!(
            Instant::now() < deadline,
            "xmessage window never appeared: {info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until OCR reads `text` inside `rect`: a window is mapped before its
/// client has drawn, and a loaded machine may take a while to draw.
async fn wait_readable(d: &TestDesktop, text: &str, (x, y, w, h): (i64, i64, i64, i64)) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let region = json!({"x": x, "y": y, "width": w, "height": h});
    loop {
        let (status, body) =
            post(d, "/v1/find-text", json!({"text": text, "region": region})).await;
        assert_eq!(status, 200, "{body}");
        if body["matches"].as_array().is_some_and(|m| !m.is_empty()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "\"{text}\" never became readable in {region}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn post(d: &TestDesktop, path: &str, body: Value) -> (u16, Value) {
    let r = d
        .client
        .post(format!("{}{path}", d.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post_raw(d: &TestDesktop, path: &str, body: &str) -> (u16, Value) {
    let r = d
        .client
        .post(format!("{}{path}", d.url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn inside(m: &Value, (x, y, w, h): (i64, i64, i64, i64)) -> bool {
    let (mx, my) = (m["x"].as_i64().unwrap(), m["y"].as_i64().unwrap());
    let (mw, mh) = (m["width"].as_i64().unwrap(), m["height"].as_i64().unwrap());
    mx >= x && my >= y && mx + mw <= x + w && my + mh <= y + h
}

fn have_tools() -> bool {
    !skip_without("tesseract", "tesseract-ocr")
        && !skip_without("xmessage", "x11-utils")
        && !skip_without("xwininfo", "x11-utils")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_text_where_the_window_shows_it_then_answers_from_the_cache() {
    if !have_tools() {
        return;
    }
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let msg = message(&d, 100, 200, "Hello Bytebot World", "Dismiss");
    wait_readable(&d, "World", msg.rect).await;

    let (status, first) = post(&d, "/v1/find-text", json!({"text": "Hello Bytebot World"})).await;
    assert_eq!(status, 200, "{first}");
    eprintln!("full screen, uncached: {} ms", first["elapsed_ms"]);
    assert_eq!(first["cached"], false);
    let matches = first["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 1, "{first}");
    let m = &matches[0];
    assert!(
        inside(m, msg.rect),
        "match {m} is not inside the window {:?}",
        msg.rect
    );
    assert_eq!(m["text"], "Hello Bytebot World");
    assert!(
        m["width"].as_i64().unwrap() > 200,
        "one box around the three words: {m}"
    );
    let (cx, cy) = (
        m["center"]["x"].as_i64().unwrap(),
        m["center"]["y"].as_i64().unwrap(),
    );
    assert_eq!(
        cx,
        m["x"].as_i64().unwrap() + m["width"].as_i64().unwrap() / 2
    );
    assert_eq!(
        cy,
        m["y"].as_i64().unwrap() + m["height"].as_i64().unwrap() / 2
    );
    assert!(m["confidence"].as_f64().unwrap() > 50.0, "{m}");

    // Same screen, same question: the cache answers, tesseract does not run.
    let (status, again) = post(&d, "/v1/find-text", json!({"text": "Hello Bytebot World"})).await;
    assert_eq!(status, 200);
    eprintln!("full screen, cached: {} ms", again["elapsed_ms"]);
    assert_eq!(again["cached"], true, "{again}");
    assert_eq!(again["matches"], first["matches"]);
    // Another query on the unchanged screen is answered from the cache too.
    let (_, word) = post(&d, "/v1/find-text", json!({"text": "bytebot"})).await;
    assert_eq!(word["cached"], true);
    assert_eq!(word["matches"][0]["text"], "Bytebot", "{word}");
    assert!(inside(&word["matches"][0], msg.rect));

    // Case and whole-word options.
    let (_, cs) = post(
        &d,
        "/v1/find-text",
        json!({"text": "hello bytebot world", "case_sensitive": true}),
    )
    .await;
    assert_eq!(cs["matches"], json!([]), "{cs}");
    let (_, ex) = post(&d, "/v1/find-text", json!({"text": "Byte", "exact": true})).await;
    assert_eq!(ex["matches"], json!([]), "{ex}");
    let (_, partial) = post(&d, "/v1/find-text", json!({"text": "Byte"})).await;
    assert_eq!(partial["matches"][0]["text"], "Bytebot", "{partial}");

    // A region around the window finds it, in screen coordinates.
    let (x, y, w, h) = msg.rect;
    let region = json!({"x": x - 20, "y": y - 20, "width": w + 40, "height": h + 40});
    let (status, r) = post(
        &d,
        "/v1/find-text",
        json!({"text": "Hello Bytebot World", "region": region}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    eprintln!(
        "region {}x{}, uncached: {} ms",
        w + 40,
        h + 40,
        r["elapsed_ms"]
    );
    assert_eq!(r["region"], region);
    let rm = &r["matches"][0];
    assert!(inside(rm, msg.rect), "{rm}");
    assert!(
        (rm["x"].as_i64().unwrap() - m["x"].as_i64().unwrap()).abs() <= 4,
        "region results are in screen coordinates: {rm} vs {m}"
    );
    assert!(
        (rm["y"].as_i64().unwrap() - m["y"].as_i64().unwrap()).abs() <= 4,
        "{rm} vs {m}"
    );

    // A region elsewhere does not see it.
    let (status, none) = post(
        &d,
        "/v1/find-text",
        json!({"text": "Hello", "region": {"x": 700, "y": 600, "width": 400, "height": 300}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(none["matches"], json!([]), "{none}");
    assert_eq!(none["cached"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_text_presses_the_button_it_reads() {
    if !have_tools() {
        return;
    }
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let mut msg = message(&d, 300, 300, "Click the button below", "Proceed");
    wait_readable(&d, "below", msg.rect).await;

    let (status, body) = post(&d, "/v1/click-text", json!({"text": "Proceed"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["matches"].as_u64().unwrap() >= 1);
    let clicked = &body["clicked"];
    assert!(
        inside(clicked, msg.rect),
        "clicked {clicked} outside the window {:?}",
        msg.rect
    );

    // xmessage prints the button's name and exits when it is pressed.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = msg.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "xmessage did not see the click at {clicked}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(msg.child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!(out.trim(), "Proceed", "exit {status}");

    // The window is gone, so the text is no longer on screen.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, gone) = post(&d, "/v1/click-text", json!({"text": "Proceed"})).await;
    assert_eq!(status, 404, "{gone}");
    assert_eq!(gone["error"], "text_not_found");
    assert!(
        gone["message"]
            .as_str()
            .unwrap()
            .contains("not on the screen"),
        "{gone}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_text_picks_among_matches_by_index() {
    if !have_tools() {
        return;
    }
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let a = message(&d, 80, 100, "Alpha Target", "Close");
    let b = message(&d, 80, 500, "Beta Target", "Close");
    wait_readable(&d, "Alpha", a.rect).await;
    wait_readable(&d, "Beta", b.rect).await;
    let (status, found) = post(&d, "/v1/find-text", json!({"text": "Target"})).await;
    assert_eq!(status, 200);
    assert_eq!(found["matches"].as_array().unwrap().len(), 2, "{found}");
    let (status, body) = post(&d, "/v1/click-text", json!({"text": "Target", "index": 5})).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("only 2"),
        "{body}"
    );
    let (status, body) = post(
        &d,
        "/v1/click-text",
        json!({"text": "Target", "index": 1, "button": "right"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["clicked"], found["matches"][1]);
    assert_eq!(
        body["cached"], true,
        "the screen did not change between the two calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_400_naming_the_field() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let long = "x".repeat(201);
    let cases = [
        ("/v1/find-text", json!({"text": ""}), "text"),
        ("/v1/find-text", json!({"text": "   "}), "text"),
        ("/v1/find-text", json!({}), "text"),
        ("/v1/find-text", json!({"text": 5}), "text"),
        ("/v1/find-text", json!({"text": long}), "text"),
        (
            "/v1/find-text",
            json!({"text": "a", "colour": "red"}),
            "colour",
        ),
        (
            "/v1/find-text",
            json!({"text": "a", "exact": "yes"}),
            "exact",
        ),
        (
            "/v1/find-text",
            json!({"text": "a", "case_sensitive": 1}),
            "case_sensitive",
        ),
        (
            "/v1/find-text",
            json!({"text": "a", "region": {"x": 0, "y": 0, "width": 0, "height": 10}}),
            "region",
        ),
        (
            "/v1/find-text",
            json!({"text": "a", "region": {"x": 1200, "y": 0, "width": 200, "height": 10}}),
            "region",
        ),
        (
            "/v1/find-text",
            json!({"text": "a", "region": {"x": 0, "y": 900, "width": 10, "height": 100}}),
            "region",
        ),
        (
            "/v1/find-text",
            json!({"text": "a", "region": {"x": -1, "y": 0, "width": 10, "height": 10}}),
            "region",
        ),
        (
            "/v1/find-text",
            json!({"text": "a", "region": {"width": 10}}),
            "region",
        ),
        (
            "/v1/find-text",
            json!({"text": "a", "region": {"x": 0, "y": 0, "w": 10, "h": 10}}),
            "region",
        ),
        (
            "/v1/find-text",
            json!({"text": "a", "region": [0, 0, 10, 10]}),
            "region",
        ),
        (
            "/v1/find-text",
            json!({"text": "a", "button": "left"}),
            "button",
        ),
        ("/v1/find-text", json!(["text"]), "body"),
        ("/v1/click-text", json!({"text": ""}), "text"),
        (
            "/v1/click-text",
            json!({"text": "a", "button": "top"}),
            "button",
        ),
        ("/v1/click-text", json!({"text": "a", "index": -1}), "index"),
        (
            "/v1/click-text",
            json!({"text": "a", "clickCount": 0}),
            "clickCount",
        ),
        (
            "/v1/click-text",
            json!({"text": "a", "clickCount": 1000}),
            "clickCount",
        ),
        (
            "/v1/click-text",
            json!({"text": "a", "click_count": 2}),
            "click_count",
        ),
    ];
    for (path, body, field) in cases {
        let (status, answer) = post(&d, path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body} → {answer}");
        assert_eq!(answer["field"], field, "{path} {body} → {answer}");
        assert!(
            !answer["message"].as_str().unwrap_or("").is_empty(),
            "{answer}"
        );
    }
    for raw in ["{not json", "", "null"] {
        let (status, answer) = post_raw(&d, "/v1/find-text", raw).await;
        assert_eq!(status, 400, "{raw:?} → {answer}");
        assert_eq!(answer["field"], "body", "{raw:?} → {answer}");
    }
    // Without a token nothing is read.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/find-text", d.url))
        .json(&json!({"text": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_tesseract_or_language_is_a_clear_503() {
    let Some(d) =
        TestDesktop::start_with(|c| c.tesseract = "/nonexistent/bin/tesseract".into()).await
    else {
        return;
    };
    let (status, body) = post(&d, "/v1/find-text", json!({"text": "Hello"})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "ocr_unavailable");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("desktop.tesseract") && message.contains("apt-get install tesseract-ocr"),
        "{message}"
    );
    let (status, _) = post(&d, "/v1/click-text", json!({"text": "Hello"})).await;
    assert_eq!(status, 503);

    if skip_without("tesseract", "tesseract-ocr") {
        return;
    }
    let Some(d) = TestDesktop::start_with(|c| c.ocr_lang = "zzz".into()).await else {
        return;
    };
    let (status, body) = post(&d, "/v1/find-text", json!({"text": "Hello"})).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("desktop.ocr_lang"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_a_screen_full_of_text() {
    if !have_tools() {
        return;
    }
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    // Two windows of body text in ordinary sizes, and a dialog: most of the
    // screen is text, like a browser or an editor.
    let left: String = (1..=44)
        .map(|i| format!("Report {i} was archived by the night shift on time\n"))
        .collect();
    let right: String = (1..=28)
        .map(|i| {
            format!(
                "Ticket {} assigned to the support queue for review\n",
                100 + i
            )
        })
        .collect();
    std::fs::write(d.workspace.join("left.txt"), left).unwrap();
    std::fs::write(d.workspace.join("right.txt"), right).unwrap();
    let (lf, rf) = (d.workspace.join("left.txt"), d.workspace.join("right.txt"));
    let a = open_xmessage(
        &d,
        &[
            "-geometry",
            "600x900+0+20",
            "-fn",
            "-adobe-helvetica-medium-r-normal--14-*-*-*-*-*-iso8859-1",
            "-file",
            lf.to_str().unwrap(),
        ],
    );
    let b = open_xmessage(
        &d,
        &[
            "-geometry",
            "640x620+630+20",
            "-fn",
            "-adobe-times-medium-r-normal--16-*-*-*-*-*-iso8859-1",
            "-file",
            rf.to_str().unwrap(),
        ],
    );
    let c = open_xmessage(
        &d,
        &[
            "-geometry",
            "+700+700",
            "-fn",
            "-adobe-helvetica-bold-r-normal--18-*-*-*-*-*-iso8859-1",
            "-buttons",
            "Cancel",
            "File Edit View Save As Help",
        ],
    );
    wait_readable(&d, "Report", a.rect).await;
    wait_readable(&d, "Ticket", b.rect).await;
    wait_readable(&d, "Help", c.rect).await;

    let (status, first) = post(&d, "/v1/find-text", json!({"text": "Save As"})).await;
    assert_eq!(status, 200, "{first}");
    eprintln!("busy full screen, uncached: {} ms", first["elapsed_ms"]);
    assert!(inside(&first["matches"][0], c.rect), "{first}");
    let (_, again) = post(&d, "/v1/find-text", json!({"text": "Save As"})).await;
    eprintln!("busy full screen, cached: {} ms", again["elapsed_ms"]);
    assert_eq!(again["cached"], true);
    // Words from the top and the bottom of the screen, from both bands.
    for (text, rect) in [
        ("Report 3 was", a.rect),
        ("Report 42 was", a.rect),
        ("Ticket 101", b.rect),
        ("Ticket 126", b.rect),
    ] {
        let (_, found) = post(&d, "/v1/find-text", json!({"text": text, "exact": true})).await;
        assert_eq!(found["cached"], true);
        let m = found["matches"].as_array().unwrap();
        assert_eq!(m.len(), 1, "{text}: {found}");
        assert!(inside(&m[0], rect), "{text}: {found}");
    }
    // Every report line is read once, none twice where the bands overlap.
    let (_, reports) = post(
        &d,
        "/v1/find-text",
        json!({"text": "archived by", "exact": true}),
    )
    .await;
    let n = reports["matches"].as_array().unwrap().len();
    assert!(
        (40..=44).contains(&n),
        "{n} of 44 report lines found: {reports}"
    );
    let (x, y, w, _) = a.rect;
    let (status, r) = post(
        &d,
        "/v1/find-text",
        json!({"text": "Report 20", "region": {"x": x, "y": y + 300, "width": w, "height": 120}}),
    )
    .await;
    assert_eq!(status, 200);
    eprintln!("busy region {w}x120, uncached: {} ms", r["elapsed_ms"]);
}
