"""MLServer with its model repository API behind the Model's bearer token.

MLServer serves `POST /v2/repository/index` and `.../models/{name}/load|unload` over REST,
and the same three calls over gRPC (on `GRPCInferenceService` and on
`ModelRepositoryService`), with no way to require credentials or to turn them off in its
settings. Anyone who reaches the port could unload the model. So the local serving backend
does not run `mlserver start` but `python -m loopline.serving.mlserver_host start <folder>`,
which builds the same `MLServer` from the same folder and, before it starts:

- wraps MLServer's REST app (a FastAPI app, built in `MLServer.__init__`) in
  `RepositoryGuard`, a plain ASGI middleware that answers 401/403 for `/v2/repository/*`
  without the token and passes everything else through untouched;
- adds `RepositoryInterceptor` in front of MLServer's gRPC services: MLServer builds its gRPC
  server inside `start()` with a fixed interceptor list, from `grpc.aio.server` as its module
  imported it, so this module swaps that one name for a function that puts the interceptor
  first. The repository RPCs then need `authorization: Bearer <token>` metadata.

Inference (REST and gRPC) is answered with the lean host's parsers, encoders and error
handling before MLServer's data plane (`mlserver_v2`), so both hosts give a client the same
answers. With `LOOPLINE_ASYNC_REDIS_URL` set, every Loopline model it loads also serves
asynchronous inference (`mlserver_async`). Health, metadata and metrics are MLServer's. On a cluster Seldon Core 2 runs MLServer
itself and its agent drives the repository API from inside the pod; see docs/security.md.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from loopline import auth
from loopline.serving.mlserver_v2 import install as install_inference
from loopline.serving.v2_asgi import ASGIApp, Receive, Scope, Send, deny, header, needs_token

REPOSITORY_RPCS = frozenset(
    {
        "/inference.GRPCInferenceService/RepositoryIndex",
        "/inference.GRPCInferenceService/RepositoryModelLoad",
        "/inference.GRPCInferenceService/RepositoryModelUnload",
        "/inference.model_repository.ModelRepositoryService/RepositoryIndex",
        "/inference.model_repository.ModelRepositoryService/RepositoryModelLoad",
        "/inference.model_repository.ModelRepositoryService/RepositoryModelUnload",
    }
)


class RepositoryGuard:
    """ASGI middleware: `/v2/repository/*` only with the token, the rest as it was."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and needs_token(scope["path"].rstrip("/")):
            verdict = auth.check(header(scope, b"authorization"), self.token)
            if verdict is not auth.Verdict.ALLOWED:
                await deny(send, verdict)
                return
        await self.app(scope, receive, send)


def _metadata(details: grpc.HandlerCallDetails) -> str | None:
    for key, value in details.invocation_metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else bytes(value).decode("latin-1")
    return None


def _deny(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def abort(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class RepositoryInterceptor(grpc.aio.ServerInterceptor):
    """The repository RPCs only with `authorization: Bearer <token>` metadata: without it
    UNAUTHENTICATED, with another token PERMISSION_DENIED (gRPC's 401 and 403)."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if handler_call_details.method in REPOSITORY_RPCS:
            verdict = auth.check(_metadata(handler_call_details), self.token)
            if verdict is auth.Verdict.MISSING:
                return _deny(grpc.StatusCode.UNAUTHENTICATED, auth.denial_message(verdict))
            if verdict is auth.Verdict.FORBIDDEN:
                return _deny(grpc.StatusCode.PERMISSION_DENIED, auth.denial_message(verdict))
        return await continuation(handler_call_details)


def guard_grpc(token: str | None) -> None:
    """Make MLServer's gRPC server (built later, in `start()`) put the interceptor first."""
    from mlserver.grpc import server as grpc_server_module

    real = grpc.aio

    class _Aio:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def server(*args: Any, interceptors: Any = (), **kwargs: Any) -> Any:
            chain = [RepositoryInterceptor(token), *(interceptors or [])]
            return real.server(*args, interceptors=chain, **kwargs)

    grpc_server_module.aio = _Aio()


async def start(folder: str, token: str | None) -> None:
    """`mlserver start <folder>`, with both repository APIs guarded."""
    from mlserver.cli.serve import load_settings
    from mlserver.server import MLServer

    from loopline.serving.async_settings import AsyncSettings

    settings, models_settings = await load_settings(folder)
    guard_grpc(token)
    server = MLServer(settings)
    server._rest_server._app.add_middleware(RepositoryGuard, token=token)
    install_inference(server)
    async_settings = AsyncSettings()
    if async_settings.enabled:  # a worker per loaded model and the asynchronous routes
        from loopline.serving.mlserver_async import AsyncModels

        AsyncModels(async_settings).install(server)
    await server.start(models_settings)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "start":
        print("usage: python -m loopline.serving.mlserver_host start <folder>", file=sys.stderr)
        return 2
    from mlserver.logging import configure_logger
    from mlserver.utils import install_uvloop_event_loop

    configure_logger()
    # The runtime's own lines (loads, refused requests) beside MLServer's, as the lean host
    # logs them; without a handler Python would drop everything below WARNING.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ours = logging.getLogger("loopline")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    try:
        token = auth.load_token(what=f"MLServer in {args[1]}")
    except auth.AuthConfigError as exc:
        print(f"mlserver host: {exc}", file=sys.stderr)
        return 2
    install_uvloop_event_loop()
    asyncio.run(start(args[1], token))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
