//! The `run` intent's process runner against real processes: output,
//! exit codes, the cleared environment, cwd confinement, and the time,
//! output and memory limits. Test names start with `run_` so that
//! `cargo nextest run -p bytebot-gateway run` selects them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytebot_gateway::intents::run::{RunError, RunOutput, RunSpec, Stream, run, validate};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Hang guard for every run: far above what any test needs.
const GUARD: Duration = Duration::from_secs(20);

fn spec(workspace: &Path, argv: &[&str]) -> RunSpec {
    RunSpec {
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        workspace: workspace.to_path_buf(),
        cwd: None,
        env: BTreeMap::new(),
        timeout: Duration::from_secs(15),
        max_output_bytes: 1 << 20,
        memory_mb: 1024,
    }
}

/// Runs with the hang guard, collecting what `on_output` saw.
async fn run_ok(spec: &RunSpec) -> (RunOutput, Vec<u8>, Vec<u8>) {
    let mut seen_out = Vec::new();
    let mut seen_err = Vec::new();
    let out = tokio::time::timeout(
        GUARD,
        run(spec, |stream, chunk| match stream {
            Stream::Stdout => seen_out.extend_from_slice(chunk),
            Stream::Stderr => seen_err.extend_from_slice(chunk),
        }),
    )
    .await
    .expect("run did not finish")
    .unwrap();
    (out, seen_out, seen_err)
}

async fn run_err(spec: &RunSpec) -> RunError {
    tokio::time::timeout(GUARD, run(spec, |_, _| {}))
        .await
        .expect("run did not finish")
        .unwrap_err()
}

/// True once `pid` no longer runs: gone, or a zombie waiting for a reaper
/// (pid 1 in a container may never reap it). Polls for a while, since the
/// kernel delivers SIGKILL asynchronously.
async fn process_gone(pid: u32) -> bool {
    for _ in 0..200 {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) => {
                // The state follows the parenthesised command name.
                let state = stat.rsplit(')').next().unwrap().trim_start();
                if state.starts_with('Z') || state.starts_with('X') {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn first_pid(stdout: &[u8]) -> u32 {
    let text = String::from_utf8_lossy(stdout);
    text.lines().next().unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn run_echo_output_is_captured_and_streamed() {
    let ws = tempfile::tempdir().unwrap();
    let (out, seen_out, seen_err) = run_ok(&spec(ws.path(), &["echo", "hello", "world"])).await;
    assert_eq!(out.stdout, b"hello world\n");
    assert_eq!(seen_out, out.stdout);
    assert!(out.stderr.is_empty() && seen_err.is_empty());
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.signal, None);
    assert!(!out.timed_out && !out.stdout_truncated && !out.stderr_truncated);
}

#[tokio::test]
async fn run_argv_is_passed_without_a_shell() {
    let ws = tempfile::tempdir().unwrap();
    let (out, _, _) = run_ok(&spec(ws.path(), &["echo", "$HOME", "a;b", "*", "`id`"])).await;
    assert_eq!(out.stdout, b"$HOME a;b * `id`\n");
}

#[tokio::test]
async fn run_stdout_and_stderr_are_separate() {
    let ws = tempfile::tempdir().unwrap();
    let (out, seen_out, seen_err) = run_ok(&spec(
        ws.path(),
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
    ))
    .await;
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(seen_out, b"out\n");
    assert_eq!(seen_err, b"err\n");
    assert_eq!(out.exit_code, Some(3));
}

#[tokio::test]
async fn run_exit_codes_and_signals() {
    let ws = tempfile::tempdir().unwrap();
    let (out, _, _) = run_ok(&spec(ws.path(), &["false"])).await;
    assert_eq!((out.exit_code, out.signal), (Some(1), None));
    let (out, _, _) = run_ok(&spec(ws.path(), &["true"])).await;
    assert_eq!((out.exit_code, out.signal), (Some(0), None));
    let (out, _, _) = run_ok(&spec(ws.path(), &["sh", "-c", "kill -TERM $$"])).await;
    assert_eq!((out.exit_code, out.signal), (None, Some(libc::SIGTERM)));
    assert!(!out.timed_out);
}

#[tokio::test]
async fn run_stdin_is_closed() {
    let ws = tempfile::tempdir().unwrap();
    // `cat` would wait forever on an open stdin.
    let (out, _, _) = run_ok(&spec(ws.path(), &["cat"])).await;
    assert_eq!(out.exit_code, Some(0));
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn run_environment_is_cleared_to_the_allow_list() {
    let ws = tempfile::tempdir().unwrap();
    let home = ws.path().canonicalize().unwrap();
    // Variables of this test process (cargo sets several) must not leak.
    let ours: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| !["PATH", "HOME", "LANG", "TMPDIR", "GREETING"].contains(&k.as_str()))
        .collect();
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    assert!(!ours.is_empty());

    let mut s = spec(ws.path(), &["/usr/bin/env"]);
    s.env.insert("GREETING".into(), "hi there".into());
    let (out, _, _) = run_ok(&s).await;
    assert_eq!(out.exit_code, Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let env: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let names: BTreeSet<&str> = env.keys().copied().collect();
    assert_eq!(
        names,
        BTreeSet::from(["GREETING", "HOME", "LANG", "PATH", "TMPDIR"]),
        "{text}"
    );
    assert_eq!(env["PATH"], "/usr/local/bin:/usr/bin:/bin");
    assert_eq!(env["HOME"], home.to_str().unwrap());
    assert_eq!(env["LANG"], "C.UTF-8");
    assert_eq!(env["GREETING"], "hi there");
    let tmp = home.join(".tmp");
    assert_eq!(env["TMPDIR"], tmp.to_str().unwrap());
    assert!(tmp.is_dir());
    for name in ours {
        assert!(
            !env.contains_key(name.as_str()),
            "{name} leaked into the run"
        );
    }
}

#[tokio::test]
async fn run_refused_environment_variables() {
    let ws = tempfile::tempdir().unwrap();
    for name in [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "PATH",
        "HOME",
        "BYTEBOT_TOKEN",
        "lower",
        "1ABC",
        "A-B",
        "",
    ] {
        let mut s = spec(ws.path(), &["true"]);
        s.env.insert(name.into(), "x".into());
        for err in [validate(&s).unwrap_err(), run_err(&s).await] {
            match &err {
                RunError::BadEnv { name: bad, .. } => assert_eq!(bad, name),
                other => panic!("{name:?}: {other:?}"),
            }
            assert_eq!(err.field(), Some("env"));
        }
    }
}

#[tokio::test]
async fn run_cwd_is_confined_to_the_workspace() {
    let ws = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ws.path().join("sub/inner")).unwrap();
    std::fs::write(ws.path().join("file.txt"), "x").unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.path().join("escape")).unwrap();
    std::os::unix::fs::symlink("/", ws.path().join("sub/root")).unwrap();
    std::os::unix::fs::symlink("inner", ws.path().join("sub/alias")).unwrap();

    for cwd in [
        "..",
        "sub/../..",
        "sub/..",
        "/tmp",
        "/",
        "escape",
        "escape/",
        "sub/root/etc",
        "missing",
        "file.txt",
    ] {
        let mut s = spec(ws.path(), &["pwd"]);
        s.cwd = Some(cwd.into());
        for err in [validate(&s).unwrap_err(), run_err(&s).await] {
            assert!(matches!(err, RunError::BadCwd { .. }), "{cwd:?}: {err:?}");
            assert_eq!(err.field(), Some("cwd"));
        }
    }

    let inner = ws.path().canonicalize().unwrap().join("sub/inner");
    for cwd in ["sub/inner", "./sub/inner/", "sub/alias"] {
        let mut s = spec(ws.path(), &["pwd"]);
        s.cwd = Some(cwd.into());
        assert_eq!(validate(&s).unwrap(), inner, "{cwd:?}");
        let (out, _, _) = run_ok(&s).await;
        assert_eq!(
            out.stdout,
            format!("{}\n", inner.display()).into_bytes(),
            "{cwd:?}"
        );
    }
    // No cwd (or ".") is the workspace itself.
    let mut s = spec(ws.path(), &["pwd"]);
    assert_eq!(validate(&s).unwrap(), ws.path().canonicalize().unwrap());
    s.cwd = Some(".".into());
    assert_eq!(validate(&s).unwrap(), ws.path().canonicalize().unwrap());
}

#[tokio::test]
async fn run_timeout_kills_the_program_and_its_children() {
    let ws = tempfile::tempdir().unwrap();
    let mut s = spec(
        ws.path(),
        &["sh", "-c", "sleep 30 & echo $!; sleep 30; echo never"],
    );
    s.timeout = Duration::from_secs(1);
    let (out, _, _) = run_ok(&s).await;
    assert!(out.timed_out);
    assert_eq!((out.exit_code, out.signal), (None, Some(libc::SIGKILL)));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("never"));
    let grandchild = first_pid(&out.stdout);
    assert!(
        process_gone(grandchild).await,
        "the background sleep {grandchild} survived the timeout"
    );
}

#[tokio::test]
async fn run_leftovers_are_killed_when_the_program_exits() {
    let ws = tempfile::tempdir().unwrap();
    // The background sleep holds stdout open; the run must still end when
    // the shell exits, and the sleep must not outlive it.
    let (out, _, _) = run_ok(&spec(ws.path(), &["sh", "-c", "sleep 30 & echo $!"])).await;
    assert!(!out.timed_out);
    assert_eq!(out.exit_code, Some(0));
    let leftover = first_pid(&out.stdout);
    assert!(
        process_gone(leftover).await,
        "the background sleep {leftover} outlived the run"
    );
}

#[tokio::test]
async fn run_cancelling_the_run_kills_the_group() {
    let ws = tempfile::tempdir().unwrap();
    let s = spec(ws.path(), &["sh", "-c", "sleep 30 & echo $!; sleep 30"]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let printed = Arc::new(tokio::sync::Notify::new());
    let (seen_in, printed_in) = (Arc::clone(&seen), Arc::clone(&printed));
    let running = run(&s, move |_, chunk| {
        seen_in.lock().unwrap().extend_from_slice(chunk);
        printed_in.notify_one();
    });
    tokio::select! {
        result = running => panic!("the run ended on its own: {result:?}"),
        () = printed.notified() => {}
        () = tokio::time::sleep(GUARD) => panic!("no output from the run"),
    }
    // `running` is dropped here, mid-run.
    let grandchild = first_pid(&seen.lock().unwrap());
    assert!(
        process_gone(grandchild).await,
        "the background sleep {grandchild} survived the cancelled run"
    );
}

#[tokio::test]
async fn run_output_is_capped_and_the_program_still_finishes() {
    let ws = tempfile::tempdir().unwrap();
    let mut s = spec(ws.path(), &["head", "-c", "10000000", "/dev/zero"]);
    s.max_output_bytes = 4096;
    let (out, seen_out, _) = run_ok(&s).await;
    assert_eq!(out.exit_code, Some(0));
    assert!(!out.timed_out);
    assert_eq!(out.stdout.len(), 4096);
    assert!(out.stdout_truncated);
    assert!(!out.stderr_truncated);
    assert_eq!(seen_out.len(), 4096);

    let mut s = spec(
        ws.path(),
        &["sh", "-c", "echo small; head -c 100000 /dev/zero >&2"],
    );
    s.max_output_bytes = 1000;
    let (out, _, seen_err) = run_ok(&s).await;
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.stdout, b"small\n");
    assert!(!out.stdout_truncated);
    assert_eq!(out.stderr.len(), 1000);
    assert_eq!(seen_err.len(), 1000);
    assert!(out.stderr_truncated);
}

#[tokio::test]
async fn run_memory_limit_stops_a_large_allocation() {
    let ws = tempfile::tempdir().unwrap();
    let mut big = spec(ws.path(), &["python3", "-c", "x = bytearray(2 * 1024**3)"]);
    big.memory_mb = 256;
    if let Err(RunError::NotFound { .. }) = validate(&big) {
        println!("skipped: python3 is not on /usr/local/bin:/usr/bin:/bin");
        return;
    }
    let (out, _, _) = run_ok(&big).await;
    assert_ne!(
        out.exit_code,
        Some(0),
        "a 2 GiB allocation succeeded under 256 MiB"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("MemoryError"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same limit leaves room for a modest allocation, so the failure
    // above is the limit and not a broken interpreter.
    let mut small = big.clone();
    small.argv[2] = "x = bytearray(16 * 1024**2); print(len(x))".into();
    let (out, _, _) = run_ok(&small).await;
    assert_eq!(
        out.exit_code,
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"16777216\n");
}

#[tokio::test]
async fn run_missing_and_unusable_programs() {
    let ws = tempfile::tempdir().unwrap();
    for program in [
        "no-such-program-for-bytebot",
        "/nonexistent/prog",
        "./missing.sh",
    ] {
        let s = spec(ws.path(), &[program]);
        for err in [validate(&s).unwrap_err(), run_err(&s).await] {
            match &err {
                RunError::NotFound { program: p } => assert_eq!(p, program),
                other => panic!("{program}: {other:?}"),
            }
            assert_eq!(err.field(), Some("argv"));
        }
    }
    std::fs::write(ws.path().join("data.txt"), "not a program").unwrap();
    let err = validate(&spec(ws.path(), &["./data.txt"])).unwrap_err();
    assert!(matches!(err, RunError::NotExecutable { .. }), "{err:?}");

    for argv in [&[][..], &[""][..], &["echo", "a\0b"][..]] {
        let err = validate(&spec(ws.path(), argv)).unwrap_err();
        assert!(matches!(err, RunError::BadArgv { .. }), "{argv:?}: {err:?}");
    }
}

#[tokio::test]
async fn run_a_relative_program_runs_from_the_working_folder() {
    use std::os::unix::fs::PermissionsExt;
    let ws = tempfile::tempdir().unwrap();
    std::fs::create_dir(ws.path().join("bin")).unwrap();
    let script = ws.path().join("bin/hello.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"hello from $0\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut s = spec(ws.path(), &["./hello.sh"]);
    s.cwd = Some("bin".into());
    let (out, _, _) = run_ok(&s).await;
    assert_eq!(out.exit_code, Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("hello from "), "{text}");
}

#[tokio::test]
async fn run_a_missing_workspace_is_a_server_error() {
    let parent = tempfile::tempdir().unwrap();
    let s = spec(&parent.path().join("gone"), &["true"]);
    let err = validate(&s).unwrap_err();
    assert!(matches!(err, RunError::Workspace { .. }), "{err:?}");
    assert_eq!(err.field(), None);
}

#[test]
fn run_future_is_send() {
    // The executor runs steps on spawned tasks, which need a Send future.
    fn assert_send<T: Send>(_: &T) {}
    let s = spec(Path::new("/nonexistent"), &["true"]);
    let future = run(&s, |_, _| {});
    assert_send(&future);
}
