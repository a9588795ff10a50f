//! The clipboard: we own the CLIPBOARD selection on a connection of our own
//! and answer other clients' requests for it, as any X application does.

use super::intern_atoms;
use crate::error::DesktopError;
use std::sync::{Arc, Mutex};
use x11rb::connection::Connection;
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{
    Atom, AtomEnum, ConnectionExt as _, CreateWindowAux, EventMask, PropMode,
    SELECTION_NOTIFY_EVENT, SelectionNotifyEvent, SelectionRequestEvent, Window, WindowClass,
};
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

/// Handle to the selection owner running on its own thread.
pub struct Clipboard {
    conn: Arc<RustConnection>,
    window: Window,
    clipboard: Atom,
    text: Arc<Mutex<Vec<u8>>>,
}

struct Atoms {
    clipboard: Atom,
    targets: Atom,
    utf8: Atom,
    text: Atom,
}

impl Clipboard {
    /// Opens a connection and a hidden window and starts serving requests.
    pub fn start(display: &str) -> Result<Self, DesktopError> {
        let (conn, screen_num) = RustConnection::connect(Some(display))?;
        let root = conn.setup().roots[screen_num].root;
        let window = conn
            .generate_id()
            .map_err(|e| DesktopError::X(e.to_string()))?;
        conn.create_window(
            0,
            window,
            root,
            0,
            0,
            1,
            1,
            0,
            WindowClass::INPUT_ONLY,
            0,
            &CreateWindowAux::new().event_mask(EventMask::PROPERTY_CHANGE),
        )?;
        let [clipboard, targets, utf8, text] =
            intern_atoms(&conn, ["CLIPBOARD", "TARGETS", "UTF8_STRING", "TEXT"])?;
        conn.flush()?;
        let conn = Arc::new(conn);
        let shared = Arc::new(Mutex::new(Vec::new()));
        let atoms = Atoms {
            clipboard,
            targets,
            utf8,
            text,
        };
        let (c, t) = (Arc::clone(&conn), Arc::clone(&shared));
        std::thread::Builder::new()
            .name("x11-clipboard".into())
            .spawn(move || serve(&c, window, &atoms, &t))
            .map_err(|e| DesktopError::Failed(format!("cannot start the clipboard thread: {e}")))?;
        Ok(Self {
            conn,
            window,
            clipboard,
            text: shared,
        })
    }

    /// Takes ownership of CLIPBOARD with `text`; returns once the server knows.
    pub fn set(&self, text: &str) -> Result<(), DesktopError> {
        if let Ok(mut slot) = self.text.lock() {
            *slot = text.as_bytes().to_vec();
        }
        self.conn
            .set_selection_owner(self.window, self.clipboard, x11rb::CURRENT_TIME)?;
        let owner = self.conn.get_selection_owner(self.clipboard)?.reply()?;
        if owner.owner != self.window {
            return Err(DesktopError::X(
                "another client took the clipboard at once".into(),
            ));
        }
        Ok(())
    }
}

fn serve(conn: &RustConnection, window: Window, atoms: &Atoms, text: &Mutex<Vec<u8>>) {
    loop {
        let event = match conn.wait_for_event() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "clipboard connection closed");
                return;
            }
        };
        match event {
            Event::SelectionRequest(req) => {
                let data = text.lock().map(|t| t.clone()).unwrap_or_default();
                if let Err(e) = answer(conn, window, atoms, &req, &data) {
                    tracing::warn!(error = %e, "failed to answer a clipboard request");
                }
            }
            Event::SelectionClear(_) => {
                if let Ok(mut t) = text.lock() {
                    t.clear();
                }
            }
            _ => {}
        }
    }
}

fn answer(
    conn: &RustConnection,
    window: Window,
    atoms: &Atoms,
    req: &SelectionRequestEvent,
    data: &[u8],
) -> Result<(), DesktopError> {
    // Old clients send property None: reply on the target atom instead (ICCCM).
    let property = if req.property == x11rb::NONE {
        req.target
    } else {
        req.property
    };
    let served = if req.owner != window || req.selection != atoms.clipboard {
        false
    } else if req.target == atoms.targets {
        let list = [
            atoms.targets,
            atoms.utf8,
            atoms.text,
            AtomEnum::STRING.into(),
        ];
        conn.change_property32(
            PropMode::REPLACE,
            req.requestor,
            property,
            AtomEnum::ATOM,
            &list,
        )?;
        true
    } else if [atoms.utf8, atoms.text, AtomEnum::STRING.into()].contains(&req.target) {
        let kind = if req.target == atoms.text {
            atoms.utf8
        } else {
            req.target
        };
        conn.change_property8(PropMode::REPLACE, req.requestor, property, kind, data)?;
        true
    } else {
        false
    };
    let notify = SelectionNotifyEvent {
        response_type: SELECTION_NOTIFY_EVENT,
        sequence: 0,
        time: req.time,
        requestor: req.requestor,
        selection: req.selection,
        target: req.target,
        property: if served { property } else { x11rb::NONE },
    };
    conn.send_event(false, req.requestor, EventMask::NO_EVENT, notify)?;
    conn.flush()?;
    Ok(())
}
