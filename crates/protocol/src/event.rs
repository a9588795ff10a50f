//! Events the desktop publishes on `/v1/events`.

use crate::action::{Button, Coordinates, ScrollDirection};
use serde::{Deserialize, Serialize};

/// Something a person did on the desktop, observed while input tracking is on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputEvent {
    /// The pointer moved (coalesced: at most one per tracking interval).
    MouseMove {
        /// Where it ended up.
        coordinates: Coordinates,
    },
    /// A button went down or up.
    Button {
        /// Which button.
        button: Button,
        /// True on press, false on release.
        down: bool,
        /// Where the pointer was.
        coordinates: Coordinates,
    },
    /// A wheel notch.
    Scroll {
        /// Which way.
        direction: ScrollDirection,
        /// Where the pointer was.
        coordinates: Coordinates,
    },
    /// A key went down or up.
    Key {
        /// The X keysym name (e.g. `Return`, `a`), or `0x…` when unnamed.
        key: String,
        /// True on press, false on release.
        down: bool,
    },
}

/// One event on the desktop's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DesktopEvent {
    /// A person's input (see [`InputEvent`]).
    Input {
        /// What they did.
        #[serde(flatten)]
        event: InputEvent,
        /// Milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// An action ran through the API.
    Action {
        /// The action's wire name.
        action: String,
        /// Whether it succeeded.
        ok: bool,
        /// How long it took, in microseconds.
        elapsed_us: u64,
    },
    /// Input tracking was switched on or off.
    Tracking {
        /// The new state.
        enabled: bool,
    },
}
