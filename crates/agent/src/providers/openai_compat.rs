//! OpenAI-compatible chat completions (`POST /v1/chat/completions`): Ollama, vLLM, LiteLLM,
//! OpenRouter and any other server speaking OpenAI's chat format.
//!
//! There is no native computer tool in this format, so the desktop is offered as one plain
//! `computer` function with an `action` enum ([`computer_function`]) next to the agent's own
//! functions. Most servers refuse images inside `tool` messages, so a tool result's screenshot
//! travels in a user message right after the tool messages.
//!
//! Local models often cannot see images or call tools. The servers say so in an error body;
//! that becomes [`ProviderError::Unsupported`] naming the capability and the model, so the task
//! stops with a clear reason instead of looping (Bytebot's most reported failure). A tool call
//! a model writes as JSON text in `content` stays text: guessing it into a call would run
//! actions the model never properly asked for.

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::{
    Block, Call, Capability, ChatMessage, ComputerAction, Display, FunctionTool, INVALID_CALL,
    Image, ModelRequest, ModelResponse, MouseButton, Point, Provider, ProviderError, ProviderKind,
    Role, ScrollDirection, StopReason, ToolCall, ToolResult, Usage,
};
use crate::providers::http::{self, Endpoint};

/// The name of the function that stands for the desktop.
const COMPUTER: &str = "computer";

/// What a model without vision gets instead of a picture.
const NO_VISION: &str = "[screenshot omitted: this model cannot see images]";

/// What the model gets for an image whose bytes were not loaded (none should reach here).
const NOT_LOADED: &str = "[screenshot omitted: its bytes were not loaded]";

/// Every `action` the computer function accepts, in the order the schema lists them.
const ACTIONS: [&str; 14] = [
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
    "cursor_position",
];

/// Notches scrolled when the model does not say.
const DEFAULT_SCROLL: u32 = 3;

/// Milliseconds waited when the model does not say.
const DEFAULT_WAIT_MS: u64 = 1000;

/// A provider speaking OpenAI's chat completions format to any compatible server.
pub struct OpenAiCompatProvider {
    name: String,
    endpoint: Endpoint,
    api_key: Option<String>,
    client: reqwest::Client,
}

impl OpenAiCompatProvider {
    /// A provider for `endpoint`. `endpoint.base_url` is the server root
    /// (`http://127.0.0.1:11434`, as in `OLLAMA_HOST`) or already ends in `/v1`
    /// (`https://openrouter.ai/api/v1`). The key goes out as a Bearer token only when set:
    /// local servers need none.
    pub fn new(
        name: impl Into<String>,
        endpoint: Endpoint,
        api_key: Option<String>,
        client: reqwest::Client,
    ) -> Self {
        OpenAiCompatProvider {
            name: name.into(),
            endpoint,
            api_key: api_key.filter(|k| !k.trim().is_empty()),
            client,
        }
    }

    /// The request path under the base URL, without doubling a version segment the base
    /// already ends in.
    fn path(&self) -> &'static str {
        let base = self.endpoint.base_url.trim_end_matches('/');
        let last = base.rsplit('/').next().unwrap_or_default();
        let versioned = last.len() >= 2
            && last.starts_with('v')
            && last[1..].starts_with(|c: char| c.is_ascii_digit());
        if versioned {
            "/chat/completions"
        } else {
            "/v1/chat/completions"
        }
    }

    async fn call(&self, request: ModelRequest<'_>) -> Result<ModelResponse, ProviderError> {
        let body = request_body(&request);
        let bearer = self.api_key.as_ref().map(|k| format!("Bearer {k}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        let model = request.model.wire_name.as_str();
        let answer = http::post_json(&self.client, &self.endpoint, self.path(), &headers, &body)
            .await
            .map_err(|e| self.capability_error(e, model))?;
        self.decode(&answer, &request)
    }

    /// Turns a refusal whose message says the model lacks a capability into `Unsupported`.
    /// Server errors count too: Ollama answers some of these with 500.
    fn capability_error(&self, error: ProviderError, model: &str) -> ProviderError {
        let (ProviderError::Rejected { message, .. } | ProviderError::Server { message, .. }) =
            &error
        else {
            return error;
        };
        match missing_capability(message) {
            Some(capability) => ProviderError::Unsupported {
                provider: self.endpoint.provider.clone(),
                model: model.to_string(),
                capability,
                message: message.clone(),
            },
            None => error,
        }
    }

    fn bad_response(&self, message: String) -> ProviderError {
        ProviderError::BadResponse {
            provider: self.endpoint.provider.clone(),
            message,
        }
    }

    fn decode(
        &self,
        answer: &Value,
        request: &ModelRequest<'_>,
    ) -> Result<ModelResponse, ProviderError> {
        let completion: Completion = serde_json::from_value(answer.clone()).map_err(|e| {
            self.bad_response(format!(
                "not a chat completion ({e}): {}",
                http::excerpt(&answer.to_string())
            ))
        })?;
        let Some(choice) = completion.choices.unwrap_or_default().into_iter().next() else {
            // Some gateways answer 200 with only an error object.
            if answer.get("error").is_some() {
                let message = http::error_message(&answer.to_string());
                if let Some(capability) = missing_capability(&message) {
                    return Err(ProviderError::Unsupported {
                        provider: self.endpoint.provider.clone(),
                        model: request.model.wire_name.clone(),
                        capability,
                        message,
                    });
                }
                return Err(self.bad_response(format!("no choices; the server said: {message}")));
            }
            return Err(self.bad_response(format!(
                "no choices in the answer: {}",
                http::excerpt(&answer.to_string())
            )));
        };
        let message = choice.message.unwrap_or_default();

        let mut content = Vec::new();
        if let Some(text) = content_text(&message.content) {
            content.push(Block::Text { text });
        }
        let refused = message
            .refusal
            .filter(|r| !r.trim().is_empty())
            .map(|text| content.push(Block::Text { text }))
            .is_some();
        let mut calls = 0;
        for wire in message.tool_calls.unwrap_or_default() {
            let function = wire.function.unwrap_or_default();
            content.push(Block::ToolCall(decode_tool_call(
                wire.id,
                function,
                request.display,
            )));
            calls += 1;
        }
        if calls == 0
            && let Some(function) = message.function_call
        {
            content.push(Block::ToolCall(decode_tool_call(
                None,
                function,
                request.display,
            )));
            calls += 1;
        }

        let stop = match choice.finish_reason.as_deref() {
            _ if refused => StopReason::Refusal,
            // Older Ollama reports "stop" alongside tool calls; the calls still need answers.
            _ if calls > 0 => StopReason::ToolUse,
            None | Some("stop") => StopReason::EndTurn,
            Some("tool_calls" | "function_call") => StopReason::ToolUse,
            Some("length") => StopReason::MaxTokens,
            Some("content_filter") => StopReason::Refusal,
            Some(other) => StopReason::Other(other.to_string()),
        };

        Ok(ModelResponse {
            content,
            usage: completion
                .usage
                .map(WireUsage::into_usage)
                .unwrap_or_default(),
            stop,
            state: None,
        })
    }
}

impl Provider for OpenAiCompatProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::OpenaiCompatible
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn step<'a>(
        &'a self,
        request: ModelRequest<'a>,
    ) -> BoxFuture<'a, Result<ModelResponse, ProviderError>> {
        Box::pin(self.call(request))
    }
}

/// The shared recogniser plus vLLM's refusal of tools when it was started without a tool
/// parser, which is the same problem seen from the server's side.
fn missing_capability(message: &str) -> Option<Capability> {
    http::missing_capability(message).or_else(|| {
        message
            .contains("--enable-auto-tool-choice")
            .then_some(Capability::Tools)
    })
}

/// The `computer` function: the desktop as a plain function with an `action` enum, for
/// servers without a native computer tool. Its description gives the screen size so the model
/// knows the coordinate range.
pub fn computer_function(display: Display) -> FunctionTool {
    let (w, h) = (display.width, display.height);
    let (max_x, max_y) = (w.saturating_sub(1), h.saturating_sub(1));
    let description = format!(
        "Use the mouse and keyboard of a Linux desktop. The screen is {w}x{h} pixels: x runs \
         from 0 at the left edge to {max_x} at the right, y from 0 at the top to {max_y} at the \
         bottom, in the pixels of the latest screenshot. Fields per action: click, \
         double_click, triple_click, right_click, middle_click, mouse_move: x and y. drag: \
         path (at least two points; the left button is held from the first to the last). \
         scroll: direction, amount (notches, default {DEFAULT_SCROLL}), optionally x and y to \
         scroll at. type: text. key: keys, pressed together as one chord (xdotool names such \
         as ctrl, alt, shift, super, Return, Tab, Escape, BackSpace, Delete, F5, a). hold_key: \
         keys and duration_ms. wait: duration_ms (default {DEFAULT_WAIT_MS}). screenshot and \
         cursor_position take nothing else."
    );
    let point = json!({
        "type": "object",
        "properties": {
            "x": {"type": "integer", "minimum": 0, "maximum": max_x},
            "y": {"type": "integer", "minimum": 0, "maximum": max_y}
        },
        "required": ["x", "y"]
    });
    FunctionTool {
        name: COMPUTER.to_string(),
        description,
        parameters: json!({
            "type": "object",
            "properties": {
                "action": {
                    "type": "string",
                    "enum": ACTIONS,
                    "description": "What to do."
                },
                "x": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": max_x,
                    "description": format!("Pixels from the left edge (0 to {max_x}).")
                },
                "y": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": max_y,
                    "description": format!("Pixels from the top edge (0 to {max_y}).")
                },
                "path": {
                    "type": "array",
                    "items": point,
                    "minItems": 2,
                    "description": "drag: the points to pass through, first to last."
                },
                "direction": {
                    "type": "string",
                    "enum": ["up", "down", "left", "right"],
                    "description": "scroll: which way."
                },
                "amount": {
                    "type": "integer",
                    "minimum": 1,
                    "description": format!("scroll: notches (default {DEFAULT_SCROLL}).")
                },
                "text": {
                    "type": "string",
                    "description": "type: the text to type."
                },
                "keys": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "description": "key, hold_key: the chord, modifiers first, e.g. [\"ctrl\", \"s\"]."
                },
                "duration_ms": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "hold_key, wait: how long, in milliseconds."
                }
            },
            "required": ["action"]
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Request

fn request_body(request: &ModelRequest<'_>) -> Value {
    let tools: Vec<Value> = std::iter::once(computer_function(request.display))
        .chain(request.functions.iter().cloned())
        .map(|f| {
            json!({
                "type": "function",
                "function": {
                    "name": f.name,
                    "description": f.description,
                    "parameters": f.parameters
                }
            })
        })
        .collect();
    json!({
        "model": request.model.wire_name,
        "messages": wire_messages(request),
        "tools": tools,
        // `max_tokens` rather than `max_completion_tokens`: every compatible server knows it.
        "max_tokens": request.max_tokens,
        "stream": false
    })
}

fn wire_messages(request: &ModelRequest<'_>) -> Vec<Value> {
    let vision = request.model.vision;
    let mut out = Vec::with_capacity(request.messages.len() + 1);
    if !request.system.is_empty() {
        out.push(json!({"role": "system", "content": request.system}));
    }
    for message in request.messages {
        match message.role {
            Role::Assistant => {
                if let Some(m) = assistant_message(message) {
                    out.push(m);
                }
            }
            Role::User => user_messages(message, vision, &mut out),
        }
    }
    out
}

fn assistant_message(message: &ChatMessage) -> Option<Value> {
    let mut texts = Vec::new();
    let mut calls = Vec::new();
    for block in &message.content {
        match block {
            Block::Text { text } => texts.push(text.as_str()),
            Block::ToolCall(call) => calls.push(wire_tool_call(call)),
            // Pictures the model made and other providers' items mean nothing here.
            Block::Image { .. } | Block::ToolResult(_) | Block::Opaque { .. } => {}
        }
    }
    if texts.is_empty() && calls.is_empty() {
        return None;
    }
    let mut m = json!({
        "role": "assistant",
        "content": if texts.is_empty() { Value::Null } else { Value::from(texts.join("\n")) },
    });
    if !calls.is_empty() {
        m["tool_calls"] = Value::Array(calls);
    }
    Some(m)
}

/// One `tool` message per result (they must directly follow the assistant's calls), then one
/// user message with the results' screenshots and the person's own words and pictures.
fn user_messages(message: &ChatMessage, vision: bool, out: &mut Vec<Value>) {
    let mut parts = Vec::new();
    for block in &message.content {
        if let Block::ToolResult(result) = block {
            out.push(tool_message(result, vision));
            if vision
                && let Some(image) = &result.image
                && image.data.is_some()
            {
                parts.push(text_part(&format!(
                    "Screenshot after tool call {}:",
                    result.call_id
                )));
                parts.push(image_part(image));
            }
        }
    }
    for block in &message.content {
        match block {
            Block::Text { text } => parts.push(text_part(text)),
            Block::Image { .. } if !vision => parts.push(text_part(NO_VISION)),
            Block::Image { image } if image.data.is_none() => parts.push(text_part(NOT_LOADED)),
            Block::Image { image } => parts.push(image_part(image)),
            Block::ToolCall(_) | Block::ToolResult(_) | Block::Opaque { .. } => {}
        }
    }
    if parts.is_empty() {
        return;
    }
    // Plain text goes as a string: some text-only servers reject content arrays.
    let content = if parts.iter().all(|p| p["type"] == "text") {
        let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        Value::from(texts.join("\n"))
    } else {
        Value::Array(parts)
    };
    out.push(json!({"role": "user", "content": content}));
}

fn tool_message(result: &ToolResult, vision: bool) -> Value {
    let mut text = result
        .text
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or(if result.is_error {
            "the call failed"
        } else {
            "done"
        })
        .to_string();
    if result.is_error {
        text = format!("Error: {text}");
    }
    if let Some(image) = &result.image {
        text.push('\n');
        text.push_str(match (vision, image.data.is_some()) {
            (false, _) => NO_VISION,
            (true, false) => NOT_LOADED,
            (true, true) => "(The screenshot taken after this call follows.)",
        });
    }
    json!({"role": "tool", "tool_call_id": result.call_id, "content": text})
}

fn text_part(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

fn image_part(image: &Image) -> Value {
    json!({"type": "image_url", "image_url": {"url": image.data_url()}})
}

fn wire_tool_call(call: &ToolCall) -> Value {
    let (name, arguments) = match &call.call {
        Call::Computer { actions } => (COMPUTER.to_string(), computer_arguments(actions)),
        // Echo what the model really sent, so it can see its mistake next to our answer.
        Call::Function { name, arguments } if name == INVALID_CALL => {
            let tool = arguments
                .get("tool")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .unwrap_or(name)
                .to_string();
            let raw = match arguments.get("raw") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => "{}".to_string(),
                Some(other) => other.to_string(),
            };
            (tool, raw)
        }
        Call::Function { name, arguments } => (name.clone(), arguments.to_string()),
    };
    json!({
        "id": call.id,
        "type": "function",
        "function": {"name": name, "arguments": arguments}
    })
}

/// A computer call as this format's arguments. Calls another provider made (a fallback chain
/// shares one conversation) may hold several actions or actions this schema lacks; they are
/// written as faithfully as the format allows, since they are history, not requests.
fn computer_arguments(actions: &[ComputerAction]) -> String {
    match actions {
        [one] => encode_action(one).to_string(),
        many => json!({"actions": many.iter().map(encode_action).collect::<Vec<_>>()}).to_string(),
    }
}

fn encode_action(action: &ComputerAction) -> Value {
    match action {
        ComputerAction::Screenshot => json!({"action": "screenshot"}),
        ComputerAction::Click {
            at, button, count, ..
        } => {
            let name = match (button, count) {
                (MouseButton::Right, _) => "right_click",
                (MouseButton::Middle, _) => "middle_click",
                (MouseButton::Left, 2) => "double_click",
                (MouseButton::Left, 3) => "triple_click",
                (MouseButton::Left, _) => "click",
            };
            json!({"action": name, "x": at.x, "y": at.y})
        }
        ComputerAction::Move { at } => json!({"action": "mouse_move", "x": at.x, "y": at.y}),
        ComputerAction::Drag { path, .. } => json!({
            "action": "drag",
            "path": path.iter().map(|p| json!({"x": p.x, "y": p.y})).collect::<Vec<_>>()
        }),
        ComputerAction::Scroll {
            at,
            direction,
            amount,
            ..
        } => {
            let mut v = json!({"action": "scroll", "direction": direction, "amount": amount});
            if let Some(at) = at {
                v["x"] = at.x.into();
                v["y"] = at.y.into();
            }
            v
        }
        ComputerAction::Type { text } => json!({"action": "type", "text": text}),
        ComputerAction::Key { keys } => json!({"action": "key", "keys": keys}),
        ComputerAction::HoldKey { keys, duration_ms } => {
            json!({"action": "hold_key", "keys": keys, "duration_ms": duration_ms})
        }
        ComputerAction::Wait { duration_ms } => {
            json!({"action": "wait", "duration_ms": duration_ms})
        }
        ComputerAction::CursorPosition => json!({"action": "cursor_position"}),
        // Not in this schema; the neutral form (also tagged `action`) is the closest.
        other @ (ComputerAction::MouseDown { .. }
        | ComputerAction::MouseUp { .. }
        | ComputerAction::Zoom { .. }
        | ComputerAction::Navigate { .. }) => serde_json::to_value(other).unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------------------
// Response

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireMessage {
    #[serde(default)]
    content: Value,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
    /// The deprecated single call, still sent by some older servers.
    #[serde(default)]
    function_call: Option<WireFunction>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunction>,
}

#[derive(Deserialize, Default)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    /// A JSON string per the format; some servers send the object itself.
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl WireUsage {
    /// `prompt_tokens` includes the cached ones; `Usage` counts them apart.
    fn into_usage(self) -> Usage {
        let cached = self
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0);
        Usage {
            input_tokens: self.prompt_tokens.unwrap_or(0).saturating_sub(cached),
            output_tokens: self.completion_tokens.unwrap_or(0),
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: cached,
        }
    }
}

/// The text of `message.content`: a string, or (some servers) an array of text parts.
fn content_text(content: &Value) -> Option<String> {
    let text = match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => return None,
    };
    (!text.trim().is_empty()).then_some(text)
}

fn decode_tool_call(id: Option<String>, function: WireFunction, display: Display) -> ToolCall {
    let id = id
        .filter(|i| !i.is_empty())
        // The result must quote an id; servers answering the legacy form send none.
        .unwrap_or_else(|| format!("call_{:016x}", rand::random::<u64>()));
    let name = function.name.unwrap_or_default();
    let raw = function.arguments;
    let call = match decode_call(&name, &raw, display) {
        Ok(call) => call,
        Err(error) => Call::Function {
            name: INVALID_CALL.to_string(),
            arguments: json!({"tool": name, "error": error, "raw": raw}),
        },
    };
    ToolCall {
        id,
        wire_name: None,
        call,
        safety_checks: Vec::new(),
    }
}

fn decode_call(name: &str, raw: &Value, display: Display) -> Result<Call, String> {
    if name.is_empty() {
        return Err("the tool call has no function name".into());
    }
    let arguments = match raw {
        Value::String(s) if s.trim().is_empty() => json!({}),
        Value::String(s) => serde_json::from_str(s)
            .map_err(|e| format!("the arguments are not valid JSON ({e}); send a JSON object"))?,
        Value::Null => json!({}),
        other => other.clone(),
    };
    if !arguments.is_object() {
        return Err("the arguments must be a JSON object".into());
    }
    if name == COMPUTER {
        let action = computer_action(&arguments, display)?;
        Ok(Call::Computer {
            actions: vec![action],
        })
    } else {
        Ok(Call::Function {
            name: name.to_string(),
            arguments,
        })
    }
}

fn computer_action(args: &Value, display: Display) -> Result<ComputerAction, String> {
    let Some(action) = args.get("action").and_then(Value::as_str) else {
        return Err(format!(
            "\"action\" is missing; use one of: {}",
            ACTIONS.join(", ")
        ));
    };
    let click = |button, count| -> Result<ComputerAction, String> {
        Ok(ComputerAction::Click {
            at: point(args, action, display)?,
            button,
            count,
            hold_keys: Vec::new(),
        })
    };
    match action {
        "screenshot" => Ok(ComputerAction::Screenshot),
        "click" => click(MouseButton::Left, 1),
        "double_click" => click(MouseButton::Left, 2),
        "triple_click" => click(MouseButton::Left, 3),
        "right_click" => click(MouseButton::Right, 1),
        "middle_click" => click(MouseButton::Middle, 1),
        "mouse_move" => Ok(ComputerAction::Move {
            at: point(args, action, display)?,
        }),
        "drag" => Ok(ComputerAction::Drag {
            path: path(args, display)?,
            hold_keys: Vec::new(),
        }),
        "scroll" => scroll(args, display),
        "type" => match args.get("text").and_then(Value::as_str) {
            Some(text) if !text.is_empty() => Ok(ComputerAction::Type {
                text: text.to_string(),
            }),
            _ => Err("type needs \"text\": the text to type".into()),
        },
        "key" => Ok(ComputerAction::Key {
            keys: keys(args, action)?,
        }),
        "hold_key" => Ok(ComputerAction::HoldKey {
            keys: keys(args, action)?,
            duration_ms: duration(args, action)?
                .ok_or("hold_key needs \"duration_ms\": how long to hold, in milliseconds")?,
        }),
        "wait" => Ok(ComputerAction::Wait {
            duration_ms: duration(args, action)?.unwrap_or(DEFAULT_WAIT_MS),
        }),
        "cursor_position" => Ok(ComputerAction::CursorPosition),
        other => Err(format!(
            "unknown action {other:?}; use one of: {}",
            ACTIONS.join(", ")
        )),
    }
}

/// A whole number from a JSON number (a float is rounded) or a numeric string, which small
/// models send now and then.
fn number(value: &Value) -> Option<f64> {
    let n = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    n.is_finite().then(|| n.round())
}

fn coordinate(value: &Value, axis: &str, display: Display) -> Result<i32, String> {
    let limit = if axis == "x" {
        display.width
    } else {
        display.height
    };
    let n = number(value).ok_or_else(|| format!("\"{axis}\" must be a number, got {value}"))?;
    if n < 0.0 || n >= f64::from(limit) {
        return Err(format!(
            "{axis}={n} is off the {}x{} screen ({axis} runs from 0 to {})",
            display.width,
            display.height,
            limit.saturating_sub(1)
        ));
    }
    Ok(n as i32)
}

fn point(args: &Value, action: &str, display: Display) -> Result<Point, String> {
    match (args.get("x"), args.get("y")) {
        (Some(x), Some(y)) => Ok(Point {
            x: coordinate(x, "x", display)?,
            y: coordinate(y, "y", display)?,
        }),
        _ => Err(format!(
            "{action} needs \"x\" and \"y\": where on the {}x{} screen",
            display.width, display.height
        )),
    }
}

fn path(args: &Value, display: Display) -> Result<Vec<Point>, String> {
    const NEED: &str = "drag needs \"path\": at least two points like {\"x\": 10, \"y\": 20}";
    let Some(items) = args.get("path").and_then(Value::as_array) else {
        return Err(NEED.into());
    };
    if items.len() < 2 {
        return Err(NEED.into());
    }
    items
        .iter()
        .map(|item| {
            // `[x, y]` pairs are as clear as objects.
            let (x, y) = match item {
                Value::Object(o) => (o.get("x"), o.get("y")),
                Value::Array(pair) if pair.len() == 2 => (pair.first(), pair.get(1)),
                _ => (None, None),
            };
            match (x, y) {
                (Some(x), Some(y)) => Ok(Point {
                    x: coordinate(x, "x", display)?,
                    y: coordinate(y, "y", display)?,
                }),
                _ => Err(format!("{NEED}; got {item}")),
            }
        })
        .collect()
}

fn scroll(args: &Value, display: Display) -> Result<ComputerAction, String> {
    let direction = match args
        .get("direction")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("up") => ScrollDirection::Up,
        Some("down") => ScrollDirection::Down,
        Some("left") => ScrollDirection::Left,
        Some("right") => ScrollDirection::Right,
        _ => return Err("scroll needs \"direction\": up, down, left or right".into()),
    };
    let amount = match args.get("amount") {
        None | Some(Value::Null) => DEFAULT_SCROLL,
        Some(v) => match number(v) {
            Some(n) if n >= 1.0 && n <= f64::from(u32::MAX) => n as u32,
            _ => {
                return Err(format!(
                    "scroll \"amount\" must be a whole number of notches ≥ 1, got {v}"
                ));
            }
        },
    };
    let at = match (args.get("x"), args.get("y")) {
        (None, None) => None,
        (Some(_), Some(_)) => Some(point(args, "scroll", display)?),
        _ => return Err("scroll takes both \"x\" and \"y\" or neither".into()),
    };
    Ok(ComputerAction::Scroll {
        at,
        direction,
        amount,
        hold_keys: Vec::new(),
    })
}

fn keys(args: &Value, action: &str) -> Result<Vec<String>, String> {
    let need = || format!("{action} needs \"keys\": a chord such as [\"ctrl\", \"s\"]");
    let keys: Vec<String> = match args.get("keys") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|k| k.as_str().map(str::trim).filter(|k| !k.is_empty()))
            .map(|k| k.map(str::to_string).ok_or_else(need))
            .collect::<Result<_, _>>()?,
        // "ctrl+s" names the same chord unambiguously.
        Some(Value::String(s)) => s
            .split('+')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect(),
        _ => return Err(need()),
    };
    if keys.is_empty() {
        return Err(need());
    }
    Ok(keys)
}

fn duration(args: &Value, action: &str) -> Result<Option<u64>, String> {
    match args.get("duration_ms") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match number(v) {
            Some(n) if n >= 0.0 && n <= u64::MAX as f64 => Ok(Some(n as u64)),
            _ => Err(format!(
                "{action} \"duration_ms\" must be a whole number of milliseconds, got {v}"
            )),
        },
    }
}
