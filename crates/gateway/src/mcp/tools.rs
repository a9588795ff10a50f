//! The four tools as MCP lists them (name, description, input schema,
//! hints) and the parsing of their arguments.

use crate::intents::INTENTS;
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;

/// `bytebot_capabilities`.
pub const CAPABILITIES: &str = "bytebot_capabilities";
/// `bytebot_plan`.
pub const PLAN: &str = "bytebot_plan";
/// `bytebot_execute`.
pub const EXECUTE: &str = "bytebot_execute";
/// `bytebot_screenshot`.
pub const SCREENSHOT: &str = "bytebot_screenshot";

/// Arguments of `bytebot_plan`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanArgs {
    /// The intent.
    pub intent: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Value,
}

/// Arguments of `bytebot_execute`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteArgs {
    /// The planned task.
    pub task_id: String,
}

/// Parses a tool's arguments; the error names the field and what is wrong.
pub fn parse<T: DeserializeOwned>(args: &JsonObject) -> Result<T, String> {
    serde_path_to_error::deserialize(Value::Object(args.clone())).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("arguments: {}", e.into_inner())
        } else {
            format!("arguments.{path}: {}", e.into_inner())
        }
    })
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

/// Every tool, in the order clients list them.
pub fn all() -> Vec<Tool> {
    let intents: Vec<&str> = INTENTS.to_vec();
    vec![
        Tool::new(
            CAPABILITIES,
            "What this client may do on the bytebot desktop under its policy profile: capabilities, \
             the intents it may plan with each one's argument schema and risk, whether each needs a \
             person's approval, and limits. Runs nothing.",
            schema(json!({"type": "object", "properties": {}, "additionalProperties": false})),
        )
        .with_title("bytebot: what may I do?")
        .with_annotations(ToolAnnotations::new().read_only(true).open_world(false)),
        Tool::new(
            PLAN,
            "Plan an action on the bytebot desktop. Runs nothing: returns the exact plan (each step \
             in words and as the exact action, the diff of an edit_file, the argv/folder/limits of a \
             run), its risk, its digest, when it expires and its task_id. Show the plan to the user; \
             then call bytebot_execute with the task_id, which runs it only after a person approves.",
            schema(json!({
                "type": "object",
                "properties": {
                    "intent": {
                        "type": "string",
                        "enum": intents,
                        "description": "What to do: screenshot, open_app, browse, edit_file, run, or task (needs the agent)."
                    },
                    "args": {
                        "type": "object",
                        "description": "The intent's arguments; bytebot_capabilities gives each intent's schema. \
                                        e.g. screenshot {\"window\"?, \"format\"?}, open_app {\"app\"}, browse {\"url\"}, \
                                        edit_file {\"path\", \"content\" or \"edits\": [{\"find\", \"replace\"}]}, \
                                        run {\"argv\": [...] or \"command\", \"cwd\"?, \"timeout_s\"?}."
                    }
                },
                "required": ["intent"],
                "additionalProperties": false
            })),
        )
        .with_title("bytebot: plan an action")
        .with_annotations(ToolAnnotations::new().read_only(true).open_world(false)),
        Tool::new(
            EXECUTE,
            "Run a planned task by its task_id, exactly as planned and at most once, after a person \
             approved it: the user is asked in this client when it supports that, otherwise a person \
             approves at the approval URL and you call this again. Returns the status, observations \
             and artifacts (signed links; screenshots also as images).",
            schema(json!({
                "type": "object",
                "properties": {
                    "task_id": {"type": "string", "description": "The task_id from bytebot_plan."}
                },
                "required": ["task_id"],
                "additionalProperties": false
            })),
        )
        .with_title("bytebot: run an approved plan")
        .with_annotations(ToolAnnotations::new().read_only(false).destructive(true).open_world(true)),
        Tool::new(
            SCREENSHOT,
            "Take a screenshot of the bytebot desktop (or of one window) in one call: plans it, has it \
             approved (the user is asked unless this client's profile auto-approves low risk) and runs \
             it. Returns the image and a signed link to it.",
            schema(json!({
                "type": "object",
                "properties": {
                    "window": {"type": "string", "description": "\"desktop\" (default) or a window title (case-insensitive substring)."},
                    "format": {"type": "string", "enum": ["png", "jpeg"], "description": "Image format; png by default."}
                },
                "additionalProperties": false
            })),
        )
        .with_title("bytebot: screenshot")
        .with_annotations(ToolAnnotations::new().read_only(false).destructive(false).open_world(false)),
    ]
}

/// One tool by name.
pub fn get(name: &str) -> Option<Tool> {
    all().into_iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_four_tools_are_listed_with_object_schemas() {
        let names: Vec<String> = all().iter().map(|t| t.name.to_string()).collect();
        assert_eq!(names, [CAPABILITIES, PLAN, EXECUTE, SCREENSHOT]);
        for t in all() {
            assert_eq!(
                t.input_schema.get("type"),
                Some(&json!("object")),
                "{}",
                t.name
            );
            assert!(t.description.as_deref().is_some_and(|d| d.len() > 40));
        }
        assert_eq!(
            get(EXECUTE).unwrap().input_schema["required"],
            json!(["task_id"])
        );
        assert!(get("nope").is_none());
    }

    #[test]
    fn arguments_are_parsed_strictly_with_the_field_named() {
        let ok: PlanArgs = parse(json!({"intent": "screenshot"}).as_object().unwrap()).unwrap();
        assert_eq!(ok.intent, "screenshot");
        assert!(ok.args.is_null());
        let err = parse::<PlanArgs>(json!({"intent": 3}).as_object().unwrap()).unwrap_err();
        assert!(err.starts_with("arguments.intent:"), "{err}");
        let err = parse::<ExecuteArgs>(
            json!({"task_id": "t", "confirm_token": "x"})
                .as_object()
                .unwrap(),
        )
        .unwrap_err();
        assert!(
            err.contains("confirm_token"),
            "a model cannot pass a token: {err}"
        );
        let err = parse::<ExecuteArgs>(&JsonObject::new()).unwrap_err();
        assert!(err.contains("task_id"), "{err}");
    }
}
