//! Helpers shared by the integration tests.

pub mod db;
pub mod pg;
