//! The Gemini provider against a fake `generateContent` server that answers in the shapes of
//! Google's computer use guide (generateContent version) and API reference.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytebot_agent::model::{
    Block, Call, Capability, ChatMessage, ComputerAction, ComputerTool, Display, FunctionTool,
    INVALID_CALL, Image, ModelRequest, ModelResponse, ModelSpec, MouseButton, Point, Provider,
    ProviderError, ProviderKind, ProviderState, Role, SafetyCheck, ScrollDirection, StopReason,
    ToolCall, ToolResult, Usage,
};
use bytebot_agent::providers::gemini::{GeminiProvider, image_limit};
use bytebot_agent::providers::http::{Endpoint, RetryPolicy};
use common::{FakeProvider, Reply};
use serde_json::{Value, json};

const MODEL: &str = "gemini-2.5-computer-use-preview-10-2025";
const KEY: &str = "AIza-test-key";
/// 1280×800 is not square, so a mix-up of the axes shows.
const DISPLAY: Display = Display {
    width: 1280,
    height: 800,
};

fn spec() -> ModelSpec {
    ModelSpec {
        id: "gemini-cu".into(),
        provider: "gemini".into(),
        kind: ProviderKind::Gemini,
        wire_name: MODEL.into(),
        title: "Gemini 2.5 Computer Use".into(),
        computer_tool: ComputerTool::GeminiComputerUse,
        image_limit: image_limit(MODEL),
        vision: true,
        context_tokens: 128_000,
        price: None,
    }
}

fn endpoint(fake: &FakeProvider, timeout: Duration) -> Endpoint {
    Endpoint {
        provider: "gemini".into(),
        base_url: fake.url(),
        key_hint: "GEMINI_API_KEY".into(),
        timeout,
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_secs(2),
        },
    }
}

fn provider(fake: &FakeProvider) -> GeminiProvider {
    GeminiProvider::new(
        "gemini",
        endpoint(fake, Duration::from_secs(10)),
        KEY.into(),
        reqwest::Client::new(),
    )
}

fn functions() -> Vec<FunctionTool> {
    vec![
        FunctionTool {
            name: "set_task_status".into(),
            description: "Mark the task completed or ask for help".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "status": {"type": "string", "enum": ["completed", "needs_help"]},
                    "message": {"type": "string"}
                },
                "required": ["status", "message"],
                "additionalProperties": false
            }),
        },
        FunctionTool {
            name: "read_file".into(),
            description: "Read a file".into(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        },
    ]
}

fn png(bytes: &[u8]) -> Image {
    Image {
        media_type: "image/png".into(),
        width: DISPLAY.width,
        height: DISPLAY.height,
        blob: None,
        data: Some(Arc::from(bytes)),
    }
}

fn user(content: Vec<Block>) -> ChatMessage {
    ChatMessage {
        role: Role::User,
        content,
        state: None,
    }
}

fn text(t: &str) -> Block {
    Block::Text { text: t.into() }
}

fn result(call_id: &str) -> ToolResult {
    ToolResult {
        call_id: call_id.into(),
        is_error: false,
        text: None,
        image: Some(png(b"after")),
        url: None,
        acknowledged_safety_checks: vec![],
    }
}

/// A 200 answer as `generateContent` sends it, with these candidate parts.
fn answer(parts: Value) -> Value {
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": parts},
            "finishReason": "STOP",
            "index": 0
        }],
        "usageMetadata": {
            "promptTokenCount": 1200,
            "candidatesTokenCount": 40,
            "totalTokenCount": 1240
        },
        "modelVersion": MODEL,
        "responseId": "resp-1"
    })
}

/// Google's error body (`google.rpc.Status`).
fn google_error(code: u16, status: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": status}})
}

async fn step(
    provider: &GeminiProvider,
    messages: &[ChatMessage],
) -> Result<ModelResponse, ProviderError> {
    let spec = spec();
    let functions = functions();
    provider
        .step(ModelRequest {
            model: &spec,
            system: "You operate a Linux desktop.",
            messages,
            functions: &functions,
            display: DISPLAY,
            max_tokens: 2048,
        })
        .await
}

fn first_task() -> Vec<ChatMessage> {
    vec![user(vec![
        text("Search for highly rated smart fridges"),
        Block::Image {
            image: png(b"before"),
        },
    ])]
}

fn tool_calls(response: &ModelResponse) -> Vec<&ToolCall> {
    response
        .content
        .iter()
        .filter_map(|b| match b {
            Block::ToolCall(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn actions(call: &ToolCall) -> &[ComputerAction] {
    match &call.call {
        Call::Computer { actions } => actions,
        other => panic!("{:?} is not a computer call: {other:?}", call.wire_name),
    }
}

fn at(x: i32, y: i32) -> Point {
    Point { x, y }
}

fn left_click(x: i32, y: i32) -> ComputerAction {
    ComputerAction::Click {
        at: at(x, y),
        button: MouseButton::Left,
        count: 1,
        hold_keys: vec![],
    }
}

fn keys(k: &[&str]) -> ComputerAction {
    ComputerAction::Key {
        keys: k.iter().map(|s| s.to_string()).collect(),
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn the_first_request_has_the_documented_shape() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::json(answer(json!([{"text": "Done."}]))));
    step(&provider(&fake), &first_task()).await.unwrap();

    let seen = fake.last();
    assert_eq!(seen.path, format!("/v1beta/models/{MODEL}:generateContent"));
    assert_eq!(seen.header("x-goog-api-key"), Some(KEY));
    assert!(
        !seen.path.contains("key="),
        "the key must not be in the URL"
    );
    let body = &seen.body;
    assert_eq!(
        body["tools"][0],
        json!({"computerUse": {"environment": "ENVIRONMENT_BROWSER"}})
    );
    let declarations = &body["tools"][1]["functionDeclarations"];
    assert_eq!(declarations[0]["name"], "set_task_status");
    assert_eq!(
        declarations[0]["parametersJsonSchema"]["required"],
        json!(["status", "message"])
    );
    assert_eq!(declarations[1]["name"], "read_file");
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "You operate a Linux desktop."}]})
    );
    assert_eq!(body["generationConfig"]["maxOutputTokens"], 2048);
    assert_eq!(body["contents"][0]["role"], "user");
    assert_eq!(
        body["contents"][0]["parts"],
        json!([
            {"text": "Search for highly rated smart fridges"},
            {"inlineData": {"mimeType": "image/png", "data": b64(b"before")}}
        ])
    );
}

#[tokio::test]
async fn the_model_turn_goes_back_verbatim_and_results_become_function_responses() {
    let fake = FakeProvider::start().await;
    // The model's turn as the API sent it, thought signature included.
    let model_parts = json!([
        {"text": "I will type the search query into the search bar."},
        {
            "functionCall": {
                "id": "fc-1",
                "name": "type_text_at",
                "args": {"x": 371, "y": 470, "text": "smart fridges", "press_enter": true}
            },
            "thoughtSignature": "c2lnbmF0dXJl"
        },
        {"functionCall": {"name": "read_file", "args": {"path": "/tmp/notes.txt"}}}
    ]);
    fake.push(Reply::json(answer(model_parts.clone())));
    let provider = provider(&fake);
    let mut messages = first_task();
    let response = step(&provider, &messages).await.unwrap();
    let calls = tool_calls(&response);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].id, "fc-1");
    let local_id = calls[1].id.clone();
    assert_ne!(local_id, "fc-1");

    messages.push(ChatMessage {
        role: Role::Assistant,
        content: response.content.clone(),
        state: response.state.clone(),
    });
    let mut typed = result("fc-1");
    typed.url = Some("https://www.google.com/search?q=smart+fridges".into());
    let read = ToolResult {
        call_id: local_id,
        is_error: false,
        text: Some("buy milk".into()),
        image: None,
        url: None,
        acknowledged_safety_checks: vec![],
    };
    messages.push(user(vec![
        Block::ToolResult(typed),
        Block::ToolResult(read),
    ]));
    fake.push(Reply::json(answer(json!([{"text": "Done."}]))));
    step(&provider, &messages).await.unwrap();

    let body = fake.last().body;
    assert_eq!(body["contents"][1]["role"], "model");
    assert_eq!(body["contents"][1]["parts"], model_parts);
    assert_eq!(body["contents"][2]["role"], "user");
    let parts = body["contents"][2]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(
        parts[0],
        json!({"functionResponse": {
            "id": "fc-1",
            "name": "type_text_at",
            "response": {"url": "https://www.google.com/search?q=smart+fridges"},
            "parts": [{"inlineData": {"mimeType": "image/png", "data": b64(b"after")}}]
        }})
    );
    // Our own function: its output, and no id because Gemini gave none.
    assert_eq!(
        parts[1],
        json!({"functionResponse": {
            "name": "read_file",
            "response": {"output": "buy milk"}
        }})
    );
}

#[tokio::test]
async fn failures_and_unknown_urls_are_reported_to_the_model() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::json(answer(json!([
        {"functionCall": {"id": "a", "name": "click_at", "args": {"x": 10, "y": 10}}},
        {"functionCall": {"id": "b", "name": "read_file", "args": {"path": "/nope"}}}
    ]))));
    fake.push(Reply::json(answer(json!([{"text": "ok"}]))));
    let provider = provider(&fake);
    let mut messages = first_task();
    let response = step(&provider, &messages).await.unwrap();
    messages.push(ChatMessage {
        role: Role::Assistant,
        content: response.content,
        state: response.state,
    });
    let mut click_failed = result("a");
    click_failed.is_error = true;
    click_failed.text = Some("the desktop did not answer".into());
    let read_failed = ToolResult {
        call_id: "b".into(),
        is_error: true,
        text: Some("no such file: /nope".into()),
        image: None,
        url: None,
        acknowledged_safety_checks: vec![],
    };
    messages.push(user(vec![
        Block::ToolResult(click_failed),
        Block::ToolResult(read_failed),
    ]));
    step(&provider, &messages).await.unwrap();

    let parts = &fake.last().body["contents"][2]["parts"];
    assert_eq!(
        parts[0]["functionResponse"]["response"],
        json!({"url": "about:blank", "error": "the desktop did not answer"})
    );
    assert_eq!(
        parts[1]["functionResponse"]["response"],
        json!({"error": "no such file: /nope"})
    );
}

#[tokio::test]
async fn legacy_actions_decode_onto_the_screenshot() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::json(answer(json!([
        {"text": "Several steps."},
        {"functionCall": {"name": "click_at", "args": {"x": 500, "y": 500}}},
        {"functionCall": {"name": "hover_at", "args": {"x": 250, "y": 150}}},
        {"functionCall": {"name": "type_text_at", "args": {"x": 400, "y": 250, "text": "search query", "press_enter": false}}},
        {"functionCall": {"name": "type_text_at", "args": {"x": 0, "y": 999, "text": "hi"}}},
        {"functionCall": {"name": "type_text_at", "args": {"x": 10, "y": 10, "text": "x", "clear_before_typing": false, "press_enter": false}}},
        {"functionCall": {"name": "key_combination", "args": {"keys": "control+c"}}},
        {"functionCall": {"name": "key_combination", "args": {"keys": "Enter"}}},
        {"functionCall": {"name": "scroll_document", "args": {"direction": "down"}}},
        {"functionCall": {"name": "scroll_at", "args": {"x": 500, "y": 500, "direction": "down", "magnitude": 400}}},
        {"functionCall": {"name": "scroll_at", "args": {"x": 500, "y": 500, "direction": "left"}}},
        {"functionCall": {"name": "drag_and_drop", "args": {"x": 100, "y": 100, "destination_x": 500, "destination_y": 500}}},
        {"functionCall": {"name": "navigate", "args": {"url": "https://www.wikipedia.org"}}},
        {"functionCall": {"name": "wait_5_seconds", "args": {}}},
        {"functionCall": {"name": "go_back", "args": {}}},
        {"functionCall": {"name": "go_forward", "args": {}}},
        {"functionCall": {"name": "search", "args": {}}},
        {"functionCall": {"name": "open_web_browser", "args": {}}},
        {"functionCall": {"name": "click_at", "args": {"x": 1000, "y": 1200}}}
    ]))));
    let response = step(&provider(&fake), &first_task()).await.unwrap();
    assert_eq!(response.stop, StopReason::ToolUse);
    assert_eq!(response.content[0], text("Several steps."));
    let calls = tool_calls(&response);
    let expected: Vec<(&str, Vec<ComputerAction>)> = vec![
        // 500 on the grid is the middle: 640 of 1280, 400 of 800.
        ("click_at", vec![left_click(640, 400)]),
        ("hover_at", vec![ComputerAction::Move { at: at(320, 120) }]),
        (
            "type_text_at",
            vec![
                left_click(512, 200),
                keys(&["ctrl", "a"]),
                keys(&["Delete"]),
                ComputerAction::Type {
                    text: "search query".into(),
                },
            ],
        ),
        // Documented defaults: clear first, Enter after.
        (
            "type_text_at",
            vec![
                left_click(0, 799),
                keys(&["ctrl", "a"]),
                keys(&["Delete"]),
                ComputerAction::Type { text: "hi".into() },
                keys(&["Return"]),
            ],
        ),
        (
            "type_text_at",
            vec![left_click(13, 8), ComputerAction::Type { text: "x".into() }],
        ),
        ("key_combination", vec![keys(&["ctrl", "c"])]),
        ("key_combination", vec![keys(&["Return"])]),
        // A page: the default magnitude 800 of 1000 → 640 of 800 px → 6 notches.
        (
            "scroll_document",
            vec![ComputerAction::Scroll {
                at: None,
                direction: ScrollDirection::Down,
                amount: 6,
                hold_keys: vec![],
            }],
        ),
        // 400 of 1000 along the 800 px axis = 320 px → 3 notches.
        (
            "scroll_at",
            vec![ComputerAction::Scroll {
                at: Some(at(640, 400)),
                direction: ScrollDirection::Down,
                amount: 3,
                hold_keys: vec![],
            }],
        ),
        // Horizontal: 800 of 1000 along the 1280 px axis = 1024 px → 10 notches.
        (
            "scroll_at",
            vec![ComputerAction::Scroll {
                at: Some(at(640, 400)),
                direction: ScrollDirection::Left,
                amount: 10,
                hold_keys: vec![],
            }],
        ),
        (
            "drag_and_drop",
            vec![ComputerAction::Drag {
                path: vec![at(128, 80), at(640, 400)],
                hold_keys: vec![],
            }],
        ),
        (
            "navigate",
            vec![ComputerAction::Navigate {
                url: "https://www.wikipedia.org".into(),
            }],
        ),
        (
            "wait_5_seconds",
            vec![ComputerAction::Wait { duration_ms: 5000 }],
        ),
        ("go_back", vec![keys(&["alt", "Left"])]),
        ("go_forward", vec![keys(&["alt", "Right"])]),
        (
            "search",
            vec![ComputerAction::Navigate {
                url: "https://www.google.com".into(),
            }],
        ),
        ("open_web_browser", vec![ComputerAction::Screenshot]),
        // Off the grid: clamped to the last pixel.
        ("click_at", vec![left_click(1279, 799)]),
    ];
    assert_eq!(calls.len(), expected.len());
    for (call, (name, want)) in calls.iter().zip(&expected) {
        assert_eq!(call.wire_name.as_deref(), Some(*name));
        assert_eq!(actions(call), want.as_slice(), "{name}");
        assert!(call.safety_checks.is_empty());
    }
}

#[tokio::test]
async fn gemini_3_5_actions_decode_too() {
    let fake = FakeProvider::start().await;
    let intent = "Click the search box to type the destination.";
    fake.push(Reply::json(answer(json!([
        {"functionCall": {"name": "click", "args": {"x": 450, "y": 120, "intent": intent}}},
        {"functionCall": {"name": "double_click", "args": {"x": 500, "y": 500, "intent": intent}}},
        {"functionCall": {"name": "triple_click", "args": {"x": 500, "y": 500, "intent": intent}}},
        {"functionCall": {"name": "right_click", "args": {"x": 500, "y": 500, "intent": intent}}},
        {"functionCall": {"name": "middle_click", "args": {"x": 500, "y": 500, "intent": intent}}},
        {"functionCall": {"name": "move", "args": {"x": 500, "y": 500, "intent": intent}}},
        {"functionCall": {"name": "mouse_down", "args": {"x": 100, "y": 100, "intent": intent}}},
        {"functionCall": {"name": "mouse_up", "args": {"x": 500, "y": 500, "intent": intent}}},
        {"functionCall": {"name": "type", "args": {"text": "Honolulu", "press_enter": true, "intent": intent}}},
        {"functionCall": {"name": "drag_and_drop", "args": {"start_x": 0, "start_y": 0, "end_x": 999, "end_y": 999, "intent": intent}}},
        {"functionCall": {"name": "wait", "args": {"seconds": 2, "intent": intent}}},
        {"functionCall": {"name": "wait", "args": {"intent": intent}}},
        {"functionCall": {"name": "press_key", "args": {"key": "ENTER", "intent": intent}}},
        {"functionCall": {"name": "hotkey", "args": {"keys": ["Control", "A"], "intent": intent}}},
        {"functionCall": {"name": "take_screenshot", "args": {"intent": intent}}},
        {"functionCall": {"name": "scroll", "args": {"x": 500, "y": 500, "direction": "up", "intent": intent}}},
        {"functionCall": {"name": "scroll", "args": {"x": 500, "y": 500, "direction": "right", "magnitude_in_pixels": 600, "intent": intent}}}
    ]))));
    let response = step(&provider(&fake), &first_task()).await.unwrap();
    let calls = tool_calls(&response);
    let click = |button, count| ComputerAction::Click {
        at: at(640, 400),
        button,
        count,
        hold_keys: vec![],
    };
    let expected = vec![
        vec![left_click(576, 96)],
        vec![click(MouseButton::Left, 2)],
        vec![click(MouseButton::Left, 3)],
        vec![click(MouseButton::Right, 1)],
        vec![click(MouseButton::Middle, 1)],
        vec![ComputerAction::Move { at: at(640, 400) }],
        vec![ComputerAction::MouseDown {
            at: Some(at(128, 80)),
            button: MouseButton::Left,
        }],
        vec![ComputerAction::MouseUp {
            at: Some(at(640, 400)),
            button: MouseButton::Left,
        }],
        vec![
            ComputerAction::Type {
                text: "Honolulu".into(),
            },
            keys(&["Return"]),
        ],
        vec![ComputerAction::Drag {
            path: vec![at(0, 0), at(1279, 799)],
            hold_keys: vec![],
        }],
        vec![ComputerAction::Wait { duration_ms: 2000 }],
        vec![ComputerAction::Wait { duration_ms: 1000 }],
        vec![keys(&["Return"])],
        vec![keys(&["ctrl", "a"])],
        vec![ComputerAction::Screenshot],
        // Default 300 px → 3 notches.
        vec![ComputerAction::Scroll {
            at: Some(at(640, 400)),
            direction: ScrollDirection::Up,
            amount: 3,
            hold_keys: vec![],
        }],
        vec![ComputerAction::Scroll {
            at: Some(at(640, 400)),
            direction: ScrollDirection::Right,
            amount: 6,
            hold_keys: vec![],
        }],
    ];
    assert_eq!(calls.len(), expected.len());
    for (call, want) in calls.iter().zip(&expected) {
        assert_eq!(actions(call), want.as_slice(), "{:?}", call.wire_name);
    }
}

#[tokio::test]
async fn calls_it_cannot_run_come_back_as_invalid_calls_with_the_reason() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::json(answer(json!([
        {"functionCall": {"name": "fly_to_the_moon", "args": {"speed": 3}}},
        {"functionCall": {"name": "click_at", "args": {"x": 10}}},
        {"functionCall": {"name": "key_down", "args": {"key": "shift"}}},
        {"functionCall": {"name": "navigate", "args": {"url": "javascript:alert(1)"}}},
        {"functionCall": {"name": "scroll_document", "args": {"direction": "sideways"}}},
        {"functionCall": {"name": "set_task_status", "args": {"status": "completed", "message": "Found three fridges"}}}
    ]))));
    let response = step(&provider(&fake), &first_task()).await.unwrap();
    let calls = tool_calls(&response);
    let reasons: Vec<(String, String)> = calls[..5]
        .iter()
        .map(|c| match &c.call {
            Call::Function { name, arguments } => {
                assert_eq!(name, INVALID_CALL);
                assert_eq!(arguments["tool"], c.wire_name.clone().unwrap());
                (
                    arguments["tool"].as_str().unwrap().to_string(),
                    arguments["error"].as_str().unwrap().to_string(),
                )
            }
            other => panic!("not an invalid call: {other:?}"),
        })
        .collect();
    assert!(reasons[0].1.contains("unknown function"), "{reasons:?}");
    assert!(reasons[1].1.contains("`x` and `y`"), "{reasons:?}");
    assert!(reasons[2].1.contains("hotkey"), "{reasons:?}");
    assert!(reasons[3].1.contains("http"), "{reasons:?}");
    assert!(reasons[4].1.contains("sideways"), "{reasons:?}");
    // The agent's own function is a plain function call.
    assert_eq!(
        calls[5].call,
        Call::Function {
            name: "set_task_status".into(),
            arguments: json!({"status": "completed", "message": "Found three fridges"}),
        }
    );
}

#[tokio::test]
async fn made_up_ids_are_stable_and_distinct() {
    let fake = FakeProvider::start().await;
    let parts = json!([
        {"functionCall": {"name": "click_at", "args": {"x": 1, "y": 1}}},
        {"functionCall": {"name": "click_at", "args": {"x": 2, "y": 2}}}
    ]);
    fake.push(Reply::json(answer(parts.clone())));
    fake.push(Reply::json(answer(parts)));
    let provider = provider(&fake);
    let first = step(&provider, &first_task()).await.unwrap();
    let again = step(&provider, &first_task()).await.unwrap();
    let ids =
        |r: &ModelResponse| -> Vec<String> { tool_calls(r).iter().map(|c| c.id.clone()).collect() };
    assert_eq!(ids(&first), ids(&again));
    assert_ne!(ids(&first)[0], ids(&first)[1]);
}

#[tokio::test]
async fn a_safety_decision_waits_for_a_person_and_is_acknowledged_only_when_they_did() {
    let fake = FakeProvider::start().await;
    let explanation = "I have encountered a CAPTCHA challenge that requires interaction. I need \
                       you to complete the challenge by clicking the 'I'm not a robot' checkbox.";
    let parts = json!([
        {"text": "I need to click the 'I'm not a robot' checkbox."},
        {"functionCall": {"name": "click_at", "args": {
            "x": 60,
            "y": 100,
            "safety_decision": {"explanation": explanation, "decision": "require_confirmation"}
        }}}
    ]);
    fake.push(Reply::json(answer(parts)));
    let provider = provider(&fake);
    let messages = first_task();
    let response = step(&provider, &messages).await.unwrap();
    let call = tool_calls(&response)[0].clone();
    assert_eq!(actions(&call), [left_click(77, 80)]);
    assert_eq!(
        call.safety_checks,
        vec![SafetyCheck {
            id: call.id.clone(),
            code: "require_confirmation".into(),
            message: explanation.into(),
        }]
    );

    let history = |acknowledged: Vec<SafetyCheck>| {
        let mut messages = messages.clone();
        messages.push(ChatMessage {
            role: Role::Assistant,
            content: response.content.clone(),
            state: response.state.clone(),
        });
        let mut done = result(&call.id);
        done.url = Some("https://www.google.com/sorry".into());
        done.acknowledged_safety_checks = acknowledged;
        messages.push(user(vec![Block::ToolResult(done)]));
        messages
    };
    fake.push(Reply::json(answer(json!([{"text": "ok"}]))));
    step(&provider, &history(call.safety_checks.clone()))
        .await
        .unwrap();
    let acknowledged = fake.last().body["contents"][2]["parts"][0]["functionResponse"].clone();
    assert_eq!(
        acknowledged["response"],
        json!({"url": "https://www.google.com/sorry", "safety_acknowledgement": "true"})
    );
    assert!(acknowledged.get("id").is_none(), "made-up ids stay local");

    fake.push(Reply::json(answer(json!([{"text": "ok"}]))));
    step(&provider, &history(vec![])).await.unwrap();
    let unacknowledged = &fake.last().body["contents"][2]["parts"][0]["functionResponse"];
    assert_eq!(
        unacknowledged["response"],
        json!({"url": "https://www.google.com/sorry"})
    );
}

#[tokio::test]
async fn another_providers_history_is_told_in_words() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::json(answer(json!([{"text": "ok"}]))));
    let mut messages = first_task();
    messages.push(ChatMessage {
        role: Role::Assistant,
        content: vec![
            text("Clicking the search box."),
            Block::ToolCall(ToolCall {
                id: "toolu_01".into(),
                wire_name: None,
                call: Call::Computer {
                    actions: vec![left_click(10, 20)],
                },
                safety_checks: vec![],
            }),
            Block::ToolCall(ToolCall {
                id: "toolu_02".into(),
                wire_name: None,
                call: Call::Function {
                    name: "read_file".into(),
                    arguments: json!({"path": "/tmp/a"}),
                },
                safety_checks: vec![],
            }),
        ],
        state: Some(ProviderState {
            provider: ProviderKind::Anthropic,
            value: json!({"id": "msg_1"}),
        }),
    });
    let mut read = result("toolu_02");
    read.image = None;
    read.text = Some("hello".into());
    messages.push(user(vec![
        Block::ToolResult(result("toolu_01")),
        Block::ToolResult(read),
    ]));
    step(&provider(&fake), &messages).await.unwrap();

    // Rebuilt function calls would lack Gemini 3's thought signatures: all become notes.
    let body = fake.last().body;
    let note = |part: &Value| part["text"].as_str().unwrap_or_default().to_string();
    let model = body["contents"][1]["parts"].as_array().unwrap();
    assert_eq!(model.len(), 3);
    assert_eq!(model[0], json!({"text": "Clicking the search box."}));
    assert!(
        note(&model[1]).contains("earlier call computer"),
        "{model:?}"
    );
    assert!(
        note(&model[2]).contains("earlier call read_file"),
        "{model:?}"
    );
    let answer = body["contents"][2]["parts"].as_array().unwrap();
    assert!(answer.iter().all(|p| p.get("functionResponse").is_none()));
    assert!(note(&answer[0]).contains("done"), "{answer:?}");
    assert_eq!(answer[1]["inlineData"]["data"], b64(b"after"));
    assert!(note(&answer[2]).contains("hello"), "{answer:?}");
}

#[tokio::test]
async fn usage_and_finish_reasons_are_read() {
    let fake = FakeProvider::start().await;
    let mut body = answer(json!([{"text": "The cheapest fridge is"}]));
    body["candidates"][0]["finishReason"] = json!("MAX_TOKENS");
    body["usageMetadata"] = json!({
        "promptTokenCount": 1200,
        "cachedContentTokenCount": 200,
        "candidatesTokenCount": 50,
        "thoughtsTokenCount": 30,
        "totalTokenCount": 1280
    });
    fake.push(Reply::json(body));
    let mut refused = answer(json!([]));
    refused["candidates"][0]["finishReason"] = json!("SAFETY");
    fake.push(Reply::json(refused));
    let mut thinking = answer(json!([
        {"text": "Let me look at the page first.", "thought": true},
        {"text": "All done."}
    ]));
    thinking["candidates"][0]["finishReason"] = json!("STOP");
    fake.push(Reply::json(thinking));

    let provider = provider(&fake);
    let response = step(&provider, &first_task()).await.unwrap();
    assert_eq!(response.stop, StopReason::MaxTokens);
    assert_eq!(
        response.usage,
        Usage {
            input_tokens: 1000,
            output_tokens: 80,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 200,
        }
    );
    let response = step(&provider, &first_task()).await.unwrap();
    assert_eq!(response.stop, StopReason::Refusal);
    assert!(response.content.is_empty());

    let response = step(&provider, &first_task()).await.unwrap();
    assert_eq!(response.stop, StopReason::EndTurn);
    assert!(matches!(
        &response.content[0],
        Block::Opaque { provider: ProviderKind::Gemini, value } if value["thought"] == true
    ));
    assert_eq!(response.content[1], text("All done."));
}

#[tokio::test]
async fn rate_limits_are_retried_after_the_wait_asked_for() {
    let fake = FakeProvider::start().await;
    fake.push(
        Reply::status(
            429,
            google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
            ),
        )
        .header("retry-after", "0.05"),
    );
    fake.push(Reply::json(answer(json!([{"text": "Done."}]))));
    let started = std::time::Instant::now();
    let response = step(&provider(&fake), &first_task()).await.unwrap();
    assert_eq!(response.content, vec![text("Done.")]);
    assert_eq!(fake.seen().len(), 2);
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[tokio::test]
async fn unavailable_is_retried() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::status(
        503,
        google_error(
            503,
            "UNAVAILABLE",
            "The model is overloaded. Please try again later.",
        ),
    ));
    fake.push(Reply::json(answer(json!([{"text": "Done."}]))));
    step(&provider(&fake), &first_task()).await.unwrap();
    assert_eq!(fake.seen().len(), 2);
}

#[tokio::test]
async fn a_refused_key_names_the_setting_to_fix() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::status(
        403,
        google_error(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        ),
    ));
    let error = step(&provider(&fake), &first_task()).await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::Auth { status: 403, key_hint, .. } if key_hint == "GEMINI_API_KEY"),
        "{error:?}"
    );
    assert!(error.to_string().contains("GEMINI_API_KEY"));
    assert_eq!(fake.seen().len(), 1, "a refused key is not retried");

    // Gemini answers an invalid key with 400 INVALID_ARGUMENT.
    let fake = FakeProvider::start().await;
    let mut body = google_error(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
    );
    body["error"]["details"] = json!([{
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"}
    }]);
    fake.push(Reply::status(400, body));
    let error = step(&provider(&fake), &first_task()).await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::Auth { status: 400, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_model_without_computer_use_is_reported_as_unsupported() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::status(
        400,
        google_error(
            400,
            "INVALID_ARGUMENT",
            "Computer Use is not supported for models/gemini-2.0-flash.",
        ),
    ));
    let error = step(&provider(&fake), &first_task()).await.unwrap_err();
    assert!(
        matches!(
            &error,
            ProviderError::Unsupported { capability: Capability::ComputerTool, model, .. }
                if model == MODEL
        ),
        "{error:?}"
    );

    // Other 400s stay plain refusals with Google's message.
    let fake = FakeProvider::start().await;
    fake.push(Reply::status(
        400,
        google_error(
            400,
            "INVALID_ARGUMENT",
            "Request contains an invalid argument.",
        ),
    ));
    let error = step(&provider(&fake), &first_task()).await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::Rejected { status: 400, message, .. }
            if message == "Request contains an invalid argument."),
        "{error:?}"
    );
}

#[tokio::test]
async fn unreadable_or_empty_answers_are_bad_responses() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::raw(200, "<html>upstream hiccup</html>"));
    fake.push(Reply::json(
        json!({"usageMetadata": {"promptTokenCount": 5}}),
    ));
    let provider = provider(&fake);
    for _ in 0..2 {
        let error = step(&provider, &first_task()).await.unwrap_err();
        assert!(
            matches!(error, ProviderError::BadResponse { .. }),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn a_blocked_prompt_says_so() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::json(json!({
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
        "usageMetadata": {"promptTokenCount": 900, "totalTokenCount": 900}
    })));
    let error = step(&provider(&fake), &first_task()).await.unwrap_err();
    match error {
        ProviderError::Rejected { message, .. } => {
            assert!(message.contains("blocked the prompt (SAFETY"), "{message}")
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_slow_answer_times_out() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::json(answer(json!([{"text": "late"}]))).after(Duration::from_secs(3)));
    let provider = GeminiProvider::new(
        "gemini",
        endpoint(&fake, Duration::from_millis(200)),
        KEY.into(),
        reqwest::Client::new(),
    );
    let error = step(&provider, &first_task()).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Timeout { after, .. } if after == Duration::from_millis(200)),
        "{error:?}"
    );
}

#[test]
fn screenshots_are_sized_for_the_documented_viewport() {
    let limit = image_limit(MODEL);
    assert_eq!(limit.max_long_edge, 1440);
    assert_eq!(limit.max_pixels, 1440 * 900);
}
