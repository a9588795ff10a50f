//! The sandbox against real bubblewrap and real processes: each escape from
//! specs/bottle.md that belongs to the sandbox must fail, and the allowed paths must work.
//! A test skips (with the reason printed) only when the host has no bwrap or no namespaces.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use bytebot_bottle::sandbox::confine::{self, ConfineError, EntryKind};
use bytebot_bottle::sandbox::{
    Backend, Bwrap, Limits, Mechanism, ProxyLink, RunOutcome, SandboxError, SandboxSpec,
    Termination,
};

const HOST_SECRET: &str = "host-secret-value-7f3a";

/// Every test calls this first, so the variable is set before any test spawns a process.
fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: runs once, before any test of this binary reads the environment or spawns.
        unsafe { std::env::set_var("BYTEBOT_TOKEN", HOST_SECRET) };
    });
}

/// The backend, or `None` (with the reason printed) when this host cannot run sandboxes.
async fn backend() -> Option<Bwrap> {
    setup();
    let bwrap = match Bwrap::new() {
        Ok(b) => b,
        Err(e) => {
            println!("skipping: bwrap is not available ({e})");
            return None;
        }
    };
    match bwrap.check().await {
        Ok(()) => Some(bwrap),
        Err(e @ SandboxError::UserNamespaces { .. }) => {
            println!("skipping: user namespaces are not available ({e})");
            None
        }
        Err(e) => panic!("bwrap self-check failed: {e}"),
    }
}

fn have(program: &str) -> bool {
    ["/usr/bin", "/bin", "/usr/local/bin"]
        .iter()
        .any(|d| Path::new(d).join(program).is_file())
}

fn spec(ws: &Path, argv: &[&str]) -> SandboxSpec {
    SandboxSpec {
        argv: argv.iter().map(OsString::from).collect(),
        workspace: ws.to_path_buf(),
        cwd: None,
        env: vec![("LANG".into(), "C.UTF-8".into())],
        proxy: None,
        read_only: vec![],
        limits: Limits {
            wall: Duration::from_secs(30),
            memory_bytes: 512 << 20,
            processes: 64,
            output_bytes: 1 << 20,
        },
        init: vec![env!("CARGO_BIN_EXE_bytebot-bottle-init").into()],
    }
}

async fn run(b: &Bwrap, spec: &SandboxSpec) -> RunOutcome {
    // Through the trait object, as the CLI will use it.
    let backend: &dyn Backend = b;
    backend.run(spec).await.expect("the sandbox ran")
}

fn out(o: &RunOutcome) -> String {
    String::from_utf8_lossy(&o.stdout.bytes).into_owned()
}

fn err(o: &RunOutcome) -> String {
    String::from_utf8_lossy(&o.stderr.bytes).into_owned()
}

fn sh(script: &str) -> Vec<&str> {
    vec!["/bin/sh", "-c", script]
}

#[tokio::test]
async fn exit_codes_output_and_signals_come_back() {
    let Some(b) = backend().await else { return };
    let ws = tempfile::tempdir().unwrap();

    let o = run(&b, &spec(ws.path(), &sh("echo out; echo err >&2; exit 7"))).await;
    assert_eq!(o.status, Termination::Exited(7));
    assert_eq!(out(&o), "out\n");
    assert_eq!(err(&o), "err\n");
    assert!(!o.timed_out && !o.stdout.truncated);
    assert!(o.ended >= o.started);

    let o = run(&b, &spec(ws.path(), &sh("kill -TERM $$"))).await;
    assert_eq!(o.status, Termination::Signaled(libc::SIGTERM));
    assert_eq!(o.exit_code(), 128 + libc::SIGTERM);

    let o = run(&b, &spec(ws.path(), &["true"])).await;
    assert!(o.success(), "{o:?}");

    let o = run(&b, &spec(ws.path(), &["no-such-command-here"])).await;
    assert_eq!(o.status, Termination::Exited(127));
    assert!(err(&o).contains("command not found"), "{}", err(&o));
}

#[tokio::test]
async fn environment_is_exactly_the_allowed_one() {
    let Some(b) = backend().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let mut s = spec(ws.path(), &["/usr/bin/env"]);
    s.env.push(("GREETING".into(), "hello world".into()));
    let o = run(&b, &s).await;
    assert!(o.success(), "{o:?}");
    let text = out(&o);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "GREETING=hello world",
            "HOME=/home/bottle",
            "LANG=C.UTF-8",
            "PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
            "PWD=/workspace",
        ]
    );
    assert!(!out(&o).contains(HOST_SECRET));
}

#[tokio::test]
async fn host_environment_and_arguments_are_not_readable_through_proc() {
    let Some(b) = backend().await else { return };
    let ws = tempfile::tempdir().unwrap();
    // pid 1 is the init (non-dumpable): its environ and memory are closed to the command; no
    // host process is visible at all.
    let script = r#"
for f in /proc/*/environ /proc/*/cmdline; do cat "$f" 2>/dev/null; echo; done
if cat /proc/1/mem >/dev/null 2>&1 || head -c1 /proc/1/environ >/dev/null 2>&1; then echo PID1-OPEN; fi
echo "pids: $(ls -d /proc/[0-9]* | wc -l)"
"#;
    let o = run(&b, &spec(ws.path(), &sh(script))).await;
    let text = out(&o);
    assert!(
        !text.contains(HOST_SECRET),
        "host environment leaked: {text}"
    );
    assert!(!text.contains("BYTEBOT_TOKEN"), "{text}");
    assert!(
        !text.contains(&ws.path().display().to_string()),
        "host path leaked: {text}"
    );
    // (The script's own text shows in /proc/2/cmdline; only the echoed line counts.)
    assert!(!text.lines().any(|l| l == "PID1-OPEN"), "{text}");
    let pids: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("pids: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        pids <= 6,
        "expected only the sandbox's own processes, saw {pids}: {text}"
    );
}

#[tokio::test]
async fn host_secrets_homes_and_sockets_are_not_visible() {
    let Some(b) = backend().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let etc_secret = PathBuf::from(format!("/etc/bytebot-test-secret-{id}"));
    let tmp_dir = tempfile::tempdir_in("/tmp").unwrap();
    let tmp_secret = tmp_dir.path().join("secret");
    let host_sock = tmp_dir.path().join("host.sock");
    let _sock = UnixListener::bind(&host_sock).unwrap();
    std::fs::write(&tmp_secret, HOST_SECRET).unwrap();
    /// Removes the /etc secret whatever happens to the test.
    struct RemoveOnDrop(PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let wrote_etc = std::fs::write(&etc_secret, HOST_SECRET).is_ok();
    let _cleanup = RemoveOnDrop(etc_secret.clone());
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());

    let mut probes = vec![
        "/root".to_owned(),
        format!("{home}/.ssh"),
        format!("{home}/.aws"),
        format!("{home}/.config"),
        "/etc/bytebot".to_owned(),
        "/etc/shadow".to_owned(),
        "/tmp/.X11-unix".to_owned(),
        "/var/run/docker.sock".to_owned(),
        "/run/docker.sock".to_owned(),
        tmp_secret.display().to_string(),
        host_sock.display().to_string(),
        env!("CARGO_MANIFEST_DIR").to_owned(),
    ];
    if wrote_etc {
        probes.push(etc_secret.display().to_string());
    }
    let mut argv = vec![
        "/bin/sh",
        "-c",
        r#"for p in "$@"; do if [ -e "$p" ]; then echo "VISIBLE $p"; cat "$p" 2>/dev/null; fi; done; ls -A /home"#,
        "probe",
    ];
    argv.extend(probes.iter().map(String::as_str));
    let o = run(&b, &spec(ws.path(), &argv)).await;
    let text = out(&o);
    assert!(o.success(), "{o:?}");
    assert!(
        !text.contains("VISIBLE"),
        "host paths visible inside: {text}"
    );
    assert!(!text.contains(HOST_SECRET), "{text}");
    assert_eq!(text.trim(), "bottle", "only the sandbox's own home: {text}");
}

#[tokio::test]
async fn writes_outside_the_workspace_fail_and_the_workspace_is_writable() {
    let Some(b) = backend().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let marker = format!("bottle-marker-{}", uuid::Uuid::new_v4().simple());
    let script = format!(
        r#"
for p in /usr/bottle-x /etc/bottle-x /bottle-x /bin/bottle-x /run/bottle/x /dev/bottle-x /proc/bottle-x; do
  if (echo x > "$p") 2>/dev/null; then echo "WROTE $p"; fi
done
echo inside > /tmp/{marker} && echo tmp-ok
echo home > "$HOME/.rc" && echo home-ok
mkdir -p /workspace/out && echo result > /workspace/out/file.txt && echo ws-ok
"#
    );
    let o = run(&b, &spec(ws.path(), &sh(&script))).await;
    let text = out(&o);
    assert!(!text.contains("WROTE"), "{text}\n{}", err(&o));
    assert!(
        text.contains("tmp-ok") && text.contains("home-ok") && text.contains("ws-ok"),
        "{text}\n{}",
        err(&o)
    );
    assert!(
        !Path::new("/tmp").join(&marker).exists(),
        "the sandbox's /tmp is the host's"
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("out/file.txt")).unwrap(),
        "result\n"
    );
}

#[tokio::test]
async fn setuid_and_setgid_files_cannot_be_planted_in_the_workspace() {
    let Some(b) = backend().await else { return };
    let ws = tempfile::tempdir().unwrap();
    // Workspace files belong to the host uid that runs the bottle (root here): a setuid bit
    // would hand that uid to whoever runs the file on the host.
    let script = r#"
echo '#!/bin/sh' > tool && chmod 755 tool && echo plain-ok
chmod u+s tool 2>/dev/null && echo "SET suid"
chmod g+s tool 2>/dev/null && echo "SET sgid"
chmod 4755 tool 2>/dev/null && echo "SET 4755"
for f in /usr/bin/su /usr/bin/passwd /usr/bin/mount /bin/su; do
  [ -u "$f" ] && cp -p "$f" ./copied 2>/dev/null && [ -u ./copied ] && echo "SET copied $f"
done
if command -v python3 >/dev/null; then
  python3 -c 'import os
try:
    os.close(os.open("created", os.O_CREAT | os.O_WRONLY, 0o4755)); print("SET created")
except OSError as e:
    print("create errno", e.errno)'
fi
true
"#;
    let o = run(&b, &spec(ws.path(), &sh(script))).await;
    let text = out(&o);
    assert!(text.contains("plain-ok"), "{text}\n{}", err(&o));
    assert!(!text.contains("SET"), "{text}");
    for entry in confine::list_files(ws.path(), 100).unwrap() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::symlink_metadata(ws.path().join(&entry.path))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o6000,
            0,
            "{} has mode {mode:o}",
            entry.path.display()
        );
    }
}

#[tokio::test]
async fn symlinks_out_of_the_workspace_are_refused_host_side() {
    let Some(b) = backend().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let script = r#"
ln -s /etc/passwd leak
ln -s ../../../../../../../../etc/hostname up
mkdir d && ln -s /etc d/etc
echo real > real.txt
"#;
    let o = run(&b, &spec(ws.path(), &sh(script))).await;
    assert!(o.success(), "{o:?}");
    for bad in ["leak", "up", "d/etc/passwd"] {
        let e = confine::read_file(ws.path(), Path::new(bad), 1 << 20).unwrap_err();
        assert!(matches!(e, ConfineError::Escape(_)), "{bad}: {e}");
    }
    assert_eq!(
        confine::read_file(ws.path(), Path::new("real.txt"), 100).unwrap(),
        b"real\n"
    );
    let listed = confine::list_files(ws.path(), 100).unwrap();
    let files: Vec<_> = listed
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .map(|e| e.path.clone())
        .collect();
    assert_eq!(files, [PathBuf::from("real.txt")]);
    assert_eq!(
        listed
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::Symlink { .. }))
            .count(),
        3
    );
}

#[tokio::test]
async fn new_unix_netlink_and_raw_sockets_are_refused() {
    let Some(b) = backend().await else { return };
    if !have("python3") {
        println!("skipping: python3 is not installed (apt-get install python3)");
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let script = r#"
import socket
def attempt(name, *args):
    try:
        socket.socket(*args).close()
        print(name, "OPENED")
    except OSError as e:
        print(name, "errno", e.errno)
attempt("unix", socket.AF_UNIX, socket.SOCK_STREAM)
attempt("unix-dgram", socket.AF_UNIX, socket.SOCK_DGRAM)
attempt("netlink", socket.AF_NETLINK, socket.SOCK_RAW, 0)
attempt("packet", socket.AF_PACKET, socket.SOCK_RAW, 0)
attempt("raw", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
attempt("tcp", socket.AF_INET, socket.SOCK_STREAM)
a, b = socket.socketpair(); print("socketpair ok")
print(open("/proc/self/status").read())
"#;
    let o = run(&b, &spec(ws.path(), &["python3", "-c", script])).await;
    let text = out(&o);
    for name in ["unix", "unix-dgram", "netlink", "packet", "raw"] {
        assert!(
            text.contains(&format!("{name} errno {}", libc::EPERM)),
            "{name}: {text}\n{}",
            err(&o)
        );
    }
    assert!(
        text.contains("tcp OPENED") && text.contains("socketpair ok"),
        "{text}"
    );
    // The command runs filtered, without privileges.
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    assert!(text.contains("Seccomp:\t2"), "{text}");
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
}

#[tokio::test]
async fn ptrace_io_uring_and_nested_namespaces_are_refused() {
    let Some(b) = backend().await else { return };
    if !have("python3") {
        println!("skipping: python3 is not installed (apt-get install python3)");
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let script = r#"
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
child = os.fork()
if child == 0:
    time.sleep(30); os._exit(0)
# Attaching to our own child would succeed without the filter.
r = libc.ptrace(16, child, 0, 0)
print("ptrace-attach", r, ctypes.get_errno())
r = libc.ptrace(0, 0, 0, 0)
print("ptrace-traceme", r, ctypes.get_errno())
params = ctypes.create_string_buffer(120)
r = libc.syscall(425, 4, params)
print("io_uring_setup", r, ctypes.get_errno())
r = libc.syscall(310, child, 0, 0, 0, 0, 0)
print("process_vm_readv", r, ctypes.get_errno())
r = libc.unshare(0x10000000)
print("unshare-user", r, ctypes.get_errno())
r = libc.syscall(250, 0, 0, 0, 0, 0)
print("keyctl", r, ctypes.get_errno())
os.kill(child, 9)
"#;
    let o = run(&b, &spec(ws.path(), &["python3", "-c", script])).await;
    let text = out(&o);
    for name in [
        "ptrace-attach",
        "ptrace-traceme",
        "io_uring_setup",
        "process_vm_readv",
        "unshare-user",
        "keyctl",
    ] {
        assert!(
            text.contains(&format!("{name} -1 {}", libc::EPERM)),
            "{name} was not refused with EPERM: {text}\n{}",
            err(&o)
        );
    }
    if have("strace") {
        let o = run(&b, &spec(ws.path(), &["strace", "-f", "true"])).await;
        assert!(!o.success(), "strace worked inside: {o:?}");
    }
}

/// A non-loopback IPv4 address of this host, if it has one.
fn host_address() -> Option<Ipv4Addr> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills our pointer; freed below.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = addrs;
    while !cur.is_null() {
        // SAFETY: walking the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null()
            && i32::from(unsafe { (*ifa.ifa_addr).sa_family }) == libc::AF_INET
        {
            // SAFETY: the family says this is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if !ip.is_loopback() {
                found = Some(ip);
                break;
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: freeing what getifaddrs allocated.
    unsafe { libc::freeifaddrs(addrs) };
    found
}

#[tokio::test]
async fn direct_tcp_reaches_neither_host_loopback_nor_any_address() {
    let Some(b) = backend().await else { return };
    let ws = tempfile::tempdir().unwrap();
    // Listeners on this machine only: the workplace allows no traffic to other addresses, and
    // an empty route table (checked below) already shows that nothing else is reachable.
    let lo = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    lo.set_nonblocking(true).unwrap();
    let any = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    any.set_nonblocking(true).unwrap();
    let lo_port = lo.local_addr().unwrap().port().to_string();
    let any_port = any.local_addr().unwrap().port().to_string();
    let host_ip = host_address().map(|ip| ip.to_string()).unwrap_or_default();
    let script = r#"
lo_port=$1; any_port=$2; host_ip=$3
if command -v bash >/dev/null; then
  bash -c "exec 3<>/dev/tcp/127.0.0.1/$lo_port" 2>/dev/null && echo "REACHED loopback"
  if [ -n "$host_ip" ]; then
    bash -c "exec 3<>/dev/tcp/$host_ip/$any_port" 2>/dev/null && echo "REACHED host $host_ip"
  fi
fi
if command -v python3 >/dev/null; then
  python3 - "$lo_port" "$any_port" "$host_ip" <<'EOF'
import socket, sys
lo_port, any_port, host_ip = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
targets = [("127.0.0.1", lo_port), ("127.0.0.1", any_port)]
if host_ip: targets.append((host_ip, any_port))
for t in targets:
    try:
        socket.create_connection(t, timeout=3).close(); print("REACHED", t)
    except OSError as e:
        print("refused", t, e.errno)
EOF
fi
echo "routes: $(tail -n +2 /proc/net/route | wc -l)"
echo "ifaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')"
"#;
    let mut argv = sh(script);
    argv.extend(["probe", &lo_port, &any_port, &host_ip]);
    let o = run(&b, &spec(ws.path(), &argv)).await;
    let text = out(&o);
    assert!(!text.contains("REACHED"), "{text}");
    assert!(text.contains("routes: 0"), "{text}");
    assert!(
        text.contains("ifaces: lo \n") || text.trim_end().ends_with("ifaces: lo"),
        "{text}"
    );
    for l in [&lo, &any] {
        assert_eq!(
            l.accept().unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "a connection from the sandbox reached the host"
        );
    }
}

/// A stand-in for the egress proxy on a unix socket: answers every request with 200 and a body
/// naming the request line, and records the request lines.
fn fake_proxy(path: &Path) -> Arc<Mutex<Vec<String>>> {
    let listener = UnixListener::bind(path).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let line = text.lines().next().unwrap_or("").to_owned();
                log.lock().unwrap().push(line.clone());
                let body = format!("proxied: {line}\n");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes());
            });
        }
    });
    seen
}

#[tokio::test]
async fn the_bridge_carries_http_proxy_requests_to_the_unix_socket() {
    let Some(b) = backend().await else { return };
    if !have("python3") {
        println!("skipping: python3 is not installed (apt-get install python3)");
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let sock = host.path().join("proxy.sock");
    let seen = fake_proxy(&sock);
    let ca = host.path().join("bundle.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nstand-in\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let script = r#"
import os, socket, urllib.request
print(urllib.request.urlopen("http://allowed.example/some/path?q=1", timeout=10).read().decode(), end="")
for k in ["HTTP_PROXY", "https_proxy", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "GIT_SSL_CAINFO"]:
    print(k, os.environ.get(k))
print("ca:", open(os.environ["SSL_CERT_FILE"]).read().splitlines()[1])
try:
    s = socket.socket(socket.AF_UNIX); s.connect("/run/bottle/proxy.sock"); print("UNIX-CONNECTED")
except OSError as e:
    print("direct unix errno", e.errno)
"#;
    let mut s = spec(ws.path(), &["python3", "-c", script]);
    s.proxy = Some(ProxyLink {
        socket: sock.clone(),
        ca_bundle: Some(ca.clone()),
    });
    let o = run(&b, &s).await;
    let text = out(&o);
    assert!(o.success(), "{text}\n{}", err(&o));
    assert!(
        text.starts_with("proxied: GET http://allowed.example/some/path?q=1 HTTP/1.1\n"),
        "{text}"
    );
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        ["GET http://allowed.example/some/path?q=1 HTTP/1.1"]
    );
    for want in [
        "HTTP_PROXY http://127.0.0.1:3128",
        "https_proxy http://127.0.0.1:3128",
        "ALL_PROXY http://127.0.0.1:3128",
        "NO_PROXY localhost,127.0.0.1,::1",
        "SSL_CERT_FILE /run/bottle/ca.pem",
        "NODE_EXTRA_CA_CERTS /run/bottle/ca.pem",
        "REQUESTS_CA_BUNDLE /run/bottle/ca.pem",
        "GIT_SSL_CAINFO /run/bottle/ca.pem",
        "ca: stand-in",
        "direct unix errno 1",
    ] {
        assert!(text.contains(want), "missing {want:?} in {text}");
    }

    if have("curl") {
        let mut s = spec(
            ws.path(),
            &["curl", "-sS", "--max-time", "10", "http://curl.example/x"],
        );
        s.proxy = Some(ProxyLink {
            socket: sock.clone(),
            ca_bundle: None,
        });
        let o = run(&b, &s).await;
        assert_eq!(
            out(&o),
            "proxied: GET http://curl.example/x HTTP/1.1\n",
            "{}",
            err(&o)
        );
    } else {
        println!("curl case skipped: curl is not installed (the python3 case covers the bridge)");
    }
}

#[tokio::test]
async fn without_a_proxy_there_is_no_listener_and_no_proxy_variable() {
    let Some(b) = backend().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let script = r#"env | grep -i _proxy; if bash -c 'exec 3<>/dev/tcp/127.0.0.1/3128' 2>/dev/null; then echo LISTENING; fi; echo done"#;
    let o = run(&b, &spec(ws.path(), &sh(script))).await;
    assert_eq!(out(&o), "done\n", "{}", err(&o));
}

#[tokio::test]
async fn ordinary_tools_find_users_certificates_and_temp_space() {
    let Some(b) = backend().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let script = r#"
echo "user=$(id -un) group=$(id -gn) host=$(hostname)"
ls /etc
[ -s /etc/ssl/certs/ca-certificates.crt ] && echo "ca-bundle ok"
ls /etc/ssl
if command -v python3 >/dev/null; then
  python3 -c 'import ssl, pwd, os, tempfile; print("python-cas", ssl.create_default_context().cert_store_stats()["x509_ca"] > 0); print("pw", pwd.getpwuid(os.getuid()).pw_dir); tempfile.TemporaryFile().write(b"x"); print("tempfile ok")'
fi
"#;
    let o = run(&b, &spec(ws.path(), &sh(script))).await;
    let text = out(&o);
    assert!(o.success(), "{text}\n{}", err(&o));
    assert!(text.contains("host=bottle"), "{text}");
    assert!(
        !text.contains("user=\n") && !text.contains("cannot find name"),
        "{text}\n{}",
        err(&o)
    );
    assert!(text.contains("ca-bundle ok"), "{text}");
    assert!(
        !text.contains("private"),
        "host TLS keys directory visible: {text}"
    );
    for must_not in ["shadow", "sudoers", "ssh\n", "bytebot"] {
        assert!(!text.contains(must_not), "/etc/{must_not} visible: {text}");
    }
    if have("python3") {
        assert!(text.contains("python-cas True"), "{text}\n{}", err(&o));
        assert!(
            text.contains("pw /home/bottle") && text.contains("tempfile ok"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn the_wall_limit_kills_a_long_sleep() {
    let Some(b) = backend().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let mut s = spec(ws.path(), &["sleep", "100"]);
    s.limits.wall = Duration::from_secs(1);
    let t0 = Instant::now();
    let o = run(&b, &s).await;
    assert!(o.timed_out, "{o:?}");
    assert_eq!(o.status, Termination::Signaled(libc::SIGKILL));
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "took {:?}",
        t0.elapsed()
    );
    assert!(!o.success());
}

#[tokio::test]
async fn output_flooding_is_capped_and_ends_the_run() {
    let Some(b) = backend().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let mut s = spec(ws.path(), &["yes"]);
    s.limits.output_bytes = 4096;
    s.limits.wall = Duration::from_secs(60);
    let t0 = Instant::now();
    let o = run(&b, &s).await;
    assert!(
        o.output_flood,
        "{:?}",
        (o.status, o.stdout.total, o.timed_out)
    );
    assert!(!o.timed_out);
    assert_eq!(o.stdout.bytes.len(), 4096);
    assert!(o.stdout.bytes.starts_with(b"y\ny\n"));
    assert!(
        o.stdout.truncated && o.stdout.total > 64 << 20,
        "total {}",
        o.stdout.total
    );
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn the_process_limit_stops_forking_and_a_fork_bomb_ends() {
    let Some(b) = backend().await else { return };
    if !have("python3") {
        println!("skipping: python3 is not installed (apt-get install python3)");
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let script = r#"
import os, time, signal
kids = []
try:
    for i in range(2000):
        pid = os.fork()
        if pid == 0:
            time.sleep(60); os._exit(0)
        kids.append(pid)
    print("forked", len(kids), "NO LIMIT")
except OSError as e:
    print("forked", len(kids), "then errno", e.errno)
for k in kids: os.kill(k, signal.SIGKILL)
"#;
    let mut s = spec(ws.path(), &["python3", "-c", script]);
    s.limits.processes = 24;
    let o = run(&b, &s).await;
    if o.enforcement.processes == Mechanism::None {
        println!(
            "skipping: the process limit is not enforceable here: {:?}",
            o.enforcement.warnings
        );
        return;
    }
    let text = out(&o);
    println!("process limit via {:?}: {text}", o.enforcement.processes);
    assert!(
        text.contains(&format!("then errno {}", libc::EAGAIN)),
        "{text}\n{}",
        err(&o)
    );
    let forked: usize = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(forked < 24, "forked {forked} with a limit of 24");
    if matches!(
        o.enforcement.processes,
        Mechanism::CgroupV1 | Mechanism::CgroupV2
    ) {
        assert!(o.process_limit_hit);
    }

    // The classic bomb: contained by the limit, ended by the wall clock.
    let mut s = spec(ws.path(), &["bash", "-c", ":(){ :|:& };:; sleep 100"]);
    s.limits.processes = 32;
    s.limits.wall = Duration::from_secs(3);
    let t0 = Instant::now();
    let o = run(&b, &s).await;
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t0.elapsed()
    );
    assert!(!o.success());
}

#[tokio::test]
async fn the_memory_limit_stops_a_hog() {
    let Some(b) = backend().await else { return };
    if !have("python3") {
        println!("skipping: python3 is not installed (apt-get install python3)");
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let script =
        "b = bytearray(1 << 30)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('allocated')";
    let mut s = spec(ws.path(), &["python3", "-c", script]);
    s.limits.memory_bytes = 128 << 20;
    let o = run(&b, &s).await;
    println!(
        "memory limit via {:?}: {:?} oom_killed={}",
        o.enforcement.memory, o.status, o.oom_killed
    );
    assert!(!o.success(), "{o:?}");
    assert!(!out(&o).contains("allocated"));
    if matches!(
        o.enforcement.memory,
        Mechanism::CgroupV1 | Mechanism::CgroupV2
    ) {
        assert!(o.oom_killed, "{o:?}");
    }
}

#[tokio::test]
async fn bad_specs_fail_with_clear_errors() {
    let Some(b) = backend().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let mut s = spec(ws.path(), &["true"]);
    s.workspace = ws.path().join("missing");
    let e = b.run_spec(&s).await.unwrap_err();
    assert!(matches!(e, SandboxError::WorkspaceMissing(_)), "{e}");
    assert!(e.to_string().contains("does not exist"));

    let e = Bwrap::with_program("/nonexistent/bwrap")
        .run_spec(&spec(ws.path(), &["true"]))
        .await
        .unwrap_err();
    assert!(matches!(e, SandboxError::BwrapMissing), "{e}");
    assert!(e.to_string().contains("apt-get install bubblewrap"));

    let mut s = spec(ws.path(), &["true"]);
    s.proxy = Some(ProxyLink {
        socket: ws.path().join("nope.sock"),
        ca_bundle: None,
    });
    let e = b.run_spec(&s).await.unwrap_err();
    assert!(matches!(e, SandboxError::InvalidSpec(_)), "{e}");
}

#[tokio::test]
async fn the_init_starts_the_command_quickly() {
    let Some(b) = backend().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let sock = host.path().join("proxy.sock");
    let _seen = fake_proxy(&sock);
    let rounds = 15;

    // Bare bwrap with a comparable root, for reference.
    let mut bare = Vec::new();
    for _ in 0..rounds {
        let t0 = Instant::now();
        let st = tokio::process::Command::new(b.program())
            .args([
                "--unshare-all",
                "--die-with-parent",
                "--ro-bind",
                "/usr",
                "/usr",
                "--symlink",
                "usr/bin",
                "/bin",
                "--symlink",
                "usr/lib",
                "/lib",
                "--symlink",
                "usr/lib64",
                "/lib64",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--",
                "/usr/bin/true",
            ])
            .status()
            .await
            .unwrap();
        assert!(st.success());
        bare.push(t0.elapsed());
    }
    let mut bottle = Vec::new();
    let mut startup = Vec::new();
    let mut s = spec(ws.path(), &["/usr/bin/true"]);
    s.proxy = Some(ProxyLink {
        socket: sock.clone(),
        ca_bundle: None,
    });
    for _ in 0..rounds {
        let t0 = Instant::now();
        let o = run(&b, &s).await;
        assert!(o.success(), "{o:?}");
        bottle.push(t0.elapsed());
        let st = o
            .startup
            .expect("the init reports when the command started");
        assert!(st <= o.duration, "{st:?} > {:?}", o.duration);
        startup.push(st);
    }
    bare.sort();
    bottle.sort();
    startup.sort();
    let median = |v: &Vec<Duration>| v[v.len() / 2];
    println!(
        "startup (median of {rounds}, `true`): bare bwrap whole run {:?}; bottle whole run (cgroup, \
         seccomp, bridge, cleanup) {:?}; bottle spawn-to-command-exec {:?} (min {:?})",
        median(&bare),
        median(&bottle),
        median(&startup),
        startup[0],
    );
}
