//! The Anthropic client against a fake Messages API: request shapes per computer tool
//! generation, decoding of every computer action, thinking round trips, usage, and every
//! failure path (rate limits, overload, auth, refused tool versions, garbage, timeouts,
//! refused connections). Response bodies follow Anthropic's documented examples.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytebot_agent::model::{
    Block, Call, Capability, ChatMessage, ComputerAction, ComputerTool, Display, FunctionTool,
    INVALID_CALL, Image, ImageLimit, ModelRequest, ModelResponse, ModelSpec, MouseButton, Point,
    Provider, ProviderError, ProviderKind, Role, ScrollDirection, StopReason, ToolCall, ToolResult,
    Usage,
};
use bytebot_agent::providers::anthropic::AnthropicProvider;
use bytebot_agent::providers::http::{Endpoint, RetryPolicy};
use common::{FakeProvider, Reply};
use serde_json::{Value, json};

const KEY_HINT: &str = "ANTHROPIC_API_KEY";
const DISPLAY: Display = Display {
    width: 1280,
    height: 800,
};

fn endpoint(base_url: String) -> Endpoint {
    Endpoint {
        provider: "claude".into(),
        base_url,
        key_hint: KEY_HINT.into(),
        timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_secs(2),
        },
    }
}

fn provider_at(endpoint: Endpoint) -> AnthropicProvider {
    AnthropicProvider::new(
        "claude",
        endpoint,
        "sk-ant-test-key".into(),
        reqwest::Client::new(),
    )
}

fn provider(fake: &FakeProvider) -> AnthropicProvider {
    provider_at(endpoint(fake.url()))
}

fn spec(wire_name: &str, tool: ComputerTool) -> ModelSpec {
    ModelSpec {
        id: "claude".into(),
        provider: "claude".into(),
        kind: ProviderKind::Anthropic,
        wire_name: wire_name.into(),
        title: "Claude".into(),
        computer_tool: tool,
        image_limit: ImageLimit {
            max_long_edge: 1568,
            max_pixels: 1_150_000,
        },
        vision: true,
        context_tokens: 200_000,
        price: None,
    }
}

fn functions() -> Vec<FunctionTool> {
    vec![FunctionTool {
        name: "set_task_status".into(),
        description: "Mark the task completed or ask for help.".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["completed", "needs_help"]},
                "message": {"type": "string"}
            },
            "required": ["status"]
        }),
    }]
}

fn request<'a>(
    model: &'a ModelSpec,
    messages: &'a [ChatMessage],
    functions: &'a [FunctionTool],
) -> ModelRequest<'a> {
    ModelRequest {
        model,
        system: "You operate a Linux desktop.",
        messages,
        functions,
        display: DISPLAY,
        max_tokens: 4096,
    }
}

fn png(bytes: &'static [u8]) -> Image {
    Image {
        media_type: "image/png".into(),
        width: 1280,
        height: 800,
        blob: Some("blobs/shot".into()),
        data: Some(Arc::from(bytes)),
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn user(content: Vec<Block>) -> ChatMessage {
    ChatMessage {
        role: Role::User,
        content,
        state: None,
    }
}

fn assistant(content: Vec<Block>) -> ChatMessage {
    ChatMessage {
        role: Role::Assistant,
        content,
        state: None,
    }
}

fn text(t: &str) -> Block {
    Block::Text { text: t.into() }
}

fn computer(id: &str, wire_name: Option<&str>, action: ComputerAction) -> Block {
    Block::ToolCall(ToolCall {
        id: id.into(),
        wire_name: wire_name.map(str::to_owned),
        call: Call::Computer {
            actions: vec![action],
        },
        safety_checks: vec![],
    })
}

fn result(id: &str, is_error: bool, text: Option<&str>, image: Option<Image>) -> Block {
    Block::ToolResult(ToolResult {
        call_id: id.into(),
        is_error,
        text: text.map(str::to_owned),
        image,
        url: None,
        acknowledged_safety_checks: vec![],
    })
}

fn at(x: i32, y: i32) -> Point {
    Point { x, y }
}

/// A Messages API answer shaped like the documented example.
fn message(content: Value, stop_reason: &str) -> Value {
    json!({
        "id": "msg_01Aq9w938a90dw8q",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {
            "input_tokens": 2095,
            "output_tokens": 503,
            "cache_creation_input_tokens": 1200,
            "cache_read_input_tokens": 800
        }
    })
}

fn ok_reply() -> Reply {
    Reply::json(message(
        json!([{"type": "text", "text": "Done."}]),
        "end_turn",
    ))
}

fn api_error(status: u16, kind: &str, text: &str) -> Reply {
    Reply::status(
        status,
        json!({
            "type": "error",
            "error": {"type": kind, "message": text},
            "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"
        }),
    )
}

async fn step_once(
    model: &ModelSpec,
    messages: &[ChatMessage],
    reply: Reply,
) -> (ModelResponse, common::Seen) {
    let fake = FakeProvider::start().await;
    fake.push(reply);
    let functions = functions();
    let response = provider(&fake)
        .step(request(model, messages, &functions))
        .await
        .unwrap();
    (response, fake.last())
}

/// The assistant's tool calls of a response, in order.
fn calls(response: &ModelResponse) -> Vec<ToolCall> {
    response
        .content
        .iter()
        .filter_map(|b| match b {
            Block::ToolCall(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn only_action(call: &ToolCall) -> ComputerAction {
    match &call.call {
        Call::Computer { actions } if actions.len() == 1 => actions[0].clone(),
        other => panic!("expected one computer action, got {other:?}"),
    }
}

#[tokio::test]
async fn computer_20250124_request_has_the_beta_header_tool_entry_and_cached_prefix() {
    let model = spec(
        "claude-sonnet-4-5-20250929",
        ComputerTool::Anthropic20250124,
    );
    let shot = png(b"\x89PNG-first");
    let after = png(b"\x89PNG-after-click");
    let messages = vec![
        user(vec![
            text("Open the settings."),
            Block::Image {
                image: shot.clone(),
            },
        ]),
        assistant(vec![
            text("I'll click the gear."),
            computer(
                "toolu_01",
                None,
                ComputerAction::Click {
                    at: at(640, 400),
                    button: MouseButton::Left,
                    count: 1,
                    hold_keys: vec!["shift".into()],
                },
            ),
        ]),
        user(vec![result(
            "toolu_01",
            true,
            Some("xdotool: cannot reach display :0"),
            Some(after.clone()),
        )]),
    ];
    let (_, seen) = step_once(&model, &messages, ok_reply()).await;

    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some("sk-ant-test-key"));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        seen.header("anthropic-beta"),
        Some("computer-use-2025-01-24")
    );
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.headers.get_all("content-type").iter().count(), 1);

    let body = &seen.body;
    assert_eq!(body["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(
        body["system"],
        json!([{"type": "text", "text": "You operate a Linux desktop.", "cache_control": {"type": "ephemeral"}}])
    );
    assert_eq!(
        body["tools"],
        json!([
            {"type": "computer_20250124", "name": "computer", "display_width_px": 1280, "display_height_px": 800},
            {
                "name": "set_task_status",
                "description": "Mark the task completed or ask for help.",
                "input_schema": functions()[0].parameters,
                "cache_control": {"type": "ephemeral"}
            }
        ])
    );
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "Open the settings."},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(b"\x89PNG-first")}}
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "I'll click the gear."},
                {"type": "tool_use", "id": "toolu_01", "name": "computer",
                 "input": {"action": "left_click", "coordinate": [640, 400], "text": "shift"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "is_error": true,
                 "content": [
                    {"type": "text", "text": "xdotool: cannot reach display :0"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(b"\x89PNG-after-click")}}
                 ],
                 "cache_control": {"type": "ephemeral"}}
            ]}
        ])
    );
}

#[tokio::test]
async fn computer_20251124_request_enables_zoom_under_its_own_beta() {
    let model = spec("claude-opus-4-5-20251101", ComputerTool::Anthropic20251124);
    let messages = vec![
        user(vec![text("Read the small print.")]),
        assistant(vec![computer(
            "toolu_z",
            None,
            ComputerAction::Zoom {
                from: at(10, 20),
                to: at(410, 320),
            },
        )]),
        user(vec![result("toolu_z", false, None, Some(png(b"zoomed")))]),
    ];
    let fake = FakeProvider::start().await;
    fake.push(ok_reply());
    provider(&fake)
        .step(request(&model, &messages, &[]))
        .await
        .unwrap();
    let seen = fake.last();
    assert_eq!(
        seen.header("anthropic-beta"),
        Some("computer-use-2025-11-24")
    );
    assert_eq!(
        seen.body["tools"],
        json!([{
            "type": "computer_20251124", "name": "computer",
            "display_width_px": 1280, "display_height_px": 800,
            "enable_zoom": true,
            "cache_control": {"type": "ephemeral"}
        }])
    );
    assert_eq!(
        seen.body["messages"][1]["content"][0]["input"],
        json!({"action": "zoom", "region": [10, 20, 410, 320]})
    );
    // A successful result without text carries only the image and no is_error.
    assert_eq!(
        seen.body["messages"][2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "toolu_z",
               "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(b"zoomed")}}],
               "cache_control": {"type": "ephemeral"}})
    );
}

#[tokio::test]
async fn toolset_request_has_no_beta_header_and_marks_members_and_results() {
    let model = spec("claude-sonnet-5", ComputerTool::AnthropicToolset20260801);
    let messages = vec![
        user(vec![text("Save the file.")]),
        assistant(vec![computer(
            "toolu_k",
            Some("key"),
            ComputerAction::Key {
                keys: vec!["ctrl".into(), "s".into()],
            },
        )]),
        user(vec![result("toolu_k", false, Some("ok"), None)]),
    ];
    let fake = FakeProvider::start().await;
    fake.push(ok_reply());
    provider(&fake)
        .step(request(&model, &messages, &[]))
        .await
        .unwrap();
    let seen = fake.last();
    assert_eq!(seen.header("anthropic-beta"), None);
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    // The toolset entry has no name and no display size; as the only tool it holds the
    // cache breakpoint.
    assert_eq!(
        seen.body["tools"],
        json!([{"type": "computer_toolset_20260801", "cache_control": {"type": "ephemeral"}}])
    );
    assert_eq!(
        seen.body["messages"][1]["content"][0],
        json!({"type": "tool_use", "id": "toolu_k", "name": "key", "toolset_name": "computer",
               "input": {"text": "ctrl+s"}})
    );
    assert_eq!(
        seen.body["messages"][2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "toolu_k", "toolset_name": "computer",
               "content": [{"type": "text", "text": "ok"}],
               "cache_control": {"type": "ephemeral"}})
    );

    // With functions offered, the breakpoint moves to the last function.
    let fake = FakeProvider::start().await;
    fake.push(ok_reply());
    let functions = functions();
    provider(&fake)
        .step(request(&model, &messages, &functions))
        .await
        .unwrap();
    let tools = fake.last().body["tools"].clone();
    assert_eq!(tools[0], json!({"type": "computer_toolset_20260801"}));
    assert_eq!(tools[1]["cache_control"], json!({"type": "ephemeral"}));
}

#[tokio::test]
async fn a_failed_toolset_batch_is_answered_with_three_results_in_order() {
    let model = spec("claude-opus-5", ComputerTool::AnthropicToolset20260801);
    let not_executed = "Not executed: an earlier computer action in this turn failed.";
    let messages = vec![
        user(vec![text("Log in.")]),
        assistant(vec![
            computer(
                "toolu_a",
                Some("left_click"),
                ComputerAction::Click {
                    at: at(100, 200),
                    button: MouseButton::Left,
                    count: 1,
                    hold_keys: vec![],
                },
            ),
            computer(
                "toolu_b",
                Some("type"),
                ComputerAction::Type {
                    text: "alice".into(),
                },
            ),
            computer(
                "toolu_c",
                Some("key"),
                ComputerAction::Key {
                    keys: vec!["Return".into()],
                },
            ),
        ]),
        user(vec![
            result("toolu_a", false, None, Some(png(b"after-click"))),
            result(
                "toolu_b",
                true,
                Some("typing failed: no window has the keyboard focus"),
                None,
            ),
            result("toolu_c", true, Some(not_executed), None),
        ]),
    ];
    let fake = FakeProvider::start().await;
    fake.push(ok_reply());
    provider(&fake)
        .step(request(&model, &messages, &[]))
        .await
        .unwrap();
    let body = fake.last().body;
    let uses: Vec<(&str, &str)> = body["messages"][1]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_str().unwrap(), b["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        uses,
        [
            ("toolu_a", "left_click"),
            ("toolu_b", "type"),
            ("toolu_c", "key")
        ]
    );
    assert_eq!(
        body["messages"][2]["content"],
        json!([
            {"type": "tool_result", "tool_use_id": "toolu_a", "toolset_name": "computer",
             "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(b"after-click")}}]},
            {"type": "tool_result", "tool_use_id": "toolu_b", "toolset_name": "computer", "is_error": true,
             "content": [{"type": "text", "text": "typing failed: no window has the keyboard focus"}]},
            {"type": "tool_result", "tool_use_id": "toolu_c", "toolset_name": "computer", "is_error": true,
             "content": [{"type": "text", "text": not_executed}],
             "cache_control": {"type": "ephemeral"}}
        ])
    );
}

#[tokio::test]
async fn every_computer_action_is_decoded() {
    let model = spec("claude-opus-4-5", ComputerTool::Anthropic20251124);
    let uses = [
        json!({"action": "screenshot"}),
        json!({"action": "left_click", "coordinate": [10, 20]}),
        json!({"action": "left_click", "coordinate": [10, 20], "text": "ctrl+shift"}),
        json!({"action": "right_click", "coordinate": [11, 21]}),
        json!({"action": "middle_click", "coordinate": [12, 22]}),
        json!({"action": "double_click", "coordinate": [13, 23]}),
        json!({"action": "triple_click", "coordinate": [14, 24]}),
        json!({"action": "left_click_drag", "start_coordinate": [1, 2], "coordinate": [300, 400]}),
        json!({"action": "left_mouse_down", "coordinate": [5, 6]}),
        json!({"action": "left_mouse_up"}),
        json!({"action": "mouse_move", "coordinate": [7, 8]}),
        json!({"action": "scroll", "coordinate": [500, 400], "scroll_direction": "down", "scroll_amount": 3}),
        json!({"action": "scroll", "scroll_direction": "up", "scroll_amount": 2, "text": "shift"}),
        json!({"action": "key", "text": "ctrl+s"}),
        json!({"action": "key", "text": "Down Down"}),
        json!({"action": "hold_key", "text": "shift", "duration": 1.5}),
        json!({"action": "type", "text": "Hello, world!"}),
        json!({"action": "cursor_position"}),
        json!({"action": "wait", "duration": 2}),
        json!({"action": "zoom", "region": [0, 0, 640, 400]}),
    ];
    let content: Vec<Value> = uses
        .iter()
        .enumerate()
        .map(|(i, input)| json!({"type": "tool_use", "id": format!("toolu_{i:02}"), "name": "computer", "input": input}))
        .collect();
    let (response, _) = step_once(
        &model,
        &[user(vec![text("go")])],
        Reply::json(message(Value::Array(content), "tool_use")),
    )
    .await;
    let calls = calls(&response);
    assert_eq!(calls.len(), uses.len());
    for (i, call) in calls.iter().enumerate() {
        assert_eq!(call.id, format!("toolu_{i:02}"));
        assert_eq!(call.wire_name, None);
    }
    let actions: Vec<Vec<ComputerAction>> = calls
        .iter()
        .map(|c| match &c.call {
            Call::Computer { actions } => actions.clone(),
            other => panic!("not a computer call: {other:?}"),
        })
        .collect();
    let click = |x, y, button, count, hold: &[&str]| ComputerAction::Click {
        at: at(x, y),
        button,
        count,
        hold_keys: hold.iter().map(|s| s.to_string()).collect(),
    };
    let key = |k: &[&str]| ComputerAction::Key {
        keys: k.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(
        actions,
        vec![
            vec![ComputerAction::Screenshot],
            vec![click(10, 20, MouseButton::Left, 1, &[])],
            vec![click(10, 20, MouseButton::Left, 1, &["ctrl", "shift"])],
            vec![click(11, 21, MouseButton::Right, 1, &[])],
            vec![click(12, 22, MouseButton::Middle, 1, &[])],
            vec![click(13, 23, MouseButton::Left, 2, &[])],
            vec![click(14, 24, MouseButton::Left, 3, &[])],
            vec![ComputerAction::Drag {
                path: vec![at(1, 2), at(300, 400)],
                hold_keys: vec![]
            }],
            vec![ComputerAction::MouseDown {
                at: Some(at(5, 6)),
                button: MouseButton::Left
            }],
            vec![ComputerAction::MouseUp {
                at: None,
                button: MouseButton::Left
            }],
            vec![ComputerAction::Move { at: at(7, 8) }],
            vec![ComputerAction::Scroll {
                at: Some(at(500, 400)),
                direction: ScrollDirection::Down,
                amount: 3,
                hold_keys: vec![]
            }],
            vec![ComputerAction::Scroll {
                at: None,
                direction: ScrollDirection::Up,
                amount: 2,
                hold_keys: vec!["shift".into()]
            }],
            vec![key(&["ctrl", "s"])],
            vec![key(&["Down"]), key(&["Down"])],
            vec![ComputerAction::HoldKey {
                keys: vec!["shift".into()],
                duration_ms: 1500
            }],
            vec![ComputerAction::Type {
                text: "Hello, world!".into()
            }],
            vec![ComputerAction::CursorPosition],
            vec![ComputerAction::Wait { duration_ms: 2000 }],
            vec![ComputerAction::Zoom {
                from: at(0, 0),
                to: at(640, 400)
            }],
        ]
    );
    assert_eq!(response.stop, StopReason::ToolUse);
}

#[tokio::test]
async fn decoded_calls_encode_back_to_what_the_model_sent() {
    // The 2025 form: the next request must carry each tool_use exactly as received, including
    // a key sequence that was split into two actions.
    let model = spec("claude-opus-4-5", ComputerTool::Anthropic20251124);
    let sent = json!([
        {"type": "text", "text": "Moving down twice."},
        {"type": "tool_use", "id": "toolu_1", "name": "computer", "input": {"action": "key", "text": "Down Down"}},
        {"type": "tool_use", "id": "toolu_2", "name": "computer",
         "input": {"action": "scroll", "coordinate": [500, 400], "scroll_direction": "down", "scroll_amount": 3}},
        {"type": "tool_use", "id": "toolu_3", "name": "computer", "input": {"action": "hold_key", "text": "shift", "duration": 1.5}}
    ]);
    let (response, _) = step_once(
        &model,
        &[user(vec![text("go")])],
        Reply::json(message(sent.clone(), "tool_use")),
    )
    .await;
    let mut messages = vec![user(vec![text("go")]), assistant(response.content.clone())];
    messages.push(user(
        calls(&response)
            .iter()
            .map(|c| result(&c.id, false, Some("ok"), None))
            .collect(),
    ));
    let (_, seen) = step_once(&model, &messages, ok_reply()).await;
    assert_eq!(
        seen.body["messages"][1],
        json!({"role": "assistant", "content": sent})
    );
}

#[tokio::test]
async fn a_toolset_batch_is_decoded_into_member_calls() {
    let model = spec("claude-sonnet-5", ComputerTool::AnthropicToolset20260801);
    let content = json!([
        {"type": "text", "text": "I'll fill in the form."},
        {"type": "tool_use", "id": "toolu_a", "name": "left_click", "toolset_name": "computer", "input": {"coordinate": [320, 240]}},
        {"type": "tool_use", "id": "toolu_b", "name": "type", "toolset_name": "computer", "input": {"text": "alice"}},
        {"type": "tool_use", "id": "toolu_c", "name": "key", "toolset_name": "computer", "input": {"text": "Tab", "repeat": 2}},
        {"type": "tool_use", "id": "toolu_d", "name": "zoom", "toolset_name": "computer", "input": {"region": [0, 0, 100, 50]}},
        {"type": "tool_use", "id": "toolu_e", "name": "screenshot", "toolset_name": "computer", "input": {}}
    ]);
    let (response, _) = step_once(
        &model,
        &[user(vec![text("go")])],
        Reply::json(message(content, "tool_use")),
    )
    .await;
    assert_eq!(
        response.content[0],
        Block::Text {
            text: "I'll fill in the form.".into()
        }
    );
    let calls = calls(&response);
    let summary: Vec<(&str, Option<&str>)> = calls
        .iter()
        .map(|c| (c.id.as_str(), c.wire_name.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            ("toolu_a", Some("left_click")),
            ("toolu_b", Some("type")),
            ("toolu_c", Some("key")),
            ("toolu_d", Some("zoom")),
            ("toolu_e", Some("screenshot"))
        ]
    );
    assert_eq!(
        only_action(&calls[0]),
        ComputerAction::Click {
            at: at(320, 240),
            button: MouseButton::Left,
            count: 1,
            hold_keys: vec![]
        }
    );
    assert_eq!(
        only_action(&calls[1]),
        ComputerAction::Type {
            text: "alice".into()
        }
    );
    let tab = ComputerAction::Key {
        keys: vec!["Tab".into()],
    };
    assert_eq!(
        calls[2].call,
        Call::Computer {
            actions: vec![tab.clone(), tab]
        }
    );
    assert_eq!(
        only_action(&calls[3]),
        ComputerAction::Zoom {
            from: at(0, 0),
            to: at(100, 50)
        }
    );
    assert_eq!(only_action(&calls[4]), ComputerAction::Screenshot);
}

#[tokio::test]
async fn undecodable_actions_become_invalid_calls_and_echo_back_verbatim() {
    let model = spec("claude-sonnet-5", ComputerTool::AnthropicToolset20260801);
    let content = json!([
        {"type": "tool_use", "id": "toolu_1", "name": "left_click", "toolset_name": "computer", "input": {}},
        {"type": "tool_use", "id": "toolu_2", "name": "teleport", "toolset_name": "computer", "input": {"to": "mars"}},
        {"type": "tool_use", "id": "toolu_3", "name": "set_task_status", "input": {"status": "completed", "message": "Saved."}}
    ]);
    let (response, _) = step_once(
        &model,
        &[user(vec![text("go")])],
        Reply::json(message(content.clone(), "tool_use")),
    )
    .await;
    let calls = calls(&response);
    let Call::Function { name, arguments } = &calls[0].call else {
        panic!("{:?}", calls[0]);
    };
    assert_eq!(name, INVALID_CALL);
    assert_eq!(arguments["tool"], "left_click");
    assert_eq!(arguments["raw"], json!({}));
    assert!(
        arguments["error"].as_str().unwrap().contains("coordinate"),
        "{arguments}"
    );
    let Call::Function { name, arguments } = &calls[1].call else {
        panic!("{:?}", calls[1]);
    };
    assert_eq!(name, INVALID_CALL);
    assert_eq!(arguments["tool"], "teleport");
    assert_eq!(arguments["raw"], json!({"to": "mars"}));
    assert!(
        arguments["error"]
            .as_str()
            .unwrap()
            .contains("unknown action `teleport`"),
        "{arguments}"
    );
    assert_eq!(
        calls[2].call,
        Call::Function {
            name: "set_task_status".into(),
            arguments: json!({"status": "completed", "message": "Saved."})
        }
    );
    assert_eq!(calls[2].wire_name, None);

    // The loop answers the invalid calls with is_error; the model sees its own tool_use again.
    let messages = vec![
        user(vec![text("go")]),
        assistant(response.content.clone()),
        user(vec![
            result("toolu_1", true, Some("left_click needs coordinate"), None),
            result("toolu_2", true, Some("unknown action"), None),
            result("toolu_3", false, Some("Task marked completed."), None),
        ]),
    ];
    let (_, seen) = step_once(&model, &messages, ok_reply()).await;
    assert_eq!(seen.body["messages"][1]["content"], content);
    let marks: Vec<Value> = seen.body["messages"][2]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["toolset_name"].clone())
        .collect();
    assert_eq!(marks, [json!("computer"), json!("computer"), Value::Null]);
}

#[tokio::test]
async fn a_computer_call_without_an_action_is_invalid() {
    let model = spec("claude-sonnet-4-5", ComputerTool::Anthropic20250124);
    let content = json!([
        {"type": "tool_use", "id": "toolu_1", "name": "computer", "input": {"coordinate": [1, 2]}},
        {"type": "tool_use", "id": "toolu_2", "name": "computer", "input": {"action": "mouse_move", "coordinate": "middle"}}
    ]);
    let (response, _) = step_once(
        &model,
        &[user(vec![text("go")])],
        Reply::json(message(content, "tool_use")),
    )
    .await;
    for call in calls(&response) {
        let Call::Function { name, arguments } = &call.call else {
            panic!("{call:?}");
        };
        assert_eq!(name, INVALID_CALL);
        assert_eq!(arguments["tool"], "computer");
        assert!(arguments["raw"].is_object());
        assert!(arguments["error"].is_string());
    }
}

#[tokio::test]
async fn thinking_blocks_go_back_verbatim_and_foreign_ones_are_dropped() {
    let model = spec("claude-opus-4-5", ComputerTool::Anthropic20251124);
    let thinking = json!({
        "type": "thinking",
        "thinking": "The Save button is at the top right.",
        "signature": "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG/UvLEczmEsUjavL"
    });
    let redacted = json!({
        "type": "redacted_thinking",
        "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"
    });
    let tool_use = json!({"type": "tool_use", "id": "toolu_t", "name": "computer",
                          "input": {"action": "left_click", "coordinate": [1200, 40]}});
    let (response, _) = step_once(
        &model,
        &[user(vec![text("Save it.")])],
        Reply::json(message(json!([thinking, redacted, tool_use]), "tool_use")),
    )
    .await;
    assert_eq!(
        response.content[0],
        Block::Opaque {
            provider: ProviderKind::Anthropic,
            value: thinking.clone()
        }
    );
    assert_eq!(
        response.content[1],
        Block::Opaque {
            provider: ProviderKind::Anthropic,
            value: redacted.clone()
        }
    );

    let mut turn = response.content.clone();
    turn.push(Block::Opaque {
        provider: ProviderKind::Openai,
        value: json!({"type": "reasoning", "id": "rs_1", "summary": []}),
    });
    let messages = vec![
        user(vec![text("Save it.")]),
        assistant(turn),
        user(vec![result("toolu_t", false, Some("clicked"), None)]),
    ];
    let (_, seen) = step_once(&model, &messages, ok_reply()).await;
    assert_eq!(
        seen.body["messages"][1]["content"],
        json!([thinking, redacted, tool_use])
    );
}

#[tokio::test]
async fn usage_and_stop_reasons_are_read() {
    let model = spec("claude-sonnet-4-5", ComputerTool::Anthropic20250124);
    let (response, _) = step_once(&model, &[user(vec![text("hi")])], ok_reply()).await;
    assert_eq!(
        response.usage,
        Usage {
            input_tokens: 2095,
            output_tokens: 503,
            cache_creation_input_tokens: 1200,
            cache_read_input_tokens: 800
        }
    );
    assert_eq!(response.stop, StopReason::EndTurn);
    assert_eq!(response.state, None);
    assert_eq!(response.content, vec![text("Done.")]);

    for (wire, stop) in [
        ("max_tokens", StopReason::MaxTokens),
        ("refusal", StopReason::Refusal),
        ("pause_turn", StopReason::Other("pause_turn".into())),
    ] {
        let mut body = message(json!([{"type": "text", "text": "…"}]), wire);
        // The cache counters are optional (older answers leave them out).
        body["usage"] = json!({"input_tokens": 10, "output_tokens": 2});
        let (response, _) = step_once(&model, &[user(vec![text("hi")])], Reply::json(body)).await;
        assert_eq!(response.stop, stop);
        assert_eq!(
            response.usage,
            Usage {
                input_tokens: 10,
                output_tokens: 2,
                ..Usage::default()
            }
        );
    }
}

#[tokio::test]
async fn consecutive_turns_of_one_role_are_merged_with_tool_results_first() {
    let model = spec("claude-sonnet-4-5", ComputerTool::Anthropic20250124);
    let messages = vec![
        user(vec![text("Take a screenshot.")]),
        assistant(vec![computer("toolu_s", None, ComputerAction::Screenshot)]),
        user(vec![text("Also, hurry.")]),
        user(vec![result("toolu_s", false, None, Some(png(b"shot")))]),
    ];
    let (_, seen) = step_once(&model, &messages, ok_reply()).await;
    let turns = seen.body["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 3);
    assert_eq!(turns[2]["role"], "user");
    let kinds: Vec<&str> = turns[2]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["tool_result", "text"]);
}

#[tokio::test]
async fn rate_limit_waits_as_told_then_succeeds() {
    let fake = FakeProvider::start().await;
    fake.push(
        api_error(
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
        )
        .header("retry-after", "0.2"),
    );
    fake.push(ok_reply());
    let model = spec("claude-sonnet-4-5", ComputerTool::Anthropic20250124);
    let messages = [user(vec![text("hi")])];
    let started = Instant::now();
    let response = provider(&fake)
        .step(request(&model, &messages, &[]))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(response.stop, StopReason::EndTurn);
    assert_eq!(fake.seen().len(), 2);
}

#[tokio::test]
async fn rate_limit_with_a_long_wait_fails_at_once() {
    let fake = FakeProvider::start().await;
    fake.push(api_error(429, "rate_limit_error", "Slow down").header("retry-after", "120"));
    let model = spec("claude-sonnet-4-5", ComputerTool::Anthropic20250124);
    let messages = [user(vec![text("hi")])];
    let err = provider(&fake)
        .step(request(&model, &messages, &[]))
        .await
        .unwrap_err();
    match err {
        ProviderError::RateLimited {
            retry_after,
            message,
            ..
        } => {
            assert_eq!(retry_after, Some(Duration::from_secs(120)));
            assert_eq!(message, "Slow down");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn overload_529_is_retried() {
    let fake = FakeProvider::start().await;
    fake.push(api_error(529, "overloaded_error", "Overloaded"));
    fake.push(ok_reply());
    let model = spec("claude-sonnet-4-5", ComputerTool::Anthropic20250124);
    let messages = [user(vec![text("hi")])];
    provider(&fake)
        .step(request(&model, &messages, &[]))
        .await
        .unwrap();
    assert_eq!(fake.seen().len(), 2);

    // Overloaded on every attempt: a server error after max_attempts requests.
    let fake = FakeProvider::start().await;
    for _ in 0..3 {
        fake.push(api_error(529, "overloaded_error", "Overloaded"));
    }
    let err = provider(&fake)
        .step(request(&model, &messages, &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Server { status: 529, message, .. } if message == "Overloaded"),
        "{err:?}"
    );
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test]
async fn a_refused_key_names_the_setting_to_check() {
    let fake = FakeProvider::start().await;
    fake.push(api_error(401, "authentication_error", "invalid x-api-key"));
    let model = spec("claude-sonnet-4-5", ComputerTool::Anthropic20250124);
    let messages = [user(vec![text("hi")])];
    let err = provider(&fake)
        .step(request(&model, &messages, &[]))
        .await
        .unwrap_err();
    match &err {
        ProviderError::Auth {
            provider,
            status,
            message,
            key_hint,
        } => {
            assert_eq!(provider, "claude");
            assert_eq!(*status, 401);
            assert_eq!(message, "invalid x-api-key");
            assert_eq!(key_hint, KEY_HINT);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(KEY_HINT), "{err}");
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn a_refused_tool_version_is_unsupported_not_rejected() {
    let fake = FakeProvider::start().await;
    fake.push(api_error(
        400,
        "invalid_request_error",
        "'claude-sonnet-4-6' does not support tool types: computer_20250124. Did you mean one of bash_20250124, text_editor_20250728, web_search_20250305?",
    ));
    let model = spec("claude-sonnet-4-6", ComputerTool::Anthropic20250124);
    let messages = [user(vec![text("hi")])];
    let err = provider(&fake)
        .step(request(&model, &messages, &[]))
        .await
        .unwrap_err();
    match &err {
        ProviderError::Unsupported {
            model,
            capability,
            message,
            ..
        } => {
            assert_eq!(model, "claude-sonnet-4-6");
            assert_eq!(*capability, Capability::ComputerTool);
            assert!(message.contains("does not support tool types"), "{message}");
            // It says what to change: this model's default generation.
            assert!(message.contains("takes `anthropic20251124`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.seen().len(), 1);

    // Other 400s stay rejections.
    let fake = FakeProvider::start().await;
    fake.push(api_error(
        400,
        "invalid_request_error",
        "messages: roles must alternate between \"user\" and \"assistant\"",
    ));
    let err = provider(&fake)
        .step(request(&model, &messages, &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Rejected { status: 400, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_answer_without_the_documented_shape_is_a_bad_response() {
    let model = spec("claude-sonnet-4-5", ComputerTool::Anthropic20250124);
    let messages = [user(vec![text("hi")])];
    for reply in [
        Reply::raw(200, "<html>gateway says hi</html>"),
        Reply::json(json!({"id": "msg_1", "type": "message", "role": "assistant"})),
        Reply::json(json!({"type": "message", "content": [{"text": "no type"}]})),
        Reply::json(
            json!({"type": "message", "content": [{"type": "tool_use", "name": "computer", "input": {}}]}),
        ),
    ] {
        let fake = FakeProvider::start().await;
        fake.push(reply);
        let err = provider(&fake)
            .step(request(&model, &messages, &[]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::BadResponse { ref provider, .. } if provider == "claude"),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn a_slow_answer_times_out() {
    let fake = FakeProvider::start().await;
    fake.push(ok_reply().after(Duration::from_secs(3)));
    let mut endpoint = endpoint(fake.url());
    endpoint.timeout = Duration::from_millis(200);
    let model = spec("claude-sonnet-4-5", ComputerTool::Anthropic20250124);
    let messages = [user(vec![text("hi")])];
    let started = Instant::now();
    let err = provider_at(endpoint)
        .step(request(&model, &messages, &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Timeout { after, .. } if after == Duration::from_millis(200)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let model = spec("claude-sonnet-4-5", ComputerTool::Anthropic20250124);
    let messages = [user(vec![text("hi")])];
    let err = provider_at(endpoint(url.clone()))
        .step(request(&model, &messages, &[]))
        .await
        .unwrap_err();
    match err {
        ProviderError::Connect {
            url: tried,
            message,
            ..
        } => {
            assert_eq!(tried, format!("{url}/v1/messages"));
            assert!(!message.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_non_anthropic_computer_tool_is_refused_before_sending() {
    let fake = FakeProvider::start().await;
    let model = spec("claude-sonnet-4-5", ComputerTool::OpenaiPreview);
    let messages = [user(vec![text("hi")])];
    let err = provider(&fake)
        .step(request(&model, &messages, &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Unsupported {
                capability: Capability::ComputerTool,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(fake.seen().is_empty());
}

#[tokio::test]
async fn calls_from_another_provider_that_do_not_fit_travel_as_text() {
    // A fallback chain: an OpenAI turn batched two actions under one call id. Anthropic cannot
    // express that as one tool_use, so call and result are described in words instead.
    let model = spec("claude-sonnet-4-5", ComputerTool::Anthropic20250124);
    let messages = vec![
        user(vec![text("Type hi and press enter.")]),
        assistant(vec![Block::ToolCall(ToolCall {
            id: "call_openai_1".into(),
            wire_name: None,
            call: Call::Computer {
                actions: vec![
                    ComputerAction::Type { text: "hi".into() },
                    ComputerAction::Key {
                        keys: vec!["Return".into()],
                    },
                ],
            },
            safety_checks: vec![],
        })]),
        user(vec![result(
            "call_openai_1",
            false,
            Some("typed"),
            Some(png(b"s")),
        )]),
    ];
    let (_, seen) = step_once(&model, &messages, ok_reply()).await;
    let turns = seen.body["messages"].as_array().unwrap();
    assert_eq!(turns[1]["content"][0]["type"], "text");
    assert!(
        turns[1]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("call_openai_1")
    );
    let kinds: Vec<&str> = turns[2]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["text", "image"]);
}
