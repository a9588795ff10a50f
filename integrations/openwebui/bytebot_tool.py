"""
title: Bytebot Desktop
author: bytebot-rs
version: 0.2.0
license: Apache-2.0
required_open_webui_version: 0.5.0
requirements: requests
description: Use a bytebot desktop safely from chat. Every action is planned by the bytebot gateway first; you see the exact plan (steps, risk, the diff of a file edit, the command line of a run) in a confirmation dialog, and it runs only when you press Confirm. When the agent stops before a step its model's provider flagged, you are asked again before that step runs. Requests are signed (HMAC-SHA256 with timestamp and nonce) or sent with a bearer token. Screenshots come back as inline images.
"""

# How this file is used: Open WebUI turns every public method of `Tools`
# into a function the model may call, building the JSON schema from the type
# hints and the `:param` lines of the docstrings. Some Open WebUI versions
# treat every non-dunder callable attribute of `Tools` as a tool, so all
# helpers live at module level and `Tools` holds only the tools themselves.
#
# Safety properties kept here:
# - nothing executes without a truthy answer from `__event_call__`
#   (a missing dialog, a timeout or a disconnected browser count as "no");
#   that holds for every follow-up plan of an agent task, each asked on its own;
# - the confirm tokens (of the plan and of every follow-up plan) never leave
#   this file: they are not in any event or in the text returned to the model,
#   so the model cannot execute on its own;
# - the secret and the bearer token are never logged or echoed.

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from typing import Any, Optional
from urllib.parse import quote

import requests
from pydantic import BaseModel, Field

SIGNATURE_VERSION = "v1"
# Long diffs are cut in the dialog so it stays usable; the cut is announced.
MAX_DIFF_CHARS = 12000
MAX_FIELD_CHARS = 4000
# One request may walk an agent task through several flagged steps, each asked
# about on its own; past this many the tool stops asking and cancels the agent
# task rather than leave it waiting for an answer nobody will give.
MAX_FOLLOW_UPS = 10

# What a person can do about each gateway refusal (statuses from the spec).
STATUS_HINTS = {
    400: "The gateway could not read the request; this is a bug in the tool or the gateway.",
    401: (
        "Check the tool's Valves: key_id and secret (or bearer_token) must match a key "
        "in the gateway's config, and this server's clock must be within 5 minutes of "
        "the gateway's."
    ),
    403: "The gateway's policy does not allow this for this key; an administrator can change the policy.",
    404: "The gateway does not know this task or path; check gateway_url.",
    409: "The plan changed or was already executed; ask again to get a fresh plan.",
    410: "The approval expired before it was used; ask again to get a fresh plan.",
    413: "The request is larger than the gateway allows.",
    422: "The gateway did not accept the arguments; fix the field named above and try again.",
    429: "Too many requests for this key; wait a moment and try again.",
}


class GatewayError(Exception):
    """A request to the gateway failed; `str()` is text fit for a person."""

    def __init__(self, status: int, code: str, message: str, hint: str = ""):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint or STATUS_HINTS.get(status, "")

    def __str__(self) -> str:
        head = f"HTTP {self.status} {self.code}" if self.status else self.code
        text = f"{head}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


def sign_request(
    secret: str,
    timestamp: str,
    nonce: str,
    method: str,
    path_and_query: str,
    body: bytes,
) -> str:
    """Hex HMAC-SHA256 over "v1\\n" + timestamp + "\\n" + nonce + "\\n" + METHOD + "\\n" + path_and_query + "\\n" + body."""
    message = b"\n".join(
        [
            SIGNATURE_VERSION.encode(),
            timestamp.encode(),
            nonce.encode(),
            method.upper().encode(),
            path_and_query.encode(),
            body,
        ]
    )
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _config_problem(valves: Any) -> str:
    """Why the Valves cannot be used yet, or "" when they can."""
    url = (valves.gateway_url or "").strip()
    if not url.startswith(("http://", "https://")):
        return "gateway_url must start with http:// or https:// (for example http://127.0.0.1:9991)."
    has_hmac = bool(valves.key_id and valves.secret)
    if not has_hmac and not valves.bearer_token:
        return "set key_id and secret (HMAC signing) or bearer_token in the tool's Valves."
    return ""


class GatewayClient:
    """A small blocking client for the gateway; every request is authenticated."""

    def __init__(self, valves: Any):
        self.base_url = valves.gateway_url.strip().rstrip("/")
        self.key_id = valves.key_id
        self.secret = valves.secret
        self.bearer_token = valves.bearer_token
        self.timeout_s = max(1, int(valves.timeout_s))
        self.verify_tls = bool(valves.verify_tls)

    def request(self, method: str, path: str, payload: Optional[dict] = None) -> dict:
        """Send one request and return the JSON answer, or raise GatewayError."""
        body = b""
        headers = {"Accept": "application/json"}
        if payload is not None:
            body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
        with requests.Session() as session:
            prepared = session.prepare_request(
                requests.Request(method, self.base_url + path, data=body or None, headers=headers)
            )
            # Sign exactly what goes on the wire: the path as requests encoded it.
            sent_body = prepared.body or b""
            if isinstance(sent_body, str):
                sent_body = sent_body.encode()
            prepared.headers.update(self._auth_headers(method, prepared.path_url, sent_body))
            try:
                response = session.send(
                    prepared,
                    timeout=self.timeout_s,
                    verify=self.verify_tls,
                    allow_redirects=False,  # a redirect would change the signed path
                )
            except requests.exceptions.SSLError as e:
                raise GatewayError(
                    0,
                    "tls_error",
                    f"TLS failed talking to {self.base_url}: {_short(e)}",
                    "Fix the certificate, or turn verify_tls off for a self-signed test setup.",
                ) from None
            except requests.exceptions.Timeout:
                raise GatewayError(
                    0,
                    "timeout",
                    f"the gateway at {self.base_url} did not answer within {self.timeout_s} s",
                    "Raise timeout_s for long runs, or check that the gateway is healthy.",
                ) from None
            except requests.exceptions.RequestException as e:
                raise GatewayError(
                    0,
                    "unreachable",
                    f"could not reach the bytebot gateway at {self.base_url}: {_short(e)}",
                    "Check gateway_url and that `bytebot gateway` is running and reachable from Open WebUI.",
                ) from None
        return _parse_response(response)

    def _auth_headers(self, method: str, path_and_query: str, body: bytes) -> dict:
        if self.key_id and self.secret:
            timestamp = str(int(time.time()))
            nonce = secrets.token_hex(16)
            return {
                "X-BYTEBOT-KEY-ID": self.key_id,
                "X-BYTEBOT-TIMESTAMP": timestamp,
                "X-BYTEBOT-NONCE": nonce,
                "X-BYTEBOT-SIG": sign_request(self.secret, timestamp, nonce, method, path_and_query, body),
            }
        return {"Authorization": f"Bearer {self.bearer_token}"}


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= 300 else text[:300] + "…"


def _parse_response(response: requests.Response) -> dict:
    try:
        data = response.json()
    except ValueError:
        data = None
    if 200 <= response.status_code < 300:
        if not isinstance(data, dict):
            raise GatewayError(
                response.status_code,
                "bad_response",
                f"the gateway answered without a JSON object (content type {response.headers.get('content-type', 'none')})",
                "Check that gateway_url points at the bytebot gateway, not another server.",
            )
        return data
    code, message = "error", ""
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        code = str(data["error"].get("code") or code)
        message = str(data["error"].get("message") or "")
    if not message:
        message = (response.text or response.reason or "no details").strip()[:300]
    raise GatewayError(response.status_code, code, message)


async def _emit(emitter: Any, event_type: str, data: dict) -> None:
    """Send a one-way UI event; a broken emitter must not break the tool."""
    if emitter is None:
        return
    try:
        await emitter({"type": event_type, "data": data})
    except Exception:
        pass


async def _status(emitter: Any, description: str, done: bool = False) -> None:
    await _emit(emitter, "status", {"description": description, "done": done, "hidden": False})


def _is_approval(answer: Any) -> bool:
    """Open WebUI answers a confirmation with a boolean; a disconnected browser gives {"error": ...}."""
    if isinstance(answer, dict) and "error" in answer:
        return False
    return bool(answer)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… ({len(text) - limit} more characters not shown)"


def _fence(text: str, lang: str = "") -> str:
    """A Markdown code fence longer than any backtick run inside the text."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def _step_diff(action: Any) -> str:
    if isinstance(action, dict):
        for key in ("diff", "unified_diff", "patch"):
            value = action.get(key)
            if isinstance(value, str) and value:
                return value
    return ""


def _when(value: Any) -> str:
    """The gateway sends unix seconds; a person reads a UTC time."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value))
    return str(value)


def render_plan(intent: str, plan: dict) -> str:
    """The plan as Markdown: steps in words, the exact actions, and any diff."""
    risk = str(plan.get("est_risk", "unknown"))
    lines = [f"**bytebot plan: {intent}** · risk **{risk}** · task `{plan.get('task_id', '?')}`", ""]
    steps = plan.get("plan") or []
    for number, step in enumerate(steps, start=1):
        step = step if isinstance(step, dict) else {"summary": str(step)}
        lines.append(f"{number}. {step.get('summary') or '(no summary)'}")
        action = step.get("action")
        diff = _step_diff(action)
        if isinstance(action, dict):
            rest = {k: v for k, v in action.items() if k not in ("diff", "unified_diff", "patch")}
            if rest:
                exact = json.dumps(rest, ensure_ascii=False, indent=1)
                lines.append(_fence(_clip(exact, MAX_FIELD_CHARS), "json"))
        if diff:
            lines.append(_fence(_clip(diff, MAX_DIFF_CHARS), "diff"))
    if not steps:
        lines.append("(the gateway returned no steps)")
    details = []
    if plan.get("expires_at"):
        details.append(f"approval valid until {_when(plan['expires_at'])}")
    if plan.get("plan_digest"):
        details.append(f"plan digest `{str(plan['plan_digest'])[:16]}`")
    if details:
        lines += ["", "; ".join(details)]
    return "\n".join(lines)


def render_follow_up(next_plan: dict) -> str:
    """A follow-up plan (intent agent_step) as Markdown, led by why the agent stopped."""
    reason = str(next_plan.get("reason") or "").strip() or "(the gateway gave no reason)"
    return (
        f"The agent stopped before a step its model's provider flagged: {_clip(reason, MAX_FIELD_CHARS)}\n\n"
        + render_plan("agent_step", next_plan)
        + "\n\nNothing of that step has run. Confirm lets the agent take it; Cancel cancels the agent task."
    )


def _describe_observation(observation: Any) -> str:
    if isinstance(observation, str):
        return observation
    if isinstance(observation, dict):
        parts = []
        for key in ("summary", "text", "message"):
            if isinstance(observation.get(key), str) and observation[key]:
                parts.append(observation[key])
                break
        if "exit_code" in observation:
            parts.append(f"exit code {observation['exit_code']}")
        for key in ("stdout", "stderr"):
            value = observation.get(key)
            if isinstance(value, str) and value.strip():
                parts.append(f"{key}:\n{_fence(_clip(value, MAX_FIELD_CHARS))}")
        if parts:
            return "\n".join(parts)
    return _clip(json.dumps(observation, ensure_ascii=False), MAX_FIELD_CHARS)


def artifact_markdown(artifact: dict, public_base: str) -> str:
    """An inline image for images, a link for anything else."""
    url = str(artifact.get("url") or "")
    if url.startswith("/"):
        url = public_base + url
    kind = str(artifact.get("kind") or "artifact")
    media_type = str(artifact.get("media_type") or "")
    if media_type.startswith("image/"):
        return f"![{kind}]({url})"
    size = artifact.get("bytes")
    size_text = f", {size} bytes" if isinstance(size, int) else ""
    return f"[{kind} {artifact.get('id', '')} ({media_type or 'unknown type'}{size_text})]({url})"


def render_result(intent: str, task_id: str, result: dict, public_base: str) -> tuple[str, str]:
    """(text for the model, Markdown of the artifacts for the chat)."""
    status = str(result.get("status", "unknown"))
    lines = [f"bytebot {intent} task `{task_id}`: {status}."]
    observations = result.get("observations") or []
    if observations:
        lines.append("Observations:")
        for observation in observations:
            text = _describe_observation(observation)
            lines.append("- " + text.replace("\n", "\n  "))
    artifacts = [a for a in (result.get("artifacts") or []) if isinstance(a, dict)]
    media = "\n".join(artifact_markdown(a, public_base) for a in artifacts)
    if artifacts:
        lines += ["Artifacts (show them to the user as they are):", media]
    return "\n".join(lines), media


async def _ask(event_call: Any, title: str, message: str) -> bool:
    """One Open WebUI confirmation dialog; only a clear yes counts."""
    try:
        answer = await event_call({"type": "confirmation", "data": {"title": title, "message": message}})
    except Exception:
        return False  # timed out or the dialog failed: that is not an approval
    return _is_approval(answer)


def _with_approval_page(message: str, plan: dict) -> str:
    if plan.get("approval_url"):
        return message + f"\n\nThe same plan is on the approval page: {plan['approval_url']}"
    return message


async def _execute(client: GatewayClient, task_id: str, token: str) -> dict:
    return await asyncio.to_thread(
        client.request, "POST", "/execute", {"task_id": task_id, "confirm_token": token}
    )


async def _cancel_follow_up(client: GatewayClient, task_id: str) -> str:
    """Cancel a follow-up plan (the gateway cancels its agent task too); says how that went."""
    try:
        view = await asyncio.to_thread(client.request, "POST", f"/tasks/{quote(task_id, safe='')}/cancel")
    except GatewayError as e:
        return (
            f"Cancelling it failed ({e}), so the agent task may still be waiting: cancel task "
            f"`{task_id}` on the gateway (POST /tasks/{task_id}/cancel)."
        )
    except Exception as e:
        return (
            f"Cancelling it failed ({type(e).__name__}: {_short(e)}), so the agent task may still be "
            f"waiting: cancel task `{task_id}` on the gateway (POST /tasks/{task_id}/cancel)."
        )
    state = str(view.get("state", "unknown"))
    if state == "cancelled":
        return "The agent task was cancelled."
    return f"The gateway reports follow-up task `{task_id}` as {state}, not cancelled; check it on the gateway."


async def follow_agent_steps(
    client: GatewayClient, result: dict, emitter: Any, event_call: Any, public_base: str, parts: list
) -> str:
    """While an agent task stopped before a flagged step: show its follow-up plan, ask, and
    execute it only on approval; a refusal cancels the agent task. Appends text for the model
    to `parts` and returns how it ended (a gateway status, "declined" or "stopped")."""
    asked = 0
    while str(result.get("status")) == "needs_approval":
        next_plan = result.get("next_plan")
        next_plan = next_plan if isinstance(next_plan, dict) else {}
        next_id = str(next_plan.get("task_id") or "")
        token = next_plan.get("confirm_token")
        if not next_id or not token:
            where = f" A person can approve it at {next_plan['approval_url']}." if next_plan.get("approval_url") else ""
            parts.append(
                "The agent stopped before a step its model's provider flagged, but the gateway sent no "
                f"follow-up plan this tool can approve; nothing of that step ran.{where}"
            )
            return "needs_approval"
        if asked >= MAX_FOLLOW_UPS:
            cancelled = await _cancel_follow_up(client, next_id)
            parts.append(
                f"The agent stopped before a flagged step again (follow-up task `{next_id}`) after "
                f"{MAX_FOLLOW_UPS} approved steps in this request, so bytebot stopped asking; nothing of "
                f"that step ran. {cancelled} Ask again if the work should go on."
            )
            return "stopped"
        asked += 1
        shown = render_follow_up(next_plan)
        risk = next_plan.get("est_risk", "unknown")
        await _emit(emitter, "message", {"content": shown + "\n\n"})
        await _status(emitter, "The bytebot agent stopped before a flagged step: waiting for your approval")
        approved = await _ask(
            event_call,
            f"Let the bytebot agent take the flagged step? (risk: {risk})",
            _with_approval_page(shown, next_plan),
        )
        if not approved:
            cancelled = await _cancel_follow_up(client, next_id)
            parts.append(
                f"The user declined the agent's flagged step (follow-up task `{next_id}`); nothing of "
                f"that step ran. {cancelled} Do not retry unless the user asks again."
            )
            return "declined"
        await _status(emitter, "Running the approved agent step…")
        result = await _execute(client, next_id, token)
        text, media = render_result("agent_step", next_id, result, public_base)
        if media:
            await _emit(emitter, "message", {"content": media + "\n\n"})
        parts.append(text)
    return str(result.get("status", "unknown"))


async def run_intent(valves: Any, intent: str, args: dict, emitter: Any, event_call: Any) -> str:
    """Plan, show, ask, and execute only on approval (again for every flagged agent step); always returns text."""
    problem = _config_problem(valves)
    if problem:
        await _status(emitter, "bytebot is not configured", done=True)
        return f"The bytebot tool is not set up: {problem} Nothing was run."
    client = GatewayClient(valves)
    public_base = (valves.public_url or valves.gateway_url).strip().rstrip("/")
    # What already ran stays in the answer even when a later request fails.
    parts: list = []
    try:
        await _status(emitter, f"Planning {intent} with bytebot…")
        plan = await asyncio.to_thread(client.request, "POST", "/plan", {"intent": intent, "args": args})
        task_id = str(plan.get("task_id", ""))
        token = plan.get("confirm_token")
        if not task_id or not token:
            await _status(emitter, "bytebot returned an incomplete plan", done=True)
            return f"The bytebot gateway returned a plan without a task id or confirm token for {intent}; nothing was run."
        shown = render_plan(intent, plan)
        risk = plan.get("est_risk", "unknown")
        steps = len(plan.get("plan") or [])
        await _emit(emitter, "message", {"content": shown + "\n\n"})
        await _status(emitter, f"bytebot planned {steps} step(s), risk {risk}: waiting for your approval")

        if event_call is None:
            where = f" Approve it at {plan['approval_url']} if you want it to run." if plan.get("approval_url") else ""
            await _status(emitter, "No approval dialog available: nothing ran", done=True)
            return (
                f"bytebot {intent} task `{task_id}` was planned but not run: this chat cannot show an "
                f"approval dialog.{where}"
            )
        if not await _ask(event_call, f"Run bytebot {intent}? (risk: {risk})", _with_approval_page(shown, plan)):
            await _status(emitter, f"You declined bytebot {intent}: nothing ran", done=True)
            return (
                f"The user declined bytebot {intent} task `{task_id}`; nothing was executed. "
                "Do not retry unless the user asks again."
            )

        await _status(emitter, f"Running bytebot {intent}…")
        result = await _execute(client, task_id, token)
        text, media = render_result(intent, task_id, result, public_base)
        if media:
            await _emit(emitter, "message", {"content": media + "\n\n"})
        parts.append(text)
        ended = await follow_agent_steps(client, result, emitter, event_call, public_base, parts)
        if ended == "declined":
            await _status(emitter, "You declined the agent's flagged step: nothing of it ran", done=True)
        else:
            await _status(emitter, f"bytebot {intent}: {ended}", done=True)
        return "\n\n".join(parts)
    except GatewayError as e:
        await _status(emitter, f"bytebot {intent} failed: {e.code}", done=True)
        return "\n\n".join(parts + [f"bytebot {intent} failed: {e}"])
    except Exception as e:  # never hand a traceback to the chat
        await _status(emitter, f"bytebot {intent} failed", done=True)
        return "\n\n".join(
            parts + [f"bytebot {intent} failed unexpectedly ({type(e).__name__}: {_short(e)}). Nothing more was run."]
        )


async def describe_capabilities(valves: Any) -> str:
    """What this key may do, as text for the model."""
    problem = _config_problem(valves)
    if problem:
        return f"The bytebot tool is not set up: {problem}"
    try:
        caps = await asyncio.to_thread(GatewayClient(valves).request, "GET", "/capabilities")
    except GatewayError as e:
        return f"Could not read bytebot's capabilities: {e}"
    except Exception as e:
        return f"Could not read bytebot's capabilities ({type(e).__name__}: {_short(e)})."
    lines = ["bytebot capabilities for this key:"]
    lines.append("caps: " + (", ".join(str(c) for c in caps.get("caps") or []) or "none"))
    intents = caps.get("intents") or {}
    for name, info in intents.items():
        risk = info.get("risk", "?") if isinstance(info, dict) else "?"
        lines.append(f"- intent {name} (risk {risk})")
    if caps.get("limits"):
        lines.append("limits: " + json.dumps(caps["limits"], ensure_ascii=False))
    return "\n".join(lines)


class Tools:
    """bytebot desktop tools: plan on the gateway, confirm with the user, then execute."""

    class Valves(BaseModel):
        gateway_url: str = Field(
            default="http://127.0.0.1:9991",
            description="Base URL of `bytebot gateway` as Open WebUI's server reaches it.",
        )
        public_url: str = Field(
            default="",
            description="Base URL the users' browsers use for the gateway (for inline screenshots). Empty: same as gateway_url.",
        )
        key_id: str = Field(default="", description="HMAC key id from the gateway config (X-BYTEBOT-KEY-ID).")
        secret: str = Field(
            default="",
            description="HMAC secret for key_id. Never shown or logged.",
            json_schema_extra={"input": {"type": "password"}},
        )
        bearer_token: str = Field(
            default="",
            description="Alternative to key_id/secret: a gateway bearer token. Used only when key_id/secret are empty.",
            json_schema_extra={"input": {"type": "password"}},
        )
        timeout_s: int = Field(default=120, description="Seconds to wait for one gateway request (execute included).")
        verify_tls: bool = Field(default=True, description="Verify the gateway's TLS certificate.")

    def __init__(self):
        self.valves = self.Valves()

    async def screenshot(
        self, window: str = "desktop", __event_emitter__=None, __event_call__=None
    ) -> str:
        """
        Take a screenshot of the bytebot desktop after the user approves, and show it inline.
        :param window: "desktop" for the whole screen, or the title of one window.
        """
        return await run_intent(self.valves, "screenshot", {"window": window}, __event_emitter__, __event_call__)

    async def open_app(self, app: str, __event_emitter__=None, __event_call__=None) -> str:
        """
        Launch or focus an application on the bytebot desktop after the user approves; returns a screenshot.
        :param app: The application's name as the gateway's policy lists it, e.g. "firefox".
        """
        return await run_intent(self.valves, "open_app", {"app": app}, __event_emitter__, __event_call__)

    async def browse(self, url: str, __event_emitter__=None, __event_call__=None) -> str:
        """
        Open a web page in the bytebot desktop's browser after the user approves; returns a screenshot.
        :param url: The full http(s) URL to open.
        """
        return await run_intent(self.valves, "browse", {"url": url}, __event_emitter__, __event_call__)

    async def edit_file(
        self, path: str, content: str, __event_emitter__=None, __event_call__=None
    ) -> str:
        """
        Write a text file in the bytebot workspace after the user has seen the diff and approved it.
        :param path: File path relative to the bytebot workspace, e.g. "notes/todo.md".
        :param content: The complete new content of the file.
        """
        return await run_intent(
            self.valves, "edit_file", {"path": path, "content": content}, __event_emitter__, __event_call__
        )

    async def run_command(self, command: str, __event_emitter__=None, __event_call__=None) -> str:
        """
        Run a command in bytebot's sandbox after the user approves the exact command line; returns exit code and output.
        :param command: The command line to run, e.g. "ls -la". The gateway splits it into arguments; no shell is involved.
        """
        return await run_intent(self.valves, "run", {"command": command}, __event_emitter__, __event_call__)

    async def desktop_action(
        self, intent: str, args_json: str = "{}", __event_emitter__=None, __event_call__=None
    ) -> str:
        """
        Ask bytebot for any intent the gateway supports (screenshot, open_app, browse, edit_file, run, task); runs only after the user approves. A task hands a prompt to bytebot's agent; if the agent stops before a risky step, the user is asked again before it runs.
        :param intent: The gateway intent name, e.g. "run" or "task".
        :param args_json: The intent's arguments as a JSON object, e.g. {"argv": ["ls", "-la"], "cwd": "."}.
        """
        try:
            args = json.loads(args_json or "{}")
        except ValueError as e:
            return f"args_json is not valid JSON ({e}); pass a JSON object such as {{\"url\": \"https://example.org\"}}. Nothing was run."
        if not isinstance(args, dict):
            return "args_json must be a JSON object such as {\"url\": \"https://example.org\"}. Nothing was run."
        return await run_intent(self.valves, intent.strip(), args, __event_emitter__, __event_call__)

    async def bytebot_capabilities(self) -> str:
        """
        List what this bytebot key may do: allowed intents, their risk, and limits. Runs nothing.
        """
        return await describe_capabilities(self.valves)
