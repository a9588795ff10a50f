//! Capped capture of one output stream: keeps the first `cap` bytes, counts and drops the rest,
//! and keeps draining so a chatty command never blocks on a full pipe; past `flood` bytes it
//! tells the runner to end the run.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::{Notify, watch};

use super::Captured;

/// The flood threshold for a per-stream cap: `max(64 × cap, 64 MiB)`.
pub(crate) fn flood_threshold(cap: usize) -> u64 {
    (cap as u64).saturating_mul(64).max(64 << 20)
}

/// Reads `stream` to its end, or until `stop` turns true (keeping what was read). Notifies
/// `flood` once when the total passes `flood_at`.
pub(crate) async fn capture<R: AsyncRead + Unpin>(
    mut stream: R,
    cap: usize,
    flood_at: u64,
    flood: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> Captured {
    let mut out = Captured {
        bytes: Vec::with_capacity(cap.min(64 << 10)),
        ..Captured::default()
    };
    let mut buf = vec![0u8; 64 << 10];
    let mut flooded = false;
    loop {
        let n = tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        out.total += n as u64;
        let room = cap.saturating_sub(out.bytes.len());
        if room > 0 {
            out.bytes.extend_from_slice(&buf[..n.min(room)]);
        }
        if n > room {
            out.truncated = true;
        }
        if !flooded && out.total > flood_at {
            flooded = true;
            flood.notify_one();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn keeps_the_head_counts_the_rest_and_signals_a_flood() {
        let data = vec![b'y'; 10_000];
        let flood = Arc::new(Notify::new());
        let (_tx, rx) = watch::channel(false);
        let got = capture(&data[..], 100, 5_000, flood.clone(), rx.clone()).await;
        assert_eq!(got.bytes.len(), 100);
        assert_eq!(got.total, 10_000);
        assert!(got.truncated);
        // notify_one stores a permit when nobody waits yet.
        tokio::time::timeout(std::time::Duration::from_secs(1), flood.notified())
            .await
            .unwrap();

        let small = capture(&b"hi"[..], 100, 5_000, Arc::new(Notify::new()), rx).await;
        assert_eq!(small.bytes, b"hi");
        assert!(!small.truncated);
        assert_eq!(flood_threshold(1 << 20), 64 << 20);
        assert_eq!(flood_threshold(4 << 20), 256 << 20);
    }

    #[tokio::test]
    async fn stop_ends_a_stream_that_never_closes_and_keeps_what_was_read() {
        let (mut w, r) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut w, b"partial")
            .await
            .unwrap();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(capture(r, 100, 1 << 30, Arc::new(Notify::new()), rx));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        tx.send(true).unwrap();
        let got = task.await.unwrap();
        assert_eq!(got.bytes, b"partial");
        drop(w);
    }
}
