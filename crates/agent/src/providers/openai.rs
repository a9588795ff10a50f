//! OpenAI Responses API (`POST /v1/responses`) with the computer tool.
//!
//! Wire facts, from OpenAI's computer use guide and API reference:
//! - The computer tool is either `{"type":"computer_use_preview","display_width","display_height",
//!   "environment"}` (model `computer-use-preview`, which also needs `truncation: "auto"`) or the
//!   generally available `{"type":"computer"}` (gpt-5.4 and later), which takes no display size:
//!   its coordinates are pixels of the screenshot it was sent.
//! - The model answers with `computer_call` items: `call_id`, `action` (preview) or a batched
//!   `actions` list (GA tool), and `pending_safety_checks`. Each is answered with a
//!   `computer_call_output` whose output is `{"type":"computer_screenshot","image_url":<data URL>}`,
//!   quoting in `acknowledged_safety_checks` the checks a person acknowledged.
//! - Agent tools are `{"type":"function",…}` entries; the model calls them with `function_call`
//!   items whose `arguments` is a JSON *string*, answered with `function_call_output`.
//! - Every response has an id; the next request names it in `previous_response_id` and sends only
//!   the new items. `instructions` and `tools` are not carried over, so both go every time.
//!
//! Decisions the neutral model forces on us:
//! - Key names: OpenAI spells keys like `CTRL`, `ENTER`, `ARROWLEFT`; they become xdotool names
//!   (`ctrl`, `Return`, `Left`), single letters lower case (`["CTRL","C"]` is ctrl+c, not
//!   ctrl+shift+c). Unknown names pass through unchanged.
//! - Mouse buttons `back`/`forward` have no neutral equivalent; they become the browser chords
//!   alt+Left / alt+Right, which is what those buttons do in every Linux browser. `wheel` is the
//!   middle button.
//! - Scrolling: `scroll_x`/`scroll_y` are pixels; they become wheel notches at
//!   [`PIXELS_PER_NOTCH`] px each, rounded up (positive y is down, positive x is right). A
//!   diagonal scroll becomes two actions, vertical first; a zero scroll is a pointer move.
//! - `computer_tool = function` offers no native computer tool, only the agent's functions;
//!   another provider's computer tool on this provider is refused before any request.
//! - `wait` has no duration on the wire; it waits [`WAIT_MS`] ms, as OpenAI's samples do.
//! - Keys held during a `move` (GA tool) are dropped: a bare pointer move with modifiers held does
//!   nothing the neutral [`ComputerAction::Move`] cannot.
//! - A call that cannot be decoded (unknown action, missing coordinate, arguments that are not
//!   JSON) becomes an [`INVALID_CALL`] with the reason; a batched call with one bad action is
//!   invalid as a whole, so half a batch never runs.
//! - A failed computer call is still answered with a `computer_call_output` (the API requires a
//!   screenshot there; a blank 1×1 PNG stands in when there is none), followed by a user message
//!   that states the real reason, so the model never mistakes a failure for success.
//! - Usage: OpenAI's `input_tokens` include the cached ones; `cache_read_input_tokens` gets
//!   `input_tokens_details.cached_tokens` and `input_tokens` keeps only the rest, so
//!   [`crate::model::Price::cost`] bills each token once. OpenAI has no cache-write charge.
//! - Without a usable `previous_response_id` (the last answer came from another provider) the
//!   whole history is sent. Our own calls are re-encoded from their neutral actions with the item
//!   ids kept in [`ProviderState`] (`{"response_id", "item_ids": {call_id: item_id}}`), because
//!   the API requires the id of a `computer_call` it is shown again. Computer calls of other
//!   providers (no OpenAI item id) and calls of functions not offered now are described in text
//!   instead, with their results as user messages: a made-up item would be refused. OpenAI items
//!   we do not model (reasoning) are sent back verbatim; a reasoning item is dropped when the item
//!   it preceded cannot be sent with its id, because the API refuses a reasoning item without it.

use std::collections::{HashMap, HashSet};

use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

use crate::model::{
    Block, Call, Capability, ChatMessage, ComputerAction, ComputerTool, INVALID_CALL, Image,
    ImageLimit, ModelRequest, ModelResponse, MouseButton, Point, Provider, ProviderError,
    ProviderKind, ProviderState, Role, SafetyCheck, ScrollDirection, StopReason, ToolCall,
    ToolResult, Usage,
};
use crate::providers::http::{self, Endpoint};

/// Pixels of `scroll_x`/`scroll_y` per wheel notch (about what one notch scrolls in a browser).
pub const PIXELS_PER_NOTCH: u32 = 100;

/// How long a `wait` action waits, in milliseconds.
pub const WAIT_MS: u64 = 2_000;

/// The `wire_name` of an [`INVALID_CALL`] that came from a `computer_call`, so its result still
/// goes back as a `computer_call_output`.
pub const COMPUTER_CALL: &str = "computer_call";

const PATH: &str = "/v1/responses";

/// A valid 1×1 transparent PNG: `computer_call_output` must carry a screenshot even when the
/// action failed before one was taken.
const BLANK_PNG: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";

/// The largest screenshot to send `model` (its wire name) so OpenAI does not shrink it.
///
/// Older vision models (`computer-use-preview`, gpt-4o, gpt-4.1, gpt-5/5.1, o-series) fit an
/// image into 2048×2048 and then scale its short side to 768 px: 1366×768 (16:9) is the most that
/// survives, so the limit is 2048 px / 1366×768 pixels. Newer models (gpt-5.4 and later, the GA
/// computer tool) count 32 px patches; 1536 patches (≈1.57 MP, e.g. 1600×900) fit the smallest
/// budget OpenAI documents, so nothing we send is resized whatever detail the server applies.
pub fn image_limit(model: &str) -> ImageLimit {
    let m = model.to_ascii_lowercase();
    let tiled = [
        "computer-use-preview",
        "gpt-4o",
        "gpt-4.1",
        "gpt-4.5",
        "gpt-4-",
        "gpt-5-",
        "gpt-5.1",
        "o1",
        "o3",
        "o4-mini",
    ];
    if m == "gpt-5" || tiled.iter().any(|p| m.starts_with(p)) {
        ImageLimit {
            max_long_edge: 2048,
            max_pixels: 1366 * 768,
        }
    } else {
        ImageLimit {
            max_long_edge: 2048,
            max_pixels: 1536 * 32 * 32,
        }
    }
}

/// A provider speaking OpenAI's Responses API.
pub struct OpenAiProvider {
    name: String,
    endpoint: Endpoint,
    api_key: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("OpenAiProvider")
            .field("name", &self.name)
            .field("base_url", &self.endpoint.base_url)
            .finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    /// A provider entry named `name` that sends `api_key` as a bearer token to `endpoint`.
    pub fn new(
        name: impl Into<String>,
        endpoint: Endpoint,
        api_key: String,
        client: reqwest::Client,
    ) -> Self {
        OpenAiProvider {
            name: name.into(),
            endpoint,
            api_key,
            client,
        }
    }

    async fn call(&self, request: ModelRequest<'_>) -> Result<ModelResponse, ProviderError> {
        let body = build_body(&self.name, &request)?;
        let auth = format!("Bearer {}", self.api_key);
        let answer = http::post_json(
            &self.client,
            &self.endpoint,
            PATH,
            &[("authorization", auth.as_str())],
            &body,
        )
        .await
        .map_err(|e| refine_error(e, &request.model.wire_name))?;
        decode_response(&answer).map_err(|message| ProviderError::BadResponse {
            provider: self.name.clone(),
            message,
        })
    }
}

impl Provider for OpenAiProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Openai
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

/// Turns a 400 that says the model lacks a capability into [`ProviderError::Unsupported`].
fn refine_error(error: ProviderError, model: &str) -> ProviderError {
    match error {
        ProviderError::Rejected {
            provider,
            status: 400,
            message,
        } => match missing_capability(&message) {
            Some(capability) => ProviderError::Unsupported {
                provider,
                model: model.to_string(),
                capability,
                message,
            },
            None => ProviderError::Rejected {
                provider,
                status: 400,
                message,
            },
        },
        other => other,
    }
}

fn missing_capability(message: &str) -> Option<Capability> {
    let m = message.to_ascii_lowercase();
    let refuses = [
        "not supported",
        "does not support",
        "unsupported",
        "only supported",
        "not available",
    ]
    .iter()
    .any(|p| m.contains(p));
    let computer = [
        "computer_use_preview",
        "computer use",
        "computer-use",
        "computer tool",
        "'computer'",
        "\"computer\"",
        "`computer`",
    ]
    .iter()
    .any(|p| m.contains(p));
    if refuses && computer {
        return Some(Capability::ComputerTool);
    }
    http::missing_capability(message).or_else(|| {
        (refuses && (m.contains("image") || m.contains("vision"))).then_some(Capability::Vision)
    })
}

fn build_body(provider: &str, request: &ModelRequest<'_>) -> Result<Value, ProviderError> {
    let model = request.model;
    let mut tools = Vec::new();
    match model.computer_tool {
        ComputerTool::OpenaiPreview => tools.push(json!({
            "type": "computer_use_preview",
            "display_width": request.display.width,
            "display_height": request.display.height,
            "environment": "linux",
        })),
        ComputerTool::OpenaiComputer => tools.push(json!({"type": "computer"})),
        // No native tool: the agent's own functions only.
        ComputerTool::Function => {}
        other => {
            let name = serde_json::to_value(other)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{other:?}"));
            return Err(ProviderError::Unsupported {
                provider: provider.to_string(),
                model: model.wire_name.clone(),
                capability: Capability::ComputerTool,
                message: format!(
                    "computer_tool `{name}` is not an OpenAI tool; set it to `openai_preview` \
                     (computer-use-preview) or `openai_computer` (gpt-5.4 and later)"
                ),
            });
        }
    }
    for f in request.functions {
        // `strict` defaults to true in the Responses API, which rejects schemas that are not in
        // its strict subset; ours are ordinary JSON Schema.
        tools.push(json!({
            "type": "function",
            "name": f.name,
            "description": f.description,
            "parameters": f.parameters,
            "strict": false,
        }));
    }
    let names: HashSet<&str> = request.functions.iter().map(|f| f.name.as_str()).collect();
    let (previous, input) = Conversation::new(model.computer_tool, &names).build(request.messages);

    let mut body = Map::new();
    body.insert("model".into(), json!(model.wire_name));
    body.insert("instructions".into(), json!(request.system));
    body.insert("input".into(), Value::Array(input));
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    body.insert("max_output_tokens".into(), json!(request.max_tokens));
    if model.computer_tool == ComputerTool::OpenaiPreview {
        // Required by computer-use-preview.
        body.insert("truncation".into(), json!("auto"));
    }
    if let Some(id) = previous {
        body.insert("previous_response_id".into(), json!(id));
    }
    Ok(Value::Object(body))
}

// ---------------------------------------------------------------------------------------------
// Neutral conversation → input items
// ---------------------------------------------------------------------------------------------

/// How a call of the model goes back on the wire, and so how its result is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// A `computer_call`, answered with `computer_call_output`.
    Computer,
    /// A `function_call`, answered with `function_call_output`.
    Function,
    /// Described in text, answered with a user message.
    Text,
}

struct Conversation<'a> {
    tool: ComputerTool,
    functions: &'a HashSet<&'a str>,
    wire: HashMap<String, Wire>,
    /// The items of calls sent natively in full-history mode.
    encoded: HashMap<String, Value>,
    items: Vec<Value>,
}

fn openai_state(m: &ChatMessage) -> Option<&Value> {
    m.state
        .as_ref()
        .filter(|s| s.provider == ProviderKind::Openai)
        .map(|s| &s.value)
}

fn response_id(m: &ChatMessage) -> Option<&str> {
    openai_state(m)?.get("response_id")?.as_str()
}

fn item_id<'m>(m: &'m ChatMessage, call_id: &str) -> Option<&'m str> {
    openai_state(m)?.get("item_ids")?.get(call_id)?.as_str()
}

impl<'a> Conversation<'a> {
    fn new(tool: ComputerTool, functions: &'a HashSet<&'a str>) -> Self {
        Conversation {
            tool,
            functions,
            wire: HashMap::new(),
            encoded: HashMap::new(),
            items: Vec::new(),
        }
    }

    /// The `previous_response_id` to send, if any, and the input items.
    fn build(mut self, messages: &[ChatMessage]) -> (Option<String>, Vec<Value>) {
        let chained = messages
            .iter()
            .rposition(|m| m.role == Role::Assistant)
            .and_then(|i| response_id(&messages[i]).map(|id| (i, id.to_string())));
        self.classify(messages, chained.is_some());
        match chained {
            Some((i, id)) => {
                for m in &messages[i + 1..] {
                    self.message(m);
                }
                (Some(id), self.items)
            }
            None => {
                for m in messages {
                    self.message(m);
                }
                (None, self.items)
            }
        }
    }

    /// Decides for every call how it goes on the wire. In chained mode the calls already live on
    /// the server, so only the kind matters; in full mode a call is native only if we can send a
    /// valid item for it.
    fn classify(&mut self, messages: &[ChatMessage], chained: bool) {
        for m in messages.iter().filter(|m| m.role == Role::Assistant) {
            let ours = openai_state(m).is_some();
            for block in &m.content {
                let Block::ToolCall(call) = block else {
                    continue;
                };
                let wire = if is_computer(call) {
                    if ours && chained {
                        Wire::Computer
                    } else if let Some(item) = ours
                        .then(|| self.computer_item(call, item_id(m, &call.id)))
                        .flatten()
                    {
                        self.encoded.insert(call.id.clone(), item);
                        Wire::Computer
                    } else {
                        Wire::Text
                    }
                } else if ours || self.functions.contains(function_name(call)) {
                    if !chained {
                        let item = function_item(call, item_id(m, &call.id).filter(|_| ours));
                        self.encoded.insert(call.id.clone(), item);
                    }
                    Wire::Function
                } else {
                    Wire::Text
                };
                self.wire.insert(call.id.clone(), wire);
            }
        }
    }

    /// The `computer_call` item for one of our calls, or `None` when it cannot be sent validly.
    fn computer_item(&self, call: &ToolCall, item_id: Option<&str>) -> Option<Value> {
        match &call.call {
            Call::Computer { actions } => {
                let item_id = item_id?;
                let wire = wire_actions(actions)?;
                let mut item = json!({
                    "type": "computer_call",
                    "id": item_id,
                    "call_id": call.id,
                    "pending_safety_checks": checks_json(&call.safety_checks),
                    "status": "completed",
                });
                if self.tool == ComputerTool::OpenaiComputer {
                    item["actions"] = Value::Array(wire);
                } else {
                    let [one] = <[Value; 1]>::try_from(wire).ok()?;
                    item["action"] = one;
                }
                Some(item)
            }
            // An undecodable call of ours: the item as it came, id included.
            Call::Function { arguments, .. } => arguments
                .get("raw")
                .filter(|raw| raw.get("id").and_then(Value::as_str).is_some())
                .cloned(),
        }
    }

    fn message(&mut self, m: &ChatMessage) {
        match m.role {
            Role::Assistant => self.assistant(m),
            Role::User => self.user(m),
        }
    }

    fn assistant(&mut self, m: &ChatMessage) {
        let mut parts: Vec<Value> = Vec::new();
        for (k, block) in m.content.iter().enumerate() {
            match block {
                Block::Text { text } => parts.push(json!({"type": "output_text", "text": text})),
                Block::ToolCall(call) => match self.encoded.get(&call.id) {
                    Some(item) => {
                        let item = item.clone();
                        self.flush_assistant(&mut parts);
                        self.items.push(item);
                    }
                    None => parts.push(json!({
                        "type": "output_text",
                        "text": describe_call(call),
                    })),
                },
                Block::Opaque {
                    provider: ProviderKind::Openai,
                    value,
                } => {
                    let reasoning = value.get("type").and_then(Value::as_str) == Some("reasoning");
                    if reasoning && !self.next_is_native(&m.content[k + 1..]) {
                        continue;
                    }
                    self.flush_assistant(&mut parts);
                    self.items.push(value.clone());
                }
                // Other providers' items, pictures the model cannot have sent, stray results.
                Block::Opaque { .. } | Block::Image { .. } | Block::ToolResult(_) => {}
            }
        }
        self.flush_assistant(&mut parts);
    }

    /// True when the block after a reasoning item is an item we send with its original id.
    fn next_is_native(&self, rest: &[Block]) -> bool {
        match rest.first() {
            Some(Block::ToolCall(call)) => self
                .encoded
                .get(&call.id)
                .is_some_and(|item| item.get("id").is_some()),
            Some(Block::Opaque {
                provider: ProviderKind::Openai,
                ..
            }) => true,
            _ => false,
        }
    }

    fn flush_assistant(&mut self, parts: &mut Vec<Value>) {
        if !parts.is_empty() {
            self.items.push(json!({
                "role": "assistant",
                "content": std::mem::take(parts),
            }));
        }
    }

    fn user(&mut self, m: &ChatMessage) {
        let mut parts: Vec<Value> = Vec::new();
        for block in &m.content {
            match block {
                Block::Text { text } => parts.push(input_text(text)),
                Block::Image { image } => parts.push(input_image(image)),
                Block::ToolResult(result) => self.result(result, &mut parts),
                Block::Opaque {
                    provider: ProviderKind::Openai,
                    value,
                } => self.items.push(value.clone()),
                Block::Opaque { .. } | Block::ToolCall(_) => {}
            }
        }
        if !parts.is_empty() {
            self.items.push(json!({"role": "user", "content": parts}));
        }
    }

    /// Pushes the output item for `r` and adds to `parts` what the output item cannot say.
    fn result(&mut self, r: &ToolResult, parts: &mut Vec<Value>) {
        let id = &r.call_id;
        match self.wire.get(id).copied() {
            Some(Wire::Computer) => {
                let screenshot = r.image.as_ref().filter(|i| i.data.is_some());
                let mut item = json!({
                    "type": "computer_call_output",
                    "call_id": id,
                    "output": {
                        "type": "computer_screenshot",
                        "image_url": screenshot.map_or_else(|| BLANK_PNG.to_string(), Image::data_url),
                    },
                });
                if !r.acknowledged_safety_checks.is_empty() {
                    item["acknowledged_safety_checks"] = checks_json(&r.acknowledged_safety_checks);
                }
                self.items.push(item);
                let missing = if screenshot.is_none() {
                    " (No screenshot could be attached; the image sent with it is blank.)"
                } else {
                    ""
                };
                if r.is_error {
                    let reason = r.text.as_deref().unwrap_or("no reason was given");
                    parts.push(input_text(&format!(
                        "The computer call {id} failed: {reason}{missing}"
                    )));
                } else if let Some(text) = &r.text {
                    parts.push(input_text(&format!(
                        "Result of computer call {id}: {text}{missing}"
                    )));
                } else if !missing.is_empty() {
                    parts.push(input_text(&format!("Computer call {id}:{missing}")));
                }
            }
            Some(Wire::Function) => {
                let text = r.text.as_deref().unwrap_or_default();
                let mut output = if r.is_error {
                    format!("Error: {text}")
                } else {
                    text.to_string()
                };
                if output.is_empty() {
                    output = if r.image.is_some() {
                        "(see the image that follows)".into()
                    } else {
                        "(no output)".into()
                    };
                }
                self.items.push(json!({
                    "type": "function_call_output",
                    "call_id": id,
                    "output": output,
                }));
                if let Some(image) = &r.image {
                    parts.push(input_text(&format!("Image returned by call {id}:")));
                    parts.push(input_image(image));
                }
            }
            Some(Wire::Text) | None => {
                let outcome = if r.is_error { "failed" } else { "succeeded" };
                let text = r.text.as_deref().unwrap_or("");
                parts.push(input_text(&format!(
                    "[result of tool call {id}: {outcome}] {text}"
                )));
                if let Some(image) = &r.image {
                    parts.push(input_image(image));
                }
            }
        }
    }
}

fn is_computer(call: &ToolCall) -> bool {
    match &call.call {
        Call::Computer { .. } => true,
        Call::Function { name, .. } => {
            name == INVALID_CALL && call.wire_name.as_deref() == Some(COMPUTER_CALL)
        }
    }
}

/// The name the function was called by on the wire.
fn function_name(call: &ToolCall) -> &str {
    match &call.call {
        Call::Function { name, .. } if name == INVALID_CALL => {
            call.wire_name.as_deref().unwrap_or(name)
        }
        Call::Function { name, .. } => name,
        Call::Computer { .. } => "computer",
    }
}

fn function_item(call: &ToolCall, item_id: Option<&str>) -> Value {
    let arguments = match &call.call {
        // Send back exactly what the model sent.
        Call::Function { name, arguments } if name == INVALID_CALL => match arguments.get("raw") {
            Some(Value::String(raw)) => raw.clone(),
            Some(raw) => raw.to_string(),
            None => "{}".into(),
        },
        Call::Function { arguments, .. } => arguments.to_string(),
        Call::Computer { .. } => "{}".into(),
    };
    let mut item = json!({
        "type": "function_call",
        "call_id": call.id,
        "name": function_name(call),
        "arguments": arguments,
    });
    if let Some(id) = item_id {
        item["id"] = json!(id);
    }
    item
}

fn describe_call(call: &ToolCall) -> String {
    let what = serde_json::to_string(&call.call).unwrap_or_default();
    format!("[tool call {}: {what}]", call.id)
}

fn input_text(text: &str) -> Value {
    json!({"type": "input_text", "text": text})
}

fn input_image(image: &Image) -> Value {
    if image.data.is_none() {
        return input_text("[an image that could not be loaded]");
    }
    json!({"type": "input_image", "image_url": image.data_url(), "detail": "auto"})
}

fn checks_json(checks: &[SafetyCheck]) -> Value {
    Value::Array(
        checks
            .iter()
            .map(|c| json!({"id": c.id, "code": c.code, "message": c.message}))
            .collect(),
    )
}

/// Neutral actions as OpenAI action objects, or `None` when one has no OpenAI form.
fn wire_actions(actions: &[ComputerAction]) -> Option<Vec<Value>> {
    let mut out: Vec<Value> = Vec::with_capacity(actions.len());
    for action in actions {
        let mut v = match action {
            ComputerAction::Screenshot => json!({"type": "screenshot"}),
            ComputerAction::Click {
                at,
                button,
                count: 1,
                hold_keys,
            } => {
                let button = match button {
                    MouseButton::Left => "left",
                    MouseButton::Right => "right",
                    MouseButton::Middle => "wheel",
                };
                with_keys(
                    json!({"type": "click", "button": button, "x": at.x, "y": at.y}),
                    hold_keys,
                )
            }
            ComputerAction::Click {
                at,
                button: MouseButton::Left,
                count: 2,
                hold_keys,
            } => with_keys(
                json!({"type": "double_click", "x": at.x, "y": at.y}),
                hold_keys,
            ),
            ComputerAction::Move { at } => json!({"type": "move", "x": at.x, "y": at.y}),
            ComputerAction::Drag { path, hold_keys } => with_keys(
                json!({
                    "type": "drag",
                    "path": path.iter().map(|p| json!({"x": p.x, "y": p.y})).collect::<Vec<_>>(),
                }),
                hold_keys,
            ),
            ComputerAction::Scroll {
                at: Some(at),
                direction,
                amount,
                hold_keys,
            } => {
                let px = i64::from(*amount) * i64::from(PIXELS_PER_NOTCH);
                let (sx, sy) = match direction {
                    ScrollDirection::Up => (0, -px),
                    ScrollDirection::Down => (0, px),
                    ScrollDirection::Left => (-px, 0),
                    ScrollDirection::Right => (px, 0),
                };
                with_keys(
                    json!({"type": "scroll", "x": at.x, "y": at.y, "scroll_x": sx, "scroll_y": sy}),
                    hold_keys,
                )
            }
            ComputerAction::Type { text } => json!({"type": "type", "text": text}),
            ComputerAction::Key { keys } => json!({
                "type": "keypress",
                "keys": keys.iter().map(|k| openai_key(k)).collect::<Vec<_>>(),
            }),
            ComputerAction::Wait { .. } => json!({"type": "wait"}),
            _ => return None,
        };
        // A diagonal scroll was decoded into a vertical and a horizontal one: join them again.
        if let Some(prev) = out.last_mut()
            && is_scroll_pair(prev, &v)
        {
            prev["scroll_x"] = v["scroll_x"].take();
            continue;
        }
        out.push(v);
    }
    Some(out)
}

fn is_scroll_pair(prev: &Value, next: &Value) -> bool {
    let scroll = |v: &Value| v.get("type").and_then(Value::as_str) == Some("scroll");
    scroll(prev)
        && scroll(next)
        && prev["x"] == next["x"]
        && prev["y"] == next["y"]
        && prev.get("keys") == next.get("keys")
        && prev["scroll_x"] == json!(0)
        && next["scroll_y"] == json!(0)
}

fn with_keys(mut v: Value, keys: &[String]) -> Value {
    if !keys.is_empty() {
        v["keys"] = Value::Array(keys.iter().map(|k| json!(openai_key(k))).collect());
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Key names
// ---------------------------------------------------------------------------------------------

/// OpenAI spellings (case-insensitive) and the xdotool names they stand for; the first OpenAI
/// spelling of each is the one we send back.
const KEYS: &[(&[&str], &str)] = &[
    (&["ctrl", "control"], "ctrl"),
    (&["alt", "option"], "alt"),
    (&["shift"], "shift"),
    (
        &["meta", "cmd", "command", "super", "win", "windows"],
        "super",
    ),
    (&["enter", "return"], "Return"),
    (&["esc", "escape"], "Escape"),
    (&["tab"], "Tab"),
    (&["space"], "space"),
    (&["backspace"], "BackSpace"),
    (&["delete", "del"], "Delete"),
    (&["insert"], "Insert"),
    (&["home"], "Home"),
    (&["end"], "End"),
    (&["pageup", "page_up"], "Page_Up"),
    (&["pagedown", "page_down"], "Page_Down"),
    (&["arrowleft", "left"], "Left"),
    (&["arrowright", "right"], "Right"),
    (&["arrowup", "up"], "Up"),
    (&["arrowdown", "down"], "Down"),
    (&["capslock"], "Caps_Lock"),
    (&["printscreen", "print"], "Print"),
    (&["/", "slash"], "slash"),
    (&["\\", "backslash"], "backslash"),
    (&["-", "minus"], "minus"),
    (&["=", "equal"], "equal"),
    (&["+", "plus"], "plus"),
    (&[",", "comma"], "comma"),
    (&[".", "period"], "period"),
    (&[";", "semicolon"], "semicolon"),
    (&["'", "apostrophe"], "apostrophe"),
    (&["`", "grave"], "grave"),
    (&["[", "bracketleft"], "bracketleft"),
    (&["]", "bracketright"], "bracketright"),
];

/// An OpenAI key name as xdotool spells it.
pub fn xdotool_key(key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    if let Some((_, x)) = KEYS
        .iter()
        .find(|(names, _)| names.contains(&lower.as_str()))
    {
        return (*x).to_string();
    }
    let mut chars = lower.chars();
    if let (Some('f'), Some(rest)) = (chars.next(), lower.get(1..))
        && !rest.is_empty()
        && rest.parse::<u8>().is_ok_and(|n| (1..=24).contains(&n))
    {
        return format!("F{rest}");
    }
    if key.chars().count() == 1 && key.chars().all(|c| c.is_ascii_alphabetic()) {
        return lower;
    }
    key.to_string()
}

/// An xdotool key name as OpenAI spells it (for history sent back in full).
fn openai_key(key: &str) -> String {
    match KEYS.iter().find(|(_, x)| *x == key) {
        Some((names, _)) if names[0].chars().all(|c| c.is_ascii_alphabetic()) => {
            names[0].to_ascii_uppercase()
        }
        Some((names, _)) => names[0].to_string(),
        None => key.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Response → neutral
// ---------------------------------------------------------------------------------------------

fn decode_response(v: &Value) -> Result<ModelResponse, String> {
    let shape = |what: &str| {
        format!(
            "{what} (expected a Responses API object): {}",
            http::excerpt(&v.to_string())
        )
    };
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| shape("no `id`"))?;
    let status = v
        .get("status")
        .and_then(Value::as_str)
        .ok_or_else(|| shape("no `status`"))?;
    if status == "failed" {
        let error = v.get("error");
        let field = |k: &str| {
            error
                .and_then(|e| e.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        return Err(format!(
            "the response failed on OpenAI's side ({}): {}",
            field("code"),
            field("message")
        ));
    }
    let output = v
        .get("output")
        .and_then(Value::as_array)
        .ok_or_else(|| shape("no `output` list"))?;

    let mut content = Vec::new();
    let mut item_ids = Map::new();
    let mut refused = false;
    for (i, item) in output.iter().enumerate() {
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("output[{i}] has no `type`"))?;
        match kind {
            "message" => decode_message(item, &mut content, &mut refused),
            "computer_call" | "function_call" => {
                let call = if kind == "computer_call" {
                    decode_computer_call(item)
                } else {
                    decode_function_call(item)
                }
                .map_err(|e| format!("output[{i}]: {e}"))?;
                if let Some(item_id) = item.get("id").and_then(Value::as_str) {
                    item_ids.insert(call.id.clone(), json!(item_id));
                }
                content.push(Block::ToolCall(call));
            }
            // Reasoning and anything newer: OpenAI's own, sent back verbatim.
            _ => content.push(Block::Opaque {
                provider: ProviderKind::Openai,
                value: item.clone(),
            }),
        }
    }

    let usage = decode_usage(v.get("usage"));
    let calls = content.iter().any(|b| matches!(b, Block::ToolCall(_)));
    let stop = match status {
        "completed" if calls => StopReason::ToolUse,
        "completed" if refused => StopReason::Refusal,
        "completed" => StopReason::EndTurn,
        "incomplete" => match v
            .pointer("/incomplete_details/reason")
            .and_then(Value::as_str)
        {
            Some("max_output_tokens") => StopReason::MaxTokens,
            Some(reason) => StopReason::Other(reason.to_string()),
            None => StopReason::Other("incomplete".into()),
        },
        other => StopReason::Other(other.to_string()),
    };
    let mut state = Map::new();
    state.insert("response_id".into(), json!(id));
    if !item_ids.is_empty() {
        state.insert("item_ids".into(), Value::Object(item_ids));
    }
    Ok(ModelResponse {
        content,
        usage,
        stop,
        state: Some(ProviderState {
            provider: ProviderKind::Openai,
            value: Value::Object(state),
        }),
    })
}

fn decode_usage(usage: Option<&Value>) -> Usage {
    let n = |path: &str| {
        usage
            .and_then(|u| u.pointer(path))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let cached = n("/input_tokens_details/cached_tokens");
    Usage {
        input_tokens: n("/input_tokens").saturating_sub(cached),
        output_tokens: n("/output_tokens"),
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: cached,
    }
}

fn decode_message(item: &Value, content: &mut Vec<Block>, refused: &mut bool) {
    let parts = item.get("content").and_then(Value::as_array);
    for part in parts.into_iter().flatten() {
        match part.get("type").and_then(Value::as_str) {
            Some("output_text") => {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    content.push(Block::Text { text: text.into() });
                }
            }
            Some("refusal") => {
                *refused = true;
                if let Some(text) = part.get("refusal").and_then(Value::as_str) {
                    content.push(Block::Text { text: text.into() });
                }
            }
            _ => {}
        }
    }
}

fn decode_safety_checks(item: &Value) -> Vec<SafetyCheck> {
    let checks = item.get("pending_safety_checks").and_then(Value::as_array);
    checks
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let text = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
            Some(SafetyCheck {
                id: text("id")?,
                code: text("code").unwrap_or_default(),
                message: text("message").unwrap_or_default(),
            })
        })
        .collect()
}

fn call_id(item: &Value) -> Result<String, String> {
    item.get("call_id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| "a tool call without `call_id`".to_string())
}

fn decode_computer_call(item: &Value) -> Result<ToolCall, String> {
    let id = call_id(item)?;
    let safety_checks = decode_safety_checks(item);
    let batch = item
        .get("actions")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty());
    let single = item.get("action").filter(|a| a.is_object());
    let decoded = match (batch, single) {
        (Some(list), _) => list
            .iter()
            .enumerate()
            .map(|(i, a)| decode_action(a).map_err(|e| format!("action {i}: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.into_iter().flatten().collect()),
        (None, Some(a)) => decode_action(a),
        (None, None) => Err("the call has neither `action` nor `actions`".into()),
    };
    Ok(match decoded {
        Ok(actions) => ToolCall {
            id,
            wire_name: None,
            call: Call::Computer { actions },
            safety_checks,
        },
        Err(error) => ToolCall {
            id,
            wire_name: Some(COMPUTER_CALL.into()),
            call: Call::Function {
                name: INVALID_CALL.into(),
                arguments: json!({"tool": "computer", "error": error, "raw": item}),
            },
            safety_checks,
        },
    })
}

fn decode_function_call(item: &Value) -> Result<ToolCall, String> {
    let id = call_id(item)?;
    let name = item
        .get("name")
        .and_then(Value::as_str)
        .ok_or("a function_call without `name`")?;
    let raw = item.get("arguments").and_then(Value::as_str).unwrap_or("");
    let parsed = if raw.trim().is_empty() {
        Ok(json!({}))
    } else {
        serde_json::from_str::<Value>(raw)
    };
    Ok(match parsed {
        Ok(arguments) => ToolCall {
            id,
            wire_name: None,
            call: Call::Function {
                name: name.into(),
                arguments,
            },
            safety_checks: vec![],
        },
        Err(e) => ToolCall {
            id,
            wire_name: Some(name.into()),
            call: Call::Function {
                name: INVALID_CALL.into(),
                arguments: json!({
                    "tool": name,
                    "error": format!("the arguments are not valid JSON ({e}); send a JSON object"),
                    "raw": raw,
                }),
            },
            safety_checks: vec![],
        },
    })
}

fn number(a: &Value, key: &str) -> Result<i64, String> {
    let v = a.get(key).ok_or_else(|| format!("`{key}` is missing"))?;
    v.as_i64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.round() as i64)
        })
        .ok_or_else(|| format!("`{key}` is not a number: {v}"))
}

fn coordinate(a: &Value, key: &str) -> Result<i32, String> {
    let n = number(a, key)?;
    i32::try_from(n).map_err(|_| format!("`{key}` is out of range: {n}"))
}

fn point(a: &Value) -> Result<Point, String> {
    Ok(Point {
        x: coordinate(a, "x")?,
        y: coordinate(a, "y")?,
    })
}

fn key_list(a: &Value, key: &str) -> Result<Vec<String>, String> {
    match a.get(key) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(list)) => list
            .iter()
            .map(|k| {
                k.as_str()
                    .map(xdotool_key)
                    .ok_or_else(|| format!("`{key}` holds a non-string: {k}"))
            })
            .collect(),
        Some(other) => Err(format!("`{key}` is not a list: {other}")),
    }
}

fn decode_action(a: &Value) -> Result<Vec<ComputerAction>, String> {
    let kind = a
        .get("type")
        .and_then(Value::as_str)
        .ok_or("the action has no `type`")?;
    let hold_keys = key_list(a, "keys")?;
    let click = |button: MouseButton, count: u8| -> Result<Vec<ComputerAction>, String> {
        Ok(vec![ComputerAction::Click {
            at: point(a)?,
            button,
            count,
            hold_keys: hold_keys.clone(),
        }])
    };
    match kind {
        "click" => match a.get("button").and_then(Value::as_str).unwrap_or("left") {
            "left" => click(MouseButton::Left, 1),
            "right" => click(MouseButton::Right, 1),
            "wheel" | "middle" => click(MouseButton::Middle, 1),
            // Browser back/forward buttons: the browser chord does the same.
            "back" => Ok(vec![ComputerAction::Key {
                keys: vec!["alt".into(), "Left".into()],
            }]),
            "forward" => Ok(vec![ComputerAction::Key {
                keys: vec!["alt".into(), "Right".into()],
            }]),
            other => Err(format!(
                "unknown mouse button `{other}` (left, right, wheel, back or forward)"
            )),
        },
        "double_click" => click(MouseButton::Left, 2),
        "drag" => {
            let path = a
                .get("path")
                .and_then(Value::as_array)
                .ok_or("`path` is missing")?;
            let path = path
                .iter()
                .map(|p| match p {
                    Value::Array(xy) if xy.len() == 2 => point(&json!({"x": xy[0], "y": xy[1]})),
                    _ => point(p),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("a `path` point: {e}"))?;
            if path.len() < 2 {
                return Err("`path` needs at least two points".into());
            }
            Ok(vec![ComputerAction::Drag { path, hold_keys }])
        }
        "keypress" => {
            let keys = key_list(a, "keys")?;
            if keys.is_empty() {
                return Err("`keys` is empty".into());
            }
            Ok(vec![ComputerAction::Key { keys }])
        }
        "move" => Ok(vec![ComputerAction::Move { at: point(a)? }]),
        "screenshot" => Ok(vec![ComputerAction::Screenshot]),
        "scroll" => {
            let at = point(a)?;
            let sx = if a.get("scroll_x").is_some() {
                number(a, "scroll_x")?
            } else {
                0
            };
            let sy = if a.get("scroll_y").is_some() {
                number(a, "scroll_y")?
            } else {
                0
            };
            Ok(scroll_actions(at, sx, sy, &hold_keys))
        }
        "type" => {
            let text = a
                .get("text")
                .and_then(Value::as_str)
                .ok_or("`text` is missing")?;
            Ok(vec![ComputerAction::Type { text: text.into() }])
        }
        "wait" => Ok(vec![ComputerAction::Wait {
            duration_ms: WAIT_MS,
        }]),
        other => Err(format!("unknown action type `{other}`")),
    }
}

fn notches(px: i64) -> u32 {
    let n = px.unsigned_abs().div_ceil(u64::from(PIXELS_PER_NOTCH));
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

fn scroll_actions(at: Point, sx: i64, sy: i64, hold_keys: &[String]) -> Vec<ComputerAction> {
    let scroll = |direction, px: i64| ComputerAction::Scroll {
        at: Some(at),
        direction,
        amount: notches(px),
        hold_keys: hold_keys.to_vec(),
    };
    let mut out = Vec::new();
    if sy != 0 {
        out.push(scroll(
            if sy > 0 {
                ScrollDirection::Down
            } else {
                ScrollDirection::Up
            },
            sy,
        ));
    }
    if sx != 0 {
        out.push(scroll(
            if sx > 0 {
                ScrollDirection::Right
            } else {
                ScrollDirection::Left
            },
            sx,
        ));
    }
    if out.is_empty() {
        out.push(ComputerAction::Move { at });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_both_ways() {
        assert_eq!(xdotool_key("CTRL"), "ctrl");
        assert_eq!(xdotool_key("ENTER"), "Return");
        assert_eq!(xdotool_key("ARROWLEFT"), "Left");
        assert_eq!(xdotool_key("C"), "c");
        assert_eq!(xdotool_key("F5"), "F5");
        assert_eq!(xdotool_key("f12"), "F12");
        assert_eq!(xdotool_key("/"), "slash");
        assert_eq!(xdotool_key("XF86AudioMute"), "XF86AudioMute");
        assert_eq!(openai_key("ctrl"), "CTRL");
        assert_eq!(openai_key("Return"), "ENTER");
        assert_eq!(openai_key("Left"), "ARROWLEFT");
        assert_eq!(openai_key("slash"), "/");
        assert_eq!(openai_key("c"), "c");
    }

    #[test]
    fn scroll_pixels_become_notches() {
        assert_eq!(notches(1), 1);
        assert_eq!(notches(100), 1);
        assert_eq!(notches(101), 2);
        assert_eq!(notches(-250), 3);
    }

    #[test]
    fn a_diagonal_scroll_round_trips() {
        let at = Point { x: 5, y: 6 };
        let actions = scroll_actions(at, -200, 300, &[]);
        assert_eq!(actions.len(), 2);
        let wire = wire_actions(&actions).unwrap();
        assert_eq!(
            wire,
            vec![json!({"type":"scroll","x":5,"y":6,"scroll_x":-200,"scroll_y":300})]
        );
    }
}
