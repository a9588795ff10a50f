//! Screen resolution through RandR 1.2: find (or create) a mode of the wanted
//! size, put it on the output, and resize the screen around the CRTC.
//!
//! The order matters because the screen must always contain every CRTC: the
//! screen grows before a larger mode is set, and shrinks after a smaller one.
//! Xvfb never grows past the size it was started at (its framebuffer is
//! allocated once, and RRGetScreenSizeRange says so). We start ours at the
//! configured size rather than with headroom: a screen narrower than its
//! framebuffer (rows no longer contiguous) measured about 0.3 ms slower per
//! full-screen PNG at 1280×960 inside a 1920×1200 framebuffer.

use super::XSession;
use crate::error::DesktopError;
use thiserror::Error;
use x11rb::connection::Connection;
use x11rb::errors::ReplyError;
use x11rb::protocol::randr::{
    self, ConnectionExt as _, Crtc, GetScreenResourcesCurrentReply, Mode, ModeInfo, Output,
    Rotation, SetConfig,
};
use x11rb::protocol::xproto::{ConnectionExt as _, Window};

/// Smallest size we set, whatever the server allows: below it no desktop
/// application is usable (the same floor as `desktop.resolution`).
pub const MIN_SIZE: (u16, u16) = (320, 200);
/// Largest size we set: the screenshot buffer is sized for 8K.
pub const MAX_SIZE: (u16, u16) = (7680, 4320);

/// The sizes the screen may take: the server's RandR range within our limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SizeRange {
    /// Narrowest width.
    pub min_width: u16,
    /// Lowest height.
    pub min_height: u16,
    /// Widest width.
    pub max_width: u16,
    /// Tallest height.
    pub max_height: u16,
}

/// Why the resolution did not change.
#[derive(Debug, Error)]
pub enum ResolutionError {
    /// The asked size is outside what the server allows (HTTP 400).
    #[error("{field}: {message}")]
    BadSize {
        /// `width` or `height`.
        field: &'static str,
        /// What is allowed.
        message: String,
    },
    /// The X server has no RandR 1.2 (HTTP 501).
    #[error("{0}")]
    Unsupported(String),
    /// The X server refused the change (HTTP 409).
    #[error("{0}")]
    Refused(String),
    /// The connection failed; the session reconnects on the next request.
    #[error(transparent)]
    Desktop(#[from] DesktopError),
}

impl From<x11rb::errors::ConnectionError> for ResolutionError {
    fn from(e: x11rb::errors::ConnectionError) -> Self {
        ResolutionError::Desktop(e.into())
    }
}

impl From<ReplyError> for ResolutionError {
    fn from(e: ReplyError) -> Self {
        ResolutionError::Desktop(e.into())
    }
}

/// A failed request of the change: X errors become a refusal naming the step,
/// connection errors stay connection errors.
fn refused(step: &str, e: ReplyError) -> ResolutionError {
    match e {
        ReplyError::X11Error(x) => ResolutionError::Refused(format!(
            "the X server refused {step} ({}: {:?} error, value {})",
            x.request_name.unwrap_or("RandR request"),
            x.error_kind,
            x.bad_value
        )),
        other => other.into(),
    }
}

/// Checks the server speaks RandR 1.2 or later (modes, outputs, CRTCs).
fn require_randr(conn: &impl Connection) -> Result<(), ResolutionError> {
    let present = conn
        .extension_information(randr::X11_EXTENSION_NAME)?
        .is_some();
    if !present {
        return Err(ResolutionError::Unsupported(
            "this X server has no RandR extension, so its resolution cannot change; \
             restart it with RandR (Xvfb: +extension RANDR) or at the wanted size"
                .into(),
        ));
    }
    // Declaring our version also tells the server we understand 1.2 requests.
    let v = conn.randr_query_version(1, 6)?.reply()?;
    if (v.major_version, v.minor_version) < (1, 2) {
        return Err(ResolutionError::Unsupported(format!(
            "this X server has RandR {}.{}; changing the resolution needs 1.2 or later \
             (restart it at the wanted size instead)",
            v.major_version, v.minor_version
        )));
    }
    Ok(())
}

/// The sizes `root`'s screen may take (RRGetScreenSizeRange within
/// [`MIN_SIZE`]..[`MAX_SIZE`]).
pub fn size_range(conn: &impl Connection, root: Window) -> Result<SizeRange, ResolutionError> {
    require_randr(conn)?;
    let r = conn.randr_get_screen_size_range(root)?.reply()?;
    Ok(SizeRange {
        min_width: r.min_width.max(MIN_SIZE.0),
        min_height: r.min_height.max(MIN_SIZE.1),
        max_width: r.max_width.min(MAX_SIZE.0),
        max_height: r.max_height.min(MAX_SIZE.1),
    })
}

/// Checks one dimension against the range; the message says what is allowed
/// and why the top may be lower than expected.
fn check_dim(
    field: &'static str,
    value: u32,
    (min, max): (u16, u16),
    range: &SizeRange,
) -> Result<u16, ResolutionError> {
    let allowed = format!(
        "this screen can be {}x{} to {}x{}",
        range.min_width, range.min_height, range.max_width, range.max_height
    );
    let bad = |message: String| ResolutionError::BadSize { field, message };
    match u16::try_from(value) {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ if value < u32::from(min) => Err(bad(format!(
            "{value} is too small; {allowed} (at least {min})"
        ))),
        _ => Err(bad(format!(
            "{value} is too large; {allowed} (at most {max}). Xvfb allocates its \
             framebuffer once and never grows past the size it was started at: to \
             allow larger sizes, start bytebot with desktop.resolution (or your own \
             Xvfb with -screen 0 WxHx24) at the largest size you need and set smaller \
             sizes at run time"
        ))),
    }
}

/// Sets the screen of `root` to `width`×`height` through RandR and returns
/// the size the server then reports. A no-op when it already has that size.
pub fn set_resolution(
    conn: &impl Connection,
    root: Window,
    width: u32,
    height: u32,
) -> Result<(u16, u16), ResolutionError> {
    let range = size_range(conn, root)?;
    let w = check_dim("width", width, (range.min_width, range.max_width), &range)?;
    let h = check_dim(
        "height",
        height,
        (range.min_height, range.max_height),
        &range,
    )?;
    // A configuration timestamp that went stale between our read and our
    // change (another client changed it) is worth one retry.
    match apply(conn, root, w, h)? {
        Applied::Done => {}
        Applied::Stale => {
            if let Applied::Stale = apply(conn, root, w, h)? {
                return Err(ResolutionError::Refused(
                    "another X client keeps changing the screen configuration; try again".into(),
                ));
            }
        }
    }
    let geo = conn.get_geometry(root)?.reply()?;
    if (geo.width, geo.height) != (w, h) {
        return Err(ResolutionError::Refused(format!(
            "the X server accepted {w}x{h} but its screen is {}x{}",
            geo.width, geo.height
        )));
    }
    Ok((w, h))
}

/// Whether [`apply`] changed the configuration or found it changed under it.
enum Applied {
    Done,
    Stale,
}

/// One attempt at the change, from a fresh read of the configuration.
fn apply(conn: &impl Connection, root: Window, w: u16, h: u16) -> Result<Applied, ResolutionError> {
    let res = conn.randr_get_screen_resources_current(root)?.reply()?;
    let (output, crtc, output_modes) = active_output(conn, &res)?;
    let crtc_info = conn
        .randr_get_crtc_info(crtc, res.config_timestamp)?
        .reply()?;
    let geo = conn.get_geometry(root)?.reply()?;
    let current = (geo.width, geo.height);
    if current == (w, h) && crtc_info.mode != 0 && (crtc_info.width, crtc_info.height) == (w, h) {
        return Ok(Applied::Done);
    }
    let mode = mode_for(conn, root, &res, output, &output_modes, w, h)?;
    let mm = physical_size(conn, root);
    // Grow first so the new CRTC fits; the screen must contain every CRTC.
    let grown = (w.max(current.0), h.max(current.1));
    if grown != current {
        set_screen_size(conn, root, grown, mm)?;
    }
    let reply = conn
        .randr_set_crtc_config(
            crtc,
            x11rb::CURRENT_TIME,
            res.config_timestamp,
            0,
            0,
            mode,
            Rotation::ROTATE0,
            &[output],
        )?
        .reply();
    let status = match reply {
        Ok(r) => r.status,
        Err(e) => {
            restore(conn, root, grown, current, mm);
            return Err(refused(&format!("a {w}x{h} mode on the output"), e));
        }
    };
    if status != SetConfig::SUCCESS {
        restore(conn, root, grown, current, mm);
        if status == SetConfig::INVALID_CONFIG_TIME {
            return Ok(Applied::Stale);
        }
        return Err(ResolutionError::Refused(format!(
            "the X server did not set a {w}x{h} mode on the output (RRSetCrtcConfig status {})",
            u8::from(status)
        )));
    }
    // Shrink last, now that the CRTC is no larger than the target.
    if grown != (w, h) {
        set_screen_size(conn, root, (w, h), mm)?;
    }
    Ok(Applied::Done)
}

/// Puts the screen back after a failed CRTC change (best effort: the error
/// being reported matters more than a second one).
fn restore(
    conn: &impl Connection,
    root: Window,
    grown: (u16, u16),
    current: (u16, u16),
    mm: (f64, f64),
) {
    if grown != current {
        let _ = set_screen_size(conn, root, current, mm);
    }
}

/// RRSetScreenSize keeping the screen's dots per millimetre.
fn set_screen_size(
    conn: &impl Connection,
    root: Window,
    (w, h): (u16, u16),
    (mm_per_px_w, mm_per_px_h): (f64, f64),
) -> Result<(), ResolutionError> {
    let mm_w = (f64::from(w) * mm_per_px_w).round().max(1.0) as u32;
    let mm_h = (f64::from(h) * mm_per_px_h).round().max(1.0) as u32;
    conn.randr_set_screen_size(root, w, h, mm_w, mm_h)?
        .check()
        .map_err(|e| refused(&format!("a {w}x{h} screen"), e))
}

/// Millimetres per pixel of `root`'s screen, from the connection setup (we
/// keep the ratio on every change, so it stays true); 96 dpi when unknown.
fn physical_size(conn: &impl Connection, root: Window) -> (f64, f64) {
    const MM_PER_PX_96DPI: f64 = 25.4 / 96.0;
    let ratio = |mm: u16, px: u16| {
        if mm == 0 || px == 0 {
            MM_PER_PX_96DPI
        } else {
            f64::from(mm) / f64::from(px)
        }
    };
    conn.setup()
        .roots
        .iter()
        .find(|s| s.root == root)
        .map(|s| {
            (
                ratio(s.width_in_millimeters, s.width_in_pixels),
                ratio(s.height_in_millimeters, s.height_in_pixels),
            )
        })
        .unwrap_or((MM_PER_PX_96DPI, MM_PER_PX_96DPI))
}

/// The output to resize: the first one driving a CRTC, else the first
/// connected one that has a CRTC it could use. Returns it, its CRTC and modes.
fn active_output(
    conn: &impl Connection,
    res: &GetScreenResourcesCurrentReply,
) -> Result<(Output, Crtc, Vec<Mode>), ResolutionError> {
    let mut cookies = Vec::with_capacity(res.outputs.len());
    for &output in &res.outputs {
        cookies.push((
            output,
            conn.randr_get_output_info(output, res.config_timestamp)?,
        ));
    }
    let mut spare = None;
    for (output, cookie) in cookies {
        let info = cookie.reply()?;
        if info.crtc != 0 {
            return Ok((output, info.crtc, info.modes));
        }
        if spare.is_none()
            && info.connection == randr::Connection::CONNECTED
            && let Some(&crtc) = info.crtcs.first()
        {
            spare = Some((output, crtc, info.modes));
        }
    }
    spare.ok_or_else(|| {
        ResolutionError::Refused(
            "the X server reports no connected output with a CRTC, so there is no screen to resize"
                .into(),
        )
    })
}

/// A mode of exactly `w`×`h` on `output`: one it has, one the server has
/// (added to the output), or a new one (RRCreateMode, then added).
fn mode_for(
    conn: &impl Connection,
    root: Window,
    res: &GetScreenResourcesCurrentReply,
    output: Output,
    output_modes: &[Mode],
    w: u16,
    h: u16,
) -> Result<Mode, ResolutionError> {
    let sized = |m: &&ModeInfo| m.width == w && m.height == h;
    // The output lists its preferred modes first; keep that preference.
    let on_output = output_modes
        .iter()
        .find(|id| res.modes.iter().filter(sized).any(|m| m.id == **id));
    if let Some(&mode) = on_output {
        return Ok(mode);
    }
    let mode = match res.modes.iter().find(sized) {
        Some(m) => m.id,
        None => {
            let name = format!("{w}x{h}");
            let info = ModeInfo {
                id: 0,
                width: w,
                height: h,
                dot_clock: 0,
                hsync_start: 0,
                hsync_end: 0,
                htotal: 0,
                hskew: 0,
                vsync_start: 0,
                vsync_end: 0,
                vtotal: 0,
                name_len: name.len() as u16,
                mode_flags: 0u32.into(),
            };
            conn.randr_create_mode(root, info, name.as_bytes())?
                .reply()
                .map_err(|e| refused(&format!("creating a {name} mode"), e))?
                .mode
        }
    };
    conn.randr_add_output_mode(output, mode)?
        .check()
        .map_err(|e| refused(&format!("adding a {w}x{h} mode to the output"), e))?;
    Ok(mode)
}

impl XSession {
    /// The sizes the screen may take, when the server has RandR 1.2.
    pub fn size_range(&self) -> Result<SizeRange, ResolutionError> {
        size_range(&self.conn, self.root)
    }

    /// Changes the screen to `width`×`height`; returns the new size.
    /// Captures follow on their own: the shared-memory segment is sized for
    /// the largest screen we allow, and every capture reads the root's size.
    pub fn set_resolution(&self, width: u32, height: u32) -> Result<(u16, u16), ResolutionError> {
        set_resolution(&self.conn, self.root, width, height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> SizeRange {
        SizeRange {
            min_width: 320,
            min_height: 200,
            max_width: 1920,
            max_height: 1200,
        }
    }

    #[test]
    fn dimensions_inside_the_range_pass() {
        let r = range();
        assert_eq!(check_dim("width", 1024, (320, 1920), &r).unwrap(), 1024);
        assert_eq!(check_dim("height", 200, (200, 1200), &r).unwrap(), 200);
        assert_eq!(check_dim("height", 1200, (200, 1200), &r).unwrap(), 1200);
    }

    #[test]
    fn dimensions_outside_the_range_name_the_field_and_the_limits() {
        let r = range();
        let e = check_dim("width", 0, (320, 1920), &r).unwrap_err();
        assert!(
            matches!(&e, ResolutionError::BadSize { field: "width", message } if message.contains("too small") && message.contains("320x200 to 1920x1200")),
            "{e}"
        );
        let e = check_dim("height", 70_000, (200, 1200), &r).unwrap_err();
        assert!(
            matches!(&e, ResolutionError::BadSize { field: "height", message } if message.contains("at most 1200")),
            "{e}"
        );
    }
}
