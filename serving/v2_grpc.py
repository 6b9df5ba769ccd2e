"""The Open Inference Protocol (V2) over gRPC around one `RuntimeSlot`.

The service is MLServer's generated `GRPCInferenceService` (the V2 proto), and requests and
responses go through MLServer's own converters, so raw and typed tensor contents, parameters
and the response shape are what MLServer's gRPC server gives standard clients. What is left
out is MLServer's data plane (model registry lookups, its metrics and tracing hooks) between
the call and the runtime. Requests of float features (and BYTES machine ids), raw or typed,
skip the converters and MLServer's pydantic types too (`plain_inputs`, `response_message`);
anything else goes through them. Errors map as MLServer maps them (400 → INVALID_ARGUMENT, 404 →
NOT_FOUND, 422 → FAILED_PRECONDITION) plus 413 → RESOURCE_EXHAUSTED and 503 → UNAVAILABLE.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
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
from mlserver.types import InferenceRequest, RequestInput

from loopline.serving import callers
from loopline.serving.runtime_slot import ModelNotFound, RuntimeSlot
from loopline.serving.scoring import OutputColumn, output_columns
from loopline.serving.v2_asgi import refused_before_runtime
from loopline.serving.v2_json import PlainInput
from loopline.serving.v2_rest import WireError

log = logging.getLogger(__name__)

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
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
        caller = metadata_caller(context)
        subject = None
        try:
            runtime = self.slot.get(request.model_name)
            authorization = metadata_caller(context, "authorization")
            subject = await runtime.identify(authorization, "grpc", caller)
            use_raw = bool(request.raw_input_contents)
            plain = plain_inputs(request)
            if plain is not None:
                answer = runtime.score_inputs(plain, "grpc", caller, subject)
                columns = output_columns(answer.scored, answer.task, answer.version)
                return response_message(
                    runtime.name, answer.version, request.id, columns, use_raw=use_raw
                )
            response = await runtime.infer(converted(request), "grpc", caller, subject)
            return ModelInferResponseConverter.from_types(response, use_raw=use_raw)
        except (WireError, ModelNotFound) as exc:
            refused_before_runtime(self.slot.runtime, exc, exc.status_code, "grpc", caller, subject)
            await context.abort(grpc_status(exc.status_code), str(exc))
        except MLServerError as exc:  # the runtime's own refusals, counted and logged there
            await context.abort(grpc_status(exc.status_code), str(exc))
        except Exception as exc:
            log.exception("gRPC inference failed for %s", request.model_name)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
            )


def metadata_caller(context: Any, name: str = callers.HEADER) -> str | None:
    """The `loopline-caller` (or another) metadata value of a call (gRPC lowercases
    metadata keys)."""
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else None
    return None


def converted(request: Any) -> InferenceRequest:
    """MLServer's converter on a request `plain_inputs` leaves to it; what it cannot read
    is the client's mistake (a 400), never an internal error."""
    try:
        payload: InferenceRequest = ModelInferRequestConverter.to_types(request)
    except Exception as exc:
        raise WireError(f"malformed ModelInferRequest: {type(exc).__name__}: {exc}") from None
    return payload


def as_request(request: Any, plain: list[PlainInput]) -> InferenceRequest:
    """The validated plain inputs as MLServer's request type (for MLServer's data plane)."""
    return InferenceRequest(
        id=request.id or None,
        inputs=[
            RequestInput(
                name=p.name,
                datatype=p.datatype,
                shape=p.shape,
                data=p.data.tolist() if isinstance(p.data, np.ndarray) else p.data,
            )
            for p in plain
        ],
    )


def add_to_server(servicer: V2Servicer, server: Any) -> None:
    add_GRPCInferenceServiceServicer_to_server(servicer, server)


# -- the fast path: V2 messages straight to and from the runtime's arrays -----------------

_RAW_FLOATS: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
_CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}
_OUT_CONTENTS = {
    "FP32": "fp32_contents",
    "BOOL": "bool_contents",
    "INT64": "int64_contents",
    "BYTES": "bytes_contents",
}
_OUT_RAW: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "BOOL": np.dtype("?"),
    "INT64": np.dtype("<i8"),
}
_BYTES_SIZE = struct.Struct("<I")


def plain_inputs(request: Any) -> list[PlainInput] | None:
    """The request's inputs as `PlainInput`s (raw contents read with `np.frombuffer`), or None
    for anything but float features and BYTES machine ids without parameters; those take
    MLServer's converter, which handles every V2 form. Raw contents that cannot be whole
    values are a `WireError` naming the input."""
    if request.parameters or request.outputs:
        return None
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise WireError(
            f"request has {len(request.inputs)} inputs but {len(raw)} raw_input_contents; "
            "send raw contents for every input or for none"
        )
    inputs: list[PlainInput] = []
    for i, tensor in enumerate(request.inputs):
        if tensor.parameters:
            return None
        datatype = tensor.datatype
        data: Any
        if raw:
            if datatype in _RAW_FLOATS:
                dtype = _RAW_FLOATS[datatype]
                if len(raw[i]) % dtype.itemsize:
                    raise WireError(
                        f"input {tensor.name!r}: raw contents of {len(raw[i])} bytes are not "
                        f"whole {datatype} values ({dtype.itemsize} bytes each)"
                    )
                data = np.frombuffer(raw[i], dtype=dtype)
            elif datatype == "BYTES":
                data = unpack_bytes(raw[i])
                if data is None:
                    raise WireError(
                        f"input {tensor.name!r}: raw BYTES contents are not length-prefixed "
                        "elements (4-byte little-endian length, then the bytes)"
                    )
            else:
                return None
        elif datatype in _CONTENTS:
            data = list(getattr(tensor.contents, _CONTENTS[datatype]))
        else:
            return None
        inputs.append(PlainInput(tensor.name, datatype, list(tensor.shape), data))
    return inputs


def unpack_bytes(raw: bytes) -> list[bytes] | None:
    """Raw BYTES contents (each element a little-endian uint32 length, then the bytes), or
    None if the lengths do not add up."""
    out: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            return None
        (size,) = _BYTES_SIZE.unpack_from(raw, offset)
        offset += 4
        if offset + size > end:
            return None
        out.append(raw[offset : offset + size])
        offset += size
    return out


def response_message(
    model_name: str, version: str, request_id: str, columns: list[OutputColumn], *, use_raw: bool
) -> Any:
    """The `ModelInferResponse` MLServer's converter makes of the same outputs (a unit test
    compares them), raw when the request was raw."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=version, id=request_id)
    for column in columns:
        tensor = response.outputs.add(name=column.name, datatype=column.datatype)
        tensor.shape.extend(column.shape)
        data = column.data
        if column.datatype == "FP32":
            data = [float("nan") if v is None else v for v in data] if None in data else data
        if use_raw:
            tensor.contents.SetInParent()  # as MLServer's converter leaves it: present, empty
            if column.datatype == "BYTES":
                packed = pack_bytes(data)
            else:
                packed = np.asarray(data, dtype=_OUT_RAW[column.datatype]).tobytes()
            response.raw_output_contents.append(packed)
        elif column.datatype == "BYTES":
            tensor.contents.bytes_contents.extend(_as_bytes(data))
        else:
            getattr(tensor.contents, _OUT_CONTENTS[column.datatype]).extend(data)
    return response


def pack_bytes(values: Sequence[object]) -> bytes:
    """Raw BYTES contents: each element's 4-byte little-endian length, then its bytes
    (non-bytes elements as their UTF-8 text).

    Why each distinct value is framed once: the `model` and `version` columns repeat one or
    two values on every row, and framing every row's value cost ~20 µs of a ~100 µs batch-64
    gRPC request in process."""
    if not values:
        return b""
    first = values[0]
    if values.count(first) == len(values):
        return _frame(first) * len(values)
    framed = {v: _frame(v) for v in set(values)}
    return b"".join([framed[v] for v in values])


def _frame(value: object) -> bytes:
    data = value if isinstance(value, bytes) else str(value).encode()
    return _BYTES_SIZE.pack(len(data)) + data


def _as_bytes(values: list[object]) -> list[bytes]:
    return [v if isinstance(v, bytes) else str(v).encode() for v in values]
