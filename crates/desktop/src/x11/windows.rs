//! Top-level windows through EWMH: what the window manager lists in
//! `_NET_CLIENT_LIST`, focusing one, and showing the desktop.

use super::{XSession, intern_atoms};
use crate::error::DesktopError;
use serde::Serialize;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ClientMessageEvent, ConnectionExt as _, EventMask, Window,
};

/// One application window as the window manager sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowInfo {
    /// The X window id.
    pub id: u32,
    /// Its title (`_NET_WM_NAME`, else `WM_NAME`).
    pub title: String,
    /// `WM_CLASS` instance and class, e.g. `["firefox", "Firefox"]`.
    pub class: Vec<String>,
    /// Left edge on the screen.
    pub x: i32,
    /// Top edge on the screen.
    pub y: i32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Whether it has the input focus (`_NET_ACTIVE_WINDOW`).
    pub active: bool,
    /// Whether it is minimised (`_NET_WM_STATE_HIDDEN`).
    pub minimized: bool,
}

struct Atoms {
    client_list: u32,
    active: u32,
    wm_name: u32,
    utf8: u32,
    wm_state: u32,
    hidden: u32,
    showing_desktop: u32,
}

fn atoms(conn: &impl Connection) -> Result<Atoms, DesktopError> {
    let [
        client_list,
        active,
        wm_name,
        utf8,
        wm_state,
        hidden,
        showing_desktop,
    ] = intern_atoms(
        conn,
        [
            "_NET_CLIENT_LIST",
            "_NET_ACTIVE_WINDOW",
            "_NET_WM_NAME",
            "UTF8_STRING",
            "_NET_WM_STATE",
            "_NET_WM_STATE_HIDDEN",
            "_NET_SHOWING_DESKTOP",
        ],
    )?;
    Ok(Atoms {
        client_list,
        active,
        wm_name,
        utf8,
        wm_state,
        hidden,
        showing_desktop,
    })
}

impl XSession {
    fn prop32(
        &self,
        window: Window,
        atom: u32,
        kind: impl Into<u32>,
    ) -> Result<Vec<u32>, DesktopError> {
        let reply = self
            .conn
            .get_property(false, window, atom, kind, 0, 1 << 16)?
            .reply()?;
        Ok(reply.value32().map(|v| v.collect()).unwrap_or_default())
    }

    fn prop_bytes(
        &self,
        window: Window,
        atom: impl Into<u32>,
        kind: impl Into<u32>,
    ) -> Result<Vec<u8>, DesktopError> {
        Ok(self
            .conn
            .get_property(false, window, atom, kind, 0, 1 << 16)?
            .reply()?
            .value)
    }

    /// Lists the window manager's client windows, in stacking order.
    pub fn windows(&self) -> Result<Vec<WindowInfo>, DesktopError> {
        let a = atoms(&self.conn)?;
        let ids = self.prop32(self.root, a.client_list, AtomEnum::WINDOW)?;
        let active = self
            .prop32(self.root, a.active, AtomEnum::WINDOW)?
            .first()
            .copied()
            .unwrap_or(0);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            // A window may vanish between the list and these calls; skip it.
            let Ok(info) = self.window_info(id, &a, active) else {
                continue;
            };
            out.push(info);
        }
        Ok(out)
    }

    fn window_info(
        &self,
        id: Window,
        a: &Atoms,
        active: Window,
    ) -> Result<WindowInfo, DesktopError> {
        let mut title =
            String::from_utf8_lossy(&self.prop_bytes(id, a.wm_name, a.utf8)?).into_owned();
        if title.is_empty() {
            title = String::from_utf8_lossy(&self.prop_bytes(
                id,
                AtomEnum::WM_NAME,
                AtomEnum::STRING,
            )?)
            .into_owned();
        }
        let class = self
            .prop_bytes(id, AtomEnum::WM_CLASS, AtomEnum::STRING)?
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let geo = self.conn.get_geometry(id)?.reply()?;
        let pos = self
            .conn
            .translate_coordinates(id, self.root, 0, 0)?
            .reply()?;
        let state = self.prop32(id, a.wm_state, AtomEnum::ATOM)?;
        Ok(WindowInfo {
            id,
            title,
            class,
            x: pos.dst_x.into(),
            y: pos.dst_y.into(),
            width: geo.width.into(),
            height: geo.height.into(),
            active: id == active,
            minimized: state.contains(&a.hidden),
        })
    }

    /// Asks the window manager to activate (raise, focus, un-minimise) a window.
    pub fn focus_window(&self, id: Window) -> Result<(), DesktopError> {
        let a = atoms(&self.conn)?;
        // Source indication 2: a pager, i.e. the user's explicit wish, which WMs honour.
        self.client_message(id, a.active, [2, x11rb::CURRENT_TIME, 0, 0, 0])?;
        self.sync()
    }

    /// Minimises every window by asking the WM to show the desktop.
    pub fn show_desktop(&self) -> Result<(), DesktopError> {
        let a = atoms(&self.conn)?;
        self.client_message(self.root, a.showing_desktop, [1, 0, 0, 0, 0])?;
        self.sync()
    }

    fn client_message(
        &self,
        window: Window,
        kind: u32,
        data: [u32; 5],
    ) -> Result<(), DesktopError> {
        let event = ClientMessageEvent::new(32, window, kind, data);
        self.conn.send_event(
            false,
            self.root,
            EventMask::SUBSTRUCTURE_REDIRECT | EventMask::SUBSTRUCTURE_NOTIFY,
            event,
        )?;
        Ok(())
    }
}
