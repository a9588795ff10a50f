//! Find-text and click-text by OCR, so a model can click a label instead of
//! guessing coordinates.
//!
//! The screen (or a region) is captured, turned to grey, and its text made
//! dark on light wherever it sits (dark panels, coloured bars) by taking each
//! pixel's distance from a large-window median background. A tall capture is
//! cut into two horizontal bands with an overlap, and each band goes as a PNG
//! on stdin to its own `tesseract` process (one thread each, in parallel:
//! tesseract's own threading gains little on screen text). The TSV answer
//! gives words with boxes; words of one line are grouped so a query of
//! several words matches as one box. Results are cached by the bands'
//! pixels, so asking again about an unchanged screen costs a capture and a
//! hash instead of an OCR run.

use crate::desktop::Desktop;
use crate::error::DesktopError;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::x11::capture::{Frame, Region};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use bytebot_protocol::action::ClickMouse;
use bytebot_protocol::{Action, Button, Coordinates};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Semaphore;

/// Page segmentation mode: 11 ("sparse text") finds scattered labels,
/// menus and buttons better than the page-layout modes on screen content
/// (measured on a synthetic desktop of 54 labels: 54 found against 53 for
/// mode 3 after flattening, 44 against 37 without; see docs/ocr.md).
const PSM: &str = "11";
/// Longest query, in characters.
const MAX_QUERY_CHARS: usize = 200;
/// Bands kept in the result cache (two per full screen).
const CACHE_BANDS: usize = 32;
/// Rows shared by two bands, so a line of text cut by one band's edge is
/// whole in the other (text up to half this tall).
const BAND_OVERLAP: u32 = 64;
/// Captures shorter than this, or smaller than [`MIN_SPLIT_PIXELS`], go to
/// one tesseract: a second process costs more to start than it saves.
const MIN_SPLIT_HEIGHT: u32 = 320;
/// See [`MIN_SPLIT_HEIGHT`].
const MIN_SPLIT_PIXELS: u32 = 300_000;
/// Longest one tesseract run may take.
const TESSERACT_TIMEOUT: Duration = Duration::from_secs(30);
/// Changes whenever the pipeline changes what tesseract sees, so results
/// of an older pipeline are never served from the cache.
const PIPELINE: &str = "gray-median-bg-v1;psm11;dpi96;noinvert";
/// Half the side of the median window that estimates the background: a
/// 41-pixel window, wide enough that inside large bold letters the median
/// still lands on the background. (A half-resolution version was tried: it
/// smeared dense small text into the background estimate.)
const BG_RADIUS: usize = 20;

/// One recognised word, in screen coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    /// The text as tesseract read it.
    pub text: String,
    /// Left edge.
    pub left: u32,
    /// Top edge.
    pub top: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Tesseract's confidence, 0 to 100.
    pub confidence: f32,
}

impl Word {
    fn right(&self) -> u32 {
        self.left + self.width
    }
    fn bottom(&self) -> u32 {
        self.top + self.height
    }
}

/// Words read on one line, left to right.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// The words, in reading order.
    pub words: Vec<Word>,
}

/// A point on the screen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Horizontal position.
    pub x: u32,
    /// Vertical position.
    pub y: u32,
}

/// Where a query was found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextMatch {
    /// The words that matched, as read (may differ from the query in case
    /// and punctuation).
    pub text: String,
    /// Left edge of the box around the matched words.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Middle of the box: where click-text clicks.
    pub center: Point,
    /// The words' mean OCR confidence (0 to 100), scaled down by the share
    /// of their characters the query did not cover, so "Save" ranks the word
    /// "Save" above "Saved".
    pub confidence: f64,
}

/// How a query is compared with the words on screen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatchOptions {
    /// Compare letters' case too.
    pub case_sensitive: bool,
    /// Only whole words: "Save" does not match "Saved".
    pub exact: bool,
}

/// Parses tesseract's TSV into words, moving boxes by `(dx, dy)` into
/// screen coordinates. Rows that are not words, have no text or no
/// confidence are skipped.
pub fn parse_tsv(tsv: &str, dx: u32, dy: u32) -> Vec<Word> {
    let mut words = Vec::new();
    for row in tsv.lines() {
        let cols: Vec<&str> = row.splitn(12, '\t').collect();
        if cols.len() < 12 || cols[0] != "5" {
            continue;
        }
        let text = cols[11].trim();
        let num = |i: usize| cols[i].trim().parse::<i64>().ok();
        let (Some(left), Some(top), Some(width), Some(height)) = (num(6), num(7), num(8), num(9))
        else {
            continue;
        };
        let Ok(confidence) = cols[10].trim().parse::<f32>() else {
            continue;
        };
        if text.is_empty() || confidence < 0.0 || width <= 0 || height <= 0 {
            continue;
        }
        let clamp = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
        words.push(Word {
            text: text.to_string(),
            left: clamp(left).saturating_add(dx),
            top: clamp(top).saturating_add(dy),
            width: clamp(width),
            height: clamp(height),
            confidence,
        });
    }
    words
}

/// Groups words into lines by where they sit, not by tesseract's line
/// numbers: in sparse mode tesseract often puts each word (or a letter
/// glued to a border) in a block of its own. A word joins a line when it
/// overlaps the line's last word vertically by at least half the smaller
/// height and starts at most 1.5 heights to its right; a wider gap starts
/// a new line, so a phrase never matches across separate labels.
pub fn group_lines(mut words: Vec<Word>) -> Vec<Line> {
    words.sort_by_key(|w| (w.left, w.top));
    let mut lines: Vec<Line> = Vec::new();
    for word in words {
        let mut best: Option<(usize, u32)> = None;
        for (i, line) in lines.iter().enumerate() {
            let Some(last) = line.words.last() else {
                continue;
            };
            let overlap = last
                .bottom()
                .min(word.bottom())
                .saturating_sub(last.top.max(word.top));
            let small = last.height.min(word.height).max(1);
            let tall = last.height.max(word.height);
            let after = word.left + tall / 3 >= last.right();
            let near = word.left <= last.right() + tall * 3 / 2;
            if overlap * 2 >= small && after && near && best.is_none_or(|(_, o)| overlap > o) {
                best = Some((i, overlap));
            }
        }
        match best {
            Some((i, _)) => lines[i].words.push(word),
            None => lines.push(Line { words: vec![word] }),
        }
    }
    lines.sort_by_key(|l| l.words.first().map(|w| (w.top, w.left)));
    lines
}

/// The letters and digits of `s`, lowercased unless `case_sensitive`.
fn normalize(s: &str, case_sensitive: bool) -> String {
    let kept = s.chars().filter(|c| c.is_alphanumeric());
    if case_sensitive {
        kept.collect()
    } else {
        kept.flat_map(char::to_lowercase).collect()
    }
}

/// Finds `query` in `lines`, best first: matches of whole words before
/// matches inside words, then by confidence. Punctuation and spaces are
/// ignored on both sides: a button read as "(okay)" matches "okay", and
/// "Hello World" matches a line tesseract split as "H ello World"; the
/// match is one box around the consecutive words of one line it spans.
pub fn find_matches(lines: &[Line], query: &str, opts: MatchOptions) -> Vec<TextMatch> {
    let mut needle = normalize(query, opts.case_sensitive);
    // A query of punctuation only ("+", "...") is compared as typed.
    let raw = needle.is_empty();
    let prepare = |s: &str| -> String {
        let kept = s.chars().filter(|c| !c.is_whitespace());
        if opts.case_sensitive {
            kept.collect()
        } else {
            kept.flat_map(char::to_lowercase).collect()
        }
    };
    if raw {
        needle = prepare(query);
    }
    if needle.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    for line in lines {
        // The line's words run together, with where each word starts and ends.
        let mut hay = String::new();
        let mut spans: Vec<(usize, usize, usize)> = Vec::new(); // (start, end, word index)
        for (i, w) in line.words.iter().enumerate() {
            let t = if raw {
                prepare(&w.text)
            } else {
                normalize(&w.text, opts.case_sensitive)
            };
            if !t.is_empty() {
                spans.push((hay.len(), hay.len() + t.len(), i));
                hay.push_str(&t);
            }
        }
        let mut from = 0;
        while let Some(pos) = hay.get(from..).and_then(|h| h.find(&needle)) {
            let start = from + pos;
            let end = start + needle.len();
            from = end;
            let first = spans.iter().position(|s| s.0 <= start && start < s.1);
            let last = spans.iter().position(|s| s.0 < end && end <= s.1);
            let (Some(first), Some(last)) = (first, last) else {
                continue;
            };
            let whole = spans[first].0 == start && spans[last].1 == end;
            if opts.exact && !whole {
                continue;
            }
            let words: Vec<&Word> = spans[first..=last]
                .iter()
                .map(|s| &line.words[s.2])
                .collect();
            let covered = spans[last].1 - spans[first].0;
            found.push((
                whole,
                make_match(&words, needle.len() as f64 / covered.max(1) as f64),
            ));
        }
    }
    // Whole words first: a clear "Save" beats a crisp "Saved".
    found.sort_by(|(wa, a), (wb, b)| {
        wb.cmp(wa)
            .then(b.confidence.total_cmp(&a.confidence))
            .then((a.y, a.x).cmp(&(b.y, b.x)))
    });
    found.into_iter().map(|(_, m)| m).collect()
}

fn make_match(words: &[&Word], coverage: f64) -> TextMatch {
    let left = words.iter().map(|w| w.left).min().unwrap_or(0);
    let top = words.iter().map(|w| w.top).min().unwrap_or(0);
    let right = words.iter().map(|w| w.right()).max().unwrap_or(left);
    let bottom = words.iter().map(|w| w.bottom()).max().unwrap_or(top);
    let mean =
        words.iter().map(|w| f64::from(w.confidence)).sum::<f64>() / words.len().max(1) as f64;
    let confidence = (mean * coverage.min(1.0) * 10.0).round() / 10.0;
    TextMatch {
        text: words
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        x: left,
        y: top,
        width: right - left,
        height: bottom - top,
        center: Point {
            x: left + (right - left) / 2,
            y: top + (bottom - top) / 2,
        },
        confidence,
    }
}

/// Grey levels of a frame (ITU-R BT.601 weights).
pub fn to_gray(frame: &Frame) -> Vec<u8> {
    frame
        .bgrx
        .chunks_exact(4)
        .map(|p| ((u32::from(p[2]) * 77 + u32::from(p[1]) * 150 + u32::from(p[0]) * 29) >> 8) as u8)
        .collect()
}

/// Makes text dark on a white ground whatever its colours: each pixel
/// becomes 255 minus its distance from the local background, estimated by
/// a median over a wide window (separable, with running histograms:
/// about 10 ms for a full screen in a release build). Light
/// text on a dark panel and dark text on a light page come out alike, so
/// tesseract's single global threshold suits both.
pub fn flatten_background(gray: &[u8], width: usize, height: usize) -> Vec<u8> {
    if width == 0 || height == 0 || gray.len() < width * height {
        return gray.to_vec();
    }
    // A separable median (rows, then columns) approximates the square one.
    let mut rows = vec![0u8; width * height];
    for y in 0..height {
        sliding_median(
            &gray[y * width..(y + 1) * width],
            BG_RADIUS,
            &mut rows[y * width..(y + 1) * width],
        );
    }
    let mut column = vec![0u8; height];
    let mut med = vec![0u8; height];
    let mut out = vec![0u8; width * height];
    for x in 0..width {
        for (y, c) in column.iter_mut().enumerate() {
            *c = rows[y * width + x];
        }
        sliding_median(&column, BG_RADIUS, &mut med);
        for (y, m) in med.iter().enumerate() {
            let i = y * width + x;
            out[i] = 255 - gray[i].abs_diff(*m);
        }
    }
    out
}

/// Median of `src[i - r ..= i + r]` (clipped at the ends) for every `i`,
/// with a running histogram: constant work per sample.
fn sliding_median(src: &[u8], r: usize, out: &mut [u8]) {
    let n = src.len();
    if n == 0 {
        return;
    }
    let mut hist = [0u32; 256];
    let mut count = 0u32;
    let mut m = 0usize; // current median value
    let mut below = 0u32; // samples below m
    let add = |v: u8, hist: &mut [u32; 256], count: &mut u32, below: &mut u32, m: usize| {
        hist[usize::from(v)] += 1;
        *count += 1;
        if usize::from(v) < m {
            *below += 1;
        }
    };
    for &v in &src[..(r + 1).min(n)] {
        add(v, &mut hist, &mut count, &mut below, m);
    }
    for i in 0..n {
        if i > 0 {
            if i + r < n {
                add(src[i + r], &mut hist, &mut count, &mut below, m);
            }
            if i > r {
                let v = src[i - r - 1];
                hist[usize::from(v)] -= 1;
                count -= 1;
                if usize::from(v) < m {
                    below -= 1;
                }
            }
        }
        let target = count / 2;
        while below > target && m > 0 {
            m -= 1;
            below -= hist[m];
        }
        while m < 255 && below + hist[m] <= target {
            below += hist[m];
            m += 1;
        }
        out[i] = m as u8;
    }
}

/// A horizontal slice of the capture given to one tesseract, in rows of
/// the capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Band {
    /// First row sent to tesseract.
    pub top: u32,
    /// One past the last row sent.
    pub bottom: u32,
    /// Words whose middle lies in `own_top..own_bottom` are this band's;
    /// the rest of the band is overlap, read for context and left to the
    /// neighbour.
    pub own_top: u32,
    /// See `own_top`.
    pub own_bottom: u32,
}

/// Cuts a capture into one or two bands. The cut goes where half the
/// "ink" (sharp horizontal changes, i.e. text) lies above, so both
/// processes get about the same work; it is rounded to 32 rows so small
/// changes elsewhere keep the bands (and their cache entries) stable.
pub fn plan_bands(gray: &[u8], width: u32, height: u32) -> Vec<Band> {
    let whole = vec![Band {
        top: 0,
        bottom: height,
        own_top: 0,
        own_bottom: height,
    }];
    if height < MIN_SPLIT_HEIGHT || width.saturating_mul(height) < MIN_SPLIT_PIXELS {
        return whole;
    }
    let w = width as usize;
    let ink: Vec<u64> = (0..height as usize)
        .map(|y| {
            let row = &gray[y * w..(y + 1) * w];
            row.windows(2).filter(|p| p[0].abs_diff(p[1]) > 40).count() as u64
        })
        .collect();
    let total: u64 = ink.iter().sum();
    let mut cut = height / 2;
    if total > 0 {
        let mut acc = 0;
        for (y, v) in ink.iter().enumerate() {
            acc += v;
            if acc * 2 >= total {
                cut = y as u32;
                break;
            }
        }
    }
    let cut = (cut.clamp(height / 4, height * 3 / 4) + 16) / 32 * 32;
    let half = BAND_OVERLAP / 2;
    vec![
        Band {
            top: 0,
            bottom: (cut + half).min(height),
            own_top: 0,
            own_bottom: cut,
        },
        Band {
            top: cut.saturating_sub(half),
            bottom: height,
            own_top: cut,
            own_bottom: height,
        },
    ]
}

/// Encodes grey pixels as an 8-bit greyscale PNG.
pub fn encode_png(gray: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(gray.len() / 4);
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(gray).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Why reading the screen failed.
#[derive(Debug, thiserror::Error)]
pub enum OcrError {
    /// Capturing failed, or the region was bad.
    #[error(transparent)]
    Desktop(#[from] DesktopError),
    /// The tesseract program could not be started.
    #[error(
        "cannot run the OCR program \"{program}\" ({reason}); install it (apt-get install tesseract-ocr) or set desktop.tesseract to its path"
    )]
    Missing {
        /// The configured program.
        program: String,
        /// What the OS said.
        reason: String,
    },
    /// Tesseract has no data for the configured language.
    #[error(
        "tesseract cannot load the language \"{lang}\"; install its data (e.g. apt-get install tesseract-ocr-{lang}) or fix desktop.ocr_lang"
    )]
    Language {
        /// The configured language list.
        lang: String,
    },
    /// Tesseract ran but failed or took too long.
    #[error("OCR failed: {0}")]
    Failed(String),
}

impl From<OcrError> for ApiError {
    fn from(e: OcrError) -> Self {
        match e {
            OcrError::Desktop(d) => d.into(),
            e @ (OcrError::Missing { .. } | OcrError::Language { .. }) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ocr_unavailable",
                e.to_string(),
            ),
            e @ OcrError::Failed(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ocr_failed",
                e.to_string(),
            ),
        }
    }
}

/// What one read of the screen found.
#[derive(Debug, Clone)]
pub struct Reading {
    /// The words, grouped in lines, in screen coordinates.
    pub lines: Vec<Line>,
    /// The rectangle that was read.
    pub region: Region,
    /// True when every band came from the cache: tesseract did not run.
    pub cached: bool,
}

/// The OCR engine: a cache of recent results and a limit on how many
/// tesseract processes run at once (one per core).
pub struct Ocr {
    cache: Mutex<VecDeque<(u64, Arc<Vec<Word>>)>>,
    slots: Semaphore,
}

impl Default for Ocr {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            cache: Mutex::new(VecDeque::with_capacity(CACHE_BANDS)),
            slots: Semaphore::new(cores.max(1)),
        }
    }
}

/// The rows of `gray` (a capture `width` pixels wide) that `band` covers.
fn band_rows<'a>(gray: &'a [u8], width: u32, band: &Band) -> &'a [u8] {
    let w = width as usize;
    gray.get(band.top as usize * w..band.bottom as usize * w)
        .unwrap_or_default()
}

/// Runs CPU-bound work (capture, image processing) off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OcrError> + Send + 'static,
) -> Result<T, OcrError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| OcrError::Failed(format!("OCR worker failed: {e}")))?
}

impl Ocr {
    /// The process-wide engine: the cache is keyed by pixels, so it is
    /// right for any display, and the process limit is about this machine's
    /// cores.
    pub fn global() -> &'static Ocr {
        static OCR: OnceLock<Ocr> = OnceLock::new();
        OCR.get_or_init(Ocr::default)
    }

    fn lookup(&self, key: u64) -> Option<Arc<Vec<Word>>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let pos = cache.iter().position(|(k, _)| *k == key)?;
        // Move to the back: the front is evicted first.
        let entry = cache.remove(pos)?;
        let words = Arc::clone(&entry.1);
        cache.push_back(entry);
        Some(words)
    }

    fn store(&self, key: u64, words: Arc<Vec<Word>>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|(k, _)| *k != key);
        if cache.len() >= CACHE_BANDS {
            cache.pop_front();
        }
        cache.push_back((key, words));
    }

    /// Reads the text in `region` (the whole screen when `None`).
    pub async fn read(
        &'static self,
        desktop: &Arc<Desktop>,
        program: &str,
        lang: &str,
        region: Option<Region>,
    ) -> Result<Reading, OcrError> {
        let desktop = Arc::clone(desktop);
        let (region, gray, bands) = blocking(move || {
            let (frame, region) = desktop.capture(region)?;
            let gray = to_gray(&frame);
            let bands = plan_bands(&gray, frame.width, frame.height);
            Ok((region, Arc::new(gray), bands))
        })
        .await?;
        let width = region.width;
        let keys: Vec<u64> = bands
            .iter()
            .map(|band| {
                let meta = format!(
                    "{PIPELINE};{lang};{},{},{}x{};{},{}",
                    region.x,
                    region.y + band.top,
                    width,
                    band.bottom - band.top,
                    band.own_top,
                    band.own_bottom
                );
                xxhash_rust::xxh3::xxh3_64_with_seed(
                    band_rows(&gray, width, band),
                    xxhash_rust::xxh3::xxh3_64(meta.as_bytes()),
                )
            })
            .collect();
        let hits: Vec<Option<Arc<Vec<Word>>>> = keys.iter().map(|k| self.lookup(*k)).collect();
        let cached = hits.iter().all(Option::is_some);
        // Each band is prepared and read on its own, so the first tesseract
        // starts while the second band is still being prepared.
        let runs = bands
            .into_iter()
            .zip(keys)
            .zip(hits)
            .map(|((band, key), hit)| {
                let gray = Arc::clone(&gray);
                async move {
                    if let Some(words) = hit {
                        return Ok(words);
                    }
                    let png = blocking(move || {
                        let flat = flatten_background(
                            band_rows(&gray, width, &band),
                            width as usize,
                            (band.bottom - band.top) as usize,
                        );
                        encode_png(&flat, width, band.bottom - band.top).map_err(|e| {
                            OcrError::Failed(format!("cannot encode the capture: {e}"))
                        })
                    })
                    .await?;
                    let tsv = self.tesseract(program, lang, png).await?;
                    let words: Vec<Word> = parse_tsv(&tsv, region.x, region.y + band.top)
                        .into_iter()
                        .filter(|w| {
                            (band.own_top..band.own_bottom)
                                .contains(&(w.top + w.height / 2 - region.y))
                        })
                        .collect();
                    let words = Arc::new(words);
                    self.store(key, Arc::clone(&words));
                    Ok::<_, OcrError>(words)
                }
            });
        let mut words = Vec::new();
        for r in futures_util::future::join_all(runs).await {
            words.extend(r?.iter().cloned());
        }
        Ok(Reading {
            lines: group_lines(words),
            region,
            cached,
        })
    }

    /// Runs tesseract on one PNG; returns its TSV.
    async fn tesseract(&self, program: &str, lang: &str, png: Vec<u8>) -> Result<String, OcrError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| OcrError::Failed(e.to_string()))?;
        let mut child = tokio::process::Command::new(program)
            .args([
                "stdin",
                "stdout",
                "-l",
                lang,
                "--psm",
                PSM,
                "--dpi",
                "96",
                "-c",
                "tessedit_create_tsv=1",
                // Text is already dark on light (see flatten_background), so
                // tesseract's retry of doubtful lines inverted only costs
                // time (about a tenth of a full screen).
                "-c",
                "tessedit_do_invert=0",
            ])
            // One thread per process: we run one process per core instead,
            // and OpenMP's spinning threads would only fight over the cores.
            .env("OMP_THREAD_LIMIT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| OcrError::Missing {
                program: program.to_string(),
                reason: e.to_string(),
            })?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| OcrError::Failed("tesseract has no stdin".into()))?;
        let feed = tokio::spawn(async move {
            // A tesseract that dies early closes the pipe; its exit status says why.
            let _ = stdin.write_all(&png).await;
        });
        let output = tokio::time::timeout(TESSERACT_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                OcrError::Failed(format!(
                    "tesseract took longer than {}s",
                    TESSERACT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| OcrError::Failed(format!("waiting for tesseract: {e}")))?;
        let _ = feed.await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            if stderr.contains("Failed loading language")
                || stderr.contains("couldn't load any languages")
            {
                return Err(OcrError::Language {
                    lang: lang.to_string(),
                });
            }
            let lines: Vec<&str> = stderr.lines().collect();
            let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
            return Err(OcrError::Failed(format!(
                "tesseract exited with {}: {tail}",
                output.status
            )));
        }
        String::from_utf8(output.stdout)
            .map_err(|e| OcrError::Failed(format!("tesseract wrote invalid UTF-8: {e}")))
    }
}

/// Routes `/v1/find-text` and `/v1/click-text`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/find-text", post(find_text))
        .route("/v1/click-text", post(click_text))
}

const FIND_FIELDS: &[&str] = &["text", "region", "case_sensitive", "exact"];
const CLICK_FIELDS: &[&str] = &[
    "text",
    "region",
    "case_sensitive",
    "exact",
    "button",
    "index",
    "clickCount",
];

/// A parsed query common to both routes.
struct Query {
    text: String,
    region: Option<Region>,
    opts: MatchOptions,
}

/// Parses a JSON object, refusing fields not in `allowed`.
fn parse_object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_field(
            "body",
            format!("invalid JSON ({e}); send an object like {{\"text\": \"Save\"}}"),
        )
    })?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_field(
            "body",
            "expected a JSON object like {\"text\": \"Save\"}",
        ));
    };
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_field(
            unknown,
            format!(
                "unknown field \"{unknown}\"; allowed: {}",
                allowed.join(", ")
            ),
        ));
    }
    Ok(map)
}

/// One optional field; `null` counts as absent.
fn field<T: DeserializeOwned>(
    map: &Map<String, Value>,
    key: &str,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|_| {
            ApiError::bad_field(key, format!("{v} is not valid here; expected {expected}"))
        }),
    }
}

fn parse_query(map: &Map<String, Value>) -> Result<Query, ApiError> {
    let text: String = field(map, "text", "a string, the text to look for")?.ok_or_else(|| {
        ApiError::bad_field(
            "text",
            "is required: the text to look for, e.g. {\"text\": \"Save\"}",
        )
    })?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_field(
            "text",
            "is empty; give the text to look for",
        ));
    }
    let chars = text.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(ApiError::bad_field(
            "text",
            format!("has {chars} characters; the most is {MAX_QUERY_CHARS}"),
        ));
    }
    let region = match map.get("region") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_region(v)?),
    };
    let opts = MatchOptions {
        case_sensitive: field(map, "case_sensitive", "true or false")?.unwrap_or(false),
        exact: field(map, "exact", "true or false")?.unwrap_or(false),
    };
    Ok(Query { text, region, opts })
}

fn parse_region(v: &Value) -> Result<Region, ApiError> {
    const SHAPE: &str =
        "expected {\"x\": 0, \"y\": 0, \"width\": 400, \"height\": 300} in screen pixels";
    let Value::Object(m) = v else {
        return Err(ApiError::bad_field(
            "region",
            format!("{v} is not an object; {SHAPE}"),
        ));
    };
    if let Some(unknown) = m
        .keys()
        .find(|k| !["x", "y", "width", "height"].contains(&k.as_str()))
    {
        return Err(ApiError::bad_field(
            "region",
            format!("unknown field \"{unknown}\"; {SHAPE}"),
        ));
    }
    let get = |k: &str, required: bool| -> Result<u32, ApiError> {
        match m.get(k) {
            None | Some(Value::Null) if !required => Ok(0),
            None | Some(Value::Null) => Err(ApiError::bad_field(
                "region",
                format!("{k} is required; {SHAPE}"),
            )),
            Some(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::bad_field(
                        "region",
                        format!("{k} = {n} is not a whole number of pixels ≥ 0; {SHAPE}"),
                    )
                }),
        }
    };
    let region = Region {
        x: get("x", false)?,
        y: get("y", false)?,
        width: get("width", true)?,
        height: get("height", true)?,
    };
    if region.width == 0 || region.height == 0 {
        return Err(ApiError::bad_field(
            "region",
            format!(
                "is {}x{}: width and height must be at least 1",
                region.width, region.height
            ),
        ));
    }
    Ok(region)
}

/// Reads the screen for a query; returns the matches, whether the cache
/// answered, and the rectangle read.
async fn search(state: &AppState, q: &Query) -> Result<(Vec<TextMatch>, bool, Region), ApiError> {
    let reading = Ocr::global()
        .read(
            &state.desktop,
            &state.config.tesseract,
            &state.config.ocr_lang,
            q.region,
        )
        .await?;
    let matches = find_matches(&reading.lines, &q.text, q.opts);
    Ok((matches, reading.cached, reading.region))
}

async fn find_text(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let start = Instant::now();
    let q = parse_query(&parse_object(&body, FIND_FIELDS)?)?;
    let (matches, cached, region) = search(&state, &q).await?;
    let elapsed_ms = start.elapsed().as_millis() as u64;
    tracing::debug!(matches = matches.len(), cached, elapsed_ms, "find-text");
    Ok(Json(
        json!({ "matches": matches, "cached": cached, "elapsed_ms": elapsed_ms, "region": region }),
    ))
}

async fn click_text(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let start = Instant::now();
    let map = parse_object(&body, CLICK_FIELDS)?;
    let q = parse_query(&map)?;
    let button: Button =
        field(&map, "button", "\"left\", \"right\" or \"middle\"")?.unwrap_or(Button::Left);
    let index: usize =
        field(&map, "index", "a whole number ≥ 0 (0 is the best match)")?.unwrap_or(0);
    let click_count: u32 = field(
        &map,
        "clickCount",
        "a whole number ≥ 1 (2 for a double click)",
    )?
    .unwrap_or(1);
    let most = state.desktop.limits.max_click_count;
    if !(1..=most).contains(&click_count) {
        return Err(ApiError::bad_field(
            "clickCount",
            format!("{click_count} is out of range; expected 1 to {most}"),
        ));
    }
    let (matches, cached, region) = search(&state, &q).await?;
    let Some(chosen) = matches.get(index).cloned() else {
        let message = if matches.is_empty() {
            format!(
                "the text is not on the screen (read {}x{}+{}+{}); check the spelling, wait for the window to appear, or widen region",
                region.width, region.height, region.x, region.y
            )
        } else {
            format!(
                "index {index} asked for, but the text was found only {} time(s); use 0 to {}",
                matches.len(),
                matches.len() - 1
            )
        };
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "text_not_found",
            message,
        ));
    };
    let click = ClickMouse {
        coordinates: Some(Coordinates {
            x: f64::from(chosen.center.x),
            y: f64::from(chosen.center.y),
        }),
        button,
        hold_keys: Vec::new(),
        click_count,
    };
    state.run_action(Action::ClickMouse(click)).await?;
    let elapsed_ms = start.elapsed().as_millis() as u64;
    Ok(Json(
        json!({ "clicked": chosen, "matches": matches.len(), "cached": cached, "elapsed_ms": elapsed_ms }),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Recorded from `tesseract shot.png stdout --psm 11 tsv` on an Xvfb
    /// showing an xmessage "Hello Bytebot World" and a small "Save As" dialog.
    const SAMPLE: &str = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext
1\t1\t0\t0\t0\t0\t0\t0\t1280\t960\t-1\t
2\t1\t1\t0\t0\t0\t106\t204\t12\t12\t-1\t
3\t1\t1\t1\t0\t0\t106\t204\t12\t12\t-1\t
4\t1\t1\t1\t1\t0\t106\t204\t12\t12\t-1\t
5\t1\t1\t1\t1\t1\t106\t204\t12\t12\t45.553284\toa
2\t1\t2\t0\t0\t0\t106\t225\t344\t46\t-1\t
4\t1\t2\t1\t1\t0\t106\t225\t344\t46\t-1\t
5\t1\t2\t1\t1\t1\t106\t225\t100\t46\t67.404877\tHello
5\t1\t2\t1\t1\t2\t221\t235\t123\t33\t92.867592\tBytebot
5\t1\t2\t1\t1\t3\t356\t235\t94\t25\t96.922775\tWorld
5\t1\t3\t1\t1\t1\t101\t282\t92\t50\t73.443420\t(okay)
5\t1\t4\t1\t1\t1\t706\t625\t58\t18\t50.361519\t[Save
5\t1\t4\t1\t1\t2\t765\t629\t22\t14\t82.018967\tAs...
5\t1\t4\t1\t1\t3\t1100\t629\t40\t14\t90.0\tHelp
5\t1\t5\t1\t1\t1\t10\t10\t5\t5\t95.0\t 
5\t1\t5\t1\t1\t2\t10\t10\t5\t5\t-1\tghost
5\t1\t6\t1\t1\t1\t900\t900\t60\t14\t91.0\tSaved
";

    fn lines() -> Vec<Line> {
        group_lines(parse_tsv(SAMPLE, 0, 0))
    }

    #[test]
    fn parses_words_and_offsets_them() {
        let words = parse_tsv(SAMPLE, 10, 20);
        assert_eq!(
            words.len(),
            9,
            "blank text and confidence -1 rows are skipped"
        );
        let hello = &words[1];
        assert_eq!(
            (
                hello.text.as_str(),
                hello.left,
                hello.top,
                hello.width,
                hello.height
            ),
            ("Hello", 116, 245, 100, 46)
        );
        assert!((hello.confidence - 67.4).abs() < 0.1);
    }

    #[test]
    fn ignores_garbage_rows() {
        assert!(parse_tsv("", 0, 0).is_empty());
        assert!(parse_tsv("5\t1\t1\n5\tx\ty\tz\t1\t1\ta\tb\tc\td\te\tword\n", 0, 0).is_empty());
        let negative = parse_tsv("5\t1\t1\t1\t1\t1\t-3\t-4\t10\t10\t80\tedge\n", 5, 5);
        assert_eq!((negative[0].left, negative[0].top), (5, 5));
    }

    #[test]
    fn groups_lines_and_splits_wide_gaps() {
        let lines = lines();
        let texts: Vec<Vec<&str>> = lines
            .iter()
            .map(|l| l.words.iter().map(|w| w.text.as_str()).collect())
            .collect();
        assert_eq!(
            texts,
            vec![
                vec!["oa"],
                vec!["Hello", "Bytebot", "World"],
                vec!["(okay)"],
                vec!["[Save", "As..."],
                vec!["Help"],
                vec!["Saved"]
            ]
        );
    }

    #[test]
    fn multi_word_query_gives_one_box() {
        let m = find_matches(&lines(), "hello bytebot world", MatchOptions::default());
        assert_eq!(m.len(), 1);
        let m = &m[0];
        assert_eq!((m.x, m.y, m.width, m.height), (106, 225, 344, 46));
        assert_eq!(m.center, Point { x: 278, y: 248 });
        assert_eq!(m.text, "Hello Bytebot World");
        assert!((m.confidence - 85.7).abs() < 0.1, "{}", m.confidence);
        let m = find_matches(&lines(), "Bytebot   World", MatchOptions::default());
        assert_eq!((m[0].x, m[0].width), (221, 229));
    }

    #[test]
    fn punctuation_and_case_are_ignored_unless_asked() {
        let l = lines();
        assert_eq!(
            find_matches(&l, "okay", MatchOptions::default())[0].text,
            "(okay)"
        );
        assert_eq!(
            find_matches(&l, "Save As", MatchOptions::default())[0].text,
            "[Save As..."
        );
        assert_eq!(
            find_matches(
                &l,
                "save as…",
                MatchOptions {
                    exact: true,
                    ..MatchOptions::default()
                }
            )
            .len(),
            1
        );
        assert!(
            find_matches(
                &l,
                "HELLO",
                MatchOptions {
                    case_sensitive: true,
                    ..MatchOptions::default()
                }
            )
            .is_empty()
        );
        assert_eq!(
            find_matches(
                &l,
                "Hello",
                MatchOptions {
                    case_sensitive: true,
                    ..MatchOptions::default()
                }
            )
            .len(),
            1
        );
    }

    #[test]
    fn partial_words_rank_below_whole_ones_and_exact_excludes_them() {
        let l = lines();
        let m = find_matches(&l, "save", MatchOptions::default());
        let texts: Vec<&str> = m.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["[Save", "Saved"]);
        assert!(
            (m[1].confidence - 72.8).abs() < 0.1,
            "a partial word's confidence is scaled: {}",
            m[1].confidence
        );
        let exact = find_matches(
            &l,
            "save",
            MatchOptions {
                exact: true,
                ..MatchOptions::default()
            },
        );
        assert_eq!(exact.len(), 1);
        assert_eq!(exact[0].text, "[Save");
        assert!(find_matches(&l, "nowhere", MatchOptions::default()).is_empty());
        assert!(
            find_matches(&l, "World Help", MatchOptions::default()).is_empty(),
            "no match across lines"
        );
        assert!(
            find_matches(&l, "As Help", MatchOptions::default()).is_empty(),
            "no match across a wide gap"
        );
    }

    #[test]
    fn words_split_or_glued_by_ocr_still_match() {
        // Recorded: the text field's border glued to the "H" and cut "Hello".
        let tsv = "5\t1\t3\t1\t1\t1\t101\t220\t32\t48\t32.1\tIH\n\
                   5\t1\t3\t1\t1\t2\t134\t235\t70\t25\t93.0\tello\n\
                   5\t1\t3\t1\t1\t3\t206\t235\t123\t33\t91.0\tBytebot\n\
                   5\t1\t3\t1\t1\t4\t341\t216\t110\t50\t93.0\tWorld|\n";
        let l = group_lines(parse_tsv(tsv, 0, 0));
        let m = find_matches(&l, "Hello Bytebot World", MatchOptions::default());
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].x, m[0].width, m[0].text.as_str()),
            (101, 350, "IH ello Bytebot World|")
        );
        assert!(
            find_matches(
                &l,
                "Hello Bytebot World",
                MatchOptions {
                    exact: true,
                    ..MatchOptions::default()
                }
            )
            .is_empty()
        );
        assert_eq!(
            find_matches(
                &l,
                "World",
                MatchOptions {
                    exact: true,
                    ..MatchOptions::default()
                }
            )
            .len(),
            1
        );
        assert_eq!(
            find_matches(&l, "+", MatchOptions::default()),
            vec![],
            "punctuation-only queries compare as typed"
        );
    }

    #[test]
    fn median_and_flattening() {
        let mut out = [0u8; 7];
        sliding_median(&[9, 1, 9, 9, 1, 1, 1], 1, &mut out);
        assert_eq!(out, [9, 9, 9, 9, 1, 1, 1]);
        // Light text on a dark panel beside dark text on white: both end dark on white.
        let (w, h) = (120usize, 40usize);
        let mut gray = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                let dark_side = x < 60;
                let stroke = (18..22).contains(&y) && x % 10 < 2;
                gray[y * w + x] = match (dark_side, stroke) {
                    (true, false) => 20,
                    (true, true) => 230,
                    (false, false) => 250,
                    (false, true) => 10,
                };
            }
        }
        let flat = flatten_background(&gray, w, h);
        assert!(
            flat[5 * w + 30] > 240 && flat[5 * w + 90] > 240,
            "backgrounds turn white"
        );
        assert!(
            flat[20 * w + 30] < 60 && flat[20 * w + 90] < 60,
            "strokes turn dark"
        );
    }

    #[test]
    fn bands_split_tall_captures_by_ink() {
        assert_eq!(plan_bands(&vec![0; 400 * 200], 400, 200).len(), 1);
        let (w, h) = (1280u32, 960u32);
        let mut gray = vec![255u8; (w * h) as usize];
        // All the "text" in the top third.
        for y in 0..300 {
            for x in (0..w).step_by(3) {
                gray[(y * w + x) as usize] = 0;
            }
        }
        let bands = plan_bands(&gray, w, h);
        assert_eq!(bands.len(), 2);
        assert_eq!(bands[0].own_bottom, bands[1].own_top);
        assert_eq!(bands[0].own_bottom % 32, 0);
        assert!(
            bands[0].own_bottom <= 300,
            "the cut follows the ink: {bands:?}"
        );
        assert_eq!(bands[0].bottom - bands[1].top, BAND_OVERLAP);
        assert_eq!((bands[0].top, bands[1].bottom), (0, h));
    }

    #[test]
    fn png_round_trips() {
        let png = encode_png(&[0, 128, 255, 7], 2, 2).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        assert_eq!(buf, [0, 128, 255, 7]);
    }
}
