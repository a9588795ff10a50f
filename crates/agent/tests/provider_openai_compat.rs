//! The chat completions provider against a fake server answering in the shapes of OpenAI's
//! chat completions reference and of Ollama's and vLLM's real error bodies.
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
use bytebot_agent::providers::http::{Endpoint, RetryPolicy};
use bytebot_agent::providers::openai_compat::{OpenAiCompatProvider, computer_function};
use common::{FakeProvider, Reply};
use serde_json::{Value, json};

const DISPLAY: Display = Display {
    width: 1280,
    height: 800,
};

/// The data URL of `PNG_BYTES`.
const PNG_URL: &str = "data:image/png;base64,iVBORw==";
const PNG_BYTES: &[u8] = b"\x89PNG";

fn spec(vision: bool) -> ModelSpec {
    ModelSpec {
        id: "local".into(),
        provider: "ollama".into(),
        kind: ProviderKind::OpenaiCompatible,
        wire_name: "qwen2.5vl:7b".into(),
        title: "Qwen 2.5 VL".into(),
        computer_tool: ComputerTool::Function,
        image_limit: ImageLimit {
            max_long_edge: 1280,
            max_pixels: 1_024_000,
        },
        vision,
        context_tokens: 32_000,
        price: None,
    }
}

fn endpoint(base_url: String) -> Endpoint {
    Endpoint {
        provider: "ollama".into(),
        base_url,
        key_hint: "[providers.ollama] api_key".into(),
        timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_secs(1),
        },
    }
}

fn provider(fake: &FakeProvider) -> OpenAiCompatProvider {
    OpenAiCompatProvider::new("ollama", endpoint(fake.url()), None, reqwest::Client::new())
}

fn png() -> Image {
    Image {
        media_type: "image/png".into(),
        width: 1280,
        height: 800,
        blob: None,
        data: Some(Arc::from(PNG_BYTES)),
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

fn status_tool() -> FunctionTool {
    FunctionTool {
        name: "set_task_status".into(),
        description: "Finish the task or ask for help.".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["completed", "needs_help"]},
                "message": {"type": "string"}
            },
            "required": ["status"]
        }),
    }
}

async fn step(
    p: &OpenAiCompatProvider,
    model: &ModelSpec,
    messages: &[ChatMessage],
) -> Result<ModelResponse, ProviderError> {
    let functions = [status_tool()];
    p.step(ModelRequest {
        model,
        system: "You operate a Linux desktop.",
        messages,
        functions: &functions,
        display: DISPLAY,
        max_tokens: 1024,
    })
    .await
}

/// A chat completion as OpenAI's reference shows it.
fn completion(message: Value, finish_reason: &str) -> Value {
    json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "qwen2.5vl:7b",
        "system_fingerprint": "fp_ollama",
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason
        }],
        "usage": {
            "prompt_tokens": 1117,
            "completion_tokens": 46,
            "total_tokens": 1163,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0
            }
        }
    })
}

fn text_reply(t: &str) -> Reply {
    Reply::json(completion(
        json!({"role": "assistant", "content": t, "refusal": null, "annotations": []}),
        "stop",
    ))
}

/// An assistant message calling tools; `calls` are (id, function name, arguments as sent).
fn tool_reply(calls: &[(&str, &str, &str)]) -> Reply {
    let tool_calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, args)| {
            json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
        })
        .collect();
    Reply::json(completion(
        json!({"role": "assistant", "content": null, "tool_calls": tool_calls, "refusal": null}),
        "tool_calls",
    ))
}

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

/// The reason an INVALID_CALL carries, after checking its shape.
fn invalid_reason(call: &ToolCall, tool: &str, raw: &str) -> String {
    let Call::Function { name, arguments } = &call.call else {
        panic!("expected {INVALID_CALL}, got {call:?}");
    };
    assert_eq!(name, INVALID_CALL);
    assert_eq!(arguments["tool"], tool);
    assert_eq!(arguments["raw"], raw);
    arguments["error"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn posts_to_v1_chat_completions_with_a_bearer_key() {
    let fake = FakeProvider::start().await;
    fake.push(text_reply("Hello."));
    let p = OpenAiCompatProvider::new(
        "openrouter",
        endpoint(fake.url()),
        Some("sk-or-test".into()),
        reqwest::Client::new(),
    );
    assert_eq!(p.kind(), ProviderKind::OpenaiCompatible);
    assert_eq!(p.name(), "openrouter");
    step(&p, &spec(true), &[user(vec![text("Open the browser.")])])
        .await
        .unwrap();

    let seen = fake.last();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-or-test"));
    assert_eq!(seen.body["model"], "qwen2.5vl:7b");
    assert_eq!(seen.body["max_tokens"], 1024);
    assert_eq!(seen.body["stream"], false);
    assert_eq!(
        seen.body["messages"],
        json!([
            {"role": "system", "content": "You operate a Linux desktop."},
            {"role": "user", "content": "Open the browser."}
        ])
    );
}

#[tokio::test]
async fn a_base_ending_in_v1_is_not_doubled_and_no_key_sends_no_header() {
    let fake = FakeProvider::start().await;
    fake.push(text_reply("Hi."));
    fake.push(text_reply("Hi."));
    for base in [format!("{}/v1", fake.url()), format!("{}/v1/", fake.url())] {
        let p = OpenAiCompatProvider::new(
            "vllm",
            endpoint(base),
            Some("  ".into()),
            reqwest::Client::new(),
        );
        step(&p, &spec(true), &[user(vec![text("hi")])])
            .await
            .unwrap();
        let seen = fake.last();
        assert_eq!(seen.path, "/v1/chat/completions");
        assert_eq!(seen.header("authorization"), None);
    }
    assert_eq!(fake.seen().len(), 2);
}

#[tokio::test]
async fn tools_are_the_computer_function_and_the_agents_functions() {
    let fake = FakeProvider::start().await;
    fake.push(text_reply("ok"));
    step(&provider(&fake), &spec(true), &[user(vec![text("go")])])
        .await
        .unwrap();

    let tools = fake.last().body["tools"].clone();
    let tools = tools.as_array().unwrap();
    assert_eq!(tools.len(), 2);
    assert_eq!(tools[0]["type"], "function");
    assert_eq!(tools[0]["function"]["name"], "computer");
    let params = &tools[0]["function"]["parameters"];
    assert_eq!(params["type"], "object");
    assert_eq!(params["required"], json!(["action"]));
    assert_eq!(
        params["properties"]["action"]["enum"],
        json!([
            "screenshot",
            "click",
            "double_click",
            "triple_click",
            "right_click",
            "middle_click",
            "mouse_move",
            "drag",
            "scroll",
            "type",
            "key",
            "hold_key",
            "wait",
            "cursor_position"
        ])
    );
    for field in [
        "x",
        "y",
        "path",
        "direction",
        "amount",
        "text",
        "keys",
        "duration_ms",
    ] {
        assert!(params["properties"][field].is_object(), "no {field}");
    }
    assert_eq!(params["properties"]["x"]["maximum"], 1279);
    assert_eq!(params["properties"]["y"]["maximum"], 799);
    let description = tools[0]["function"]["description"].as_str().unwrap();
    assert!(description.contains("1280x800"), "{description}");
    assert!(description.contains("top"), "{description}");
    assert_eq!(tools[0]["function"], {
        let f = computer_function(DISPLAY);
        json!({"name": f.name, "description": f.description, "parameters": f.parameters})
    });

    let status = status_tool();
    assert_eq!(
        tools[1],
        json!({
            "type": "function",
            "function": {
                "name": status.name,
                "description": status.description,
                "parameters": status.parameters
            }
        })
    );
}

#[tokio::test]
async fn user_images_go_as_image_url_parts_with_data_urls() {
    let fake = FakeProvider::start().await;
    fake.push(text_reply("A desktop."));
    let message = user(vec![
        text("What is on this screen?"),
        Block::Image { image: png() },
    ]);
    step(&provider(&fake), &spec(true), &[message])
        .await
        .unwrap();
    assert_eq!(
        fake.last().body["messages"][1],
        json!({
            "role": "user",
            "content": [
                {"type": "text", "text": "What is on this screen?"},
                {"type": "image_url", "image_url": {"url": PNG_URL}}
            ]
        })
    );
}

/// One turn of history: the model clicked and set a status, one result failed, the other
/// brought a screenshot, and the person added a word.
fn history() -> Vec<ChatMessage> {
    vec![
        user(vec![text("Open the settings.")]),
        ChatMessage {
            role: Role::Assistant,
            content: vec![
                text("Clicking the gear."),
                Block::ToolCall(ToolCall {
                    id: "call_1".into(),
                    wire_name: None,
                    call: Call::Computer {
                        actions: vec![ComputerAction::Click {
                            at: Point { x: 640, y: 20 },
                            button: MouseButton::Left,
                            count: 2,
                            hold_keys: vec![],
                        }],
                    },
                    safety_checks: vec![],
                }),
                Block::ToolCall(ToolCall {
                    id: "call_2".into(),
                    wire_name: None,
                    call: Call::Function {
                        name: "set_task_status".into(),
                        arguments: json!({"status": "needs_help", "message": "stuck"}),
                    },
                    safety_checks: vec![],
                }),
                Block::ToolCall(ToolCall {
                    id: "call_3".into(),
                    wire_name: None,
                    call: Call::Function {
                        name: INVALID_CALL.into(),
                        arguments: json!({
                            "tool": "computer",
                            "error": "unknown action \"tap\"",
                            "raw": "{\"action\":\"tap\"}"
                        }),
                    },
                    safety_checks: vec![],
                }),
                Block::Opaque {
                    provider: ProviderKind::Anthropic,
                    value: json!({"type": "thinking", "thinking": "…", "signature": "x"}),
                },
            ],
            state: None,
        },
        user(vec![
            Block::ToolResult(ToolResult {
                call_id: "call_1".into(),
                is_error: false,
                text: None,
                image: Some(png()),
                url: None,
                acknowledged_safety_checks: vec![],
            }),
            Block::ToolResult(ToolResult {
                call_id: "call_2".into(),
                is_error: true,
                text: Some("the task is not running".into()),
                image: None,
                url: None,
                acknowledged_safety_checks: vec![],
            }),
            Block::ToolResult(ToolResult {
                call_id: "call_3".into(),
                is_error: true,
                text: Some("unknown action \"tap\"".into()),
                image: None,
                url: None,
                acknowledged_safety_checks: vec![],
            }),
            text("Use the gear at the top."),
        ]),
    ]
}

#[tokio::test]
async fn history_becomes_tool_calls_tool_messages_then_one_user_message_with_the_screenshot() {
    let fake = FakeProvider::start().await;
    fake.push(text_reply("ok"));
    step(&provider(&fake), &spec(true), &history())
        .await
        .unwrap();
    let messages = fake.last().body["messages"].as_array().unwrap().clone();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "system",
            "user",
            "assistant",
            "tool",
            "tool",
            "tool",
            "user"
        ]
    );

    let assistant = &messages[2];
    assert_eq!(assistant["content"], "Clicking the gear.");
    let tool_calls = assistant["tool_calls"].as_array().unwrap();
    assert_eq!(tool_calls.len(), 3);
    assert_eq!(tool_calls[0]["id"], "call_1");
    assert_eq!(tool_calls[0]["type"], "function");
    assert_eq!(tool_calls[0]["function"]["name"], "computer");
    // Arguments travel as a JSON string.
    let args: Value =
        serde_json::from_str(tool_calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"action": "double_click", "x": 640, "y": 20}));
    assert_eq!(tool_calls[1]["function"]["name"], "set_task_status");
    let args: Value =
        serde_json::from_str(tool_calls[1]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"status": "needs_help", "message": "stuck"}));
    // A call we could not decode is echoed as the model sent it.
    assert_eq!(
        tool_calls[2]["function"],
        json!({"name": "computer", "arguments": "{\"action\":\"tap\"}"})
    );

    assert_eq!(messages[3]["tool_call_id"], "call_1");
    let first = messages[3]["content"].as_str().unwrap();
    assert!(first.starts_with("done"), "{first}");
    assert!(!first.contains("omitted"), "{first}");
    assert_eq!(
        messages[4],
        json!({"role": "tool", "tool_call_id": "call_2", "content": "Error: the task is not running"})
    );
    assert_eq!(messages[5]["tool_call_id"], "call_3");
    assert_eq!(messages[5]["content"], "Error: unknown action \"tap\"");

    let content = messages[6]["content"].as_array().unwrap();
    assert_eq!(content.len(), 3);
    assert_eq!(content[0]["type"], "text");
    assert!(content[0]["text"].as_str().unwrap().contains("call_1"));
    assert_eq!(
        content[1],
        json!({"type": "image_url", "image_url": {"url": PNG_URL}})
    );
    assert_eq!(
        content[2],
        json!({"type": "text", "text": "Use the gear at the top."})
    );
    // Other providers' opaque items stay out.
    assert!(!fake.last().body.to_string().contains("signature"));
}

#[tokio::test]
async fn a_model_without_vision_gets_no_images_and_is_told_so() {
    let fake = FakeProvider::start().await;
    fake.push(text_reply("ok"));
    let mut messages = history();
    messages.push(ChatMessage {
        role: Role::Assistant,
        content: vec![text("Anything else?")],
        state: None,
    });
    messages.push(user(vec![text("See this:"), Block::Image { image: png() }]));
    step(&provider(&fake), &spec(false), &messages)
        .await
        .unwrap();
    let body = fake.last().body;
    let raw = body.to_string();
    assert!(!raw.contains("image_url"), "{raw}");
    assert!(!raw.contains("base64"), "{raw}");

    let messages = body["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "system",
            "user",
            "assistant",
            "tool",
            "tool",
            "tool",
            "user",
            "assistant",
            "user"
        ]
    );
    let note = "[screenshot omitted: this model cannot see images]";
    assert!(
        messages[3]["content"].as_str().unwrap().contains(note),
        "{}",
        messages[3]
    );
    // No screenshot message: only the person's words follow the tool messages.
    assert_eq!(messages[6]["content"], "Use the gear at the top.");
    assert_eq!(messages[8]["content"], format!("See this:\n{note}"));
}

#[tokio::test]
async fn every_computer_action_decodes() {
    let fake = FakeProvider::start().await;
    let sent: [(&str, &str, &str); 16] = [
        ("c1", "computer", r#"{"action":"screenshot"}"#),
        ("c2", "computer", r#"{"action":"click","x":10,"y":20}"#),
        (
            "c3",
            "computer",
            r#"{"action":"double_click","x":11,"y":21}"#,
        ),
        (
            "c4",
            "computer",
            r#"{"action":"triple_click","x":12,"y":22}"#,
        ),
        (
            "c5",
            "computer",
            r#"{"action":"right_click","x":13,"y":23}"#,
        ),
        (
            "c6",
            "computer",
            r#"{"action":"middle_click","x":14,"y":24}"#,
        ),
        (
            "c7",
            "computer",
            r#"{"action":"mouse_move","x":1279,"y":799}"#,
        ),
        (
            "c8",
            "computer",
            r#"{"action":"drag","path":[{"x":1,"y":2},{"x":30,"y":40},[50,60]]}"#,
        ),
        (
            "c9",
            "computer",
            r#"{"action":"scroll","direction":"down","amount":5,"x":600,"y":400}"#,
        ),
        ("c10", "computer", r#"{"action":"scroll","direction":"up"}"#),
        (
            "c11",
            "computer",
            r#"{"action":"type","text":"héllo wörld\n"}"#,
        ),
        ("c12", "computer", r#"{"action":"key","keys":["ctrl","s"]}"#),
        (
            "c13",
            "computer",
            r#"{"action":"hold_key","keys":["shift"],"duration_ms":1500}"#,
        ),
        ("c14", "computer", r#"{"action":"wait","duration_ms":2000}"#),
        ("c15", "computer", r#"{"action":"cursor_position"}"#),
        (
            "c16",
            "set_task_status",
            r#"{"status":"completed","message":"done"}"#,
        ),
    ];
    fake.push(tool_reply(&sent));
    let response = step(&provider(&fake), &spec(true), &[user(vec![text("go")])])
        .await
        .unwrap();
    assert_eq!(response.stop, StopReason::ToolUse);
    let got = calls(&response);
    let click = |x, y, button, count| ComputerAction::Click {
        at: Point { x, y },
        button,
        count,
        hold_keys: vec![],
    };
    let expected = [
        ComputerAction::Screenshot,
        click(10, 20, MouseButton::Left, 1),
        click(11, 21, MouseButton::Left, 2),
        click(12, 22, MouseButton::Left, 3),
        click(13, 23, MouseButton::Right, 1),
        click(14, 24, MouseButton::Middle, 1),
        ComputerAction::Move {
            at: Point { x: 1279, y: 799 },
        },
        ComputerAction::Drag {
            path: vec![
                Point { x: 1, y: 2 },
                Point { x: 30, y: 40 },
                Point { x: 50, y: 60 },
            ],
            hold_keys: vec![],
        },
        ComputerAction::Scroll {
            at: Some(Point { x: 600, y: 400 }),
            direction: ScrollDirection::Down,
            amount: 5,
            hold_keys: vec![],
        },
        ComputerAction::Scroll {
            at: None,
            direction: ScrollDirection::Up,
            amount: 3,
            hold_keys: vec![],
        },
        ComputerAction::Type {
            text: "héllo wörld\n".into(),
        },
        ComputerAction::Key {
            keys: vec!["ctrl".into(), "s".into()],
        },
        ComputerAction::HoldKey {
            keys: vec!["shift".into()],
            duration_ms: 1500,
        },
        ComputerAction::Wait { duration_ms: 2000 },
        ComputerAction::CursorPosition,
    ];
    assert_eq!(got.len(), 16);
    for (i, action) in expected.into_iter().enumerate() {
        assert_eq!(got[i].id, sent[i].0);
        assert_eq!(
            got[i].call,
            Call::Computer {
                actions: vec![action]
            },
            "call {}",
            sent[i].0
        );
    }
    assert_eq!(
        got[15].call,
        Call::Function {
            name: "set_task_status".into(),
            arguments: json!({"status": "completed", "message": "done"}),
        }
    );
}

#[tokio::test]
async fn malformed_calls_become_invalid_calls_with_the_reason() {
    let fake = FakeProvider::start().await;
    let sent: [(&str, &str, &str); 10] = [
        ("b1", "computer", r#"{"action":"click","x":10"#),
        ("b2", "computer", r#"{"action":"tap","x":1,"y":1}"#),
        ("b3", "computer", r#"{"action":"click","x":10}"#),
        ("b4", "computer", r#"{"action":"click","x":1280,"y":5}"#),
        (
            "b5",
            "computer",
            r#"{"action":"drag","path":[{"x":1,"y":2}]}"#,
        ),
        ("b6", "computer", r#"{"action":"type"}"#),
        ("b7", "computer", r#"{"x":3,"y":4}"#),
        (
            "b8",
            "computer",
            r#"{"action":"scroll","direction":"sideways"}"#,
        ),
        ("b9", "computer", r#"{"action":"hold_key","keys":["a"]}"#),
        ("b10", "set_task_status", "status=completed"),
    ];
    fake.push(tool_reply(&sent));
    let response = step(&provider(&fake), &spec(true), &[user(vec![text("go")])])
        .await
        .unwrap();
    let got = calls(&response);
    assert_eq!(got.len(), sent.len());
    let expect = [
        "not valid JSON",
        "unknown action \"tap\"",
        "needs \"x\" and \"y\"",
        "x=1280 is off the 1280x800 screen",
        "at least two points",
        "needs \"text\"",
        "\"action\" is missing",
        "\"direction\"",
        "\"duration_ms\"",
        "not valid JSON",
    ];
    for ((call, (id, tool, raw)), needle) in got.iter().zip(sent).zip(expect) {
        assert_eq!(call.id, id);
        let reason = invalid_reason(call, tool, raw);
        assert!(reason.contains(needle), "{id}: {reason:?} lacks {needle:?}");
    }
    // The unknown action's reason lists what is allowed.
    assert!(invalid_reason(&got[1], "computer", sent[1].2).contains("cursor_position"));
}

#[tokio::test]
async fn the_legacy_function_call_is_accepted() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::json(completion(
        json!({
            "role": "assistant",
            "content": null,
            "function_call": {"name": "computer", "arguments": "{\"action\":\"screenshot\"}"}
        }),
        "function_call",
    )));
    let response = step(&provider(&fake), &spec(true), &[user(vec![text("go")])])
        .await
        .unwrap();
    assert_eq!(response.stop, StopReason::ToolUse);
    let got = calls(&response);
    assert_eq!(got.len(), 1);
    assert!(!got[0].id.is_empty());
    assert_eq!(
        got[0].call,
        Call::Computer {
            actions: vec![ComputerAction::Screenshot]
        }
    );
}

#[tokio::test]
async fn a_tool_call_written_as_text_stays_text() {
    let fake = FakeProvider::start().await;
    let written = r#"{"name": "computer", "arguments": {"action": "click", "x": 100, "y": 200}}"#;
    fake.push(text_reply(written));
    let response = step(&provider(&fake), &spec(true), &[user(vec![text("go")])])
        .await
        .unwrap();
    assert_eq!(response.content, vec![text(written)]);
    assert_eq!(response.stop, StopReason::EndTurn);
}

#[tokio::test]
async fn usage_counts_cached_tokens_apart_and_stop_reasons_map() {
    let fake = FakeProvider::start().await;
    let mut body = completion(
        json!({"role": "assistant", "content": "Partial answer"}),
        "length",
    );
    body["usage"] = json!({
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0}
    });
    fake.push(Reply::json(body));
    // vLLM leaves prompt_tokens_details out (null) unless asked.
    let mut plain = completion(json!({"role": "assistant", "content": "Done."}), "stop");
    plain["usage"] = json!({"prompt_tokens": 50, "total_tokens": 60, "completion_tokens": 10, "prompt_tokens_details": null});
    fake.push(Reply::json(plain));
    fake.push(Reply::json(completion(
        json!({"role": "assistant", "content": null, "refusal": "I can't help with that."}),
        "stop",
    )));

    let p = provider(&fake);
    let first = step(&p, &spec(true), &[user(vec![text("go")])])
        .await
        .unwrap();
    assert_eq!(first.stop, StopReason::MaxTokens);
    assert_eq!(first.content, vec![text("Partial answer")]);
    assert_eq!(
        first.usage,
        Usage {
            input_tokens: 86,
            output_tokens: 300,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 1920,
        }
    );
    let second = step(&p, &spec(true), &[user(vec![text("go")])])
        .await
        .unwrap();
    assert_eq!(second.stop, StopReason::EndTurn);
    assert_eq!(
        second.usage,
        Usage {
            input_tokens: 50,
            output_tokens: 10,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
        }
    );
    let third = step(&p, &spec(true), &[user(vec![text("go")])])
        .await
        .unwrap();
    assert_eq!(third.stop, StopReason::Refusal);
    assert_eq!(third.content, vec![text("I can't help with that.")]);
}

#[tokio::test]
async fn ollama_saying_the_model_does_not_support_tools_is_unsupported_tools() {
    let fake = FakeProvider::start().await;
    // Ollama's OpenAI layer, as reported in ollama/ollama#5793.
    fake.push(Reply::status(
        400,
        json!({"error": {
            "message": "registry.ollama.ai/library/llama3:latest does not support tools",
            "type": "api_error",
            "param": null,
            "code": null
        }}),
    ));
    let err = step(&provider(&fake), &spec(true), &[user(vec![text("go")])])
        .await
        .unwrap_err();
    let ProviderError::Unsupported {
        provider,
        model,
        capability,
        message,
    } = &err
    else {
        panic!("expected Unsupported, got {err:?}");
    };
    assert_eq!(provider, "ollama");
    assert_eq!(model, "qwen2.5vl:7b");
    assert_eq!(*capability, Capability::Tools);
    assert!(message.contains("does not support tools"));
    assert!(
        err.to_string().contains("cannot handle tool calls"),
        "{err}"
    );
    assert_eq!(fake.seen().len(), 1, "a refusal is not retried");
}

#[tokio::test]
async fn vllm_without_a_tool_parser_is_unsupported_tools() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::status(
        400,
        json!({"error": {
            "message": "\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set",
            "type": "BadRequestError",
            "param": null,
            "code": 400
        }}),
    ));
    let err = step(&provider(&fake), &spec(true), &[user(vec![text("go")])])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Unsupported {
                capability: Capability::Tools,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_vision_refusal_is_unsupported_vision_even_as_a_500() {
    let fake = FakeProvider::start().await;
    // vLLM's error shape.
    fake.push(Reply::status(
        400,
        json!({"error": {
            "message": "Qwen2ForCausalLM is not a multimodal model",
            "type": "BadRequestError",
            "param": null,
            "code": 400
        }}),
    ));
    let p = provider(&fake);
    let with_image = [user(vec![text("look"), Block::Image { image: png() }])];
    let err = step(&p, &spec(true), &with_image).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ProviderError::Unsupported { capability: Capability::Vision, model, .. } if model == "qwen2.5vl:7b"
        ),
        "{err:?}"
    );

    // Ollama answers some of these with 500 (retried like any 500, then recognised).
    let ollama_500 = Reply::status(
        500,
        json!({"error": {
            "message": "this model does not support image input",
            "type": "api_error",
            "param": null,
            "code": null
        }}),
    );
    for _ in 0..3 {
        fake.push(ollama_500.clone());
    }
    let err = step(&p, &spec(true), &with_image).await.unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Unsupported {
                capability: Capability::Vision,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fake.seen().len(), 4);
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_then_succeeds() {
    let fake = FakeProvider::start().await;
    fake.push(
        Reply::status(
            429,
            json!({"error": {
                "message": "Rate limit reached for requests",
                "type": "requests",
                "param": null,
                "code": "rate_limit_exceeded"
            }}),
        )
        .header("retry-after", "0"),
    );
    fake.push(text_reply("Hello after the wait."));
    let response = step(&provider(&fake), &spec(true), &[user(vec![text("go")])])
        .await
        .unwrap();
    assert_eq!(response.content, vec![text("Hello after the wait.")]);
    assert_eq!(fake.seen().len(), 2);
}

#[tokio::test]
async fn a_500_is_retried_then_reported_as_a_server_error() {
    let fake = FakeProvider::start().await;
    let overloaded = Reply::status(
        500,
        json!({"error": {"message": "model runner has unexpectedly stopped", "type": "api_error", "param": null, "code": null}}),
    );
    for _ in 0..3 {
        fake.push(overloaded.clone());
    }
    let err = step(&provider(&fake), &spec(true), &[user(vec![text("go")])])
        .await
        .unwrap_err();
    let ProviderError::Server {
        status, message, ..
    } = &err
    else {
        panic!("expected Server, got {err:?}");
    };
    assert_eq!(*status, 500);
    assert!(message.contains("unexpectedly stopped"));
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test]
async fn a_refused_key_is_an_auth_error_naming_the_key() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::status(
        401,
        json!({"error": {"message": "Incorrect API key provided: sk-wrong.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
    ));
    let err = step(&provider(&fake), &spec(true), &[user(vec![text("go")])])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Auth { status: 401, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("[providers.ollama] api_key"),
        "{err}"
    );
}

#[tokio::test]
async fn garbage_and_empty_choices_are_bad_responses() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::raw(200, "<html>502 Bad Gateway</html>"));
    fake.push(Reply::json(json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "qwen2.5vl:7b",
        "choices": []
    })));
    fake.push(Reply::json(json!({"choices": "nope"})));
    let p = provider(&fake);
    for _ in 0..3 {
        let err = step(&p, &spec(true), &[user(vec![text("go")])])
            .await
            .unwrap_err();
        assert!(matches!(err, ProviderError::BadResponse { .. }), "{err:?}");
    }
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let fake = FakeProvider::start().await;
    fake.push(text_reply("too late").after(Duration::from_secs(5)));
    let mut e = endpoint(fake.url());
    e.timeout = Duration::from_millis(200);
    let p = OpenAiCompatProvider::new("ollama", e, None, reqwest::Client::new());
    let started = Instant::now();
    let err = step(&p, &spec(true), &[user(vec![text("go")])])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Timeout { after, .. } if after == Duration::from_millis(200)
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(fake.seen().len(), 1, "a timeout is not retried");
}
