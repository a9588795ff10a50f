//! The intents and how each becomes a plan, deterministically (no model):
//! arguments are parsed strictly, checked against the caller's policy
//! profile, and turned into exact steps the executor will run unchanged.

pub mod edit;
pub mod run;

use crate::bottle::Bottle;
use crate::plan::{Plan, Risk, Step};
use crate::policy::{Access, Denied, Profile};
use bytebot_agent::desktop::{DesktopClient, DesktopError};
use bytebot_agent::service::Agent;
use edit::FindReplace;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use utoipa::ToSchema;

/// The intents the gateway knows, in the order `/capabilities` lists them.
pub const INTENTS: [&str; 6] = [
    "screenshot",
    "open_app",
    "browse",
    "edit_file",
    "run",
    "task",
];

/// The follow-up intent for a risky step an agent task stopped at (a provider's safety check):
/// executing its plan lets the agent run that one step. Not in [`INTENTS`] because a policy
/// does not list it: it is allowed wherever `task` is.
pub const AGENT_STEP: &str = "agent_step";

/// Image format of a screenshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// Lossless.
    #[default]
    Png,
    /// Smaller.
    Jpeg,
}

impl ImageFormat {
    /// Query value and file extension.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpeg",
        }
    }
}

/// `screenshot`: the desktop, or one window by title.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScreenshotArgs {
    /// `desktop` (default) or a window title (case-insensitive substring).
    #[serde(default)]
    pub window: Option<String>,
    /// `png` (default) or `jpeg`.
    #[serde(default)]
    pub format: Option<ImageFormat>,
}

/// `open_app`: launch or focus an application from the policy's list.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAppArgs {
    /// Application name, e.g. `firefox`.
    pub app: String,
    /// Extra arguments passed to it (no shell).
    #[serde(default)]
    pub args: Option<Vec<String>>,
}

/// `browse`: open a URL in the desktop browser.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BrowseArgs {
    /// An `http` or `https` URL whose host the policy allows.
    pub url: String,
}

/// `edit_file`: write a workspace file, by whole content or exact edits.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditFileArgs {
    /// Path relative to the workspace.
    pub path: String,
    /// The whole new content (or give `edits`).
    #[serde(default)]
    pub content: Option<String>,
    /// Find/replace edits applied in order (or give `content`).
    #[serde(default)]
    pub edits: Option<Vec<FindReplace>>,
}

/// `run`: run a program in the workspace.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunArgs {
    /// Program and arguments (or give `command`).
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    /// A command line split like a shell would, but never run by one:
    /// pipes, redirects and variables are refused.
    #[serde(default)]
    pub command: Option<String>,
    /// Working folder relative to the workspace.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Time limit in seconds (policy default when unset).
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
}

/// `task`: a free-text task for the agent (needs a model).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskArgs {
    /// What to do.
    pub prompt: String,
    /// Model to use, e.g. `anthropic/claude-sonnet-4`.
    #[serde(default)]
    pub model: Option<String>,
}

/// `agent_step`: approve the one risky step an agent task (started by this key through the
/// `task` intent) stopped at.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentStepArgs {
    /// The agent task that stopped (from the `task` run's result).
    pub agent_task_id: String,
    /// The tool call it stopped at.
    pub call_id: String,
}

/// What an executor step does; stored in the plan and run exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Raise the first window whose title contains `title`.
    FocusWindow {
        /// Title substring.
        title: String,
    },
    /// Capture the screen (or the focused window named) as an artifact.
    Screenshot {
        /// `png` or `jpeg`.
        format: ImageFormat,
        /// Window title to crop to, if any.
        window: Option<String>,
    },
    /// Launch or focus a configured application.
    OpenApp {
        /// Name in the desktop's application map.
        app: String,
        /// Extra arguments.
        args: Vec<String>,
    },
    /// Wait until the screen stops changing.
    Settle,
    /// Write a workspace file.
    WriteFile {
        /// Workspace-relative path.
        path: String,
        /// The exact new content.
        content: String,
        /// SHA-256 of the file when planned (`None`: it did not exist);
        /// a file changed since then is not overwritten.
        original_sha256: Option<String>,
        /// The unified diff that was approved.
        diff: String,
    },
    /// Run a program in the bottle (a bubblewrap sandbox).
    Run {
        /// Program and arguments.
        argv: Vec<String>,
        /// Working folder relative to the workspace (`.` for the root).
        cwd: String,
        /// Extra environment variables.
        env: BTreeMap<String, String>,
        /// Time limit.
        timeout_s: u64,
        /// Memory limit of the whole run.
        memory_mb: u64,
        /// Cap on stdout and on stderr.
        max_output_bytes: usize,
        /// Processes and threads the run may have at once.
        processes: u32,
        /// What the program may reach on the network, in words (what the person approves).
        network: String,
        /// The hosts the egress proxy lets it reach (empty: no network, no proxy).
        network_allow: Vec<String>,
        /// Of those (or IP addresses), the ones that may resolve to private addresses.
        network_private: Vec<String>,
    },
    /// Hand a prompt to the agent.
    Agent {
        /// The prompt.
        prompt: String,
        /// Model, if chosen.
        model: Option<String>,
    },
    /// Let a waiting agent task run the step its model's provider flagged, then follow it on.
    AgentStep {
        /// The agent task.
        agent_task_id: String,
        /// The call it stopped at.
        call_id: String,
        /// The call as the model made it (what the person approves).
        call: Value,
        /// The provider's checks, as it worded them.
        checks: Value,
    },
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Arguments that do not fit (HTTP 422).
    #[error("{field}: {reason}")]
    BadArgs {
        /// JSON path of the bad field, e.g. `args.url`.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The intent is not one we know (HTTP 422).
    #[error("unknown intent \"{0}\"; known: screenshot, open_app, browse, edit_file, run, task")]
    UnknownIntent(String),
    /// The policy refuses it (HTTP 403).
    #[error("denied by {}: {}", .0.rule, .0.reason)]
    Denied(Denied),
    /// Something needed is not there (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// The desktop failed while planning (HTTP 502).
    #[error(transparent)]
    Desktop(#[from] DesktopError),
}

impl From<Denied> for PlanError {
    fn from(d: Denied) -> Self {
        PlanError::Denied(d)
    }
}

fn bad(field: &str, reason: impl Into<String>) -> PlanError {
    PlanError::BadArgs {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// What planning may consult.
pub struct PlanCtx<'a> {
    /// The caller's policy profile.
    pub profile: &'a Profile,
    /// The desktop (for the current content of a file to diff).
    pub desktop: &'a DesktopClient,
    /// The workspace folder (for `run`'s working folder).
    pub workspace: &'a Path,
    /// The bottle `run` executes in (planning a run checks that it can start).
    pub bottle: &'a Bottle,
    /// Desktop application used by `browse`.
    pub browser_app: &'a str,
    /// The agent, when one with a model is attached (for `task` and `agent_step`).
    pub agent: Option<&'a Agent>,
    /// The caller's key id (an `agent_step` is only for its own agent tasks).
    pub key_id: &'a str,
}

fn parse_args<T: DeserializeOwned>(args: &Value) -> Result<T, PlanError> {
    let args = if args.is_null() {
        json!({})
    } else {
        args.clone()
    };
    serde_path_to_error::deserialize(args).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "args".to_string()
        } else {
            format!("args.{path}")
        };
        bad(&field, e.into_inner().to_string())
    })
}

/// Makes the plan for `intent` with `args`, or says why not.
pub async fn plan(ctx: &PlanCtx<'_>, intent: &str, args: &Value) -> Result<Plan, PlanError> {
    if !INTENTS.contains(&intent) && intent != AGENT_STEP {
        return Err(PlanError::UnknownIntent(intent.to_string()));
    }
    if !(args.is_object() || args.is_null()) {
        return Err(bad("args", "must be a JSON object"));
    }
    ctx.profile
        .check_intent(if intent == AGENT_STEP { "task" } else { intent })?;
    let (steps, risk) = match intent {
        "screenshot" => plan_screenshot(parse_args(args)?)?,
        "open_app" => plan_open_app(ctx, parse_args(args)?)?,
        "browse" => plan_browse(ctx, parse_args(args)?)?,
        "edit_file" => plan_edit(ctx, parse_args(args)?).await?,
        "run" => plan_run(ctx, parse_args(args)?).await?,
        AGENT_STEP => plan_agent_step(ctx, parse_args(args)?).await?,
        _ => plan_task(ctx, parse_args(args)?)?,
    };
    Ok(Plan {
        intent: intent.to_string(),
        args: if args.is_null() {
            json!({})
        } else {
            args.clone()
        },
        steps,
        risk,
    })
}

fn step(summary: String, action: Action) -> Step {
    Step {
        summary,
        action: serde_json::to_value(&action).unwrap_or(Value::Null),
    }
}

fn plan_screenshot(a: ScreenshotArgs) -> Result<(Vec<Step>, Risk), PlanError> {
    let format = a.format.unwrap_or_default();
    let window = a
        .window
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty() && !w.eq_ignore_ascii_case("desktop"));
    if window.as_ref().is_some_and(|w| w.chars().count() > 256) {
        return Err(bad("args.window", "is longer than 256 characters"));
    }
    let mut steps = Vec::new();
    if let Some(title) = &window {
        steps.push(step(
            format!("Bring the window titled \"{title}\" to the front"),
            Action::FocusWindow {
                title: title.clone(),
            },
        ));
    }
    let what = window
        .as_ref()
        .map_or("the whole desktop".to_string(), |t| {
            format!("the window \"{t}\"")
        });
    steps.push(step(
        format!(
            "Take a {} screenshot of {what}",
            format.as_str().to_uppercase()
        ),
        Action::Screenshot { format, window },
    ));
    Ok((steps, Risk::Low))
}

fn check_app_args(args: &[String]) -> Result<(), PlanError> {
    if args.len() > 32 {
        return Err(bad("args.args", "at most 32 arguments"));
    }
    for (i, a) in args.iter().enumerate() {
        if a.len() > 4096 || a.contains('\0') {
            return Err(bad(
                &format!("args.args[{i}]"),
                "must be at most 4096 bytes with no NUL",
            ));
        }
    }
    Ok(())
}

fn plan_open_app(ctx: &PlanCtx<'_>, a: OpenAppArgs) -> Result<(Vec<Step>, Risk), PlanError> {
    let app = a.app.trim().to_string();
    if app.is_empty() {
        return Err(bad(
            "args.app",
            "is empty; name an application from /capabilities",
        ));
    }
    ctx.profile.check_app(&app)?;
    let args = a.args.unwrap_or_default();
    check_app_args(&args)?;
    let shown = if args.is_empty() {
        String::new()
    } else {
        format!(" with arguments {args:?}")
    };
    // Arguments can turn an app into a shell (`terminal -e …`), so they make
    // the plan high risk: a profile that auto-approves medium still asks.
    let risk = if args.is_empty() {
        Risk::Medium
    } else {
        Risk::High
    };
    Ok((
        vec![
            step(
                format!("Open {app}{shown} (or focus its window if it is already running)"),
                Action::OpenApp { app, args },
            ),
            step("Wait until the screen settles".into(), Action::Settle),
            step(
                "Take a PNG screenshot of the whole desktop".into(),
                Action::Screenshot {
                    format: ImageFormat::Png,
                    window: None,
                },
            ),
        ],
        risk,
    ))
}

fn plan_browse(ctx: &PlanCtx<'_>, a: BrowseArgs) -> Result<(Vec<Step>, Risk), PlanError> {
    let url = reqwest::Url::parse(a.url.trim()).map_err(|e| {
        bad(
            "args.url",
            format!(
                "\"{}\" is not a URL ({e}); use e.g. https://example.com/",
                a.url
            ),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(
            "args.url",
            format!(
                "scheme \"{}\" is not allowed; use http or https",
                url.scheme()
            ),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "args.url",
            "must not carry a user name or password; the egress proxy adds credentials",
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| bad("args.url", "has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    ctx.profile.check_host(&host)?;
    let url = url.to_string();
    Ok((
        vec![
            step(
                format!(
                    "Open {url} in {} (host {host} is allowed by the policy)",
                    ctx.browser_app
                ),
                Action::OpenApp {
                    app: ctx.browser_app.to_string(),
                    args: vec![url],
                },
            ),
            step("Wait until the page settles".into(), Action::Settle),
            step(
                "Take a PNG screenshot of the whole desktop".into(),
                Action::Screenshot {
                    format: ImageFormat::Png,
                    window: None,
                },
            ),
        ],
        Risk::Medium,
    ))
}

/// A workspace-relative path in normal form (`a/b.txt`), or why not.
pub fn normalize_rel_path(field: &str, path: &str) -> Result<String, PlanError> {
    if path.is_empty() {
        return Err(bad(
            field,
            "is empty; give a path relative to the workspace",
        ));
    }
    if path.starts_with('/') {
        return Err(bad(
            field,
            format!("\"{path}\" is absolute; give a path relative to the workspace"),
        ));
    }
    if path.contains('\0') || path.contains('\\') {
        return Err(bad(field, "must not contain NUL or backslashes"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(bad(
                    field,
                    format!("\"{path}\" leaves the workspace (\"..\" is not allowed)"),
                ));
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(bad(
            field,
            format!("\"{path}\" names the workspace itself, not a file"),
        ));
    }
    Ok(parts.join("/"))
}

/// The current bytes of a file to edit. The desktop refusing the path (a
/// symlink out of the workspace, a folder, a file over its size limit) is
/// the caller's bad argument (422), not a desktop failure (502).
async fn read_for_edit(ctx: &PlanCtx<'_>, path: &str) -> Result<Option<Vec<u8>>, PlanError> {
    match ctx.desktop.read_file(path).await {
        Err(DesktopError::Refused {
            status, message, ..
        }) if status.is_client_error() => Err(bad("args.path", message)),
        other => Ok(other?),
    }
}

async fn plan_edit(ctx: &PlanCtx<'_>, a: EditFileArgs) -> Result<(Vec<Step>, Risk), PlanError> {
    let path = normalize_rel_path("args.path", &a.path)?;
    ctx.profile.check_path(&path, Access::Write)?;
    let current = match (&a.content, &a.edits) {
        (Some(_), Some(_)) => {
            return Err(bad("args.content", "give content or edits, not both"));
        }
        (None, None) => {
            return Err(bad(
                "args.content",
                "is missing; give the whole new content or edits: [{find, replace}]",
            ));
        }
        (None, Some(edits)) if edits.is_empty() => {
            return Err(bad(
                "args.edits",
                "is empty; give at least one {find, replace}",
            ));
        }
        (None, Some(_)) => {
            ctx.profile.check_path(&path, Access::Read)?;
            read_for_edit(ctx, &path).await?
        }
        (Some(_), None) => read_for_edit(ctx, &path).await?,
    };
    let old_text = match &current {
        Some(bytes) => Some(String::from_utf8(bytes.clone()).map_err(|_| {
            bad(
                "args.path",
                format!("\"{path}\" is not UTF-8 text; edit_file only changes text files"),
            )
        })?),
        None => None,
    };
    let new_text = match (a.content, a.edits) {
        (Some(c), _) => c,
        (None, Some(edits)) => {
            let Some(old) = &old_text else {
                return Err(bad(
                    "args.path",
                    format!(
                        "\"{path}\" does not exist, so there is nothing to edit; give content instead"
                    ),
                ));
            };
            edit::apply_edits(old, &edits).map_err(|(field, reason)| bad(&field, reason))?
        }
        (None, None) => String::new(),
    };
    ctx.profile.check_file_size(new_text.len() as u64)?;
    let diff = edit::unified_diff(&path, old_text.as_deref(), &new_text);
    let original_sha256 = current.as_ref().map(|b| hex::encode(Sha256::digest(b)));
    let verb = if current.is_some() {
        "Change"
    } else {
        "Create"
    };
    let summary = format!(
        "{verb} {path} ({} bytes) as shown in the diff",
        new_text.len()
    );
    Ok((
        vec![step(
            summary,
            Action::WriteFile {
                path,
                content: new_text,
                original_sha256,
                diff,
            },
        )],
        Risk::High,
    ))
}

async fn plan_run(ctx: &PlanCtx<'_>, a: RunArgs) -> Result<(Vec<Step>, Risk), PlanError> {
    let argv = match (a.argv, a.command) {
        (Some(_), Some(_)) => return Err(bad("args.argv", "give argv or command, not both")),
        (None, None) => {
            return Err(bad(
                "args.argv",
                "is missing; give argv: [\"program\", \"arg\", …] or command: \"program arg\"",
            ));
        }
        (Some(argv), None) => argv,
        (None, Some(cmd)) => {
            run::split_command(&cmd).map_err(|e| bad("args.command", e.to_string()))?
        }
    };
    let Some(program) = argv.first() else {
        return Err(bad(
            "args.argv",
            "is empty; the first element is the program",
        ));
    };
    ctx.profile.check_program(program)?;
    let limits = ctx.profile.run_limits();
    let timeout_s = a.timeout_s.unwrap_or(limits.timeout_s);
    if timeout_s == 0 || timeout_s > limits.max_timeout_s {
        return Err(bad(
            "args.timeout_s",
            format!(
                "{timeout_s} is out of range; this profile allows 1..={}",
                limits.max_timeout_s
            ),
        ));
    }
    let env = a.env.unwrap_or_default();
    let cwd = a.cwd.unwrap_or_else(|| ".".into());
    let max_output_bytes = usize::try_from(limits.max_output_bytes).unwrap_or(usize::MAX);
    let spec = run::RunSpec {
        argv: argv.clone(),
        workspace: ctx.workspace.to_path_buf(),
        cwd: Some(cwd.clone()),
        env: env.clone(),
        timeout: Duration::from_secs(timeout_s),
        max_output_bytes,
        memory_mb: limits.memory_mb,
        processes: limits.processes,
        network: run::NetworkRules {
            allow: limits.network,
            private: limits.network_private,
        },
    };
    run::validate(&spec).map_err(|e| match e.field() {
        Some(field) => bad(&format!("args.{field}"), e.to_string()),
        None => PlanError::Unavailable(e.to_string()),
    })?;
    // A plan for a run that cannot run here would only fail after approval.
    ctx.bottle.ready().await.map_err(PlanError::Unavailable)?;
    let network = spec.network.describe();
    let summary = format!(
        "Run {argv:?} in workspace folder \"{cwd}\" inside the bottle (a sandbox that sees only \
         the workspace and the read-only system), no shell, only the listed environment, \
         {timeout_s} s time limit, {} MiB memory, {} processes, {max_output_bytes} bytes of \
         output per stream; network: {network}",
        limits.memory_mb, limits.processes
    );
    Ok((
        vec![step(
            summary,
            Action::Run {
                argv,
                cwd,
                env,
                timeout_s,
                memory_mb: limits.memory_mb,
                max_output_bytes,
                processes: limits.processes,
                network,
                network_allow: spec.network.allow,
                network_private: spec.network.private,
            },
        )],
        Risk::High,
    ))
}

fn plan_task(ctx: &PlanCtx<'_>, a: TaskArgs) -> Result<(Vec<Step>, Risk), PlanError> {
    if a.prompt.trim().is_empty() {
        return Err(bad("args.prompt", "is empty; say what the agent should do"));
    }
    if ctx.agent.is_none() {
        return Err(no_agent());
    }
    Ok((
        vec![step(
            format!("Hand this task to the agent: {}", a.prompt.trim()),
            Action::Agent {
                prompt: a.prompt,
                model: a.model,
            },
        )],
        Risk::High,
    ))
}

fn no_agent() -> PlanError {
    PlanError::Unavailable(
        "the task intent needs the agent with a model; none is configured (the five deterministic intents work without one)".into(),
    )
}

/// Plans the approval of the step an agent task stopped at: only the key that started the task
/// may, only while the task waits, and only for the call it waits on.
async fn plan_agent_step(
    ctx: &PlanCtx<'_>,
    a: AgentStepArgs,
) -> Result<(Vec<Step>, Risk), PlanError> {
    let agent = ctx.agent.ok_or_else(no_agent)?;
    let unreadable = |e: bytebot_store::AgentStoreError| {
        PlanError::Unavailable(format!("cannot read the agent task: {e}"))
    };
    let owner = format!("gateway:{}", ctx.key_id);
    let task = agent
        .store
        .get_agent_task(&a.agent_task_id)
        .await
        .map_err(unreadable)?
        .filter(|t| t.created_by == owner)
        .ok_or_else(|| {
            bad(
                "args.agent_task_id",
                "no agent task with this id was started by this key through the gateway",
            )
        })?;
    let waiting = if task.status == bytebot_protocol::TaskStatus::NeedsHelp {
        agent
            .safety_state(&task.id)
            .await
            .map_err(unreadable)?
            .pending
    } else {
        None
    };
    let Some(question) = waiting else {
        return Err(bad(
            "args.agent_task_id",
            format!(
                "agent task {} is {} and not waiting for a step to be approved",
                task.id, task.status
            ),
        ));
    };
    if question["call_id"].as_str() != Some(a.call_id.as_str()) {
        return Err(bad(
            "args.call_id",
            format!(
                "agent task {} waits for approval of call {}, not this one",
                task.id, question["call_id"]
            ),
        ));
    }
    let warnings: Vec<&str> = question["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["message"].as_str())
        .collect();
    let summary = format!(
        "Let the agent (task {}) do the step its model's provider flagged: {}. The provider says: {}",
        task.id,
        clip(&question["call"].to_string(), 400),
        warnings.join("; ")
    );
    Ok((
        vec![step(
            summary,
            Action::AgentStep {
                agent_task_id: task.id,
                call_id: a.call_id,
                call: question["call"].clone(),
                checks: question["checks"].clone(),
            },
        )],
        Risk::High,
    ))
}

/// At most `max` characters of `text`, marked when cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The JSON Schema of each intent's arguments plus its risk, for `/capabilities`.
pub fn intent_schema(intent: &str) -> Option<(Value, Risk)> {
    use utoipa::PartialSchema;
    let (schema, risk) = match intent {
        "screenshot" => (ScreenshotArgs::schema(), Risk::Low),
        "open_app" => (OpenAppArgs::schema(), Risk::Medium),
        "browse" => (BrowseArgs::schema(), Risk::Medium),
        "edit_file" => (EditFileArgs::schema(), Risk::High),
        "run" => (RunArgs::schema(), Risk::High),
        "task" => (TaskArgs::schema(), Risk::High),
        AGENT_STEP => (AgentStepArgs::schema(), Risk::High),
        _ => return None,
    };
    Some((serde_json::to_value(schema).unwrap_or(Value::Null), risk))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_confined() {
        assert_eq!(
            normalize_rel_path("p", "./a//b/./c.txt").unwrap(),
            "a/b/c.txt"
        );
        for bad_path in ["", "/etc/passwd", "../x", "a/../../x", ".", "a\\b", "a\0b"] {
            assert!(normalize_rel_path("p", bad_path).is_err(), "{bad_path:?}");
        }
    }

    #[test]
    fn actions_round_trip_through_json() {
        let a = Action::Run {
            argv: vec!["echo".into()],
            cwd: ".".into(),
            env: BTreeMap::new(),
            timeout_s: 5,
            memory_mb: 64,
            max_output_bytes: 10,
            processes: 16,
            network: "none".into(),
            network_allow: vec![],
            network_private: vec![],
        };
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["op"], "run");
        assert_eq!(serde_json::from_value::<Action>(v).unwrap(), a);
    }

    #[test]
    fn every_intent_has_a_schema() {
        for i in INTENTS {
            let (schema, _) = intent_schema(i).unwrap();
            assert_eq!(schema["type"], "object", "{i}");
        }
    }
}
