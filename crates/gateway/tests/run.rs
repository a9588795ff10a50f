//! The `run` intent's runner, the bottle, against real bubblewrap and real
//! processes: output, exit codes, the environment, cwd confinement, and the
//! time, output, memory and process limits. Test names start with `run_` so
//! that `cargo nextest run -p bytebot-gateway run` selects them. Each test
//! skips (printing why) only where the host cannot run sandboxes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytebot_gateway::bottle::{Bottle, RunOutput};
use bytebot_gateway::intents::run::{NetworkRules, RunError, RunSpec, validate};
use common::{bottle, skip_without_bottle};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// Hang guard for every run: far above what any test needs.
const GUARD: Duration = Duration::from_secs(30);

fn spec(workspace: &Path, argv: &[&str]) -> RunSpec {
    RunSpec {
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        workspace: workspace.to_path_buf(),
        cwd: None,
        env: BTreeMap::new(),
        timeout: Duration::from_secs(15),
        max_output_bytes: 1 << 20,
        memory_mb: 1024,
        processes: 64,
        network: NetworkRules::default(),
    }
}

/// A workspace and a bottle folder of its own, beside each other.
struct Setup {
    dir: tempfile::TempDir,
    bottle: Bottle,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ws")).unwrap();
        let bottle = bottle(&dir.path().join("bottle"));
        Setup { dir, bottle }
    }

    fn ws(&self) -> std::path::PathBuf {
        self.dir.path().join("ws")
    }

    fn spec(&self, argv: &[&str]) -> RunSpec {
        spec(&self.ws(), argv)
    }

    async fn run(&self, spec: &RunSpec) -> Result<RunOutput, RunError> {
        let run = self
            .bottle
            .run(spec, "test-run", "gateway run test", std::future::pending());
        tokio::time::timeout(GUARD, run)
            .await
            .expect("run did not finish")
    }

    async fn ok(&self, spec: &RunSpec) -> RunOutput {
        self.run(spec).await.unwrap()
    }

    async fn err(&self, spec: &RunSpec) -> RunError {
        self.run(spec).await.unwrap_err()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn run_echo_output_and_exit_code_come_back() {
    if skip_without_bottle().await {
        return;
    }
    let s = Setup::new();
    let out = s.ok(&s.spec(&["echo", "hello", "world"])).await;
    assert_eq!(out.stdout, b"hello world\n");
    assert!(out.stderr.is_empty());
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.signal, None);
    assert!(!out.timed_out && !out.stdout_truncated && !out.stderr_truncated);
    assert!(!out.output_flood && !out.oom_killed && !out.process_limit_hit);
    // Nothing was written, so the record lists no file; it is still there.
    let record = out.provenance.unwrap();
    assert!(record.subjects.is_empty());
    assert!(record.path.starts_with(s.dir.path().join("bottle/runs")));
    assert_eq!(std::fs::read(&record.path).unwrap(), record.record);
}

#[tokio::test]
async fn run_argv_is_passed_without_a_shell() {
    if skip_without_bottle().await {
        return;
    }
    let s = Setup::new();
    let out = s.ok(&s.spec(&["echo", "$HOME", "a;b", "*", "`id`"])).await;
    assert_eq!(out.stdout, b"$HOME a;b * `id`\n");
}

#[tokio::test]
async fn run_stdout_and_stderr_are_separate() {
    if skip_without_bottle().await {
        return;
    }
    let s = Setup::new();
    let out = s
        .ok(&s.spec(&["sh", "-c", "echo out; echo err >&2; exit 3"]))
        .await;
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit_code, Some(3));
}

#[tokio::test]
async fn run_exit_codes_and_signals() {
    if skip_without_bottle().await {
        return;
    }
    let s = Setup::new();
    let out = s.ok(&s.spec(&["false"])).await;
    assert_eq!((out.exit_code, out.signal), (Some(1), None));
    let out = s.ok(&s.spec(&["true"])).await;
    assert_eq!((out.exit_code, out.signal), (Some(0), None));
    let out = s.ok(&s.spec(&["sh", "-c", "kill -TERM $$"])).await;
    assert_eq!((out.exit_code, out.signal), (None, Some(libc::SIGTERM)));
    assert!(!out.timed_out);
}

#[tokio::test]
async fn run_stdin_is_closed() {
    if skip_without_bottle().await {
        return;
    }
    let s = Setup::new();
    // `cat` would wait forever on an open stdin.
    let out = s.ok(&s.spec(&["cat"])).await;
    assert_eq!(out.exit_code, Some(0));
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn run_environment_is_the_plan_s_and_nothing_of_the_host_s() {
    if skip_without_bottle().await {
        return;
    }
    let s = Setup::new();
    // Variables of this test process (cargo sets several) must not leak.
    let ours: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| !["PATH", "HOME", "LANG", "PWD", "GREETING"].contains(&k.as_str()))
        .collect();
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    assert!(!ours.is_empty());

    let mut spec = s.spec(&["/usr/bin/env"]);
    spec.env.insert("GREETING".into(), "hi there".into());
    let out = s.ok(&spec).await;
    assert_eq!(out.exit_code, Some(0));
    let text = text(&out.stdout);
    let env: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let names: BTreeSet<&str> = env.keys().copied().collect();
    assert_eq!(
        names,
        BTreeSet::from(["GREETING", "HOME", "LANG", "PATH", "PWD"]),
        "{text}"
    );
    assert_eq!(env["PATH"], bytebot_bottle_default_path());
    assert_eq!(env["HOME"], "/home/bottle");
    assert_eq!(env["PWD"], "/workspace");
    assert_eq!(env["LANG"], "C.UTF-8");
    assert_eq!(env["GREETING"], "hi there");
    for name in ours {
        assert!(
            !env.contains_key(name.as_str()),
            "{name} leaked into the run"
        );
    }
}

/// The sandbox's `PATH`, as the bottle documents it.
fn bytebot_bottle_default_path() -> &'static str {
    "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
}

#[tokio::test]
async fn run_refused_environment_variables() {
    let s = Setup::new();
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
        let mut spec = s.spec(&["true"]);
        spec.env.insert(name.into(), "x".into());
        // Refused before the bottle is even asked: no sandbox needed.
        for err in [validate(&spec).unwrap_err(), s.err(&spec).await] {
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
    if skip_without_bottle().await {
        return;
    }
    let s = Setup::new();
    let ws = s.ws();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ws.join("sub/inner")).unwrap();
    std::fs::write(ws.join("file.txt"), "x").unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.join("escape")).unwrap();
    std::os::unix::fs::symlink("/", ws.join("sub/root")).unwrap();
    std::os::unix::fs::symlink("inner", ws.join("sub/alias")).unwrap();

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
        let mut spec = s.spec(&["pwd"]);
        spec.cwd = Some(cwd.into());
        for err in [validate(&spec).unwrap_err(), s.err(&spec).await] {
            assert!(matches!(err, RunError::BadCwd { .. }), "{cwd:?}: {err:?}");
            assert_eq!(err.field(), Some("cwd"));
        }
    }

    let inner = ws.canonicalize().unwrap().join("sub/inner");
    for cwd in ["sub/inner", "./sub/inner/", "sub/alias"] {
        let mut spec = s.spec(&["pwd"]);
        spec.cwd = Some(cwd.into());
        assert_eq!(validate(&spec).unwrap(), inner, "{cwd:?}");
        // Inside the bottle the workspace is /workspace.
        let out = s.ok(&spec).await;
        assert_eq!(text(&out.stdout), "/workspace/sub/inner\n", "{cwd:?}");
    }
    // No cwd (or ".") is the workspace itself.
    let mut spec = s.spec(&["pwd"]);
    assert_eq!(validate(&spec).unwrap(), ws.canonicalize().unwrap());
    spec.cwd = Some(".".into());
    assert_eq!(validate(&spec).unwrap(), ws.canonicalize().unwrap());
    assert_eq!(text(&s.ok(&spec).await.stdout), "/workspace\n");
}

/// Whether `name` appears in the workspace within `wait`.
async fn appears(ws: &Path, name: &str, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if ws.join(name).exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ws.join(name).exists()
}

#[tokio::test]
async fn run_timeout_kills_the_program_and_its_children() {
    if skip_without_bottle().await {
        return;
    }
    let s = Setup::new();
    // A child that would write a file after the deadline, had it survived.
    let mut spec = s.spec(&[
        "sh",
        "-c",
        "(sleep 2; echo late > late.txt) & echo started; sleep 30; echo never",
    ]);
    spec.timeout = Duration::from_secs(1);
    let t0 = Instant::now();
    let out = s.ok(&spec).await;
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(out.timed_out);
    assert_eq!((out.exit_code, out.signal), (None, Some(libc::SIGKILL)));
    assert_eq!(text(&out.stdout), "started\n");
    assert!(
        !appears(&s.ws(), "late.txt", Duration::from_secs(3)).await,
        "the background child survived the timeout"
    );
}

#[tokio::test]
async fn run_leftovers_are_killed_when_the_program_exits() {
    if skip_without_bottle().await {
        return;
    }
    let s = Setup::new();
    // The background child holds stdout open; the run must still end when the
    // shell exits, and the child must not outlive it.
    let t0 = Instant::now();
    let out = s
        .ok(&s.spec(&["sh", "-c", "(sleep 1; echo late > late.txt) & echo started"]))
        .await;
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(!out.timed_out);
    assert_eq!(out.exit_code, Some(0));
    assert!(
        !appears(&s.ws(), "late.txt", Duration::from_secs(2)).await,
        "the background child outlived the run"
    );
}

#[tokio::test]
async fn run_cancelling_the_run_kills_everything_and_still_records_it() {
    if skip_without_bottle().await {
        return;
    }
    let s = Setup::new();
    let spec = s.spec(&[
        "sh",
        "-c",
        "(sleep 1; echo late > late.txt) & echo > started.txt; sleep 30",
    ]);
    let ws = s.ws();
    let cancel = async {
        assert!(
            appears(&ws, "started.txt", GUARD).await,
            "the run never started"
        );
    };
    let t0 = Instant::now();
    let run = s
        .bottle
        .run(&spec, "cancelled-run", "gateway run test", cancel);
    let out = tokio::time::timeout(GUARD, run).await.unwrap().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(out.cancelled);
    assert_eq!((out.exit_code, out.signal), (None, Some(libc::SIGKILL)));
    assert!(
        !appears(&ws, "late.txt", Duration::from_secs(2)).await,
        "the background child survived the cancelled run"
    );
    // What it did before the cancel is on record.
    let record = out.provenance.unwrap();
    assert_eq!(record.subjects, ["started.txt"]);
}

#[tokio::test]
async fn run_dropping_the_run_kills_everything() {
    if skip_without_bottle().await {
        return;
    }
    let s = Setup::new();
    let spec = s.spec(&[
        "sh",
        "-c",
        "(sleep 1; echo late > late.txt) & echo > started.txt; sleep 30",
    ]);
    let ws = s.ws();
    let running = s.bottle.run(
        &spec,
        "dropped-run",
        "gateway run test",
        std::future::pending(),
    );
    tokio::select! {
        result = running => panic!("the run ended on its own: {result:?}"),
        started = appears(&ws, "started.txt", GUARD) => assert!(started, "the run never started"),
    }
    // `running` is dropped here, mid-run.
    assert!(
        !appears(&s.ws(), "late.txt", Duration::from_secs(2)).await,
        "the background child survived the cancelled run"
    );
}

#[tokio::test]
async fn run_output_is_capped_and_the_program_still_finishes() {
    if skip_without_bottle().await {
        return;
    }
    let s = Setup::new();
    let mut spec = s.spec(&["head", "-c", "10000000", "/dev/zero"]);
    spec.max_output_bytes = 4096;
    let out = s.ok(&spec).await;
    assert_eq!(out.exit_code, Some(0));
    assert!(!out.timed_out && !out.output_flood);
    assert_eq!(out.stdout.len(), 4096);
    assert!(out.stdout_truncated);
    assert!(!out.stderr_truncated);

    let mut spec = s.spec(&["sh", "-c", "echo small; head -c 100000 /dev/zero >&2"]);
    spec.max_output_bytes = 1000;
    let out = s.ok(&spec).await;
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.stdout, b"small\n");
    assert!(!out.stdout_truncated);
    assert_eq!(out.stderr.len(), 1000);
    assert!(out.stderr_truncated);
}

#[tokio::test]
async fn run_memory_limit_stops_a_large_allocation() {
    if skip_without_bottle().await {
        return;
    }
    let s = Setup::new();
    let mut big = s.spec(&[
        "python3",
        "-c",
        "b = bytearray(2 * 1024**3)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('allocated')",
    ]);
    big.memory_mb = 256;
    if let Err(RunError::NotFound { .. }) = validate(&big) {
        println!("skipping: python3 is not installed (apt-get install python3)");
        return;
    }
    let out = s.ok(&big).await;
    assert_ne!(
        out.exit_code,
        Some(0),
        "a 2 GiB allocation succeeded under 256 MiB"
    );
    assert!(!text(&out.stdout).contains("allocated"));
    // An rlimit makes the allocation fail; a memory cgroup kills the process.
    assert!(
        text(&out.stderr).contains("MemoryError") || out.oom_killed || out.signal.is_some(),
        "{out:?}"
    );
    // The same limit leaves room for a modest allocation, so the failure
    // above is the limit and not a broken interpreter.
    let mut small = big.clone();
    small.argv[2] = "x = bytearray(16 * 1024**2); print(len(x))".into();
    let out = s.ok(&small).await;
    assert_eq!(out.exit_code, Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"16777216\n");
}

#[tokio::test]
async fn run_process_limit_stops_forking() {
    if skip_without_bottle().await {
        return;
    }
    let s = Setup::new();
    let script = "for i in $(seq 1 40); do sleep 5 & done; echo forked; wait";
    let mut spec = s.spec(&["sh", "-c", script]);
    spec.processes = 8;
    let out = s.ok(&spec).await;
    if out.warnings.iter().any(|w| w.contains("process")) && !out.process_limit_hit {
        println!(
            "skipping: the process limit is not enforced here: {:?}",
            out.warnings
        );
        return;
    }
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("fork") || stderr.contains("Resource temporarily unavailable"),
        "{out:?}"
    );
    // Within the limit the same script works.
    let mut spec = s.spec(&[
        "sh",
        "-c",
        "for i in 1 2 3; do true & done; wait; echo done",
    ]);
    spec.processes = 8;
    let out = s.ok(&spec).await;
    assert_eq!(text(&out.stdout), "done\n", "{out:?}");
}

#[tokio::test]
async fn run_missing_and_unusable_programs() {
    let s = Setup::new();
    for program in [
        "no-such-program-for-bytebot",
        "/nonexistent/prog",
        "./missing.sh",
    ] {
        let spec = s.spec(&[program]);
        for err in [validate(&spec).unwrap_err(), s.err(&spec).await] {
            match &err {
                RunError::NotFound { program: p } => assert_eq!(p, program),
                other => panic!("{program}: {other:?}"),
            }
            assert_eq!(err.field(), Some("argv"));
        }
    }
    std::fs::write(s.ws().join("data.txt"), "not a program").unwrap();
    let err = validate(&s.spec(&["./data.txt"])).unwrap_err();
    assert!(matches!(err, RunError::NotExecutable { .. }), "{err:?}");

    // A real program the sandbox does not show (it lives under target/, not /usr).
    let init = env!("CARGO_BIN_EXE_bytebot-gateway-bottle-init");
    let err = validate(&s.spec(&[init])).unwrap_err();
    assert!(matches!(err, RunError::OutsideSandbox { .. }), "{err:?}");
    assert_eq!(err.field(), Some("argv"));
    // Nor does a link in the workspace make it visible.
    std::os::unix::fs::symlink(init, s.ws().join("init-link")).unwrap();
    let err = validate(&s.spec(&["./init-link"])).unwrap_err();
    assert!(matches!(err, RunError::OutsideSandbox { .. }), "{err:?}");

    for argv in [&[][..], &[""][..], &["echo", "a\0b"][..]] {
        let err = validate(&s.spec(argv)).unwrap_err();
        assert!(matches!(err, RunError::BadArgv { .. }), "{argv:?}: {err:?}");
    }
}

#[tokio::test]
async fn run_a_relative_program_runs_from_the_working_folder() {
    if skip_without_bottle().await {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    std::fs::create_dir(s.ws().join("bin")).unwrap();
    let script = s.ws().join("bin/hello.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"hello from $0 in $PWD\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = s.spec(&["./hello.sh"]);
    spec.cwd = Some("bin".into());
    let out = s.ok(&spec).await;
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        "hello from ./hello.sh in /workspace/bin\n"
    );
}

#[tokio::test]
async fn run_a_missing_workspace_is_a_server_error() {
    let parent = tempfile::tempdir().unwrap();
    let spec = spec(&parent.path().join("gone"), &["true"]);
    let err = validate(&spec).unwrap_err();
    assert!(matches!(err, RunError::Workspace { .. }), "{err:?}");
    assert_eq!(err.field(), None);
}

#[tokio::test]
async fn run_without_a_usable_init_is_unavailable_and_runs_nothing() {
    let s = Setup::new();
    let spec = s.spec(&["sh", "-c", "echo ran > ran.txt"]);
    for init in [vec![], vec![s.dir.path().join("no-init").into_os_string()]] {
        let b = Bottle::new(init, s.dir.path().join("bottle"));
        let why = b.ready().await.unwrap_err();
        assert!(why.contains("init"), "{why}");
        let err = b
            .run(&spec, "no-init", "test", std::future::pending())
            .await
            .unwrap_err();
        assert!(matches!(err, RunError::Unavailable(_)), "{err:?}");
        assert_eq!(err.field(), None);
    }
    assert!(!s.ws().join("ran.txt").exists());
}

#[test]
fn run_future_is_send() {
    // The executor runs steps on spawned tasks, which need a Send future.
    fn assert_send<T: Send>(_: &T) {}
    let s = Setup::new();
    let spec = s.spec(&["true"]);
    let future = s.bottle.run(&spec, "send", "test", std::future::pending());
    assert_send(&future);
}
