//! Running a model's computer actions on the desktop.
//!
//! Actions arrive in screen coordinates (the loop has already mapped them from image space)
//! and become the desktop's own actions (`POST /v1/actions`, Bytebot's JSON). Failures come
//! back with the desktop's real reason; nothing is reported as done that was not.

use std::time::Duration;

use bytebot_protocol::action::{
    ClickMouse, DragMouse, MoveMouse, PressKeys, PressMouse, Scroll, TypeKeys, TypeText, Wait,
};
use bytebot_protocol::{Action, Button, Coordinates, Press, ScrollDirection as DeskScroll};
use serde_json::Value;

use crate::desktop::{DesktopClient, DesktopError};
use crate::model::{ComputerAction, MouseButton, Point, ScrollDirection};

/// What running one action produced, besides success.
#[derive(Debug, Clone, PartialEq)]
pub enum Produced {
    /// Nothing to report (the result's screenshot shows the effect).
    Nothing,
    /// Words for the model (the cursor position, say).
    Text(String),
    /// A picture of a screen region instead of the whole screen (zoom).
    Region {
        /// Screen region `(x, y, width, height)`.
        region: (i32, i32, u32, u32),
    },
}

/// Whether the screen may change because of this action, so it is worth waiting for the
/// screen to settle before the screenshot that goes back to the model.
pub fn changes_screen(action: &ComputerAction) -> bool {
    !matches!(
        action,
        ComputerAction::Screenshot
            | ComputerAction::CursorPosition
            | ComputerAction::Wait { .. }
            | ComputerAction::Zoom { .. }
            | ComputerAction::Move { .. }
    )
}

/// Runs one action (in screen coordinates).
pub async fn run(
    desktop: &DesktopClient,
    action: &ComputerAction,
    browser_app: &str,
) -> Result<Produced, DesktopError> {
    match action {
        ComputerAction::Screenshot => Ok(Produced::Nothing),
        ComputerAction::CursorPosition => {
            let result = desktop.actions(&[Action::CursorPosition]).await?;
            let item = first_ok(result)?;
            let at = item.unwrap_or(Value::Null);
            Ok(Produced::Text(format!("The pointer is at {at}")))
        }
        ComputerAction::Zoom { from, to } => {
            let (x, y) = (from.x.min(to.x), from.y.min(to.y));
            let w = from.x.abs_diff(to.x).max(1);
            let h = from.y.abs_diff(to.y).max(1);
            Ok(Produced::Region {
                region: (x, y, w, h),
            })
        }
        ComputerAction::Navigate { url } => {
            let parsed_ok =
                url.starts_with("http://") || url.starts_with("https://") || url == "about:blank";
            if !parsed_ok {
                return Err(DesktopError::Refused {
                    what: "navigating".into(),
                    status: reqwest::StatusCode::BAD_REQUEST,
                    message: format!("\"{url}\" is not an http(s) URL"),
                });
            }
            desktop
                .open_app(browser_app, std::slice::from_ref(url))
                .await?;
            Ok(Produced::Nothing)
        }
        other => {
            let actions = translate(other);
            first_ok(desktop.actions(&actions).await?)?;
            Ok(Produced::Nothing)
        }
    }
}

/// The desktop's answer to the first action, or its failure as an error with the real reason.
fn first_ok(result: bytebot_protocol::BatchResult) -> Result<Option<Value>, DesktopError> {
    if let Some(failed) = result.results.iter().find(|r| !r.ok) {
        return Err(DesktopError::Refused {
            what: failed.action.clone(),
            status: reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            message: failed
                .error
                .clone()
                .unwrap_or_else(|| "failed without a reason".into()),
        });
    }
    Ok(result.results.into_iter().next().and_then(|r| r.result))
}

fn coords(p: Point) -> Coordinates {
    Coordinates {
        x: f64::from(p.x),
        y: f64::from(p.y),
    }
}

fn button(b: MouseButton) -> Button {
    match b {
        MouseButton::Left => Button::Left,
        MouseButton::Right => Button::Right,
        MouseButton::Middle => Button::Middle,
    }
}

/// The desktop actions for an input action. Screenshot, cursor position, zoom and navigate
/// are handled by [`run`] and translate to nothing.
pub fn translate(action: &ComputerAction) -> Vec<Action> {
    match action {
        ComputerAction::Click {
            at,
            button: b,
            count,
            hold_keys,
        } => vec![Action::ClickMouse(ClickMouse {
            coordinates: Some(coords(*at)),
            button: button(*b),
            hold_keys: hold_keys.clone(),
            click_count: u32::from(*count).max(1),
        })],
        ComputerAction::MouseDown { at, button: b } | ComputerAction::MouseUp { at, button: b } => {
            let press = if matches!(action, ComputerAction::MouseDown { .. }) {
                Press::Down
            } else {
                Press::Up
            };
            vec![Action::PressMouse(PressMouse {
                coordinates: at.map(coords),
                button: button(*b),
                press,
            })]
        }
        ComputerAction::Move { at } => vec![Action::MoveMouse(MoveMouse {
            coordinates: coords(*at),
        })],
        ComputerAction::Drag { path, hold_keys } => vec![Action::DragMouse(DragMouse {
            path: path.iter().copied().map(coords).collect(),
            button: Button::Left,
            hold_keys: hold_keys.clone(),
        })],
        ComputerAction::Scroll {
            at,
            direction,
            amount,
            hold_keys,
        } => vec![Action::Scroll(Scroll {
            coordinates: at.map(coords),
            direction: match direction {
                ScrollDirection::Up => DeskScroll::Up,
                ScrollDirection::Down => DeskScroll::Down,
                ScrollDirection::Left => DeskScroll::Left,
                ScrollDirection::Right => DeskScroll::Right,
            },
            scroll_count: (*amount).max(1),
            hold_keys: hold_keys.clone(),
        })],
        ComputerAction::Type { text } => vec![Action::TypeText(TypeText {
            text: text.clone(),
            delay: None,
            sensitive: false,
        })],
        ComputerAction::Key { keys } => vec![Action::TypeKeys(TypeKeys {
            keys: keys.clone(),
            delay: None,
        })],
        ComputerAction::HoldKey { keys, duration_ms } => vec![
            Action::PressKeys(PressKeys {
                keys: keys.clone(),
                press: Press::Down,
            }),
            Action::Wait(Wait {
                duration: *duration_ms,
            }),
            Action::PressKeys(PressKeys {
                keys: keys.clone(),
                press: Press::Up,
            }),
        ],
        ComputerAction::Wait { duration_ms } => vec![Action::Wait(Wait {
            duration: *duration_ms,
        })],
        ComputerAction::Screenshot
        | ComputerAction::CursorPosition
        | ComputerAction::Zoom { .. }
        | ComputerAction::Navigate { .. } => Vec::new(),
    }
}

/// The longest a model may ask to wait or hold keys in one action.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// Refuses actions the desktop would refuse anyway, with a reason the model can act on,
/// before anything runs.
pub fn check(action: &ComputerAction) -> Result<(), String> {
    match action {
        ComputerAction::Wait { duration_ms } | ComputerAction::HoldKey { duration_ms, .. }
            if *duration_ms > MAX_WAIT.as_millis() as u64 =>
        {
            Err(format!(
                "duration {duration_ms} ms is over the {} s limit",
                MAX_WAIT.as_secs()
            ))
        }
        ComputerAction::Drag { path, .. } if path.len() < 2 => {
            Err("a drag needs at least two points".into())
        }
        ComputerAction::Key { keys } | ComputerAction::HoldKey { keys, .. } if keys.is_empty() => {
            Err("no keys given".into())
        }
        ComputerAction::Click { count, .. } if !(1..=3).contains(count) => {
            Err(format!("click count {count} is not 1, 2 or 3"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_double_click_becomes_one_click_mouse_with_count_two() {
        let a = ComputerAction::Click {
            at: Point { x: 10, y: 20 },
            button: MouseButton::Right,
            count: 2,
            hold_keys: vec!["shift".into()],
        };
        let v = serde_json::to_value(translate(&a)).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"action":"click_mouse","coordinates":{"x":10.0,"y":20.0},"button":"right","holdKeys":["shift"],"clickCount":2}])
        );
    }

    #[test]
    fn hold_key_presses_waits_and_releases() {
        let a = ComputerAction::HoldKey {
            keys: vec!["shift".into()],
            duration_ms: 500,
        };
        let names: Vec<&str> = translate(&a).iter().map(Action::name).collect();
        assert_eq!(names, ["press_keys", "wait", "press_keys"]);
    }

    #[test]
    fn bad_actions_are_refused_with_a_reason() {
        assert!(
            check(&ComputerAction::Wait {
                duration_ms: 60_000
            })
            .is_err()
        );
        assert!(
            check(&ComputerAction::Drag {
                path: vec![],
                hold_keys: vec![]
            })
            .is_err()
        );
        assert!(check(&ComputerAction::Key { keys: vec![] }).is_err());
        assert!(check(&ComputerAction::Wait { duration_ms: 10 }).is_ok());
    }
}
