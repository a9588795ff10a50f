//! The plain-text report `bytebot verify FILE` prints.
//!
//! Every string from the record (argv, paths, hosts, link targets) went through a sandbox that
//! may be hostile, so control and bidirectional-override characters are shown escaped rather
//! than sent to the reader's terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::dsse::{MismatchKind, VerifiedRun, WorkspaceCheck};
use super::workspace::Change;

/// Longest list printed in full; the rest is counted.
const MAX_LINES: usize = 200;

/// The verification report for a record that verified.
pub fn render(run: &VerifiedRun) -> String {
    let p = &run.predicate;
    let mut out = String::new();
    let _ = writeln!(out, "signature OK (ed25519 key {})", run.key_id);
    let _ = writeln!(out);

    let mut ran = format!("run       {}", clean(&p.bottle_id));
    if let Some(label) = &p.label {
        let _ = write!(ran, "  label {:?}", clean(label).as_ref());
    }
    let _ = write!(
        ran,
        "  backend {}  ({})",
        clean(&p.backend),
        clean(&p.producer)
    );
    let _ = writeln!(out, "{ran}");
    let _ = writeln!(out, "command   {}", shell_words(&p.argv));
    let _ = writeln!(out, "exit      {}", outcome(p));
    let _ = writeln!(out, "started   {}", time(&p.started_at));
    let _ = writeln!(
        out,
        "ended     {}  (took {})",
        time(&p.ended_at),
        duration(p.ended_at - p.started_at)
    );
    if p.outcome.output_truncated {
        let _ = writeln!(
            out,
            "output    TRUNCATED: it wrote more than the output cap"
        );
    }
    let _ = writeln!(out, "policy    sha256:{}", clean(&p.policy_sha256));
    let _ = writeln!(
        out,
        "workspace sha256:{} before, sha256:{} after",
        short(&p.workspace.before_sha256),
        short(&p.workspace.after_sha256)
    );

    let _ = writeln!(out);
    if run.subjects.is_empty() {
        let _ = writeln!(out, "wrote no files");
    } else {
        let _ = writeln!(out, "wrote {} file(s):", run.subjects.len());
        for s in run.subjects.iter().take(MAX_LINES) {
            let mut facts = Vec::new();
            if let Some(size) = s.size() {
                facts.push(bytes(size));
            }
            match s.annotations.as_ref().and_then(|a| a.change) {
                Some(Change::Added) => facts.push("new".to_owned()),
                Some(Change::Modified) => facts.push("modified".to_owned()),
                None => {}
            }
            let facts = if facts.is_empty() {
                String::new()
            } else {
                format!("  ({})", facts.join(", "))
            };
            let _ = writeln!(
                out,
                "  {}{facts}  sha256:{}",
                clean(&s.name),
                short(s.sha256())
            );
        }
        more(&mut out, run.subjects.len());
    }
    if !p.workspace.removed.is_empty() {
        let _ = writeln!(out, "removed {}:", p.workspace.removed.len());
        for path in p.workspace.removed.iter().take(MAX_LINES) {
            let _ = writeln!(out, "  {}", clean(path));
        }
        more(&mut out, p.workspace.removed.len());
    }
    if !p.workspace.links.is_empty() {
        let _ = writeln!(
            out,
            "symbolic links created or re-pointed {} (check where they lead before opening them):",
            p.workspace.links.len()
        );
        for link in p.workspace.links.iter().take(MAX_LINES) {
            let _ = writeln!(out, "  {} -> {}", clean(&link.path), clean(&link.target));
        }
        more(&mut out, p.workspace.links.len());
    }

    let _ = writeln!(out);
    let egress = &p.egress;
    if egress.hosts.is_empty() {
        let _ = writeln!(out, "connected to no hosts");
    } else {
        let _ = writeln!(out, "connected to {} host(s):", egress.hosts.len());
        for h in egress.hosts.iter().take(MAX_LINES) {
            let _ = writeln!(
                out,
                "  {}:{}  {} request(s), {} up, {} down",
                clean(&h.host),
                h.port,
                h.requests,
                bytes(h.bytes_up),
                bytes(h.bytes_down)
            );
        }
        more(&mut out, egress.hosts.len());
    }
    if !egress.denied.is_empty() {
        let total: u64 = egress.denied.iter().map(|d| d.count).sum();
        let _ = writeln!(out, "DENIED {total} attempt(s):");
        for d in egress.denied.iter().take(MAX_LINES) {
            let _ = writeln!(
                out,
                "  !! {}  x{}  (rule: {})",
                clean(&d.host),
                d.count,
                clean(&d.rule)
            );
        }
        more(&mut out, egress.denied.len());
    }
    if egress.secrets_used.is_empty() {
        let _ = writeln!(out, "secrets used: none");
    } else {
        let names: Vec<_> = egress.secrets_used.iter().map(|s| clean(s)).collect();
        let _ = writeln!(out, "secrets used (by name): {}", names.join(", "));
    }
    out
}

/// The report of [`super::verify_against_workspace`].
pub fn render_workspace_check(check: &WorkspaceCheck) -> String {
    let mut out = String::new();
    if check.is_clean() {
        let _ = writeln!(
            out,
            "workspace: all {} written file(s) are as recorded",
            check.checked
        );
        return out;
    }
    let _ = writeln!(
        out,
        "workspace: {} of {} written file(s) differ from the record:",
        check.mismatches.len(),
        check.checked
    );
    for m in &check.mismatches {
        let what = match &m.problem {
            MismatchKind::Missing => "missing".to_owned(),
            MismatchKind::Changed { sha256, size } => format!(
                "changed since the run (now {}, sha256:{}; recorded sha256:{})",
                bytes(*size),
                short(sha256),
                short(&m.expected)
            ),
            MismatchKind::NotARegularFile(why) => {
                format!("not readable as a regular file ({})", clean(why))
            }
        };
        let _ = writeln!(out, "  {}: {what}", clean(&m.name));
    }
    out
}

fn more(out: &mut String, total: usize) {
    if total > MAX_LINES {
        let _ = writeln!(out, "  … and {} more", total - MAX_LINES);
    }
}

fn outcome(p: &super::statement::BottleRun) -> String {
    let o = &p.outcome;
    let mut parts = Vec::new();
    match (o.exit_code, o.signal) {
        (Some(code), _) => parts.push(format!("exit code {code}")),
        (None, Some(sig)) => parts.push(format!("killed by signal {sig}")),
        (None, None) => parts.push("no exit status recorded".to_owned()),
    }
    if o.timed_out {
        parts.push("TIMED OUT (stopped at the time limit)".to_owned());
    }
    parts.join(", ")
}

/// Escape characters that would act on a terminal instead of being shown.
fn clean(s: &str) -> Cow<'_, str> {
    let risky = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(risky) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if risky(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// argv as a shell would need it typed, so spaces and quotes inside arguments are visible.
fn shell_words(argv: &[String]) -> String {
    let words: Vec<String> = argv
        .iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", clean(a).replace('\'', r"'\''"))
            }
        })
        .collect();
    words.join(" ")
}

fn short(hex: &str) -> Cow<'_, str> {
    match hex.get(..12) {
        Some(head) if hex.len() > 12 => Cow::Owned(format!("{}…", clean(head))),
        _ => clean(hex),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn duration(d: chrono::TimeDelta) -> String {
    let ms = d.num_milliseconds();
    if ms < 0 {
        return format!("{ms} ms: the end is before the start");
    }
    let secs = ms / 1000;
    if secs < 60 {
        format!("{}.{:03} s", secs, ms % 1000)
    } else if secs < 3600 {
        format!("{} min {} s", secs / 60, secs % 60)
    } else {
        format!("{} h {} min", secs / 3600, (secs % 3600) / 60)
    }
}
