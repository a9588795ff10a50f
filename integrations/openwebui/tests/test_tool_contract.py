"""The tool's own behaviour, against a server that keeps the gateway's wire contract.

These run on any machine (no bytebot binary needed): real HTTP on loopback,
signatures checked by the stub's own HMAC code, and Open WebUI's calling
convention (`__event_emitter__`, `__event_call__`) as Open WebUI uses it.
"""

import hashlib
import hmac
import inspect
import socket
import uuid

import pydantic
import pytest
import requests

from conftest import IMAGE, OpenWebUI, task_id_of, tool_with
from stub_gateway import StubGateway

pytestmark = pytest.mark.asyncio

EXPECTED_TOOLS = {
    "screenshot",
    "open_app",
    "browse",
    "edit_file",
    "run_command",
    "desktop_action",
    "bytebot_capabilities",
}


@pytest.fixture
def stub(tmp_path):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    server = StubGateway("owui-test", "s3cret-" + uuid.uuid4().hex, "tok-" + uuid.uuid4().hex, workspace).start()
    yield server
    server.stop()


def signed_tool(tool_module, stub, **extra):
    return tool_with(tool_module, gateway_url=stub.url, key_id=stub.key_id, secret=stub.secret, **extra)


def everything_sent(ui: OpenWebUI, text: str) -> str:
    return text + "\n" + repr(ui.events) + repr(ui.calls)


async def test_open_webui_sees_exactly_the_tools_with_typed_documented_arguments(tool_module):
    tools = tool_module.Tools()
    # Open WebUI's discovery: every callable, non-dunder, non-class attribute is a tool.
    found = {
        name
        for name in dir(tools)
        if callable(getattr(tools, name)) and not name.startswith("__") and not inspect.isclass(getattr(tools, name))
    }
    assert found == EXPECTED_TOOLS
    for name in found:
        method = getattr(tools, name)
        assert inspect.iscoroutinefunction(method), name
        doc = inspect.getdoc(method) or ""
        fields = {}
        for param in inspect.signature(method).parameters.values():
            if param.name.startswith("__"):
                continue
            assert param.annotation is not inspect.Parameter.empty, f"{name}({param.name}) needs a type hint"
            assert f":param {param.name}:" in doc, f"{name} docstring must describe {param.name}"
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[param.name] = (param.annotation, default)
        # Open WebUI builds the JSON schema the model sees the same way.
        schema = pydantic.create_model(name, **fields).model_json_schema()
        assert set(schema.get("properties", {})) == set(fields)


async def test_signature_is_the_v1_hmac_of_the_spec(tool_module):
    body = b'{"intent":"screenshot","args":{}}'
    expected = hmac.new(
        b"k3y", b"v1\n1700000000\nn0nce\nPOST\n/plan?wait=false\n" + body, hashlib.sha256
    ).hexdigest()
    assert tool_module.sign_request("k3y", "1700000000", "n0nce", "post", "/plan?wait=false", body) == expected


async def test_approved_screenshot_runs_once_and_shows_the_image(tool_module, stub):
    ui = OpenWebUI(approve=True)
    text = await signed_tool(tool_module, stub).screenshot(__event_emitter__=ui.emitter, __event_call__=ui.call)

    assert ": succeeded." in text, text
    task_id = task_id_of(text)
    assert stub.executed == [task_id]
    assert len(ui.confirmations()) == 1
    assert "low" in ui.confirmations()[0]["data"]["message"]
    url = IMAGE.findall(text)[0]
    assert url.startswith(stub.url + "/artifacts/")
    picture = requests.get(url, timeout=10)
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG\r\n\x1a\n")
    # Status lines end with a final done=True so the UI stops its spinner.
    statuses = [e["data"] for e in ui.events if e["type"] == "status"]
    assert statuses and statuses[-1]["done"] is True
    # The model must never hold the confirm token, or it could execute without the person.
    token = stub.tasks[task_id]["confirm_token"]
    assert token not in everything_sent(ui, text)


async def test_public_url_is_used_for_links_the_browser_opens(tool_module, stub):
    ui = OpenWebUI(approve=True)
    tool = signed_tool(tool_module, stub, public_url="https://bytebot.example.org/")
    text = await tool.screenshot(__event_emitter__=ui.emitter, __event_call__=ui.call)
    assert IMAGE.findall(text)[0].startswith("https://bytebot.example.org/artifacts/"), text


@pytest.mark.parametrize(
    "answer",
    [False, None, {"error": "Client session disconnected."}, ""],
    ids=["cancel", "none", "disconnected", "empty"],
)
async def test_anything_but_approval_runs_nothing(tool_module, stub, answer):
    ui = OpenWebUI(approve=answer)
    text = await signed_tool(tool_module, stub).screenshot(__event_emitter__=ui.emitter, __event_call__=ui.call)

    assert "declined" in text and "nothing was executed" in text, text
    assert stub.executed == []
    assert stub.tasks[task_id_of(text)]["state"] == "planned"


async def test_a_failing_dialog_runs_nothing(tool_module, stub):
    async def broken_call(event):
        raise TimeoutError("no answer")

    text = await signed_tool(tool_module, stub).screenshot(__event_call__=broken_call)
    assert "declined" in text and stub.executed == []


async def test_without_a_dialog_nothing_runs_and_the_approval_page_is_named(tool_module, stub):
    text = await signed_tool(tool_module, stub).screenshot()
    task_id = task_id_of(text)
    assert "not run" in text and f"{stub.url}/approve/{task_id}" in text, text
    assert stub.executed == []


async def test_edit_file_shows_the_diff_and_writes_only_after_approval(tool_module, stub):
    target = stub.workspace / "notes.txt"
    target.write_text("alpha\nbeta\n")
    tool = signed_tool(tool_module, stub)

    declined = OpenWebUI(approve=False)
    await tool.edit_file(
        path="notes.txt", content="alpha\ngamma\n", __event_emitter__=declined.emitter, __event_call__=declined.call
    )
    message = declined.confirmations()[0]["data"]["message"]
    assert "```diff" in message and "-beta" in message and "+gamma" in message, message
    assert "high" in declined.confirmations()[0]["data"]["title"]
    assert target.read_text() == "alpha\nbeta\n"

    seen = []
    approved = OpenWebUI(approve=True, on_confirm=lambda _: seen.append(target.read_text()))
    text = await tool.edit_file(
        path="notes.txt", content="alpha\ngamma\n", __event_emitter__=approved.emitter, __event_call__=approved.call
    )
    assert ": succeeded." in text, text
    assert seen == ["alpha\nbeta\n"]
    assert target.read_text() == "alpha\ngamma\n"


async def test_wrong_secret_is_readable_and_never_echoed(tool_module, stub):
    ui = OpenWebUI(approve=True)
    wrong = "wrong-" + uuid.uuid4().hex
    tool = tool_with(tool_module, gateway_url=stub.url, key_id=stub.key_id, secret=wrong)
    text = await tool.screenshot(__event_emitter__=ui.emitter, __event_call__=ui.call)

    assert text.startswith("bytebot screenshot failed: HTTP 401 unauthorized: bad signature"), text
    assert "key_id and secret" in text
    assert wrong not in everything_sent(ui, text) and "Traceback" not in text
    assert ui.confirmations() == [] and stub.tasks == {}


async def test_bearer_token_is_accepted(tool_module, stub):
    ui = OpenWebUI(approve=True)
    tool = tool_with(tool_module, gateway_url=stub.url, bearer_token=stub.token)
    text = await tool.screenshot(__event_emitter__=ui.emitter, __event_call__=ui.call)
    assert ": succeeded." in text, text
    assert stub.token not in everything_sent(ui, text)


async def test_policy_denial_and_bad_arguments_are_readable(tool_module, stub):
    tool = signed_tool(tool_module, stub)
    ui = OpenWebUI(approve=True)

    denied = await tool.open_app(app="xterm", __event_emitter__=ui.emitter, __event_call__=ui.call)
    assert "HTTP 403 policy_denied" in denied and "not allowed" in denied and "policy" in denied, denied

    invalid = await tool.edit_file(path="../outside.txt", content="x", __event_call__=ui.call)
    assert "HTTP 422 invalid_args" in invalid and "outside the workspace" in invalid, invalid
    assert ui.confirmations() == [] and stub.executed == []


async def test_unreachable_gateway_is_readable(tool_module):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port is closed again: connecting is refused.
    tool = tool_with(tool_module, gateway_url=f"http://127.0.0.1:{port}", key_id="k", secret="s", timeout_s=5)
    text = await tool.screenshot(__event_call__=OpenWebUI(approve=True).call)
    assert "could not reach the bytebot gateway" in text and "Traceback" not in text, text


async def test_missing_valves_say_what_to_set(tool_module):
    text = await tool_with(tool_module).screenshot()
    assert "not set up" in text and "key_id and secret" in text and "bearer_token" in text, text


async def test_desktop_action_rejects_bad_json_before_planning(tool_module, stub):
    tool = signed_tool(tool_module, stub)
    assert "not valid JSON" in await tool.desktop_action(intent="browse", args_json="{url:")
    assert "JSON object" in await tool.desktop_action(intent="browse", args_json="[1]")
    assert stub.tasks == {}
    text = await tool.desktop_action(
        intent="screenshot", args_json='{"window": "desktop"}', __event_call__=OpenWebUI(approve=True).call
    )
    assert ": succeeded." in text, text


async def test_capabilities_are_listed(tool_module, stub):
    text = await signed_tool(tool_module, stub).bytebot_capabilities()
    assert "caps: screenshot, fs.write" in text and "intent edit_file (risk high)" in text, text


# ---------------------------------------------------------------- an agent task's flagged steps

TASK_PROMPT = '{"prompt": "tidy the desktop", "model": "cua"}'


def all_tokens(stub) -> list:
    return [task["confirm_token"] for task in stub.tasks.values()]


def agent_tasks_of(stub, intent: str) -> list:
    return [task for task in stub.tasks.values() if task["intent"] == intent]


async def test_an_approved_flagged_step_runs_the_follow_up_once(tool_module, stub):
    ui = OpenWebUI(approve=[True, True])
    text = await signed_tool(tool_module, stub).desktop_action(
        intent="task", args_json=TASK_PROMPT, __event_emitter__=ui.emitter, __event_call__=ui.call
    )

    task_id = task_id_of(text)
    [follow_up] = agent_tasks_of(stub, "agent_step")
    assert stub.executed == [task_id, follow_up["task_id"]], text
    assert stub.cancelled == []
    assert f"bytebot agent_step task `{follow_up['task_id']}`: succeeded." in text, text
    assert "tidied after approval" in text
    dialogs = ui.confirmations()
    assert len(dialogs) == 2
    second = dialogs[1]["data"]
    assert "flagged step" in second["title"] and "high" in second["title"], second
    # The person sees why the agent stopped and the exact step before approving it.
    assert "The agent stopped before a step its model's provider flagged: The page may contain" in second["message"]
    assert '"call_id"' in second["message"] and follow_up["task_id"] in second["message"]
    assert f"/approve/{follow_up['task_id']}" in second["message"]
    # The follow-up plan was also put into the chat, before the dialog.
    assert any("provider flagged" in str(e["data"].get("content", "")) for e in ui.events if e["type"] == "message")
    statuses = [e["data"] for e in ui.events if e["type"] == "status"]
    assert statuses[-1]["done"] is True and "succeeded" in statuses[-1]["description"], statuses[-1]
    sent = everything_sent(ui, text)
    for token in all_tokens(stub):
        assert token not in sent


@pytest.mark.parametrize("second_answer", [False, None, {"error": "Client session disconnected."}], ids=str)
async def test_a_declined_flagged_step_cancels_the_agent_task_and_runs_nothing(tool_module, stub, second_answer):
    ui = OpenWebUI(approve=[True, second_answer])
    text = await signed_tool(tool_module, stub).desktop_action(
        intent="task", args_json=TASK_PROMPT, __event_emitter__=ui.emitter, __event_call__=ui.call
    )

    [follow_up] = agent_tasks_of(stub, "agent_step")
    assert stub.executed == [task_id_of(text)], "the follow-up must not run"
    assert stub.cancelled == [follow_up["task_id"]]
    assert list(stub.agent_tasks.values())[0]["status"] == "CANCELLED"
    assert "declined the agent's flagged step" in text and "The agent task was cancelled." in text, text
    assert len(ui.confirmations()) == 2
    sent = everything_sent(ui, text)
    for token in all_tokens(stub):
        assert token not in sent


async def test_a_failing_second_dialog_cancels_the_agent_task(tool_module, stub):
    asked = []

    async def call(event):
        asked.append(event)
        if len(asked) > 1:
            raise TimeoutError("the browser went away")
        return True

    text = await signed_tool(tool_module, stub).desktop_action(intent="task", args_json=TASK_PROMPT, __event_call__=call)
    [follow_up] = agent_tasks_of(stub, "agent_step")
    assert stub.executed == [task_id_of(text)] and stub.cancelled == [follow_up["task_id"]], text


async def test_a_refused_cancel_is_reported_with_what_to_do(tool_module, stub):
    stub.cancel_error = (503, "unavailable", "the store is busy")
    ui = OpenWebUI(approve=[True, False])
    text = await signed_tool(tool_module, stub).desktop_action(
        intent="task", args_json=TASK_PROMPT, __event_emitter__=ui.emitter, __event_call__=ui.call
    )
    [follow_up] = agent_tasks_of(stub, "agent_step")
    assert "Cancelling it failed (HTTP 503 unavailable: the store is busy)" in text, text
    assert f"POST /tasks/{follow_up['task_id']}/cancel" in text
    assert "The agent task was cancelled." not in text
    assert stub.executed == [task_id_of(text)]


async def test_every_flagged_step_is_asked_about_until_the_cap(tool_module, stub):
    cap = tool_module.MAX_FOLLOW_UPS
    stub.agent_flags = cap + 1
    ui = OpenWebUI(approve=True)
    text = await signed_tool(tool_module, stub).desktop_action(
        intent="task", args_json=TASK_PROMPT, __event_emitter__=ui.emitter, __event_call__=ui.call
    )

    follow_ups = [task["task_id"] for task in agent_tasks_of(stub, "agent_step")]
    assert len(follow_ups) == cap + 1
    # One dialog for the task and one per follow-up up to the cap; the one past it is not asked.
    assert len(ui.confirmations()) == 1 + cap
    assert stub.executed == [task_id_of(text)] + follow_ups[:cap]
    assert stub.cancelled == [follow_ups[cap]]
    assert f"after {cap} approved steps in this request, so bytebot stopped asking" in text, text
    assert "The agent task was cancelled." in text
    sent = everything_sent(ui, text)
    for token in all_tokens(stub):
        assert token not in sent


async def test_a_follow_up_without_a_token_is_not_executed(tool_module, stub, monkeypatch):
    # A gateway that withholds the token (as events do): the tool cannot approve, says where a person can.
    original = stub.new_task

    def without_token_for_steps(intent, args, steps, risk):
        planned = original(intent, args, steps, risk)
        if intent == "agent_step":
            planned.pop("confirm_token")
        return planned

    monkeypatch.setattr(stub, "new_task", without_token_for_steps)
    ui = OpenWebUI(approve=True)
    text = await signed_tool(tool_module, stub).desktop_action(
        intent="task", args_json=TASK_PROMPT, __event_emitter__=ui.emitter, __event_call__=ui.call
    )
    [follow_up] = agent_tasks_of(stub, "agent_step")
    assert len(ui.confirmations()) == 1 and stub.executed == [task_id_of(text)]
    assert f"/approve/{follow_up['task_id']}" in text and "nothing of that step ran" in text, text
