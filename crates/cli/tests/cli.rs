//! The `bytebot` binary as a user runs it: config errors, start-up banner,
//! a real request, clean shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

fn bytebot() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bytebot"));
    c.env_remove("DISPLAY")
        .env_remove("BYTEBOT_TOKEN")
        .env_remove("BYTEBOT_CONFIG");
    c
}

#[test]
fn a_bad_config_stops_with_the_file_key_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bytebot.toml");
    std::fs::write(&file, "[desktop]\nresolution = \"huge\"\n").unwrap();
    let out = bytebot()
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&file.display().to_string())
            && err.contains("desktop.resolution")
            && err.contains("WIDTHxHEIGHT"),
        "{err}"
    );

    let out = bytebot()
        .args(["config", "check"])
        .env("BYTEBOT_DESKTOP_NO_SUCH_KEY", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));

    let out = bytebot().args(["config", "check"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn desktop_starts_prints_its_url_and_token_and_serves() {
    if Command::new("sh")
        .args(["-c", "command -v Xvfb"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        eprintln!("skipping: Xvfb is not available (apt-get install xvfb)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = bytebot()
        .args(["desktop", "--listen", "127.0.0.1:0"])
        .env("BYTEBOT_DATA_DIR", dir.path())
        .env("BYTEBOT_DESKTOP_VNC", "false")
        .env("BYTEBOT_DESKTOP_WINDOW_MANAGER", "\"\"")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = String::new();
    let mut token = String::new();
    for line in lines.by_ref().take(8) {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("desktop API") {
            url = rest.split_whitespace().next().unwrap().to_string();
        }
        if let Some(rest) = line.trim().strip_prefix("token") {
            token = rest.split_whitespace().next().unwrap().to_string();
        }
        if line.starts_with("Press Ctrl+C") {
            break;
        }
    }
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(token.len(), 32);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("token")).unwrap(),
        token,
        "the generated token is kept"
    );
    let addr = url.trim_start_matches("http://");
    let get = |auth: &str| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET /health HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp
    };
    assert!(get("").starts_with("HTTP/1.1 401"));
    assert!(get(&format!("Authorization: Bearer {token}\r\n")).starts_with("HTTP/1.1 200"));
    // SIGTERM shuts down cleanly (and takes our Xvfb with it).
    send_sigterm(child.id());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

fn send_sigterm(pid: u32) {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
}
