//! The bottle's policy file: every refusal at load, secret reading and custody (no value in
//! Debug or errors), placeholder shape, the shipped profiles.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use bytebot_bottle::policy::{
    HostDecision, HostPattern, Policy, PolicyError, ResolvedSecrets, SecretError, placeholder_for,
};

const KEY: &str = "sk-ant-api03-REALSECRETvalue0123456789abcdefXYZ";

fn invalid(json: &str) -> (String, String) {
    match Policy::from_json(json) {
        Err(PolicyError::Invalid { field, reason, .. }) => (field, reason),
        other => panic!("expected a validation refusal, got {other:?}"),
    }
}

fn parse_error(json: &str) -> (usize, usize, String, String) {
    match Policy::from_json(json) {
        Err(PolicyError::Parse {
            line,
            column,
            field,
            message,
            ..
        }) => (line, column, field, message),
        other => panic!("expected a parse refusal, got {other:?}"),
    }
}

#[test]
fn unknown_field_is_refused_with_line_column_and_field() {
    let json = "{\n  \"network\": {\n    \"alow\": [\"example.com\"]\n  }\n}";
    let (line, column, field, message) = parse_error(json);
    assert_eq!(line, 3);
    assert!(column > 4, "column {column}");
    assert!(field.starts_with("network"), "field {field}");
    assert!(message.contains("unknown field `alow`"), "{message}");
    let shown = Policy::from_json(json).unwrap_err().to_string();
    assert!(shown.contains("line 3"), "{shown}");

    let (line, _, field, message) = parse_error("{\"limits\": {\"wall_s\": 5, \"cpu\": 1}}");
    assert_eq!(line, 1);
    assert!(field.starts_with("limits"), "{field}");
    assert!(message.contains("unknown field `cpu`"), "{message}");
    let (_, _, _, message) = parse_error("{\"secret\": []}");
    assert!(message.contains("unknown field `secret`"), "{message}");
}

#[test]
fn bare_star_and_malformed_patterns_are_refused() {
    for bad in ["*", "*.", "", " ", "*.com"] {
        let json = format!("{{\"network\": {{\"allow\": [\"{bad}\"]}}}}");
        let (_, _, field, message) = parse_error(&json);
        assert_eq!(field, "network.allow[0]", "{bad:?}");
        assert!(
            message.contains("every host")
                || message.contains("empty")
                || message.contains("top-level"),
            "{bad:?}: {message}"
        );
    }
    for bad in [
        "https://example.com",
        "example.com:443",
        "example.com/path",
        "ex*ample.com",
        "*.*.example.com",
        "exa mple.com",
        "-bad.example.com",
        "a..b",
        "10.1",
    ] {
        let json = format!("{{\"network\": {{\"deny\": [\"{bad}\"]}}}}");
        let (_, _, field, message) = parse_error(&json);
        assert_eq!(field, "network.deny[0]", "{bad:?}");
        assert!(message.contains(bad), "{bad:?}: {message}");
    }
}

#[test]
fn host_patterns_match_as_documented() {
    let p = |s: &str| HostPattern::parse(s).unwrap();
    assert!(p("api.example.com").matches("api.example.com"));
    assert!(!p("api.example.com").matches("x.api.example.com"));
    assert!(p("*.example.com").matches("a.example.com"));
    assert!(p("*.example.com").matches("a.b.example.com"));
    assert!(!p("*.example.com").matches("example.com"));
    assert!(!p("*.example.com").matches("evil-example.com"));
    assert!(p("API.Example.COM.").matches("api.example.com"));
    assert!(p("[::1]").matches("::1"));
    assert!(p("10.0.0.1").matches("10.0.0.1"));
    assert!(!p("10.0.0.1").matches("10.0.0.2"));

    let policy = Policy::from_json(
        r#"{"network": {"allow": ["*.example.com", "example.org"], "deny": ["bad.example.com"]}}"#,
    )
    .unwrap();
    assert!(matches!(
        policy.network.decide("good.example.com"),
        HostDecision::Allow(_)
    ));
    assert!(matches!(
        policy.network.decide("bad.example.com"),
        HostDecision::Deny(_)
    ));
    assert!(matches!(
        policy.network.decide("example.com"),
        HostDecision::NotAllowed
    ));
    assert!(matches!(
        policy.network.decide("example.net"),
        HostDecision::NotAllowed
    ));
}

#[test]
fn secret_rules_are_enforced_at_load() {
    let (field, reason) = invalid(
        r#"{"network": {"allow": ["api.example.com"]},
            "secrets": [{"name": "K", "hosts": ["api.example.com"]}]}"#,
    );
    assert_eq!(field, "secrets[0]");
    assert!(reason.contains("neither"), "{reason}");

    let (field, reason) = invalid(
        r#"{"network": {"allow": ["api.example.com"]},
            "secrets": [{"name": "K", "hosts": ["api.example.com"], "env": "K", "file": "/k"}]}"#,
    );
    assert_eq!(field, "secrets[0]");
    assert!(reason.contains("both"), "{reason}");

    let (field, reason) = invalid(
        r#"{"network": {"allow": ["api.example.com"]},
            "secrets": [{"name": "K", "hosts": ["api.other.com"], "env": "K"}]}"#,
    );
    assert_eq!(field, "secrets[0].hosts[0]");
    assert!(
        reason.contains("api.other.com") && reason.contains("network.allow"),
        "{reason}"
    );

    let (field, reason) = invalid(
        r#"{"network": {"allow": ["*.example.com"], "deny": ["api.example.com"]},
            "secrets": [{"name": "K", "hosts": ["api.example.com"], "env": "K"}]}"#,
    );
    assert_eq!(field, "secrets[0].hosts[0]");
    assert!(reason.contains("deny"), "{reason}");

    // A suffix binding must be covered by an allowed suffix.
    let (field, _) = invalid(
        r#"{"network": {"allow": ["api.example.com"]},
            "secrets": [{"name": "K", "hosts": ["*.example.com"], "env": "K"}]}"#,
    );
    assert_eq!(field, "secrets[0].hosts[0]");
    Policy::from_json(
        r#"{"network": {"allow": ["*.example.com"]},
            "secrets": [{"name": "K", "hosts": ["*.api.example.com", "x.example.com"], "env": "K"}]}"#,
    )
    .unwrap();

    let (field, reason) = invalid(
        r#"{"network": {"allow": ["a.example.com"]},
            "secrets": [{"name": "K", "hosts": ["a.example.com"], "env": "A"},
                        {"name": "K", "hosts": ["a.example.com"], "env": "B"}]}"#,
    );
    assert_eq!(field, "secrets[1].name");
    assert!(reason.contains("twice"), "{reason}");

    let (field, _) = invalid(
        r#"{"network": {"allow": ["a.example.com"]},
            "secrets": [{"name": "BAD-NAME", "hosts": ["a.example.com"], "env": "A"}]}"#,
    );
    assert_eq!(field, "secrets[0].name");

    let (field, _) = invalid(
        r#"{"network": {"allow": ["a.example.com"]},
            "secrets": [{"name": "K", "hosts": ["a.example.com"], "file": "relative/key"}]}"#,
    );
    assert_eq!(field, "secrets[0].file");

    // Passing the secret's variable through would hand the real value in.
    let (field, reason) = invalid(
        r#"{"network": {"allow": ["a.example.com"]},
            "secrets": [{"name": "K", "hosts": ["a.example.com"], "env": "REAL_K"}],
            "env": {"pass": ["REAL_K"]}}"#,
    );
    assert_eq!(field, "env.pass[0]");
    assert!(reason.contains("sandbox"), "{reason}");
}

#[test]
fn limits_and_paths_are_checked() {
    let (field, reason) = invalid(r#"{"limits": {"wall_s": 0}}"#);
    assert_eq!(field, "limits.wall_s");
    assert!(reason.contains("positive"), "{reason}");
    let (field, _) = invalid(r#"{"limits": {"memory_mb": 99999999999}}"#);
    assert_eq!(field, "limits.memory_mb");
    let (field, _) = invalid(r#"{"limits": {"processes": 0}}"#);
    assert_eq!(field, "limits.processes");
    let (field, _) = invalid(r#"{"limits": {"output_bytes": 0}}"#);
    assert_eq!(field, "limits.output_bytes");
    let (field, _) = invalid(r#"{"filesystem": {"read_only": ["opt/tools"]}}"#);
    assert_eq!(field, "filesystem.read_only[0]");
    let (field, _) = invalid(r#"{"filesystem": {"read_only": ["/opt/../etc"]}}"#);
    assert_eq!(field, "filesystem.read_only[0]");
    let (field, _) = invalid(r#"{"network": {"allow_private": ["internal.example.com"]}}"#);
    assert_eq!(field, "network.allow_private[0]");
    // Defaults fill what is left out.
    let p = Policy::from_json(r#"{"limits": {"wall_s": 30}}"#).unwrap();
    assert_eq!(p.limits.wall_s, 30);
    assert_eq!(p.limits.memory_mb, 2048);
}

fn file_policy(path: &std::path::Path) -> Policy {
    Policy::from_json(&format!(
        r#"{{"network": {{"allow": ["api.provider.test"]}},
            "secrets": [{{"name": "PROVIDER_KEY", "hosts": ["api.provider.test"], "file": "{}"}}]}}"#,
        path.display()
    ))
    .unwrap()
}

#[test]
fn secret_file_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let policy = file_policy(&path);
    let err = ResolvedSecrets::resolve(&policy).unwrap_err();
    assert!(
        matches!(err, SecretError::FileMode { mode: 0o644, .. }),
        "{err:?}"
    );
    let shown = err.to_string();
    assert!(
        shown.contains(&format!("chmod 600 {}", path.display())),
        "{shown}"
    );
    assert!(!shown.contains(KEY));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let secrets = ResolvedSecrets::resolve(&policy).unwrap();
    let s = secrets.iter().next().unwrap();
    assert_eq!(s.value.expose(), KEY, "the trailing newline is trimmed");
    assert_eq!(s.name, "PROVIDER_KEY");

    // A missing file is an error unless the secret is optional.
    let gone = dir.path().join("missing");
    assert!(matches!(
        ResolvedSecrets::resolve(&file_policy(&gone)).unwrap_err(),
        SecretError::FileRead { .. }
    ));
}

fn env_policy(optional: bool) -> Policy {
    Policy::from_json(&format!(
        r#"{{"network": {{"allow": ["api.provider.test", "other.test"]}},
            "secrets": [{{"name": "PROVIDER_KEY", "hosts": ["api.provider.test"], "env": "HOST_PROVIDER_KEY", "optional": {optional}}}]}}"#
    ))
    .unwrap()
}

#[test]
fn env_secret_missing_is_refused_unless_optional() {
    let err = ResolvedSecrets::resolve_with(&env_policy(false), |_| None).unwrap_err();
    assert!(matches!(err, SecretError::EnvMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("HOST_PROVIDER_KEY"));
    let none = ResolvedSecrets::resolve_with(&env_policy(true), |_| None).unwrap();
    assert!(none.is_empty());
    assert_eq!(none.skipped(), ["PROVIDER_KEY".to_owned()]);
}

#[test]
fn bad_secret_values_are_refused_without_showing_them() {
    for bad in [
        "short-key",
        "has space in the middle ok",
        "tab\there-0123456789",
    ] {
        let err = ResolvedSecrets::resolve_with(&env_policy(false), |_| Some(bad.to_owned()))
            .unwrap_err();
        assert!(
            matches!(err, SecretError::BadValue { .. }),
            "{bad:?}: {err:?}"
        );
        assert!(!err.to_string().contains(bad), "{err}");
        assert!(!format!("{err:?}").contains(bad), "{err:?}");
    }
}

#[test]
fn debug_never_prints_a_value() {
    let secrets = ResolvedSecrets::resolve_with(&env_policy(false), |v| {
        (v == "HOST_PROVIDER_KEY").then(|| KEY.to_owned())
    })
    .unwrap();
    let s = secrets.iter().next().unwrap();
    assert_eq!(s.value.expose(), KEY);
    for shown in [
        format!("{secrets:?}"),
        format!("{secrets:#?}"),
        format!("{s:?}"),
        format!("{:?}", s.value),
    ] {
        assert!(!shown.contains(KEY), "{shown}");
        assert!(!shown.contains("REALSECRET"), "{shown}");
    }
    assert!(format!("{s:?}").contains("PROVIDER_KEY"));
    assert_eq!(
        secrets.env_pairs(),
        vec![("PROVIDER_KEY".to_owned(), s.placeholder.clone())]
    );
    assert_eq!(secrets.for_host("api.provider.test").count(), 1);
    assert_eq!(secrets.for_host("other.test").count(), 0);
}

#[test]
fn placeholders_keep_the_shape_and_differ_per_run() {
    let mut rng = rand::rng();
    let cases = [
        (
            "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            "sk-ant-api03-",
        ),
        ("sk-proj-abcdefghijklmnopqrstuvwxyz0123456789", "sk-proj-"),
        ("sk-abcdefghijklmnopqrstuvwxyz0123456789abcd", "sk-"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_"),
        ("AIzaSyAbcdefghijklmnopqrstuvwxyz0123456", "AIz"),
        ("0123456789abcdef0123456789abcdef", "012"),
    ];
    for (secret, prefix) in cases {
        let a = placeholder_for(secret, &mut rng);
        let b = placeholder_for(secret, &mut rng);
        assert!(a.starts_with(prefix), "{secret} -> {a}");
        assert_eq!(a.len(), secret.len());
        assert_ne!(a, secret);
        assert_ne!(a, b, "two runs share a placeholder");
        let rest = &a[prefix.len()..];
        assert!(rest.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(rest, &secret[prefix.len()..]);
    }
    // A dash late in a short secret must not leave fewer than 8 random characters.
    let short = "abcdefghij-xy";
    let p = placeholder_for(short, &mut rng);
    assert_eq!(p.len(), short.len());
    assert!(p.starts_with("abc"), "{p}");
    assert!(p[3..].bytes().all(|c| c.is_ascii_alphanumeric()), "{p}");

    // Resolving twice (two runs) gives two placeholders of the same shape.
    let get = || {
        ResolvedSecrets::resolve_with(&env_policy(false), |_| Some(KEY.to_owned()))
            .unwrap()
            .iter()
            .next()
            .unwrap()
            .placeholder
            .clone()
    };
    let (one, two) = (get(), get());
    assert_ne!(one, two);
    assert!(one.starts_with("sk-ant-api03-") && one.len() == KEY.len());
}

#[test]
fn shipped_profiles_load() {
    let default = Policy::profile("default").unwrap();
    assert!(default.network.allow.is_empty());
    assert!(default.secrets.is_empty());
    let coding = Policy::profile("coding-agent").unwrap();
    for host in [
        "api.anthropic.com",
        "api.openai.com",
        "registry.npmjs.org",
        "pypi.org",
        "files.pythonhosted.org",
        "crates.io",
        "static.crates.io",
        "index.crates.io",
        "github.com",
        "raw.githubusercontent.com",
    ] {
        assert!(
            matches!(coding.network.decide(host), HostDecision::Allow(_)),
            "{host}"
        );
    }
    assert!(matches!(
        coding.network.decide("example.com"),
        HostDecision::NotAllowed
    ));
    let names: Vec<_> = coding.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"]);
    // The shipped files themselves, as a person would pass them with --policy.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/bottle");
    for name in ["default.json", "coding-agent.json"] {
        Policy::load(&dir.join(name)).unwrap();
    }
    assert!(matches!(
        Policy::profile("nope"),
        Err(PolicyError::UnknownProfile(_))
    ));
    // With only the Anthropic key set, the OpenAI one is skipped, not an error.
    let secrets = ResolvedSecrets::resolve_with(&coding, |v| {
        (v == "ANTHROPIC_API_KEY").then(|| KEY.to_owned())
    })
    .unwrap();
    assert_eq!(secrets.iter().count(), 1);
    assert_eq!(secrets.skipped(), ["OPENAI_API_KEY".to_owned()]);
}

#[test]
fn digest_is_stable_and_ignores_layout() {
    let a = Policy::from_json(r#"{"network": {"allow": ["Example.com"]}}"#).unwrap();
    let b = Policy::from_json("{\n  \"network\" : { \"allow\" : [ \"example.com\" ] }\n}").unwrap();
    let c = Policy::from_json(r#"{"network": {"allow": ["example.org"]}}"#).unwrap();
    assert_eq!(a.digest(), b.digest());
    assert_ne!(a.digest(), c.digest());
    assert!(a.digest().starts_with("sha256:") && a.digest().len() == 7 + 64);
}
