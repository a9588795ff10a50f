//! Provenance: workspace digests, signing, offline verification and tamper detection, on real
//! files in temporary folders.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytebot_bottle::audit::{DeniedAttempts, EgressSummary, HostTraffic};
use bytebot_bottle::provenance::workspace::{
    self, Change, Entry, SnapshotError, SnapshotLimits, SpecialKind,
};
use bytebot_bottle::provenance::{
    self as prov, BottleRun, Envelope, MismatchKind, Outcome, SigningKey, Statement, VerifyError,
    VerifyingKey, WorkspaceRecord,
};
use chrono::{TimeZone, Utc};

/// A value that must never appear in a record or report (the real secret behind a placeholder).
const SECRET_VALUE: &str = "sk-ant-api03-REALsecretVALUEdoNOTleak0123456789";

fn seeded(n: u8) -> SigningKey {
    SigningKey::from_seed([n; 32])
}

fn predicate(workspace: WorkspaceRecord) -> BottleRun {
    BottleRun {
        producer: prov::PRODUCER.to_owned(),
        bottle_id: "0193a5c1-run".to_owned(),
        label: Some("build docs".to_owned()),
        backend: "bwrap".to_owned(),
        argv: vec![
            "python3".to_owned(),
            "build.py".to_owned(),
            "--title".to_owned(),
            "my docs".to_owned(),
        ],
        policy_sha256: "ab".repeat(32),
        workspace,
        started_at: Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap(),
        ended_at: Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 42).unwrap(),
        outcome: Outcome {
            exit_code: Some(3),
            signal: None,
            timed_out: false,
            output_truncated: true,
        },
        egress: EgressSummary {
            hosts: vec![HostTraffic {
                host: "api.anthropic.com".to_owned(),
                port: 443,
                requests: 4,
                bytes_up: 2048,
                bytes_down: 5 * 1024 * 1024,
            }],
            denied: vec![DeniedAttempts {
                host: "exfil.attacker.example".to_owned(),
                rule: "default deny".to_owned(),
                count: 2,
            }],
            secrets_used: vec!["ANTHROPIC_API_KEY".to_owned()],
        },
    }
}

/// A workspace, a run that changes it, and the signed statement: (tempdir, statement).
fn recorded_run() -> (tempfile::TempDir, Statement) {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    fs::write(ws.join("keep.txt"), "unchanged").unwrap();
    fs::write(ws.join("edit.txt"), "old").unwrap();
    fs::write(ws.join("gone.txt"), "bye").unwrap();
    let before = workspace::snapshot(ws).unwrap();
    fs::create_dir(ws.join("out")).unwrap();
    fs::write(ws.join("out/report.html"), "<h1>report</h1>").unwrap();
    fs::write(ws.join("edit.txt"), "new contents").unwrap();
    // The run saw the secret's placeholder; the file holds the real value only in this test,
    // to show file contents never reach the record.
    fs::write(ws.join("out/env.txt"), SECRET_VALUE).unwrap();
    fs::remove_file(ws.join("gone.txt")).unwrap();
    symlink("/etc/passwd", ws.join("passwd-link")).unwrap();
    let after = workspace::snapshot(ws).unwrap();
    let diff = workspace::diff(&before, &after);
    let statement = Statement::new(
        prov::subjects(&diff),
        predicate(WorkspaceRecord::new(&before, &after, &diff)),
    );
    (dir, statement)
}

fn signed_bytes(statement: &Statement, key: &SigningKey) -> Vec<u8> {
    prov::sign(statement, key)
        .unwrap()
        .to_json_line()
        .unwrap()
        .into_bytes()
}

fn envelope_of(bytes: &[u8]) -> Envelope {
    serde_json::from_slice(bytes).unwrap()
}

fn bytes_of(envelope: &Envelope) -> Vec<u8> {
    serde_json::to_vec(envelope).unwrap()
}

/// Decode the payload JSON, let `edit` change it, re-encode it (signature left as it was).
fn edit_payload(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut env = envelope_of(bytes);
    let mut statement: serde_json::Value =
        serde_json::from_slice(&STANDARD.decode(&env.payload).unwrap()).unwrap();
    edit(&mut statement);
    env.payload = STANDARD.encode(serde_json::to_vec(&statement).unwrap());
    bytes_of(&env)
}

#[test]
fn sign_write_verify_round_trip() {
    let (dir, statement) = recorded_run();
    let key = seeded(1);
    let runs = dir.path().join("state/runs");
    let file = prov::sign(&statement, &key)
        .unwrap()
        .write(&runs, "0193a5c1-run")
        .unwrap();
    assert_eq!(file, runs.join("0193a5c1-run.intoto.jsonl"));
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 1, "one envelope, one line");

    let run = prov::verify(text.as_bytes(), &key.verifying_key()).unwrap();
    assert_eq!(run.key_id, key.key_id());
    assert_eq!(run.predicate, statement.predicate);
    assert_eq!(run.subjects, statement.subject);
    let names: Vec<_> = run.subjects.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["edit.txt", "out/env.txt", "out/report.html"]);
    assert_eq!(run.predicate.workspace.removed, ["gone.txt"]);
    assert_eq!(run.predicate.workspace.links[0].target, "/etc/passwd");

    // The payload is a plain in-toto Statement v1 and the envelope a plain DSSE envelope.
    let env: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(env["payloadType"], "application/vnd.in-toto+json");
    assert_eq!(env["signatures"][0]["keyid"], key.key_id());
    let st: serde_json::Value =
        serde_json::from_slice(&STANDARD.decode(env["payload"].as_str().unwrap()).unwrap())
            .unwrap();
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(
        st["predicateType"],
        "https://bytebot-rs.dev/provenance/bottle-run/v1"
    );
    assert_eq!(st["subject"][0]["name"], "edit.txt");
    assert_eq!(
        st["subject"][0]["digest"]["sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"new contents"))
    );
    assert_eq!(st["predicate"]["started_at"], "2025-03-01T12:00:00Z");

    // A record is never overwritten.
    let again = prov::sign(&statement, &key)
        .unwrap()
        .write(&runs, "0193a5c1-run");
    assert!(again.is_err());
    assert!(
        prov::sign(&statement, &key)
            .unwrap()
            .write(&runs, "../escape")
            .is_err()
    );
}

#[test]
fn tampering_with_any_signed_part_fails() {
    let (_dir, statement) = recorded_run();
    let key = seeded(1);
    let public = key.verifying_key();
    let good = signed_bytes(&statement, &key);
    prov::verify(&good, &public).unwrap();

    // A byte of the statement (the exit code) changed.
    let exit = edit_payload(&good, |s| s["predicate"]["outcome"]["exit_code"] = 0.into());
    assert!(matches!(
        prov::verify(&exit, &public),
        Err(VerifyError::BadSignature { .. })
    ));

    // A raw byte of the payload's base64 changed.
    let mut env = envelope_of(&good);
    let mut b = env.payload.into_bytes();
    b[40] = if b[40] == b'A' { b'B' } else { b'A' };
    env.payload = String::from_utf8(b).unwrap();
    assert!(prov::verify(&bytes_of(&env), &public).is_err());

    // payloadType changed: refused outright, and it is inside the PAE anyway.
    let mut env = envelope_of(&good);
    env.payload_type = "application/json".to_owned();
    assert!(matches!(
        prov::verify(&bytes_of(&env), &public),
        Err(VerifyError::WrongPayloadType(_))
    ));

    // One byte of the signature.
    let mut env = envelope_of(&good);
    let mut sig = STANDARD.decode(&env.signatures[0].sig).unwrap();
    sig[10] ^= 0x01;
    env.signatures[0].sig = STANDARD.encode(&sig);
    assert!(matches!(
        prov::verify(&bytes_of(&env), &public),
        Err(VerifyError::BadSignature { .. })
    ));

    // A subject's digest edited inside a re-encoded payload (hiding what was written).
    let subject = edit_payload(&good, |s| {
        s["subject"][0]["digest"]["sha256"] = "0".repeat(64).into();
    });
    assert!(matches!(
        prov::verify(&subject, &public),
        Err(VerifyError::BadSignature { .. })
    ));

    // A subject dropped (hiding a written file).
    let dropped = edit_payload(&good, |s| {
        s["subject"].as_array_mut().unwrap().remove(1);
    });
    assert!(prov::verify(&dropped, &public).is_err());

    // A field appended to the statement, unsigned.
    let appended = edit_payload(&good, |s| s["note"] = "all fine".into());
    assert!(matches!(
        prov::verify(&appended, &public),
        Err(VerifyError::BadSignature { .. })
    ));

    // A denied host removed from the egress summary.
    let cleaned = edit_payload(&good, |s| {
        s["predicate"]["egress"]["denied"] = serde_json::json!([]);
    });
    assert!(prov::verify(&cleaned, &public).is_err());

    // The signature removed.
    let mut env = envelope_of(&good);
    env.signatures.clear();
    assert!(matches!(
        prov::verify(&bytes_of(&env), &public),
        Err(VerifyError::NoSignatures)
    ));

    // A second envelope appended to the file.
    let mut twice = good.clone();
    twice.extend_from_slice(&good);
    assert!(matches!(
        prov::verify(&twice, &public),
        Err(VerifyError::SeveralEnvelopes(2))
    ));
    assert!(matches!(
        prov::verify(b"not json", &public),
        Err(VerifyError::NotAnEnvelope(_))
    ));
}

#[test]
fn keyid_and_envelope_extras_are_unsigned_hints() {
    let (_dir, statement) = recorded_run();
    let key = seeded(1);
    let public = key.verifying_key();
    let good = signed_bytes(&statement, &key);
    let expected = prov::verify(&good, &public).unwrap();

    // keyid naming another key: that signature is not tried, so the file fails.
    let mut env = envelope_of(&good);
    env.signatures[0].keyid = Some("f".repeat(64));
    let err = prov::verify(&bytes_of(&env), &public).unwrap_err();
    assert!(matches!(err, VerifyError::OtherKey { .. }), "{err}");
    assert!(err.to_string().contains("--key"));

    // keyid absent: DSSE treats it as empty, i.e. "try the key"; the signature still holds.
    let mut env = envelope_of(&good);
    env.signatures[0].keyid = None;
    assert_eq!(prov::verify(&bytes_of(&env), &public).unwrap(), expected);

    // An extra envelope field is ignored (DSSE) and never reaches the result.
    let mut value: serde_json::Value = serde_json::from_slice(&good).unwrap();
    value["statement"] = serde_json::json!({"predicate": {"argv": ["fake"]}});
    let run = prov::verify(&serde_json::to_vec(&value).unwrap(), &public).unwrap();
    assert_eq!(run, expected);

    // URL-safe base64 is accepted, as DSSE requires.
    let mut env = envelope_of(&good);
    let body = STANDARD.decode(&env.payload).unwrap();
    env.payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body);
    assert_eq!(prov::verify(&bytes_of(&env), &public).unwrap(), expected);
}

#[test]
fn wrong_key_fails_with_advice() {
    let (_dir, statement) = recorded_run();
    let good = signed_bytes(&statement, &seeded(1));
    let other = seeded(2).verifying_key();
    let err = prov::verify(&good, &other).unwrap_err();
    assert!(matches!(err, VerifyError::OtherKey { .. }), "{err}");
    assert!(err.to_string().contains(&seeded(1).key_id()));

    // Without the keyid hint the signature itself is checked, and fails.
    let mut env = envelope_of(&good);
    env.signatures[0].keyid = None;
    let err = prov::verify(&bytes_of(&env), &other).unwrap_err();
    assert!(matches!(err, VerifyError::BadSignature { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("changed after signing") && msg.contains("--key"),
        "{msg}"
    );

    // An attacker re-signing an edited statement with their own key does not pass either.
    let mut forged = statement;
    forged.predicate.egress.denied.clear();
    let forged = signed_bytes(&forged, &seeded(9));
    assert!(prov::verify(&forged, &seeded(1).verifying_key()).is_err());
}

#[test]
fn other_statement_and_predicate_types_are_refused() {
    let (_dir, mut statement) = recorded_run();
    let key = seeded(1);
    statement.predicate_type = "https://slsa.dev/provenance/v1".to_owned();
    let err = prov::verify(&signed_bytes(&statement, &key), &key.verifying_key()).unwrap_err();
    assert!(matches!(err, VerifyError::WrongPredicateType(_)), "{err}");

    statement.predicate_type = prov::PREDICATE_TYPE.to_owned();
    statement.statement_type = "https://in-toto.io/Statement/v0.1".to_owned();
    let err = prov::verify(&signed_bytes(&statement, &key), &key.verifying_key()).unwrap_err();
    assert!(matches!(err, VerifyError::WrongStatementType(_)), "{err}");

    statement.statement_type = prov::STATEMENT_TYPE.to_owned();
    statement.subject[0].digest.sha256 = "not-hex".to_owned();
    let err = prov::verify(&signed_bytes(&statement, &key), &key.verifying_key()).unwrap_err();
    assert!(matches!(err, VerifyError::BadSubject { .. }), "{err}");
}

#[test]
fn pae_matches_hand_computed_bytes() {
    // The DSSE specification's own example.
    assert_eq!(
        prov::pae("http://example.com/HelloWorld", b"hello world"),
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    );
    // Lengths are byte counts, not characters: `{"é":1}` is 7 characters, 8 bytes.
    assert_eq!(
        prov::pae(prov::PAYLOAD_TYPE, "{\"é\":1}".as_bytes()),
        "DSSEv1 28 application/vnd.in-toto+json 8 {\"é\":1}".as_bytes()
    );
    assert_eq!(prov::pae("", b""), b"DSSEv1 0  0 ");
}

#[test]
fn signature_is_over_the_pae() {
    // Sign the PAE independently with ed25519-dalek and compare (ed25519 is deterministic).
    use ed25519_dalek::Signer;
    let (_dir, statement) = recorded_run();
    let env = prov::sign(&statement, &seeded(7)).unwrap();
    let body = STANDARD.decode(&env.payload).unwrap();
    let dalek = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let expected = dalek.sign(&prov::pae(prov::PAYLOAD_TYPE, &body));
    assert_eq!(env.signatures[0].sig, STANDARD.encode(expected.to_bytes()));
    assert_eq!(
        env.signatures[0].keyid.as_deref(),
        Some(
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                dalek.verifying_key().as_bytes()
            ))
            .as_str()
        )
    );
}

#[test]
fn key_file_is_private_and_public_key_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys/provenance.key");
    let key = SigningKey::load_or_create(&path).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(dir.path().join("keys"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    // No temporary files left behind.
    let names: Vec<_> = fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // Second use loads the same key.
    let again = SigningKey::load_or_create(&path).unwrap();
    assert_eq!(again.key_id(), key.key_id());
    assert!(!format!("{again:?}").contains(&fs::read_to_string(&path).unwrap()[13..]));

    // The .pub file: one line, loadable, equal to the key's public half.
    let pub_path = prov::public_key_path(&path);
    assert_eq!(pub_path, dir.path().join("keys/provenance.key.pub"));
    let text = fs::read_to_string(&pub_path).unwrap();
    assert!(text.starts_with("ed25519 ") && text.ends_with('\n') && text.lines().count() == 1);
    let public = VerifyingKey::from_file(&pub_path).unwrap();
    assert_eq!(public, key.verifying_key());
    assert_eq!(public.to_string().parse::<VerifyingKey>().unwrap(), public);
    assert_eq!(public.key_id(), key.key_id());
    assert_eq!(
        public.key_id(),
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(public.to_bytes()))
    );

    // A deleted .pub is written again; a wrong one is corrected.
    fs::remove_file(&pub_path).unwrap();
    SigningKey::load_or_create(&path).unwrap();
    assert_eq!(VerifyingKey::from_file(&pub_path).unwrap(), public);
    fs::write(&pub_path, format!("{}\n", seeded(5).verifying_key())).unwrap();
    SigningKey::load_or_create(&path).unwrap();
    assert_eq!(VerifyingKey::from_file(&pub_path).unwrap(), public);

    // Bad .pub contents are explained.
    fs::write(&pub_path, "ssh-ed25519 AAAA\n").unwrap();
    let err = VerifyingKey::from_file(&pub_path).unwrap_err().to_string();
    assert!(err.contains("ed25519 <base64>"), "{err}");
    fs::write(
        &pub_path,
        format!("ed25519 {}\n", STANDARD.encode([1u8; 31])),
    )
    .unwrap();
    assert!(VerifyingKey::from_file(&pub_path).is_err());
    // A small-order point would accept forged signatures.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert!(VerifyingKey::from_bytes(&identity).is_err());
}

#[test]
fn readable_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("provenance.key");
    let key = SigningKey::load_or_create(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = SigningKey::load_or_create(&path).unwrap_err().to_string();
    assert!(
        err.contains("chmod 600") && err.contains(&path.display().to_string()),
        "{err}"
    );
    assert!(err.contains("0644"), "{err}");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    assert!(SigningKey::load(&path).is_err());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(SigningKey::load(&path).unwrap().key_id(), key.key_id());

    fs::write(&path, "garbage").unwrap();
    let err = SigningKey::load(&path).unwrap_err().to_string();
    assert!(err.contains("ed25519-seed"), "{err}");
}

#[test]
fn workspace_digest_is_deterministic_and_sensitive() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    // The same tree built in a different order in another folder.
    fs::create_dir_all(a.path().join("src/deep")).unwrap();
    fs::write(a.path().join("src/main.rs"), "fn main() {}").unwrap();
    fs::write(a.path().join("src/deep/x"), "x").unwrap();
    fs::write(a.path().join("README"), "hi").unwrap();
    symlink("src/main.rs", a.path().join("link")).unwrap();
    fs::write(b.path().join("README"), "hi").unwrap();
    symlink("src/main.rs", b.path().join("link")).unwrap();
    fs::create_dir_all(b.path().join("src/deep")).unwrap();
    fs::write(b.path().join("src/deep/x"), "x").unwrap();
    fs::write(b.path().join("src/main.rs"), "fn main() {}").unwrap();
    let base = workspace::snapshot(a.path()).unwrap().digest();
    assert_eq!(base.len(), 64);
    assert_eq!(workspace::snapshot(a.path()).unwrap().digest(), base);
    assert_eq!(workspace::snapshot(b.path()).unwrap().digest(), base);

    let ws = a.path();
    let mut seen = vec![base];
    let mut step = |what: &str, f: &dyn Fn()| {
        f();
        let d = workspace::snapshot(ws).unwrap().digest();
        assert!(!seen.contains(&d), "digest did not change after: {what}");
        seen.push(d);
    };
    step("file contents changed", &|| {
        fs::write(ws.join("src/main.rs"), "fn main() { }").unwrap()
    });
    step("file added", &|| fs::write(ws.join("new"), "").unwrap());
    step("file removed", &|| {
        fs::remove_file(ws.join("README")).unwrap()
    });
    step("symlink target changed", &|| {
        fs::remove_file(ws.join("link")).unwrap();
        symlink("src/deep/x", ws.join("link")).unwrap();
    });
    step("empty directory added", &|| {
        fs::create_dir(ws.join("empty")).unwrap()
    });
    step("execute bit set", &|| {
        fs::set_permissions(ws.join("new"), fs::Permissions::from_mode(0o755)).unwrap()
    });
    step("file renamed", &|| {
        fs::rename(ws.join("src/deep/x"), ws.join("src/deep/y")).unwrap()
    });
}

#[test]
fn changed_lists_exactly_added_and_modified_files() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    fs::write(ws.join("same"), "1").unwrap();
    fs::write(ws.join("mod"), "1").unwrap();
    fs::write(ws.join("chmod"), "1").unwrap();
    fs::write(ws.join("del"), "1").unwrap();
    fs::create_dir(ws.join("d")).unwrap();
    symlink("same", ws.join("was-link")).unwrap();
    let before = workspace::snapshot(ws).unwrap();
    fs::write(ws.join("mod"), "2").unwrap();
    fs::set_permissions(ws.join("chmod"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::remove_file(ws.join("del")).unwrap();
    fs::write(ws.join("d/new"), "3").unwrap();
    fs::remove_file(ws.join("was-link")).unwrap();
    fs::write(ws.join("was-link"), "now a file").unwrap();
    symlink("/etc", ws.join("etc")).unwrap();
    let after = workspace::snapshot(ws).unwrap();

    let changed = workspace::changed(&before, &after);
    let got: Vec<_> = changed
        .iter()
        .map(|c| (c.path.to_str().unwrap(), c.change))
        .collect();
    assert_eq!(
        got,
        [
            ("chmod", Change::Modified),
            ("d/new", Change::Added),
            ("mod", Change::Modified),
            ("was-link", Change::Added),
        ]
    );
    let d_new = &changed[1];
    assert_eq!(d_new.size, 1);
    assert_eq!(
        d_new.sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"3"))
    );
    let diff = workspace::diff(&before, &after);
    assert_eq!(
        diff.removed,
        [PathBuf::from("del"), PathBuf::from("was-link")]
    );
    assert_eq!(diff.links.len(), 1);
    assert_eq!(diff.links[0].path, Path::new("etc"));
    assert!(workspace::changed(&after, &after).is_empty());
}

#[test]
fn links_out_of_the_workspace_are_recorded_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    symlink("/etc/passwd", ws.join("passwd")).unwrap();
    symlink("/etc", ws.join("etc")).unwrap();
    // A FIFO outside the workspace: opening it through the link would block forever.
    let outside = tempfile::tempdir().unwrap();
    let fifo = outside.path().join("fifo");
    mkfifo(&fifo);
    symlink(&fifo, ws.join("fifo-link")).unwrap();
    mkfifo(&ws.join("own-fifo"));

    let snap = in_thread(ws.to_path_buf(), |p| workspace::snapshot(&p).unwrap());
    assert_eq!(
        snap.get(Path::new("passwd")),
        Some(&Entry::Symlink {
            target: PathBuf::from("/etc/passwd")
        })
    );
    assert!(matches!(
        snap.get(Path::new("etc")),
        Some(Entry::Symlink { .. })
    ));
    assert!(matches!(
        snap.get(Path::new("fifo-link")),
        Some(Entry::Symlink { .. })
    ));
    assert_eq!(
        snap.get(Path::new("own-fifo")),
        Some(&Entry::Special(SpecialKind::Fifo))
    );
    // Nothing from /etc got in, and no file was hashed at all.
    assert_eq!(snap.entries().len(), 4, "{:?}", snap.entries());
    assert_eq!(snap.file_count(), 0);
    assert_eq!(snap.total_bytes(), 0);
}

#[test]
fn limits_fail_loudly() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        fs::write(dir.path().join(format!("f{i}")), "0123456789").unwrap();
    }
    let limits = SnapshotLimits {
        max_entries: 4,
        ..SnapshotLimits::default()
    };
    let err = workspace::snapshot_with_limits(dir.path(), limits).unwrap_err();
    assert!(matches!(
        err,
        SnapshotError::TooManyEntries { limit: 4, .. }
    ));
    assert!(err.to_string().contains("max_entries"));
    let limits = SnapshotLimits {
        max_total_bytes: 45,
        ..SnapshotLimits::default()
    };
    assert!(matches!(
        workspace::snapshot_with_limits(dir.path(), limits),
        Err(SnapshotError::TooLarge { .. })
    ));
    fs::create_dir_all(dir.path().join("a/b/c")).unwrap();
    let limits = SnapshotLimits {
        max_depth: 2,
        ..SnapshotLimits::default()
    };
    assert!(matches!(
        workspace::snapshot_with_limits(dir.path(), limits),
        Err(SnapshotError::TooDeep { .. })
    ));
    assert!(workspace::snapshot(&dir.path().join("missing")).is_err());
}

#[test]
fn render_shows_what_ran_and_never_a_secret_value() {
    let (dir, statement) = recorded_run();
    let key = seeded(1);
    let bytes = signed_bytes(&statement, &key);
    let run = prov::verify(&bytes, &key.verifying_key()).unwrap();
    let text = prov::render(&run);
    for needle in [
        "signature OK",
        &key.key_id(),
        "python3 build.py --title 'my docs'",
        "build docs",
        "exit code 3",
        "TRUNCATED",
        "42.000 s",
        "started   2025-03-01T12:00:00Z",
        "api.anthropic.com:443",
        "5.0 MiB down",
        "DENIED 2",
        "exfil.attacker.example",
        "default deny",
        "ANTHROPIC_API_KEY",
        "out/report.html",
        "gone.txt",
        "passwd-link -> /etc/passwd",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(!text.contains(SECRET_VALUE));
    assert!(!String::from_utf8_lossy(&bytes).contains(SECRET_VALUE));
    let payload = STANDARD.decode(envelope_of(&bytes).payload).unwrap();
    assert!(!String::from_utf8_lossy(&payload).contains(SECRET_VALUE));
    drop(dir);
}

#[test]
fn render_escapes_terminal_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let before = workspace::snapshot(dir.path()).unwrap();
    fs::write(dir.path().join("\x1b[2Jevil\u{202e}txt.exe"), "x").unwrap();
    let after = workspace::snapshot(dir.path()).unwrap();
    let diff = workspace::diff(&before, &after);
    let mut pred = predicate(WorkspaceRecord::new(&before, &after, &diff));
    pred.argv.push("\x07bell".to_owned());
    let key = seeded(1);
    let run = prov::verify(
        &signed_bytes(&Statement::new(prov::subjects(&diff), pred), &key),
        &key.verifying_key(),
    )
    .unwrap();
    let text = prov::render(&run);
    assert!(!text.contains('\x1b') && !text.contains('\x07') && !text.contains('\u{202e}'));
    assert!(text.contains("\\u{1b}[2Jevil"), "{text}");
}

#[test]
fn verify_against_workspace_detects_later_changes() {
    let (dir, statement) = recorded_run();
    let ws = dir.path();
    let key = seeded(1);
    let run = prov::verify(&signed_bytes(&statement, &key), &key.verifying_key()).unwrap();
    let check = prov::verify_against_workspace(&run, ws);
    assert!(check.is_clean(), "{check:?}");
    assert_eq!(check.checked, 3);
    assert!(prov::render_workspace_check(&check).contains("all 3"));

    fs::write(ws.join("out/report.html"), "<h1>edited</h1>").unwrap();
    fs::remove_file(ws.join("edit.txt")).unwrap();
    // Same contents, but reached through a link: must not count as the recorded file.
    let elsewhere = tempfile::tempdir().unwrap();
    fs::write(elsewhere.path().join("env.txt"), SECRET_VALUE).unwrap();
    fs::remove_dir_all(ws.join("out")).unwrap();
    fs::create_dir(ws.join("out")).unwrap();
    fs::write(ws.join("out/report.html"), "<h1>edited</h1>").unwrap();
    symlink(elsewhere.path().join("env.txt"), ws.join("out/env.txt")).unwrap();

    let check = prov::verify_against_workspace(&run, ws);
    let problems: Vec<_> = check
        .mismatches
        .iter()
        .map(|m| (m.name.as_str(), &m.problem))
        .collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert_eq!(problems[0], ("edit.txt", &MismatchKind::Missing));
    assert!(matches!(
        problems[1],
        ("out/env.txt", MismatchKind::NotARegularFile(_))
    ));
    assert!(matches!(
        problems[2],
        ("out/report.html", MismatchKind::Changed { size: 15, .. })
    ));
    let report = prov::render_workspace_check(&check);
    assert!(
        report.contains("3 of 3") && report.contains("missing"),
        "{report}"
    );

    // A directory on the way swapped for a link to a copy elsewhere is not followed either.
    let copy = tempfile::tempdir().unwrap();
    fs::write(copy.path().join("report.html"), "<h1>report</h1>").unwrap();
    fs::write(copy.path().join("env.txt"), SECRET_VALUE).unwrap();
    fs::remove_dir_all(ws.join("out")).unwrap();
    symlink(copy.path(), ws.join("out")).unwrap();
    let check = prov::verify_against_workspace(&run, ws);
    let out: Vec<_> = check
        .mismatches
        .iter()
        .filter(|m| m.name.starts_with("out/"))
        .collect();
    assert_eq!(out.len(), 2);
    assert!(
        out.iter()
            .all(|m| matches!(m.problem, MismatchKind::NotARegularFile(_)))
    );
}

#[test]
fn non_utf8_names_are_recorded_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let before = workspace::snapshot(dir.path()).unwrap();
    let name = OsStr::from_bytes(b"caf\xe9.txt");
    fs::write(dir.path().join(name), "latin-1 name").unwrap();
    let after = workspace::snapshot(dir.path()).unwrap();
    let diff = workspace::diff(&before, &after);
    let subjects = prov::subjects(&diff);
    assert_eq!(subjects[0].name, "caf\\xe9.txt");
    let key = seeded(1);
    let run = prov::verify(
        &signed_bytes(
            &Statement::new(
                subjects,
                predicate(WorkspaceRecord::new(&before, &after, &diff)),
            ),
            &key,
        ),
        &key.verifying_key(),
    )
    .unwrap();
    assert!(prov::verify_against_workspace(&run, dir.path()).is_clean());
    fs::write(dir.path().join(name), "changed").unwrap();
    assert!(!prov::verify_against_workspace(&run, dir.path()).is_clean());
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Run `f` on another thread; fail instead of hanging if it blocks (e.g. on a FIFO).
fn in_thread<T: Send + 'static>(arg: PathBuf, f: fn(PathBuf) -> T) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f(arg));
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("snapshot blocked: it opened a FIFO")
}
