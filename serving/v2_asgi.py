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
- `POST .../infer/async`, `GET /v2/models/{name}/infer/async/{id}`: asynchronous inference
  through Redis Streams when the server has a store (`async_http`), else 404;
- `POST /v2/repository/index`, `POST /v2/repository/models/{name}/load|unload`: only with
  the Model's bearer token (`loopline.auth`): they unload the model or expose its load error,
  so without one they are 401 (with `WWW-Authenticate: Bearer`), with a wrong one 403. Health,
  metadata and inference stay open, as Kubernetes probes and V2 clients expect; an inference
  request's own bearer token only names its caller (`token_review`), unless the Model's
  `require_caller_token` makes it a 401 without a valid one.

Errors are `{"error": "..."}` with the runtime's 4xx (MLServer's shape); a body over the
size limit is a 413 before it is parsed; malformed JSON is a 400 and a body that is JSON but
not a V2 request a 422, both naming the field (`v2_rest`, which also reads and writes the
binary tensor data extension; the MLServer host answers inference through the same code).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

from mlserver.errors import MLServerError

from loopline import auth
from loopline.serving import callers
from loopline.serving.async_messages import AsyncMessageError, async_route
from loopline.serving.runtime_slot import ModelNotFound, RuntimeSlot
from loopline.serving.scoring import output_columns
from loopline.serving.v2_json import parse_plain, response_json
from loopline.serving.v2_rest import WireError, encode_infer_response, parse_infer_body

if TYPE_CHECKING:
    from loopline.serving.async_store import AsyncStore

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

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


def model_path(parts: list[str]) -> tuple[str, str]:
    """(model name, action) of `/v2/models/{name}[/versions/{v}][/action]` split on '/'."""
    # parts: ["", "v2", "models", name, ...]
    rest = parts[4:]
    if len(rest) >= 2 and rest[0] == "versions":
        rest = rest[2:]
    if len(rest) > 1:
        raise HttpError(404, "no such endpoint")
    return parts[3], rest[0] if rest else ""


def infer_model_name(path: str) -> str:
    """The model of `POST /v2/models/{name}[/versions/{v}]/infer` (a 404 for other paths)."""
    parts = path.split("/")
    if len(parts) < 5 or parts[1] != "v2" or parts[2] != "models" or parts[-1] != "infer":
        raise HttpError(404, f"no such endpoint: POST {path}")
    name, action = model_path(parts[:-1])
    if action:
        raise HttpError(404, f"no such endpoint: POST {path}")
    return name


async def read_body(scope: Scope, receive: Receive, limit: int) -> tuple[bytes, str | None]:
    """(body, `Inference-Header-Content-Length` or None); a 413 over `limit` bytes before
    reading when the length is declared, else as soon as the body passes it."""
    header_length = None
    for key, value in scope["headers"]:
        if key == b"content-length" and value.isdigit() and int(value) > limit:
            raise HttpError(413, f"request body of {int(value)} bytes is over {limit}")
        if key == b"inference-header-content-length":
            header_length = bytes(value).decode("latin-1")
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
    return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), header_length


class Refuses(Protocol):
    """What counts a refused request: `LooplineRuntime.refused`."""

    def refused(
        self,
        protocol: str,
        exc: MLServerError,
        version: str | None = None,
        caller: str | None = None,
        subject: str | None = None,
    ) -> None: ...


def refused_before_runtime(
    runtime: Refuses | None,
    exc: Exception,
    status: int,
    protocol: str = "rest",
    caller: str | None = None,
    subject: str | None = None,
) -> None:
    """Count and log a client's mistake the host caught before the runtime saw the request
    (with no model loaded yet there is no series to count it in: logged only)."""
    error = exc if isinstance(exc, MLServerError) else MLServerError(str(exc), status)
    if runtime is not None:
        runtime.refused(protocol, error, caller=caller, subject=subject)
    else:
        log.info("refused a %s request (%d): %s", protocol, status, exc)


async def respond_infer(send: Send, body: bytes, json_size: int | None) -> None:
    """A 200 inference answer; with binary outputs, the JSON header's size in
    `Inference-Header-Content-Length` and an octet-stream content type, as Triton sends."""
    if json_size is None:
        await respond(send, 200, body)
        return
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(len(body)).encode()),
        (b"inference-header-content-length", str(json_size).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class V2App:
    """The ASGI callable; one per server process."""

    def __init__(
        self,
        slot: RuntimeSlot,
        *,
        server_version: str,
        max_body_bytes: int,
        token: str | None,
        async_store: AsyncStore | None = None,
    ) -> None:
        self.slot = slot
        self.async_store = async_store  # None: asynchronous inference is off
        self.server_version = server_version
        self.max_body_bytes = max_body_bytes
        self.token = token  # None: authentication disabled (development, warned at start)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"]
        try:
            route = async_route(path) if "/infer/" in path else None
            if route is not None:
                if self.async_store is None:
                    raise HttpError(
                        404,
                        "asynchronous inference is off on this server (LOOPLINE_ASYNC_REDIS_URL)",
                    )
                from loopline.serving.async_http import handle_async

                await handle_async(
                    self.async_store, self.slot, self.max_body_bytes, scope, receive, send, route
                )
                return
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
            status, body = exc.status, error_body(str(exc))
        except AsyncMessageError as exc:
            status, body = 400, error_body(str(exc))
        except MLServerError as exc:
            status, body = exc.status_code, error_body(str(exc))
        except Exception as exc:
            log.exception("%s %s failed", method, path)
            status, body = 500, error_body(f"internal error: {type(exc).__name__}: {exc}")
        await respond(send, status, body)

    async def _infer(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        caller = header(scope, callers.HEADER_BYTES)
        subject = None
        try:
            name = infer_model_name(path)
            runtime = self.slot.get(name)
            subject = await runtime.identify(header(scope, b"authorization"), "rest", caller)
            body, header_length = await read_body(scope, receive, self.max_body_bytes)
            plain = parse_plain(body) if header_length is None else None
            if plain is not None:
                inputs, request_id = plain
                answer = runtime.score_inputs(inputs, "rest", caller, subject)
                columns = output_columns(answer.scored, answer.task, answer.version)
                out = response_json(runtime.name, answer.version, request_id, columns)
                await respond(send, 200, out)
                return
            parsed = parse_infer_body(body, header_length)
            parsed.outputs.check([o.name for o in runtime.outputs or ()])
            answer = runtime.score_inputs(parsed.request.inputs, "rest", caller, subject)
            columns = output_columns(answer.scored, answer.task, answer.version)
            out, json_size = encode_infer_response(
                runtime.name, answer.version, parsed.request.id, columns, parsed.outputs
            )
            await respond_infer(send, out, json_size)
        except (HttpError, WireError, ModelNotFound) as exc:
            status = exc.status if isinstance(exc, HttpError) else exc.status_code
            refused_before_runtime(self.slot.runtime, exc, status, caller=caller, subject=subject)
            await respond(send, status, error_body(str(exc)))
        except MLServerError as exc:  # the runtime's own refusals, counted and logged there
            extra = _CHALLENGE if exc.status_code == 401 else None
            await respond(send, exc.status_code, error_body(str(exc)), extra)
        except Exception as exc:
            log.exception("inference failed on %s", path)
            await respond(send, 500, error_body(f"internal error: {type(exc).__name__}: {exc}"))

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
                if name != self.slot.name:
                    raise ModelNotFound(name, self.slot.name)
                return (200 if self.slot.ready else 503), b""
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
    await respond(send, verdict.value, error_body(auth.denial_message(verdict)), extra)


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


async def respond(
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
