//! Plans: what an intent will do, step by step, human-readable and exact.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How much harm a plan could do if it were wrong.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Reads only (a screenshot).
    Low,
    /// Changes what is on screen or opens the network (open an app, browse).
    Medium,
    /// Changes files or runs programs.
    High,
}

impl Risk {
    /// The lowercase name used on the wire and in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
        }
    }
}

/// One step of a plan: a sentence for people, an exact action for the machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Step {
    /// What the step does, in one sentence.
    pub summary: String,
    /// Exactly what will be done (the executor runs this, nothing else).
    #[schema(value_type = Object)]
    pub action: serde_json::Value,
}

/// A whole plan as stored and as shown for approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The intent it was made for.
    pub intent: String,
    /// The arguments as received (after validation).
    pub args: serde_json::Value,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Its risk.
    pub risk: Risk,
}

impl Plan {
    /// SHA-256 (hex) of the plan's canonical JSON: keys sorted, no spaces,
    /// so the same plan always has the same digest whatever built it.
    pub fn digest(&self) -> String {
        let value = serde_json::json!({
            "intent": self.intent,
            "args": self.args,
            "steps": self.steps,
            "risk": self.risk,
        });
        let mut out = String::new();
        canonical_json(&value, &mut out);
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(out.as_bytes()))
    }
}

/// Writes `value` as JSON with object keys sorted (RFC 8785's ordering for
/// the ASCII keys we use), so digests do not depend on map order.
pub fn canonical_json(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(*k) {
                    canonical_json(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let mut out = String::new();
        canonical_json(
            &json!({"b": 1, "a": {"d": [1, {"z": 0, "y": "x"}], "c": null}}),
            &mut out,
        );
        assert_eq!(out, r#"{"a":{"c":null,"d":[1,{"y":"x","z":0}]},"b":1}"#);
    }

    #[test]
    fn digest_changes_with_any_field() {
        let plan = Plan {
            intent: "run".into(),
            args: json!({"argv": ["echo", "hi"]}),
            steps: vec![Step {
                summary: "s".into(),
                action: json!({"argv": ["echo", "hi"]}),
            }],
            risk: Risk::High,
        };
        let mut other = plan.clone();
        other.args = json!({"argv": ["echo", "ho"]});
        assert_ne!(plan.digest(), other.digest());
        let same = plan.clone();
        assert_eq!(plan.digest(), same.digest());
        assert_eq!(plan.digest().len(), 64);
    }
}
