//! The in-sandbox bridge: a TCP listener on the sandbox's own loopback whose every connection
//! is spliced onto a fresh connection to the egress proxy's unix socket. Runs on the init's
//! single-threaded runtime, so open connections cost no threads (threads count against the
//! sandbox's process limit).

use std::path::PathBuf;

use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// What a client gets when the proxy socket cannot be reached: it speaks HTTP proxy protocol,
/// so a plain 502 is the clearest message it can show.
const UNREACHABLE: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 42\r\nConnection: close\r\n\r\nbottle: the egress proxy is not reachable\n";

/// Accepts forever, one task per connection.
pub(crate) async fn serve(listener: TcpListener, socket: PathBuf) {
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            // EMFILE and friends: back off briefly instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let socket = socket.clone();
        tokio::spawn(async move { forward(tcp, &socket).await });
    }
}

async fn forward(mut tcp: TcpStream, socket: &std::path::Path) {
    let _ = tcp.set_nodelay(true);
    match UnixStream::connect(socket).await {
        Ok(mut unix) => {
            let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
        }
        Err(_) => {
            let _ = tcp.write_all(UNREACHABLE).await;
            let _ = tcp.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tokio::io::AsyncReadExt as _;

    #[test]
    fn unreachable_body_length_matches() {
        let text = std::str::from_utf8(UNREACHABLE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_and_a_dead_socket_gets_502() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("p.sock");
        let unix = tokio::net::UnixListener::bind(&sock).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, sock.clone()));
        tokio::spawn(async move {
            let (mut s, _) = unix.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf.map(|b| b.to_ascii_uppercase()))
                .await
                .unwrap();
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut out = [0u8; 5];
        c.read_exact(&mut out).await.unwrap();
        assert_eq!(&out, b"HELLO");

        std::fs::remove_file(&sock).unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut reply = Vec::new();
        c.read_to_end(&mut reply).await.unwrap();
        assert!(reply.starts_with(b"HTTP/1.1 502"));
    }
}
