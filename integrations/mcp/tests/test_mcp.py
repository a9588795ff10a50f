"""The gateway's MCP server, end to end, with the real Python `mcp` client.

Both protocol eras are exercised where approval differs: mode "legacy"
(initialize handshake; the server asks with an `elicitation/create` request
while the call waits) and mode "auto" (this SDK and rmcp settle on the
stateless 2026-07-28 protocol; the server answers `InputRequiredResult` and
the client calls again with the person's answer).
"""

import base64
import hashlib
import json
import re
import secrets
import signal
import subprocess
import urllib.error
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Optional

import httpx2
import pytest
from mcp import Client, StdioServerParameters, types
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

TOOLS = ["bytebot_capabilities", "bytebot_plan", "bytebot_execute", "bytebot_screenshot"]
MODES = ["legacy", "auto"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- clients


class Person:
    """The person behind the client: answers each approval question the same way and keeps them."""

    def __init__(self, action: str = "accept", approve: Any = True):
        self.action = action
        self.approve = approve
        self.asked: list = []

    async def __call__(self, context, params):
        self.asked.append(params)
        if self.action != "accept":
            return types.ElicitResult(action=self.action)
        return types.ElicitResult(action="accept", content={"approve": self.approve})


@asynccontextmanager
async def http_mcp(stack, token: str, mode: str, person: Optional[Person] = None):
    """The Python client on streamable HTTP at /mcp with a bearer token."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http:
        transport = streamable_http_client(stack.gateway + "/mcp", http_client=http)
        async with Client(transport, mode=mode, elicitation_callback=person, read_timeout_seconds=120) as client:
            yield client


@asynccontextmanager
async def stdio_mcp(binary: Path, config: Path, mode: str, person: Optional[Person] = None, extra: tuple = ()):
    """The Python client launching `bytebot -c CONFIG mcp` and talking over its stdin/stdout."""
    params = StdioServerParameters(command=str(binary), args=["-c", str(config), "mcp", *extra])
    async with Client(params, mode=mode, elicitation_callback=person, read_timeout_seconds=120) as client:
        yield client


def api(stack, method: str, path: str, token: Optional[str] = None, body: Optional[dict] = None):
    """A plain HTTP call to the gateway; returns (status, parsed JSON or raw bytes, headers)."""
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(stack.gateway + path, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, _decode(resp.read(), resp.headers), resp.headers
    except urllib.error.HTTPError as e:
        return e.code, _decode(e.read(), e.headers), e.headers


def download(url: str):
    """GET a link as a chat UI would: no credentials."""
    with urllib.request.urlopen(url, timeout=60) as resp:
        return resp.status, resp.headers.get("content-type"), resp.read()


def _decode(raw: bytes, headers) -> Any:
    if "json" in (headers.get("content-type") or ""):
        return json.loads(raw)
    return raw


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


def check_era(client, mode):
    """Make sure the path under test is the one we think."""
    if mode == "legacy":
        assert client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS, client.protocol_version
    else:
        assert client.protocol_version in MODERN_PROTOCOL_VERSIONS, client.protocol_version


async def plan_screenshot(client):
    r = await client.call_tool("bytebot_plan", {"intent": "screenshot", "args": {"format": "png"}})
    assert not r.is_error, text_of(r)
    return r


def check_screenshot_result(stack, r):
    """A succeeded screenshot: an absolute signed link that serves the PNG, and the same PNG inline."""
    text = text_of(r)
    assert not r.is_error, text
    assert re.search(r"Task t_\w+ succeeded", text), text
    [artifact] = r.structured_content["artifacts"]
    assert artifact["kind"] == "screenshot" and artifact["media_type"] == "image/png"
    assert artifact["url"].startswith(stack.gateway + "/artifacts/"), artifact["url"]
    assert artifact["url"] in text
    status, content_type, body = download(artifact["url"])
    assert status == 200 and content_type == "image/png"
    assert body.startswith(PNG_MAGIC)
    assert hashlib.sha256(body).hexdigest() == artifact["sha256"]
    assert len(body) == artifact["bytes"]
    images = [c for c in r.content if c.type == "image"]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    assert base64.b64decode(images[0].data) == body
    return artifact


# ---------------------------------------------------------------- transport and auth


@pytest.mark.asyncio
async def test_mcp_endpoint_needs_the_gateway_credentials(stack):
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    for token, code in ((None, "missing_credentials"), ("not-a-token-" + secrets.token_hex(8), "bad_token")):
        status, body, headers = api(stack, "POST", "/mcp", token, init)
        assert status == 401 and body["error"]["code"] == code, body
        assert headers.get("www-authenticate", "").startswith("Bearer")
    req = urllib.request.Request(stack.gateway + "/mcp", data=json.dumps(init).encode(), method="POST")
    req.add_header("Authorization", f"Bearer {stack.token}")
    req.add_header("Content-Type", "application/json")
    req.add_header("Accept", "application/json, text/event-stream")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers.get("mcp-session-id")
        first = resp.read(4096).decode()
    assert '"serverInfo"' in first and '"bytebot"' in first, first


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES)
async def test_lists_the_four_tools(stack, mode):
    async with http_mcp(stack, stack.token, mode) as client:
        check_era(client, mode)
        tools = (await client.list_tools()).tools
        assert [t.name for t in tools] == TOOLS
        by_name = {t.name: t for t in tools}
        assert by_name["bytebot_execute"].input_schema["required"] == ["task_id"]
        assert "confirm_token" not in json.dumps([t.input_schema for t in tools])


@pytest.mark.asyncio
async def test_capabilities_are_those_of_the_callers_key(stack):
    async with http_mcp(stack, stack.token, "legacy") as client:
        r = await client.call_tool("bytebot_capabilities", {})
        assert not r.is_error, text_of(r)
        assert r.structured_content["key_id"] == "local"
        assert r.structured_content["profile"] == "admin"
        assert set(r.structured_content["intents"]) == {"screenshot", "edit_file"}
    async with http_mcp(stack, stack.auto_token, "legacy") as client:
        r = await client.call_tool("bytebot_capabilities", {})
        assert r.structured_content["key_id"] == "auto"
        assert set(r.structured_content["intents"]) == {"screenshot"}
        assert r.structured_content["intents"]["screenshot"]["needs_approval"] is False


# ---------------------------------------------------------------- approval through elicitation


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES)
async def test_plan_then_approve_in_the_client_then_execute(stack, mode):
    person = Person("accept", True)
    async with http_mcp(stack, stack.token, mode, person) as client:
        check_era(client, mode)
        planned = await plan_screenshot(client)
        text = text_of(planned)
        task_id = planned.structured_content["task_id"]
        assert task_id in text and "risk low" in text
        assert planned.structured_content["plan_digest"] in text
        assert "confirm_token" not in planned.structured_content
        assert "ct_" not in text and "ct_" not in json.dumps(planned.structured_content), "the model never sees the token"
        assert person.asked == [], "planning asks nobody"
        status, task, _ = api(stack, "GET", f"/tasks/{task_id}", stack.token)
        assert status == 200 and task["state"] == "planned"

        r = await client.call_tool("bytebot_execute", {"task_id": task_id})
        check_screenshot_result(stack, r)
        [question] = person.asked
        assert task_id in question.message and "risk low" in question.message
        assert planned.structured_content["plan_digest"] in question.message
        schema = question.requested_schema
        assert schema["required"] == ["approve"] and schema["properties"]["approve"]["type"] == "boolean"

        status, task, _ = api(stack, "GET", f"/tasks/{task_id}", stack.token)
        assert status == 200 and task["state"] == "succeeded"
        assert task["observations"] and task["observations"][0]["ok"]

        again = await client.call_tool("bytebot_execute", {"task_id": task_id})
        assert again.is_error and "cannot run again" in text_of(again), text_of(again)
        assert len(person.asked) == 1, "a used plan is not offered again"


@pytest.mark.parametrize(
    "mode,action,approve",
    [("legacy", "decline", True), ("legacy", "cancel", True), ("legacy", "accept", False), ("auto", "decline", True), ("auto", "accept", False)],
)
@pytest.mark.asyncio
async def test_a_refusal_runs_nothing(stack, mode, action, approve):
    async with http_mcp(stack, stack.token, mode, Person(action, approve)) as client:
        check_era(client, mode)
        task_id = (await plan_screenshot(client)).structured_content["task_id"]
        r = await client.call_tool("bytebot_execute", {"task_id": task_id})
        text = text_of(r)
        assert "Nothing ran" in text, text
        assert r.structured_content["status"] == "not_approved"
        assert not [c for c in r.content if c.type == "image"]
    status, task, _ = api(stack, "GET", f"/tasks/{task_id}", stack.token)
    assert status == 200
    assert task["state"] == "planned" and task["observations"] == [] and task["artifacts"] == []

    # The person may change their mind while the plan is valid.
    async with http_mcp(stack, stack.token, mode, Person("accept", True)) as client:
        check_screenshot_result(stack, await client.call_tool("bytebot_execute", {"task_id": task_id}))


@pytest.mark.asyncio
async def test_the_question_about_an_edit_shows_its_diff(stack):
    name = f"mcp-{secrets.token_hex(4)}.txt"
    person = Person("accept", True)
    async with http_mcp(stack, stack.token, "legacy", person) as client:
        planned = await client.call_tool(
            "bytebot_plan", {"intent": "edit_file", "args": {"path": name, "content": "hello from mcp\n"}}
        )
        assert not planned.is_error, text_of(planned)
        assert "+hello from mcp" in text_of(planned)
        assert "risk high" in text_of(planned)
        assert not (stack.workspace / name).exists()
        r = await client.call_tool("bytebot_execute", {"task_id": planned.structured_content["task_id"]})
        assert not r.is_error, text_of(r)
    [question] = person.asked
    assert f"+++ b/{name}" in question.message and "+hello from mcp" in question.message, question.message
    assert (stack.workspace / name).read_text() == "hello from mcp\n"


# ---------------------------------------------------------------- approval at the URL


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES)
async def test_without_elicitation_a_person_approves_at_the_url(stack, mode):
    async with http_mcp(stack, stack.token, mode) as client:
        check_era(client, mode)
        planned = await plan_screenshot(client)
        task_id = planned.structured_content["task_id"]
        url = planned.structured_content["approval_url"]
        assert url == f"{stack.gateway}/approve/{task_id}"
        assert url in text_of(planned)

        waiting = await client.call_tool("bytebot_execute", {"task_id": task_id})
        text = text_of(waiting)
        assert waiting.structured_content["status"] == "awaiting_approval"
        assert url in text and "Nothing has run" in text, text
        status, task, _ = api(stack, "GET", f"/tasks/{task_id}", stack.token)
        assert task["state"] == "planned" and task["observations"] == []

        # A person approves with an approver key (the main token: key local, profile admin).
        status, approved, _ = api(stack, "POST", f"/approve/{task_id}", stack.token)
        assert status == 200, approved
        assert approved["approved_by"] == "local"

        check_screenshot_result(stack, await client.call_tool("bytebot_execute", {"task_id": task_id}))


@pytest.mark.asyncio
async def test_a_key_that_may_not_approve_cannot_approve_at_the_url(stack):
    async with http_mcp(stack, stack.token, "legacy") as client:
        task_id = (await plan_screenshot(client)).structured_content["task_id"]
    status, body, _ = api(stack, "POST", f"/approve/{task_id}", stack.auto_token)
    assert status == 403 and body["error"]["code"] == "not_an_approver"
    async with http_mcp(stack, stack.token, "legacy") as client:
        r = await client.call_tool("bytebot_execute", {"task_id": task_id})
        assert r.structured_content["status"] == "awaiting_approval"


# ---------------------------------------------------------------- bytebot_screenshot


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES)
async def test_screenshot_tool_asks_then_runs_in_one_call(stack, mode):
    person = Person("accept", True)
    async with http_mcp(stack, stack.token, mode, person) as client:
        check_era(client, mode)
        r = await client.call_tool("bytebot_screenshot", {})
        check_screenshot_result(stack, r)
        assert len(person.asked) == 1 and "screenshot" in person.asked[0].message


@pytest.mark.asyncio
async def test_screenshot_tool_without_elicitation_waits_for_the_url(stack):
    async with http_mcp(stack, stack.token, "legacy") as client:
        r = await client.call_tool("bytebot_screenshot", {"format": "jpeg"})
        assert r.structured_content["status"] == "awaiting_approval"
        task_id = r.structured_content["task_id"]
        assert f"/approve/{task_id}" in text_of(r)
    status, task, _ = api(stack, "GET", f"/tasks/{task_id}", stack.token)
    assert task["state"] == "planned" and task["args"] == {"format": "jpeg"}


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES)
async def test_a_profile_that_auto_approves_low_risk_is_not_asked(stack, mode):
    person = Person("decline")
    async with http_mcp(stack, stack.auto_token, mode, person) as client:
        r = await client.call_tool("bytebot_screenshot", {})
        check_screenshot_result(stack, r)
    assert person.asked == []


# ---------------------------------------------------------------- binding and errors


@pytest.mark.asyncio
async def test_another_key_cannot_run_the_task(stack):
    async with http_mcp(stack, stack.token, "legacy") as client:
        task_id = (await plan_screenshot(client)).structured_content["task_id"]
    person = Person("accept", True)
    async with http_mcp(stack, stack.auto_token, "legacy", person) as client:
        r = await client.call_tool("bytebot_execute", {"task_id": task_id})
        assert r.is_error and "not_found" in text_of(r), text_of(r)
    assert person.asked == []
    status, task, _ = api(stack, "GET", f"/tasks/{task_id}", stack.token)
    assert task["state"] == "planned"


@pytest.mark.asyncio
async def test_bad_arguments_and_denied_intents_are_tool_errors(stack):
    async with http_mcp(stack, stack.token, "legacy") as client:
        r = await client.call_tool("bytebot_plan", {"intent": "screenshot", "args": {"format": "gif"}})
        assert r.is_error and "args.format" in text_of(r), text_of(r)
        r = await client.call_tool("bytebot_plan", {"intent": "browse", "args": {"url": "https://example.com"}})
        assert r.is_error and "denied" in text_of(r) and "rule:" in text_of(r), text_of(r)
        r = await client.call_tool("bytebot_execute", {"task_id": "t_" + "0" * 32})
        assert r.is_error and "not_found" in text_of(r), text_of(r)


# ---------------------------------------------------------------- stdio


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES)
async def test_stdio_lists_tools_and_runs_an_approved_screenshot(bytebot_bin, stdio_config, mode):
    person = Person("accept", True)
    async with stdio_mcp(bytebot_bin, stdio_config, mode, person) as client:
        check_era(client, mode)
        assert [t.name for t in (await client.list_tools()).tools] == TOOLS
        caps = await client.call_tool("bytebot_capabilities", {})
        assert caps.structured_content["key_id"] == "local" and caps.structured_content["profile"] == "admin"
        r = await client.call_tool("bytebot_screenshot", {})
        assert not r.is_error, text_of(r)
        assert len(person.asked) == 1
        [image] = [c for c in r.content if c.type == "image"]
        assert base64.b64decode(image.data).startswith(PNG_MAGIC)
        assert r.structured_content["status"] == "succeeded"


@pytest.mark.asyncio
async def test_stdio_decline_runs_nothing(bytebot_bin, stdio_config):
    async with stdio_mcp(bytebot_bin, stdio_config, "legacy", Person("decline")) as client:
        r = await client.call_tool("bytebot_screenshot", {})
        assert r.structured_content["status"] == "not_approved", text_of(r)
        assert not [c for c in r.content if c.type == "image"]


@pytest.mark.asyncio
async def test_stdio_key_flag_acts_as_that_key(bytebot_bin, stdio_config):
    person = Person("decline")
    async with stdio_mcp(bytebot_bin, stdio_config, "legacy", person, extra=("--key", "auto")) as client:
        caps = await client.call_tool("bytebot_capabilities", {})
        assert caps.structured_content["key_id"] == "auto" and caps.structured_content["profile"] == "auto"
        r = await client.call_tool("bytebot_screenshot", {})
        assert not r.is_error and r.structured_content["status"] == "succeeded", text_of(r)
    assert person.asked == [], "profile auto auto-approves low risk"


def test_stdio_unknown_key_is_a_config_error(bytebot_bin, stdio_config):
    done = subprocess.run(
        [str(bytebot_bin), "-c", str(stdio_config), "mcp", "--key", "nobody"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert "nobody" in done.stderr and "auto" in done.stderr and "local" in done.stderr, done.stderr
    assert done.stdout == ""


def test_stdio_stdout_carries_only_protocol_messages(bytebot_bin, stdio_config):
    process = subprocess.Popen(
        [str(bytebot_bin), "-c", str(stdio_config), "mcp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }
    try:
        out, err = process.communicate(json.dumps(init).encode() + b"\n", timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"bytebot mcp did not exit when stdin closed; stderr:\n{err.decode(errors='replace')[-2000:]}")
    lines = out.decode().splitlines()
    assert lines, err.decode(errors="replace")
    messages = [json.loads(line) for line in lines]  # every stdout line is JSON-RPC
    assert messages[0]["id"] == 1 and messages[0]["result"]["serverInfo"]["name"] == "bytebot"
    assert process.returncode == 0, err.decode(errors="replace")
    assert b"serving MCP on stdio" in err, "logs go to stderr"


def test_gateway_stops_while_an_mcp_client_keeps_a_stream_open(bytebot_bin, stdio_config):
    """MCP clients hold a GET stream open for as long as they run; Ctrl+C must still stop the gateway."""
    process = subprocess.Popen(
        [str(bytebot_bin), "-c", str(stdio_config), "gateway"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        m = re.search(r"gateway listening on (http://127\.0\.0\.1:\d+)", line)
        assert m, f"no `gateway listening on` line: {line!r}"
        base = m.group(1)
        token = re.search(r'token = "([^"]+)"', stdio_config.read_text()).group(1)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}

        def post(body, session=None):
            req = urllib.request.Request(base + "/mcp", data=json.dumps(body).encode(), method="POST")
            for k, v in headers.items():
                req.add_header(k, v)
            req.add_header("Content-Type", "application/json")
            req.add_header("MCP-Protocol-Version", "2025-06-18")
            if session:
                req.add_header("Mcp-Session-Id", session)
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.headers.get("mcp-session-id")

        _, session = post(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
            }
        )
        assert session
        assert post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session)[0] == 202
        req = urllib.request.Request(base + "/mcp", method="GET")
        req.add_header("Authorization", headers["Authorization"])
        req.add_header("Accept", "text/event-stream")
        req.add_header("MCP-Protocol-Version", "2025-06-18")
        req.add_header("Mcp-Session-Id", session)
        stream = urllib.request.urlopen(req, timeout=60)
        assert stream.status == 200
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the gateway did not stop while an MCP stream was open")
        assert code == 0, process.stderr.read().decode(errors="replace")[-2000:]
        stream.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
