//! Launching and focusing applications from the configured map.

use crate::config::AppSpec;
use crate::desktop::Desktop;
use crate::error::DesktopError;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Focuses the named application's window if it has one, else launches it;
/// `desktop` minimises every window.
pub async fn open(_desktop: &Arc<Desktop>, _apps: &BTreeMap<String, AppSpec>, name: &str) -> Result<(), DesktopError> {
    Err(DesktopError::Failed(format!("cannot open {name}: not implemented yet")))
}
