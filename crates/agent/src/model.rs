//! The neutral conversation every provider translates to and from.
//!
//! Coordinates in here are in the pixels of the screenshot the model was shown (its "image
//! space"); the loop maps them to the real screen and back, so providers never see the screen
//! size. Images carry their bytes only in memory: what the store keeps is a blob key.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The person, or tool results sent on the person's side of the conversation.
    User,
    /// The model.
    Assistant,
}

/// A point in image space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    /// Pixels from the left edge.
    pub x: i32,
    /// Pixels from the top edge.
    pub y: i32,
}

/// A mouse button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MouseButton {
    /// The primary button.
    #[default]
    Left,
    /// The secondary button.
    Right,
    /// The wheel button.
    Middle,
}

/// Which way to scroll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScrollDirection {
    /// Content moves down (wheel away from the user).
    Up,
    /// Content moves up.
    Down,
    /// Horizontal, left.
    Left,
    /// Horizontal, right.
    Right,
}

fn one() -> u8 {
    1
}

/// One thing to do on the desktop, as any provider's computer tool can ask for it.
///
/// Key names are xdotool style (`ctrl`, `shift`, `Return`, `a`); providers map their own
/// spellings (OpenAI's `CTRL`, Gemini's `control`) onto these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ComputerAction {
    /// Take a screenshot (the result carries it).
    Screenshot,
    /// Click `count` times (1–3) at a point, holding `hold_keys` meanwhile.
    Click {
        /// Where.
        at: Point,
        /// Which button.
        #[serde(default)]
        button: MouseButton,
        /// 1 single, 2 double, 3 triple.
        #[serde(default = "one")]
        count: u8,
        /// Modifier keys held during the click.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hold_keys: Vec<String>,
    },
    /// Press a button and keep it down (at a point, or where the pointer is).
    MouseDown {
        /// Where, if it should move first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<Point>,
        /// Which button.
        #[serde(default)]
        button: MouseButton,
    },
    /// Release a button (at a point, or where the pointer is).
    MouseUp {
        /// Where, if it should move first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<Point>,
        /// Which button.
        #[serde(default)]
        button: MouseButton,
    },
    /// Move the pointer.
    Move {
        /// Where to.
        at: Point,
    },
    /// Press the left button at the first point, move through the rest, release at the last.
    Drag {
        /// At least two points.
        path: Vec<Point>,
        /// Modifier keys held during the drag.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hold_keys: Vec<String>,
    },
    /// Turn the wheel `amount` notches, at a point or where the pointer is.
    Scroll {
        /// Where, if it should move first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<Point>,
        /// Which way.
        direction: ScrollDirection,
        /// Notches (one notch is about 100 px of page in most apps).
        amount: u32,
        /// Modifier keys held meanwhile.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hold_keys: Vec<String>,
    },
    /// Type text (any Unicode).
    Type {
        /// What to type.
        text: String,
    },
    /// Press keys together as one chord and release them (`["ctrl", "s"]`).
    Key {
        /// The chord, modifiers first.
        keys: Vec<String>,
    },
    /// Hold a chord down for a while.
    HoldKey {
        /// The chord.
        keys: Vec<String>,
        /// How long, in milliseconds.
        duration_ms: u64,
    },
    /// Do nothing for a while (then take a screenshot).
    Wait {
        /// How long, in milliseconds.
        duration_ms: u64,
    },
    /// Report where the pointer is.
    CursorPosition,
    /// Look closer at a region (the result is a screenshot of just that region).
    Zoom {
        /// Top-left corner.
        from: Point,
        /// Bottom-right corner.
        to: Point,
    },
    /// Open a URL in the browser (Gemini's `navigate`).
    Navigate {
        /// An http(s) URL.
        url: String,
    },
}

/// A safety check a provider raised on a computer call; a person must acknowledge it through
/// the approval flow before the call runs. Never acknowledged automatically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetyCheck {
    /// The provider's id for it (echoed back when acknowledged).
    pub id: String,
    /// A machine-readable kind, e.g. `malicious_instructions`.
    pub code: String,
    /// The text to show the person.
    pub message: String,
}

/// What a tool call asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Call {
    /// Desktop actions, run in order, stopping at the first failure. Most providers send one;
    /// OpenAI's GA computer tool may batch several under one call id.
    Computer {
        /// The actions.
        actions: Vec<ComputerAction>,
    },
    /// One of the agent's own tools (`set_task_status`, `click_text`, …).
    Function {
        /// The tool's name.
        name: String,
        /// Its arguments as the model sent them (an object when well formed).
        arguments: Value,
    },
}

/// The function name a provider uses for a call it could not decode into a valid action
/// (unknown action, missing coordinate, arguments that are not JSON). Its arguments are
/// `{"tool": <the name the model used>, "error": <what was wrong>, "raw": <what it sent>}`;
/// the loop answers it with `is_error` and that reason, so the model can correct itself.
pub const INVALID_CALL: &str = "invalid_call";

/// A tool call made by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's call id; the result must quote it. Providers without ids make one up.
    pub id: String,
    /// The call's name on the wire when the provider needs it back with the result and it is
    /// not implied by `call` (Gemini's `click_at`, an Anthropic toolset member's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire_name: Option<String>,
    /// What it asks for.
    pub call: Call,
    /// Safety checks the provider attached; the call waits for a person while any is open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub safety_checks: Vec<SafetyCheck>,
}

/// An image the model sees or sent.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// `image/png` or `image/jpeg`.
    pub media_type: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Where the store keeps the bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
    /// The bytes, in memory only (never serialised into a row).
    #[serde(skip)]
    pub data: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("media_type", &self.media_type)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("blob", &self.blob)
            .field("bytes", &self.data.as_ref().map(|d| d.len()))
            .finish()
    }
}

impl Image {
    /// The bytes as standard base64, or an empty string when they are not loaded.
    pub fn base64(&self) -> String {
        use base64::Engine as _;
        self.data
            .as_deref()
            .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
            .unwrap_or_default()
    }

    /// A `data:` URL of the bytes (OpenAI's and the chat format's way to send images).
    pub fn data_url(&self) -> String {
        format!("data:{};base64,{}", self.media_type, self.base64())
    }
}

/// The outcome of one tool call, sent back to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    /// The call it answers.
    pub call_id: String,
    /// True when the call failed (or was not run); `text` then says why.
    #[serde(default)]
    pub is_error: bool,
    /// What to tell the model in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A screenshot taken after the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// The browser's URL, for providers that want it (Gemini); `None` when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Safety checks a person acknowledged before the call ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acknowledged_safety_checks: Vec<SafetyCheck>,
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// Words.
    Text {
        /// The text.
        text: String,
    },
    /// A picture (the person's upload, or a screenshot outside a tool result).
    Image {
        /// The picture.
        image: Image,
    },
    /// The model asks for a tool.
    ToolCall(ToolCall),
    /// A tool's answer.
    ToolResult(ToolResult),
    /// Something only the provider that made it understands (Anthropic thinking blocks with
    /// their signatures, OpenAI reasoning items). That provider sends it back verbatim; the
    /// others leave it out.
    Opaque {
        /// The provider kind that made it.
        provider: ProviderKind,
        /// The item as it came on the wire.
        value: Value,
    },
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: Vec<Block>,
    /// Provider state to carry forward, on assistant messages (OpenAI's response id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ProviderState>,
}

/// A provider's own bookkeeping about one of its answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderState {
    /// The provider kind that made it.
    pub provider: ProviderKind,
    /// Its content, e.g. `{"response_id": "resp_…"}`.
    pub value: Value,
}

/// One of the agent's own tools, offered to the model as a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionTool {
    /// The name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments (an object schema).
    pub parameters: Value,
}

/// The size of the screenshots the model is shown, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Display {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// Everything a provider needs for one model call.
#[derive(Debug, Clone, Copy)]
pub struct ModelRequest<'a> {
    /// Which model, and how to talk to it.
    pub model: &'a ModelSpec,
    /// The system prompt.
    pub system: &'a str,
    /// The conversation so far, oldest first; the last message is the user's side.
    pub messages: &'a [ChatMessage],
    /// The agent's own tools.
    pub functions: &'a [FunctionTool],
    /// The screenshot size the model sees.
    pub display: Display,
    /// Most tokens to generate.
    pub max_tokens: u32,
}

/// Tokens used by one call, as the provider counted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens billed at the normal rate.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It finished its turn.
    EndTurn,
    /// It wants tool results.
    ToolUse,
    /// It ran out of output tokens.
    MaxTokens,
    /// It refused.
    Refusal,
    /// Anything else, as the provider named it.
    Other(String),
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelResponse {
    /// Text, tool calls and opaque items, in the order the model produced them.
    pub content: Vec<Block>,
    /// Tokens used.
    pub usage: Usage,
    /// Why it stopped.
    pub stop: StopReason,
    /// State to keep on the assistant message.
    pub state: Option<ProviderState>,
}

/// The wire formats we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Anthropic Messages API.
    Anthropic,
    /// OpenAI Responses API.
    Openai,
    /// Google Gemini `generateContent`.
    Gemini,
    /// Any OpenAI-compatible `/v1/chat/completions` server (Ollama, vLLM, LiteLLM, …).
    OpenaiCompatible,
}

impl ProviderKind {
    /// The name used in config files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Openai => "openai",
            ProviderKind::Gemini => "gemini",
            ProviderKind::OpenaiCompatible => "openai_compatible",
        }
    }
}

/// Which computer tool a model is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputerTool {
    /// Anthropic `computer_20250124` (beta `computer-use-2025-01-24`).
    Anthropic20250124,
    /// Anthropic `computer_20251124` (beta `computer-use-2025-11-24`, with zoom).
    Anthropic20251124,
    /// Anthropic `computer_toolset_20260801` (GA; one tool_use per member action).
    AnthropicToolset20260801,
    /// OpenAI `computer_use_preview`.
    OpenaiPreview,
    /// OpenAI's GA `computer` tool (may batch actions).
    OpenaiComputer,
    /// Gemini `computer_use`.
    GeminiComputerUse,
    /// No native computer tool: a `computer` function with an action enum (chat completions).
    Function,
}

/// The largest screenshot a model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageLimit {
    /// Longest edge in pixels.
    pub max_long_edge: u32,
    /// Most pixels in all.
    pub max_pixels: u64,
}

/// Dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Price {
    /// Normal input.
    pub input: f64,
    /// Output.
    pub output: f64,
    /// Cache writes.
    #[serde(default)]
    pub cache_write: f64,
    /// Cache reads.
    #[serde(default)]
    pub cache_read: f64,
}

impl Price {
    /// What `usage` costs, in dollars.
    pub fn cost(&self, usage: &Usage) -> f64 {
        (usage.input_tokens as f64 * self.input
            + usage.output_tokens as f64 * self.output
            + usage.cache_creation_input_tokens as f64 * self.cache_write
            + usage.cache_read_input_tokens as f64 * self.cache_read)
            / 1_000_000.0
    }
}

/// A model as configured: what to call it and how to talk to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Our name for it (what tasks and `/tasks/models` use).
    pub id: String,
    /// Which provider entry serves it.
    pub provider: String,
    /// The wire format of that provider.
    pub kind: ProviderKind,
    /// The model name on the wire (`claude-sonnet-4-5`, `gpt-4o`, `llama3.2-vision`).
    pub wire_name: String,
    /// A human title for pickers.
    pub title: String,
    /// The computer tool to offer.
    pub computer_tool: ComputerTool,
    /// The largest screenshot to send.
    pub image_limit: ImageLimit,
    /// False when the model cannot take images (it then gets OCR text instead).
    pub vision: bool,
    /// Context window in tokens (summarisation starts well before it).
    pub context_tokens: u64,
    /// What it costs, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
}

/// A missing model capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Seeing images.
    Vision,
    /// Calling tools.
    Tools,
    /// The requested computer tool version.
    ComputerTool,
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Capability::Vision => "images",
            Capability::Tools => "tool calls",
            Capability::ComputerTool => "this computer tool version",
        })
    }
}

/// Why a model call failed. Every message names the provider and, where it helps, the key
/// or setting to fix.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// 401/403: the key is wrong or lacks access.
    #[error("{provider}: the API key was refused (HTTP {status}): {message}; check {key_hint}")]
    Auth {
        /// The provider entry's name.
        provider: String,
        /// 401 or 403.
        status: u16,
        /// The provider's own message.
        message: String,
        /// Which key to check (an env var or config key).
        key_hint: String,
    },
    /// 429 after the retries (or a retry-after longer than we wait).
    #[error("{provider}: rate limited (HTTP 429): {message}")]
    RateLimited {
        /// The provider entry's name.
        provider: String,
        /// How long the provider asked us to wait, if it said.
        retry_after: Option<Duration>,
        /// The provider's own message.
        message: String,
    },
    /// 5xx or 529 after the retries.
    #[error("{provider}: server error (HTTP {status}): {message}")]
    Server {
        /// The provider entry's name.
        provider: String,
        /// The status.
        status: u16,
        /// The provider's own message.
        message: String,
    },
    /// Another 4xx: the request was refused.
    #[error("{provider}: request refused (HTTP {status}): {message}")]
    Rejected {
        /// The provider entry's name.
        provider: String,
        /// The status.
        status: u16,
        /// The provider's own message.
        message: String,
    },
    /// The model cannot do something the agent needs (see images, call tools).
    #[error("{provider}: model {model} cannot handle {capability}: {message}")]
    Unsupported {
        /// The provider entry's name.
        provider: String,
        /// The wire model name.
        model: String,
        /// What it lacks.
        capability: Capability,
        /// The provider's own message.
        message: String,
    },
    /// No answer in time.
    #[error("{provider}: no answer within {after:?}")]
    Timeout {
        /// The provider entry's name.
        provider: String,
        /// How long we waited.
        after: Duration,
    },
    /// Could not connect or the connection broke.
    #[error("{provider}: cannot reach {url}: {message}")]
    Connect {
        /// The provider entry's name.
        provider: String,
        /// The URL we tried.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// An answer we cannot understand (not JSON, or not the documented shape).
    #[error("{provider}: unexpected answer: {message}")]
    BadResponse {
        /// The provider entry's name.
        provider: String,
        /// What was wrong with it.
        message: String,
    },
}

impl ProviderError {
    /// Machine-readable kind for events and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::Auth { .. } => "auth",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Server { .. } => "server",
            ProviderError::Rejected { .. } => "rejected",
            ProviderError::Unsupported { .. } => "unsupported",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::Connect { .. } => "connect",
            ProviderError::BadResponse { .. } => "bad_response",
        }
    }
}

/// A model provider: one wire format, one endpoint, one key.
///
/// Boxed futures keep the trait object-safe, so a task's fallback chain is a list of
/// `Arc<dyn Provider>`.
pub trait Provider: Send + Sync {
    /// The wire format.
    fn kind(&self) -> ProviderKind;

    /// The provider entry's name (for messages).
    fn name(&self) -> &str;

    /// One model call: the conversation in, the model's next turn out. Retries on 429/5xx
    /// happen inside; what comes out is final.
    fn step<'a>(
        &'a self,
        request: ModelRequest<'a>,
    ) -> BoxFuture<'a, Result<ModelResponse, ProviderError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computer_actions_serialise_with_an_action_tag() {
        let click = ComputerAction::Click {
            at: Point { x: 3, y: 4 },
            button: MouseButton::Left,
            count: 2,
            hold_keys: vec![],
        };
        let v = serde_json::to_value(&click).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"action":"click","at":{"x":3,"y":4},"button":"left","count":2})
        );
        let back: ComputerAction = serde_json::from_value(v).unwrap();
        assert_eq!(back, click);
    }

    #[test]
    fn image_bytes_never_reach_json() {
        let image = Image {
            media_type: "image/png".into(),
            width: 2,
            height: 1,
            blob: Some("b/1".into()),
            data: Some(Arc::from(&b"\x89PNG"[..])),
        };
        let v = serde_json::to_value(&image).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"media_type":"image/png","width":2,"height":1,"blob":"b/1"})
        );
        assert_eq!(image.data_url(), "data:image/png;base64,iVBORw==");
    }

    #[test]
    fn price_counts_every_kind_of_token() {
        let p = Price {
            input: 3.0,
            output: 15.0,
            cache_write: 3.75,
            cache_read: 0.3,
        };
        let u = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 1_000_000,
        };
        assert!((p.cost(&u) - (3.0 + 1.5 + 0.3)).abs() < 1e-9);
    }
}
