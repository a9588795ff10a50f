"""Fixtures for the Open WebUI tool tests.

Two kinds of gateway are used:
- `gateway`: the real `bytebot gateway` process (binary from $BYTEBOT_BIN,
  default <repo>/target/debug/bytebot) on 127.0.0.1:0 with a fresh config,
  policy and workspace in a temp folder. Tests that use it skip, with the
  reason, when the binary is missing or has no `gateway` subcommand.
- `stub_gateway` (tests/stub_gateway.py): a small server that speaks the
  wire contract of shared/specs/gateway.md and checks every signature with
  its own HMAC code, so the tool's own behaviour is tested everywhere.

How the real gateway is started is kept in three functions below —
`write_gateway_config`, `gateway_command` and the `LISTENING` pattern — so
the command line can follow the binary without touching the tests. `launch`
starts a `bytebot` command and waits for its gateway line; test_live_agent_step.py
uses it for its own `bytebot up --own-display` with an agent and a fake model.
"""

import hashlib
import hmac
import importlib.util
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import requests

HERE = Path(__file__).resolve().parent
TOOL_PATH = HERE.parent / "bytebot_tool.py"
REPO_ROOT = HERE.parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "bytebot"
STARTUP_TIMEOUT_S = 90  # a debug build may start its own Xvfb first
LISTENING = re.compile(r"gateway(?: listening on|\s+)(https?://127\.0\.0\.1:\d+)")

sys.path.insert(0, str(HERE))


def load_tool_module():
    """Load bytebot_tool.py from its file, as Open WebUI loads a pasted tool (not from a package)."""
    spec = importlib.util.spec_from_file_location("bytebot_tool", TOOL_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tool_module():
    return load_tool_module()


# ---------------------------------------------------------------- the real gateway


def gateway_binary() -> Path:
    return Path(os.environ.get("BYTEBOT_BIN") or DEFAULT_BIN)


def gateway_unavailable_reason() -> Optional[str]:
    """Why the real gateway cannot be started here, or None when it can."""
    binary = gateway_binary()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        return f"no bytebot binary at {binary} (build it with `cargo build -p bytebot-cli` or set BYTEBOT_BIN)"
    try:
        probe = subprocess.run(
            [str(binary), "gateway", "--help"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{binary} could not be run: {e}"
    if probe.returncode != 0:
        first = (probe.stderr or probe.stdout).strip().splitlines()
        return f"{binary} has no `gateway` subcommand yet ({first[0] if first else 'exit ' + str(probe.returncode)})"
    return None


@dataclass
class GatewayKey:
    """One client of the gateway: an HMAC key and a bearer token, both mapped to one policy profile."""

    key_id: str
    secret: str
    token: str
    profile: str = "openwebui"


def write_gateway_config(folder: Path, key: GatewayKey, workspace: Path) -> Path:
    """Write bytebot's config and policy into `folder`; returns the config file.

    `bytebot up` starts its own Xvfb desktop and the gateway on free loopback
    ports. The key signs with an HMAC secret kept in a 0600 file and also has
    a bearer token, stored only as its SHA-256 (the config format of
    crates/gateway/src/config.rs); its profile allows screenshot and
    edit_file anywhere in the workspace.
    """
    policy = folder / "policy.json"
    policy.write_text(
        """{
  "profiles": {
    "%(profile)s": {
      "intents": ["screenshot", "edit_file"],
      "files": {"read": ["**"], "write": ["**"], "max_bytes": 1048576},
      "rate_limit": {"per_minute": 6000, "burst": 1000}
    },
    "admin": {
      "intents": ["screenshot", "edit_file"],
      "files": {"read": ["**"], "write": ["**"]},
      "approver": true
    }
  }
}
"""
        % {"profile": key.profile}
    )
    secret_file = folder / "key.secret"
    secret_file.write_text(key.secret)
    secret_file.chmod(0o600)
    token_sha256 = hashlib.sha256(key.token.encode()).hexdigest()
    config = folder / "bytebot.toml"
    config.write_text(
        f"""data_dir = "{folder / 'data'}"
token = "{secrets.token_urlsafe(24)}"

[desktop]
listen = "127.0.0.1:0"
workspace = "{workspace}"
vnc = false

[agent]
listen = "127.0.0.1:0"

[gateway]
listen = "127.0.0.1:0"
policy = "{policy}"

[[gateway.keys]]
id = "{key.key_id}"
profile = "{key.profile}"
secret_file = "{secret_file}"
token_sha256 = "{token_sha256}"
"""
    )
    return config


def gateway_command(binary: Path, config: Path) -> list:
    """`bytebot up`: its own desktop on Xvfb plus the gateway, on free loopback ports."""
    return [str(binary), "--config", str(config), "up"]


@dataclass
class Gateway:
    """A running gateway: where it listens, the key it knows, its workspace."""

    url: str
    key: GatewayKey
    workspace: Path
    process: Any = None
    stdout_lines: list = field(default_factory=list)


def _clean_env() -> dict:
    # Our own BYTEBOT_* settings (a developer's token or config) must not leak in.
    return {k: v for k, v in os.environ.items() if not k.startswith("BYTEBOT_")}


@dataclass
class Launched:
    """A `bytebot` process started by `launch`, with the gateway URL it printed."""

    process: subprocess.Popen
    url: str
    stdout_lines: list
    stderr_log: Any

    def stop(self) -> None:
        _stop(self.process)
        self.stderr_log.close()


def launch(command: list, folder: Path, env: dict) -> Launched:
    """Start `command` in its own session and wait for its gateway line on stdout.

    Fails the test with the command, stdout and stderr when no gateway URL
    appears within STARTUP_TIMEOUT_S (or the process exits first).
    """
    stderr_path = folder / "bytebot.stderr.log"
    stderr_log = open(stderr_path, "wb")
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=stderr_log,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=folder,
        start_new_session=True,
    )
    lines: list = []
    found = threading.Event()
    url_box: list = []

    def drain():
        # Keep reading stdout for the whole run so the pipe never fills up.
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            match = LISTENING.search(line)
            if match and not found.is_set():
                url_box.append(match.group(1))
                found.set()
        found.set()

    threading.Thread(target=drain, daemon=True).start()
    found.wait(STARTUP_TIMEOUT_S)
    if not url_box:
        exit_code = process.poll()
        _stop(process)
        stderr_log.close()
        detail = stderr_path.read_text(errors="replace")[-4000:]
        when = f"before it exited with code {exit_code}" if exit_code is not None else f"within {STARTUP_TIMEOUT_S} s"
        pytest.fail(
            f"bytebot did not print its gateway address (`gateway listening on http://127.0.0.1:PORT` "
            f"or `gateway       http://127.0.0.1:PORT`) {when}.\n"
            f"command: {' '.join(command)}\n"
            f"stdout:\n" + "\n".join(lines[-50:]) + f"\nstderr:\n{detail}"
        )
    return Launched(process=process, url=url_box[0], stdout_lines=lines, stderr_log=stderr_log)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    """Start the real `bytebot gateway` once per test session (each xdist worker gets its own)."""
    reason = gateway_unavailable_reason()
    if reason:
        pytest.skip(f"live gateway tests skipped: {reason}")
    folder = tmp_path_factory.mktemp("gateway")
    workspace = folder / "workspace"
    workspace.mkdir()
    key = GatewayKey(
        key_id="owui-" + secrets.token_hex(4),
        secret=secrets.token_hex(32),
        token=secrets.token_urlsafe(32),
    )
    config = write_gateway_config(folder, key, workspace)
    running = launch(gateway_command(gateway_binary(), config), folder, _clean_env())
    yield Gateway(
        url=running.url, key=key, workspace=workspace, process=running.process, stdout_lines=running.stdout_lines
    )
    running.stop()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)  # its own session: also stops an Xvfb it started
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


def pytest_report_header(config):
    reason = gateway_unavailable_reason()
    if reason:
        return f"bytebot gateway: live tests will be skipped: {reason}"
    return f"bytebot gateway: {gateway_binary()}"


# ---------------------------------------------------------------- helpers


def signed_headers(key_id: str, secret: str, method: str, path_and_query: str, body: bytes = b"") -> dict:
    """The spec's v1 request signature, written independently of the tool's own code."""
    timestamp = str(int(time.time()))
    nonce = secrets.token_hex(12)
    message = f"v1\n{timestamp}\n{nonce}\n{method}\n{path_and_query}\n".encode() + body
    return {
        "X-BYTEBOT-KEY-ID": key_id,
        "X-BYTEBOT-TIMESTAMP": timestamp,
        "X-BYTEBOT-NONCE": nonce,
        "X-BYTEBOT-SIG": hmac.new(secret.encode(), message, hashlib.sha256).hexdigest(),
    }


def signed_get(base_url: str, key: GatewayKey, path: str) -> requests.Response:
    headers = signed_headers(key.key_id, key.secret, "GET", path)
    return requests.get(base_url + path, headers=headers, timeout=30)


def signed_post(base_url: str, key: GatewayKey, path: str, payload: dict) -> requests.Response:
    body = json.dumps(payload).encode()
    headers = signed_headers(key.key_id, key.secret, "POST", path, body)
    headers["Content-Type"] = "application/json"
    return requests.post(base_url + path, data=body, headers=headers, timeout=30)


class OpenWebUI:
    """Open WebUI's side of a tool call: collects emitted events and answers confirmations.

    `approve` is the answer to every dialog, or a list of answers, one per dialog in order
    (a dialog past the end of the list is declined).
    """

    def __init__(self, approve: Any, on_confirm: Optional[Callable[[dict], None]] = None):
        self.approve = approve
        self.on_confirm = on_confirm
        self.events: list = []
        self.calls: list = []

    async def emitter(self, event: dict) -> None:
        assert set(event) == {"type", "data"}, f"unexpected event shape: {event}"
        self.events.append(event)

    async def call(self, event: dict) -> Any:
        self.calls.append(event)
        if self.on_confirm is not None:
            self.on_confirm(event)
        if isinstance(self.approve, list):
            asked = len(self.calls) - 1
            return self.approve[asked] if asked < len(self.approve) else False
        return self.approve

    def confirmations(self) -> list:
        return [c for c in self.calls if c.get("type") == "confirmation"]

    def shown_text(self) -> str:
        """Everything a person saw: status lines, chat messages and dialogs."""
        parts = []
        for event in self.events + self.calls:
            data = event.get("data") or {}
            parts += [str(data.get(k, "")) for k in ("description", "content", "title", "message")]
        return "\n".join(parts)


TASK_ID = re.compile(r"task `([^`]+)`")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def task_id_of(text: str) -> str:
    match = TASK_ID.search(text)
    assert match, f"no task id in the tool's answer:\n{text}"
    return match.group(1)


def tool_with(tool_module, **valves):
    tool = tool_module.Tools()
    tool.valves = tool_module.Tools.Valves(**valves)
    return tool
