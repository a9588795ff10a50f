//! The agent: turns a person's request into desktop actions.
//!
//! A task is a loop of model call → tool calls → desktop actions → screenshot, each step
//! committed to the store before the next begins (`runner.rs`). Workers claim tasks from the
//! store's queue with a lease (`worker.rs`); the task API and live event streams are in
//! `api.rs`. Providers (`providers/`) translate between the neutral conversation of [`model`]
//! and each vendor's wire format; nothing outside `providers/` knows a wire format.

pub mod act;
pub mod api;
pub mod config;
pub mod context;
pub mod desktop;
pub mod metrics;
pub mod model;
pub mod providers;
pub mod runner;
pub mod screen;
pub mod service;
pub mod takeover;
pub mod tools;
pub mod webhook;
pub mod worker;
