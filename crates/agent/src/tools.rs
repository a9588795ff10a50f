//! The agent's own tools, offered to every provider as functions beside its computer tool.
//!
//! Each has a JSON schema for the model and a typed argument struct; arguments that do not fit
//! are answered with an error naming the field, so the model can correct itself.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::model::FunctionTool;

/// `set_task_status`: the model says it is done or needs a person.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetTaskStatus {
    /// `completed` or `needs_help`.
    pub status: FinalStatus,
    /// What was done, or what help is needed.
    pub message: String,
}

/// What the model may set a task to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalStatus {
    /// The task is done.
    Completed,
    /// A person must help.
    NeedsHelp,
}

/// `create_task`: a follow-up task, now or later.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// What the new task should do.
    pub description: String,
    /// LOW, MEDIUM (default), HIGH or URGENT.
    #[serde(default)]
    pub priority: Option<String>,
    /// When to start, RFC 3339 (e.g. `2026-11-24T09:00:00Z`); now when absent.
    #[serde(default)]
    pub scheduled_for: Option<String>,
}

/// `read_file`: a workspace file's text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFile {
    /// Path inside the workspace.
    pub path: String,
}

/// `write_file`: writes text into the workspace.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteFile {
    /// Path inside the workspace.
    pub path: String,
    /// The whole new content.
    pub content: String,
}

/// `find_text` and `wait_for_text`: OCR for a label.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindText {
    /// The text to look for.
    pub text: String,
    /// For `wait_for_text`: how long to keep looking (ms, at most 30,000; default 10,000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `click_text`: clicks a label found by OCR.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickText {
    /// The label's text.
    pub text: String,
    /// left (default), right or middle.
    #[serde(default)]
    pub button: Option<String>,
    /// 1 (default), 2 or 3.
    #[serde(default)]
    pub clicks: Option<u32>,
    /// Which match when there are several (0, the default, is the best).
    #[serde(default)]
    pub index: Option<usize>,
}

/// A call of one of our tools, its arguments checked.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentCall {
    /// See [`SetTaskStatus`].
    SetTaskStatus(SetTaskStatus),
    /// See [`CreateTask`].
    CreateTask(CreateTask),
    /// See [`ReadFile`].
    ReadFile(ReadFile),
    /// See [`WriteFile`].
    WriteFile(WriteFile),
    /// See [`FindText`].
    FindText(FindText),
    /// See [`FindText`]; keeps looking until the text shows or the timeout passes.
    WaitForText(FindText),
    /// See [`ClickText`].
    ClickText(ClickText),
}

/// The names of our tools.
pub const NAMES: [&str; 7] = [
    "set_task_status",
    "create_task",
    "read_file",
    "write_file",
    "find_text",
    "wait_for_text",
    "click_text",
];

/// Parses a function call of ours; the error says what to fix.
pub fn parse(name: &str, arguments: &Value) -> Result<AgentCall, String> {
    fn args<T: DeserializeOwned>(name: &str, v: &Value) -> Result<T, String> {
        serde_json::from_value(v.clone())
            .map_err(|e| format!("invalid arguments for {name}: {e}; see the tool's schema"))
    }
    Ok(match name {
        "set_task_status" => AgentCall::SetTaskStatus(args(name, arguments)?),
        "create_task" => AgentCall::CreateTask(args(name, arguments)?),
        "read_file" => AgentCall::ReadFile(args(name, arguments)?),
        "write_file" => AgentCall::WriteFile(args(name, arguments)?),
        "find_text" => AgentCall::FindText(args(name, arguments)?),
        "wait_for_text" => AgentCall::WaitForText(args(name, arguments)?),
        "click_text" => AgentCall::ClickText(args(name, arguments)?),
        other => {
            return Err(format!(
                "there is no tool \"{other}\"; the tools are computer, {}",
                NAMES.join(", ")
            ));
        }
    })
}

/// The schemas offered to the model.
pub fn definitions() -> Vec<FunctionTool> {
    let tool = |name: &str, description: &str, parameters: Value| FunctionTool {
        name: name.into(),
        description: description.into(),
        parameters,
    };
    vec![
        tool(
            "set_task_status",
            "Finish the task: status \"completed\" with a summary of what was done, or \"needs_help\" with what a person must do. Call it once, at the end.",
            json!({"type":"object","properties":{
                "status":{"type":"string","enum":["completed","needs_help"]},
                "message":{"type":"string","description":"What was done, or what help is needed."}
            },"required":["status","message"],"additionalProperties":false}),
        ),
        tool(
            "create_task",
            "Queue a follow-up task, now or at a time.",
            json!({"type":"object","properties":{
                "description":{"type":"string"},
                "priority":{"type":"string","enum":["LOW","MEDIUM","HIGH","URGENT"]},
                "scheduled_for":{"type":"string","description":"RFC 3339 time to start, e.g. 2026-11-24T09:00:00Z"}
            },"required":["description"],"additionalProperties":false}),
        ),
        tool(
            "read_file",
            "Read a text file from the workspace.",
            json!({"type":"object","properties":{"path":{"type":"string"}},"required":["path"],"additionalProperties":false}),
        ),
        tool(
            "write_file",
            "Write a text file in the workspace (replaces it).",
            json!({"type":"object","properties":{"path":{"type":"string"},"content":{"type":"string"}},"required":["path","content"],"additionalProperties":false}),
        ),
        tool(
            "find_text",
            "Find visible text on the screen by OCR; returns where each match is.",
            json!({"type":"object","properties":{"text":{"type":"string"}},"required":["text"],"additionalProperties":false}),
        ),
        tool(
            "wait_for_text",
            "Wait until text appears on the screen (OCR), up to timeout_ms.",
            json!({"type":"object","properties":{"text":{"type":"string"},"timeout_ms":{"type":"integer","minimum":0,"maximum":30000}},"required":["text"],"additionalProperties":false}),
        ),
        tool(
            "click_text",
            "Click visible text (a button label, a link) found by OCR, instead of guessing coordinates.",
            json!({"type":"object","properties":{
                "text":{"type":"string"},
                "button":{"type":"string","enum":["left","right","middle"]},
                "clicks":{"type":"integer","minimum":1,"maximum":3},
                "index":{"type":"integer","minimum":0}
            },"required":["text"],"additionalProperties":false}),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_a_schema_and_parses() {
        let defs = definitions();
        assert_eq!(
            defs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            NAMES
        );
        assert_eq!(
            parse("click_text", &json!({"text":"OK","clicks":2})),
            Ok(AgentCall::ClickText(ClickText {
                text: "OK".into(),
                button: None,
                clicks: Some(2),
                index: None
            }))
        );
    }

    #[test]
    fn bad_arguments_name_the_problem() {
        let e = parse("set_task_status", &json!({"status":"done","message":"x"})).unwrap_err();
        assert!(e.contains("unknown variant `done`"), "{e}");
        let e = parse("read_file", &json!({"path":"a","mode":"r"})).unwrap_err();
        assert!(e.contains("unknown field `mode`"), "{e}");
        let e = parse("rm_rf", &json!({})).unwrap_err();
        assert!(e.contains("no tool \"rm_rf\""), "{e}");
    }
}
