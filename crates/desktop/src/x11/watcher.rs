//! Screen-settle detection: a connection of its own listens for XDamage
//! events on the root window and remembers when the screen last changed, so
//! "wait until the screen settles" costs no captures at all.

use crate::error::DesktopError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use x11rb::connection::Connection;
use x11rb::protocol::Event;
use x11rb::protocol::damage::{ConnectionExt as _, ReportLevel};
use x11rb::rust_connection::RustConnection;

/// Shared view of when the screen last changed.
pub struct DamageWatcher {
    epoch: Instant,
    /// Microseconds since `epoch` of the last damage event.
    last_change_us: Arc<AtomicU64>,
    alive: Arc<AtomicBool>,
}

/// How a wait for the screen to settle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Settle {
    /// True when the screen was quiet for the whole quiet period.
    pub settled: bool,
    /// How long the wait took, in milliseconds.
    pub waited_ms: u64,
}

impl DamageWatcher {
    /// Starts watching `display` on a background thread.
    pub fn start(display: &str) -> Result<Self, DesktopError> {
        let (conn, screen_num) = RustConnection::connect(Some(display))?;
        let root = conn.setup().roots[screen_num].root;
        conn.damage_query_version(1, 1)?.reply()?;
        let damage = conn
            .generate_id()
            .map_err(|e| DesktopError::X(e.to_string()))?;
        conn.damage_create(damage, root, ReportLevel::NON_EMPTY)?;
        conn.flush()?;
        let epoch = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let alive = Arc::new(AtomicBool::new(true));
        let (l, a) = (Arc::clone(&last), Arc::clone(&alive));
        std::thread::Builder::new()
            .name("x11-damage".into())
            .spawn(move || {
                loop {
                    match conn.wait_for_event() {
                        Ok(Event::DamageNotify(_)) => {
                            l.store(epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
                            // Re-arm: with NON_EMPTY the server reports again only once the damage is cleared.
                            let rearm = conn
                                .damage_subtract(damage, x11rb::NONE, x11rb::NONE)
                                .map(|_| ())
                                .and_then(|()| conn.flush());
                            if rearm.is_err() {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                a.store(false, Ordering::Relaxed);
            })
            .map_err(|e| DesktopError::Failed(format!("cannot start the damage thread: {e}")))?;
        Ok(Self {
            epoch,
            last_change_us: last,
            alive,
        })
    }

    /// Whether the watcher's connection is still up.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// Time since the screen last changed.
    pub fn quiet_for(&self) -> Duration {
        let last = Duration::from_micros(self.last_change_us.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    /// Waits until the screen has not changed for `quiet`, or `timeout` passes.
    pub async fn settle(&self, quiet: Duration, timeout: Duration) -> Settle {
        let start = Instant::now();
        loop {
            let quiet_for = self.quiet_for();
            if quiet_for >= quiet {
                return Settle {
                    settled: true,
                    waited_ms: start.elapsed().as_millis() as u64,
                };
            }
            if start.elapsed() >= timeout {
                return Settle {
                    settled: false,
                    waited_ms: start.elapsed().as_millis() as u64,
                };
            }
            let remaining_quiet = quiet - quiet_for;
            let remaining_time = timeout.saturating_sub(start.elapsed());
            tokio::time::sleep(
                remaining_quiet
                    .min(remaining_time)
                    .min(Duration::from_millis(20))
                    .max(Duration::from_millis(1)),
            )
            .await;
        }
    }
}
