//! The `[desktop]` section of the config file, with defaults and validation.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// How to launch one application named in the `application` action.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Program and arguments, run directly (never through a shell).
    pub command: Vec<String>,
    /// `WM_CLASS` (instance or class, case-insensitive) that identifies its
    /// window, to focus it instead of launching a second copy.
    #[serde(default)]
    pub window_class: Option<String>,
}

/// Settings of the desktop daemon.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DesktopConfig {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// X display to drive (e.g. `:0`); when unset we start our own Xvfb.
    pub display: Option<String>,
    /// Size of our own Xvfb screen, `WIDTHxHEIGHT`.
    pub resolution: String,
    /// Window manager to start on our own Xvfb; empty for none.
    pub window_manager: String,
    /// Folder that file actions are confined to.
    pub workspace: Option<PathBuf>,
    /// Let clients on 127.0.0.1/::1 in without a token (for Bytebot's own agent).
    pub allow_loopback_without_token: bool,
    /// Longest text for `type_text`/`paste_text`, in characters.
    pub max_text_chars: usize,
    /// Largest file for file actions, in bytes.
    pub max_file_bytes: usize,
    /// Start x11vnc for the live view.
    pub vnc: bool,
    /// Folder with the noVNC client served at `/novnc/`.
    pub novnc_dir: PathBuf,
    /// The tesseract program used for find-text.
    pub tesseract: String,
    /// Tesseract language(s), e.g. `eng` or `eng+deu`.
    pub ocr_lang: String,
    /// Applications the `application` action may launch, by name.
    pub applications: BTreeMap<String, AppSpec>,
}

impl Default for DesktopConfig {
    fn default() -> Self {
        let app = |cmd: &[&str], class: &str| AppSpec {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            window_class: Some(class.to_string()),
        };
        let mut applications = BTreeMap::new();
        applications.insert("firefox".into(), app(&["firefox-esr"], "firefox"));
        applications.insert("chromium".into(), app(&["chromium"], "chromium"));
        applications.insert("thunderbird".into(), app(&["thunderbird"], "thunderbird"));
        applications.insert("vscode".into(), app(&["code"], "code"));
        applications.insert("terminal".into(), app(&["xterm"], "xterm"));
        applications.insert("directory".into(), app(&["pcmanfm"], "pcmanfm"));
        applications.insert("1password".into(), app(&["1password"], "1password"));
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9990)),
            display: None,
            resolution: "1280x960".into(),
            window_manager: "openbox".into(),
            workspace: None,
            allow_loopback_without_token: false,
            max_text_chars: 100_000,
            max_file_bytes: 64 * 1024 * 1024,
            vnc: true,
            novnc_dir: PathBuf::from("/usr/share/novnc"),
            tesseract: "tesseract".into(),
            ocr_lang: "eng".into(),
            applications,
        }
    }
}

/// A config problem: the key (`desktop.resolution`) and what is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl DesktopConfig {
    /// Parses `resolution` into width and height.
    pub fn screen_size(&self) -> Result<(u32, u32), ConfigProblem> {
        parse_resolution(&self.resolution).ok_or_else(|| ConfigProblem {
            key: "desktop.resolution".into(),
            message: format!(
                "\"{}\" is not WIDTHxHEIGHT between 320x200 and 7680x4320 (e.g. \"1280x960\")",
                self.resolution
            ),
        })
    }

    /// Checks values serde can't: ranges, formats, non-empty commands.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, message: String| {
            problems.push(ConfigProblem {
                key: key.into(),
                message,
            })
        };
        if let Err(p) = self.screen_size() {
            bad(&p.key, p.message);
        }
        if let Some(d) = self.display.as_ref().filter(|d| !d.contains(':')) {
            bad(
                "desktop.display",
                format!("\"{d}\" is not an X display name like \":0\" or \":99\""),
            );
        }
        if self.max_text_chars == 0 || self.max_text_chars > 10_000_000 {
            bad(
                "desktop.max_text_chars",
                format!(
                    "{} is out of range; expected 1 to 10000000",
                    self.max_text_chars
                ),
            );
        }
        if self.max_file_bytes == 0 || self.max_file_bytes > 1 << 30 {
            bad(
                "desktop.max_file_bytes",
                format!(
                    "{} is out of range; expected 1 to 1073741824",
                    self.max_file_bytes
                ),
            );
        }
        if self.ocr_lang.is_empty()
            || !self
                .ocr_lang
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '_')
        {
            bad(
                "desktop.ocr_lang",
                format!(
                    "\"{}\" is not a tesseract language list like \"eng\" or \"eng+deu\"",
                    self.ocr_lang
                ),
            );
        }
        for (name, spec) in &self.applications {
            if spec.command.first().is_none_or(|p| p.is_empty()) {
                bad(
                    &format!("desktop.applications.{name}.command"),
                    "is empty; give the program and its arguments, e.g. [\"firefox-esr\"]".into(),
                );
            }
        }
        problems
    }
}

/// `1280x960` → `(1280, 960)`, within sane bounds.
pub fn parse_resolution(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.trim().split_once(['x', 'X'])?;
    let (w, h) = (w.parse::<u32>().ok()?, h.parse::<u32>().ok()?);
    ((320..=7680).contains(&w) && (200..=4320).contains(&h)).then_some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(DesktopConfig::default().validate().is_empty());
        assert_eq!(DesktopConfig::default().screen_size().unwrap(), (1280, 960));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cfg = DesktopConfig {
            resolution: "1280x".into(),
            display: Some("99".into()),
            ocr_lang: "eng;rm".into(),
            ..DesktopConfig::default()
        };
        let keys: Vec<String> = cfg.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            ["desktop.resolution", "desktop.display", "desktop.ocr_lang"]
        );
    }
}
