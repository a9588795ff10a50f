//! `edit_file`: the new content from whole content or find/replace edits,
//! and the unified diff shown for approval.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One replacement: `find` must occur exactly once in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FindReplace {
    /// Exact text to find (must occur exactly once).
    pub find: String,
    /// Text to put in its place.
    pub replace: String,
}

/// Applies `edits` in order; each `find` must occur exactly once in the text
/// as it is at that point, so an edit can never land in the wrong place.
pub fn apply_edits(original: &str, edits: &[FindReplace]) -> Result<String, (String, String)> {
    let mut text = original.to_string();
    for (i, edit) in edits.iter().enumerate() {
        let field = format!("args.edits[{i}].find");
        if edit.find.is_empty() {
            return Err((field, "is empty; give the exact text to replace".into()));
        }
        let count = text.matches(edit.find.as_str()).count();
        match count {
            1 => text = text.replacen(edit.find.as_str(), &edit.replace, 1),
            0 => {
                return Err((
                    field,
                    "does not occur in the file; read the file and copy the text exactly".into(),
                ));
            }
            n => {
                return Err((
                    field,
                    format!("occurs {n} times; include more surrounding text so it occurs once"),
                ));
            }
        }
    }
    Ok(text)
}

/// A unified diff (3 lines of context) from `old` to `new`, labelled `a/path`
/// and `b/path`; a new file diffs against `/dev/null`.
pub fn unified_diff(path: &str, old: Option<&str>, new: &str) -> String {
    let before = old.unwrap_or_default();
    let diff = similar::TextDiff::from_lines(before, new);
    let from = if old.is_some() {
        format!("a/{path}")
    } else {
        "/dev/null".to_string()
    };
    diff.unified_diff()
        .context_radius(3)
        .header(&from, &format!("b/{path}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fr(find: &str, replace: &str) -> FindReplace {
        FindReplace {
            find: find.into(),
            replace: replace.into(),
        }
    }

    #[test]
    fn edits_apply_in_order_and_must_be_unique() {
        assert_eq!(
            apply_edits("a b c", &[fr("b", "x"), fr("x c", "y")]).unwrap(),
            "a y"
        );
        let (field, msg) = apply_edits("a a", &[fr("a", "b")]).unwrap_err();
        assert_eq!(field, "args.edits[0].find");
        assert!(msg.contains("2 times"), "{msg}");
        let (field, _) = apply_edits("abc", &[fr("b", "x"), fr("zzz", "y")]).unwrap_err();
        assert_eq!(field, "args.edits[1].find");
        assert!(apply_edits("abc", &[fr("", "y")]).is_err());
    }

    #[test]
    fn diff_shows_the_change() {
        let d = unified_diff("notes/a.txt", Some("one\ntwo\n"), "one\n2\n");
        assert!(
            d.starts_with("--- a/notes/a.txt\n+++ b/notes/a.txt\n"),
            "{d}"
        );
        assert!(d.contains("-two\n+2\n"), "{d}");
        let new = unified_diff("n.txt", None, "hi\n");
        assert!(new.starts_with("--- /dev/null\n+++ b/n.txt\n"), "{new}");
        assert!(new.contains("+hi\n"), "{new}");
    }
}
