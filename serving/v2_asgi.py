"""The Open Inference Protocol (V2) over REST as a bare ASGI app around one `RuntimeSlot`.

Why not MLServer's FastAPI app: measured in `benchmarks/results/serving.json`, MLServer's
stack costs 0.5-1.5 ms of server CPU per request around a runtime whose own work is ~65 µs,
so a line's single-row requests spent >90% of their time in routing, middleware and
dependency injection. This app routes with string splits, reads plain requests with orjson
(`v2_json`) and everything else with the same pydantic V2 types MLServer uses, and calls the
same `LooplineRuntime` (the payload rules and messages are the runtime's), so the answers are
identical to the MLServer host's.

Routes (the V2 REST surface standard clients call):

- `GET /v2/health/live`, `GET /v2/health/ready` (503 while the model loads);
- `GET /v2`: server metadata;
- `GET /v2/models/{name}[/versions/{v}]`, `.../ready`, `POST .../infer`;
- `POST /v2/repository/index`, `POST /v2/repository/models/{name}/load|unload`: only with
  the Model's bearer token (`loopline.auth`): they unload the model or expose its load error,
  so without one they are 401 (with `WWW-Authenticate: Bearer`), with a wrong one 403. Health,
  metadata and inference stay open, as Kubernetes probes and V2 clients expect.

Errors are `{"error": "..."}` with the runtime's 4xx (MLServer's shape); a body over the
size limit is a 413 before it is parsed; malformed JSON is a 400 and a body that is JSON but
not a V2 request a 422, both naming the field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest
from pydantic import ValidationError

from loopline import auth
from loopline.serving.runtime_slot import RuntimeSlot
from loopline.serving.scoring import output_columns
from loopline.serving.v2_json import parse_plain, response_json

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SERVER_NAME = "loopline"
REPOSITORY_PREFIX = "/v2/repository"
_JSON = [(b"content-type", b"application/json")]
_CHALLENGE = [(b"www-authenticate", auth.CHALLENGE.encode())]


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def needs_token(path: str) -> bool:
    """Whether `path` is part of the repository API (every method: index reveals state,
    load and unload change it)."""
    return path == REPOSITORY_PREFIX or path.startswith(REPOSITORY_PREFIX + "/")


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def validation_message(exc: ValidationError) -> tuple[int, str]:
    """(status, message) for a body that failed the V2 schema: each error with its field."""
    errors = exc.errors(include_url=False)
    if any(e["type"] == "json_invalid" for e in errors):
        detail = next(e["msg"] for e in errors if e["type"] == "json_invalid")
        return 400, f"request body is not valid JSON: {detail}"
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors[:10]]
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    return 422, "not an Open Inference Protocol request: " + "; ".join(parts) + more


def model_path(parts: list[str]) -> tuple[str, str]:
    """(model name, action) of `/v2/models/{name}[/versions/{v}][/action]` split on '/'."""
    # parts: ["", "v2", "models", name, ...]
    rest = parts[4:]
    if len(rest) >= 2 and rest[0] == "versions":
        rest = rest[2:]
    if len(rest) > 1:
        raise HttpError(404, "no such endpoint")
    return parts[3], rest[0] if rest else ""


class V2App:
    """The ASGI callable; one per server process."""

    def __init__(
        self,
        slot: RuntimeSlot,
        *,
        server_version: str,
        max_body_bytes: int,
        token: str | None,
    ) -> None:
        self.slot = slot
        self.server_version = server_version
        self.max_body_bytes = max_body_bytes
        self.token = token  # None: authentication disabled (development, warned at start)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"]
        try:
            if method == "POST" and path.endswith("/infer"):
                await self._infer(scope, receive, send, path)
                return
            if needs_token(path):
                verdict = auth.check(header(scope, b"authorization"), self.token)
                if verdict is not auth.Verdict.ALLOWED:
                    await deny(send, verdict)
                    return
            status, body = await self._route(method, path.rstrip("/"))
        except HttpError as exc:
            status, body = exc.status, _error(str(exc))
        except MLServerError as exc:
            status, body = exc.status_code, _error(str(exc))
        except Exception as exc:
            log.exception("%s %s failed", method, path)
            status, body = 500, _error(f"internal error: {type(exc).__name__}: {exc}")
        await _respond(send, status, body)

    async def _infer(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        parts = path.split("/")
        try:
            if len(parts) < 5 or parts[1] != "v2" or parts[2] != "models":
                raise HttpError(404, f"no such endpoint: POST {path}")
            name, action = model_path(parts[:-1])
            if action:
                raise HttpError(404, f"no such endpoint: POST {path}")
            runtime = self.slot.get(name)
            body = await self._read_body(scope, receive)
            plain = parse_plain(body)
            if plain is not None:
                inputs, request_id = plain
                answer = runtime.score_inputs(inputs, "rest")
                columns = output_columns(answer.scored, answer.task, answer.version)
                out = response_json(runtime.name, answer.version, request_id, columns)
            else:
                try:
                    request = InferenceRequest.model_validate_json(body)
                except ValidationError as exc:
                    raise HttpError(*validation_message(exc)) from None
                response = await runtime.infer(request, "rest")
                out = response.model_dump_json(exclude_unset=True, exclude_none=True).encode()
            await _respond(send, 200, out)
        except HttpError as exc:
            await _respond(send, exc.status, _error(str(exc)))
        except MLServerError as exc:
            await _respond(send, exc.status_code, _error(str(exc)))
        except Exception as exc:
            log.exception("inference failed on %s", path)
            await _respond(send, 500, _error(f"internal error: {type(exc).__name__}: {exc}"))

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                raise HttpError(413, f"request body of {int(value)} bytes is over {limit}")
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpError(400, "client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HttpError(413, f"request body is over {limit} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _route(self, method: str, path: str) -> tuple[int, bytes]:
        parts = path.split("/")
        if path == "/v2/health/live":
            return _only(method, "GET", 200, b"")
        if path == "/v2/health/ready":
            return _only(method, "GET", 200 if self.slot.ready else 503, b"")
        if path == "/v2":
            doc = {"name": SERVER_NAME, "version": self.server_version, "extensions": []}
            return _only(method, "GET", 200, json.dumps(doc).encode())
        if len(parts) >= 4 and parts[1:3] == ["v2", "models"]:
            name, action = model_path(parts)
            if action == "ready":
                _only(method, "GET", 200, b"")
                return (200 if self.slot.ready and name == self.slot.name else 503), b""
            if action == "":
                _only(method, "GET", 200, b"")
                metadata = await self.slot.get(name).metadata()
                return 200, metadata.model_dump_json(exclude_unset=True).encode()
            if action == "infer":
                raise HttpError(405, f"method {method} not allowed here; use POST")
            raise HttpError(404, f"no such endpoint: {method} {path}")
        if path == "/v2/repository/index":
            _only(method, "POST", 200, b"")
            state = "READY" if self.slot.ready else "UNAVAILABLE"
            index = [{"name": self.slot.name, "state": state, "reason": self.slot.load_error}]
            return 200, json.dumps(index).encode()
        if len(parts) == 6 and parts[1:4] == ["v2", "repository", "models"]:
            _only(method, "POST", 200, b"")
            if parts[4] != self.slot.name:
                raise HttpError(
                    404, f"model {parts[4]!r} not found; this server hosts {self.slot.name!r}"
                )
            if parts[5] == "load":
                try:
                    await self.slot.load()
                except MLServerError:
                    raise
                except Exception as exc:
                    raise HttpError(
                        500,
                        f"reload failed ({type(exc).__name__}: {exc}); the loaded "
                        "version, if any, keeps serving",
                    ) from None
                return 200, b""
            if parts[5] == "unload":
                await self.slot.unload()
                return 200, b""
        raise HttpError(404, f"no such endpoint: {method} {path}")


def _only(method: str, allowed: str, status: int, body: bytes) -> tuple[int, bytes]:
    if method != allowed:
        raise HttpError(405, f"method {method} not allowed here; use {allowed}")
    return status, body


async def deny(send: Send, verdict: auth.Verdict) -> None:
    """401 with the Bearer challenge for no credentials, 403 for the wrong ones."""
    extra = _CHALLENGE if verdict is auth.Verdict.MISSING else []
    await _respond(send, verdict.value, _error(auth.denial_message(verdict)), extra)


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


async def _respond(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = (
        [*_JSON, (b"content-length", str(len(body)).encode())]
        if body
        else [(b"content-length", b"0")]
    )
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
