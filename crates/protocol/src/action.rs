//! The sixteen computer-use actions, in the exact JSON shapes of Bytebot's
//! daemon (`POST /computer-use`): `{"action": "click_mouse", ...}` with
//! camelCase fields.
//!
//! Parsing goes through [`parse_action`] rather than a plain serde derive on
//! the tagged enum, because an internally tagged enum loses the path of a bad
//! field; here every error names the field (`coordinates.x`) and what is allowed.

use crate::error::ActionError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A point on the screen in pixels. Bytebot sends JSON numbers, which may be
/// fractional; they are rounded to the nearest pixel when used.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Coordinates {
    /// Horizontal position, 0 at the left edge.
    pub x: f64,
    /// Vertical position, 0 at the top edge.
    pub y: f64,
}

/// A mouse button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Button {
    /// The primary button (X button 1).
    Left,
    /// The secondary button (X button 3).
    Right,
    /// The wheel button (X button 2).
    Middle,
}

/// Whether a button or key goes down or comes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Press {
    /// Release.
    Up,
    /// Press and hold.
    Down,
}

/// Which way to scroll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScrollDirection {
    /// Wheel away from the user (X button 4).
    Up,
    /// Wheel toward the user (X button 5).
    Down,
    /// Horizontal wheel left (X button 6).
    Left,
    /// Horizontal wheel right (X button 7).
    Right,
}

/// `move_mouse`: put the pointer at a point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoveMouse {
    /// Where to move to.
    pub coordinates: Coordinates,
}

/// `trace_mouse`: move through each point in turn, holding keys meanwhile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceMouse {
    /// Points to pass through, in order.
    pub path: Vec<Coordinates>,
    /// Keys held down for the whole movement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hold_keys: Vec<String>,
}

/// `click_mouse`: click a button, at a point or where the pointer is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClickMouse {
    /// Where to click; the current pointer position when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinates: Option<Coordinates>,
    /// Which button.
    pub button: Button,
    /// Keys held down around the click (e.g. `["LeftShift"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hold_keys: Vec<String>,
    /// 1 for a click, 2 for a double click, and so on.
    pub click_count: u32,
}

/// `press_mouse`: press or release a button without the other half.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PressMouse {
    /// Where to move first; the current position when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinates: Option<Coordinates>,
    /// Which button.
    pub button: Button,
    /// Down or up.
    pub press: Press,
}

/// `drag_mouse`: press at the first point, move through all, release at the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DragMouse {
    /// At least two points.
    pub path: Vec<Coordinates>,
    /// Which button to hold.
    pub button: Button,
    /// Keys held down for the whole drag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hold_keys: Vec<String>,
}

/// `scroll`: turn the wheel a number of notches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scroll {
    /// Where to move first; the current position when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinates: Option<Coordinates>,
    /// Which way.
    pub direction: ScrollDirection,
    /// How many notches.
    pub scroll_count: u32,
    /// Keys held down while scrolling (e.g. `["ctrl"]` to zoom).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hold_keys: Vec<String>,
}

/// `type_keys`: press all keys in order and release them in reverse: a chord.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeKeys {
    /// Key names: nut-js names, X keysym names, or `ctrl+shift+t` combos.
    pub keys: Vec<String>,
    /// Pause between key events in milliseconds; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<u64>,
}

/// `press_keys`: hold keys down or release them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PressKeys {
    /// Key names as for `type_keys`.
    pub keys: Vec<String>,
    /// Down or up.
    pub press: Press,
}

/// `type_text`: type any Unicode text as key presses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeText {
    /// The text; any Unicode, newlines become Return and tabs Tab.
    pub text: String,
    /// Pause between characters in milliseconds; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<u64>,
    /// When true the text is never written to logs or events.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
}

/// `paste_text`: put text on the clipboard and press Ctrl+V.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasteText {
    /// The text to paste.
    pub text: String,
}

/// `wait`: do nothing for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wait {
    /// How long, in milliseconds.
    pub duration: u64,
}

/// `application`: focus an application if it runs, else launch it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    /// A name from the daemon's application map (`firefox`, `terminal`, ...);
    /// `desktop` minimises every window.
    pub application: String,
}

/// `write_file`: write base64 data to a file in the workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteFile {
    /// Path relative to the workspace (or absolute inside it).
    pub path: String,
    /// The file's content, base64 encoded.
    pub data: String,
}

/// `read_file`: read a file of the workspace as base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadFile {
    /// Path relative to the workspace (or absolute inside it).
    pub path: String,
}

/// One computer-use action; serialises as Bytebot's `{"action": name, ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// See [`MoveMouse`].
    MoveMouse(MoveMouse),
    /// See [`TraceMouse`].
    TraceMouse(TraceMouse),
    /// See [`ClickMouse`].
    ClickMouse(ClickMouse),
    /// See [`PressMouse`].
    PressMouse(PressMouse),
    /// See [`DragMouse`].
    DragMouse(DragMouse),
    /// See [`Scroll`].
    Scroll(Scroll),
    /// See [`TypeKeys`].
    TypeKeys(TypeKeys),
    /// See [`PressKeys`].
    PressKeys(PressKeys),
    /// See [`TypeText`].
    TypeText(TypeText),
    /// See [`PasteText`].
    PasteText(PasteText),
    /// See [`Wait`].
    Wait(Wait),
    /// Capture the screen as a base64 PNG.
    Screenshot,
    /// Report where the pointer is.
    CursorPosition,
    /// See [`Application`].
    Application(Application),
    /// See [`WriteFile`].
    WriteFile(WriteFile),
    /// See [`ReadFile`].
    ReadFile(ReadFile),
}

/// Every action name, in the order of the spec.
pub const ACTION_NAMES: [&str; 16] = [
    "move_mouse",
    "trace_mouse",
    "click_mouse",
    "press_mouse",
    "drag_mouse",
    "scroll",
    "type_keys",
    "press_keys",
    "type_text",
    "paste_text",
    "wait",
    "screenshot",
    "cursor_position",
    "application",
    "write_file",
    "read_file",
];

impl Action {
    /// The action's wire name, e.g. `click_mouse`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::MoveMouse(_) => "move_mouse",
            Action::TraceMouse(_) => "trace_mouse",
            Action::ClickMouse(_) => "click_mouse",
            Action::PressMouse(_) => "press_mouse",
            Action::DragMouse(_) => "drag_mouse",
            Action::Scroll(_) => "scroll",
            Action::TypeKeys(_) => "type_keys",
            Action::PressKeys(_) => "press_keys",
            Action::TypeText(_) => "type_text",
            Action::PasteText(_) => "paste_text",
            Action::Wait(_) => "wait",
            Action::Screenshot => "screenshot",
            Action::CursorPosition => "cursor_position",
            Action::Application(_) => "application",
            Action::WriteFile(_) => "write_file",
            Action::ReadFile(_) => "read_file",
        }
    }

    /// Checks counts, durations and sizes against `limits`; screen bounds and
    /// key names are checked by the desktop, which knows the screen and keymap.
    pub fn validate(&self, limits: &Limits) -> Result<(), ActionError> {
        match self {
            Action::TraceMouse(a) => check_path("path", &a.path, 1, limits),
            Action::DragMouse(a) => check_path("path", &a.path, 2, limits),
            Action::ClickMouse(a) => check_range(
                "clickCount",
                a.click_count.into(),
                1,
                limits.max_click_count.into(),
            ),
            Action::Scroll(a) => check_range(
                "scrollCount",
                a.scroll_count.into(),
                1,
                limits.max_scroll_count.into(),
            ),
            Action::TypeKeys(a) => {
                check_keys(&a.keys)?;
                check_delay("delay", a.delay, limits)
            }
            Action::PressKeys(a) => check_keys(&a.keys),
            Action::TypeText(a) => {
                check_text("text", &a.text, limits)?;
                check_delay("delay", a.delay, limits)
            }
            Action::PasteText(a) => check_text("text", &a.text, limits),
            Action::Wait(a) => check_range("duration", a.duration, 0, limits.max_wait_ms),
            Action::Application(a) if a.application.trim().is_empty() => Err(ActionError::field(
                "application",
                "must name an application, e.g. \"firefox\" or \"terminal\"",
            )),
            Action::WriteFile(a) => {
                // base64 is 4 bytes per 3; reject before decoding so a huge body costs nothing.
                let padding = a.data.bytes().rev().take(2).filter(|&b| b == b'=').count();
                let decoded_len = (a.data.len() / 4 * 3).saturating_sub(padding);
                if decoded_len > limits.max_file_bytes {
                    return Err(ActionError::field(
                        "data",
                        format!(
                            "file is about {decoded_len} bytes, over the limit of {} bytes (desktop.max_file_bytes)",
                            limits.max_file_bytes
                        ),
                    ));
                }
                check_path_string(&a.path)
            }
            Action::ReadFile(a) => check_path_string(&a.path),
            _ => Ok(()),
        }
    }
}

/// Upper bounds that keep one request from tying up the desktop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Longest `type_text`/`paste_text` text, in characters.
    pub max_text_chars: usize,
    /// Largest file for `write_file`/`read_file`, in bytes.
    pub max_file_bytes: usize,
    /// Longest `wait`, in milliseconds.
    pub max_wait_ms: u64,
    /// Longest per-key `delay`, in milliseconds.
    pub max_delay_ms: u64,
    /// Most clicks in one `click_mouse`.
    pub max_click_count: u32,
    /// Most notches in one `scroll`.
    pub max_scroll_count: u32,
    /// Most points in a `trace_mouse`/`drag_mouse` path.
    pub max_path_points: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_text_chars: 100_000,
            max_file_bytes: 64 * 1024 * 1024,
            max_wait_ms: 60_000,
            max_delay_ms: 1_000,
            max_click_count: 10,
            max_scroll_count: 200,
            max_path_points: 10_000,
        }
    }
}

fn check_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), ActionError> {
    if value < min || value > max {
        return Err(ActionError::field(
            field,
            format!("{value} is out of range; expected {min} to {max}"),
        ));
    }
    Ok(())
}

fn check_delay(field: &str, delay: Option<u64>, limits: &Limits) -> Result<(), ActionError> {
    match delay {
        Some(d) => check_range(field, d, 0, limits.max_delay_ms),
        None => Ok(()),
    }
}

fn check_path(
    field: &str,
    path: &[Coordinates],
    min: usize,
    limits: &Limits,
) -> Result<(), ActionError> {
    if path.len() < min || path.len() > limits.max_path_points {
        return Err(ActionError::field(
            field,
            format!(
                "has {} points; expected {min} to {}",
                path.len(),
                limits.max_path_points
            ),
        ));
    }
    Ok(())
}

fn check_keys(keys: &[String]) -> Result<(), ActionError> {
    if keys.is_empty() {
        return Err(ActionError::field(
            "keys",
            "is empty; name at least one key, e.g. [\"ctrl\", \"c\"] or [\"Enter\"]",
        ));
    }
    Ok(())
}

fn check_text(field: &str, text: &str, limits: &Limits) -> Result<(), ActionError> {
    // Count bytes first: a string can't have more chars than bytes, so most
    // texts never need the slower char count.
    if text.len() > limits.max_text_chars && text.chars().count() > limits.max_text_chars {
        return Err(ActionError::field(
            field,
            format!(
                "text is {} characters, over the limit of {} (desktop.max_text_chars)",
                text.chars().count(),
                limits.max_text_chars
            ),
        ));
    }
    Ok(())
}

fn check_path_string(path: &str) -> Result<(), ActionError> {
    if path.is_empty() {
        return Err(ActionError::field(
            "path",
            "is empty; give a file path inside the workspace",
        ));
    }
    if path.contains('\0') {
        return Err(ActionError::field("path", "contains a NUL byte"));
    }
    Ok(())
}

/// Parses one action from its JSON object, naming the offending field on error.
pub fn parse_action(value: Value) -> Result<Action, ActionError> {
    let name = match value.get("action") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ActionError::field(
                "action",
                format!(
                    "must be a string, got {}; {}",
                    json_kind(other),
                    expected_actions()
                ),
            ));
        }
        None if value.is_object() => {
            return Err(ActionError::field(
                "action",
                format!("is missing; {}", expected_actions()),
            ));
        }
        None => {
            return Err(ActionError {
                field: None,
                message: format!(
                    "the body must be a JSON object like {{\"action\": \"screenshot\"}}, got {}",
                    json_kind(&value)
                ),
            });
        }
    };
    Ok(match name.as_str() {
        "move_mouse" => Action::MoveMouse(fields(value)?),
        "trace_mouse" => Action::TraceMouse(fields(value)?),
        "click_mouse" => Action::ClickMouse(fields(value)?),
        "press_mouse" => Action::PressMouse(fields(value)?),
        "drag_mouse" => Action::DragMouse(fields(value)?),
        "scroll" => Action::Scroll(fields(value)?),
        "type_keys" => Action::TypeKeys(fields(value)?),
        "press_keys" => Action::PressKeys(fields(value)?),
        "type_text" => Action::TypeText(fields(value)?),
        "paste_text" => Action::PasteText(fields(value)?),
        "wait" => Action::Wait(fields(value)?),
        "screenshot" => Action::Screenshot,
        "cursor_position" => Action::CursorPosition,
        "application" => Action::Application(fields(value)?),
        "write_file" => Action::WriteFile(fields(value)?),
        "read_file" => Action::ReadFile(fields(value)?),
        other => {
            return Err(ActionError::field(
                "action",
                format!("unknown action \"{other}\"; {}", expected_actions()),
            ));
        }
    })
}

fn expected_actions() -> String {
    format!("expected one of: {}", ACTION_NAMES.join(", "))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn fields<T: DeserializeOwned>(value: Value) -> Result<T, ActionError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        // serde reports a missing field at the parent's path; name the field itself.
        let field = match missing_field(&inner) {
            Some(name) if path == "." => name.to_string(),
            Some(name) => format!("{path}.{name}"),
            None => path,
        };
        let message = match missing_field(&inner) {
            Some(_) => "is required".to_string(),
            None => inner,
        };
        ActionError::field(field, message)
    })
}

fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> ActionError {
        match parse_action(v) {
            Err(e) => e,
            Ok(a) => panic!("expected an error, parsed {a:?}"),
        }
    }

    #[test]
    fn parses_every_action_from_bytebot_json() {
        let samples = [
            json!({"action": "move_mouse", "coordinates": {"x": 10, "y": 20}}),
            json!({"action": "trace_mouse", "path": [{"x": 1, "y": 2}], "holdKeys": ["shift"]}),
            json!({"action": "click_mouse", "button": "left", "clickCount": 2}),
            json!({"action": "press_mouse", "button": "right", "press": "down", "coordinates": {"x": 1.5, "y": 2}}),
            json!({"action": "drag_mouse", "path": [{"x": 1, "y": 2}, {"x": 3, "y": 4}], "button": "left"}),
            json!({"action": "scroll", "direction": "down", "scrollCount": 3}),
            json!({"action": "type_keys", "keys": ["LeftControl", "C"], "delay": 10}),
            json!({"action": "press_keys", "keys": ["LeftShift"], "press": "down"}),
            json!({"action": "type_text", "text": "héllo 世界", "sensitive": true}),
            json!({"action": "paste_text", "text": "x"}),
            json!({"action": "wait", "duration": 500}),
            json!({"action": "screenshot"}),
            json!({"action": "cursor_position"}),
            json!({"action": "application", "application": "firefox"}),
            json!({"action": "write_file", "path": "a.txt", "data": "aGk="}),
            json!({"action": "read_file", "path": "a.txt"}),
        ];
        for (sample, name) in samples.iter().zip(ACTION_NAMES) {
            let action = parse_action(sample.clone()).unwrap();
            assert_eq!(action.name(), name);
            action.validate(&Limits::default()).unwrap();
            // Serialising gives back the same wire name and camelCase fields.
            let back = serde_json::to_value(&action).unwrap();
            assert_eq!(back["action"], name);
            assert_eq!(parse_action(back).unwrap(), action);
        }
    }

    #[test]
    fn unknown_action_lists_the_allowed_ones() {
        let e = err(json!({"action": "fly"}));
        assert_eq!(e.field.as_deref(), Some("action"));
        assert!(e.message.contains("unknown action \"fly\""), "{e}");
        assert!(e.message.contains("click_mouse"), "{e}");
    }

    #[test]
    fn missing_action_and_non_object_bodies_are_explained() {
        assert_eq!(err(json!({})).field.as_deref(), Some("action"));
        assert!(
            err(json!({"action": 3}))
                .message
                .contains("must be a string")
        );
        let e = err(json!([1, 2]));
        assert!(e.message.contains("JSON object"), "{e}");
    }

    #[test]
    fn missing_field_is_named() {
        let e = err(json!({"action": "click_mouse", "button": "left"}));
        assert_eq!(e.field.as_deref(), Some("clickCount"));
        assert_eq!(e.message, "is required");
        let e = err(json!({"action": "move_mouse", "coordinates": {"x": 1}}));
        assert_eq!(e.field.as_deref(), Some("coordinates.y"));
    }

    #[test]
    fn wrong_type_is_named_with_its_path() {
        let e = err(json!({"action": "move_mouse", "coordinates": {"x": "ten", "y": 1}}));
        assert_eq!(e.field.as_deref(), Some("coordinates.x"));
        assert!(e.message.contains("invalid type"), "{e}");
        let e = err(json!({"action": "type_keys", "keys": ["a", 5]}));
        assert_eq!(e.field.as_deref(), Some("keys[1]"));
        let e = err(json!({"action": "click_mouse", "button": "side", "clickCount": 1}));
        assert_eq!(e.field.as_deref(), Some("button"));
        assert!(e.message.contains("left"), "{e}");
    }

    #[test]
    fn negative_and_huge_counts_are_refused() {
        let e = err(json!({"action": "click_mouse", "button": "left", "clickCount": -1}));
        assert_eq!(e.field.as_deref(), Some("clickCount"));
        let limits = Limits::default();
        let a =
            parse_action(json!({"action": "click_mouse", "button": "left", "clickCount": 1000}))
                .unwrap();
        assert_eq!(
            a.validate(&limits).unwrap_err().field.as_deref(),
            Some("clickCount")
        );
        let a = parse_action(json!({"action": "wait", "duration": 99_999_999})).unwrap();
        assert_eq!(
            a.validate(&limits).unwrap_err().field.as_deref(),
            Some("duration")
        );
        let a =
            parse_action(json!({"action": "scroll", "direction": "up", "scrollCount": 0})).unwrap();
        assert_eq!(
            a.validate(&limits).unwrap_err().field.as_deref(),
            Some("scrollCount")
        );
        let a =
            parse_action(json!({"action": "type_text", "text": "a", "delay": 100_000})).unwrap();
        assert_eq!(
            a.validate(&limits).unwrap_err().field.as_deref(),
            Some("delay")
        );
    }

    #[test]
    fn text_and_file_caps_apply() {
        let limits = Limits {
            max_text_chars: 3,
            max_file_bytes: 3,
            ..Limits::default()
        };
        let a = parse_action(json!({"action": "type_text", "text": "abcd"})).unwrap();
        assert!(
            a.validate(&limits)
                .unwrap_err()
                .message
                .contains("over the limit")
        );
        // Three multi-byte characters are within a three-character cap.
        let a = parse_action(json!({"action": "type_text", "text": "世界!"})).unwrap();
        a.validate(&limits).unwrap();
        let a =
            parse_action(json!({"action": "write_file", "path": "x", "data": "aGVsbG8gd29ybGQ="}))
                .unwrap();
        assert_eq!(
            a.validate(&limits).unwrap_err().field.as_deref(),
            Some("data")
        );
        // Exactly at the cap is allowed: "abc" is 3 bytes, "aGk=" is 2.
        let at_cap = Limits {
            max_file_bytes: 2,
            ..Limits::default()
        };
        parse_action(json!({"action": "write_file", "path": "x", "data": "aGk="}))
            .unwrap()
            .validate(&at_cap)
            .unwrap();
    }

    #[test]
    fn empty_inputs_are_refused() {
        let limits = Limits::default();
        for v in [
            json!({"action": "type_keys", "keys": []}),
            json!({"action": "drag_mouse", "path": [{"x": 1, "y": 1}], "button": "left"}),
            json!({"action": "read_file", "path": ""}),
            json!({"action": "application", "application": " "}),
        ] {
            let a = parse_action(v.clone()).unwrap();
            assert!(a.validate(&limits).is_err(), "{v} should be refused");
        }
    }

    #[test]
    fn within_prefixes_batch_positions() {
        let e = ActionError::field("coordinates.x", "bad").within("actions[2]");
        assert_eq!(e.field.as_deref(), Some("actions[2].coordinates.x"));
    }
}
