//! Input tracking through XRecord, and the `/v1/events` stream.
//!
//! While tracking is on, an XRecord context observes the device events
//! (KeyPress to MotionNotify) the X server sees from every client and
//! publishes them as [`DesktopEvent::Input`]: what a person did during a
//! take-over, so it can join the task's history. Our own API's XTEST input is
//! left out: [`Injection`] marks when an action runs, and events observed then
//! (or just after) are dropped.
//!
//! Two threads do the work, with two X connections, as the RECORD spec
//! advises: the reader blocks on the data connection's endless
//! `EnableContext` replies; the processor coalesces pointer motion, names
//! keys with the server's keymap (read on the control connection, which also
//! disables the context to stop) and publishes.

use crate::desktop::Desktop;
use crate::error::DesktopError;
use crate::events::EventHub;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::x11::keymap::Keymap;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use bytebot_protocol::{Button, Coordinates, DesktopEvent, InputEvent, ScrollDirection};
use serde_json::json;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::{Stream, StreamExt as _};
use x11rb::connection::{Connection, RequestConnection as _};
use x11rb::protocol::Event as XEvent;
use x11rb::protocol::record::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{self, ConnectionExt as _, Mapping};
use x11rb::rust_connection::RustConnection;

/// Pointer motion is reported at most this often (plus the last position
/// before a button event), so a moving mouse doesn't flood the stream.
pub const MOVE_INTERVAL: Duration = Duration::from_millis(50);

/// Input observed this long after our own action ended still counts as ours:
/// the recorded copy of XTEST input reaches the reader thread a little after
/// the action's final sync.
pub const INJECTION_WINDOW: Duration = Duration::from_millis(50);

/// How long `start` waits for the server to begin recording.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `stop` waits for the recording threads to finish.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// RECORD reply categories (the XML has no enum for them).
const FROM_SERVER: u8 = 0;
const START_OF_DATA: u8 = 4;

/// Size of one core protocol event.
const EVENT_SIZE: usize = 32;

// ---------------------------------------------------------------------------
// Telling our own input from a person's

/// Marks when our API injects input through XTEST, so input tracking can
/// leave that input out (it is not a person's).
#[derive(Default)]
pub struct Injection {
    active: AtomicUsize,
    /// Microseconds since [`epoch`] when the last injection ended, plus one
    /// (0: never).
    last_end_us: AtomicU64,
}

/// Held while an action injects input; records the end time on drop.
pub struct InjectionGuard<'a>(&'a Injection);

impl Injection {
    /// Marks an injection under way until the guard drops.
    pub fn guard(&self) -> InjectionGuard<'_> {
        self.active.fetch_add(1, Ordering::SeqCst);
        InjectionGuard(self)
    }

    /// Whether input is being injected now or was within `window`.
    pub fn injected_recently(&self, window: Duration) -> bool {
        if self.active.load(Ordering::SeqCst) > 0 {
            return true;
        }
        match self.last_end_us.load(Ordering::SeqCst) {
            0 => false,
            end => since_epoch_us().saturating_sub(end - 1) <= window.as_micros() as u64,
        }
    }
}

impl Drop for InjectionGuard<'_> {
    fn drop(&mut self) {
        // Store the end before lowering the count, so no reader sees neither.
        self.0
            .last_end_us
            .store(since_epoch_us() + 1, Ordering::SeqCst);
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn since_epoch_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ---------------------------------------------------------------------------
// Raw core events

/// Which device event a raw core event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawKind {
    /// KeyPress (2).
    KeyPress,
    /// KeyRelease (3).
    KeyRelease,
    /// ButtonPress (4).
    ButtonPress,
    /// ButtonRelease (5).
    ButtonRelease,
    /// MotionNotify (6).
    Motion,
}

/// The parts of a recorded 32-byte core device event we report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEvent {
    /// The event type.
    pub kind: RawKind,
    /// Keycode or button number (0 for motion).
    pub detail: u8,
    /// Pointer position on the root window.
    pub root_x: i16,
    /// Pointer position on the root window.
    pub root_y: i16,
    /// Modifier and button state before the event.
    pub state: u16,
}

/// Parses one core device event (32 bytes, little-endian as the server sends
/// device events to us); `None` for any other event or a short buffer.
pub fn parse_raw(event: &[u8]) -> Option<RawEvent> {
    let bytes = event.get(..EVENT_SIZE)?;
    // The top bit flags events sent with SendEvent; the type is the rest.
    let kind = match bytes[0] & 0x7f {
        xproto::KEY_PRESS_EVENT => RawKind::KeyPress,
        xproto::KEY_RELEASE_EVENT => RawKind::KeyRelease,
        xproto::BUTTON_PRESS_EVENT => RawKind::ButtonPress,
        xproto::BUTTON_RELEASE_EVENT => RawKind::ButtonRelease,
        xproto::MOTION_NOTIFY_EVENT => RawKind::Motion,
        _ => return None,
    };
    let i16_at = |o: usize| i16::from_le_bytes([bytes[o], bytes[o + 1]]);
    Some(RawEvent {
        kind,
        detail: bytes[1],
        root_x: i16_at(20),
        root_y: i16_at(22),
        state: u16::from_le_bytes([bytes[28], bytes[29]]),
    })
}

/// Parses the device events in one RECORD reply's data (whole 32-byte
/// events, one after another); skips anything else.
pub fn parse_batch(data: &[u8]) -> impl Iterator<Item = RawEvent> + '_ {
    data.chunks_exact(EVENT_SIZE).filter_map(parse_raw)
}

/// What a button number means: a mouse button, a wheel notch, or nothing we report.
fn button_meaning(detail: u8) -> Option<Result<Button, ScrollDirection>> {
    Some(match detail {
        1 => Ok(Button::Left),
        2 => Ok(Button::Middle),
        3 => Ok(Button::Right),
        4 => Err(ScrollDirection::Up),
        5 => Err(ScrollDirection::Down),
        6 => Err(ScrollDirection::Left),
        7 => Err(ScrollDirection::Right),
        _ => return None,
    })
}

/// The name we report for a keysym: the X name without `XK_`, else `0x…`.
pub fn keysym_name(sym: u32) -> String {
    match xkeysym::Keysym::new(sym).name() {
        // "XK_Return" -> "Return"; "XF86XK_AudioMute" -> "XF86AudioMute", as Xlib names them.
        Some(name) => name.replacen("XK_", "", 1),
        None => format!("{sym:#x}"),
    }
}

fn coords(x: i16, y: i16) -> Coordinates {
    Coordinates {
        x: f64::from(x),
        y: f64::from(y),
    }
}

// ---------------------------------------------------------------------------
// Coalescing pointer motion

/// A pointer position observed at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Move {
    x: i16,
    y: i16,
    at_ms: u64,
}

/// Lets through at most one motion per interval and keeps the latest one
/// held back, to be sent when the interval is up or a button event comes.
struct Coalescer {
    interval: Duration,
    last_sent: Option<Instant>,
    pending: Option<Move>,
}

impl Coalescer {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_sent: None,
            pending: None,
        }
    }

    /// A motion at `now`: returns it when it may be sent now.
    fn motion(&mut self, m: Move, now: Instant) -> Option<Move> {
        match self.last_sent {
            Some(t) if now.saturating_duration_since(t) < self.interval => {
                self.pending = Some(m);
                None
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = None;
                Some(m)
            }
        }
    }

    /// When the held-back motion is due, if there is one.
    fn deadline(&self) -> Option<Instant> {
        self.pending.and(self.last_sent).map(|t| t + self.interval)
    }

    /// The held-back motion, if its time has come.
    fn due(&mut self, now: Instant) -> Option<Move> {
        if self.deadline().is_some_and(|d| d <= now) {
            self.flush(now)
        } else {
            None
        }
    }

    /// The held-back motion regardless of time (before a button event, at the end).
    fn flush(&mut self, now: Instant) -> Option<Move> {
        let m = self.pending.take()?;
        self.last_sent = Some(now);
        Some(m)
    }
}

// ---------------------------------------------------------------------------
// The recorder

/// A device event as the reader saw it.
struct Observed {
    raw: RawEvent,
    at: Instant,
    at_ms: u64,
}

/// Whether input tracking runs, and the handles to stop it.
#[derive(Default)]
pub struct Tracker {
    running: Mutex<Option<Running>>,
}

struct Running {
    ctrl: Arc<RustConnection>,
    context: record::Context,
    reader: JoinHandle<()>,
    processor: Option<JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
}

impl Tracker {
    /// Whether input is being tracked right now.
    pub fn is_enabled(&self) -> bool {
        lock(&self.running)
            .as_ref()
            .is_some_and(|r| !r.reader.is_finished())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts tracking; `Ok(false)` when it was on already.
pub async fn start(state: &AppState) -> Result<bool, DesktopError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || start_blocking(&state))
        .await
        .map_err(|e| DesktopError::Failed(format!("input tracking worker failed: {e}")))?
}

/// Stops tracking; `Ok(false)` when it was off already.
pub async fn stop(state: &AppState) -> Result<bool, DesktopError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || stop_blocking(&state))
        .await
        .map_err(|e| DesktopError::Failed(format!("input tracking worker failed: {e}")))?
}

fn start_blocking(state: &AppState) -> Result<bool, DesktopError> {
    let mut guard = lock(&state.tracker.running);
    if guard.as_ref().is_some_and(|r| !r.reader.is_finished()) {
        return Ok(false);
    }
    // A recorder whose connection died: clear it away before starting anew.
    if let Some(old) = guard.take() {
        old.finish();
    }
    let display = state.desktop.display().to_string();
    let connect = || {
        RustConnection::connect(Some(&display))
            .map(|(c, _)| c)
            .map_err(|e| {
                DesktopError::Unavailable(format!(
                    "cannot connect to X display {display} for input tracking: {e}"
                ))
            })
    };
    let ctrl = Arc::new(connect()?);
    let data = connect()?;
    if ctrl
        .extension_information(record::X11_EXTENSION_NAME)?
        .is_none()
    {
        return Err(DesktopError::Unavailable(format!(
            "display {display} lacks the RECORD extension, which input tracking needs; start the X server with +extension RECORD"
        )));
    }
    let (major, minor) = record::X11_XML_VERSION;
    ctrl.record_query_version(major as u16, minor as u16)?
        .reply()?;
    let context = ctrl.generate_id()?;
    let empty = record::Range8 { first: 0, last: 0 };
    let empty_ext = record::ExtRange {
        major: empty,
        minor: record::Range16 { first: 0, last: 0 },
    };
    let range = record::Range {
        core_requests: empty,
        core_replies: empty,
        ext_requests: empty_ext,
        ext_replies: empty_ext,
        delivered_events: empty,
        device_events: record::Range8 {
            first: xproto::KEY_PRESS_EVENT,
            last: xproto::MOTION_NOTIFY_EVENT,
        },
        errors: empty,
        client_started: false,
        client_died: false,
    };
    ctrl.record_create_context(context, 0, &[record::CS::ALL_CLIENTS.into()], &[range])?
        .check()?;
    match launch(state, &ctrl, context, data) {
        Ok((reader, rx, stopping)) => {
            // Published before the processor exists, so it precedes every input event.
            state
                .events
                .publish(DesktopEvent::Tracking { enabled: true });
            let processor = spawn_processor(state, &ctrl, rx, &stopping);
            if processor.is_none() {
                tracing::warn!("cannot start the input tracking processor; stopping");
            }
            let running = Running {
                ctrl,
                context,
                reader,
                processor,
                stopping,
            };
            if running.processor.is_none() {
                running.finish();
                state
                    .events
                    .publish(DesktopEvent::Tracking { enabled: false });
                return Err(DesktopError::Failed(
                    "cannot start the input tracking thread".into(),
                ));
            }
            tracing::info!("input tracking started");
            *guard = Some(running);
            Ok(true)
        }
        Err(e) => {
            let _ = ctrl.record_free_context(context);
            let _ = ctrl.flush();
            Err(e)
        }
    }
}

type Launched = (JoinHandle<()>, Receiver<Observed>, Arc<AtomicBool>);

/// Starts the reader and waits until the server records.
fn launch(
    state: &AppState,
    ctrl: &RustConnection,
    context: record::Context,
    data: RustConnection,
) -> Result<Launched, DesktopError> {
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let (tx, rx) = mpsc::channel();
    let desktop = Arc::clone(&state.desktop);
    let reader = std::thread::Builder::new()
        .name("xrecord-reader".into())
        .spawn(move || read_loop(&data, context, &desktop, &ready_tx, &tx))
        .map_err(|e| {
            DesktopError::Failed(format!("cannot start the input tracking thread: {e}"))
        })?;
    match ready_rx.recv_timeout(START_TIMEOUT) {
        Ok(()) => Ok((reader, rx, Arc::new(AtomicBool::new(false)))),
        Err(_) => {
            // Ends the reader if it is still waiting for its first reply.
            let _ = ctrl.record_disable_context(context);
            let _ = ctrl.flush();
            Err(DesktopError::Unavailable(
                "the X server did not start recording input; check that its RECORD extension works"
                    .into(),
            ))
        }
    }
}

fn spawn_processor(
    state: &AppState,
    ctrl: &Arc<RustConnection>,
    rx: Receiver<Observed>,
    stopping: &Arc<AtomicBool>,
) -> Option<JoinHandle<()>> {
    let keymap = match Keymap::load(&**ctrl) {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the keymap; keys will be reported as keysym numbers");
            None
        }
    };
    let processor = Processor {
        ctrl: Arc::clone(ctrl),
        keymap,
        state: state.clone(),
        moves: Coalescer::new(MOVE_INTERVAL),
    };
    let stopping = Arc::clone(stopping);
    std::thread::Builder::new()
        .name("xrecord-events".into())
        .spawn(move || processor.run(&rx, &stopping))
        .ok()
}

fn stop_blocking(state: &AppState) -> Result<bool, DesktopError> {
    let Some(running) = lock(&state.tracker.running).take() else {
        return Ok(false);
    };
    let was_on = !running.reader.is_finished();
    running.finish();
    if was_on {
        // After the threads end, so no input event follows it.
        state
            .events
            .publish(DesktopEvent::Tracking { enabled: false });
        tracing::info!("input tracking stopped");
    }
    Ok(was_on)
}

impl Running {
    /// Disables and frees the context and waits (boundedly) for the threads.
    fn finish(self) {
        self.stopping.store(true, Ordering::SeqCst);
        let disabled = self
            .ctrl
            .record_disable_context(self.context)
            .map_err(DesktopError::from)
            .and_then(|_| Ok(self.ctrl.get_input_focus()?.reply()?));
        if let Err(e) = disabled {
            tracing::warn!(error = %e, "cannot disable the XRecord context");
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let threads = [Some(self.reader), self.processor];
        for handle in threads.into_iter().flatten() {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                tracing::warn!("an input tracking thread did not stop in time; leaving it");
            }
        }
        let _ = self.ctrl.record_free_context(self.context);
        let _ = self.ctrl.flush();
    }
}

/// Reads RECORD replies until the context is disabled or the connection dies.
fn read_loop(
    data: &RustConnection,
    context: record::Context,
    desktop: &Desktop,
    ready: &SyncSender<()>,
    out: &Sender<Observed>,
) {
    let replies = match data.record_enable_context(context) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot enable the XRecord context");
            return;
        }
    };
    for reply in replies {
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "input tracking lost its X connection");
                return;
            }
        };
        match reply.category {
            START_OF_DATA => {
                let _ = ready.try_send(());
            }
            // Device events belong to no client, so they are never swapped.
            FROM_SERVER if !reply.client_swapped => {
                if desktop.injection.injected_recently(INJECTION_WINDOW) {
                    continue;
                }
                let (at, at_ms) = (Instant::now(), unix_ms());
                for raw in parse_batch(&reply.data) {
                    if out.send(Observed { raw, at, at_ms }).is_err() {
                        return;
                    }
                }
            }
            _ => {}
        }
    }
}

struct Processor {
    ctrl: Arc<RustConnection>,
    keymap: Option<Keymap>,
    state: AppState,
    moves: Coalescer,
}

impl Processor {
    fn run(mut self, rx: &Receiver<Observed>, stopping: &AtomicBool) {
        loop {
            let next = match self.moves.deadline() {
                Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match next {
                Ok(observed) => self.handle(&observed),
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(m) = self.moves.due(Instant::now()) {
                        self.publish_move(m);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    if let Some(m) = self.moves.flush(Instant::now()) {
                        self.publish_move(m);
                    }
                    break;
                }
            }
        }
        if !stopping.load(Ordering::SeqCst) {
            tracing::warn!("input tracking ended: the X connection was lost");
            self.state
                .events
                .publish(DesktopEvent::Tracking { enabled: false });
        }
    }

    fn handle(&mut self, o: &Observed) {
        let r = o.raw;
        let at_ms = o.at_ms;
        let event = match r.kind {
            RawKind::Motion => {
                if let Some(m) = self.moves.motion(
                    Move {
                        x: r.root_x,
                        y: r.root_y,
                        at_ms,
                    },
                    o.at,
                ) {
                    self.publish_move(m);
                }
                return;
            }
            RawKind::ButtonPress | RawKind::ButtonRelease => {
                let down = r.kind == RawKind::ButtonPress;
                let coordinates = coords(r.root_x, r.root_y);
                let event = match button_meaning(r.detail) {
                    Some(Ok(button)) => InputEvent::Button {
                        button,
                        down,
                        coordinates,
                    },
                    // A wheel notch is one press; its release says nothing new.
                    Some(Err(direction)) if down => InputEvent::Scroll {
                        direction,
                        coordinates,
                    },
                    _ => return,
                };
                if let Some(m) = self.moves.flush(o.at) {
                    self.publish_move(m);
                }
                event
            }
            RawKind::KeyPress | RawKind::KeyRelease => InputEvent::Key {
                key: self.key_name(r.detail, r.state),
                down: r.kind == RawKind::KeyPress,
            },
        };
        self.state
            .events
            .publish(DesktopEvent::Input { event, at_ms });
    }

    fn publish_move(&self, m: Move) {
        let event = InputEvent::MouseMove {
            coordinates: coords(m.x, m.y),
        };
        self.state.events.publish(DesktopEvent::Input {
            event,
            at_ms: m.at_ms,
        });
    }

    /// Names a keycode with the current keymap, re-reading it when the server
    /// announced a keyboard mapping change.
    fn key_name(&mut self, keycode: u8, state: u16) -> String {
        let mut changed = false;
        while let Ok(Some(event)) = self.ctrl.poll_for_event() {
            if let XEvent::MappingNotify(m) = event {
                changed |= m.request == Mapping::KEYBOARD;
            }
        }
        if changed || self.keymap.is_none() {
            self.keymap = Keymap::load(&*self.ctrl).ok().or(self.keymap.take());
        }
        let Some(keymap) = &self.keymap else {
            return format!("keycode {keycode}");
        };
        let shift = state & u16::from(xproto::KeyButMask::SHIFT) != 0;
        let sym = match keymap.keysym_of(keycode, shift) {
            0 if shift => keymap.keysym_of(keycode, false),
            sym => sym,
        };
        keysym_name(sym)
    }
}

// ---------------------------------------------------------------------------
// The event stream

/// One item of the `/v1/events` stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// A published event with its sequence number.
    Event(u64, DesktopEvent),
    /// This many events were lost to this subscriber (it read too slowly, or
    /// resumed from an id older than the kept history).
    Lagged(u64),
}

/// The events after `after` still kept, then the live ones.
pub fn event_stream(
    hub: &EventHub,
    after: Option<u64>,
) -> impl Stream<Item = StreamItem> + Send + use<> {
    let (backlog, rx) = hub.subscribe(after);
    let mut head = Vec::with_capacity(backlog.len() + 1);
    if let (Some(after), Some((first, _))) = (after, backlog.first())
        && *first > after + 1
    {
        head.push(StreamItem::Lagged(first - after - 1));
    }
    let floor = backlog.last().map(|(id, _)| *id);
    head.extend(backlog.into_iter().map(|(id, e)| StreamItem::Event(id, e)));
    let live = BroadcastStream::new(rx).filter_map(move |item| match item {
        Ok((id, _)) if floor.is_some_and(|f| id <= f) => None,
        Ok((id, e)) => Some(StreamItem::Event(id, e)),
        Err(BroadcastStreamRecvError::Lagged(n)) => Some(StreamItem::Lagged(n)),
    });
    tokio_stream::iter(head).chain(live)
}

fn to_sse(item: StreamItem) -> Event {
    match item {
        StreamItem::Event(id, e) => Event::default()
            .id(id.to_string())
            .json_data(&e)
            .unwrap_or_else(|_| Event::default().comment("an event could not be encoded")),
        // No id: the client's Last-Event-ID stays at the last event it got.
        StreamItem::Lagged(missed) => {
            Event::default().data(json!({ "type": "lagged", "missed": missed }).to_string())
        }
    }
}

/// Reads `Last-Event-ID`: absent or empty means "live events only".
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        ApiError::bad_field(
            "Last-Event-ID",
            format!("{text:?} is not an event id; send the number from the last `id:` line received, or no header for live events only"),
        )
    })
}

async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let after = last_event_id(&headers)?;
    let stream = event_stream(&state.events, after).map(|item| Ok::<_, Infallible>(to_sse(item)));
    // Proxies such as nginx would otherwise hold events back in a buffer.
    Ok((
        [("x-accel-buffering", "no")],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    ))
}

// ---------------------------------------------------------------------------
// Routes

/// Routes `/v1/events`, `/v1/input-tracking/*` and Bytebot's `/input-tracking/*`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(events))
        .route("/v1/input-tracking", get(status))
        .route("/v1/input-tracking/start", post(v1_start))
        .route("/v1/input-tracking/stop", post(v1_stop))
        .route("/input-tracking/start", post(compat_start))
        .route("/input-tracking/stop", post(compat_stop))
}

async fn status(State(state): State<AppState>) -> impl IntoResponse {
    Json(json!({ "tracking": state.tracker.is_enabled() }))
}

async fn v1_start(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let changed = start(&state).await?;
    Ok(Json(json!({ "tracking": true, "changed": changed })))
}

async fn v1_stop(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let changed = stop(&state).await?;
    Ok(Json(json!({ "tracking": false, "changed": changed })))
}

/// Bytebot answers these with 201 and `{"status": "started"|"stopped"}`.
async fn compat_start(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    start(&state).await?;
    Ok((StatusCode::CREATED, Json(json!({ "status": "started" }))))
}

async fn compat_stop(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    stop(&state).await?;
    Ok((StatusCode::CREATED, Json(json!({ "status": "stopped" }))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn raw(kind: u8, detail: u8, x: i16, y: i16, state: u16) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0] = kind;
        b[1] = detail;
        b[2..4].copy_from_slice(&7u16.to_le_bytes()); // sequence
        b[4..8].copy_from_slice(&123_456u32.to_le_bytes()); // time
        b[8..12].copy_from_slice(&0x1234u32.to_le_bytes()); // root
        b[20..22].copy_from_slice(&x.to_le_bytes());
        b[22..24].copy_from_slice(&y.to_le_bytes());
        b[24..26].copy_from_slice(&(x - 5).to_le_bytes()); // event_x, differs on purpose
        b[26..28].copy_from_slice(&(y - 5).to_le_bytes());
        b[28..30].copy_from_slice(&state.to_le_bytes());
        b[30] = 1;
        b
    }

    #[test]
    fn parses_each_device_event() {
        let cases = [
            (2, RawKind::KeyPress),
            (3, RawKind::KeyRelease),
            (4, RawKind::ButtonPress),
            (5, RawKind::ButtonRelease),
            (6, RawKind::Motion),
        ];
        for (code, kind) in cases {
            let e = parse_raw(&raw(code, 38, 100, 150, 1)).unwrap();
            assert_eq!(
                e,
                RawEvent {
                    kind,
                    detail: 38,
                    root_x: 100,
                    root_y: 150,
                    state: 1
                }
            );
        }
    }

    #[test]
    fn reads_little_endian_and_large_coordinates() {
        let e = parse_raw(&raw(4, 1, 0x0201, 1279, 0x0100)).unwrap();
        assert_eq!((e.root_x, e.root_y, e.state), (513, 1279, 256));
        // Off the root's top-left (multi-head) coordinates are negative.
        let e = parse_raw(&raw(6, 0, -3, -40, 0)).unwrap();
        assert_eq!((e.root_x, e.root_y), (-3, -40));
    }

    #[test]
    fn send_event_flag_is_ignored_and_other_events_are_skipped() {
        assert_eq!(
            parse_raw(&raw(0x80 | 4, 3, 1, 2, 0)).unwrap().kind,
            RawKind::ButtonPress
        );
        for other in [0u8, 1, 7, 12, 33, 35, 0x80 | 9] {
            assert_eq!(parse_raw(&raw(other, 0, 1, 2, 0)), None, "type {other}");
        }
    }

    #[test]
    fn short_buffers_are_rejected() {
        let full = raw(2, 38, 1, 2, 0);
        assert_eq!(parse_raw(&full[..31]), None);
        assert_eq!(parse_raw(&[]), None);
    }

    #[test]
    fn batches_hold_several_events_and_skip_unknown_ones() {
        let mut data = Vec::new();
        data.extend_from_slice(&raw(6, 0, 10, 20, 0));
        data.extend_from_slice(&raw(34, 0, 0, 0, 0)); // MappingNotify: not ours
        data.extend_from_slice(&raw(4, 1, 10, 20, 0));
        data.extend_from_slice(&raw(5, 1, 10, 20, 0x100));
        data.extend_from_slice(&[2, 38, 0]); // a torn tail is dropped
        let kinds: Vec<RawKind> = parse_batch(&data).map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                RawKind::Motion,
                RawKind::ButtonPress,
                RawKind::ButtonRelease
            ]
        );
    }

    #[test]
    fn buttons_map_to_buttons_and_wheel_notches() {
        assert_eq!(button_meaning(1), Some(Ok(Button::Left)));
        assert_eq!(button_meaning(2), Some(Ok(Button::Middle)));
        assert_eq!(button_meaning(3), Some(Ok(Button::Right)));
        assert_eq!(button_meaning(4), Some(Err(ScrollDirection::Up)));
        assert_eq!(button_meaning(5), Some(Err(ScrollDirection::Down)));
        assert_eq!(button_meaning(6), Some(Err(ScrollDirection::Left)));
        assert_eq!(button_meaning(7), Some(Err(ScrollDirection::Right)));
        assert_eq!(button_meaning(8), None);
        assert_eq!(button_meaning(0), None);
    }

    #[test]
    fn keysym_names_drop_the_prefix() {
        assert_eq!(keysym_name(0x61), "a");
        assert_eq!(keysym_name(0x41), "A");
        assert_eq!(keysym_name(0xff0d), "Return");
        assert_eq!(keysym_name(0xffe1), "Shift_L");
        assert_eq!(keysym_name(0x1008_ff12), "XF86AudioMute");
        assert_eq!(keysym_name(0x0012_3456), "0x123456");
    }

    #[test]
    fn motion_is_coalesced() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let m = |x: i16| Move {
            x,
            y: 0,
            at_ms: x as u64,
        };
        let mut c = Coalescer::new(Duration::from_millis(50));
        assert_eq!(c.motion(m(1), ms(0)), Some(m(1)));
        assert_eq!(c.motion(m(2), ms(10)), None);
        assert_eq!(c.motion(m(3), ms(20)), None);
        assert_eq!(c.deadline(), Some(ms(50)));
        assert_eq!(c.due(ms(49)), None);
        assert_eq!(c.due(ms(50)), Some(m(3)));
        assert_eq!(c.deadline(), None);
        // Within the next interval: held back, then flushed before a button.
        assert_eq!(c.motion(m(4), ms(60)), None);
        assert_eq!(c.flush(ms(61)), Some(m(4)));
        assert_eq!(c.flush(ms(62)), None);
        // Long after: goes out at once.
        assert_eq!(c.motion(m(5), ms(500)), Some(m(5)));
    }

    #[test]
    fn injection_window() {
        let inj = Injection::default();
        assert!(!inj.injected_recently(Duration::from_millis(30)));
        {
            let _g = inj.guard();
            let _h = inj.guard();
            assert!(inj.injected_recently(Duration::ZERO));
        }
        assert!(inj.injected_recently(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!inj.injected_recently(Duration::from_millis(5)));
    }

    fn tracking(enabled: bool) -> DesktopEvent {
        DesktopEvent::Tracking { enabled }
    }

    #[tokio::test]
    async fn stream_resumes_after_an_id_then_goes_live() {
        let hub = EventHub::default();
        for i in 0..3 {
            hub.publish(tracking(i % 2 == 0));
        }
        let mut s = Box::pin(event_stream(&hub, Some(1)));
        assert_eq!(s.next().await, Some(StreamItem::Event(2, tracking(false))));
        assert_eq!(s.next().await, Some(StreamItem::Event(3, tracking(true))));
        hub.publish(tracking(false));
        assert_eq!(s.next().await, Some(StreamItem::Event(4, tracking(false))));
    }

    #[tokio::test]
    async fn stream_without_id_is_live_only() {
        let hub = EventHub::default();
        hub.publish(tracking(true));
        let mut s = Box::pin(event_stream(&hub, None));
        hub.publish(tracking(false));
        assert_eq!(s.next().await, Some(StreamItem::Event(2, tracking(false))));
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_it_lagged() {
        let hub = EventHub::default();
        let mut s = Box::pin(event_stream(&hub, None));
        for _ in 0..1100 {
            hub.publish(tracking(true));
        }
        assert_eq!(s.next().await, Some(StreamItem::Lagged(1100 - 1024)));
        assert_eq!(
            s.next().await,
            Some(StreamItem::Event(1100 - 1024 + 1, tracking(true)))
        );
    }

    #[tokio::test]
    async fn resuming_from_a_forgotten_id_reports_the_gap() {
        let hub = EventHub::default();
        for _ in 0..1100 {
            hub.publish(tracking(true));
        }
        let mut s = Box::pin(event_stream(&hub, Some(10)));
        // History keeps 1024 (ids 77..=1100): 11..=76 are gone.
        assert_eq!(s.next().await, Some(StreamItem::Lagged(66)));
        assert_eq!(s.next().await, Some(StreamItem::Event(77, tracking(true))));
    }

    #[test]
    fn last_event_id_header() {
        let mut h = HeaderMap::new();
        assert_eq!(last_event_id(&h).unwrap(), None);
        h.insert("last-event-id", " 42 ".parse().unwrap());
        assert_eq!(last_event_id(&h).unwrap(), Some(42));
        h.insert("last-event-id", "".parse().unwrap());
        assert_eq!(last_event_id(&h).unwrap(), None);
        for bad in ["abc", "-1", "1.5"] {
            h.insert("last-event-id", bad.parse().unwrap());
            assert!(last_event_id(&h).is_err(), "{bad}");
        }
    }
}
