//! What a person does while they control a task's desktop, and how the model hears of it.
//!
//! While a task is taken over, the worker that ran it keeps its desktop for the person (it
//! claims nothing else there), switches the desktop's input tracking on and stores each input
//! event as a `person_input` event of the task. When the task resumes, the runner turns the
//! events since the take-over into one sentence for the model, in the model's image
//! coordinates.

use std::time::Duration;

use bytebot_protocol::{Button, Control, DesktopEvent, InputEvent, ScrollDirection};
use bytebot_store::TaskEventRow;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::desktop::DesktopClient;
use crate::model::Point;
use crate::screen::Scale;
use crate::service::Agent;

/// Event kind of one recorded input.
pub const PERSON_INPUT: &str = "person_input";

/// How often a holding worker checks whether the person handed back.
const HOLD_POLL: Duration = Duration::from_millis(300);

/// Most actions spelled out for the model; the rest are counted.
const MAX_DESCRIBED: usize = 40;

/// Keeps `desktop` for the person who took task `id` over, recording their input, until they
/// hand back, the task ends, or `shutdown` turns true.
pub async fn hold(
    agent: &Agent,
    desktop: &DesktopClient,
    id: &str,
    shutdown: &mut watch::Receiver<bool>,
) {
    if let Err(e) = desktop.input_tracking(true).await {
        tracing::warn!(task = %id, error = %e, "cannot record the person's input; their actions will not be in the history");
    }
    let mut events = match desktop.events().await {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::warn!(task = %id, error = %e, "cannot read the desktop's events");
            None
        }
    };
    let mut poll = tokio::time::interval(HOLD_POLL);
    loop {
        let next = async {
            match events.as_mut() {
                Some(stream) => stream.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = next => match event {
                Some(DesktopEvent::Input { event, at_ms }) if worth_telling(&event) => {
                    let mut data = serde_json::to_value(&event).unwrap_or(Value::Null);
                    data["at_ms"] = json!(at_ms);
                    agent.publish(id, PERSON_INPUT, data).await;
                }
                Some(_) => {}
                // The stream ended (the desktop restarted): keep holding, stop recording.
                None => events = None,
            },
            _ = poll.tick() => {
                let still_theirs = matches!(
                    agent.store.get_agent_task(id).await,
                    Ok(Some(t)) if t.control == Control::User && !t.status.is_terminal()
                );
                if !still_theirs {
                    break;
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    if let Err(e) = desktop.input_tracking(false).await {
        tracing::debug!(task = %id, error = %e, "cannot stop input tracking");
    }
}

/// Pointer motion and key releases say nothing a press does not.
fn worth_telling(e: &InputEvent) -> bool {
    match e {
        InputEvent::MouseMove { .. } => false,
        InputEvent::Button { down, .. } | InputEvent::Key { down, .. } => *down,
        InputEvent::Scroll { .. } => true,
    }
}

/// The events after the last take-over (`control` USER), described for the model; `None` when
/// the person did nothing we saw. Points are mapped to the model's image with `scale`.
pub fn describe(events: &[TaskEventRow], scale: Option<Scale>) -> Option<String> {
    let since = events
        .iter()
        .rposition(|e| e.kind == "control" && e.data["control"] == "USER")?;
    let inputs: Vec<InputEvent> = events[since..]
        .iter()
        .filter(|e| e.kind == PERSON_INPUT)
        .filter_map(|e| serde_json::from_value(e.data.clone()).ok())
        .collect();
    let mut said: Vec<String> = Vec::new();
    let mut typed = String::new();
    let mut held: Vec<&str> = Vec::new();
    let at = |x: f64, y: f64| {
        let p = Point {
            x: x.round() as i32,
            y: y.round() as i32,
        };
        let p = scale.map_or(p, |s| s.to_image(p));
        format!("({}, {})", p.x, p.y)
    };
    let flush = |typed: &mut String, said: &mut Vec<String>| {
        if !typed.is_empty() {
            said.push(format!("typed {typed:?}"));
            typed.clear();
        }
    };
    for input in &inputs {
        match input {
            // Shift only changes the character, which the key's name already says.
            InputEvent::Key { key, .. } if key.starts_with("Shift") => {}
            InputEvent::Key { key, .. } if is_modifier(key) => held.push(modifier_name(key)),
            InputEvent::Key { key, .. } => {
                let chord = !held.is_empty();
                match typed_char(key) {
                    Some(c) if !chord => typed.push(c),
                    _ => {
                        flush(&mut typed, &mut said);
                        let mut combo: Vec<&str> = std::mem::take(&mut held);
                        combo.dedup();
                        combo.push(key);
                        said.push(format!("pressed {}", combo.join("+")));
                    }
                }
            }
            InputEvent::Button {
                button,
                coordinates,
                ..
            } => {
                flush(&mut typed, &mut said);
                held.clear();
                let which = match button {
                    Button::Left => "left",
                    Button::Right => "right",
                    Button::Middle => "middle",
                };
                said.push(format!(
                    "{which}-clicked at {}",
                    at(coordinates.x, coordinates.y)
                ));
            }
            InputEvent::Scroll {
                direction,
                coordinates,
            } => {
                flush(&mut typed, &mut said);
                let way = match direction {
                    ScrollDirection::Up => "up",
                    ScrollDirection::Down => "down",
                    ScrollDirection::Left => "left",
                    ScrollDirection::Right => "right",
                };
                said.push(format!(
                    "scrolled {way} at {}",
                    at(coordinates.x, coordinates.y)
                ));
            }
            InputEvent::MouseMove { .. } => {}
        }
    }
    flush(&mut typed, &mut said);
    if said.is_empty() {
        return None;
    }
    let more = said.len().saturating_sub(MAX_DESCRIBED);
    said.truncate(MAX_DESCRIBED);
    let mut text = format!(
        "While a person had control, they (in this screenshot's coordinates): {}.",
        said.join("; ")
    );
    if more > 0 {
        text.push_str(&format!(" (and {more} more actions)"));
    }
    Some(text)
}

fn is_modifier(key: &str) -> bool {
    matches!(
        key,
        "Control_L" | "Control_R" | "Alt_L" | "Alt_R" | "Super_L" | "Super_R" | "Meta_L" | "Meta_R"
    )
}

fn modifier_name(key: &str) -> &'static str {
    match key.split('_').next() {
        Some("Control") => "Ctrl",
        Some("Alt") | Some("Meta") => "Alt",
        _ => "Super",
    }
}

/// The character a key press types, for keys named by the character itself (`a`, `7`) and
/// the few common named ones.
fn typed_char(key: &str) -> Option<char> {
    let mut chars = key.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c),
        _ => match key {
            "space" => Some(' '),
            "period" => Some('.'),
            "comma" => Some(','),
            "minus" => Some('-'),
            "slash" => Some('/'),
            "at" => Some('@'),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn row(id: i64, kind: &str, data: Value) -> TaskEventRow {
        TaskEventRow {
            id,
            task_id: "t".into(),
            kind: kind.into(),
            data,
            created_at: id,
        }
    }

    fn key(id: i64, k: &str) -> TaskEventRow {
        row(
            id,
            PERSON_INPUT,
            json!({"kind": "key", "key": k, "down": true}),
        )
    }

    #[test]
    fn clicks_typing_and_chords_read_as_one_sentence_in_image_space() {
        let events = vec![
            row(
                1,
                PERSON_INPUT,
                json!({"kind": "key", "key": "x", "down": true}),
            ),
            row(2, "control", json!({"control": "USER"})),
            row(
                3,
                PERSON_INPUT,
                json!({"kind": "button", "button": "left", "down": true, "coordinates": {"x": 200.0, "y": 100.0}}),
            ),
            key(4, "h"),
            key(5, "i"),
            key(6, "space"),
            key(7, "Shift_L"),
            key(8, "A"),
            key(9, "Return"),
            key(10, "Control_L"),
            key(11, "s"),
        ];
        let scale = Scale {
            screen: (2000, 1000),
            image: (1000, 500),
        };
        let text = describe(&events, Some(scale)).unwrap();
        assert_eq!(
            text,
            "While a person had control, they (in this screenshot's coordinates): left-clicked at (100, 50); typed \"hi A\"; pressed Return; pressed Ctrl+s."
        );
    }

    #[test]
    fn nothing_seen_or_no_take_over_says_nothing() {
        assert_eq!(describe(&[key(1, "a")], None), None);
        let only_control = vec![row(1, "control", json!({"control": "USER"}))];
        assert_eq!(describe(&only_control, None), None);
    }
}
