"""The Open WebUI tool against the real `bytebot gateway` process.

Open WebUI calls a tool method with `__event_emitter__` and `__event_call__`;
these tests pass the same, answer the confirmation dialog with True or False,
and check the effects on the gateway (task state, artifacts, files) over HTTP.
"""

import uuid

import pytest
import requests

from conftest import IMAGE, OpenWebUI, signed_get, task_id_of, tool_with

pytestmark = pytest.mark.asyncio

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def hmac_tool(tool_module, gateway, **extra):
    return tool_with(
        tool_module,
        gateway_url=gateway.url,
        key_id=gateway.key.key_id,
        secret=gateway.key.secret,
        timeout_s=120,
        **extra,
    )


def task_state(gateway, task_id: str) -> dict:
    response = signed_get(gateway.url, gateway.key, f"/tasks/{task_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_declined_screenshot_runs_nothing(tool_module, gateway):
    ui = OpenWebUI(approve=False)
    text = await hmac_tool(tool_module, gateway).screenshot(
        window="desktop", __event_emitter__=ui.emitter, __event_call__=ui.call
    )

    assert "declined" in text and "nothing was executed" in text, text
    assert len(ui.confirmations()) == 1
    dialog = ui.confirmations()[0]["data"]
    assert "risk" in dialog["title"] and "low" in dialog["message"], dialog
    task = task_state(gateway, task_id_of(text))
    assert task["state"] == "planned", task
    assert "![" not in text


async def test_approved_screenshot_downloads_as_png(tool_module, gateway):
    ui = OpenWebUI(approve=True)
    text = await hmac_tool(tool_module, gateway).screenshot(
        __event_emitter__=ui.emitter, __event_call__=ui.call
    )

    assert len(ui.confirmations()) == 1
    assert ": succeeded." in text, text
    images = IMAGE.findall(text)
    assert images, f"no Markdown image in:\n{text}"
    url = images[0]
    assert url.startswith(gateway.url + "/artifacts/"), url
    # The chat shows the image with a plain <img>: the signed link must work without credentials.
    picture = requests.get(url, timeout=30)
    assert picture.status_code == 200, picture.text[:300]
    assert picture.headers["content-type"].startswith("image/png")
    assert picture.content.startswith(PNG_SIGNATURE)
    # The same image was put into the chat message itself.
    assert any(url in str(e["data"].get("content", "")) for e in ui.events if e["type"] == "message")
    assert task_state(gateway, task_id_of(text))["state"] == "succeeded"
    # The person saw the plan, but the model never gets the confirm token.
    assert "confirm_token" not in text


async def test_wrong_secret_is_a_readable_401(tool_module, gateway):
    ui = OpenWebUI(approve=True)
    tool = tool_with(
        tool_module, gateway_url=gateway.url, key_id=gateway.key.key_id, secret="not-the-secret" * 4
    )
    text = await tool.screenshot(__event_emitter__=ui.emitter, __event_call__=ui.call)

    assert "401" in text and "key_id and secret" in text, text
    assert "Traceback" not in text and "not-the-secret" not in text
    assert ui.confirmations() == [], "nothing may be offered for approval without a plan"


async def test_bearer_token_plans(tool_module, gateway):
    ui = OpenWebUI(approve=False)
    tool = tool_with(tool_module, gateway_url=gateway.url, bearer_token=gateway.key.token)
    text = await tool.screenshot(__event_emitter__=ui.emitter, __event_call__=ui.call)

    assert "declined" in text, text
    assert task_state(gateway, task_id_of(text))["state"] == "planned"


async def test_edit_file_shows_diff_and_writes_only_after_approval(tool_module, gateway):
    name = f"notes-{uuid.uuid4().hex[:8]}.txt"
    target = gateway.workspace / name
    target.write_text("alpha\nbeta\n")
    tool = hmac_tool(tool_module, gateway)

    declined = OpenWebUI(approve=False)
    text = await tool.edit_file(
        path=name, content="alpha\ngamma\n", __event_emitter__=declined.emitter, __event_call__=declined.call
    )
    assert "declined" in text, text
    message = declined.confirmations()[0]["data"]["message"]
    assert "-beta" in message and "+gamma" in message, message
    assert target.read_text() == "alpha\nbeta\n"

    seen_while_asking = []
    approved = OpenWebUI(approve=True, on_confirm=lambda _: seen_while_asking.append(target.read_text()))
    text = await tool.edit_file(
        path=name, content="alpha\ngamma\n", __event_emitter__=approved.emitter, __event_call__=approved.call
    )
    assert ": succeeded." in text, text
    assert "-beta" in approved.confirmations()[0]["data"]["message"]
    assert seen_while_asking == ["alpha\nbeta\n"], "the file changed before the user approved"
    assert target.read_text() == "alpha\ngamma\n"
