"""The Open Inference Protocol (V2) over gRPC around one `RuntimeSlot`.

The service is MLServer's generated `GRPCInferenceService` (the V2 proto), and requests and
responses go through MLServer's own converters, so raw and typed tensor contents, parameters
and the response shape are what MLServer's gRPC server gives standard clients. What is left
out is MLServer's data plane (model registry lookups, its metrics and tracing hooks) between
the call and the runtime. Errors map as MLServer maps them (400 → INVALID_ARGUMENT, 404 →
NOT_FOUND, 422 → FAILED_PRECONDITION) plus 413 → RESOURCE_EXHAUSTED and 503 → UNAVAILABLE.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from mlserver.errors import MLServerError
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.converters import (
    ModelInferRequestConverter,
    ModelInferResponseConverter,
    ModelMetadataResponseConverter,
)
from mlserver.grpc.dataplane_pb2_grpc import (
    GRPCInferenceServiceServicer,
    add_GRPCInferenceServiceServicer_to_server,
)

from loopline.serving.runtime_slot import RuntimeSlot

log = logging.getLogger(__name__)

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.FAILED_PRECONDITION,
    503: grpc.StatusCode.UNAVAILABLE,
}


def grpc_status(http_status: int) -> grpc.StatusCode:
    return STATUS_CODES.get(http_status, grpc.StatusCode.INTERNAL)


class V2Servicer(GRPCInferenceServiceServicer):
    """Health, metadata and inference for the one hosted model."""

    def __init__(self, slot: RuntimeSlot, *, server_version: str) -> None:
        self.slot = slot
        self.server_version = server_version

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.slot.ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=self.slot.ready and request.name == self.slot.name)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(name="loopline", version=self.server_version)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            metadata = await self.slot.get(request.name).metadata()
        except MLServerError as exc:
            await context.abort(grpc_status(exc.status_code), str(exc))
        return ModelMetadataResponseConverter.from_types(metadata)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        try:
            runtime = self.slot.get(request.model_name)
            payload = ModelInferRequestConverter.to_types(request)
            response = await runtime.infer(payload, "grpc")
            return ModelInferResponseConverter.from_types(
                response, use_raw=bool(request.raw_input_contents)
            )
        except MLServerError as exc:
            await context.abort(grpc_status(exc.status_code), str(exc))
        except Exception as exc:
            log.exception("gRPC inference failed for %s", request.model_name)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
            )


def add_to_server(servicer: V2Servicer, server: Any) -> None:
    add_GRPCInferenceServiceServicer_to_server(servicer, server)
