//! Body streams of proxied requests and responses: counted for the audit, and for hosts with a
//! bound secret, swapped (placeholder to real value going up when the secret allows it, real
//! value to placeholder coming down).
//!
//! A placeholder has the length of its secret, so a swap never changes a body's length
//! (`Content-Length` stays right) and can be done in place, carrying only the last few bytes
//! of each chunk over to the next for a match split across chunks.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hudsucker::Body;
use hudsucker::futures::Stream;
use hudsucker::hyper::body::{Body as _, Bytes};

use super::exchange::Exchange;

/// One direction's replacements: each pair has a `from` and a `to` of the same length.
#[derive(Debug)]
pub(crate) struct Swapper {
    pairs: Vec<Pair>,
    /// Longest `from` minus one: the most bytes of a match a chunk can end with.
    keep: usize,
}

#[derive(Debug)]
struct Pair {
    from: Arc<[u8]>,
    to: Arc<[u8]>,
    /// Bit of the secret in [`Exchange`]'s "secrets used" mask.
    bit: u64,
}

impl Swapper {
    /// A swapper for `(from, to, secret index)`; `None` when there is nothing to swap. Pairs of
    /// unequal length are skipped (they cannot come from [`crate::policy::placeholder_for`]).
    pub(crate) fn new(
        pairs: impl IntoIterator<Item = (Arc<[u8]>, Arc<[u8]>, usize)>,
    ) -> Option<Swapper> {
        let pairs: Vec<Pair> = pairs
            .into_iter()
            .filter(|(from, to, _)| from.len() == to.len() && !from.is_empty())
            .map(|(from, to, index)| Pair {
                from,
                to,
                bit: 1u64 << (index % 64),
            })
            .collect();
        let keep = pairs.iter().map(|p| p.from.len() - 1).max()?;
        Some(Swapper { pairs, keep })
    }

    /// Replaces every occurrence in `buf`, in place; returns the bits of the secrets found.
    pub(crate) fn apply(&self, buf: &mut [u8]) -> u64 {
        let mut hits = 0;
        for pair in &self.pairs {
            let needle = &pair.from[..];
            let first = needle[0];
            let mut at = 0;
            while at + needle.len() <= buf.len() {
                let Some(off) = buf[at..=buf.len() - needle.len()]
                    .iter()
                    .position(|b| *b == first)
                else {
                    break;
                };
                let start = at + off;
                if &buf[start..start + needle.len()] == needle {
                    buf[start..start + needle.len()].copy_from_slice(&pair.to);
                    hits |= pair.bit;
                    at = start + needle.len();
                } else {
                    at = start + 1;
                }
            }
        }
        hits
    }
}

/// Which way a body flows, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Sandbox to host.
    Up,
    /// Host to sandbox.
    Down,
}

/// A body passed through: counted into the exchange and swapped when a swapper is set. It holds
/// the exchange, so the audit line is written once the body is done (or dropped).
pub(crate) struct MeteredBody {
    inner: Body,
    swap: Option<Arc<Swapper>>,
    carry: Vec<u8>,
    exchange: Arc<Exchange>,
    direction: Direction,
}

impl MeteredBody {
    /// Wraps `inner` as a hudsucker body.
    pub(crate) fn wrap(
        inner: Body,
        swap: Option<Arc<Swapper>>,
        exchange: Arc<Exchange>,
        direction: Direction,
    ) -> Body {
        Body::from_stream(MeteredBody {
            inner,
            swap,
            carry: Vec::new(),
            exchange,
            direction,
        })
    }
}

impl Stream for MeteredBody {
    type Item = Result<Bytes, hudsucker::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    if this.carry.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Bytes::from(std::mem::take(&mut this.carry)))));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.exchange.set_error(&e);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            // Trailers are dropped: the stream body carries data only, and HTTP/1.1 trailers
            // are all but unused by the APIs a bottle talks to.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            this.exchange.count(this.direction, data.len() as u64);
            let Some(swap) = &this.swap else {
                return Poll::Ready(Some(Ok(data)));
            };
            let mut buf = std::mem::take(&mut this.carry);
            buf.extend_from_slice(&data);
            let hits = swap.apply(&mut buf);
            if hits != 0 {
                this.exchange.mark_secrets(hits);
            }
            let split = buf.len() - swap.keep.min(buf.len());
            this.carry = buf.split_off(split);
            if !buf.is_empty() {
                return Poll::Ready(Some(Ok(Bytes::from(buf))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn swapper(pairs: &[(&str, &str)]) -> Swapper {
        Swapper::new(
            pairs
                .iter()
                .enumerate()
                .map(|(i, (f, t))| (Arc::from(f.as_bytes()), Arc::from(t.as_bytes()), i)),
        )
        .unwrap()
    }

    /// Runs the chunked algorithm of `MeteredBody` over `chunks` without the body plumbing.
    fn run(sw: &Swapper, chunks: &[&str]) -> (String, u64) {
        let mut carry = Vec::new();
        let mut out = Vec::new();
        let mut hits = 0;
        for c in chunks {
            let mut buf = std::mem::take(&mut carry);
            buf.extend_from_slice(c.as_bytes());
            hits |= sw.apply(&mut buf);
            let split = buf.len() - sw.keep.min(buf.len());
            carry = buf.split_off(split);
            out.extend_from_slice(&buf);
        }
        out.extend_from_slice(&carry);
        (String::from_utf8(out).unwrap(), hits)
    }

    #[test]
    fn swaps_across_chunk_boundaries() {
        let sw = swapper(&[("SECRETVALUE1", "PLACEHOLDR01")]);
        for split in 0..30 {
            let text = "xx SECRETVALUE1 yy SECRETVALUE1";
            let (a, b) = text.split_at(split.min(text.len()));
            let (out, hits) = run(&sw, &[a, b]);
            assert_eq!(out, "xx PLACEHOLDR01 yy PLACEHOLDR01", "split at {split}");
            assert_eq!(hits, 1);
        }
        let (out, hits) = run(&sw, &["S", "E", "C", "R", "ETVALUE", "1!"]);
        assert_eq!(out, "PLACEHOLDR01!");
        assert_eq!(hits, 1);
    }

    #[test]
    fn leaves_other_text_alone_and_reports_which_secret() {
        let sw = swapper(&[
            ("AAAAAAAAAAAA", "aaaaaaaaaaaa"),
            ("BBBBBBBBBBBB", "bbbbbbbbbbbb"),
        ]);
        let (out, hits) = run(&sw, &["no secret here, AAAAAAAAAAA (one short)"]);
        assert_eq!(out, "no secret here, AAAAAAAAAAA (one short)");
        assert_eq!(hits, 0);
        let (out, hits) = run(&sw, &["..BBBBBBBBBBBB.."]);
        assert_eq!(out, "..bbbbbbbbbbbb..");
        assert_eq!(hits, 0b10);
    }
}
