"""A small HTTP server that keeps the gateway's wire contract (shared/specs/gateway.md).

It checks what the real gateway checks about a caller — v1 HMAC signatures
(its own implementation, not the tool's), the ±300 s clock window, nonce
replay, bearer tokens, single-use confirm tokens bound to the plan — and
answers in the spec's shapes, so the tool's behaviour can be tested on any
machine. It is not the gateway: it knows three intents and a fixed policy.

Its `task` intent stands in for the agent: executing it stops
`agent_flags` times (default once) before a step "the model's provider
flagged", answering `needs_approval` with a follow-up `agent_step` plan
(`next_plan`, with its own single-use token) as the gateway does; executing
the last follow-up succeeds, and cancelling a follow-up cancels the agent task.
"""

import difflib
import hashlib
import hmac
import json
import secrets
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

WINDOW_S = 300


def tiny_png(width: int = 4, height: int = 3) -> bytes:
    """A real PNG (grey pixels) built by hand: signature, IHDR, IDAT, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x80\x80\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


class StubGateway:
    """Serve on 127.0.0.1:0 in a thread; `executed` lists every execute that ran."""

    def __init__(self, key_id: str, secret: str, token: str, workspace: Path):
        self.key_id = key_id
        self.secret = secret
        self.token = token
        self.workspace = workspace
        self.link_key = secrets.token_bytes(32)
        self.tasks: dict = {}
        self.artifacts: dict = {}
        self.nonces: set = set()
        self.executed: list = []
        self.cancelled: list = []
        # The stand-in agent's tasks: id -> {"status", "flags_left", "call_id"}.
        self.agent_tasks: dict = {}
        self.agent_flags = 1
        # (status, code, message) to refuse every cancel with, or None.
        self.cancel_error = None
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                stub.handle(self, "GET")

            def do_POST(self):
                stub.handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> "StubGateway":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------ plumbing

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        path = urlsplit(request.path).path
        try:
            if method == "GET" and path.startswith("/artifacts/"):
                return self.artifact(request)
            denied = self.authenticate(request, method, body)
            if denied:
                return self.error(request, 401, "unauthorized", denied)
            if method == "POST" and path == "/plan":
                return self.plan(request, json.loads(body or b"{}"))
            if method == "POST" and path == "/execute":
                return self.execute(request, json.loads(body or b"{}"))
            if method == "POST" and path.startswith("/tasks/") and path.endswith("/cancel"):
                return self.cancel(request, path.split("/")[2])
            if method == "GET" and path.startswith("/tasks/"):
                task = self.tasks.get(path.rsplit("/", 1)[1])
                if task is None:
                    return self.error(request, 404, "not_found", "no such task")
                view = {k: task[k] for k in ("task_id", "state", "plan", "result")}
                return self.send_json(request, 200, view)
            if method == "GET" and path == "/capabilities":
                return self.send_json(
                    request,
                    200,
                    {
                        "caps": ["screenshot", "fs.write"],
                        "intents": {"screenshot": {"risk": "low"}, "edit_file": {"risk": "high"}},
                        "limits": {"timeout_s": 60},
                    },
                )
            return self.error(request, 404, "not_found", f"no route {method} {path}")
        except ValueError as e:
            return self.error(request, 400, "bad_request", str(e))

    def authenticate(self, request, method: str, body: bytes) -> str:
        """"" when the caller is known, else the reason it is not."""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return "" if hmac.compare_digest(auth[7:], self.token) else "unknown bearer token"
        key_id = request.headers.get("X-BYTEBOT-KEY-ID")
        timestamp = request.headers.get("X-BYTEBOT-TIMESTAMP", "")
        nonce = request.headers.get("X-BYTEBOT-NONCE", "")
        signature = request.headers.get("X-BYTEBOT-SIG", "")
        if key_id != self.key_id:
            return "unknown key id"
        if not timestamp.isdigit() or abs(int(timestamp) - time.time()) > WINDOW_S:
            return "timestamp outside the allowed window"
        message = f"v1\n{timestamp}\n{nonce}\n{method}\n{request.path}\n".encode() + body
        expected = hmac.new(self.secret.encode(), message, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return "bad signature"
        with self.lock:
            if nonce in self.nonces:
                return "nonce already used (replay)"
            self.nonces.add(nonce)
        return ""

    def send_json(self, request, status: int, value: dict) -> None:
        data = json.dumps(value).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def error(self, request, status: int, code: str, message: str) -> None:
        self.send_json(request, status, {"error": {"code": code, "message": message}})

    # ------------------------------------------------------------ endpoints

    def workspace_path(self, relative: str) -> Path:
        target = (self.workspace / relative).resolve()
        if not str(target).startswith(str(self.workspace.resolve()) + "/"):
            raise PermissionError(relative)
        return target

    def plan(self, request, body: dict) -> None:
        intent, args = body.get("intent"), body.get("args") or {}
        if intent == "screenshot":
            window = args.get("window", "desktop")
            steps = [
                {
                    "summary": f"Take a PNG screenshot of {window}",
                    "action": {"kind": "screenshot", "window": window, "format": "png"},
                }
            ]
            risk = "low"
        elif intent == "edit_file":
            path, content = args.get("path"), args.get("content")
            if not isinstance(path, str) or not isinstance(content, str):
                return self.error(request, 422, "invalid_args", "args.path and args.content must be strings")
            try:
                target = self.workspace_path(path)
            except PermissionError:
                return self.error(request, 422, "invalid_args", f"args.path: {path} is outside the workspace")
            old = target.read_text() if target.exists() else ""
            diff = "".join(
                difflib.unified_diff(
                    old.splitlines(keepends=True), content.splitlines(keepends=True), f"a/{path}", f"b/{path}"
                )
            )
            steps = [
                {
                    "summary": f"Write {len(content.encode())} bytes to {path}",
                    "action": {"kind": "edit_file", "path": path, "content": content, "diff": diff},
                }
            ]
            risk = "high"
        elif intent == "task":
            prompt = args.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                return self.error(request, 422, "invalid_args", "args.prompt is empty; say what the agent should do")
            steps = [
                {
                    "summary": f"Hand this task to the agent: {prompt.strip()}",
                    "action": {"op": "agent", "prompt": prompt, "model": args.get("model")},
                }
            ]
            risk = "high"
        else:
            return self.error(
                request, 403, "policy_denied", f"intent {intent!r} is not allowed for profile openwebui (rule: intents)"
            )
        self.send_json(request, 200, self.new_task(intent, args, steps, risk))

    def new_task(self, intent: str, args: dict, steps: list, risk: str) -> dict:
        """Store a planned task; returns the plan answer (expires_at in unix seconds)."""
        task_id = secrets.token_hex(8)
        digest = hashlib.sha256(json.dumps(steps, sort_keys=True).encode()).hexdigest()
        task = {
            "task_id": task_id,
            "state": "planned",
            "intent": intent,
            "args": args,
            "plan": steps,
            "confirm_token": secrets.token_urlsafe(24),
            "expires": time.time() + 600,
            "result": None,
        }
        self.tasks[task_id] = task
        return {
            "task_id": task_id,
            "plan": steps,
            "est_risk": risk,
            "confirm_token": task["confirm_token"],
            "expires_at": int(task["expires"]),
            "plan_digest": digest,
            "approval_url": f"{self.url}/approve/{task_id}",
        }

    def execute(self, request, body: dict) -> None:
        task = self.tasks.get(str(body.get("task_id")))
        if task is None:
            return self.error(request, 404, "not_found", "no such task")
        with self.lock:
            if not hmac.compare_digest(str(body.get("confirm_token", "")), task["confirm_token"]):
                return self.error(request, 409, "bad_token", "confirm token does not match this plan")
            if task["state"] != "planned":
                return self.error(request, 409, "already_used", "this plan was already executed")
            if time.time() > task["expires"]:
                return self.error(request, 410, "expired", "the approval expired")
            task["state"] = "running"
        self.executed.append(task["task_id"])
        artifacts, observations = [], []
        if task["intent"] == "screenshot":
            png = tiny_png()
            artifact_id = secrets.token_hex(6)
            self.artifacts[artifact_id] = png
            expires = str(int(time.time()) + 600)
            sig = hmac.new(self.link_key, f"{artifact_id}\n{expires}".encode(), hashlib.sha256).hexdigest()
            artifacts.append(
                {
                    "id": artifact_id,
                    "kind": "screenshot",
                    "media_type": "image/png",
                    "url": f"/artifacts/{artifact_id}?exp={expires}&sig={sig}",
                    "bytes": len(png),
                    "sha256": hashlib.sha256(png).hexdigest(),
                }
            )
            observations.append({"summary": "captured 4x3 screenshot"})
        elif task["intent"] in ("task", "agent_step"):
            return self.run_agent(request, task)
        else:
            target = self.workspace_path(task["args"]["path"])
            target.write_text(task["args"]["content"])
            observations.append(f"wrote {target.name}")
        task["state"] = "succeeded"
        task["result"] = {"status": "succeeded", "observations": observations, "artifacts": artifacts}
        self.send_json(request, 200, task["result"])

    def run_agent(self, request, task: dict) -> None:
        """Start (task) or go on with (agent_step) the stand-in agent task, in the gateway's shapes."""
        if task["intent"] == "task":
            agent_id = "agent-" + secrets.token_hex(6)
            self.agent_tasks[agent_id] = {"status": "RUNNING", "flags_left": self.agent_flags, "call_id": None}
        else:
            agent_id = task["args"]["agent_task_id"]
        agent = self.agent_tasks[agent_id]
        if task["intent"] == "agent_step" and agent["status"] != "NEEDS_HELP":
            task["state"] = "failed"
            observation = {
                "step": 0,
                "ok": False,
                "text": f"agent task {agent_id} is no longer waiting for approval; nothing was run",
            }
            task["result"] = {"status": "failed", "observations": [observation], "artifacts": []}
            return self.send_json(request, 200, task["result"])
        if agent["flags_left"] > 0:
            agent["flags_left"] -= 1
            agent["status"] = "NEEDS_HELP"
            agent["call_id"] = "call_" + secrets.token_hex(4)
            warning = "The page may contain instructions you did not give."
            call = {"type": "click", "button": "left", "x": 5, "y": 5}
            checks = [{"id": "sc_" + secrets.token_hex(4), "code": "malicious_instructions", "message": warning}]
            steps = [
                {
                    "summary": (
                        f"Let the agent (task {agent_id}) do the step its model's provider flagged: "
                        f"{json.dumps(call)}. The provider says: {warning}"
                    ),
                    "action": {
                        "op": "agent_step",
                        "agent_task_id": agent_id,
                        "call_id": agent["call_id"],
                        "call": call,
                        "checks": checks,
                    },
                }
            ]
            next_plan = self.new_task(
                "agent_step", {"agent_task_id": agent_id, "call_id": agent["call_id"]}, steps, "high"
            )
            next_plan["reason"] = f"{warning} A person must acknowledge it (acknowledge_safety_checks)."
            observation = {
                "step": 0,
                "ok": True,
                "text": (
                    f"the agent stopped before a step its model's provider flagged ({warning}); nothing of it "
                    f"ran. Approve plan {next_plan['task_id']} to let it run, or cancel that plan to cancel "
                    "the agent task"
                ),
                "data": {"agent_task_id": agent_id, "status": "NEEDS_HELP", "next_task_id": next_plan["task_id"]},
            }
            task["state"] = "needs_approval"
            # Stored and shown without the token, as the gateway does.
            stored = {k: v for k, v in next_plan.items() if k != "confirm_token"}
            task["result"] = {"status": "needs_approval", "observations": [observation], "artifacts": [], "next_plan": stored}
            return self.send_json(request, 200, dict(task["result"], next_plan=next_plan))
        agent["status"] = "COMPLETED"
        observation = {
            "step": 0,
            "ok": True,
            "text": "the agent finished (COMPLETED): tidied after approval",
            "data": {"agent_task_id": agent_id, "status": "COMPLETED"},
        }
        task["state"] = "succeeded"
        task["result"] = {"status": "succeeded", "observations": [observation], "artifacts": []}
        self.send_json(request, 200, task["result"])

    def cancel(self, request, task_id: str) -> None:
        """Cancel a planned task; a cancelled agent_step plan cancels its agent task."""
        if self.cancel_error is not None:
            return self.error(request, *self.cancel_error)
        task = self.tasks.get(task_id)
        if task is None:
            return self.error(request, 404, "not_found", "no such task")
        with self.lock:
            if task["state"] == "planned":
                task["state"] = "cancelled"
                self.cancelled.append(task_id)
                if task["intent"] == "agent_step":
                    self.agent_tasks[task["args"]["agent_task_id"]]["status"] = "CANCELLED"
        view = {k: task[k] for k in ("task_id", "state", "plan", "result")}
        self.send_json(request, 200, view)

    def artifact(self, request) -> None:
        parts = urlsplit(request.path)
        artifact_id = parts.path.rsplit("/", 1)[1]
        query = parse_qs(parts.query)
        expires, sig = query.get("exp", [""])[0], query.get("sig", [""])[0]
        expected = hmac.new(self.link_key, f"{artifact_id}\n{expires}".encode(), hashlib.sha256).hexdigest()
        if not expires.isdigit() or int(expires) < time.time() or not hmac.compare_digest(expected, sig):
            return self.error(request, 403, "bad_link", "artifact link is not valid")
        data = self.artifacts[artifact_id]
        request.send_response(200)
        request.send_header("Content-Type", "image/png")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
