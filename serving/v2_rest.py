"""V2 REST inference bodies as both hosts read and write them: JSON and binary tensor data.

The lean host (`v2_asgi`) and the MLServer host (`mlserver_host`) both read every inference
request that is not the plain JSON shape (`v2_json`) with `parse_infer_body` and write every
answer to one with `encode_infer_response`, so their status codes, error messages and
response bodies cannot drift apart.

The binary tensor data extension (what tritonclient and perf_analyzer send by default): the
body is a JSON header of `Inference-Header-Content-Length` bytes followed by the raw tensors,
in input order. An input whose `parameters.binary_data_size` is set has no `data`; its
values are that many bytes of the tail (numbers little-endian, BYTES as 4-byte little-endian
lengths each followed by the bytes). Outputs come back the same way when the request asks:
`parameters.binary_data` on a requested output, else the request's
`parameters.binary_data_output`; the response then carries the header too.

Which body is which does not depend on `Content-Type` (clients send JSON as text/plain,
application/json or nothing): the header decides.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pydantic_core
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse
from pydantic import ValidationError

from loopline.serving.scoring import OutputColumn

HEADER_LENGTH = "inference-header-content-length"
_NUMBERS: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_BYTES_SIZE = struct.Struct("<I")


class WireError(MLServerError):
    """The body is not a readable V2 request (400, 413 or 422); raised before the model
    sees it, so the host counts it (the runtime counts what it refuses itself)."""

    def __init__(self, msg: str, status_code: int = 400) -> None:
        super().__init__(msg, status_code)


@dataclass
class OutputSelection:
    """Which outputs the client asked for (None: all) and which of them as binary data."""

    names: list[str] | None = None
    binary: dict[str, bool] = field(default_factory=dict)
    binary_by_default: bool = False

    def is_binary(self, name: str) -> bool:
        return self.binary.get(name, self.binary_by_default)

    def check(self, available: Sequence[str]) -> None:
        """A 400 naming any requested output the model does not have."""
        if self.names is None:
            return
        unknown = [n for n in self.names if n not in available]
        if unknown:
            raise WireError(
                f"requested output(s) {unknown} not produced by this model; "
                f"its outputs are {list(available)}"
            )

    def pick(self, columns: list[OutputColumn]) -> list[OutputColumn]:
        if self.names is None:
            return columns
        by_name = {c.name: c for c in columns}
        return [by_name[n] for n in dict.fromkeys(self.names)]


@dataclass
class InferBody:
    """A parsed inference request and what its answer should look like."""

    request: InferenceRequest
    outputs: OutputSelection


def header_length_of(value: str | None, body_size: int) -> int | None:
    """The JSON header's size from `Inference-Header-Content-Length`, checked against the body."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit():
        raise WireError(f"Inference-Header-Content-Length must be a byte count, got {value!r}")
    size = int(text)
    if size > body_size:
        raise WireError(
            f"Inference-Header-Content-Length is {size} but the body has only {body_size} bytes"
        )
    return size


def parse_infer_body(body: bytes, header_length: str | None) -> InferBody:
    """Read a V2 inference body (JSON, or JSON header + binary tensors), or raise a
    `WireError` saying what is wrong: 400 for a body that is not JSON or whose binary
    part does not add up, 422 for JSON that is not a V2 request."""
    size = header_length_of(header_length, len(body))
    head, tail = (body, b"") if size is None else (body[:size], body[size:])
    try:
        doc = pydantic_core.from_json(head)
    except ValueError as exc:
        raise WireError(f"request body is not valid JSON: {exc}") from None
    if type(doc) is not dict:
        raise WireError(
            "not an Open Inference Protocol request: the body must be a JSON object with "
            f"'inputs', got {type(doc).__name__}",
            422,
        )
    inputs = doc.get("inputs")
    if type(inputs) is list:
        _attach_binary(inputs, tail)
    elif tail:
        raise WireError(f"{len(tail)} bytes of binary data follow a request without inputs")
    try:
        request = InferenceRequest.model_validate(doc)
    except ValidationError as exc:
        raise WireError(*_validation_message(exc)) from None
    return InferBody(request, _selection(request))


def _validation_message(exc: ValidationError) -> tuple[str, int]:
    errors = exc.errors(include_url=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors[:10]]
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    return "not an Open Inference Protocol request: " + "; ".join(parts) + more, 422


def _attach_binary(inputs: list[Any], tail: bytes) -> None:
    """Give every input with `binary_data_size` its slice of `tail` as `data`, in order."""
    offset = 0
    for i, item in enumerate(inputs):
        if type(item) is not dict:
            continue  # the schema check names it
        params = item.get("parameters")
        if type(params) is not dict or "binary_data_size" not in params:
            continue
        name = item.get("name", f"#{i}")
        size = params.pop("binary_data_size")
        if type(size) is not int or size < 0:
            raise WireError(f"input {name!r}: binary_data_size must be a byte count, got {size!r}")
        if "data" in item:
            raise WireError(f"input {name!r} has both data and binary_data_size; send one")
        if offset + size > len(tail):
            raise WireError(
                f"input {name!r}: binary_data_size {size} runs past the binary data "
                f"({len(tail) - offset} bytes left)"
            )
        item["data"] = _values(name, item.get("datatype"), tail[offset : offset + size])
        offset += size
    if offset != len(tail):
        raise WireError(
            f"the binary data has {len(tail)} bytes but the inputs' binary_data_size add up "
            f"to {offset}"
        )


def _values(name: object, datatype: object, raw: bytes) -> list[Any]:
    if datatype == "BYTES":
        elements = _unpack_bytes(raw)
        if elements is None:
            raise WireError(
                f"input {name!r}: binary BYTES data is not length-prefixed elements "
                "(4-byte little-endian length, then the bytes)"
            )
        return elements
    dtype = _NUMBERS.get(str(datatype))
    if dtype is None:
        raise WireError(f"input {name!r}: datatype {datatype!r} cannot be sent as binary data")
    if len(raw) % dtype.itemsize:
        raise WireError(
            f"input {name!r}: binary data of {len(raw)} bytes is not whole {datatype} values "
            f"({dtype.itemsize} bytes each)"
        )
    values: list[Any] = np.frombuffer(raw, dtype=dtype).tolist()
    return values


def _unpack_bytes(raw: bytes) -> list[Any] | None:
    out: list[Any] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            return None
        (size,) = _BYTES_SIZE.unpack_from(raw, offset)
        offset += 4
        if offset + size > end:
            return None
        chunk = raw[offset : offset + size]
        try:
            out.append(chunk.decode())
        except UnicodeDecodeError:
            out.append(chunk)
        offset += size
    return out


def _flag(params: Any, key: str, where: str) -> bool | None:
    value = getattr(params, key, None) if params is not None else None
    if value is None:
        return None
    if type(value) is not bool:
        raise WireError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _selection(request: InferenceRequest) -> OutputSelection:
    default = _flag(request.parameters, "binary_data_output", "parameters") or False
    selection = OutputSelection(binary_by_default=default)
    if request.outputs:
        selection.names = [o.name for o in request.outputs]
        for o in request.outputs:
            flag = _flag(o.parameters, "binary_data", f"output {o.name!r}")
            if flag is not None:
                selection.binary[o.name] = flag
    return selection


def columns_of(response: InferenceResponse) -> list[OutputColumn]:
    """The outputs of an MLServer response as the wire-neutral columns the encoder reads."""
    columns = []
    for out in response.outputs:
        data = out.data.root if hasattr(out.data, "root") else out.data
        datatype = out.datatype.value if hasattr(out.datatype, "value") else str(out.datatype)
        values = data.tolist() if isinstance(data, np.ndarray) else list(data)
        columns.append(OutputColumn(out.name, datatype, list(out.shape), values))
    return columns


def encode_infer_response(
    model_name: str,
    version: str,
    request_id: str | None,
    columns: list[OutputColumn],
    selection: OutputSelection,
) -> tuple[bytes, int | None]:
    """(body, JSON header length or None): the V2 response, with the outputs the client
    asked for as binary data after the JSON header."""
    outputs: list[dict[str, Any]] = []
    tail: list[bytes] = []
    for c in selection.pick(columns):
        out: dict[str, Any] = {"name": c.name, "datatype": c.datatype, "shape": c.shape}
        if selection.is_binary(c.name):
            raw = _raw(c)
            tail.append(raw)
            out["parameters"] = {"binary_data_size": len(raw)}
        elif c.datatype == "BYTES":
            out["data"] = [v.decode() if isinstance(v, bytes) else v for v in c.data]
        else:
            out["data"] = c.data
        outputs.append(out)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = outputs
    head = orjson.dumps(doc)
    if not tail:
        return head, None
    return head + b"".join(tail), len(head)


def _raw(column: OutputColumn) -> bytes:
    if column.datatype == "BYTES":
        return b"".join(
            _BYTES_SIZE.pack(len(b)) + b
            for b in (v if isinstance(v, bytes) else str(v).encode() for v in column.data)
        )
    dtype = _NUMBERS[column.datatype]
    data = column.data
    if column.datatype in ("FP16", "FP32", "FP64") and None in data:
        data = [math.nan if v is None else v for v in data]
    return np.asarray(data, dtype=dtype).tobytes()
