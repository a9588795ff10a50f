//! Text the MCP tools return and the approval question a person reads:
//! plans (steps, risk, digest, the diff of an edit, the exact command of a
//! run), results (observations, absolute artifact links) and errors.
//! Confirm tokens never appear here.

use crate::error::ApiError;
use crate::plan::Step;
use crate::service::{ExecuteResponse, PlanResponse, TaskView};
use serde_json::Value;
use std::fmt::Write;

/// Longest diff shown in a plan or an approval question; past it the text
/// says how much was left out (the plan itself keeps all of it).
const MAX_DIFF_CHARS: usize = 20_000;

/// What the model should do after planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The profile auto-approves this risk: execute runs it directly.
    Auto,
    /// Execute asks the person through the client (elicitation).
    Ask,
    /// A person approves at the approval URL first.
    Url,
}

/// The steps, numbered: each summary, then the exact action (without the
/// bulky `content` of a file write) and, for an edit, its diff.
pub fn steps_text(steps: &[Step]) -> String {
    let mut out = String::new();
    for (i, step) in steps.iter().enumerate() {
        let _ = writeln!(out, "{}. {}", i + 1, step.summary);
        let mut action = step.action.clone();
        let mut diff = None;
        if let Value::Object(map) = &mut action {
            if let Some(content) = map.remove("content") {
                let len = content.as_str().map_or(0, str::len);
                map.insert(
                    "content".into(),
                    Value::String(format!("<{len} bytes, see the diff>")),
                );
            }
            diff = map
                .remove("diff")
                .and_then(|d| d.as_str().map(str::to_string));
        }
        let _ = writeln!(out, "   exact action: {action}");
        if let Some(diff) = diff {
            let _ = writeln!(out, "   diff:\n{}", clip(&diff, MAX_DIFF_CHARS));
        }
    }
    out
}

/// The answer of `bytebot_plan`.
pub fn plan_text(p: &PlanResponse, next: Next, now: i64) -> String {
    let mut out = format!(
        "Planned task {} (risk {}, plan digest sha256:{}). Nothing has run.\n\nSteps:\n{}",
        p.task_id,
        p.est_risk.as_str(),
        p.plan_digest,
        steps_text(&p.plan)
    );
    let _ = writeln!(
        out,
        "\nThe plan expires in {} s (at unix time {}).",
        (p.expires_at - now).max(0),
        p.expires_at
    );
    let _ = write!(
        out,
        "{}",
        match next {
            Next::Auto => format!(
                "This client's profile auto-approves {} risk: call bytebot_execute with task_id \"{}\" to run it.",
                p.est_risk.as_str(),
                p.task_id
            ),
            Next::Ask => format!(
                "Show the plan to the user, then call bytebot_execute with task_id \"{}\": the user will be asked to approve exactly this plan before it runs.",
                p.task_id
            ),
            Next::Url => format!(
                "A person must approve it first: they open {} , check the plan and approve it with an approver key. Then call bytebot_execute with task_id \"{}\".",
                p.approval_url, p.task_id
            ),
        }
    );
    out
}

/// The question a person answers in the client (elicitation).
pub fn approval_message(t: &TaskView, now: i64) -> String {
    format!(
        "bytebot wants to run this plan on the desktop. Approve it?\n\nTask {} — intent {}, risk {}\nPlan digest sha256:{}\n\nSteps:\n{}\nIt expires in {} s. Accept with \"approve\" checked to run exactly this plan once; decline or cancel to leave it unrun.",
        t.task_id,
        t.intent,
        t.est_risk.as_str(),
        t.plan_digest,
        steps_text(&t.plan),
        (t.expires_at - now).max(0)
    )
}

/// A finished execution: status, observations, artifact links made absolute.
pub fn result_text(r: &ExecuteResponse, public_url: &str) -> String {
    let mut out = format!("Task {} {}.\n", r.task_id, r.status);
    if !r.observations.is_empty() {
        out.push_str("\nObservations:\n");
        for o in &r.observations {
            let mark = if o.ok { "ok" } else { "FAILED" };
            // Observations name artifacts by path; a client needs the whole link.
            let text = o.text.replace(
                " /artifacts/",
                &format!(" {}/artifacts/", public_url.trim_end_matches('/')),
            );
            let _ = write!(out, "- step {} {mark}: {text}", o.step + 1);
            if !o.data.is_null() {
                let _ = write!(out, " {}", o.data);
            }
            out.push('\n');
        }
    }
    if let Some(next) = &r.next_plan {
        let _ = writeln!(
            out,
            "\nThe agent stopped before a step its model's provider flagged: {}\nNothing of that step ran. Follow-up plan: task {} (risk {}), expires at unix time {}:",
            next.reason,
            next.task_id,
            next.est_risk.as_str(),
            next.expires_at
        );
        for (i, step) in next.plan.iter().enumerate() {
            let _ = writeln!(out, "{}. {}", i + 1, step.summary);
        }
        let _ = writeln!(
            out,
            "Show this to the user, then call bytebot_execute with task_id \"{}\": it runs only after a person approves it (here, or at {}). Not approving leaves the agent task waiting; cancelling the follow-up task cancels it.",
            next.task_id, next.approval_url
        );
    }
    if !r.artifacts.is_empty() {
        out.push_str("\nArtifacts (signed links that expire):\n");
        for a in &r.artifacts {
            let _ = writeln!(
                out,
                "- {} {} ({} bytes, sha256 {}): {}",
                a.kind,
                a.media_type,
                a.bytes,
                a.sha256,
                absolute(public_url, &a.url)
            );
        }
    }
    out
}

/// A link from the gateway made absolute (artifact links are path + query).
pub fn absolute(public_url: &str, url: &str) -> String {
    if url.starts_with("http://") || url.starts_with("https://") {
        url.to_string()
    } else {
        format!("{}{url}", public_url.trim_end_matches('/'))
    }
}

/// A refusal or failure, with the field or rule at fault.
pub fn error_text(e: &ApiError) -> String {
    let mut out = format!("{} ({})", e.detail.message, e.detail.code);
    if let Some(field) = &e.detail.field {
        let _ = write!(out, "; field: {field}");
    }
    if let Some(rule) = &e.detail.rule {
        let _ = write!(out, "; rule: {rule}");
    }
    out
}

fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!(
            "{}\n[… {} more characters of the diff not shown]",
            &text[..cut],
            text[cut..].chars().count()
        ),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::artifacts::ArtifactRef;
    use crate::plan::Risk;
    use crate::service::Observation;
    use axum::http::StatusCode;
    use serde_json::json;

    fn edit_step(content: &str, diff: &str) -> Step {
        Step {
            summary: "Change notes.txt as shown in the diff".into(),
            action: json!({"op": "write_file", "path": "notes.txt", "content": content, "original_sha256": null, "diff": diff}),
        }
    }

    fn plan(steps: Vec<Step>) -> PlanResponse {
        PlanResponse {
            task_id: "t_1".into(),
            plan: steps,
            est_risk: Risk::High,
            confirm_token: "ct_SECRET".into(),
            expires_at: 1600,
            plan_digest: "ab".repeat(32),
            needs_approval: true,
            approval_url: "http://127.0.0.1:9/approve/t_1".into(),
        }
    }

    #[test]
    fn a_plan_shows_steps_risk_digest_and_diff_but_never_the_token() {
        let p = plan(vec![edit_step(
            "new body\n",
            "--- a/notes.txt\n+++ b/notes.txt\n-old\n+new body\n",
        )]);
        let text = plan_text(&p, Next::Ask, 1000);
        assert!(text.contains("t_1") && text.contains("risk high"));
        assert!(text.contains(&"ab".repeat(32)));
        assert!(
            text.contains("+new body") && text.contains("-old"),
            "{text}"
        );
        assert!(
            text.contains("<9 bytes, see the diff>"),
            "content is summarised: {text}"
        );
        assert!(text.contains("expires in 600 s"));
        assert!(!text.contains("ct_SECRET"), "{text}");
        assert!(text.contains("bytebot_execute"));
    }

    #[test]
    fn the_next_step_depends_on_how_approval_happens() {
        let p = plan(vec![]);
        assert!(plan_text(&p, Next::Url, 0).contains("http://127.0.0.1:9/approve/t_1"));
        assert!(!plan_text(&p, Next::Ask, 0).contains("/approve/"));
        assert!(plan_text(&p, Next::Auto, 0).contains("auto-approves high"));
    }

    #[test]
    fn long_diffs_are_clipped_with_a_count() {
        let diff = "x".repeat(MAX_DIFF_CHARS + 5);
        let text = steps_text(&[edit_step("", &diff)]);
        assert!(
            text.contains("[… 5 more characters of the diff not shown]"),
            "{}",
            &text[text.len() - 80..]
        );
    }

    #[test]
    fn results_list_observations_and_absolute_links() {
        let r = ExecuteResponse {
            task_id: "t_2".into(),
            status: "succeeded".into(),
            next_plan: None,
            observations: vec![Observation {
                step: 0,
                ok: true,
                text: "took a screenshot: /artifacts/a_1?exp=5&sig=ff".into(),
                data: json!({"width": 10}),
            }],
            artifacts: vec![ArtifactRef {
                id: "a_1".into(),
                kind: "screenshot".into(),
                media_type: "image/png".into(),
                url: "/artifacts/a_1?exp=5&sig=ff".into(),
                bytes: 42,
                sha256: "cd".into(),
            }],
        };
        let text = result_text(&r, "http://127.0.0.1:7/");
        assert!(text.starts_with("Task t_2 succeeded."));
        assert!(text.contains("- step 1 ok: took a screenshot: http://127.0.0.1:7/artifacts/a_1?exp=5&sig=ff {\"width\":10}"), "{text}");
        assert!(
            text.contains("http://127.0.0.1:7/artifacts/a_1?exp=5&sig=ff"),
            "{text}"
        );
    }

    #[test]
    fn errors_name_the_code_field_and_rule() {
        let e = ApiError::new(StatusCode::FORBIDDEN, "denied", "denied by policy: no")
            .with_rule("profiles.x.intents");
        assert_eq!(
            error_text(&e),
            "denied by policy: no (denied); rule: profiles.x.intents"
        );
        let e = ApiError::unprocessable("args.url", "args.url: bad");
        assert_eq!(
            error_text(&e),
            "args.url: bad (bad_request); field: args.url"
        );
    }
}
