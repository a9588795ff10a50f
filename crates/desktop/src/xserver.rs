//! Our own X server when no display is given: Xvfb (which picks a free
//! display number itself through `-displayfd`) plus a light window manager.
//! Both are stopped when the [`OwnedX`] is dropped.

use crate::error::DesktopError;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Xvfb (and window manager) that we started.
pub struct OwnedX {
    /// The display name, e.g. `:42`.
    pub display: String,
    xvfb: Child,
    wm: Option<Child>,
}

impl OwnedX {
    /// Starts Xvfb at `width`×`height`×24 and, unless `window_manager` is
    /// empty, that window manager; waits until both are ready.
    pub fn start(width: u32, height: u32, window_manager: &str) -> Result<Self, DesktopError> {
        let (read_end, write_end) = pipe()?;
        let screen = format!("{width}x{height}x24");
        let fd_arg = std::os::fd::AsRawFd::as_raw_fd(&write_end).to_string();
        let xvfb = Command::new("Xvfb")
            .args([
                "-displayfd",
                &fd_arg,
                "-screen",
                "0",
                &screen,
                "-nolisten",
                "tcp",
                "-noreset",
            ])
            .args([
                "+extension",
                "XTEST",
                "+extension",
                "DAMAGE",
                "+extension",
                "RANDR",
                "+extension",
                "RECORD",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                DesktopError::Unavailable(format!(
                    "cannot start Xvfb: {e} (install it: apt-get install xvfb)"
                ))
            })?;
        // Only Xvfb may hold the write end, so EOF tells us it died.
        drop(write_end);
        let mut owned = Self {
            display: String::new(),
            xvfb,
            wm: None,
        };
        let mut file = std::fs::File::from(read_end);
        // Xvfb writes "N\n" once it accepts connections; read up to the newline.
        let mut number = Vec::new();
        let mut byte = [0u8; 1];
        while let Ok(1) = file.read(&mut byte) {
            if byte[0] == b'\n' {
                break;
            }
            number.push(byte[0]);
        }
        let number = String::from_utf8_lossy(&number);
        let number = number.trim();
        if number.is_empty() {
            return Err(DesktopError::Unavailable("Xvfb exited before it was ready; run `Xvfb -screen 0 1280x960x24` by hand to see why".into()));
        }
        owned.display = format!(":{number}");
        if !window_manager.is_empty() {
            owned.wm = Some(owned.start_wm(window_manager)?);
        }
        Ok(owned)
    }

    fn start_wm(&self, program: &str) -> Result<Child, DesktopError> {
        let child = Command::new(program)
            .env("DISPLAY", &self.display)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| DesktopError::Unavailable(format!("cannot start window manager {program}: {e} (set desktop.window_manager = \"\" to run without one)")))?;
        wait_for_wm(&self.display, Duration::from_secs(10));
        Ok(child)
    }
}

/// Waits until a window manager advertises itself (`_NET_SUPPORTING_WM_CHECK`).
fn wait_for_wm(x_display: &str, timeout: Duration) {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{AtomEnum, ConnectionExt as _};
    let Ok((conn, n)) = x11rb::rust_connection::RustConnection::connect(Some(x_display)) else {
        return;
    };
    let root = conn.setup().roots[n].root;
    let Ok(atom) = super::x11::intern_atoms(&conn, ["_NET_SUPPORTING_WM_CHECK"]) else {
        return;
    };
    let start = Instant::now();
    while start.elapsed() < timeout {
        let ready = conn
            .get_property(false, root, atom[0], AtomEnum::WINDOW, 0, 1)
            .ok()
            .and_then(|c| c.reply().ok())
            .is_some_and(|r| r.value_len > 0);
        if ready {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::warn!(
        x_display,
        "window manager did not announce itself within {timeout:?}"
    );
}

impl Drop for OwnedX {
    fn drop(&mut self) {
        if let Some(wm) = &mut self.wm {
            let _ = wm.kill();
            let _ = wm.wait();
        }
        let _ = self.xvfb.kill();
        let _ = self.xvfb.wait();
    }
}

/// A pipe whose write end is inherited by children (no CLOEXEC).
fn pipe() -> Result<(OwnedFd, OwnedFd), DesktopError> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for pipe(2) to fill.
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    if rc != 0 {
        return Err(DesktopError::Unavailable(format!(
            "pipe failed: {}",
            std::io::Error::last_os_error()
        )));
    }
    // The read end must not leak into Xvfb, or EOF would never come.
    // SAFETY: fds[0] is the read end pipe(2) just opened.
    unsafe { libc::fcntl(fds[0], libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: both fds were just opened by pipe(2) and are owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
