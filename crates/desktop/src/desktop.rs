//! The desktop: one X display and every action on it.
//!
//! Input and capture share one X connection behind a mutex, so actions run
//! one at a time in the order they arrive, as on a real desk. A connection
//! that fails is dropped and reopened on the next action.

use crate::encode::{self, EncodeOptions, Encoded};
use crate::error::DesktopError;
use crate::keys::{Keysym, resolve_keys};
use crate::x11::XSession;
use crate::x11::capture::{self, Frame, Region};
use crate::x11::clipboard::Clipboard;
use crate::x11::input::{button_number, scroll_button};
use crate::x11::watcher::{DamageWatcher, Settle};
use base64::Engine as _;
use bytebot_protocol::action::{
    ClickMouse, DragMouse, PressKeys, PressMouse, Scroll, TraceMouse, TypeKeys,
};
use bytebot_protocol::{Action, Coordinates, CursorPosition, Limits, Press};
use serde_json::Value;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::ConnectionExt as _;

/// Keysym of Control_L, for paste.
const CONTROL_L: Keysym = 0xffe3;

/// One X display under our control.
pub struct Desktop {
    display: String,
    session: Mutex<Option<XSession>>,
    clipboard: Mutex<Option<Clipboard>>,
    watcher: Mutex<Option<DamageWatcher>>,
    /// Bounds on counts, sizes and durations.
    pub limits: Limits,
    /// When our own XTEST input runs, so input tracking can leave it out.
    pub injection: crate::record::Injection,
}

impl Desktop {
    /// Connects to `display`; fails when it can't be reached at all.
    pub fn connect(display: &str, limits: Limits) -> Result<Arc<Self>, DesktopError> {
        let session = XSession::connect(display)?;
        let desktop = Self {
            display: display.to_string(),
            session: Mutex::new(Some(session)),
            clipboard: Mutex::new(None),
            watcher: Mutex::new(DamageWatcher::start(display).ok()),
            limits,
            injection: crate::record::Injection::default(),
        };
        Ok(Arc::new(desktop))
    }

    /// The X display name.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Runs `f` with a live session, reconnecting first if the last one died.
    pub fn with_session<T>(
        &self,
        f: impl FnOnce(&mut XSession) -> Result<T, DesktopError>,
    ) -> Result<T, DesktopError> {
        let mut guard = lock(&self.session);
        if guard.is_none() {
            *guard = Some(XSession::connect(&self.display)?);
            tracing::info!(display = %self.display, "reconnected to the X display");
        }
        let Some(session) = guard.as_mut() else {
            return Err(DesktopError::Unavailable("no X session".into()));
        };
        let result = f(session).and_then(|v| {
            session.conn.flush()?;
            Ok(v)
        });
        if let Err(DesktopError::Unavailable(reason)) = &result {
            tracing::warn!(display = %self.display, %reason, "X connection lost; will reconnect");
            *guard = None;
        }
        result
    }

    /// [`with_session`](Self::with_session) on tokio's blocking pool, for handlers.
    pub async fn on_session<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut XSession) -> Result<T, DesktopError> + Send + 'static,
    ) -> Result<T, DesktopError> {
        let me = Arc::clone(self);
        blocking(move || me.with_session(f)).await
    }

    /// Captures a region (the whole screen when `None`).
    pub fn capture(&self, region: Option<Region>) -> Result<(Frame, Region), DesktopError> {
        self.with_session(|s| {
            let (w, h) = s.screen_size()?;
            let (w, h) = (u32::from(w), u32::from(h));
            let region = region.unwrap_or(Region {
                x: 0,
                y: 0,
                width: w,
                height: h,
            });
            region.check(w, h)?;
            let frame = capture::capture(&s.conn, s.root, s.shm.as_ref(), region)?;
            Ok((frame, region))
        })
    }

    /// Captures and encodes, off the async runtime.
    pub async fn screenshot(
        self: &Arc<Self>,
        region: Option<Region>,
        opts: EncodeOptions,
    ) -> Result<(Encoded, Region), DesktopError> {
        let me = Arc::clone(self);
        blocking(move || {
            let (mut frame, region) = me.capture(region)?;
            if opts.cursor {
                me.with_session(|s| s.draw_cursor(&mut frame, region))?;
            }
            Ok((encode::encode(&frame, &opts)?, region))
        })
        .await
    }

    /// Waits for the screen to stop changing (XDamage); without a watcher,
    /// returns unsettled at once.
    pub async fn settle(&self, quiet: Duration, timeout: Duration) -> Settle {
        let watcher = lock(&self.watcher).take();
        let Some(watcher) = watcher
            .filter(DamageWatcher::is_alive)
            .or_else(|| DamageWatcher::start(&self.display).ok())
        else {
            return Settle {
                settled: false,
                waited_ms: 0,
            };
        };
        let result = watcher.settle(quiet, timeout).await;
        *lock(&self.watcher) = Some(watcher);
        result
    }

    /// Puts text on the clipboard, as its owner.
    pub fn set_clipboard(&self, text: &str) -> Result<(), DesktopError> {
        let mut guard = lock(&self.clipboard);
        if guard.is_none() {
            *guard = Some(Clipboard::start(&self.display)?);
        }
        let result = guard.as_ref().map(|c| c.set(text)).unwrap_or(Ok(()));
        if result.is_err() {
            *guard = None;
        }
        result
    }

    /// Runs one input or screen action (file and application actions are
    /// handled by the server, which owns the workspace and the app map).
    /// Returns the action's JSON answer, if it has one.
    pub async fn run(self: &Arc<Self>, action: Action) -> Result<Option<Value>, DesktopError> {
        action.validate(&self.limits)?;
        match action {
            Action::Wait(w) => {
                tokio::time::sleep(Duration::from_millis(w.duration)).await;
                Ok(None)
            }
            Action::Screenshot => {
                let (shot, _) = self.screenshot(None, EncodeOptions::default()).await?;
                let image = base64::engine::general_purpose::STANDARD.encode(&shot.bytes);
                Ok(Some(serde_json::json!({ "image": image })))
            }
            Action::PasteText(p) => {
                let me = Arc::clone(self);
                blocking(move || {
                    let _injecting = me.injection.guard();
                    me.set_clipboard(&p.text)?;
                    me.with_session(|s| chord(s, &[CONTROL_L, u32::from('v')], Duration::ZERO))
                })
                .await?;
                Ok(None)
            }
            other => {
                let me = Arc::clone(self);
                blocking(move || {
                    let _injecting = me.injection.guard();
                    me.with_session(|s| input_action(s, other))
                })
                .await
            }
        }
    }
}

/// Runs blocking X work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DesktopError> + Send + 'static,
) -> Result<T, DesktopError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DesktopError::Failed(format!("desktop worker failed: {e}")))?
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Checks a point lies on the screen and converts it to X coordinates.
fn point(field: &str, c: Coordinates, (w, h): (u16, u16)) -> Result<(i16, i16), DesktopError> {
    let (x, y) = (c.x.round(), c.y.round());
    let on_screen = x.is_finite()
        && y.is_finite()
        && x >= 0.0
        && y >= 0.0
        && x < f64::from(w)
        && y < f64::from(h);
    if !on_screen {
        return Err(DesktopError::field(
            field,
            format!(
                "({}, {}) is off the screen; the screen is {w}x{h}, so x must be 0 to {} and y 0 to {}",
                c.x,
                c.y,
                w - 1,
                h - 1
            ),
        ));
    }
    Ok((x as i16, y as i16))
}

fn points(
    field: &str,
    path: &[Coordinates],
    size: (u16, u16),
) -> Result<Vec<(i16, i16)>, DesktopError> {
    path.iter()
        .enumerate()
        .map(|(i, c)| point(&format!("{field}[{i}]"), *c, size))
        .collect()
}

/// Presses keys in order and releases them in reverse.
fn chord(s: &mut XSession, keys: &[Keysym], delay: Duration) -> Result<(), DesktopError> {
    let mut used = Vec::new();
    for &k in keys {
        s.keysym(k, true, &mut used)?;
        pause(s, delay)?;
    }
    for &k in keys.iter().rev() {
        s.keysym(k, false, &mut used)?;
        pause(s, delay)?;
    }
    Ok(())
}

fn pause(s: &XSession, delay: Duration) -> Result<(), DesktopError> {
    if !delay.is_zero() {
        s.conn.flush()?;
        std::thread::sleep(delay);
    }
    Ok(())
}

fn hold(s: &mut XSession, keys: &[Keysym], down: bool) -> Result<(), DesktopError> {
    let mut used = Vec::new();
    let ordered: Box<dyn Iterator<Item = &Keysym>> = if down {
        Box::new(keys.iter())
    } else {
        Box::new(keys.iter().rev())
    };
    for &k in ordered {
        s.keysym(k, down, &mut used)?;
    }
    Ok(())
}

/// Runs `body` with `keys` held down, releasing them even when it fails.
fn holding(
    s: &mut XSession,
    keys: &[Keysym],
    body: impl FnOnce(&mut XSession) -> Result<(), DesktopError>,
) -> Result<(), DesktopError> {
    hold(s, keys, true)?;
    let result = body(s);
    let released = hold(s, keys, false);
    result.and(released)
}

/// Clicks (or wheel notches) shared by `click_mouse` and `scroll`: move if
/// asked, then press and release `button` `count` times with keys held.
fn repeat_button(
    s: &mut XSession,
    size: (u16, u16),
    coordinates: Option<Coordinates>,
    hold_keys: &[String],
    button: u8,
    count: u32,
) -> Result<(), DesktopError> {
    let at = coordinates
        .map(|c| point("coordinates", c, size))
        .transpose()?;
    let keys = resolve_keys("holdKeys", hold_keys)?;
    if let Some((x, y)) = at {
        s.move_to(x, y)?;
    }
    holding(s, &keys, |s| {
        for _ in 0..count {
            s.button(button, true)?;
            s.button(button, false)?;
        }
        Ok(())
    })
}

fn input_action(s: &mut XSession, action: Action) -> Result<Option<Value>, DesktopError> {
    let size = s.screen_size()?;
    match action {
        Action::MoveMouse(m) => {
            let (x, y) = point("coordinates", m.coordinates, size)?;
            s.move_to(x, y)?;
        }
        Action::TraceMouse(TraceMouse { path, hold_keys }) => {
            let pts = points("path", &path, size)?;
            let keys = resolve_keys("holdKeys", &hold_keys)?;
            holding(s, &keys, |s| {
                pts.iter().try_for_each(|&(x, y)| s.move_to(x, y))
            })?;
        }
        Action::ClickMouse(ClickMouse {
            coordinates,
            button,
            hold_keys,
            click_count,
        }) => repeat_button(
            s,
            size,
            coordinates,
            &hold_keys,
            button_number(button),
            click_count,
        )?,
        Action::PressMouse(PressMouse {
            coordinates,
            button,
            press,
        }) => {
            if let Some(c) = coordinates {
                let (x, y) = point("coordinates", c, size)?;
                s.move_to(x, y)?;
            }
            s.button(button_number(button), press == Press::Down)?;
        }
        Action::DragMouse(DragMouse {
            path,
            button,
            hold_keys,
        }) => {
            let pts = points("path", &path, size)?;
            let keys = resolve_keys("holdKeys", &hold_keys)?;
            let b = button_number(button);
            holding(s, &keys, |s| {
                let (first, rest) = pts
                    .split_first()
                    .map(|(f, r)| (*f, r))
                    .unwrap_or(((0, 0), &[]));
                s.move_to(first.0, first.1)?;
                s.button(b, true)?;
                let moved = rest.iter().try_for_each(|&(x, y)| s.move_to(x, y));
                // Release even when a move failed, so no button stays stuck.
                let released = s.button(b, false);
                moved.and(released)
            })?;
        }
        Action::Scroll(Scroll {
            coordinates,
            direction,
            scroll_count,
            hold_keys,
        }) => repeat_button(
            s,
            size,
            coordinates,
            &hold_keys,
            scroll_button(direction),
            scroll_count,
        )?,
        Action::TypeKeys(TypeKeys { keys, delay }) => {
            let syms = resolve_keys("keys", &keys)?;
            chord(s, &syms, Duration::from_millis(delay.unwrap_or(0)))?;
        }
        Action::PressKeys(PressKeys { keys, press }) => {
            let syms = resolve_keys("keys", &keys)?;
            hold(s, &syms, press == Press::Down)?;
        }
        Action::TypeText(t) => {
            s.type_text(&t.text, Duration::from_millis(t.delay.unwrap_or(0)))?;
        }
        Action::CursorPosition => {
            let p = s.conn.query_pointer(s.root)?.reply()?;
            let pos = CursorPosition {
                x: p.root_x.into(),
                y: p.root_y.into(),
            };
            return Ok(Some(
                serde_json::to_value(pos).map_err(|e| DesktopError::Failed(e.to_string()))?,
            ));
        }
        other => {
            return Err(DesktopError::Failed(format!(
                "action {} is not an input action",
                other.name()
            )));
        }
    }
    // Answer only once the server has applied every event, so a screenshot
    // taken right after sees the effect.
    s.sync()?;
    Ok(None)
}
