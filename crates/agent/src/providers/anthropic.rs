//! Anthropic's Messages API (`POST /v1/messages`) and its computer tool in three generations.
//!
//! - `computer_20250124` and `computer_20251124` are beta tools (header `anthropic-beta`): one
//!   `tools` entry named `computer` with the display size (`enable_zoom` on the 2025-11 one), and
//!   one `tool_use` per action whose `input.action` names it.
//! - `computer_toolset_20260801` is generally available (no beta header): one nameless `tools`
//!   entry that carries only `type` (plus `configs`/`cache_control`; coordinates are pixels of
//!   the latest screenshot, so there is no display size), and one `tool_use` per member call,
//!   named after the member and marked `"toolset_name": "computer"`. Its `tool_result`s carry
//!   the same mark.
//!
//! Every computer `tool_use` becomes one [`ToolCall`] holding one action (a key sequence such as
//! `"Down Down"` becomes several `Key` actions and is joined again on the way back). A call the
//! model got wrong becomes an [`INVALID_CALL`] function call; re-encoding it echoes the original
//! `tool_use` verbatim so its error result pairs with it. Thinking blocks (and any block type this
//! module does not model) travel as [`Block::Opaque`] and go back untouched, as the API requires
//! for signed thinking.
//!
//! Prompt caching: the system prompt, the last tool and the last block of the final user turn
//! carry `cache_control: ephemeral`, so each step re-reads the previous step's prefix from cache.

use std::collections::HashMap;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

use crate::model::{
    Block, Call, Capability, ChatMessage, ComputerAction, ComputerTool, Display, INVALID_CALL,
    Image, ImageLimit, ModelRequest, ModelResponse, ModelSpec, MouseButton, Point, Provider,
    ProviderError, ProviderKind, Role, ScrollDirection, StopReason, ToolCall, ToolResult, Usage,
};
use crate::providers::http::{self, Endpoint};

const MESSAGES_PATH: &str = "/v1/messages";
const API_VERSION: &str = "2023-06-01";
/// The name of the single computer tool of the 2025 generations.
const COMPUTER_TOOL: &str = "computer";
/// The `toolset_name` of the 2026 toolset's members.
const TOOLSET_FAMILY: &str = "computer";

/// Every member of `computer_toolset_20260801`, which are also the `action`s of the 2025 tools
/// (`zoom` only from `computer_20251124` on).
const ACTIONS: [&str; 17] = [
    "screenshot",
    "zoom",
    "left_click",
    "right_click",
    "middle_click",
    "double_click",
    "triple_click",
    "left_click_drag",
    "mouse_move",
    "left_mouse_down",
    "left_mouse_up",
    "cursor_position",
    "scroll",
    "type",
    "key",
    "hold_key",
    "wait",
];

/// Most repeats of one key combination we accept in one call (the toolset's `key.repeat`).
const MAX_KEY_REPEAT: u64 = 100;

/// The long edge and pixel count up to which models before Claude Opus 4.7 see an image
/// unscaled (Anthropic's vision docs: 1568 px, about 1.15 megapixels).
const STANDARD_IMAGES: ImageLimit = ImageLimit {
    max_long_edge: 1568,
    max_pixels: 1_150_000,
};

/// The same for Claude Opus 4.7 and later models (2576 px, about 3.75 megapixels).
const HIGH_RES_IMAGES: ImageLimit = ImageLimit {
    max_long_edge: 2576,
    max_pixels: 3_750_000,
};

/// A client for one Anthropic endpoint and key.
pub struct AnthropicProvider {
    name: String,
    endpoint: Endpoint,
    api_key: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("AnthropicProvider")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl AnthropicProvider {
    /// A provider entry named `name`, sending `api_key` to `endpoint` through `client`.
    pub fn new(
        name: impl Into<String>,
        endpoint: Endpoint,
        api_key: String,
        client: reqwest::Client,
    ) -> Self {
        AnthropicProvider {
            name: name.into(),
            endpoint,
            api_key,
            client,
        }
    }

    async fn call(&self, request: ModelRequest<'_>) -> Result<ModelResponse, ProviderError> {
        let generation = Generation::of(request.model.computer_tool)
            .ok_or_else(|| self.foreign_tool(request.model))?;
        let body = encode_request(&request, generation);
        let mut headers = vec![
            ("x-api-key", self.api_key.as_str()),
            ("anthropic-version", API_VERSION),
        ];
        if let Some(beta) = generation.beta() {
            headers.push(("anthropic-beta", beta));
        }
        let answer = http::post_json(&self.client, &self.endpoint, MESSAGES_PATH, &headers, &body)
            .await
            .map_err(|e| refine_error(e, request.model, generation))?;
        decode_response(&answer).map_err(|message| ProviderError::BadResponse {
            provider: self.name.clone(),
            message,
        })
    }

    fn foreign_tool(&self, model: &ModelSpec) -> ProviderError {
        ProviderError::Unsupported {
            provider: self.name.clone(),
            model: model.wire_name.clone(),
            capability: Capability::ComputerTool,
            message: format!(
                "`{}` is not an Anthropic computer tool; set computer_tool to one of {}",
                config_name(model.computer_tool),
                anthropic_tool_names()
            ),
        }
    }
}

impl Provider for AnthropicProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
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

/// The computer tool generation to offer a model, by its wire name.
///
/// - `computer_toolset_20260801` for Claude 5 models of every family and Claude Opus 4.8 (the
///   newest models refuse the older tools), and for names we do not recognise, since new models
///   take the generally available toolset;
/// - `computer_20251124` for Claude Opus 4.5–4.7 and Sonnet 4.6;
/// - `computer_20250124` for the rest (Sonnet 4.5, Haiku 4.5, Opus 4.1, Sonnet 4, Opus 4, …).
///
/// This is only the default: a model's `computer_tool` setting overrides it.
pub fn default_computer_tool(model: &str) -> ComputerTool {
    let Some(name) = ModelName::parse(model) else {
        return ComputerTool::AnthropicToolset20260801;
    };
    let version = (name.major, name.minor);
    if version >= (4, 8) {
        return ComputerTool::AnthropicToolset20260801;
    }
    let zoom_generation = match name.family {
        Family::Opus => version >= (4, 5),
        Family::Sonnet => version >= (4, 6),
        Family::Haiku => false,
        Family::Other => version >= (4, 5),
    };
    if zoom_generation {
        ComputerTool::Anthropic20251124
    } else {
        ComputerTool::Anthropic20250124
    }
}

/// The largest screenshot a model sees unscaled (Anthropic's vision docs): 2576 px long edge /
/// about 3.75 MP from Claude Opus 4.7 on, 1568 px / about 1.15 MP before. Names we do not
/// recognise get the smaller limit, which every model takes.
pub fn image_limit(model: &str) -> ImageLimit {
    match ModelName::parse(model) {
        Some(name) if (name.major, name.minor) >= (4, 7) => HIGH_RES_IMAGES,
        _ => STANDARD_IMAGES,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Opus,
    Sonnet,
    Haiku,
    /// A family we have no special rules for (Fable, Mythos, …).
    Other,
}

/// What a model's wire name says about it: `claude-opus-4-5-20251101`, `claude-3-7-sonnet-…`,
/// `anthropic.claude-sonnet-4-5-20250929-v1:0`, `claude-opus-4.7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ModelName {
    family: Family,
    major: u32,
    minor: u32,
}

impl ModelName {
    fn parse(model: &str) -> Option<ModelName> {
        let lower = model.to_ascii_lowercase();
        let start = lower.find("claude-")? + "claude-".len();
        let mut family = Family::Other;
        let mut version: Vec<u32> = Vec::new();
        let mut dated = false;
        for token in lower[start..].split(['-', '.', '@', ':', '/', '_']) {
            match token {
                "opus" => family = Family::Opus,
                "sonnet" => family = Family::Sonnet,
                "haiku" => family = Family::Haiku,
                _ if token.chars().all(|c| c.is_ascii_digit()) && !token.is_empty() => {
                    // A date (or any long number) ends the version; later numbers are
                    // revisions such as Bedrock's `-v1:0`.
                    if token.len() > 2 {
                        dated = true;
                    } else if !dated && version.len() < 2 {
                        version.push(token.parse().ok()?);
                    }
                }
                _ => {}
            }
        }
        Some(ModelName {
            family,
            major: *version.first()?,
            minor: version.get(1).copied().unwrap_or(0),
        })
    }
}

/// The computer tool generations this module speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Generation {
    Computer20250124,
    Computer20251124,
    Toolset20260801,
}

impl Generation {
    fn of(tool: ComputerTool) -> Option<Generation> {
        match tool {
            ComputerTool::Anthropic20250124 => Some(Generation::Computer20250124),
            ComputerTool::Anthropic20251124 => Some(Generation::Computer20251124),
            ComputerTool::AnthropicToolset20260801 => Some(Generation::Toolset20260801),
            _ => None,
        }
    }

    fn tool_type(self) -> &'static str {
        match self {
            Generation::Computer20250124 => "computer_20250124",
            Generation::Computer20251124 => "computer_20251124",
            Generation::Toolset20260801 => "computer_toolset_20260801",
        }
    }

    fn beta(self) -> Option<&'static str> {
        match self {
            Generation::Computer20250124 => Some("computer-use-2025-01-24"),
            Generation::Computer20251124 => Some("computer-use-2025-11-24"),
            Generation::Toolset20260801 => None,
        }
    }

    fn is_toolset(self) -> bool {
        self == Generation::Toolset20260801
    }

    fn has_zoom(self) -> bool {
        self != Generation::Computer20250124
    }

    fn tool_entry(self, display: Display) -> Value {
        match self {
            Generation::Computer20250124 => json!({
                "type": self.tool_type(),
                "name": COMPUTER_TOOL,
                "display_width_px": display.width,
                "display_height_px": display.height,
            }),
            Generation::Computer20251124 => json!({
                "type": self.tool_type(),
                "name": COMPUTER_TOOL,
                "display_width_px": display.width,
                "display_height_px": display.height,
                "enable_zoom": true,
            }),
            Generation::Toolset20260801 => json!({ "type": self.tool_type() }),
        }
    }
}

/// The config spelling of a computer tool (`anthropic_toolset20260801`), for messages.
fn config_name(tool: ComputerTool) -> String {
    match serde_json::to_value(tool) {
        Ok(Value::String(name)) => name,
        _ => format!("{tool:?}"),
    }
}

fn anthropic_tool_names() -> String {
    [
        ComputerTool::Anthropic20250124,
        ComputerTool::Anthropic20251124,
        ComputerTool::AnthropicToolset20260801,
    ]
    .map(config_name)
    .join(", ")
}

/// Turns a 400 that refuses the tool version (or images, or tools) into `Unsupported`, so the
/// task says what to change instead of retrying the same request.
fn refine_error(error: ProviderError, model: &ModelSpec, generation: Generation) -> ProviderError {
    let (provider, message) = match error {
        ProviderError::Rejected {
            provider,
            status: 400,
            message,
        } => (provider, message),
        other => return other,
    };
    if refuses_tool_version(&message, generation) {
        let default = default_computer_tool(&model.wire_name);
        let suggestion = if Generation::of(default) == Some(generation) {
            String::new()
        } else {
            format!(" (by its name this model takes `{}`)", config_name(default))
        };
        return ProviderError::Unsupported {
            provider,
            model: model.wire_name.clone(),
            capability: Capability::ComputerTool,
            message: format!(
                "{message}; set this model's computer_tool to a version it accepts{suggestion}: \
                 one of {}",
                anthropic_tool_names()
            ),
        };
    }
    match http::missing_capability(&message) {
        Some(capability) => ProviderError::Unsupported {
            provider,
            model: model.wire_name.clone(),
            capability,
            message,
        },
        None => ProviderError::Rejected {
            provider,
            status: 400,
            message,
        },
    }
}

/// Anthropic says e.g. "'claude-sonnet-4-6' does not support tool types: computer_20250124.",
/// or refuses the beta header ("Unexpected value(s) `computer-use-…` for the `anthropic-beta`
/// header").
fn refuses_tool_version(message: &str, generation: Generation) -> bool {
    let m = message.to_ascii_lowercase();
    let names_tool = m.contains(generation.tool_type());
    let refuses = [
        "does not support",
        "not supported",
        "unsupported",
        "not available",
    ]
    .iter()
    .any(|p| m.contains(p));
    m.contains("does not support tool type")
        || (names_tool && refuses)
        || generation
            .beta()
            .is_some_and(|beta| m.contains(beta) && m.contains("anthropic-beta"))
}

fn ephemeral() -> Value {
    json!({ "type": "ephemeral" })
}

fn encode_request(request: &ModelRequest<'_>, generation: Generation) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model.wire_name));
    body.insert("max_tokens".into(), json!(request.max_tokens));
    // The API refuses empty text blocks, so an empty prompt is left out.
    if !request.system.trim().is_empty() {
        body.insert(
            "system".into(),
            json!([{ "type": "text", "text": request.system, "cache_control": ephemeral() }]),
        );
    }
    body.insert(
        "tools".into(),
        Value::Array(encode_tools(request, generation)),
    );
    body.insert(
        "messages".into(),
        Value::Array(encode_messages(request, generation)),
    );
    Value::Object(body)
}

fn encode_tools(request: &ModelRequest<'_>, generation: Generation) -> Vec<Value> {
    let mut tools = vec![generation.tool_entry(request.display)];
    tools.extend(request.functions.iter().map(
        |f| json!({ "name": f.name, "description": f.description, "input_schema": f.parameters }),
    ));
    // One breakpoint on the last tool caches every tool definition before it.
    if let Some(Value::Object(last)) = tools.last_mut() {
        last.insert("cache_control".into(), ephemeral());
    }
    tools
}

/// How a tool call goes on the wire.
enum WireCall {
    /// A `tool_use` block.
    ToolUse {
        name: String,
        input: Value,
        toolset: bool,
    },
    /// A computer call this generation cannot express (several actions under one id from
    /// another provider, OpenAI's multi-point drag, Gemini's `navigate`, zoom on
    /// `computer_20250124`): it and its result travel as plain text so the history stays valid.
    Text(String),
}

/// What the encoder needs to know about a call when it meets its result.
#[derive(Debug, Clone, Copy)]
struct CallForm {
    toolset: bool,
    textual: bool,
}

fn wire_call(call: &ToolCall, generation: Generation) -> WireCall {
    match &call.call {
        Call::Function { name, arguments } if name == INVALID_CALL => {
            // Echo what the model sent, so the error result pairs with its own tool_use.
            let tool = arguments.get("tool").and_then(Value::as_str);
            let name = call.wire_name.as_deref().or(tool).unwrap_or(name);
            let raw = arguments.get("raw").filter(|raw| raw.is_object());
            WireCall::ToolUse {
                name: name.to_owned(),
                input: raw.cloned().unwrap_or_else(|| json!({})),
                toolset: call.wire_name.is_some() && generation.is_toolset(),
            }
        }
        Call::Function { name, arguments } => WireCall::ToolUse {
            name: name.clone(),
            input: if arguments.is_object() {
                arguments.clone()
            } else {
                json!({ "arguments": arguments })
            },
            toolset: false,
        },
        Call::Computer { actions } => match encode_actions(actions, generation) {
            Ok((action, mut fields)) if generation.is_toolset() => {
                let member = call
                    .wire_name
                    .as_deref()
                    .filter(|w| ACTIONS.contains(w))
                    .unwrap_or(action);
                fields.remove("action");
                WireCall::ToolUse {
                    name: member.to_owned(),
                    input: Value::Object(fields),
                    toolset: true,
                }
            }
            Ok((_, fields)) => WireCall::ToolUse {
                name: COMPUTER_TOOL.to_owned(),
                input: Value::Object(fields),
                toolset: false,
            },
            Err(reason) => WireCall::Text(format!(
                "[Computer call {} ({reason}, so it is shown as text): {}]",
                call.id,
                serde_json::to_string(actions).unwrap_or_default()
            )),
        },
    }
}

fn encode_messages(request: &ModelRequest<'_>, generation: Generation) -> Vec<Value> {
    let mut forms: HashMap<&str, CallForm> = HashMap::new();
    for message in request.messages {
        for block in &message.content {
            if let Block::ToolCall(call) = block {
                let form = match wire_call(call, generation) {
                    WireCall::ToolUse { toolset, .. } => CallForm {
                        toolset,
                        textual: false,
                    },
                    WireCall::Text(_) => CallForm {
                        toolset: false,
                        textual: true,
                    },
                };
                forms.insert(call.id.as_str(), form);
            }
        }
    }

    let mut turns: Vec<(Role, Vec<Value>)> = Vec::new();
    for message in request.messages {
        let blocks = encode_blocks(message, generation, &forms);
        if blocks.is_empty() {
            continue;
        }
        // The API wants alternating roles; merging keeps a split turn (say, tool results and
        // the person's next words stored apart) one turn.
        match turns.last_mut() {
            Some((role, content)) if *role == message.role => content.extend(blocks),
            _ => turns.push((message.role, blocks)),
        }
    }
    for (role, content) in &mut turns {
        if *role == Role::User {
            // Tool results must open the user turn that answers the tool uses.
            content.sort_by_key(|b| b.get("type").and_then(Value::as_str) != Some("tool_result"));
        }
    }
    // A breakpoint at the end of the conversation: the next step reads all of it from cache.
    if let Some((Role::User, content)) = turns.last_mut()
        && let Some(Value::Object(last)) = content.last_mut()
    {
        last.insert("cache_control".into(), ephemeral());
    }
    turns
        .into_iter()
        .map(|(role, content)| {
            let role = match role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            json!({ "role": role, "content": content })
        })
        .collect()
}

fn encode_blocks(
    message: &ChatMessage,
    generation: Generation,
    forms: &HashMap<&str, CallForm>,
) -> Vec<Value> {
    let mut out = Vec::new();
    for block in &message.content {
        match block {
            Block::Text { text } => {
                if !text.is_empty() {
                    out.push(json!({ "type": "text", "text": text }));
                }
            }
            Block::Image { image } => out.push(image_block(image)),
            Block::ToolCall(call) => match wire_call(call, generation) {
                WireCall::ToolUse {
                    name,
                    input,
                    toolset,
                } => {
                    let mut block = json!({
                        "type": "tool_use", "id": call.id, "name": name, "input": input,
                    });
                    if toolset {
                        block["toolset_name"] = json!(TOOLSET_FAMILY);
                    }
                    out.push(block);
                }
                WireCall::Text(text) => out.push(json!({ "type": "text", "text": text })),
            },
            Block::ToolResult(result) => {
                out.extend(result_blocks(result, forms.get(result.call_id.as_str())));
            }
            Block::Opaque { provider, value } => {
                if *provider == ProviderKind::Anthropic {
                    out.push(value.clone());
                }
            }
        }
    }
    out
}

fn result_blocks(result: &ToolResult, form: Option<&CallForm>) -> Vec<Value> {
    let text = result.text.as_deref().filter(|t| !t.is_empty());
    if form.is_some_and(|f| f.textual) {
        let outcome = if result.is_error { "failed" } else { "done" };
        let mut blocks = vec![json!({
            "type": "text",
            "text": format!("[Result of computer call {}: {outcome}. {}]", result.call_id, text.unwrap_or("")),
        })];
        blocks.extend(result.image.as_ref().map(image_block));
        return blocks;
    }
    let mut content = Vec::new();
    if let Some(text) = text {
        content.push(json!({ "type": "text", "text": text }));
    }
    if let Some(image) = &result.image {
        content.push(image_block(image));
    }
    let mut block = json!({ "type": "tool_result", "tool_use_id": result.call_id });
    if !content.is_empty() {
        block["content"] = Value::Array(content);
    }
    if result.is_error {
        block["is_error"] = json!(true);
    }
    if form.is_some_and(|f| f.toolset) {
        block["toolset_name"] = json!(TOOLSET_FAMILY);
    }
    vec![block]
}

fn image_block(image: &Image) -> Value {
    if image.data.as_deref().is_none_or(<[u8]>::is_empty) {
        // Sending empty base64 would fail the whole request; the model is told instead.
        tracing::warn!(blob = ?image.blob, "image bytes not loaded; sending a placeholder");
        return json!({
            "type": "text",
            "text": format!("[image {} is no longer available]", image.blob.as_deref().unwrap_or("")),
        });
    }
    json!({
        "type": "image",
        "source": { "type": "base64", "media_type": image.media_type, "data": image.base64() },
    })
}

/// One wire action (its name and its input, `action` included) for a call's actions.
fn encode_actions(
    actions: &[ComputerAction],
    generation: Generation,
) -> Result<(&'static str, Map<String, Value>), String> {
    // A key sequence the decoder split ("Down Down") goes back as one `key` action.
    if actions.len() > 1
        && actions
            .iter()
            .all(|a| matches!(a, ComputerAction::Key { .. }))
    {
        let chords: Vec<String> = actions
            .iter()
            .filter_map(|a| match a {
                ComputerAction::Key { keys } => Some(keys.join("+")),
                _ => None,
            })
            .collect();
        let mut fields = Map::new();
        fields.insert("action".into(), json!("key"));
        fields.insert("text".into(), json!(chords.join(" ")));
        return Ok(("key", fields));
    }
    match actions {
        [action] => encode_action(action, generation),
        _ => Err(format!("{} actions under one call id", actions.len())),
    }
}

fn coordinate(p: Point) -> Value {
    json!([p.x, p.y])
}

/// Whole seconds as an integer, fractions as a float (what the model itself sends).
fn seconds(ms: u64) -> Value {
    if ms.is_multiple_of(1000) {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

fn encode_action(
    action: &ComputerAction,
    generation: Generation,
) -> Result<(&'static str, Map<String, Value>), String> {
    let mut f = Map::new();
    let modifiers = |f: &mut Map<String, Value>, keys: &[String]| {
        if !keys.is_empty() {
            f.insert("text".into(), json!(keys.join("+")));
        }
    };
    let name = match action {
        ComputerAction::Screenshot => "screenshot",
        ComputerAction::CursorPosition => "cursor_position",
        ComputerAction::Click {
            at,
            button,
            count,
            hold_keys,
        } => {
            let name = match (button, count) {
                (MouseButton::Left, 1) => "left_click",
                (MouseButton::Right, 1) => "right_click",
                (MouseButton::Middle, 1) => "middle_click",
                (MouseButton::Left, 2) => "double_click",
                (MouseButton::Left, 3) => "triple_click",
                _ => return Err(format!("no {button:?} click ×{count} action")),
            };
            f.insert("coordinate".into(), coordinate(*at));
            modifiers(&mut f, hold_keys);
            name
        }
        ComputerAction::MouseDown { at, button } | ComputerAction::MouseUp { at, button } => {
            if *button != MouseButton::Left {
                return Err(format!("only the left button can be held, not {button:?}"));
            }
            if let Some(at) = at {
                f.insert("coordinate".into(), coordinate(*at));
            }
            if matches!(action, ComputerAction::MouseDown { .. }) {
                "left_mouse_down"
            } else {
                "left_mouse_up"
            }
        }
        ComputerAction::Move { at } => {
            f.insert("coordinate".into(), coordinate(*at));
            "mouse_move"
        }
        ComputerAction::Drag { path, hold_keys } => {
            let [start, end] = path.as_slice() else {
                return Err(format!("a drag through {} points", path.len()));
            };
            f.insert("start_coordinate".into(), coordinate(*start));
            f.insert("coordinate".into(), coordinate(*end));
            modifiers(&mut f, hold_keys);
            "left_click_drag"
        }
        ComputerAction::Scroll {
            at,
            direction,
            amount,
            hold_keys,
        } => {
            if let Some(at) = at {
                f.insert("coordinate".into(), coordinate(*at));
            }
            f.insert("scroll_direction".into(), json!(direction));
            f.insert("scroll_amount".into(), json!(amount));
            modifiers(&mut f, hold_keys);
            "scroll"
        }
        ComputerAction::Type { text } => {
            f.insert("text".into(), json!(text));
            "type"
        }
        ComputerAction::Key { keys } => {
            f.insert("text".into(), json!(keys.join("+")));
            "key"
        }
        ComputerAction::HoldKey { keys, duration_ms } => {
            f.insert("text".into(), json!(keys.join("+")));
            f.insert("duration".into(), seconds(*duration_ms));
            "hold_key"
        }
        ComputerAction::Wait { duration_ms } => {
            f.insert("duration".into(), seconds(*duration_ms));
            "wait"
        }
        ComputerAction::Zoom { from, to } => {
            if !generation.has_zoom() {
                return Err(format!("{} has no zoom", generation.tool_type()));
            }
            f.insert("region".into(), json!([from.x, from.y, to.x, to.y]));
            "zoom"
        }
        ComputerAction::Navigate { .. } => return Err("no navigate action".into()),
    };
    f.insert("action".into(), json!(name));
    Ok((name, f))
}

fn decode_response(body: &Value) -> Result<ModelResponse, String> {
    let shown = || http::excerpt(&body.to_string());
    if body.get("type").and_then(Value::as_str) == Some("error") {
        return Err(format!("an error object with status 200: {}", shown()));
    }
    let content = body
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no `content` list in the message: {}", shown()))?;
    let mut blocks = Vec::with_capacity(content.len());
    for item in content {
        match item.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = item
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("a text block without text: {}", shown()))?;
                blocks.push(Block::Text {
                    text: text.to_owned(),
                });
            }
            Some("tool_use") => blocks.push(Block::ToolCall(decode_tool_use(item)?)),
            // Thinking and redacted thinking (signed), server tool blocks and anything newer
            // go back exactly as they came.
            Some(_) => blocks.push(Block::Opaque {
                provider: ProviderKind::Anthropic,
                value: item.clone(),
            }),
            None => return Err(format!("a content block without a type: {}", shown())),
        }
    }
    let stop = match body.get("stop_reason").and_then(Value::as_str) {
        Some("end_turn") => StopReason::EndTurn,
        Some("tool_use") => StopReason::ToolUse,
        Some("max_tokens") => StopReason::MaxTokens,
        Some("refusal") => StopReason::Refusal,
        Some(other) => StopReason::Other(other.to_owned()),
        None => StopReason::Other("unknown".to_owned()),
    };
    Ok(ModelResponse {
        content: blocks,
        usage: decode_usage(body.get("usage")),
        stop,
        state: None,
    })
}

fn decode_usage(usage: Option<&Value>) -> Usage {
    let count = |key: &str| {
        usage
            .and_then(|u| u.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Usage {
        input_tokens: count("input_tokens"),
        output_tokens: count("output_tokens"),
        cache_creation_input_tokens: count("cache_creation_input_tokens"),
        cache_read_input_tokens: count("cache_read_input_tokens"),
    }
}

fn decode_tool_use(item: &Value) -> Result<ToolCall, String> {
    let field = |key: &str| {
        item.get(key).and_then(Value::as_str).ok_or_else(|| {
            format!(
                "a tool_use without `{key}`: {}",
                http::excerpt(&item.to_string())
            )
        })
    };
    let id = field("id")?;
    let name = field("name")?;
    let input = item.get("input").cloned().unwrap_or_else(|| json!({}));
    let toolset = item.get("toolset_name").and_then(Value::as_str);
    let (call, wire_name) = match toolset {
        Some(TOOLSET_FAMILY) => (
            computer_call(name, Some(name), &input),
            Some(name.to_owned()),
        ),
        None if name == COMPUTER_TOOL => {
            let action = input.get("action").and_then(Value::as_str);
            (computer_call(name, action, &input), None)
        }
        _ => (
            Call::Function {
                name: name.to_owned(),
                arguments: input,
            },
            None,
        ),
    };
    Ok(ToolCall {
        id: id.to_owned(),
        wire_name,
        call,
        safety_checks: Vec::new(),
    })
}

fn computer_call(tool: &str, action: Option<&str>, input: &Value) -> Call {
    let decoded = match (action, input.as_object()) {
        (_, None) => Err("the input must be a JSON object".to_owned()),
        (None, Some(_)) => Err(format!(
            "`action` is missing; it must be one of {}",
            ACTIONS.join(", ")
        )),
        (Some(action), Some(fields)) => decode_action(action, fields),
    };
    match decoded {
        Ok(actions) => Call::Computer { actions },
        Err(error) => Call::Function {
            name: INVALID_CALL.to_owned(),
            arguments: json!({ "tool": tool, "error": error, "raw": input }),
        },
    }
}

/// One wire action as our actions; the error tells the model what to send instead.
fn decode_action(action: &str, f: &Map<String, Value>) -> Result<Vec<ComputerAction>, String> {
    let click = |button, count| -> Result<Vec<ComputerAction>, String> {
        Ok(vec![ComputerAction::Click {
            at: required_point(f, "coordinate", action)?,
            button,
            count,
            hold_keys: modifiers(f)?,
        }])
    };
    let one = |a: ComputerAction| Ok(vec![a]);
    match action {
        "screenshot" => one(ComputerAction::Screenshot),
        "cursor_position" => one(ComputerAction::CursorPosition),
        "left_click" => click(MouseButton::Left, 1),
        "right_click" => click(MouseButton::Right, 1),
        "middle_click" => click(MouseButton::Middle, 1),
        "double_click" => click(MouseButton::Left, 2),
        "triple_click" => click(MouseButton::Left, 3),
        "left_click_drag" => one(ComputerAction::Drag {
            path: vec![
                required_point(f, "start_coordinate", action)?,
                required_point(f, "coordinate", action)?,
            ],
            hold_keys: modifiers(f)?,
        }),
        "left_mouse_down" => one(ComputerAction::MouseDown {
            at: point(f, "coordinate", action)?,
            button: MouseButton::Left,
        }),
        "left_mouse_up" => one(ComputerAction::MouseUp {
            at: point(f, "coordinate", action)?,
            button: MouseButton::Left,
        }),
        "mouse_move" => one(ComputerAction::Move {
            at: required_point(f, "coordinate", action)?,
        }),
        "scroll" => {
            let direction = match f.get("scroll_direction").and_then(Value::as_str) {
                Some("up") => ScrollDirection::Up,
                Some("down") => ScrollDirection::Down,
                Some("left") => ScrollDirection::Left,
                Some("right") => ScrollDirection::Right,
                _ => {
                    return Err(
                        "`scroll` needs `scroll_direction`: up, down, left or right".to_owned()
                    );
                }
            };
            let amount = whole_number(f, "scroll_amount")
                .ok_or("`scroll` needs `scroll_amount` as a whole number of notches")?;
            one(ComputerAction::Scroll {
                at: point(f, "coordinate", action)?,
                direction,
                amount: u32::try_from(amount)
                    .map_err(|_| format!("`scroll_amount` {amount} is too large"))?,
                hold_keys: modifiers(f)?,
            })
        }
        "type" => match f.get("text").and_then(Value::as_str) {
            Some(text) if !text.is_empty() => one(ComputerAction::Type {
                text: text.to_owned(),
            }),
            _ => Err("`type` needs `text`, the text to type".to_owned()),
        },
        "key" => {
            let text = f
                .get("text")
                .and_then(Value::as_str)
                .ok_or("`key` needs `text`, an xdotool key combination such as ctrl+s")?;
            let repeat = match f.get("repeat") {
                None | Some(Value::Null) => 1,
                Some(_) => whole_number(f, "repeat")
                    .filter(|n| (1..=MAX_KEY_REPEAT).contains(n))
                    .ok_or_else(|| {
                        format!("`repeat` must be a whole number from 1 to {MAX_KEY_REPEAT}")
                    })?,
            };
            let chords = key_sequence(text)?;
            let mut actions = Vec::new();
            for _ in 0..repeat {
                actions.extend(
                    chords
                        .iter()
                        .map(|keys| ComputerAction::Key { keys: keys.clone() }),
                );
            }
            Ok(actions)
        }
        "hold_key" => {
            let text = f
                .get("text")
                .and_then(Value::as_str)
                .ok_or("`hold_key` needs `text`, the key or combination to hold")?;
            let keys: Vec<String> = split_keys(text);
            if keys.is_empty() {
                return Err("`hold_key` needs `text`, the key or combination to hold".to_owned());
            }
            one(ComputerAction::HoldKey {
                keys,
                duration_ms: duration_ms(f, action)?,
            })
        }
        "wait" => one(ComputerAction::Wait {
            duration_ms: duration_ms(f, action)?,
        }),
        "zoom" => {
            let region = f
                .get("region")
                .and_then(Value::as_array)
                .filter(|r| r.len() == 4)
                .and_then(|r| r.iter().map(pixel).collect::<Option<Vec<i32>>>())
                .ok_or("`zoom` needs `region` as [x1, y1, x2, y2] in screenshot pixels")?;
            let (from, to) = (
                Point {
                    x: region[0],
                    y: region[1],
                },
                Point {
                    x: region[2],
                    y: region[3],
                },
            );
            if from.x >= to.x || from.y >= to.y {
                return Err(format!(
                    "`region` {region:?} is empty; x1 < x2 and y1 < y2 are needed"
                ));
            }
            one(ComputerAction::Zoom { from, to })
        }
        other => Err(format!(
            "unknown action `{other}`; use one of {}",
            ACTIONS.join(", ")
        )),
    }
}

/// A non-negative pixel coordinate (floats are rounded).
fn pixel(v: &Value) -> Option<i32> {
    let n = v.as_f64()?;
    (n.is_finite() && n >= 0.0 && n <= f64::from(i32::MAX)).then(|| n.round() as i32)
}

fn point(f: &Map<String, Value>, key: &str, action: &str) -> Result<Option<Point>, String> {
    match f.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(xy)) if xy.len() == 2 => match (pixel(&xy[0]), pixel(&xy[1])) {
            (Some(x), Some(y)) => Ok(Some(Point { x, y })),
            _ => Err(format!(
                "`{action}`: `{key}` must be two non-negative pixel numbers"
            )),
        },
        Some(other) => Err(format!(
            "`{action}`: `{key}` must be [x, y] in screenshot pixels, not {other}"
        )),
    }
}

fn required_point(f: &Map<String, Value>, key: &str, action: &str) -> Result<Point, String> {
    point(f, key, action)?
        .ok_or_else(|| format!("`{action}` needs `{key}` as [x, y] in screenshot pixels"))
}

fn whole_number(f: &Map<String, Value>, key: &str) -> Option<u64> {
    let v = f.get(key)?;
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|n| n.is_finite() && *n >= 0.0 && n.fract() == 0.0 && *n <= u64::MAX as f64)
            .map(|n| n as u64)
    })
}

fn duration_ms(f: &Map<String, Value>, action: &str) -> Result<u64, String> {
    f.get("duration")
        .and_then(Value::as_f64)
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| (s * 1000.0).round() as u64)
        .ok_or_else(|| format!("`{action}` needs `duration` in seconds (a number ≥ 0)"))
}

/// Held modifiers of a click, drag or scroll: `text` (or `key`, as some clients send it),
/// like `shift` or `ctrl+shift`.
fn modifiers(f: &Map<String, Value>) -> Result<Vec<String>, String> {
    match f.get("text").or_else(|| f.get("key")) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(split_keys(text)),
        Some(other) => Err(format!(
            "held keys in `text` must be a string like shift or ctrl+shift, not {other}"
        )),
    }
}

fn split_keys(text: &str) -> Vec<String> {
    text.split(|c: char| c == '+' || c.is_whitespace())
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `"ctrl+s"` → `[["ctrl","s"]]`; `"Down Down"` → two chords; `"ctrl++"` holds `plus`.
fn key_sequence(text: &str) -> Result<Vec<Vec<String>>, String> {
    let chords = text
        .split_whitespace()
        .map(key_chord)
        .collect::<Result<Vec<_>, _>>()?;
    if chords.is_empty() {
        return Err("`key` needs `text`, an xdotool key combination such as ctrl+s".to_owned());
    }
    Ok(chords)
}

fn key_chord(chord: &str) -> Result<Vec<String>, String> {
    if chord == "+" {
        return Ok(vec!["plus".to_owned()]);
    }
    if let Some(head) = chord.strip_suffix("++") {
        let mut keys = key_chord(head)?;
        keys.push("plus".to_owned());
        return Ok(keys);
    }
    let keys: Vec<String> = chord.split('+').map(str::to_owned).collect();
    if keys.iter().any(String::is_empty) {
        return Err(format!(
            "`{chord}` is not a key combination; write keys joined by +, like ctrl+shift+t"
        ));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn generations_follow_the_model_name() {
        use ComputerTool::*;
        for (model, tool) in [
            ("claude-sonnet-4-5-20250929", Anthropic20250124),
            ("claude-haiku-4-5", Anthropic20250124),
            ("claude-opus-4-1-20250805", Anthropic20250124),
            ("claude-sonnet-4-20250514", Anthropic20250124),
            ("claude-3-7-sonnet-20250219", Anthropic20250124),
            ("anthropic.claude-sonnet-4-20250514-v1:0", Anthropic20250124),
            ("claude-opus-4-5-20251101", Anthropic20251124),
            ("claude-opus-4-6", Anthropic20251124),
            ("claude-sonnet-4-6", Anthropic20251124),
            ("claude-opus-4-7", Anthropic20251124),
            ("claude-opus-4.7", Anthropic20251124),
            ("claude-opus-4-8", AnthropicToolset20260801),
            ("claude-sonnet-5", AnthropicToolset20260801),
            ("claude-opus-5-5", AnthropicToolset20260801),
            ("claude-fable-5-1", AnthropicToolset20260801),
            ("my-gateway-alias", AnthropicToolset20260801),
        ] {
            assert_eq!(default_computer_tool(model), tool, "{model}");
        }
    }

    #[test]
    fn image_limits_grow_with_opus_4_7() {
        assert_eq!(image_limit("claude-sonnet-4-5"), STANDARD_IMAGES);
        assert_eq!(image_limit("claude-opus-4-6"), STANDARD_IMAGES);
        assert_eq!(image_limit("claude-haiku-4-5-20251001"), STANDARD_IMAGES);
        assert_eq!(image_limit("claude-opus-4-7"), HIGH_RES_IMAGES);
        assert_eq!(image_limit("claude-sonnet-5"), HIGH_RES_IMAGES);
        assert_eq!(image_limit("mystery"), STANDARD_IMAGES);
        assert_eq!(STANDARD_IMAGES.max_long_edge, 1568);
        assert_eq!(HIGH_RES_IMAGES.max_long_edge, 2576);
    }

    #[test]
    fn key_text_becomes_chords() {
        assert_eq!(key_sequence("ctrl+s").unwrap(), vec![keys(&["ctrl", "s"])]);
        assert_eq!(
            key_sequence("Down Down").unwrap(),
            vec![keys(&["Down"]), keys(&["Down"])]
        );
        assert_eq!(
            key_sequence("ctrl++").unwrap(),
            vec![keys(&["ctrl", "plus"])]
        );
        assert!(key_sequence("ctrl+").is_err());
        assert!(key_sequence("   ").is_err());
    }

    #[test]
    fn every_action_survives_a_round_trip() {
        let p = |x, y| Point { x, y };
        let all = [
            ComputerAction::Screenshot,
            ComputerAction::CursorPosition,
            ComputerAction::Click {
                at: p(1, 2),
                button: MouseButton::Left,
                count: 1,
                hold_keys: keys(&["shift"]),
            },
            ComputerAction::Click {
                at: p(1, 2),
                button: MouseButton::Right,
                count: 1,
                hold_keys: vec![],
            },
            ComputerAction::Click {
                at: p(1, 2),
                button: MouseButton::Middle,
                count: 1,
                hold_keys: vec![],
            },
            ComputerAction::Click {
                at: p(1, 2),
                button: MouseButton::Left,
                count: 2,
                hold_keys: vec![],
            },
            ComputerAction::Click {
                at: p(1, 2),
                button: MouseButton::Left,
                count: 3,
                hold_keys: keys(&["ctrl", "alt"]),
            },
            ComputerAction::MouseDown {
                at: Some(p(3, 4)),
                button: MouseButton::Left,
            },
            ComputerAction::MouseUp {
                at: None,
                button: MouseButton::Left,
            },
            ComputerAction::Move { at: p(5, 6) },
            ComputerAction::Drag {
                path: vec![p(1, 1), p(9, 9)],
                hold_keys: vec![],
            },
            ComputerAction::Scroll {
                at: Some(p(7, 8)),
                direction: ScrollDirection::Left,
                amount: 4,
                hold_keys: keys(&["shift"]),
            },
            ComputerAction::Type {
                text: "héllo".into(),
            },
            ComputerAction::Key {
                keys: keys(&["ctrl", "s"]),
            },
            ComputerAction::HoldKey {
                keys: keys(&["shift"]),
                duration_ms: 1500,
            },
            ComputerAction::Wait { duration_ms: 2000 },
            ComputerAction::Zoom {
                from: p(0, 0),
                to: p(10, 20),
            },
        ];
        for action in all {
            let (name, fields) = encode_action(&action, Generation::Computer20251124).unwrap();
            assert_eq!(fields["action"], name);
            let back = decode_action(name, &fields).unwrap();
            assert_eq!(back, vec![action.clone()], "{name}");
        }
    }

    #[test]
    fn actions_a_generation_cannot_express_are_refused() {
        let zoom = ComputerAction::Zoom {
            from: Point { x: 0, y: 0 },
            to: Point { x: 5, y: 5 },
        };
        assert!(encode_action(&zoom, Generation::Computer20250124).is_err());
        assert!(encode_action(&zoom, Generation::Toolset20260801).is_ok());
        let nav = ComputerAction::Navigate {
            url: "https://example.com".into(),
        };
        assert!(encode_action(&nav, Generation::Toolset20260801).is_err());
        let long_drag = ComputerAction::Drag {
            path: vec![Point { x: 0, y: 0 }; 3],
            hold_keys: vec![],
        };
        assert!(encode_action(&long_drag, Generation::Computer20250124).is_err());
    }

    #[test]
    fn bad_input_says_what_to_send() {
        let f = |v: Value| v.as_object().unwrap().clone();
        let err = decode_action("left_click", &f(json!({}))).unwrap_err();
        assert!(err.contains("coordinate"), "{err}");
        let err = decode_action("scroll", &f(json!({"scroll_direction": "sideways"}))).unwrap_err();
        assert!(err.contains("scroll_direction"), "{err}");
        let err = decode_action("zoom", &f(json!({"region": [5, 5, 5, 9]}))).unwrap_err();
        assert!(err.contains("x1 < x2"), "{err}");
        let err = decode_action("mouse_move", &f(json!({"coordinate": [-1, 3]}))).unwrap_err();
        assert!(err.contains("non-negative"), "{err}");
        let err = decode_action("fly", &f(json!({}))).unwrap_err();
        assert!(err.contains("left_click"), "{err}");
    }

    #[test]
    fn refused_tool_versions_are_recognised() {
        let g = Generation::Computer20250124;
        assert!(refuses_tool_version(
            "'claude-sonnet-4-6' does not support tool types: computer_20250124. Did you mean one of bash_20250124?",
            g
        ));
        assert!(refuses_tool_version(
            "Unexpected value(s) `computer-use-2025-01-24` for the `anthropic-beta` header.",
            g
        ));
        assert!(!refuses_tool_version("messages: roles must alternate", g));
    }
}
