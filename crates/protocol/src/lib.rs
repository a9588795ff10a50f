//! Wire types shared by every bytebot-rs component.
//!
//! Plain serde types and pure validation only: no I/O, no async. The desktop
//! daemon, the agent, the gateway and the CLI all speak these, so a change here
//! is a change to the wire.

pub mod action;
pub mod auth;
pub mod error;
pub mod event;
pub mod result;
pub mod task;

pub use action::{Action, Button, Coordinates, Limits, Press, ScrollDirection, parse_action};
pub use error::{ActionError, ErrorBody};
pub use event::{DesktopEvent, InputEvent};
pub use result::{BatchItem, BatchResult, CursorPosition, FileRead, FileWrite, Screenshot};
pub use task::{Control, Priority, TaskStatus, TaskType};
