"""Inference on the MLServer host through the lean host's request and error handling.

MLServer's own REST and gRPC inference endpoints answer a client's mistakes differently from
the lean host (`v2_asgi`, `v2_grpc`): FastAPI's `{"detail": ...}` 422 for a body it cannot
validate (text/plain, NaN literals, binary tensor data), `INTERNAL` or `UNKNOWN` gRPC codes
with a logged traceback for raw contents it cannot unpack or a 413, and no binary tensor
data extension at all. So the MLServer host answers `POST /v2/models/{name}/infer` and
`ModelInfer` itself, with the lean host's parsers and encoders (`v2_rest`, `v2_json`,
`v2_grpc`), and hands the parsed request to MLServer's data plane: adaptive batching,
MLServer's metrics and its model registry still apply. Health and metadata stay MLServer's,
with its 404 and 405 answers reworded as the lean host words them (`{"error": ...}`, the
same message); the repository API is passed through untouched.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from mlserver.errors import MLServerError
from mlserver.grpc.converters import ModelInferResponseConverter
from mlserver.grpc.utils import to_headers
from mlserver.handlers import DataPlane
from mlserver.model import MLModel
from mlserver.types import InferenceRequest
from mlserver.utils import insert_headers

from loopline.serving import callers
from loopline.serving.runtime_slot import ModelNotFound, ModelNotReady
from loopline.serving.settings import ServingSettings
from loopline.serving.v2_asgi import (
    ASGIApp,
    HttpError,
    Message,
    Receive,
    Refuses,
    Scope,
    Send,
    error_body,
    header,
    infer_model_name,
    needs_token,
    read_body,
    refused_before_runtime,
    respond,
    respond_infer,
)
from loopline.serving.v2_grpc import (
    as_request,
    converted,
    grpc_status,
    metadata_caller,
    plain_inputs,
)
from loopline.serving.v2_rest import (
    WireError,
    columns_of,
    encode_infer_response,
    parse_infer_body,
)

log = logging.getLogger(__name__)

_DEFAULT_LIMIT = ServingSettings.model_fields["max_request_bytes"].default


async def hosted_model(data_plane: DataPlane, name: str) -> MLModel:
    """The model `name` from MLServer's registry, with the lean host's 404 and 503."""
    registry = data_plane._model_registry
    models = list(await registry.get_models())
    names = sorted({m.name for m in models})
    if name not in names:
        raise ModelNotFound(name, ", ".join(names) if names else "no model")
    model = await registry.get_model(name)
    if not model.ready:
        raise ModelNotReady(name, "loading")
    return model


async def _any_runtime(data_plane: DataPlane) -> Refuses | None:
    """The hosted runtime a refusal is counted against (there is one per local server).
    Duck-typed: MLServer reloads the implementation's module when it loads a model, so its
    `LooplineRuntime` is not the class this module imported."""
    for model in await data_plane._model_registry.get_models():
        if model.ready and callable(getattr(model, "refused", None)):
            return cast(Refuses, model)
    return None


class InferenceRoutes:
    """ASGI middleware: REST inference answered as the lean host answers it."""

    def __init__(self, app: ASGIApp, data_plane: DataPlane) -> None:
        self.app = app
        self.data_plane = data_plane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or needs_token(path.rstrip("/")):
            await self.app(scope, receive, send)
        elif scope["method"] == "POST" and path.endswith("/infer"):
            await self._infer(scope, receive, send, path)
        else:
            await self.app(scope, receive, self._lean_errors(scope, send))

    def _lean_errors(self, scope: Scope, send: Send) -> Send:
        """`send` with MLServer's 404 and 405 answers in the lean host's words: an unknown
        model named as the lean host names it, FastAPI's `{"detail": ...}` for an unknown
        path or method as `{"error": ...}` with the lean host's message."""
        method: str = scope["method"]
        path: str = scope["path"].rstrip("/")
        held: dict[str, Any] = {}

        async def rewrite(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in (404, 405):
                held["start"] = message
                return
            start = held.pop("start", None)
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            status = start["status"]
            headers = {bytes(k).lower(): bytes(v) for k, v in start.get("headers", [])}
            await respond(
                send, status, error_body(await self._message(method, path, status, headers))
            )

        return rewrite

    async def _message(
        self, method: str, path: str, status: int, headers: dict[bytes, bytes]
    ) -> str:
        parts = path.split("/")
        if status == 405:
            allowed = headers.get(b"allow", b"").decode("latin-1").replace(", ", " or ")
            return f"method {method} not allowed here; use {allowed or 'another method'}"
        if len(parts) >= 4 and parts[1:3] == ["v2", "models"]:
            try:
                await hosted_model(self.data_plane, parts[3])
            except ModelNotFound as exc:
                return str(exc)
            except MLServerError:
                pass
        return f"no such endpoint: {method} {path}"

    async def _infer(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        try:
            name = infer_model_name(path)
            model = await hosted_model(self.data_plane, name)
            config = getattr(model, "config", None)
            limit = config.max_request_bytes if config is not None else _DEFAULT_LIMIT
            body, header_length = await read_body(scope, receive, limit)
            parsed = parse_infer_body(body, header_length)
            parsed.outputs.check([o.name for o in model.outputs or ()])
            request = parsed.request
            request_id = request.id
            headers = {
                bytes(k).decode("latin-1"): bytes(v).decode("latin-1") for k, v in scope["headers"]
            }
            insert_headers(request, headers)
            response = await self.data_plane.infer(request, name, None)
            out, json_size = encode_infer_response(
                response.model_name,
                response.model_version or "",
                request_id,
                columns_of(response),
                parsed.outputs,
            )
            await respond_infer(send, out, json_size)
        except (HttpError, WireError, ModelNotFound) as exc:
            status = exc.status if isinstance(exc, HttpError) else exc.status_code
            caller = header(scope, callers.HEADER_BYTES)
            refused_before_runtime(await _any_runtime(self.data_plane), exc, status, caller=caller)
            await respond(send, status, error_body(str(exc)))
        except MLServerError as exc:  # the runtime's own refusals, counted and logged there
            await respond(send, exc.status_code, error_body(str(exc)))
        except Exception as exc:
            log.exception("inference failed on %s", path)
            await respond(send, 500, error_body(f"internal error: {type(exc).__name__}: {exc}"))


async def model_infer(servicer: Any, request: Any, context: Any) -> Any:
    """`ModelInfer` for MLServer's `InferenceServicer`, as the lean host's `V2Servicer`
    answers it: the same validation, the same status codes, one INFO line per refusal."""
    data_plane: DataPlane = servicer._data_plane
    try:
        await hosted_model(data_plane, request.model_name)
        plain = plain_inputs(request)
        payload: InferenceRequest = (
            as_request(request, plain) if plain is not None else converted(request)
        )
        insert_headers(payload, to_headers(context))
        response = await data_plane.infer(payload, request.model_name, None)
        response.id = request.id or None
        use_raw = bool(request.raw_input_contents)
        return ModelInferResponseConverter.from_types(response, use_raw=use_raw)
    except (WireError, ModelNotFound) as exc:
        runtime = await _any_runtime(data_plane)
        refused_before_runtime(runtime, exc, exc.status_code, "grpc", metadata_caller(context))
        await context.abort(grpc_status(exc.status_code), str(exc))
    except MLServerError as exc:
        await context.abort(grpc_status(exc.status_code), str(exc))
    except Exception as exc:
        log.exception("gRPC inference failed for %s", request.model_name)
        await context.abort(grpc_status(500), f"internal error: {type(exc).__name__}: {exc}")


def install(server: Any) -> None:
    """Route an `MLServer`'s REST and gRPC inference through this module (before `start`)."""
    from mlserver.grpc.servicers import InferenceServicer

    server._rest_server._app.add_middleware(InferenceRoutes, data_plane=server._data_plane)
    InferenceServicer.ModelInfer = model_infer
