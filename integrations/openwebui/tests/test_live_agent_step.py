"""An agent task's flagged step, end to end: the Open WebUI tool against `bytebot up`.

`bytebot up --own-display` runs its own Xvfb desktop, the gateway and the agent.
The agent's model is OpenAI's computer-use model behind a fake Responses API
server in this file (real JSON shapes; every request body is recorded). The
fake flags the agent's first click with a pending safety check, so the
gateway's `task` execute answers `needs_approval` with a follow-up plan; the
tool must ask the person again and execute the follow-up only on approval,
or cancel it (and so the agent task) on refusal.
"""

import asyncio
import json
import re
import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import (
    GatewayKey,
    OpenWebUI,
    _clean_env,
    gateway_binary,
    gateway_unavailable_reason,
    launch,
    signed_get,
    signed_post,
    task_id_of,
    tool_with,
)

pytestmark = pytest.mark.asyncio

API_KEY = "sk-test-not-real"
FOLLOW_UP = re.compile(r"follow-up task `([^`]+)`")
# Names the child must not inherit: a display to drive, or a real provider's credentials.
UNSET = ("DISPLAY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "OLLAMA_HOST")


def responses(response_id: str, output: list) -> dict:
    """A Responses API answer as OpenAI's API reference shows one (`POST /v1/responses`)."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": 1741446088,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "model": "computer-use-preview-2025-03-11",
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "store": True,
        "truncation": "auto",
        "usage": {
            "input_tokens": 1000,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 20,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 1020,
        },
    }


def flagged_click(n: int) -> dict:
    """The model clicks, and OpenAI flags the click with a pending safety check."""
    return responses(
        f"resp_{n}",
        [
            {
                "type": "computer_call",
                "id": f"cu_{n}",
                "call_id": f"call_{n}",
                "action": {"type": "click", "button": "left", "x": 5, "y": 5},
                "pending_safety_checks": [
                    {
                        "id": f"sc_{n}",
                        "code": "malicious_instructions",
                        "message": "The page may contain instructions you did not give.",
                    }
                ],
                "status": "completed",
            }
        ],
    )


def finish(n: int, message: str) -> dict:
    """The model ends the task through the agent's set_task_status function."""
    return responses(
        f"resp_{n}",
        [
            {
                "type": "function_call",
                "id": f"fc_{n}",
                "call_id": f"call_{n}",
                "name": "set_task_status",
                "arguments": json.dumps({"status": "completed", "message": message}),
                "status": "completed",
            }
        ],
    )


class FakeResponses:
    """OpenAI's Responses API on 127.0.0.1:0: answers POST …/responses from a script, records every request."""

    def __init__(self):
        self.replies: list = []
        self.seen: list = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with fake.lock:
                    fake.seen.append(
                        {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                    )
                    reply = fake.replies.pop(0) if fake.replies and self.path.endswith("/responses") else None
                if reply is None:
                    # OpenAI's error shape; fails the agent's task visibly instead of hanging it.
                    status = 500
                    reply = {
                        "error": {
                            "message": f"fake OpenAI: no scripted answer for POST {self.path}",
                            "type": "server_error",
                            "param": None,
                            "code": None,
                        }
                    }
                else:
                    status = 200
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def script(self, *replies: dict) -> int:
        """Replace the queued answers; returns how many requests were seen so far."""
        with self.lock:
            self.replies = list(replies)
            return len(self.seen)

    def requests_since(self, start: int) -> list:
        with self.lock:
            return list(self.seen[start:])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def unavailable_reason():
    if shutil.which("Xvfb") is None:
        return "Xvfb is not installed (apt-get install xvfb); `bytebot up --own-display` needs it"
    reason = gateway_unavailable_reason()
    if reason:
        return reason
    probe = subprocess.run(
        [str(gateway_binary()), "up", "--help"], capture_output=True, text=True, timeout=60
    )
    if "--own-display" not in probe.stdout:
        return f"{gateway_binary()} has no `up --own-display` yet"
    return None


def write_config(folder: Path, key: GatewayKey, openai_url: str) -> Path:
    """bytebot.toml for `up`: desktop, gateway and agent on free loopback ports, the OpenAI
    provider pointed at the fake, and a key whose profile may hand tasks to the agent."""
    policy = folder / "policy.json"
    policy.write_text(
        json.dumps(
            {
                "profiles": {
                    key.profile: {"intents": ["screenshot", "task"], "rate_limit": {"per_minute": 6000, "burst": 1000}},
                    "admin": {"intents": ["screenshot", "task"], "approver": True},
                }
            },
            indent=2,
        )
    )
    secret_file = folder / "key.secret"
    secret_file.write_text(key.secret)
    secret_file.chmod(0o600)
    api_key_file = folder / "openai.key"
    api_key_file.write_text(API_KEY)
    api_key_file.chmod(0o600)
    config = folder / "bytebot.toml"
    config.write_text(
        f"""data_dir = "{folder / 'data'}"

[desktop]
listen = "127.0.0.1:0"
vnc = false

[gateway]
listen = "127.0.0.1:0"
policy = "{policy}"

[[gateway.keys]]
id = "{key.key_id}"
profile = "{key.profile}"
secret_file = "{secret_file}"

[agent]
listen = "127.0.0.1:0"

[agent.providers.oa]
kind = "openai"
base_url = "{openai_url}"
api_key_file = "{api_key_file}"

[[agent.models]]
id = "cua"
provider = "oa"
name = "computer-use-preview"
max_long_edge = 1280
"""
    )
    return config


@dataclass
class Up:
    """A running `bytebot up`: its gateway's URL, the tool's key, and the fake OpenAI it uses."""

    url: str
    key: GatewayKey
    fake: FakeResponses


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        print(f"live agent-step tests skipped: {reason}")
        pytest.skip(f"live agent-step tests skipped: {reason}")
    folder = tmp_path_factory.mktemp("up")
    fake = FakeResponses()
    key = GatewayKey(key_id="owui-" + secrets.token_hex(4), secret=secrets.token_hex(32), token="")
    config = write_config(folder, key, fake.url)
    env = {k: v for k, v in _clean_env().items() if k not in UNSET}
    env["BYTEBOT_TOKEN"] = "main-" + secrets.token_urlsafe(24)
    running = launch([str(gateway_binary()), "--config", str(config), "up", "--own-display"], folder, env)
    yield Up(running.url, key, fake)
    running.stop()
    fake.stop()


@pytest.fixture
def received_tokens(tool_module, monkeypatch):
    """Every confirm token the tool received from the gateway (plans and follow-up plans)."""
    tokens: list = []
    original = tool_module.GatewayClient.request

    def request(self, method, path, payload=None):
        answer = original(self, method, path, payload)
        for plan in (answer, answer.get("next_plan")):
            if isinstance(plan, dict) and plan.get("confirm_token"):
                tokens.append(plan["confirm_token"])
        return answer

    monkeypatch.setattr(tool_module.GatewayClient, "request", request)
    return tokens


def the_tool(tool_module, up):
    return tool_with(tool_module, gateway_url=up.url, key_id=up.key.key_id, secret=up.key.secret, timeout_s=120)


def gateway_task(up, task_id: str) -> dict:
    response = signed_get(up.url, up.key, f"/tasks/{task_id}")
    assert response.status_code == 200, response.text
    return response.json()


def assert_no_token_shown(ui: OpenWebUI, text: str, tokens: list) -> None:
    # One token for the task's plan, one for the follow-up: the tool held both, nobody saw them.
    assert len(tokens) == 2, tokens
    everything = text + "\n" + repr(ui.events) + repr(ui.calls)
    for token in tokens:
        assert token not in everything


async def test_an_approved_flagged_step_runs_and_openai_hears_the_acknowledgement(tool_module, up, received_tokens):
    start = up.fake.script(flagged_click(1), finish(2, "tidied after approval"))
    ui = OpenWebUI(approve=[True, True])
    text = await the_tool(tool_module, up).desktop_action(
        intent="task",
        args_json='{"prompt": "tidy the desktop", "model": "cua"}',
        __event_emitter__=ui.emitter,
        __event_call__=ui.call,
    )

    seen = up.fake.requests_since(start)
    assert len(seen) == 2, f"{text}\n{seen}"
    first, second = seen
    assert first["path"] == "/v1/responses"
    assert first["headers"].get("authorization") == f"Bearer {API_KEY}"
    assert first["body"]["model"] == "computer-use-preview"
    assert "tidy the desktop" in json.dumps(first["body"])
    # The person's approval reached OpenAI as the acknowledgement of exactly that check.
    outputs = [i for i in second["body"]["input"] if i.get("type") == "computer_call_output"]
    assert outputs, second["body"]
    assert outputs[0]["call_id"] == "call_1"
    assert outputs[0]["acknowledged_safety_checks"][0]["id"] == "sc_1", outputs[0]

    dialogs = ui.confirmations()
    assert len(dialogs) == 2, dialogs
    assert "Run bytebot task?" in dialogs[0]["data"]["title"]
    follow_up = dialogs[1]["data"]
    assert "flagged step" in follow_up["title"] and "high" in follow_up["title"], follow_up
    assert "The agent stopped before a step its model's provider flagged" in follow_up["message"]
    assert "instructions you did not give" in follow_up["message"], follow_up["message"]

    next_id = re.search(r"bytebot agent_step task `([^`]+)`: succeeded\.", text)
    assert next_id, text
    assert "tidied after approval" in text
    assert gateway_task(up, next_id.group(1))["state"] == "succeeded"
    assert gateway_task(up, task_id_of(text))["state"] == "needs_approval"
    assert_no_token_shown(ui, text, received_tokens)


async def test_a_declined_flagged_step_cancels_the_agent_task(tool_module, up, received_tokens):
    start = up.fake.script(flagged_click(3), finish(4, "must not be asked for"))
    ui = OpenWebUI(approve=[True, False])
    text = await the_tool(tool_module, up).desktop_action(
        intent="task",
        args_json='{"prompt": "tidy it again", "model": "cua"}',
        __event_emitter__=ui.emitter,
        __event_call__=ui.call,
    )

    assert len(ui.confirmations()) == 2
    assert "The agent task was cancelled." in text, text
    match = FOLLOW_UP.search(text)
    assert match, text
    follow_up = gateway_task(up, match.group(1))
    assert follow_up["state"] == "cancelled", follow_up
    # The agent task itself is cancelled: the gateway no longer plans an approval for it.
    action = follow_up["plan"][0]["action"]
    again = signed_post(
        up.url,
        up.key,
        "/plan",
        {"intent": "agent_step", "args": {"agent_task_id": action["agent_task_id"], "call_id": action["call_id"]}},
    )
    assert again.status_code == 422 and "CANCELLED" in again.json()["error"]["message"], again.text
    # Nothing of the agent ran after the refusal: OpenAI heard only the first request.
    await asyncio.sleep(1.0)
    assert len(up.fake.requests_since(start)) == 1, up.fake.requests_since(start)
    assert_no_token_shown(ui, text, received_tokens)
