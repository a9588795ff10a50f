//! The audit log: one JSON line per decision (authentication, policy,
//! plan, approval, execution), appended to a file and never holding
//! secrets or file contents.

use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// Appends audit lines to a file (and to the `audit` tracing target).
pub struct AuditLog {
    file: Mutex<std::fs::File>,
}

impl AuditLog {
    /// Opens (creating, 0600) the audit file for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    /// Records one decision. `fields` must not contain secrets.
    pub fn record(&self, decision: &str, key_id: Option<&str>, fields: Value) {
        let mut line = json!({
            "ts_ms": crate::events::now_ms(),
            "decision": decision,
            "key_id": key_id,
        });
        if let (Some(obj), Value::Object(extra)) = (line.as_object_mut(), fields) {
            obj.extend(extra);
        }
        let mut text = line.to_string();
        text.push('\n');
        tracing::debug!(target: "audit", "{}", text.trim_end());
        match self.file.lock() {
            Ok(mut f) => {
                if let Err(e) = f.write_all(text.as_bytes()) {
                    tracing::error!(error = %e, "cannot write the audit log");
                }
            }
            Err(_) => tracing::error!("audit log lock poisoned"),
        }
    }
}
