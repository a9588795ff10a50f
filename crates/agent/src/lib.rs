//! The agent: turns a person's request into desktop actions.
//!
//! A task is a loop of model call → tool calls → desktop actions → screenshot, each step
//! committed to the store before the next begins. Providers (`providers/`) translate between
//! the neutral conversation of [`model`] and each vendor's wire format; nothing outside
//! `providers/` knows a wire format.

pub mod act;
pub mod desktop;
pub mod model;
pub mod providers;
pub mod screen;
pub mod tools;
