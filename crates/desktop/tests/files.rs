//! File actions and `/v1/files` against a real daemon: round trips, and every
//! way out of the workspace refused with nothing written outside.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::TestDesktop;
use serde_json::{Value, json};
use std::os::unix::fs::symlink;
use std::path::Path;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// POSTs an action expecting Bytebot's 201 and returns the JSON answer.
async fn act_ok(d: &TestDesktop, body: Value) -> Value {
    let (status, text) = d.act(body.clone()).await;
    assert_eq!(status, 201, "{body}: {text}");
    serde_json::from_str(&text).unwrap()
}

async fn write(d: &TestDesktop, path: &str, bytes: &[u8]) -> Value {
    act_ok(
        d,
        json!({"action": "write_file", "path": path, "data": b64(bytes)}),
    )
    .await
}

async fn read(d: &TestDesktop, path: &str) -> Value {
    act_ok(d, json!({"action": "read_file", "path": path})).await
}

fn assert_failed(v: &Value, needle: &str) {
    assert_eq!(v["success"], false, "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains(needle),
        "message {message:?} should mention {needle:?}"
    );
    assert!(v.get("data").is_none(), "{v}");
}

/// The folder that holds the workspace: "outside" it, but ours to check.
fn outside(d: &TestDesktop) -> &Path {
    d.workspace.parent().unwrap()
}

#[tokio::test]
async fn write_then_read_round_trips() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let text = "héllo, 世界\n".as_bytes();
    let w = write(&d, "notes/hello.txt", text).await;
    assert_eq!(w["success"], true, "{w}");
    assert!(
        w["message"].as_str().unwrap().contains("notes/hello.txt"),
        "{w}"
    );
    assert_eq!(
        std::fs::read(d.workspace.join("notes/hello.txt")).unwrap(),
        text
    );

    let r = read(&d, "notes/hello.txt").await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["data"], b64(text));
    assert_eq!(r["name"], "hello.txt");
    assert_eq!(r["size"], text.len());
    assert_eq!(r["mediaType"], "text/plain");

    // Binary bytes, an absolute path inside the workspace, and an overwrite.
    let png: Vec<u8> = (0..=255u8).chain([0x89, b'P', b'N', b'G']).collect();
    let abs = d.workspace.join("img/pic.png");
    assert_eq!(
        write(&d, abs.to_str().unwrap(), b"old").await["success"],
        true
    );
    assert_eq!(
        write(&d, abs.to_str().unwrap(), &png).await["success"],
        true
    );
    let r = read(&d, "img/pic.png").await;
    assert_eq!(
        (r["data"].clone(), r["mediaType"].clone(), r["size"].clone()),
        (json!(b64(&png)), json!("image/png"), json!(260))
    );
    let leftovers: Vec<_> = std::fs::read_dir(d.workspace.join("img"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["pic.png"], "no temporary files left behind");

    // An empty file and an unknown extension.
    assert_eq!(write(&d, "empty.bin", b"").await["success"], true);
    let r = read(&d, "empty.bin").await;
    assert_eq!(
        (r["data"].clone(), r["size"].clone(), r["mediaType"].clone()),
        (json!(""), json!(0), json!("application/octet-stream"))
    );
}

#[tokio::test]
async fn bad_paths_fail_without_touching_anything_outside() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let out = outside(&d).to_path_buf();

    assert_failed(&read(&d, "missing.txt").await, "no file");
    assert_failed(&read(&d, "../x").await, "leaves the workspace");
    assert_failed(&write(&d, "../x", b"evil").await, "leaves the workspace");
    assert_failed(
        &write(&d, "a/../../x", b"evil").await,
        "leaves the workspace",
    );
    assert!(!out.join("x").exists());

    assert_failed(&read(&d, "/etc/passwd").await, "outside the workspace");
    let sibling = out.join("sibling.txt");
    assert_failed(
        &write(&d, sibling.to_str().unwrap(), b"evil").await,
        "outside the workspace",
    );
    assert!(!sibling.exists());
    let sneaky = format!("{}/../sneaky.txt", d.workspace.display());
    assert_failed(&write(&d, &sneaky, b"evil").await, "outside the workspace");
    assert!(!out.join("sneaky.txt").exists());

    // A symlink to /etc inside the workspace: neither read nor write through it.
    symlink("/etc", d.workspace.join("etc")).unwrap();
    assert_failed(&read(&d, "etc/passwd").await, "symbolic link");
    assert_failed(
        &write(&d, "etc/bytebot-test-file", b"evil").await,
        "symbolic link",
    );
    assert!(!Path::new("/etc/bytebot-test-file").exists());

    // A symlinked parent folder pointing to a folder we own outside.
    let secret_dir = out.join("secret");
    std::fs::create_dir(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("secret.txt"), "secret").unwrap();
    symlink(&secret_dir, d.workspace.join("shared")).unwrap();
    assert_failed(&read(&d, "shared/secret.txt").await, "symbolic link");
    assert_failed(&write(&d, "shared/new.txt", b"evil").await, "symbolic link");
    assert_failed(
        &write(&d, "shared/deeper/new.txt", b"evil").await,
        "symbolic link",
    );
    assert!(!secret_dir.join("new.txt").exists() && !secret_dir.join("deeper").exists());

    // A final component that is a symlink to a file outside: not followed.
    symlink(secret_dir.join("secret.txt"), d.workspace.join("link.txt")).unwrap();
    assert_failed(&read(&d, "link.txt").await, "symbolic link");
    assert_failed(&write(&d, "link.txt", b"evil").await, "symbolic link");
    // A dangling one pointing outside: the target is never created.
    symlink(
        out.join("created-by-link.txt"),
        d.workspace.join("dangling.txt"),
    )
    .unwrap();
    assert_failed(&write(&d, "dangling.txt", b"evil").await, "symbolic link");
    assert!(!out.join("created-by-link.txt").exists());
    assert_eq!(
        std::fs::read_to_string(secret_dir.join("secret.txt")).unwrap(),
        "secret"
    );

    // A symlink that stays inside is fine.
    std::fs::create_dir(d.workspace.join("real")).unwrap();
    symlink("real", d.workspace.join("alias")).unwrap();
    assert_eq!(write(&d, "alias/in.txt", b"ok").await["success"], true);
    assert_eq!(
        std::fs::read(d.workspace.join("real/in.txt")).unwrap(),
        b"ok"
    );

    // Folders are not files; files are not folders.
    assert_failed(&read(&d, "real").await, "is a folder");
    assert_failed(&write(&d, "real", b"x").await, "is a folder");
    assert_failed(&write(&d, "real/in.txt/x", b"x").await, "folder");
    assert_failed(&read(&d, ".").await, "workspace folder itself");

    // Invalid base64 names `data`; nothing is written.
    let v = act_ok(
        &d,
        json!({"action": "write_file", "path": "b.txt", "data": "not base64!!"}),
    )
    .await;
    assert_failed(&v, "data");
    assert!(!d.workspace.join("b.txt").exists());

    // A NUL byte is refused by request validation (400 naming `path`).
    let (status, text) = d
        .act(json!({"action": "read_file", "path": "a\u{0}b"}))
        .await;
    assert_eq!(status, 400, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["field"], "path", "{v}");
    let (status, _) = d
        .act(json!({"action": "write_file", "path": "a\u{0}b", "data": "aGk="}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn size_cap_applies_to_read_and_write() {
    let Some(d) = TestDesktop::start_with(|c| c.max_file_bytes = 1024).await else {
        return;
    };
    std::fs::write(d.workspace.join("big.bin"), vec![7u8; 2000]).unwrap();
    assert_failed(&read(&d, "big.bin").await, "desktop.max_file_bytes");
    std::fs::write(d.workspace.join("small.bin"), vec![7u8; 1000]).unwrap();
    assert_eq!(read(&d, "small.bin").await["size"], 1000);

    // An oversized write is caught by request validation before decoding.
    let (status, text) = d
        .act(json!({"action": "write_file", "path": "w.bin", "data": b64(&[1u8; 2000])}))
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("desktop.max_file_bytes"), "{text}");
    assert!(!d.workspace.join("w.bin").exists());
    assert_eq!(write(&d, "w.bin", &[1u8; 1000]).await["success"], true);

    let r = d
        .client
        .put(format!("{}/v1/files/content?path=put.bin", d.url))
        .body(vec![0u8; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("desktop.max_file_bytes"));
    assert!(!d.workspace.join("put.bin").exists());
    let r = d
        .client
        .get(format!("{}/v1/files/content?path=big.bin", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn files_routes() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let url = |p: &str| format!("{}/v1/files{p}", d.url);

    // PUT raw bytes.
    let r = d
        .client
        .put(url("/content?path=docs/report.csv"))
        .body("a,b\n1,2\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"path": "docs/report.csv", "size": 8}));
    assert_eq!(
        std::fs::read_to_string(d.workspace.join("docs/report.csv")).unwrap(),
        "a,b\n1,2\n"
    );

    // List the root and the folder.
    std::os::unix::fs::symlink("docs/report.csv", d.workspace.join("shortcut")).unwrap();
    let v: Value = d
        .client
        .get(url(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["path"], ".");
    let entries = v["entries"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("docs", "dir"), ("shortcut", "symlink")]);
    let v: Value = d
        .client
        .get(url("?path=docs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let e = &v["entries"][0];
    assert_eq!(
        (e["name"].as_str(), e["type"].as_str(), e["size"].as_u64()),
        (Some("report.csv"), Some("file"), Some(8))
    );
    assert!(e["modified"].as_str().unwrap().ends_with('Z'), "{e}");

    // GET the content with its type and name.
    let r = d
        .client
        .get(url("/content?path=docs/report.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("filename=\"report.csv\"")
    );
    assert_eq!(r.text().await.unwrap(), "a,b\n1,2\n");

    // Errors: bad paths 400 naming `path`, missing 404, folder-as-file 400.
    for bad in [
        "/content?path=../x",
        "/content?path=/etc/passwd",
        "/content",
        "?path=../",
        "?path=docs/report.csv",
    ] {
        let r = d.client.get(url(bad)).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["field"], "path", "{bad}: {v}");
    }
    let r = d
        .client
        .put(url("/content?path=../escape.txt"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(!outside(&d).join("escape.txt").exists());
    assert_eq!(
        d.client
            .get(url("/content?path=nope.txt"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        d.client
            .get(url("?path=nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // DELETE the link (not its target), then the file, then again: 404.
    assert_eq!(
        d.client
            .delete(url("/content?path=shortcut"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert!(d.workspace.join("docs/report.csv").exists());
    assert_eq!(
        d.client
            .delete(url("/content?path=docs/report.csv"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert!(!d.workspace.join("docs/report.csv").exists());
    assert_eq!(
        d.client
            .delete(url("/content?path=docs/report.csv"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        d.client
            .delete(url("/content?path=."))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert!(d.workspace.exists());

    // No token: 401 on every route.
    let anon = reqwest::Client::new();
    assert_eq!(anon.get(url("")).send().await.unwrap().status(), 401);
    assert_eq!(
        anon.get(url("/content?path=x"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        anon.put(url("/content?path=anon.txt"))
            .body("x")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert!(!d.workspace.join("anon.txt").exists());
}
