//! The live view on a real Xvfb with a real x11vnc: the `/websockify` bridge
//! speaks RFB with security None toward the client and hides x11vnc's
//! password; `/novnc/` serves noVNC; x11vnc itself is loopback-only and
//! password-protected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytebot_desktop::vnc::Vnc;
use common::{TestDesktop, skip_without};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A desktop with the live view on; `None` (after printing why) without
/// Xvfb or x11vnc.
async fn live_desktop() -> Option<TestDesktop> {
    if skip_without("x11vnc", "x11vnc") {
        return None;
    }
    TestDesktop::start_with(|c| c.vnc = true).await
}

fn ws_url(d: &TestDesktop, query: &str) -> String {
    format!(
        "{}/websockify{query}",
        d.url.replacen("http://", "ws://", 1)
    )
}

/// An RFB reader over WebSocket messages, which may cut the stream anywhere.
struct Rfb {
    ws: Ws,
    buf: Vec<u8>,
}

impl Rfb {
    async fn read(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("data within 10 s")
                .expect("stream open")
                .expect("no WebSocket error");
            match msg {
                Message::Binary(b) => self.buf.extend_from_slice(&b),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected message {other:?}"),
            }
        }
        self.buf.drain(..n).collect()
    }

    async fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.read(2).await.try_into().unwrap())
    }

    async fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.read(4).await.try_into().unwrap())
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .unwrap();
    }
}

async fn open_ws(d: &TestDesktop, query: &str) -> Rfb {
    let mut req = ws_url(d, query).into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "binary".parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("WebSocket upgrade");
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "binary"
    );
    Rfb {
        ws,
        buf: Vec::new(),
    }
}

/// Runs the client side of the RFB 3.8 handshake up to security None.
async fn handshake_none(rfb: &mut Rfb) {
    assert_eq!(rfb.read(12).await, b"RFB 003.008\n");
    rfb.send(b"RFB 003.008\n").await;
    let count = rfb.read(1).await[0];
    assert_eq!(
        rfb.read(usize::from(count)).await,
        vec![1],
        "only security None is offered"
    );
    rfb.send(&[1]).await;
    assert_eq!(rfb.u32().await, 0, "SecurityResult OK");
}

#[tokio::test(flavor = "multi_thread")]
async fn websockify_serves_the_desktop_without_a_vnc_password() {
    let Some(d) = live_desktop().await else {
        return;
    };
    let mut rfb = open_ws(&d, &format!("?token={}", d.token)).await;
    handshake_none(&mut rfb).await;
    rfb.send(&[1]).await; // ClientInit, shared
    let (w, h) = (rfb.u16().await, rfb.u16().await);
    assert_eq!((w, h), (1280, 960));
    let pixel_format = rfb.read(16).await;
    let bits_per_pixel = pixel_format[0];
    assert!(matches!(bits_per_pixel, 8 | 16 | 32), "{pixel_format:?}");
    let name_len = rfb.u32().await as usize;
    let _name = rfb.read(name_len).await;

    // SetEncodings [Raw], then ask for the whole screen.
    rfb.send(&[2, 0, 0, 1, 0, 0, 0, 0]).await;
    let mut req = vec![3, 0];
    for v in [0u16, 0, w, h] {
        req.extend_from_slice(&v.to_be_bytes());
    }
    rfb.send(&req).await;
    assert_eq!(rfb.read(1).await, [0], "FramebufferUpdate");
    rfb.read(1).await; // padding
    let rects = rfb.u16().await;
    assert!(rects >= 1);
    let (x, y, rw, rh) = (
        rfb.u16().await,
        rfb.u16().await,
        rfb.u16().await,
        rfb.u16().await,
    );
    let encoding = rfb.u32().await;
    assert_eq!(encoding, 0, "raw, as asked");
    assert!(u32::from(x) + u32::from(rw) <= 1280 && u32::from(y) + u32::from(rh) <= 960);
    let pixels = rfb
        .read(usize::from(rw) * usize::from(rh) * usize::from(bits_per_pixel / 8))
        .await;
    assert_eq!(
        pixels.len(),
        usize::from(rw) * usize::from(rh) * usize::from(bits_per_pixel / 8)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn websockify_takes_the_token_from_a_header_or_cookie() {
    let Some(d) = live_desktop().await else {
        return;
    };
    for (name, value) in [
        ("Authorization", format!("Bearer {}", d.token)),
        ("Cookie", format!("bytebot_token={}", d.token)),
    ] {
        let mut req = ws_url(&d, "").into_client_request().unwrap();
        req.headers_mut().insert(name, value.parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut rfb = Rfb {
            ws,
            buf: Vec::new(),
        };
        handshake_none(&mut rfb).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn websockify_refuses_without_the_token() {
    let Some(d) = live_desktop().await else {
        return;
    };
    for query in ["", "?token=wrong-token"] {
        let err = tokio_tungstenite::connect_async(ws_url(&d, query))
            .await
            .expect_err("upgrade must fail");
        match err {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                assert_eq!(resp.status(), 401, "{query}")
            }
            other => panic!("expected an HTTP 401, got {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bridge_rejects_other_security_types() {
    let Some(d) = live_desktop().await else {
        return;
    };
    let mut rfb = open_ws(&d, &format!("?token={}", d.token)).await;
    assert_eq!(rfb.read(12).await, b"RFB 003.008\n");
    rfb.send(b"RFB 003.008\n").await;
    let count = rfb.read(1).await[0];
    rfb.read(usize::from(count)).await;
    rfb.send(&[2]).await; // VNC auth: not offered
    assert_eq!(rfb.u32().await, 1, "SecurityResult failed");
    let len = rfb.u32().await as usize;
    let reason = String::from_utf8(rfb.read(len).await).unwrap();
    assert!(reason.contains("None"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn websockify_without_live_view_is_503() {
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let r = d
        .client
        .get(format!("{}/websockify", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("desktop.vnc"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn websockify_explains_a_plain_http_request() {
    let Some(d) = live_desktop().await else {
        return;
    };
    let r = d
        .client
        .get(format!("{}/websockify", d.url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let body = r.text().await.unwrap();
    assert!(body.contains("WebSocket"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn novnc_is_served_behind_the_token() {
    let Some(d) = live_desktop().await else {
        return;
    };
    if !std::path::Path::new("/usr/share/novnc/vnc.html").exists() {
        eprintln!("skipping: noVNC is not installed (apt-get install novnc)");
        return;
    }
    let r = d
        .client
        .get(format!("{}/novnc/vnc.html", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(r.text().await.unwrap().contains("noVNC"));
    let js = d
        .client
        .get(format!("{}/novnc/core/rfb.js", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);

    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/novnc/vnc.html", "/novnc/core/rfb.js", "/novnc", "/novnc/"] {
        let r = anonymous
            .get(format!("{}{path}", d.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = anonymous
        .get(format!("{}/novnc/vnc.html?token=nope", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let missing = d
        .client
        .get(format!("{}/novnc/no-such-file.js", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let escape = d
        .client
        .get(format!("{}/novnc/../../etc/passwd", d.url))
        .send()
        .await
        .unwrap();
    assert_ne!(escape.status(), 200);
    let escape = d
        .client
        .get(format!("{}/novnc/%2e%2e/%2e%2e/%2e%2e/etc/passwd", d.url))
        .send()
        .await
        .unwrap();
    assert_ne!(escape.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn novnc_entry_sets_the_cookie_and_redirects() {
    let Some(d) = live_desktop().await else {
        return;
    };
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = browser
        .get(format!("{}/novnc?token={}", d.url, d.token))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let location = r.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("/novnc/vnc.html?") && location.contains("path=websockify"),
        "{location}"
    );
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with(&format!("bytebot_token={};", d.token)),
        "{cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    // With only that cookie, the page the redirect names loads.
    let r = browser
        .get(format!("{}{location}", d.url))
        .header("Cookie", format!("bytebot_token={}", d.token))
        .send()
        .await
        .unwrap();
    if std::path::Path::new("/usr/share/novnc/vnc.html").exists() {
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_novnc_dir_is_explained() {
    let Some(d) = TestDesktop::start_with(|c| c.novnc_dir = "/nonexistent/novnc".into()).await
    else {
        return;
    };
    let r = d
        .client
        .get(format!("{}/novnc/vnc.html", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("desktop.novnc_dir") && body.contains("apt-get install novnc"),
        "{body}"
    );
}

/// RFB 3.8 VNC auth straight against x11vnc; returns the SecurityResult.
async fn vnc_auth_with(port: u16, password: &[u8]) -> u32 {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut version = [0u8; 12];
    tcp.read_exact(&mut version).await.unwrap();
    assert_eq!(&version, b"RFB 003.008\n");
    tcp.write_all(b"RFB 003.008\n").await.unwrap();
    let count = tcp.read_u8().await.unwrap();
    let mut types = vec![0u8; usize::from(count)];
    tcp.read_exact(&mut types).await.unwrap();
    assert_eq!(
        types,
        vec![2],
        "x11vnc must offer VNC auth only, never None"
    );
    tcp.write_all(&[2]).await.unwrap();
    let mut challenge = [0u8; 16];
    tcp.read_exact(&mut challenge).await.unwrap();
    // The wrong password's response: DES with a key from `password`.
    use des::cipher::{BlockEncrypt, KeyInit};
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password) {
        *k = p.reverse_bits();
    }
    let cipher = des::Des::new(&key.into());
    for block in challenge.chunks_exact_mut(8) {
        cipher.encrypt_block(des::cipher::generic_array::GenericArray::from_mut_slice(
            block,
        ));
    }
    tcp.write_all(&challenge).await.unwrap();
    tcp.read_u32().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn x11vnc_is_loopback_only_and_password_protected() {
    if skip_without("x11vnc", "x11vnc") {
        return;
    }
    let Some(d) = TestDesktop::start().await else {
        return;
    };
    let display = d.display.clone();
    let vnc = tokio::task::spawn_blocking(move || Vnc::start(&display))
        .await
        .unwrap()
        .unwrap();
    let port = vnc.port();

    // Listening sockets on that port: only 127.0.0.1 (0100007F), no IPv6.
    let hex_port = format!(":{port:04X}");
    let tcp4 = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let listening: Vec<&str> = tcp4
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].ends_with(&hex_port) && f[3] == "0A").then_some(f[1])
        })
        .collect();
    assert_eq!(listening, vec![format!("0100007F{hex_port}")]);
    let tcp6 = std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    assert!(
        !tcp6.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f[1].ends_with(&hex_port) && f[3] == "0A"
        }),
        "x11vnc must not listen on IPv6"
    );

    for wrong in [&b""[..], b"password", b"wrongpw1"] {
        assert_ne!(
            vnc_auth_with(port, wrong).await,
            0,
            "x11vnc accepted {:?}",
            String::from_utf8_lossy(wrong)
        );
    }

    // The command line names a password file, never the password, and the
    // file is gone once x11vnc has read it.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", vnc.pid())).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert!(
        !args
            .iter()
            .any(|a| a == "-passwd" || a == "-rfbauth" || a == "-nopw"),
        "{args:?}"
    );
    let i = args
        .iter()
        .position(|a| a == "-passwdfile")
        .expect("-passwdfile");
    let file = args[i + 1].strip_prefix("rm:").expect("rm: prefix");
    assert!(
        !std::path::Path::new(file).exists(),
        "password file left behind: {file}"
    );

    let pid = vnc.pid();
    drop(vnc);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists() || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.contains(") Z")
        }
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "x11vnc still listens after drop"
    );
}
