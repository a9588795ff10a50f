//! Turning the stored conversation into what a model is shown.
//!
//! Stored messages are in screen coordinates with images as blob keys. A model gets them with
//! consecutive same-role messages merged (each tool result is stored as its own message so a
//! crash loses none), only the last few screenshots as pictures, and every coordinate mapped
//! into the image space of the screenshots it sees.

use std::collections::HashSet;

use crate::model::{Block, Call, ChatMessage, Role, ToolCall};
use crate::screen::Scale;

/// What replaces a screenshot that fell out of the window of kept images.
pub const PRUNED: &str = "[an older screenshot was removed to save context]";

/// Introduces the summary of earlier steps after the task's description.
pub const SUMMARY_HEADING: &str =
    "Summary of the steps so far (older messages were summarised to save context):\n";

/// Starts the note a person's hand-back adds to the conversation; iterations are counted
/// from the last one, so a resumed task gets its full allowance again.
pub const HANDED_BACK: &str = "[A person handed the task back]";

/// Model calls since the last hand-back (or since the start).
pub fn iterations_since_hand_back(messages: &[ChatMessage]) -> u32 {
    let start = messages
        .iter()
        .rposition(|m| {
            m.role == Role::User
                && matches!(m.content.first(), Some(Block::Text { text }) if text.starts_with(HANDED_BACK))
        })
        .map_or(0, |i| i + 1);
    messages[start..]
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .count() as u32
}

/// Where to cut for a summary: the index of an assistant message (the start of a complete
/// turn) such that the messages from there on fit in `keep_tokens`, keeping at least the last
/// turn. Only messages after `covered` (already summarised) count. `None` when there is nothing
/// worth summarising.
pub fn summary_cut(
    messages: &[ChatMessage],
    ids: &[i64],
    covered: Option<i64>,
    keep_tokens: u64,
) -> Option<usize> {
    let first = ids
        .iter()
        .position(|id| covered.is_none_or(|c| *id > c))
        .unwrap_or(messages.len());
    let starts: Vec<usize> = (first..messages.len())
        .filter(|&i| messages[i].role == Role::Assistant)
        .collect();
    // The newest turn always stays; walk back while what is kept still fits.
    let mut cut = *starts.last()?;
    for &start in starts.iter().rev().skip(1) {
        if estimate_tokens(&messages[start..]) > keep_tokens {
            break;
        }
        cut = start;
    }
    (cut > first).then_some(cut)
}

/// A plain summary of `messages` (appended to `previous`): what the model said and did and
/// what came of it, one line per step, without images. Deterministic and free: no model
/// call, and nothing in it that was not in the conversation.
pub fn summarize(previous: Option<&str>, messages: &[ChatMessage]) -> String {
    fn cut(text: &str, max: usize) -> String {
        match text.char_indices().nth(max) {
            Some((i, _)) => format!("{}…", &text[..i]),
            None => text.to_string(),
        }
    }
    let mut out = previous.map(str::to_string).unwrap_or_default();
    for m in messages {
        for b in &m.content {
            let line = match (m.role, b) {
                (Role::Assistant, Block::Text { text }) => format!("- said: {}", cut(text, 300)),
                (Role::Assistant, Block::ToolCall(c)) => {
                    let what = serde_json::to_string(&c.call).unwrap_or_default();
                    format!("- did: {}", cut(&what, 300))
                }
                (Role::User, Block::ToolResult(r)) => {
                    let text = r.text.as_deref().map(|t| cut(t, 200)).unwrap_or_default();
                    if r.is_error {
                        format!("  → failed: {text}")
                    } else if text.is_empty() {
                        "  → done".to_string()
                    } else {
                        format!("  → {text}")
                    }
                }
                (Role::User, Block::Text { text }) if !text.starts_with(SUMMARY_HEADING) => {
                    format!("- user: {}", cut(text, 300))
                }
                _ => continue,
            };
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// Merges consecutive messages of the same role (state of the last assistant one kept).
pub fn merge_roles(messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    for m in messages {
        match out.last_mut() {
            Some(last) if last.role == m.role => {
                last.content.extend(m.content);
                if m.state.is_some() {
                    last.state = m.state;
                }
            }
            _ => out.push(m),
        }
    }
    out
}

/// Keeps the images of the last `keep` screenshots (in tool results and image blocks) and
/// replaces the older ones with a note. Returns the blob keys still needed.
pub fn prune_images(messages: &mut [ChatMessage], keep: usize) -> Vec<String> {
    let mut seen = 0usize;
    let mut needed = Vec::new();
    for m in messages.iter_mut().rev() {
        for block in m.content.iter_mut().rev() {
            match block {
                Block::ToolResult(r) if r.image.is_some() => {
                    seen += 1;
                    if seen > keep {
                        r.image = None;
                        let note = r
                            .text
                            .take()
                            .map_or_else(|| PRUNED.to_string(), |t| format!("{t}\n{PRUNED}"));
                        r.text = Some(note);
                    } else if let Some(key) = r.image.as_ref().and_then(|i| i.blob.clone()) {
                        needed.push(key);
                    }
                }
                Block::Image { image } => {
                    seen += 1;
                    if seen > keep {
                        *block = Block::Text {
                            text: PRUNED.into(),
                        };
                    } else if let Some(key) = image.blob.clone() {
                        needed.push(key);
                    }
                }
                _ => {}
            }
        }
    }
    needed
}

/// Maps every coordinate in tool calls with `f` (screen → image before a model call, image →
/// screen after it).
pub fn map_calls(
    content: &mut [Block],
    f: impl Fn(crate::model::Point) -> crate::model::Point + Copy,
) {
    for block in content {
        if let Block::ToolCall(ToolCall {
            call: Call::Computer { actions },
            ..
        }) = block
        {
            for a in actions.iter_mut() {
                *a = Scale::map_action(a, f);
            }
        }
    }
}

/// The tool calls of the last assistant message that have no result yet: calls that were in
/// flight when the agent stopped, or never started.
pub fn unanswered(messages: &[ChatMessage]) -> Vec<ToolCall> {
    let Some(pos) = messages.iter().rposition(|m| m.role == Role::Assistant) else {
        return Vec::new();
    };
    let answered: HashSet<&str> = messages[pos + 1..]
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(|b| match b {
            Block::ToolResult(r) => Some(r.call_id.as_str()),
            _ => None,
        })
        .collect();
    messages[pos]
        .content
        .iter()
        .filter_map(|b| match b {
            Block::ToolCall(c) if !answered.contains(c.id.as_str()) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

/// A rough token count: four characters a token for text, a fixed cost per image (what the
/// providers charge for a screenshot of about a megapixel). Good enough to decide when to
/// summarise; the provider's own counts are what cost is computed from.
pub fn estimate_tokens(messages: &[ChatMessage]) -> u64 {
    const IMAGE: u64 = 1_500;
    let mut chars = 0u64;
    let mut images = 0u64;
    for m in messages {
        for b in &m.content {
            match b {
                Block::Text { text } => chars += text.len() as u64,
                Block::Image { .. } => images += 1,
                Block::ToolCall(c) => {
                    chars += serde_json::to_string(&c.call).map_or(0, |s| s.len() as u64)
                }
                Block::ToolResult(r) => {
                    chars += r.text.as_ref().map_or(0, |t| t.len() as u64);
                    images += u64::from(r.image.is_some());
                }
                Block::Opaque { value, .. } => chars += value.to_string().len() as u64,
            }
        }
    }
    chars / 4 + images * IMAGE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ComputerAction, Image, Point, ToolResult};

    fn shot(key: &str) -> Image {
        Image {
            media_type: "image/png".into(),
            width: 10,
            height: 10,
            blob: Some(key.into()),
            data: None,
        }
    }

    fn result(id: &str, key: &str) -> ChatMessage {
        ChatMessage {
            role: Role::User,
            content: vec![Block::ToolResult(ToolResult {
                call_id: id.into(),
                is_error: false,
                text: None,
                image: Some(shot(key)),
                url: None,
                acknowledged_safety_checks: vec![],
            })],
            state: None,
        }
    }

    fn call(id: &str) -> ChatMessage {
        ChatMessage {
            role: Role::Assistant,
            content: vec![Block::ToolCall(ToolCall {
                id: id.into(),
                wire_name: None,
                call: Call::Computer {
                    actions: vec![ComputerAction::Click {
                        at: Point { x: 100, y: 50 },
                        button: Default::default(),
                        count: 1,
                        hold_keys: vec![],
                    }],
                },
                safety_checks: vec![],
            })],
            state: None,
        }
    }

    #[test]
    fn only_the_last_screenshots_stay() {
        let mut msgs = vec![
            call("a"),
            result("a", "k1"),
            call("b"),
            result("b", "k2"),
            call("c"),
            result("c", "k3"),
        ];
        let needed = prune_images(&mut msgs, 2);
        assert_eq!(needed, ["k3", "k2"]);
        let Block::ToolResult(first) = &msgs[1].content[0] else {
            panic!()
        };
        assert!(first.image.is_none());
        assert_eq!(first.text.as_deref(), Some(PRUNED));
    }

    #[test]
    fn results_stored_one_by_one_merge_into_one_user_turn() {
        let merged = merge_roles(vec![call("a"), result("a", "k1"), result("b", "k2")]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[1].content.len(), 2);
    }

    #[test]
    fn calls_without_results_are_found() {
        let mut two = call("a");
        if let Block::ToolCall(c) = call("b").content[0].clone() {
            two.content.push(Block::ToolCall(c));
        }
        let msgs = vec![two, result("a", "k")];
        let open = unanswered(&msgs);
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].id, "b");
    }

    #[test]
    fn a_summary_keeps_the_newest_turns_and_describes_the_rest() {
        let msgs = vec![
            ChatMessage {
                role: Role::User,
                content: vec![Block::Text {
                    text: "do it".into(),
                }],
                state: None,
            },
            call("a"),
            result("a", "k1"),
            call("b"),
            result("b", "k2"),
            call("c"),
            result("c", "k3"),
        ];
        let ids: Vec<i64> = (1..=7).collect();
        // Room for one turn only: everything before the last turn is summarised.
        let cut = summary_cut(&msgs, &ids, None, 10).unwrap();
        assert_eq!(cut, 5);
        let text = summarize(None, &msgs[..cut]);
        assert_eq!(text.matches("- did:").count(), 2, "{text}");
        assert!(
            text.contains("- user: do it") && text.contains("→ done"),
            "{text}"
        );
        // Already covered up to the cut: nothing more to do.
        assert_eq!(summary_cut(&msgs, &ids, Some(5), 10), None);
    }

    #[test]
    fn iterations_restart_after_a_hand_back() {
        let hand_back = ChatMessage {
            role: Role::User,
            content: vec![Block::Text {
                text: format!("{HANDED_BACK} fixed it"),
            }],
            state: None,
        };
        let msgs = vec![call("a"), result("a", "k"), call("b"), hand_back, call("c")];
        assert_eq!(iterations_since_hand_back(&msgs), 1);
        assert_eq!(iterations_since_hand_back(&msgs[..3]), 2);
    }

    #[test]
    fn coordinates_map_through_calls() {
        let mut m = call("a");
        map_calls(&mut m.content, |p| Point {
            x: p.x / 2,
            y: p.y / 2,
        });
        let Block::ToolCall(ToolCall {
            call: Call::Computer { actions },
            ..
        }) = &m.content[0]
        else {
            panic!()
        };
        assert!(matches!(
            actions[0],
            ComputerAction::Click {
                at: Point { x: 50, y: 25 },
                ..
            }
        ));
    }
}
