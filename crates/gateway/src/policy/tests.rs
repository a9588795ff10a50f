#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::plan::Risk;

const SRC: &str = "config/policy.json";

fn parse(text: &str) -> Policy {
    Policy::from_json(text, SRC).unwrap_or_else(|e| panic!("should parse: {e}\n{text}"))
}

fn fail(text: &str) -> PolicyError {
    match Policy::from_json(text, SRC) {
        Ok(_) => panic!("should fail:\n{text}"),
        Err(e) => e,
    }
}

/// 1-based line and character column where `needle` first occurs in `text`.
fn pos(text: &str, needle: &str) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in text"));
    let before = &text[..at];
    let line = before.lines().count().max(1) + usize::from(before.ends_with('\n'));
    let col = before.rsplit('\n').next().unwrap().chars().count() + 1;
    (line, col)
}

/// A policy with one profile `p` whose body is `body`, laid out over lines.
fn one(body: &str) -> String {
    format!("{{\n  \"profiles\": {{\n    \"p\": {body}\n  }}\n}}\n")
}

fn profile(body: &str) -> Profile {
    parse(&one(body)).profile("p").unwrap().clone()
}

/// Asserts the error is at `needle` (line and column) with this path, and its
/// reason contains `reason`.
fn assert_error_at(text: &str, needle: &str, path: &str, reason: &str) {
    let e = fail(text);
    assert_eq!((e.line, e.column), pos(text, needle), "position of {e}");
    assert_eq!(e.path, path, "path of {e}");
    assert!(e.reason.contains(reason), "{e} should say {reason:?}");
    assert_eq!(e.source, SRC);
}

fn denied_rule<T: std::fmt::Debug>(r: Result<T, Denied>) -> String {
    r.expect_err("should be denied").rule
}

// ---------------------------------------------------------------- parse errors

#[test]
fn display_names_file_line_column_path_and_reason() {
    let text = "{\n  \"profiles\": {\n    \"default\": {\n      \"browse\": {\n        \"allow\": [\"example.com\",\n                  \"https://x\"]\n      }\n    }\n  }\n}\n";
    let e = fail(text);
    assert_eq!(
        e.to_string(),
        "config/policy.json:6:19: profiles.default.browse.allow[1]: \"https://x\" is not a host \
         pattern; use \"example.com\" or \"*.example.com\""
    );
}

#[test]
fn syntax_error_has_line_column_and_path() {
    let text = one("{\n      \"intents\": [\"run\",]\n    }");
    let e = fail(&text);
    assert_eq!(e.line, 4, "{e}");
    assert_eq!(e.column, pos(&text, ",]").1 + 1, "{e}");
    assert!(e.reason.contains("trailing comma"), "{e}");
    assert!(e.path.starts_with("profiles.p.intents"), "{e}");
}

#[test]
fn empty_and_non_object_texts_are_errors() {
    let e = fail("");
    assert!(e.reason.contains("EOF"), "{e}");
    assert_eq!(e.line, 1);
    let e = fail("true");
    assert!(e.reason.contains("a policy object"), "{e}");
    let e = fail(&one("\"run\""));
    assert!(e.reason.contains("a profile object"), "{e}");
    assert_eq!(e.path, "profiles.p");
    let e = fail("{ \"profiles\": [] }");
    assert_eq!(e.path, "profiles");
}

#[test]
fn lists_in_place_of_objects_are_errors() {
    // serde would take these by position; the policy must name its fields.
    let e = fail(" []");
    assert_eq!((e.line, e.column, e.path.as_str()), (1, 2, ""), "{e}");
    assert!(e.reason.contains("must be an object"), "{e}");
    let text = one("[[\"run\"]]");
    assert_error_at(&text, "[[", "profiles.p", "must be an object");
    for section in ["browse", "files", "run", "rate_limit"] {
        let text = one(&format!("{{ \"{section}\": [] }}"));
        assert_error_at(
            &text,
            "[]",
            &format!("profiles.p.{section}"),
            "must be an object",
        );
    }
}

#[test]
fn unknown_top_level_field_is_an_error() {
    let text = "{\n  \"profiles\": {},\n  \"profile\": {}\n}";
    let e = fail(text);
    assert!(e.reason.contains("unknown field `profile`"), "{e}");
    assert_eq!(e.line, 3);
    assert_eq!(e.path, "profile");
}

#[test]
fn unknown_nested_fields_are_errors_with_their_path() {
    for (body, path, field) in [
        ("{ \"run\": { \"cpu\": 2 } }", "profiles.p.run.cpu", "cpu"),
        (
            "{ \"browse\": { \"allowed\": [] } }",
            "profiles.p.browse.allowed",
            "allowed",
        ),
        (
            "{ \"files\": { \"exec\": [] } }",
            "profiles.p.files.exec",
            "exec",
        ),
        (
            "{ \"rate_limit\": { \"per_second\": 1 } }",
            "profiles.p.rate_limit.per_second",
            "per_second",
        ),
        ("{ \"intent\": [] }", "profiles.p.intent", "intent"),
    ] {
        let text = one(body);
        let e = fail(&text);
        assert!(
            e.reason.contains(&format!("unknown field `{field}`")),
            "{e}"
        );
        assert_eq!(e.path, path, "{e}");
        assert_eq!(e.line, 3, "{e}");
        // serde points at the end of the key.
        let (_, key_col) = pos(&text, &format!("\"{field}\""));
        assert_eq!(e.column, key_col + field.len() + 1, "{e}");
    }
}

#[test]
fn wrong_types_are_errors_with_their_path() {
    for (body, path, reason) in [
        (
            "{ \"run\": { \"timeout_s\": \"30\" } }",
            "profiles.p.run.timeout_s",
            "invalid type",
        ),
        (
            "{ \"run\": { \"memory_mb\": -1 } }",
            "profiles.p.run.memory_mb",
            "invalid value",
        ),
        (
            "{ \"run\": { \"memory_mb\": 1.5 } }",
            "profiles.p.run.memory_mb",
            "invalid type",
        ),
        (
            "{ \"intents\": [\"run\", 1] }",
            "profiles.p.intents[1]",
            "invalid type",
        ),
        (
            "{ \"intents\": null }",
            "profiles.p.intents",
            "invalid type: null",
        ),
        (
            "{ \"approver\": \"yes\" }",
            "profiles.p.approver",
            "invalid type",
        ),
        (
            "{ \"rate_limit\": { \"burst\": 5000000000 } }",
            "profiles.p.rate_limit.burst",
            "u32",
        ),
    ] {
        let e = fail(&one(body));
        assert_eq!(e.path, path, "{e}");
        assert!(e.reason.contains(reason), "{e}");
        assert_eq!(e.line, 3, "{e}");
    }
}

#[test]
fn unknown_risk_is_an_error() {
    let text = one("{ \"auto_approve\": [\"low\", \"extreme\"] }");
    let e = fail(&text);
    assert!(e.reason.contains("unknown variant `extreme`"), "{e}");
    assert_eq!(e.path, "profiles.p.auto_approve[1]");
    assert_eq!(e.line, 3);
}

#[test]
fn unknown_intent_is_an_error() {
    let text = one("{\n      \"intents\": [\"screenshot\",\n        \"fly\"]\n    }");
    assert_error_at(
        &text,
        "\"fly\"",
        "profiles.p.intents[1]",
        "\"fly\" is not an intent",
    );
    // Intent names are exact.
    let text = one("{ \"intents\": [\"Run\"] }");
    assert_error_at(
        &text,
        "\"Run\"",
        "profiles.p.intents[0]",
        "is not an intent",
    );
}

#[test]
fn bad_globs_are_errors() {
    for (glob, reason) in [
        ("[a", "not a valid glob"),
        ("a{b", "not a valid glob"),
        ("/etc/**", "leaves the workspace"),
        ("../x", "leaves the workspace"),
        ("a/../../x", "leaves the workspace"),
        ("", "empty glob"),
    ] {
        for field in ["read", "write"] {
            let text = one(&format!(
                "{{ \"files\": {{\n      \"{field}\": [\"ok/**\", {glob:?}] }} }}"
            ));
            assert_error_at(
                &text,
                &format!("{glob:?}]"),
                &format!("profiles.p.files.{field}[1]"),
                reason,
            );
        }
    }
}

#[test]
fn bad_host_patterns_are_errors_in_every_host_list() {
    for (pattern, reason) in [
        (
            "https://x",
            "is not a host pattern; use \"example.com\" or \"*.example.com\"",
        ),
        ("example.com:443", "is not a host pattern"),
        ("example.com/path", "is not a host pattern"),
        ("user@example.com", "is not a host pattern"),
        ("exa mple.com", "is not a host pattern"),
        ("*", "would allow every host"),
        ("*example.com", "wildcard"),
        ("foo.*.com", "wildcard"),
        ("*.*.com", "wildcard"),
        ("**.com", "wildcard"),
        ("*.", "would allow every host"),
        ("a..b", "empty label"),
        (".example.com", "empty label"),
        ("-a.com", "starts or ends with '-'"),
        ("exämple.com", "xn--"),
        ("10.1", "not a dotted IPv4"),
        ("2130706433", "not a dotted IPv4"),
        ("*.1.2.3.4", "not a dotted IPv4"),
        ("1.2.3.256", "not a dotted IPv4"),
        ("[example.com]", "not allowed in a host name"),
        ("", "empty"),
    ] {
        for (wrap, path) in [
            (
                "{ \"browse\": {\n \"allow\": [\"ok.com\", PAT] } }",
                "profiles.p.browse.allow[1]",
            ),
            (
                "{ \"browse\": {\n \"deny\": [\"ok.com\", PAT] } }",
                "profiles.p.browse.deny[1]",
            ),
            (
                "{ \"run\": {\n \"network\": [\"ok.com\", PAT] } }",
                "profiles.p.run.network[1]",
            ),
        ] {
            let quoted = serde_json::to_string(pattern).unwrap();
            let text = one(&wrap.replace("PAT", &quoted));
            assert_error_at(&text, &format!("{quoted}]"), path, reason);
        }
    }
    let long_label = format!("{}.com", "a".repeat(64));
    let e = fail(&one(&format!(
        "{{ \"browse\": {{ \"allow\": [\"{long_label}\"] }} }}"
    )));
    assert!(e.reason.contains("longer than 63"), "{e}");
}

#[test]
fn good_host_patterns_are_normalised() {
    let p = profile(
        "{ \"browse\": { \"allow\": [\"Example.COM.\", \"*.Wiki.org\", \"10.0.0.1\", \"[::1]\", \
         \"::2\", \"*.internal\", \"under_score.example\"] } }",
    );
    let shown: Vec<String> = p.browse.allow.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "example.com",
            "*.wiki.org",
            "10.0.0.1",
            "[::1]",
            "[::2]",
            "*.internal",
            "under_score.example"
        ]
    );
    assert_eq!(p.browse.allow[1], HostPattern::Suffix("wiki.org".into()));
}

#[test]
fn zero_rate_limits_are_errors() {
    for field in ["per_minute", "burst"] {
        let text = one(&format!("{{ \"rate_limit\": {{ \"{field}\": 0 }} }}"));
        assert_error_at(
            &text,
            "0 }",
            &format!("profiles.p.rate_limit.{field}"),
            "a rate limit of 0",
        );
    }
}

#[test]
fn zero_limits_are_errors() {
    for (section, field) in [
        ("run", "timeout_s"),
        ("run", "max_timeout_s"),
        ("run", "memory_mb"),
        ("run", "max_output_bytes"),
        ("run", "processes"),
        ("files", "max_bytes"),
    ] {
        let text = one(&format!("{{ \"{section}\": {{ \"{field}\": 0 }} }}"));
        let e = fail(&text);
        assert_eq!(e.path, format!("profiles.p.{section}.{field}"), "{e}");
        assert_eq!((e.line, e.column), pos(&text, "0 }"), "{e}");
    }
}

#[test]
fn run_network_rules_must_suit_the_bottle() {
    // Accepted for browse, refused for the bottle's egress proxy.
    let text = one("{ \"run\": {\n \"network\": [\"ok.com\", \"*.internal\"] } }");
    assert_error_at(
        &text,
        "\"*.internal\"",
        "profiles.p.run.network[1]",
        "top-level domain",
    );
    // A private-address exception for a host the run may not reach at all.
    let text =
        one("{ \"run\": { \"network\": [\"ok.com\"],\n \"network_private\": [\"other.com\"] } }");
    assert_error_at(
        &text,
        "\"other.com\"",
        "profiles.p.run.network_private[0]",
        "is not allowed by profiles.p.run.network",
    );
    let text = one("{ \"run\": { \"network_private\": [\"https://x\"] } }");
    assert_error_at(
        &text,
        "\"https://x\"",
        "profiles.p.run.network_private[0]",
        "not a host pattern",
    );
    let text = one("{ \"run\": { \"processes\": 40000 } }");
    assert_error_at(&text, "40000", "profiles.p.run.processes", "at most 32768");
    // Covered hosts and bare addresses are fine, and reach the limits.
    let p = profile(
        "{ \"run\": { \"network\": [\"*.Example.com\", \"127.0.0.1\"], \
         \"network_private\": [\"api.example.com\", \"127.0.0.1\", \"10.0.0.1\"], \
         \"processes\": 12 } }",
    );
    let limits = p.run_limits();
    assert_eq!(limits.network, ["*.example.com", "127.0.0.1"]);
    assert_eq!(
        limits.network_private,
        ["api.example.com", "127.0.0.1", "10.0.0.1"]
    );
    assert_eq!(limits.processes, 12);
}

#[test]
fn timeout_over_max_timeout_is_an_error() {
    let text = one("{ \"run\": {\n      \"timeout_s\": 200,\n      \"max_timeout_s\": 120 } }");
    assert_error_at(
        &text,
        "200",
        "profiles.p.run.timeout_s",
        "timeout_s (200) is larger than max_timeout_s (120)",
    );
    // The default timeout (30) against a smaller max: the error points at the
    // run section, since timeout_s is not written.
    let text = one("{ \"run\": { \"max_timeout_s\": 10 } }");
    assert_error_at(
        &text,
        "{ \"max_timeout_s\"",
        "profiles.p.run.timeout_s",
        "(30)",
    );
    // Equal is fine.
    let p = profile("{ \"run\": { \"timeout_s\": 10, \"max_timeout_s\": 10 } }");
    assert_eq!(p.run_limits().timeout_s, 10);
}

#[test]
fn bad_programs_are_errors() {
    for program in [
        "",
        "rm -rf",
        "bin/tool",
        "/usr/bin/",
        "..",
        ".",
        "a\tb",
        "python3 ",
    ] {
        let quoted = serde_json::to_string(program).unwrap();
        let text = one(&format!(
            "{{ \"run\": {{ \"programs\": [\"ls\", {quoted}] }} }}"
        ));
        assert_error_at(
            &text,
            &format!("{quoted}]"),
            "profiles.p.run.programs[1]",
            "is not a program name",
        );
    }
}

#[test]
fn bad_apps_are_errors() {
    for app in ["", " firefox", "firefox ", "/usr/bin/firefox"] {
        let quoted = serde_json::to_string(app).unwrap();
        let text = one(&format!("{{ \"apps\": [\"ok\", {quoted}] }}"));
        assert_error_at(
            &text,
            &format!("{quoted}]"),
            "profiles.p.apps[1]",
            "is not an app name",
        );
    }
}

#[test]
fn bad_profile_names_are_errors() {
    for name in ["my profile", "a.b", "", "ü"] {
        let quoted = serde_json::to_string(name).unwrap();
        let text = format!("{{ \"profiles\": {{\n  \"ok\": {{}},\n  {quoted}: {{}} }} }}");
        let e = fail(&text);
        assert_eq!(e.path, format!("profiles.{name}"), "{e}");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.reason.contains("may use only letters"), "{e}");
    }
}

#[test]
fn duplicate_keys_are_errors() {
    let text = "{ \"profiles\": {\n  \"p\": { \"intents\": [\"run\"] },\n  \"p\": {} } }";
    let e = fail(text);
    assert_eq!((e.line, e.column), (3, 3), "{e}");
    assert_eq!(e.path, "profiles.p");
    assert!(e.reason.contains("appears twice"), "{e}");
    // Duplicate struct fields are caught by serde.
    let e = fail(&one("{ \"approver\": false, \"approver\": true }"));
    assert!(e.reason.contains("duplicate field"), "{e}");
}

#[test]
fn the_first_problem_in_the_file_is_reported() {
    // "b" comes first in the file though "a" sorts first.
    let text = "{ \"profiles\": {\n  \"b\": { \"intents\": [\"nope\"] },\n  \"a\": { \"apps\": [\"\"] } } }";
    let e = fail(text);
    assert_eq!(e.path, "profiles.b.intents[0]");
    assert_eq!(e.line, 2);
}

#[test]
fn columns_count_characters() {
    let text = "{ \"profiles\": { \"p\": { \"apps\": [\"überall\"], \"intents\": [\"x\"] } } }";
    let e = fail(text);
    assert_eq!((e.line, e.column), pos(text, "\"x\""));
}

#[test]
fn load_reads_files_and_reports_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let e = Policy::load(&missing).unwrap_err();
    assert_eq!(e.line, 0);
    assert_eq!(e.source, missing.display().to_string());
    assert!(e.reason.contains("cannot read the policy file"), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read", missing.display())),
        "{e}"
    );

    let good = dir.path().join("good.json");
    std::fs::write(&good, Policy::DEFAULT_JSON).unwrap();
    let policy = Policy::load(&good).unwrap();
    assert!(policy.profile("default").is_some());

    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        "{\n  \"profiles\": { \"p\": { \"intents\": [\"x\"] } }\n}",
    )
    .unwrap();
    let e = Policy::load(&bad).unwrap_err();
    assert!(
        e.to_string().starts_with(&format!("{}:2:", bad.display())),
        "{e}"
    );

    let binary = dir.path().join("binary.json");
    std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
    let e = Policy::load(&binary).unwrap_err();
    assert!(e.reason.contains("cannot read"), "{e}");
}

// ---------------------------------------------------------------- checks

#[test]
fn an_empty_profile_denies_everything() {
    let policy = parse("{ \"profiles\": { \"p\": {} } }");
    let p = policy.profile("p").unwrap();
    for intent in INTENTS {
        assert_eq!(denied_rule(p.check_intent(intent)), "profiles.p.intents");
    }
    assert_eq!(denied_rule(p.check_app("firefox")), "profiles.p.apps");
    assert_eq!(
        denied_rule(p.check_host("example.com")),
        "profiles.p.browse.allow"
    );
    assert_eq!(
        denied_rule(p.check_path("a.txt", Access::Read)),
        "profiles.p.files.read"
    );
    assert_eq!(
        denied_rule(p.check_path("a.txt", Access::Write)),
        "profiles.p.files.write"
    );
    assert_eq!(
        denied_rule(p.check_program("echo")),
        "profiles.p.run.programs"
    );
    assert!(p.caps().is_empty());
    for risk in [Risk::Low, Risk::Medium, Risk::High] {
        assert!(p.needs_approval(risk));
    }
    assert!(!p.is_approver());
    assert_eq!(
        p.rate_limit(),
        RateLimit {
            per_minute: 600,
            burst: 100
        }
    );
    assert_eq!(
        p.run_limits(),
        RunLimits {
            timeout_s: 30,
            max_timeout_s: 300,
            memory_mb: 1024,
            max_output_bytes: 1024 * 1024,
            processes: 256,
            network: vec![],
            network_private: vec![],
        }
    );
    assert!(p.check_file_size(10 * 1024 * 1024).is_ok());
    assert!(p.check_file_size(10 * 1024 * 1024 + 1).is_err());
    // No profiles at all is a valid policy that knows no one.
    let empty = parse("{}");
    assert_eq!(empty.profile_names().count(), 0);
    assert!(empty.profile("default").is_none());
}

#[test]
fn intents_are_checked() {
    let p = profile("{ \"intents\": [\"screenshot\", \"run\"] }");
    assert!(p.check_intent("run").is_ok());
    let d = p.check_intent("browse").unwrap_err();
    assert_eq!(d.rule, "profiles.p.intents");
    assert!(
        d.reason.contains("add it to profiles.p.intents"),
        "{}",
        d.reason
    );
    let d = p.check_intent("RUN").unwrap_err();
    assert!(d.reason.contains("is not an intent"), "{}", d.reason);
    assert!(p.check_intent("").is_err());
}

#[test]
fn apps_match_by_exact_name_in_any_case() {
    let p = profile("{ \"apps\": [\"Firefox\", \"terminal\"] }");
    assert!(p.check_app("firefox").is_ok());
    assert!(p.check_app("FIREFOX").is_ok());
    assert!(p.check_app("Terminal").is_ok());
    for other in ["fire", "firefox-esr", "firefox ", "/usr/bin/firefox", ""] {
        assert_eq!(
            denied_rule(p.check_app(other)),
            "profiles.p.apps",
            "{other}"
        );
    }
}

#[test]
fn deny_wins_over_allow() {
    let p = profile(
        "{ \"browse\": { \"allow\": [\"*.example.com\", \"secret.example.com\"], \
         \"deny\": [\"other.net\", \"secret.example.com\", \"*.internal.example.com\"] } }",
    );
    assert!(p.check_host("www.example.com").is_ok());
    let d = p.check_host("secret.example.com").unwrap_err();
    assert_eq!(d.rule, "profiles.p.browse.deny[1]");
    assert!(d.reason.contains("\"secret.example.com\""), "{}", d.reason);
    assert_eq!(
        denied_rule(p.check_host("SECRET.Example.COM.")),
        "profiles.p.browse.deny[1]"
    );
    assert_eq!(
        denied_rule(p.check_host("a.internal.example.com")),
        "profiles.p.browse.deny[2]"
    );
    // The deny suffix does not cover its own domain, which the allow suffix covers.
    assert!(p.check_host("internal.example.com").is_ok());
}

#[test]
fn suffix_patterns_match_only_hosts_below_the_domain() {
    let p = profile("{ \"browse\": { \"allow\": [\"*.example.com\", \"exact.org\"] } }");
    for ok in [
        "www.example.com",
        "a.b.example.com",
        "WWW.EXAMPLE.COM",
        "www.example.com.",
        "exact.org",
        "EXACT.ORG.",
    ] {
        assert!(p.check_host(ok).is_ok(), "{ok} should be allowed");
    }
    for (no, rule) in [
        ("example.com", "profiles.p.browse.allow"),
        ("evil-example.com", "profiles.p.browse.allow"),
        ("xexample.com", "profiles.p.browse.allow"),
        ("example.com.evil.net", "profiles.p.browse.allow"),
        ("www.example.co", "profiles.p.browse.allow"),
        ("www.exact.org", "profiles.p.browse.allow"),
        ("www.example.com..", "profiles.p.browse"),
        (".example.com", "profiles.p.browse"),
        ("", "profiles.p.browse"),
        ("www.example.com:443", "profiles.p.browse"),
        ("user@www.example.com", "profiles.p.browse"),
    ] {
        assert_eq!(denied_rule(p.check_host(no)), rule, "{no}");
    }
}

#[test]
fn ip_hosts_match_only_listed_addresses() {
    let p = profile(
        "{ \"browse\": { \"allow\": [\"10.0.0.1\", \"[::1]\", \"*.example.com\", \"1.example.com\"] } }",
    );
    assert!(p.check_host("10.0.0.1").is_ok());
    assert!(p.check_host("[::1]").is_ok());
    assert!(p.check_host("::1").is_ok());
    assert!(p.check_host("0:0:0:0:0:0:0:1").is_ok());
    for no in [
        "10.0.0.2",
        "127.0.0.1",
        "[::2]",
        "167772161",
        "10.1",
        "0x0a.0.0.1",
    ] {
        assert!(p.check_host(no).is_err(), "{no} should be denied");
    }
}

#[test]
fn path_globs_respect_separators() {
    let p = profile(
        "{ \"files\": { \"read\": [\"**\"], \"write\": [\"notes/**\", \"*.md\", \"docs/**/*.txt\"] } }",
    );
    for ok in [
        "a.md",
        "notes/x",
        "notes/a/b/c.bin",
        "docs/a.txt",
        "docs/x/y/a.txt",
    ] {
        assert!(
            p.check_path(ok, Access::Write).is_ok(),
            "{ok} should be writable"
        );
    }
    for no in [
        "a/b.md",
        "notesx/a",
        "a.txt",
        "docs/a.md",
        "Notes/x",
        "A.MD",
    ] {
        assert_eq!(
            denied_rule(p.check_path(no, Access::Write)),
            "profiles.p.files.write",
            "{no}"
        );
    }
    for ok in ["a", "deep/er/path.bin", ".hidden"] {
        assert!(
            p.check_path(ok, Access::Read).is_ok(),
            "{ok} should be readable"
        );
    }
    for no in ["/etc/passwd", "../x", "a/../../x", "a/..", ""] {
        assert!(
            p.check_path(no, Access::Read).is_err(),
            "{no} should be refused"
        );
        assert!(
            p.check_path(no, Access::Write).is_err(),
            "{no} should be refused"
        );
    }
    let d = p.check_path("a/b.md", Access::Write).unwrap_err();
    assert!(d.reason.starts_with("writing \"a/b.md\""), "{}", d.reason);

    let deep = profile("{ \"files\": { \"write\": [\"**/*.md\"] } }");
    assert!(deep.check_path("a/b.md", Access::Write).is_ok());
    assert!(deep.check_path("b.md", Access::Write).is_ok());
    // Write globs do not grant reading.
    assert!(deep.check_path("b.md", Access::Read).is_err());
}

#[test]
fn programs_match_exactly() {
    let p = profile("{ \"run\": { \"programs\": [\"echo\", \"/usr/bin/python3\"] } }");
    assert!(p.check_program("echo").is_ok());
    assert!(p.check_program("/usr/bin/python3").is_ok());
    let d = p.check_program("/bin/echo").unwrap_err();
    assert_eq!(d.rule, "profiles.p.run.programs");
    assert!(d.reason.contains("bare name (\"echo\")"), "{}", d.reason);
    for no in [
        "python3",
        "./echo",
        "ECHO",
        "echo ",
        "",
        "/usr/local/bin/python3",
        "bin/echo",
    ] {
        assert!(p.check_program(no).is_err(), "{no:?} should be denied");
    }
}

#[test]
fn file_size_cap() {
    let p = profile("{ \"files\": { \"max_bytes\": 100 } }");
    assert!(p.check_file_size(0).is_ok());
    assert!(p.check_file_size(100).is_ok());
    let d = p.check_file_size(101).unwrap_err();
    assert_eq!(d.rule, "profiles.p.files.max_bytes");
    assert!(
        d.reason.contains("101 bytes is over the limit of 100"),
        "{}",
        d.reason
    );
}

#[test]
fn limits_approval_caps_and_rate() {
    let p = profile(
        "{ \"intents\": [\"screenshot\", \"open_app\", \"browse\", \"edit_file\", \"run\", \"task\"],\n\
         \"files\": { \"read\": [\"**\"] },\n\
         \"run\": { \"timeout_s\": 5, \"max_timeout_s\": 60, \"memory_mb\": 256, \
         \"max_output_bytes\": 4096, \"network\": [\"PyPI.org\", \"*.pythonhosted.org\"] },\n\
         \"auto_approve\": [\"low\", \"medium\"],\n\
         \"rate_limit\": { \"per_minute\": 60 },\n\
         \"approver\": true }",
    );
    assert_eq!(
        p.run_limits(),
        RunLimits {
            timeout_s: 5,
            max_timeout_s: 60,
            memory_mb: 256,
            max_output_bytes: 4096,
            processes: 256,
            network: vec!["pypi.org".into(), "*.pythonhosted.org".into()],
            network_private: vec![],
        }
    );
    assert!(!p.needs_approval(Risk::Low));
    assert!(!p.needs_approval(Risk::Medium));
    assert!(p.needs_approval(Risk::High));
    // No write globs: no fs.write.
    assert_eq!(
        p.caps(),
        [
            "screenshot",
            "app.open",
            "browser",
            "fs.read",
            "shell",
            "agent"
        ]
    );
    assert_eq!(
        p.rate_limit(),
        RateLimit {
            per_minute: 60,
            burst: 100
        }
    );
    assert!(p.is_approver());

    let files = profile(
        "{ \"intents\": [\"edit_file\"], \"files\": { \"read\": [\"a\"], \"write\": [\"a\"] } }",
    );
    assert_eq!(files.caps(), ["fs.read", "fs.write"]);
    let no_edit = profile(
        "{ \"intents\": [\"run\"], \"files\": { \"read\": [\"**\"], \"write\": [\"**\"] } }",
    );
    assert_eq!(no_edit.caps(), ["shell"]);
}

// ---------------------------------------------------------------- the defaults

#[test]
fn default_json_parses_and_denies_what_it_should() {
    let policy = Policy::from_json(Policy::DEFAULT_JSON, "built-in").unwrap();
    assert_eq!(
        policy.profile_names().collect::<Vec<_>>(),
        ["admin", "default"]
    );
    let d = policy.profile("default").unwrap();
    let admin = policy.profile("admin").unwrap();
    assert!(!d.is_approver());
    assert!(admin.is_approver());
    for p in [d, admin] {
        assert_eq!(
            p.caps(),
            [
                "screenshot",
                "app.open",
                "browser",
                "fs.read",
                "fs.write",
                "shell",
                "agent"
            ]
        );
        assert!(p.check_intent("task").is_ok());
        assert!(p.check_app("chromium").is_ok());
        assert!(p.check_app("xterm").is_err());
        for ok in [
            "example.com",
            "en.wikipedia.org",
            "wikipedia.org",
            "duckduckgo.com",
        ] {
            assert!(p.check_host(ok).is_ok(), "{ok}");
        }
        for no in [
            "evil.com",
            "www.example.com",
            "127.0.0.1",
            "localhost",
            "169.254.169.254",
        ] {
            assert!(p.check_host(no).is_err(), "{no}");
        }
        assert!(p.check_path("notes/a.md", Access::Write).is_ok());
        assert!(p.check_path("../etc/passwd", Access::Read).is_err());
        assert!(p.check_file_size(10 * 1024 * 1024).is_ok());
        assert!(p.check_file_size(10 * 1024 * 1024 + 1).is_err());
        for ok in ["echo", "ls", "cat", "wc", "head", "tail", "grep", "python3"] {
            assert!(p.check_program(ok).is_ok(), "{ok}");
        }
        for no in ["rm", "sh", "bash", "/bin/echo", "curl", "sudo"] {
            assert!(p.check_program(no).is_err(), "{no}");
        }
        for risk in [Risk::Low, Risk::Medium, Risk::High] {
            assert!(p.needs_approval(risk));
        }
        assert!(p.run_limits().network.is_empty());
    }
}

#[test]
fn shipped_config_equals_default_json() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/policy.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        Policy::DEFAULT_JSON,
        "{} drifted from Policy::DEFAULT_JSON",
        path.display()
    );
}

#[test]
fn documented_example_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/policy.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc
        .find("```json\n")
        .expect("docs/policy.md has a json block")
        + 8;
    let len = doc[start..].find("```").unwrap();
    let policy = Policy::from_json(&doc[start..start + len], "docs/policy.md").unwrap();
    let p = policy.profile("default").unwrap();
    assert!(p.check_host("www.wikipedia.org").is_ok());
    assert!(p.check_host("x.internal").is_err());
}
