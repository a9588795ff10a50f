"""Fixtures for the MCP server tests, driven by the real Python `mcp` client.

`stack` starts the real binary once per test session (each xdist worker gets
its own): `bytebot -c CONFIG up`, which starts its own Xvfb desktop and the
gateway on free loopback ports and prints both URLs. Its config holds:

- the main token (key `local`, profile `admin`, an approver), and
- key `auto` (bearer token, profile `auto`, which auto-approves low risk),

with a policy file written here. `stdio_config` is a second config for
`bytebot -c CONFIG mcp`: its own data folder and store, driving the desktop of
`stack` (same token, which the desktop checks).

Tests skip, printing the reason, when the binary is missing or has no `mcp`
subcommand. Set BYTEBOT_BIN to test another build. The client side (the
Python `mcp` SDK, the person answering approval questions) is in test_mcp.py.
"""

import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "bytebot"
STARTUP_TIMEOUT_S = 120  # a debug build starts its own Xvfb first
DESKTOP_LINE = re.compile(r"desktop API\s+(http://127\.0\.0\.1:\d+)")
GATEWAY_LINE = re.compile(r"gateway\s+(http://127\.0\.0\.1:\d+)")

POLICY = {
    "profiles": {
        "admin": {
            "intents": ["screenshot", "edit_file"],
            "files": {"read": ["**"], "write": ["**"], "max_bytes": 1048576},
            "rate_limit": {"per_minute": 6000, "burst": 1000},
            "approver": True,
        },
        "auto": {
            "intents": ["screenshot"],
            "auto_approve": ["low"],
            "rate_limit": {"per_minute": 6000, "burst": 1000},
        },
    }
}


def bytebot_binary() -> Path:
    return Path(os.environ.get("BYTEBOT_BIN") or DEFAULT_BIN)


def unavailable_reason() -> Optional[str]:
    """Why the real binary cannot be used here, or None when it can."""
    binary = bytebot_binary()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        return f"no bytebot binary at {binary} (build it with `cargo build -p bytebot-cli` or set BYTEBOT_BIN)"
    try:
        probe = subprocess.run([str(binary), "mcp", "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{binary} could not be run: {e}"
    if probe.returncode != 0:
        first = (probe.stderr or probe.stdout).strip().splitlines()
        return f"{binary} has no `mcp` subcommand ({first[0] if first else 'exit ' + str(probe.returncode)})"
    return None


def clean_env() -> dict:
    """Our environment without a developer's BYTEBOT_* settings or display."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEBOT_")}
    env.pop("DISPLAY", None)  # so `up` starts its own Xvfb
    return env


@dataclass
class Stack:
    """A running `bytebot up`: its URLs, credentials and folders."""

    gateway: str
    desktop: str
    token: str
    auto_token: str
    folder: Path
    workspace: Path
    policy: Path
    process: Any = None
    lines: list = field(default_factory=list)


def write_config(path: Path, data_dir: Path, token: str, policy: Path, workspace: Path, auto_token: str, desktop_url: str = "") -> None:
    desktop = f'desktop_url = "{desktop_url}"\n' if desktop_url else ""
    path.write_text(
        f"""data_dir = "{data_dir}"
token = "{token}"

[log]
level = "info"

[desktop]
listen = "127.0.0.1:0"
workspace = "{workspace}"
vnc = false

[agent]
listen = "127.0.0.1:0"

[gateway]
listen = "127.0.0.1:0"
policy = "{policy}"
{desktop}
[[gateway.keys]]
id = "auto"
profile = "auto"
token_sha256 = "{hashlib.sha256(auto_token.encode()).hexdigest()}"
"""
    )


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"MCP tests skipped: {reason}")
    folder = tmp_path_factory.mktemp("mcp-stack")
    workspace = folder / "workspace"
    workspace.mkdir()
    policy = folder / "policy.json"
    policy.write_text(json.dumps(POLICY, indent=2))
    token = secrets.token_urlsafe(24)
    auto_token = secrets.token_urlsafe(24)
    config = folder / "bytebot.toml"
    write_config(config, folder / "data", token, policy, workspace, auto_token)
    command = [str(bytebot_binary()), "-c", str(config), "up"]
    stderr_log = open(folder / "stderr.log", "wb")
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=stderr_log,
        stdin=subprocess.DEVNULL,
        env=clean_env(),
        cwd=folder,
        start_new_session=True,  # its Xvfb is in the same group; stopped with it
    )
    lines: list = []
    urls: dict = {}
    ready = threading.Event()

    def drain():
        # Read stdout for the whole run so the pipe never fills up.
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            for name, pattern in (("desktop", DESKTOP_LINE), ("gateway", GATEWAY_LINE)):
                m = pattern.search(line)
                if m and name not in urls:
                    urls[name] = m.group(1)
            if len(urls) == 2:
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    ready.wait(STARTUP_TIMEOUT_S)
    if len(urls) != 2:
        code = process.poll()
        stop(process)
        stderr_log.close()
        detail = (folder / "stderr.log").read_text(errors="replace")[-4000:]
        pytest.fail(
            f"`{' '.join(command)}` did not print the desktop and gateway URLs "
            f"({'exit code ' + str(code) if code is not None else f'within {STARTUP_TIMEOUT_S} s'}).\n"
            "stdout:\n" + "\n".join(lines[-40:]) + f"\nstderr:\n{detail}"
        )
    yield Stack(
        gateway=urls["gateway"],
        desktop=urls["desktop"],
        token=token,
        auto_token=auto_token,
        folder=folder,
        workspace=workspace,
        policy=policy,
        process=process,
        lines=lines,
    )
    stop(process)
    stderr_log.close()


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


@pytest.fixture(scope="session")
def stdio_config(stack, tmp_path_factory) -> Path:
    """A config for `bytebot mcp`: own data folder, the stack's desktop."""
    folder = tmp_path_factory.mktemp("mcp-stdio")
    config = folder / "bytebot.toml"
    write_config(config, folder / "data", stack.token, stack.policy, stack.workspace, stack.auto_token, stack.desktop)
    return config


@pytest.fixture(scope="session")
def bytebot_bin() -> Path:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"MCP tests skipped: {reason}")
    return bytebot_binary()


def pytest_report_header(config):
    reason = unavailable_reason()
    return f"bytebot MCP: tests will be skipped: {reason}" if reason else f"bytebot MCP: {bytebot_binary()}"
