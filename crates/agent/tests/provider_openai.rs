//! The OpenAI Responses client against a fake server answering in OpenAI's documented JSON
//! (shapes from OpenAI's computer use guide and the Responses API reference).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytebot_agent::model::{
    Block, Call, Capability, ChatMessage, ComputerAction, ComputerTool, Display, FunctionTool,
    INVALID_CALL, Image, ImageLimit, ModelRequest, ModelResponse, ModelSpec, MouseButton, Point,
    Provider, ProviderError, ProviderKind, ProviderState, Role, SafetyCheck, ScrollDirection,
    StopReason, ToolCall, ToolResult, Usage,
};
use bytebot_agent::providers::http::{Endpoint, RetryPolicy};
use bytebot_agent::providers::openai::{COMPUTER_CALL, OpenAiProvider, image_limit};
use common::{FakeProvider, Reply};
use serde_json::{Value, json};

const KEY: &str = "sk-test-123";

fn spec(tool: ComputerTool) -> ModelSpec {
    let wire_name = match tool {
        ComputerTool::OpenaiPreview => "computer-use-preview",
        _ => "gpt-5.4",
    };
    ModelSpec {
        id: "oa".into(),
        provider: "openai".into(),
        kind: ProviderKind::Openai,
        wire_name: wire_name.into(),
        title: "OpenAI".into(),
        computer_tool: tool,
        image_limit: image_limit(wire_name),
        vision: true,
        context_tokens: 128_000,
        price: None,
    }
}

fn endpoint(url: String, timeout: Duration) -> Endpoint {
    Endpoint {
        provider: "openai".into(),
        base_url: url,
        key_hint: "OPENAI_API_KEY".into(),
        timeout,
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(2),
        },
    }
}

fn provider(fake: &FakeProvider) -> OpenAiProvider {
    OpenAiProvider::new(
        "openai",
        endpoint(fake.url(), Duration::from_secs(5)),
        KEY.into(),
        reqwest::Client::new(),
    )
}

fn functions() -> Vec<FunctionTool> {
    vec![FunctionTool {
        name: "set_task_status".into(),
        description: "Mark the task completed or ask for help.".into(),
        parameters: json!({
            "type": "object",
            "properties": {"status": {"type": "string"}, "message": {"type": "string"}},
            "required": ["status"]
        }),
    }]
}

fn png() -> Image {
    Image {
        media_type: "image/png".into(),
        width: 1024,
        height: 768,
        blob: None,
        data: Some(Arc::from(&b"\x89PNG"[..])),
    }
}

const PNG_URL: &str = "data:image/png;base64,iVBORw==";

fn user(blocks: Vec<Block>) -> ChatMessage {
    ChatMessage {
        role: Role::User,
        content: blocks,
        state: None,
    }
}

fn text(t: &str) -> Block {
    Block::Text { text: t.into() }
}

fn openai_state(value: Value) -> Option<ProviderState> {
    Some(ProviderState {
        provider: ProviderKind::Openai,
        value,
    })
}

async fn step(
    p: &OpenAiProvider,
    tool: ComputerTool,
    messages: &[ChatMessage],
) -> Result<ModelResponse, ProviderError> {
    let model = spec(tool);
    let functions = functions();
    p.step(ModelRequest {
        model: &model,
        system: "You operate a Linux desktop.",
        messages,
        functions: &functions,
        display: Display {
            width: 1024,
            height: 768,
        },
        max_tokens: 4096,
    })
    .await
}

/// A response object as the API reference shows it.
fn response(output: Value) -> Value {
    json!({
        "id": "resp_67cc5bc8e2f8819096e10fbb3ffb4b3f0d5b9c1e2f0a7c85",
        "object": "response",
        "created_at": 1741446088,
        "status": "completed",
        "error": null,
        "incomplete_details": null,
        "instructions": "You operate a Linux desktop.",
        "max_output_tokens": 4096,
        "model": "computer-use-preview-2025-03-11",
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": "medium", "generate_summary": null},
        "store": true,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "auto",
        "usage": {
            "input_tokens": 1519,
            "input_tokens_details": {"cached_tokens": 1024},
            "output_tokens": 37,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 1556
        },
        "user": null,
        "metadata": {}
    })
}

fn reasoning() -> Value {
    json!({
        "type": "reasoning",
        "id": "rs_67cc5bc9b7e88190a3b0a0e4c2b1c9a80d5b9c1e2f0a7c85",
        "summary": [{"type": "summary_text", "text": "Clicking on the browser address bar."}]
    })
}

fn computer_call(action: Value) -> Value {
    json!({
        "type": "computer_call",
        "id": "cu_67cc5bcaa1f08190b7c0b7c5b0f6c8a10d5b9c1e2f0a7c85",
        "call_id": "call_zw3aDDWNmvB4OuzKxg8Lfw2g",
        "action": action,
        "pending_safety_checks": [],
        "status": "completed"
    })
}

fn message(t: &str) -> Value {
    json!({
        "type": "message",
        "id": "msg_67cc5bd0e0f88190b7c0b7c5b0f6c8a1",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": t, "annotations": []}]
    })
}

fn only_call(r: &ModelResponse) -> &ToolCall {
    let calls: Vec<&ToolCall> = r
        .content
        .iter()
        .filter_map(|b| match b {
            Block::ToolCall(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1, "expected one call in {:?}", r.content);
    calls[0]
}

fn actions(call: &ToolCall) -> &[ComputerAction] {
    match &call.call {
        Call::Computer { actions } => actions,
        other => panic!("not a computer call: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn first_request_carries_key_tools_instructions_and_the_image() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::json(response(json!([message("Done.")]))));
    let p = provider(&fake);
    let messages = [user(vec![
        text("Open the settings."),
        Block::Image { image: png() },
    ])];
    step(&p, ComputerTool::OpenaiPreview, &messages)
        .await
        .unwrap();

    let seen = fake.last();
    assert_eq!(seen.path, "/v1/responses");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-test-123"));
    let body = &seen.body;
    assert_eq!(body["model"], "computer-use-preview");
    assert_eq!(body["instructions"], "You operate a Linux desktop.");
    assert_eq!(body["truncation"], "auto");
    assert_eq!(body["max_output_tokens"], 4096);
    assert!(body.get("previous_response_id").is_none());
    assert_eq!(
        body["tools"],
        json!([
            {"type": "computer_use_preview", "display_width": 1024, "display_height": 768,
             "environment": "linux"},
            {"type": "function", "name": "set_task_status",
             "description": "Mark the task completed or ask for help.",
             "parameters": functions()[0].parameters, "strict": false}
        ])
    );
    assert_eq!(
        body["input"],
        json!([{"role": "user", "content": [
            {"type": "input_text", "text": "Open the settings."},
            {"type": "input_image", "image_url": PNG_URL, "detail": "auto"}
        ]}])
    );
}

#[tokio::test]
async fn the_ga_tool_is_a_bare_computer_entry_without_truncation() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::json(response(json!([message("Hi")]))));
    let p = provider(&fake);
    step(&p, ComputerTool::OpenaiComputer, &[user(vec![text("hi")])])
        .await
        .unwrap();
    let body = fake.last().body;
    assert_eq!(body["model"], "gpt-5.4");
    assert_eq!(body["tools"][0], json!({"type": "computer"}));
    assert_eq!(body["tools"][1]["type"], "function");
    assert!(body.get("truncation").is_none());
}

#[tokio::test]
async fn a_foreign_computer_tool_is_refused_before_any_request() {
    let fake = FakeProvider::start().await;
    let p = provider(&fake);
    let err = step(
        &p,
        ComputerTool::Anthropic20250124,
        &[user(vec![text("hi")])],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &err,
            ProviderError::Unsupported {
                capability: Capability::ComputerTool,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("openai_computer"), "{err}");
    assert!(fake.seen().is_empty());
}

fn computer_tool_call(id: &str, checks: Vec<SafetyCheck>) -> ToolCall {
    ToolCall {
        id: id.into(),
        wire_name: None,
        call: Call::Computer {
            actions: vec![ComputerAction::Click {
                at: Point { x: 156, y: 50 },
                button: MouseButton::Left,
                count: 1,
                hold_keys: vec![],
            }],
        },
        safety_checks: checks,
    }
}

fn check() -> SafetyCheck {
    SafetyCheck {
        id: "cu_sc_67cb3be6e3b48190b1c9f1e6c3c0a4c6".into(),
        code: "malicious_instructions".into(),
        message: "We've detected instructions that may cause your application to perform \
                  malicious or unauthorized actions. Please acknowledge this warning if you'd \
                  like to proceed."
            .into(),
    }
}

fn screenshot_result(id: &str, acknowledged: Vec<SafetyCheck>) -> ToolResult {
    ToolResult {
        call_id: id.into(),
        is_error: false,
        text: None,
        image: Some(png()),
        url: None,
        acknowledged_safety_checks: acknowledged,
    }
}

#[tokio::test]
async fn later_requests_chain_on_the_response_id_and_send_only_new_items() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::json(response(json!([message("ok")]))));
    fake.push(Reply::json(response(json!([message("ok")]))));
    let p = provider(&fake);
    let assistant = ChatMessage {
        role: Role::Assistant,
        content: vec![
            Block::Opaque {
                provider: ProviderKind::Openai,
                value: reasoning(),
            },
            Block::ToolCall(computer_tool_call("call_1", vec![check()])),
        ],
        state: openai_state(json!({"response_id": "resp_prev", "item_ids": {"call_1": "cu_1"}})),
    };

    // Acknowledged by a person: quoted back.
    let messages = [
        user(vec![text("Open the settings.")]),
        assistant.clone(),
        user(vec![Block::ToolResult(screenshot_result(
            "call_1",
            vec![check()],
        ))]),
    ];
    step(&p, ComputerTool::OpenaiPreview, &messages)
        .await
        .unwrap();
    let body = fake.last().body;
    assert_eq!(body["previous_response_id"], "resp_prev");
    assert_eq!(
        body["input"],
        json!([{
            "type": "computer_call_output",
            "call_id": "call_1",
            "output": {"type": "computer_screenshot", "image_url": PNG_URL},
            "acknowledged_safety_checks": [{
                "id": check().id, "code": "malicious_instructions", "message": check().message
            }]
        }])
    );

    // Not acknowledged: never acknowledged on the person's behalf.
    let messages = [
        user(vec![text("Open the settings.")]),
        assistant,
        user(vec![
            Block::ToolResult(screenshot_result("call_1", vec![])),
            text("Also check the volume."),
        ]),
    ];
    step(&p, ComputerTool::OpenaiPreview, &messages)
        .await
        .unwrap();
    let body = fake.last().body;
    assert_eq!(
        body["input"],
        json!([
            {"type": "computer_call_output", "call_id": "call_1",
             "output": {"type": "computer_screenshot", "image_url": PNG_URL}},
            {"role": "user", "content": [{"type": "input_text", "text": "Also check the volume."}]}
        ])
    );
}

#[tokio::test]
async fn a_failed_computer_call_still_tells_the_model_why() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::json(response(json!([message("ok")]))));
    let p = provider(&fake);
    let messages = [
        user(vec![text("Click it.")]),
        ChatMessage {
            role: Role::Assistant,
            content: vec![Block::ToolCall(computer_tool_call("call_1", vec![]))],
            state: openai_state(json!({"response_id": "resp_prev"})),
        },
        user(vec![Block::ToolResult(ToolResult {
            call_id: "call_1".into(),
            is_error: true,
            text: Some("the desktop is not reachable".into()),
            image: None,
            url: None,
            acknowledged_safety_checks: vec![],
        })]),
    ];
    step(&p, ComputerTool::OpenaiComputer, &messages)
        .await
        .unwrap();
    let input = &fake.last().body["input"];
    assert_eq!(input[0]["type"], "computer_call_output");
    let url = input[0]["output"]["image_url"].as_str().unwrap();
    assert!(url.starts_with("data:image/png;base64,iVBOR"), "{url}");
    assert_eq!(input[1]["role"], "user");
    let note = input[1]["content"][0]["text"].as_str().unwrap();
    assert!(
        note.contains("call_1 failed: the desktop is not reachable"),
        "{note}"
    );
    assert_eq!(input.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn without_a_response_id_the_whole_history_is_sent() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::json(response(json!([message("ok")]))));
    let p = provider(&fake);
    let set_status = ToolCall {
        id: "toolu_01".into(),
        wire_name: None,
        call: Call::Function {
            name: "set_task_status".into(),
            arguments: json!({"status": "completed"}),
        },
        safety_checks: vec![],
    };
    let messages = [
        user(vec![text("Open the settings.")]),
        // An earlier OpenAI turn: re-encoded with its item id, reasoning sent back verbatim.
        ChatMessage {
            role: Role::Assistant,
            content: vec![
                Block::Opaque {
                    provider: ProviderKind::Openai,
                    value: reasoning(),
                },
                Block::ToolCall(computer_tool_call("call_1", vec![check()])),
            ],
            state: openai_state(json!({"response_id": "resp_1", "item_ids": {"call_1": "cu_1"}})),
        },
        user(vec![Block::ToolResult(screenshot_result("call_1", vec![]))]),
        // Then another provider answered (fallback): no OpenAI state.
        ChatMessage {
            role: Role::Assistant,
            content: vec![
                Block::Opaque {
                    provider: ProviderKind::Anthropic,
                    value: json!({"type": "thinking", "thinking": "…", "signature": "x"}),
                },
                text("Scrolling down."),
                Block::ToolCall(ToolCall {
                    id: "toolu_00".into(),
                    wire_name: None,
                    call: Call::Computer {
                        actions: vec![ComputerAction::Screenshot],
                    },
                    safety_checks: vec![],
                }),
                Block::ToolCall(set_status),
            ],
            state: None,
        },
        user(vec![
            Block::ToolResult(screenshot_result("toolu_00", vec![])),
            Block::ToolResult(ToolResult {
                call_id: "toolu_01".into(),
                is_error: false,
                text: Some("status set".into()),
                image: None,
                url: None,
                acknowledged_safety_checks: vec![],
            }),
            text("Thanks."),
        ]),
    ];
    step(&p, ComputerTool::OpenaiPreview, &messages)
        .await
        .unwrap();
    let body = fake.last().body;
    assert!(body.get("previous_response_id").is_none());
    let input = body["input"].as_array().unwrap();
    assert_eq!(
        input[0],
        json!({"role": "user", "content": [{"type": "input_text", "text": "Open the settings."}]})
    );
    assert_eq!(input[1], reasoning());
    assert_eq!(
        input[2],
        json!({
            "type": "computer_call", "id": "cu_1", "call_id": "call_1",
            "action": {"type": "click", "button": "left", "x": 156, "y": 50},
            "pending_safety_checks": [
                {"id": check().id, "code": "malicious_instructions", "message": check().message}
            ],
            "status": "completed"
        })
    );
    assert_eq!(input[3]["type"], "computer_call_output");
    assert_eq!(input[3]["call_id"], "call_1");
    // The other provider's turn: its text, and its computer call described in words.
    assert_eq!(input[4]["role"], "assistant");
    assert_eq!(
        input[4]["content"][0],
        json!({"type": "output_text", "text": "Scrolling down."})
    );
    let described = input[4]["content"][1]["text"].as_str().unwrap();
    assert!(described.contains("toolu_00"), "{described}");
    assert_eq!(
        input[5],
        json!({"type": "function_call", "call_id": "toolu_01", "name": "set_task_status",
               "arguments": "{\"status\":\"completed\"}"})
    );
    assert_eq!(
        input[6],
        json!({"type": "function_call_output", "call_id": "toolu_01", "output": "status set"})
    );
    assert_eq!(input[7]["role"], "user");
    let content = input[7]["content"].as_array().unwrap();
    assert!(
        content[0]["text"]
            .as_str()
            .unwrap()
            .contains("toolu_00: succeeded")
    );
    assert_eq!(
        content[1],
        json!({"type": "input_image", "image_url": PNG_URL, "detail": "auto"})
    );
    assert_eq!(content[2], json!({"type": "input_text", "text": "Thanks."}));
    assert_eq!(input.len(), 8, "{input:#?}");
    // Anthropic's thinking block never reaches OpenAI.
    assert!(!body.to_string().contains("signature"));
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_preview_action_decodes() {
    let click = |button: MouseButton| {
        vec![ComputerAction::Click {
            at: Point { x: 156, y: 50 },
            button,
            count: 1,
            hold_keys: vec![],
        }]
    };
    let cases: Vec<(Value, Vec<ComputerAction>)> = vec![
        (
            json!({"type": "click", "button": "left", "x": 156, "y": 50}),
            click(MouseButton::Left),
        ),
        (
            json!({"type": "click", "button": "right", "x": 156, "y": 50}),
            click(MouseButton::Right),
        ),
        (
            json!({"type": "click", "button": "wheel", "x": 156, "y": 50}),
            click(MouseButton::Middle),
        ),
        (
            json!({"type": "click", "button": "back", "x": 156, "y": 50}),
            vec![ComputerAction::Key {
                keys: vec!["alt".into(), "Left".into()],
            }],
        ),
        (
            json!({"type": "click", "button": "forward", "x": 156, "y": 50}),
            vec![ComputerAction::Key {
                keys: vec!["alt".into(), "Right".into()],
            }],
        ),
        (
            json!({"type": "double_click", "x": 10, "y": 20}),
            vec![ComputerAction::Click {
                at: Point { x: 10, y: 20 },
                button: MouseButton::Left,
                count: 2,
                hold_keys: vec![],
            }],
        ),
        (
            json!({"type": "drag", "path": [{"x": 1, "y": 2}, {"x": 30, "y": 40}, {"x": 50, "y": 60}]}),
            vec![ComputerAction::Drag {
                path: vec![
                    Point { x: 1, y: 2 },
                    Point { x: 30, y: 40 },
                    Point { x: 50, y: 60 },
                ],
                hold_keys: vec![],
            }],
        ),
        (
            json!({"type": "keypress", "keys": ["CTRL", "SHIFT", "T"]}),
            vec![ComputerAction::Key {
                keys: vec!["ctrl".into(), "shift".into(), "t".into()],
            }],
        ),
        (
            json!({"type": "keypress", "keys": ["ENTER"]}),
            vec![ComputerAction::Key {
                keys: vec!["Return".into()],
            }],
        ),
        (
            json!({"type": "keypress", "keys": ["ARROWLEFT"]}),
            vec![ComputerAction::Key {
                keys: vec!["Left".into()],
            }],
        ),
        (
            json!({"type": "keypress", "keys": ["ESC"]}),
            vec![ComputerAction::Key {
                keys: vec!["Escape".into()],
            }],
        ),
        (
            json!({"type": "move", "x": 300, "y": 400}),
            vec![ComputerAction::Move {
                at: Point { x: 300, y: 400 },
            }],
        ),
        (
            json!({"type": "screenshot"}),
            vec![ComputerAction::Screenshot],
        ),
        (
            json!({"type": "scroll", "x": 500, "y": 400, "scroll_x": 0, "scroll_y": 300}),
            vec![ComputerAction::Scroll {
                at: Some(Point { x: 500, y: 400 }),
                direction: ScrollDirection::Down,
                amount: 3,
                hold_keys: vec![],
            }],
        ),
        (
            json!({"type": "scroll", "x": 500, "y": 400, "scroll_x": -150, "scroll_y": 0}),
            vec![ComputerAction::Scroll {
                at: Some(Point { x: 500, y: 400 }),
                direction: ScrollDirection::Left,
                amount: 2,
                hold_keys: vec![],
            }],
        ),
        (
            json!({"type": "scroll", "x": 5, "y": 6, "scroll_x": 0, "scroll_y": -40}),
            vec![ComputerAction::Scroll {
                at: Some(Point { x: 5, y: 6 }),
                direction: ScrollDirection::Up,
                amount: 1,
                hold_keys: vec![],
            }],
        ),
        (
            json!({"type": "type", "text": "Hello, wörld"}),
            vec![ComputerAction::Type {
                text: "Hello, wörld".into(),
            }],
        ),
        (
            json!({"type": "wait"}),
            vec![ComputerAction::Wait { duration_ms: 2000 }],
        ),
    ];
    let fake = FakeProvider::start().await;
    let p = provider(&fake);
    for (action, expected) in cases {
        fake.push(Reply::json(response(json!([
            reasoning(),
            computer_call(action.clone())
        ]))));
        let r = step(&p, ComputerTool::OpenaiPreview, &[user(vec![text("go")])])
            .await
            .unwrap();
        let call = only_call(&r);
        assert_eq!(call.id, "call_zw3aDDWNmvB4OuzKxg8Lfw2g");
        assert_eq!(actions(call), expected.as_slice(), "for {action}");
        assert_eq!(r.stop, StopReason::ToolUse);
        // The reasoning item is kept, verbatim, for the provider only.
        assert_eq!(
            r.content[0],
            Block::Opaque {
                provider: ProviderKind::Openai,
                value: reasoning()
            }
        );
    }
}

#[tokio::test]
async fn batched_ga_actions_become_one_call_and_pending_checks_are_kept() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::json(response(json!([{
        "type": "computer_call",
        "id": "cu_02",
        "call_id": "call_batch",
        "actions": [
            {"type": "click", "button": "left", "x": 405, "y": 157, "keys": ["SHIFT"]},
            {"type": "type", "text": "penguin"},
            {"type": "keypress", "keys": ["ENTER"]}
        ],
        "pending_safety_checks": [{
            "id": "cu_sc_1", "code": "irrelevant_domain",
            "message": "The current domain does not appear relevant to the task."
        }],
        "status": "completed"
    }]))));
    let p = provider(&fake);
    let r = step(
        &p,
        ComputerTool::OpenaiComputer,
        &[user(vec![text("search")])],
    )
    .await
    .unwrap();
    let call = only_call(&r);
    assert_eq!(call.id, "call_batch");
    assert_eq!(
        actions(call),
        &[
            ComputerAction::Click {
                at: Point { x: 405, y: 157 },
                button: MouseButton::Left,
                count: 1,
                hold_keys: vec!["shift".into()],
            },
            ComputerAction::Type {
                text: "penguin".into()
            },
            ComputerAction::Key {
                keys: vec!["Return".into()]
            },
        ]
    );
    assert_eq!(
        call.safety_checks,
        vec![SafetyCheck {
            id: "cu_sc_1".into(),
            code: "irrelevant_domain".into(),
            message: "The current domain does not appear relevant to the task.".into(),
        }]
    );
    // The item id is kept so the call can be shown to OpenAI again.
    assert_eq!(
        r.state.as_ref().unwrap().value,
        json!({"response_id": "resp_67cc5bc8e2f8819096e10fbb3ffb4b3f0d5b9c1e2f0a7c85",
               "item_ids": {"call_batch": "cu_02"}})
    );
}

#[tokio::test]
async fn an_undecodable_computer_action_is_an_invalid_call_with_the_reason() {
    let fake = FakeProvider::start().await;
    let p = provider(&fake);
    let cases = [
        (
            json!({"type": "click", "button": "left", "y": 3}),
            "`x` is missing",
        ),
        (
            json!({"type": "teleport", "x": 1, "y": 2}),
            "unknown action type `teleport`",
        ),
        (
            json!({"type": "drag", "path": [{"x": 1, "y": 2}]}),
            "at least two points",
        ),
    ];
    for (action, reason) in cases {
        fake.push(Reply::json(response(json!([computer_call(
            action.clone()
        )]))));
        let r = step(&p, ComputerTool::OpenaiPreview, &[user(vec![text("go")])])
            .await
            .unwrap();
        let call = only_call(&r);
        assert_eq!(call.wire_name.as_deref(), Some(COMPUTER_CALL));
        let Call::Function { name, arguments } = &call.call else {
            panic!("{call:?}");
        };
        assert_eq!(name, INVALID_CALL);
        assert_eq!(arguments["tool"], "computer");
        let error = arguments["error"].as_str().unwrap();
        assert!(error.contains(reason), "{error} lacks {reason}");
        assert_eq!(arguments["raw"]["action"], action);
    }

    // Its result still goes back as a computer_call_output, with the reason in words.
    fake.push(Reply::json(response(json!([computer_call(
        json!({"type": "teleport"})
    )]))));
    let r = step(&p, ComputerTool::OpenaiPreview, &[user(vec![text("go")])])
        .await
        .unwrap();
    fake.push(Reply::json(response(json!([message("sorry")]))));
    let call_id = only_call(&r).id.clone();
    let messages = [
        user(vec![text("go")]),
        ChatMessage {
            role: Role::Assistant,
            content: r.content.clone(),
            state: r.state.clone(),
        },
        user(vec![Block::ToolResult(ToolResult {
            call_id: call_id.clone(),
            is_error: true,
            text: Some("unknown action type `teleport`".into()),
            image: None,
            url: None,
            acknowledged_safety_checks: vec![],
        })]),
    ];
    step(&p, ComputerTool::OpenaiPreview, &messages)
        .await
        .unwrap();
    let input = &fake.last().body["input"];
    assert_eq!(input[0]["type"], "computer_call_output");
    assert_eq!(input[0]["call_id"], json!(call_id));
    assert!(
        input[1]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("teleport")
    );
}

#[tokio::test]
async fn function_calls_decode_and_malformed_arguments_are_reported() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::json(response(json!([
        message("Finishing."),
        {
            "type": "function_call",
            "id": "fc_67ca09c6bedc8190a7abfec07b1a1332096610f474011cc0",
            "call_id": "call_unLAR8MvFNptuiZK6K6HCy5k",
            "name": "set_task_status",
            "arguments": "{\"status\":\"completed\",\"message\":\"Settings opened\"}",
            "status": "completed"
        }
    ]))));
    fake.push(Reply::json(response(json!([{
        "type": "function_call",
        "id": "fc_2",
        "call_id": "call_2",
        "name": "set_task_status",
        "arguments": "{\"status\": \"completed\"",
        "status": "completed"
    }]))));
    let p = provider(&fake);

    let r = step(&p, ComputerTool::OpenaiComputer, &[user(vec![text("go")])])
        .await
        .unwrap();
    assert_eq!(r.content[0], text("Finishing."));
    let call = only_call(&r);
    assert_eq!(call.id, "call_unLAR8MvFNptuiZK6K6HCy5k");
    assert_eq!(
        call.call,
        Call::Function {
            name: "set_task_status".into(),
            arguments: json!({"status": "completed", "message": "Settings opened"}),
        }
    );
    assert_eq!(r.stop, StopReason::ToolUse);

    let r = step(&p, ComputerTool::OpenaiComputer, &[user(vec![text("go")])])
        .await
        .unwrap();
    let call = only_call(&r);
    assert_eq!(call.wire_name.as_deref(), Some("set_task_status"));
    let Call::Function { name, arguments } = &call.call else {
        panic!("{call:?}");
    };
    assert_eq!(name, INVALID_CALL);
    assert_eq!(arguments["tool"], "set_task_status");
    assert!(
        arguments["error"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert_eq!(arguments["raw"], "{\"status\": \"completed\"");
}

#[tokio::test]
async fn usage_stop_reasons_and_state() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::json(response(json!([message("All done.")]))));
    let mut incomplete = response(json!([reasoning()]));
    incomplete["status"] = json!("incomplete");
    incomplete["incomplete_details"] = json!({"reason": "max_output_tokens"});
    fake.push(Reply::json(incomplete));
    let mut refusal = response(json!([{
        "type": "message", "id": "msg_r", "status": "completed", "role": "assistant",
        "content": [{"type": "refusal", "refusal": "I can't help with that."}]
    }]));
    refusal["usage"] = json!({"input_tokens": 10, "output_tokens": 5, "total_tokens": 15});
    fake.push(Reply::json(refusal));
    let p = provider(&fake);

    let r = step(&p, ComputerTool::OpenaiPreview, &[user(vec![text("go")])])
        .await
        .unwrap();
    assert_eq!(r.content, vec![text("All done.")]);
    assert_eq!(r.stop, StopReason::EndTurn);
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 495,
            output_tokens: 37,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 1024,
        }
    );
    assert_eq!(
        r.state,
        openai_state(
            json!({"response_id": "resp_67cc5bc8e2f8819096e10fbb3ffb4b3f0d5b9c1e2f0a7c85"})
        )
    );

    let r = step(&p, ComputerTool::OpenaiPreview, &[user(vec![text("go")])])
        .await
        .unwrap();
    assert_eq!(r.stop, StopReason::MaxTokens);

    let r = step(&p, ComputerTool::OpenaiPreview, &[user(vec![text("go")])])
        .await
        .unwrap();
    assert_eq!(r.stop, StopReason::Refusal);
    assert_eq!(r.content, vec![text("I can't help with that.")]);
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Usage::default()
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn openai_error(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

#[tokio::test]
async fn rate_limits_wait_for_retry_after_ms_then_succeed() {
    let fake = FakeProvider::start().await;
    fake.push(
        Reply::status(
            429,
            openai_error(
                "Rate limit reached for gpt-5.4 on tokens per min (TPM): Limit 30000, Used 30000, \
                 Requested 1200. Please try again in 300ms.",
                "tokens",
                "rate_limit_exceeded",
            ),
        )
        .header("retry-after-ms", "300"),
    );
    fake.push(Reply::json(response(json!([message("ok")]))));
    let p = provider(&fake);
    let started = Instant::now();
    let r = step(&p, ComputerTool::OpenaiComputer, &[user(vec![text("go")])])
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.content, vec![text("ok")]);
    assert_eq!(fake.seen().len(), 2);
}

#[tokio::test]
async fn server_errors_are_retried() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::status(
        503,
        openai_error(
            "The server is overloaded or not ready yet.",
            "server_error",
            "",
        ),
    ));
    fake.push(Reply::json(response(json!([message("ok")]))));
    let p = provider(&fake);
    let r = step(&p, ComputerTool::OpenaiComputer, &[user(vec![text("go")])])
        .await
        .unwrap();
    assert_eq!(r.stop, StopReason::EndTurn);
    assert_eq!(fake.seen().len(), 2);
}

#[tokio::test]
async fn a_refused_key_names_where_to_fix_it() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::status(
        401,
        openai_error(
            "Incorrect API key provided: sk-test-123. You can find your API key at \
             https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        ),
    ));
    let p = provider(&fake);
    let err = step(&p, ComputerTool::OpenaiComputer, &[user(vec![text("go")])])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Auth { status: 401, .. }),
        "{err:?}"
    );
    let shown = err.to_string();
    assert!(shown.contains("OPENAI_API_KEY"), "{shown}");
    assert!(shown.contains("Incorrect API key"), "{shown}");
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn missing_capabilities_are_named() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::status(
        400,
        openai_error(
            "The model 'gpt-4o' does not support the 'computer_use_preview' tool.",
            "invalid_request_error",
            "unsupported_value",
        ),
    ));
    fake.push(Reply::status(
        400,
        openai_error(
            "Invalid content type. image_url is only supported by certain models.",
            "invalid_request_error",
            "",
        ),
    ));
    fake.push(Reply::status(
        400,
        openai_error(
            "Invalid 'input[0].content[0].text': empty string.",
            "invalid_request_error",
            "empty_string",
        ),
    ));
    let p = provider(&fake);
    let err = step(&p, ComputerTool::OpenaiPreview, &[user(vec![text("go")])])
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ProviderError::Unsupported {
                capability: Capability::ComputerTool,
                model,
                ..
            } if model == "computer-use-preview"
        ),
        "{err:?}"
    );
    let err = step(&p, ComputerTool::OpenaiPreview, &[user(vec![text("go")])])
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ProviderError::Unsupported {
                capability: Capability::Vision,
                ..
            }
        ),
        "{err:?}"
    );
    let err = step(&p, ComputerTool::OpenaiPreview, &[user(vec![text("go")])])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Rejected { status: 400, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn answers_without_the_documented_shape_are_bad_responses() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::raw(200, "<html>upstream proxy says hi</html>"));
    fake.push(Reply::json(json!({"id": "resp_1", "object": "response"})));
    let mut failed = response(json!([]));
    failed["status"] = json!("failed");
    failed["error"] = json!({"code": "server_error", "message": "The model crashed."});
    fake.push(Reply::json(failed));
    let p = provider(&fake);
    for expected in ["not JSON", "no `status`", "The model crashed."] {
        let err = step(&p, ComputerTool::OpenaiComputer, &[user(vec![text("go")])])
            .await
            .unwrap_err();
        assert!(matches!(&err, ProviderError::BadResponse { .. }), "{err:?}");
        assert!(err.to_string().contains(expected), "{err} lacks {expected}");
    }
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::json(response(json!([message("late")]))).after(Duration::from_secs(2)));
    let p = OpenAiProvider::new(
        "openai",
        endpoint(fake.url(), Duration::from_millis(150)),
        KEY.into(),
        reqwest::Client::new(),
    );
    let err = step(&p, ComputerTool::OpenaiComputer, &[user(vec![text("go")])])
        .await
        .unwrap_err();
    assert!(matches!(&err, ProviderError::Timeout { .. }), "{err:?}");
    assert_eq!(fake.seen().len(), 1);
}

#[test]
fn image_limits_follow_the_model_family() {
    assert_eq!(
        image_limit("computer-use-preview"),
        ImageLimit {
            max_long_edge: 2048,
            max_pixels: 1366 * 768,
        }
    );
    assert_eq!(
        image_limit("computer-use-preview-2025-03-11"),
        image_limit("gpt-4o")
    );
    let ga = image_limit("gpt-5.4");
    assert_eq!(ga.max_long_edge, 2048);
    assert!(ga.max_pixels >= 1600 * 900 && ga.max_pixels < 1920 * 1080);
}
