//! Google Gemini `POST /v1beta/models/{model}:generateContent` with the computer use tool.
//!
//! Wire facts, from Google's computer use guide (generateContent version) and the API reference:
//! - The key goes in the `x-goog-api-key` header (not `?key=`, which would land in access logs).
//! - The tool is `{"computerUse": {"environment": "ENVIRONMENT_BROWSER"}}`. The guide's curl
//!   sample spells it `computer_use`; the API reference and the JS SDK spell it `computerUse`,
//!   and the JSON mapping of the API accepts both, so it is written like every other field here.
//!   The agent's own tools go in a second entry as `functionDeclarations` with
//!   `parametersJsonSchema` (full JSON Schema, unlike `parameters`' OpenAPI subset).
//! - The model answers with `functionCall` parts, several per turn when it acts in parallel.
//!   Coordinates are on a 1000×1000 grid (0–999) and are scaled here to the screenshot the
//!   model saw (`ModelRequest::display`). Two action sets exist: the Gemini 2.5 / Gemini 3
//!   Flash one (`click_at`, `type_text_at`, `scroll_at`, `key_combination`, …) and the
//!   Gemini 3.5+ one (`click`, `type`, `scroll`, `hotkey`, `press_key`, …, each with an
//!   `intent`); both are decoded.
//! - A `safety_decision` of `require_confirmation` inside the call's `args` must be shown to a
//!   person before the action runs; once they confirm, the function response carries
//!   `safety_acknowledgement: "true"`. It is never set on our own authority.
//! - Every call is answered with a `functionResponse` part (same name, and the call's `id` when
//!   the model gave one) in the next user turn; for computer actions its `response` holds the
//!   current `url` and the screenshot travels as inline data in the response's own `parts`.
//! - The model's turn is sent back verbatim (kept in [`ProviderState`]) because Gemini 3
//!   attaches thought signatures to parts and rejects function calling history without them.

use std::collections::{HashMap, HashSet};

use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

use crate::model::{
    Block, Call, Capability, ChatMessage, ComputerAction, Display, FunctionTool, INVALID_CALL,
    Image, ImageLimit, ModelRequest, ModelResponse, MouseButton, Point, Provider, ProviderError,
    ProviderKind, ProviderState, Role, SafetyCheck, ScrollDirection, StopReason, ToolCall,
    ToolResult, Usage,
};
use crate::providers::http::{self, Endpoint};

/// The environment the computer use tool is told it drives. Gemini 2.5 knows only the browser
/// one; the desktop's browser-style actions (`navigate`, `go_back`) are mapped onto it.
const ENVIRONMENT: &str = "ENVIRONMENT_BROWSER";

/// Ids we make up for calls Gemini sent without one; such ids are never echoed back.
const LOCAL_ID_PREFIX: &str = "gemini-local-";

/// Sent as `url` when the desktop does not know the browser's address: Gemini wants a URL in
/// every computer action's response and the docs name no default.
const DEFAULT_URL: &str = "about:blank";

/// Where `search` goes: the docs say "the default search engine's homepage (e.g. Google)".
const SEARCH_URL: &str = "https://www.google.com";

/// Gemini's coordinate grid: 0–999 on each axis, whatever the screen size.
const GRID: f64 = 1000.0;

/// Screen pixels per wheel notch (see [`ComputerAction::Scroll`]).
const PIXELS_PER_NOTCH: f64 = 100.0;

/// `scroll_at`'s documented default magnitude, on the grid; `scroll_document` scrolls as far.
const DEFAULT_GRID_MAGNITUDE: f64 = 800.0;

/// `scroll`'s documented default distance in pixels (Gemini 3.5+).
const DEFAULT_SCROLL_PIXELS: f64 = 300.0;

/// Longest `wait` we honour, so a model cannot park a task for hours.
const MAX_WAIT_MS: u64 = 60_000;

/// A Gemini API provider entry: one base URL, one key.
pub struct GeminiProvider {
    name: String,
    endpoint: Endpoint,
    api_key: String,
    client: reqwest::Client,
}

impl GeminiProvider {
    /// A provider called `name` that talks to `endpoint` (normally
    /// `https://generativelanguage.googleapis.com`) with `api_key`.
    pub fn new(
        name: impl Into<String>,
        endpoint: Endpoint,
        api_key: String,
        client: reqwest::Client,
    ) -> Self {
        GeminiProvider {
            name: name.into(),
            endpoint,
            api_key,
            client,
        }
    }

    async fn call(&self, request: ModelRequest<'_>) -> Result<ModelResponse, ProviderError> {
        let model = request.model.wire_name.trim_start_matches("models/");
        let path = format!("/v1beta/models/{model}:generateContent");
        let body = encode_request(&request);
        let answer = http::post_json(
            &self.client,
            &self.endpoint,
            &path,
            &[("x-goog-api-key", self.api_key.as_str())],
            &body,
        )
        .await
        .map_err(|e| self.refine(e, model))?;
        decode_response(&self.endpoint.provider, &answer, &request)
    }

    /// Gemini reports a bad key as 400 INVALID_ARGUMENT ("API key not valid") and a model
    /// without computer use as a 400 too; both deserve a clearer error than "refused".
    fn refine(&self, error: ProviderError, model: &str) -> ProviderError {
        let ProviderError::Rejected {
            provider,
            status,
            message,
        } = error
        else {
            return error;
        };
        let lower = message.to_ascii_lowercase();
        if [
            "api key not valid",
            "api key not found",
            "api key expired",
            "api_key_invalid",
        ]
        .iter()
        .any(|p| lower.contains(p))
        {
            return ProviderError::Auth {
                provider,
                status,
                message,
                key_hint: self.endpoint.key_hint.clone(),
            };
        }
        let capability = if lacks_computer_use(&lower) {
            Some(Capability::ComputerTool)
        } else {
            http::missing_capability(&message)
        };
        match capability {
            Some(capability) => ProviderError::Unsupported {
                provider,
                model: model.to_string(),
                capability,
                message,
            },
            None => ProviderError::Rejected {
                provider,
                status,
                message,
            },
        }
    }
}

impl Provider for GeminiProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Gemini
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

/// The screenshot size to send a Gemini model: the 1440×900 viewport every example in
/// Google's computer use guide and its reference implementation use. Coordinates come back on
/// a 1000-point grid, so a larger image buys no precision; every model the guide lists takes
/// the same size.
pub fn image_limit(model: &str) -> ImageLimit {
    let _ = model;
    ImageLimit {
        max_long_edge: 1440,
        max_pixels: 1440 * 900,
    }
}

/// The messages servers give when the model cannot use the computer use tool. Google does not
/// document the wording, so this matches the likely phrasings loosely.
fn lacks_computer_use(lower: &str) -> bool {
    let mentions = lower.contains("computer use") || lower.contains("computer_use");
    mentions
        && [
            "not supported",
            "not enabled",
            "not available",
            "unsupported",
            "does not support",
        ]
        .iter()
        .any(|p| lower.contains(p))
}

// ---------------------------------------------------------------------------------------------
// Request

fn encode_request(request: &ModelRequest<'_>) -> Value {
    let functions: HashSet<&str> = request.functions.iter().map(|f| f.name.as_str()).collect();
    let calls: HashMap<&str, &ToolCall> = request
        .messages
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(|b| match b {
            Block::ToolCall(call) => Some((call.id.as_str(), call)),
            _ => None,
        })
        .collect();
    // Calls sent as `functionCall` parts; only their results may be `functionResponse`s.
    let mut native: HashSet<&str> = HashSet::new();
    let mut contents = Vec::new();
    for message in request.messages {
        let (role, parts) = match message.role {
            Role::Assistant => ("model", encode_model_turn(message, &mut native)),
            Role::User => (
                "user",
                encode_user_turn(message, &calls, &native, &functions),
            ),
        };
        if !parts.is_empty() {
            contents.push(json!({"role": role, "parts": parts}));
        }
    }

    let mut tools = vec![json!({"computerUse": {"environment": ENVIRONMENT}})];
    if !request.functions.is_empty() {
        let declarations: Vec<Value> = request.functions.iter().map(declaration).collect();
        tools.push(json!({"functionDeclarations": declarations}));
    }
    let mut body = json!({
        "contents": contents,
        "tools": tools,
        "generationConfig": {"maxOutputTokens": request.max_tokens},
    });
    if !request.system.is_empty() {
        body["systemInstruction"] = json!({"parts": [{"text": request.system}]});
    }
    body
}

fn declaration(tool: &FunctionTool) -> Value {
    json!({
        "name": tool.name,
        "description": tool.description,
        "parametersJsonSchema": tool.parameters,
    })
}

fn encode_model_turn<'m>(message: &'m ChatMessage, native: &mut HashSet<&'m str>) -> Vec<Value> {
    let tool_calls = message.content.iter().filter_map(|b| match b {
        Block::ToolCall(call) => Some(call),
        _ => None,
    });
    if let Some(parts) = saved_parts(message) {
        native.extend(tool_calls.map(|c| c.id.as_str()));
        return parts;
    }
    // No Gemini original (another provider answered this turn, or it was edited). Rebuilt
    // `functionCall` parts would lack the thought signatures Gemini 3 checks, so the calls
    // become notes, and their results (not in `native`) notes too.
    let mut parts = Vec::new();
    for block in &message.content {
        match block {
            Block::Text { text } => parts.push(json!({"text": text})),
            Block::Image { image } => parts.push(image_part(image)),
            Block::Opaque {
                provider: ProviderKind::Gemini,
                value,
            } => parts.push(value.clone()),
            Block::ToolCall(call) => {
                let name = match &call.call {
                    Call::Function { name, .. } if name != INVALID_CALL => name.as_str(),
                    _ => call.wire_name.as_deref().unwrap_or("computer"),
                };
                let what = serde_json::to_string(&call.call).unwrap_or_default();
                parts.push(json!({"text": format!("[earlier call {name}: {what}]")}));
            }
            Block::Opaque { .. } | Block::ToolResult(_) => {}
        }
    }
    parts
}

/// The model's own parts for this turn, when they still match its tool calls one for one.
fn saved_parts(message: &ChatMessage) -> Option<Vec<Value>> {
    let state = message
        .state
        .as_ref()
        .filter(|s| s.provider == ProviderKind::Gemini)?;
    let parts = state.value.get("parts")?.as_array()?;
    let saved: Vec<&str> = parts
        .iter()
        .filter_map(function_call_of)
        .map(|fc| fc.get("name").and_then(Value::as_str).unwrap_or_default())
        .collect();
    let ours: Vec<&str> = message
        .content
        .iter()
        .filter_map(|b| match b {
            Block::ToolCall(call) => Some(call.wire_name.as_deref().unwrap_or_default()),
            _ => None,
        })
        .collect();
    (saved == ours).then(|| parts.clone())
}

fn encode_user_turn(
    message: &ChatMessage,
    calls: &HashMap<&str, &ToolCall>,
    native: &HashSet<&str>,
    functions: &HashSet<&str>,
) -> Vec<Value> {
    // Function responses first: Gemini pairs them with the previous turn's calls.
    let mut responses = Vec::new();
    let mut rest = Vec::new();
    for block in &message.content {
        match block {
            Block::Text { text } => rest.push(json!({"text": text})),
            Block::Image { image } => rest.push(image_part(image)),
            Block::ToolResult(result) => {
                match calls
                    .get(result.call_id.as_str())
                    .filter(|_| native.contains(result.call_id.as_str()))
                {
                    Some(call) => responses.push(function_response(call, result, functions)),
                    None => {
                        rest.push(json!({"text": result_note(result)}));
                        if let Some(image) = result.image.as_ref().filter(|i| i.data.is_some()) {
                            rest.push(image_part(image));
                        }
                    }
                }
            }
            Block::Opaque {
                provider: ProviderKind::Gemini,
                value,
            } => rest.push(value.clone()),
            Block::Opaque { .. } | Block::ToolCall(_) => {}
        }
    }
    responses.extend(rest);
    responses
}

fn function_response(call: &ToolCall, result: &ToolResult, functions: &HashSet<&str>) -> Value {
    let name = call.wire_name.clone().unwrap_or_else(|| match &call.call {
        Call::Function { name, .. } => name.clone(),
        Call::Computer { .. } => "computer".into(),
    });
    let computer = !functions.contains(name.as_str());
    let mut response = Map::new();
    if computer {
        let url = result.url.clone().unwrap_or_else(|| DEFAULT_URL.into());
        response.insert("url".into(), json!(url));
        let acknowledged = call.safety_checks.iter().any(|check| {
            result
                .acknowledged_safety_checks
                .iter()
                .any(|ack| ack.id == check.id)
        });
        if acknowledged {
            response.insert("safety_acknowledgement".into(), json!("true"));
        }
    }
    if result.is_error {
        let reason = result
            .text
            .clone()
            .unwrap_or_else(|| "the action failed".into());
        response.insert("error".into(), json!(reason));
    } else if let Some(text) = &result.text {
        response.insert("output".into(), json!(text));
    } else if !computer {
        response.insert("output".into(), json!("done"));
    }
    let mut function_response = json!({"name": name, "response": response});
    if !result.call_id.starts_with(LOCAL_ID_PREFIX) {
        function_response["id"] = json!(result.call_id);
    }
    if let Some(image) = result.image.as_ref().filter(|i| i.data.is_some()) {
        function_response["parts"] = json!([{"inlineData": {
            "mimeType": image.media_type,
            "data": image.base64(),
        }}]);
    }
    json!({"functionResponse": function_response})
}

/// A result whose call Gemini never saw as a function call, told in words.
fn result_note(result: &ToolResult) -> String {
    let outcome = if result.is_error { "failed" } else { "done" };
    match &result.text {
        Some(text) => format!("[result of earlier action: {outcome}: {text}]"),
        None => format!("[result of earlier action: {outcome}]"),
    }
}

fn image_part(image: &Image) -> Value {
    if image.data.is_none() {
        return json!({"text": "[image no longer available]"});
    }
    json!({"inlineData": {"mimeType": image.media_type, "data": image.base64()}})
}

// ---------------------------------------------------------------------------------------------
// Response

fn decode_response(
    provider: &str,
    body: &Value,
    request: &ModelRequest<'_>,
) -> Result<ModelResponse, ProviderError> {
    let usage = decode_usage(body.get("usageMetadata"));
    let candidate = body
        .get("candidates")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let Some(candidate) = candidate else {
        if let Some(reason) = body
            .pointer("/promptFeedback/blockReason")
            .and_then(Value::as_str)
        {
            let detail = body
                .pointer("/promptFeedback/blockReasonMessage")
                .and_then(Value::as_str)
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            return Err(ProviderError::Rejected {
                provider: provider.to_string(),
                status: 200,
                message: format!(
                    "Gemini blocked the prompt ({reason}{detail}); the task text or the screen \
                     tripped its filter, so change the task or what is on screen and retry"
                ),
            });
        }
        return Err(ProviderError::BadResponse {
            provider: provider.to_string(),
            message: format!(
                "no candidates in the answer: {}",
                http::excerpt(&body.to_string())
            ),
        });
    };

    let functions: HashSet<&str> = request.functions.iter().map(|f| f.name.as_str()).collect();
    let turn = request.messages.len();
    let parts: Vec<Value> = candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut content = Vec::new();
    let mut calls = 0;
    for (index, part) in parts.iter().enumerate() {
        if let Some(function_call) = function_call_of(part) {
            calls += 1;
            let call = decode_call(function_call, turn, index, request.display, &functions);
            content.push(Block::ToolCall(call));
        } else if let (Some(text), false) = (
            part.get("text").and_then(Value::as_str),
            part.get("thought") == Some(&Value::Bool(true)),
        ) {
            content.push(Block::Text {
                text: text.to_string(),
            });
        } else {
            // Thoughts, code execution and the like: only Gemini reads them back.
            content.push(Block::Opaque {
                provider: ProviderKind::Gemini,
                value: part.clone(),
            });
        }
    }

    let finish = candidate.get("finishReason").and_then(Value::as_str);
    let stop = if calls > 0 {
        StopReason::ToolUse
    } else {
        match finish {
            None | Some("STOP") => StopReason::EndTurn,
            Some("MAX_TOKENS") => StopReason::MaxTokens,
            Some(
                "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII"
                | "IMAGE_SAFETY",
            ) => StopReason::Refusal,
            Some(other) => StopReason::Other(other.to_string()),
        }
    };
    let state = (!parts.is_empty()).then(|| ProviderState {
        provider: ProviderKind::Gemini,
        value: json!({"parts": parts}),
    });
    Ok(ModelResponse {
        content,
        usage,
        stop,
        state,
    })
}

fn function_call_of(part: &Value) -> Option<&Value> {
    part.get("functionCall")
        .or_else(|| part.get("function_call"))
        .filter(|v| v.is_object())
}

/// `promptTokenCount` includes the cached part, and thinking tokens are billed as output.
fn decode_usage(meta: Option<&Value>) -> Usage {
    let count = |name: &str| {
        meta.and_then(|m| m.get(name))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let cached = count("cachedContentTokenCount");
    let prompt = count("promptTokenCount") + count("toolUsePromptTokenCount");
    Usage {
        input_tokens: prompt.saturating_sub(cached),
        output_tokens: count("candidatesTokenCount") + count("thoughtsTokenCount"),
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: cached,
    }
}

fn decode_call(
    function_call: &Value,
    turn: usize,
    index: usize,
    display: Display,
    functions: &HashSet<&str>,
) -> ToolCall {
    let name = function_call
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // Stable across retries of the same request: the turn number and the part's position.
    let id = function_call
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map_or_else(|| format!("{LOCAL_ID_PREFIX}{turn}-{index}"), String::from);
    let args = match function_call.get("args") {
        Some(args @ Value::Object(_)) => args.clone(),
        _ => json!({}),
    };
    if let Some(intent) = args.get("intent").and_then(Value::as_str) {
        tracing::debug!(function = %name, intent, "gemini action intent");
    }

    let (safety_checks, blocked) = safety(&id, args.get("safety_decision"));
    let call = if let Some(reason) = blocked {
        invalid(&name, reason, &args)
    } else if functions.contains(name.as_str()) {
        let mut arguments = args;
        if let Some(map) = arguments.as_object_mut() {
            map.remove("safety_decision");
        }
        Call::Function {
            name: name.clone(),
            arguments,
        }
    } else {
        match computer_actions(&name, &args, Grid(display)) {
            Ok(actions) => Call::Computer { actions },
            Err(reason) => invalid(&name, reason, &args),
        }
    };
    ToolCall {
        id,
        wire_name: Some(name),
        call,
        safety_checks,
    }
}

/// `require_confirmation` becomes a check a person must acknowledge. A decision that blocks
/// the action turns the call into an error for the model. Any other decision this code does
/// not know (besides the allowing ones) also goes to a person rather than running unchecked.
fn safety(call_id: &str, decision: Option<&Value>) -> (Vec<SafetyCheck>, Option<String>) {
    let Some(decision) = decision else {
        return (Vec::new(), None);
    };
    let kind = decision
        .get("decision")
        .and_then(Value::as_str)
        .unwrap_or("require_confirmation");
    let explanation = decision
        .get("explanation")
        .and_then(Value::as_str)
        .unwrap_or("Gemini's safety service asks a person to confirm this action.")
        .to_string();
    let lower = kind.to_ascii_lowercase();
    if lower.is_empty() || ["regular", "allowed", "allow"].contains(&lower.as_str()) {
        return (Vec::new(), None);
    }
    if lower.starts_with("block") {
        let reason = format!("Gemini's safety service blocked this action: {explanation}");
        return (Vec::new(), Some(reason));
    }
    let check = SafetyCheck {
        id: call_id.to_string(),
        code: kind.to_string(),
        message: explanation,
    };
    (vec![check], None)
}

fn invalid(name: &str, error: String, raw: &Value) -> Call {
    Call::Function {
        name: INVALID_CALL.into(),
        arguments: json!({"tool": name, "error": error, "raw": raw}),
    }
}

/// Maps Gemini's 0–999 grid onto the screenshot the model saw.
#[derive(Clone, Copy)]
struct Grid(Display);

impl Grid {
    fn scale(value: f64, size: u32) -> i32 {
        let max = f64::from(size.max(1) - 1);
        (value * f64::from(size) / GRID).round().clamp(0.0, max) as i32
    }

    fn point(self, name: &str, args: &Value, x: &str, y: &str) -> Result<Point, String> {
        match (number(args, x), number(args, y)) {
            (Some(px), Some(py)) => Ok(Point {
                x: Self::scale(px, self.0.width),
                y: Self::scale(py, self.0.height),
            }),
            _ => Err(format!(
                "{name} needs numeric `{x}` and `{y}` on the 0-999 grid"
            )),
        }
    }

    /// A grid distance along the scroll axis, in wheel notches (at least one).
    fn notches(self, direction: ScrollDirection, grid_distance: f64) -> u32 {
        let axis = match direction {
            ScrollDirection::Up | ScrollDirection::Down => self.0.height,
            ScrollDirection::Left | ScrollDirection::Right => self.0.width,
        };
        notches(grid_distance * f64::from(axis) / GRID)
    }
}

fn notches(pixels: f64) -> u32 {
    (pixels.abs() / PIXELS_PER_NOTCH).round().clamp(1.0, 1000.0) as u32
}

fn number(args: &Value, key: &str) -> Option<f64> {
    args.get(key)
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite())
}

fn text_arg(name: &str, args: &Value, key: &str) -> Result<String, String> {
    args.get(key)
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| format!("{name} needs a string `{key}`"))
}

fn flag(args: &Value, key: &str, default: bool) -> bool {
    args.get(key).and_then(Value::as_bool).unwrap_or(default)
}

fn direction(name: &str, args: &Value) -> Result<ScrollDirection, String> {
    let given = args.get("direction").and_then(Value::as_str).unwrap_or("");
    match given.to_ascii_lowercase().as_str() {
        "up" => Ok(ScrollDirection::Up),
        "down" => Ok(ScrollDirection::Down),
        "left" => Ok(ScrollDirection::Left),
        "right" => Ok(ScrollDirection::Right),
        _ => Err(format!(
            "{name} needs `direction` up, down, left or right (got {given:?})"
        )),
    }
}

fn click(at: Point, button: MouseButton, count: u8) -> ComputerAction {
    ComputerAction::Click {
        at,
        button,
        count,
        hold_keys: Vec::new(),
    }
}

fn key(keys: &[&str]) -> ComputerAction {
    ComputerAction::Key {
        keys: keys.iter().map(|k| (*k).to_string()).collect(),
    }
}

/// The desktop actions one Gemini function call stands for, or why it cannot be run.
fn computer_actions(name: &str, args: &Value, grid: Grid) -> Result<Vec<ComputerAction>, String> {
    let point = |x: &str, y: &str| grid.point(name, args, x, y);
    let actions = match name {
        "click_at" | "click" => vec![click(point("x", "y")?, MouseButton::Left, 1)],
        "double_click" => vec![click(point("x", "y")?, MouseButton::Left, 2)],
        "triple_click" => vec![click(point("x", "y")?, MouseButton::Left, 3)],
        "right_click" => vec![click(point("x", "y")?, MouseButton::Right, 1)],
        "middle_click" => vec![click(point("x", "y")?, MouseButton::Middle, 1)],
        "hover_at" | "move" => vec![ComputerAction::Move {
            at: point("x", "y")?,
        }],
        "mouse_down" => vec![ComputerAction::MouseDown {
            at: Some(point("x", "y")?),
            button: MouseButton::Left,
        }],
        "mouse_up" => vec![ComputerAction::MouseUp {
            at: Some(point("x", "y")?),
            button: MouseButton::Left,
        }],
        // Documented defaults: clear the field first and press Enter after.
        "type_text_at" => {
            let at = point("x", "y")?;
            let text = text_arg(name, args, "text")?;
            let mut actions = vec![click(at, MouseButton::Left, 1)];
            if flag(args, "clear_before_typing", true) {
                actions.push(key(&["ctrl", "a"]));
                actions.push(key(&["Delete"]));
            }
            actions.push(ComputerAction::Type { text });
            if flag(args, "press_enter", true) {
                actions.push(key(&["Return"]));
            }
            actions
        }
        // Gemini 3.5+: types where the focus is, or clicks first when given a point.
        "type" => {
            let text = text_arg(name, args, "text")?;
            let mut actions = Vec::new();
            if args.get("x").is_some() || args.get("y").is_some() {
                actions.push(click(point("x", "y")?, MouseButton::Left, 1));
            }
            actions.push(ComputerAction::Type { text });
            if flag(args, "press_enter", false) {
                actions.push(key(&["Return"]));
            }
            actions
        }
        "key_combination" | "hotkey" => {
            let keys: Vec<String> = match args.get("keys") {
                Some(Value::String(combo)) => split_combo(combo),
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .map(xdotool_key)
                    .collect(),
                _ => Vec::new(),
            };
            if keys.is_empty() {
                return Err(format!(
                    "{name} needs `keys`, e.g. \"control+c\" or [\"Control\", \"C\"]"
                ));
            }
            vec![ComputerAction::Key { keys }]
        }
        "press_key" => {
            let keys = split_combo(&text_arg(name, args, "key")?);
            if keys.is_empty() {
                return Err(format!("{name} needs a non-empty `key`"));
            }
            vec![ComputerAction::Key { keys }]
        }
        "scroll_document" => {
            let direction = direction(name, args)?;
            vec![ComputerAction::Scroll {
                at: None,
                direction,
                amount: grid.notches(direction, DEFAULT_GRID_MAGNITUDE),
                hold_keys: Vec::new(),
            }]
        }
        // `magnitude` is on the grid like the coordinates (default 800).
        "scroll_at" => {
            let at = point("x", "y")?;
            let direction = direction(name, args)?;
            let magnitude = number(args, "magnitude").unwrap_or(DEFAULT_GRID_MAGNITUDE);
            vec![ComputerAction::Scroll {
                at: Some(at),
                direction,
                amount: grid.notches(direction, magnitude),
                hold_keys: Vec::new(),
            }]
        }
        // Gemini 3.5+: `magnitude_in_pixels` (default 300) is taken as screenshot pixels.
        "scroll" => {
            let at = if args.get("x").is_some() || args.get("y").is_some() {
                Some(point("x", "y")?)
            } else {
                None
            };
            let direction = direction(name, args)?;
            let pixels = number(args, "magnitude_in_pixels").unwrap_or(DEFAULT_SCROLL_PIXELS);
            vec![ComputerAction::Scroll {
                at,
                direction,
                amount: notches(pixels),
                hold_keys: Vec::new(),
            }]
        }
        "drag_and_drop" => {
            let (from, to) = if args.get("start_x").is_some() {
                (point("start_x", "start_y")?, point("end_x", "end_y")?)
            } else {
                (point("x", "y")?, point("destination_x", "destination_y")?)
            };
            vec![ComputerAction::Drag {
                path: vec![from, to],
                hold_keys: Vec::new(),
            }]
        }
        "navigate" => vec![ComputerAction::Navigate {
            url: web_url(&text_arg(name, args, "url")?)?,
        }],
        "search" => vec![ComputerAction::Navigate {
            url: SEARCH_URL.into(),
        }],
        "go_back" => vec![key(&["alt", "Left"])],
        "go_forward" => vec![key(&["alt", "Right"])],
        "wait_5_seconds" => vec![ComputerAction::Wait { duration_ms: 5000 }],
        "wait" => {
            let seconds = number(args, "seconds").unwrap_or(1.0).max(0.0);
            let duration_ms = ((seconds * 1000.0) as u64).min(MAX_WAIT_MS);
            vec![ComputerAction::Wait { duration_ms }]
        }
        // The browser is already on screen: opening it is a look at the screen.
        "open_web_browser" | "take_screenshot" => vec![ComputerAction::Screenshot],
        "key_down" | "key_up" => {
            return Err(format!(
                "{name} is not supported here; press the whole chord at once with hotkey or \
                 press_key"
            ));
        }
        "open_app" | "list_apps" | "long_press" => {
            return Err(format!(
                "{name} is a mobile action; this is a desktop with a browser"
            ));
        }
        "" => return Err("the function call has no name".into()),
        other => {
            return Err(format!(
                "unknown function {other:?}: use a computer use action (click_at, type_text_at, \
                 scroll_at, key_combination, navigate, …) or one of the declared functions"
            ));
        }
    };
    Ok(actions)
}

/// `navigate` takes a web address; one without a scheme is taken as https.
fn web_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("navigate needs a non-empty `url`".into());
    }
    match url.split_once("://") {
        Some((scheme, _))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            Ok(url.to_string())
        }
        Some((scheme, _)) => Err(format!(
            "navigate takes an http or https URL, not {scheme}:"
        )),
        // `javascript:…`, `mailto:…`, `about:blank`: a scheme, not `host:port`.
        None if has_other_scheme(url) => {
            Err(format!("navigate takes an http or https URL, not {url:?}"))
        }
        None => Ok(format!("https://{url}")),
    }
}

fn has_other_scheme(url: &str) -> bool {
    url.split_once(':').is_some_and(|(scheme, rest)| {
        !scheme.is_empty()
            && scheme.chars().all(|c| c.is_ascii_alphabetic())
            && !rest.starts_with(|c: char| c.is_ascii_digit())
    })
}

/// `"Control+Shift+T"` → `["ctrl", "shift", "t"]`. A trailing `+` is the plus key.
fn split_combo(combo: &str) -> Vec<String> {
    let combo = combo.trim();
    let (body, plus) = match combo.strip_suffix("++") {
        Some(rest) => (rest, true),
        None if combo == "+" => ("", true),
        None => (combo, false),
    };
    let mut keys: Vec<String> = body
        .split('+')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(xdotool_key)
        .collect();
    if plus {
        keys.push("plus".into());
    }
    keys
}

/// Gemini's key names (Playwright style, any case: `Control`, `ENTER`, `ArrowUp`) as xdotool
/// keysyms.
fn xdotool_key(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let mapped = match lower.as_str() {
        "control" | "ctrl" | "controlleft" | "controlright" => "ctrl",
        "shift" | "shiftleft" | "shiftright" => "shift",
        "alt" | "option" | "altleft" | "altright" => "alt",
        "meta" | "command" | "cmd" | "super" | "win" | "windows" | "os" | "metaleft"
        | "metaright" => "super",
        "enter" | "return" => "Return",
        "tab" => "Tab",
        "escape" | "esc" => "Escape",
        "backspace" => "BackSpace",
        "delete" | "del" => "Delete",
        "insert" | "ins" => "Insert",
        "space" | "spacebar" | " " => "space",
        "up" | "arrowup" => "Up",
        "down" | "arrowdown" => "Down",
        "left" | "arrowleft" => "Left",
        "right" | "arrowright" => "Right",
        "pageup" | "page_up" | "pgup" => "Page_Up",
        "pagedown" | "page_down" | "pgdn" => "Page_Down",
        "home" => "Home",
        "end" => "End",
        "capslock" | "caps_lock" => "Caps_Lock",
        "printscreen" | "print" => "Print",
        "plus" | "+" => "plus",
        "minus" | "-" => "minus",
        _ => "",
    };
    if !mapped.is_empty() {
        return mapped.into();
    }
    if let Some(n) = lower.strip_prefix('f').and_then(|n| n.parse::<u8>().ok())
        && (1..=24).contains(&n)
    {
        return format!("F{n}");
    }
    // Single letters are sent lower case: with a modifier "A" means the A key, not shift+a.
    let mut chars = name.trim().chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_alphabetic() => c.to_ascii_lowercase().to_string(),
        _ => name.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_become_xdotool_keysyms() {
        assert_eq!(split_combo("control+c"), ["ctrl", "c"]);
        assert_eq!(split_combo("Control+Shift+T"), ["ctrl", "shift", "t"]);
        assert_eq!(split_combo("ENTER"), ["Return"]);
        assert_eq!(split_combo("Meta+ArrowLeft"), ["super", "Left"]);
        assert_eq!(split_combo("control++"), ["ctrl", "plus"]);
        assert_eq!(split_combo("F5"), ["F5"]);
        assert_eq!(split_combo("PageDown"), ["Page_Down"]);
    }

    #[test]
    fn navigate_accepts_web_urls_only() {
        assert_eq!(web_url("example.com/a").unwrap(), "https://example.com/a");
        assert_eq!(web_url("HTTP://x.org").unwrap(), "HTTP://x.org");
        assert!(web_url("javascript:alert(1)").is_err());
        assert!(web_url("file:///etc/passwd").is_err());
        assert!(web_url("mailto:a@b.com").is_err());
        assert!(web_url(" ").is_err());
        assert_eq!(
            web_url("localhost:8080/x").unwrap(),
            "https://localhost:8080/x"
        );
    }

    #[test]
    fn grid_edges_stay_on_screen() {
        assert_eq!(Grid::scale(0.0, 1280), 0);
        assert_eq!(Grid::scale(999.0, 1280), 1279);
        assert_eq!(Grid::scale(1000.0, 1280), 1279);
        assert_eq!(Grid::scale(-5.0, 800), 0);
    }
}
