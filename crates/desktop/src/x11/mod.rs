//! Everything that talks to the X server, through x11rb and no helper processes.
//!
//! One [`XSession`] holds the connection used for input and capture. Watchers
//! that block on events (clipboard, damage, XRecord) open connections of their
//! own so they never hold up an action.

pub mod capture;
pub mod clipboard;
pub mod cursor;
pub mod input;
pub mod keymap;
pub mod randr;
pub mod watcher;
pub mod windows;

use crate::error::DesktopError;
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::xproto::{ConnectionExt as _, Window};
use x11rb::rust_connection::RustConnection;

/// A live connection to one X display, with what we learned about it at connect.
pub struct XSession {
    /// The connection itself.
    pub conn: RustConnection,
    /// The root window of the default screen.
    pub root: Window,
    /// The keyboard mapping, refreshed when we change it or the server says so.
    pub keymap: keymap::Keymap,
    /// Shared-memory capture, when the server offers MIT-SHM.
    pub shm: Option<capture::ShmCapture>,
    /// Whether the XTEST extension is present (input needs it).
    pub has_xtest: bool,
    /// Whether XFixes (cursor image) is usable.
    pub has_xfixes: bool,
    /// Keys held down that we pressed Shift_L for (`percent`): Shift_L is
    /// released with the last of them.
    pub auto_shift: Vec<x11rb::protocol::xproto::Keycode>,
}

impl XSession {
    /// Connects to `display` (e.g. `:99`) and checks the extensions we rely on.
    pub fn connect(display: &str) -> Result<Self, DesktopError> {
        let (conn, screen_num) = RustConnection::connect(Some(display)).map_err(|e| {
            DesktopError::Unavailable(format!("cannot connect to X display {display}: {e}"))
        })?;
        let screen = conn.setup().roots.get(screen_num).ok_or_else(|| {
            DesktopError::Unavailable(format!("display {display} has no screen {screen_num}"))
        })?;
        let root = screen.root;
        capture::check_pixel_format(&conn, screen_num)?;
        let has_xtest = conn
            .extension_information(x11rb::protocol::xtest::X11_EXTENSION_NAME)?
            .is_some();
        if !has_xtest {
            return Err(DesktopError::Unavailable(format!(
                "display {display} lacks the XTEST extension; start Xvfb without -extension XTEST"
            )));
        }
        // XFixes must be told our version before any other request.
        let has_xfixes = conn
            .extension_information(x11rb::protocol::xfixes::X11_EXTENSION_NAME)?
            .is_some()
            && x11rb::protocol::xfixes::ConnectionExt::xfixes_query_version(&conn, 5, 0)?
                .reply()
                .is_ok();
        let keymap = keymap::Keymap::load(&conn)?;
        let shm = capture::ShmCapture::new(&conn);
        Ok(Self {
            conn,
            root,
            keymap,
            shm,
            has_xtest,
            has_xfixes,
            auto_shift: Vec::new(),
        })
    }

    /// The screen size in pixels, read from the root window (RandR may change it).
    pub fn screen_size(&self) -> Result<(u16, u16), DesktopError> {
        let geo = self.conn.get_geometry(self.root)?.reply()?;
        Ok((geo.width, geo.height))
    }

    /// Waits until the server has processed every request sent so far.
    pub fn sync(&self) -> Result<(), DesktopError> {
        self.conn.get_input_focus()?.reply()?;
        Ok(())
    }
}

/// Interns atoms by name, in one round trip for all of them.
pub fn intern_atoms<const N: usize>(
    conn: &impl Connection,
    names: [&str; N],
) -> Result<[u32; N], DesktopError> {
    let mut cookies = Vec::with_capacity(N);
    for name in names {
        cookies.push(conn.intern_atom(false, name.as_bytes())?);
    }
    let mut atoms = [0u32; N];
    for (slot, cookie) in atoms.iter_mut().zip(cookies) {
        *slot = cookie.reply()?.atom;
    }
    Ok(atoms)
}
