"""The lean server's REST fast path: plain V2 JSON in and out without pydantic models.

A production line's clients send the same plain request shape over and over: `inputs`, each
with exactly `name`, `datatype`, `shape` and `data`, and maybe an `id`. For exactly that shape
`parse_plain` reads the body with orjson into `PlainInput`s, which the runtime decodes with
the same `decode_inputs` (same rules, same 4xx messages) as MLServer's `RequestInput`s, and
`response_json` writes the answer as `InferenceResponse.model_dump_json(exclude_none=True)`
would. Any other body (parameters, requested outputs, a non-integer shape, invalid JSON)
returns None from `parse_plain` and takes the full pydantic path, which names what is wrong.

Why: validating and serialising the pydantic models cost more than scoring a batch
(profile in docs/serving.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from mlserver.types import Datatype

from loopline.serving.scoring import OutputColumn

_INPUT_KEYS = frozenset({"name", "datatype", "shape", "data"})
_REQUEST_KEYS = frozenset({"inputs", "id"})
_DATATYPES = frozenset(d.value for d in Datatype)


@dataclass(slots=True)
class PlainInput:
    """A V2 input read from JSON as is: the `TensorInput` shape `decode_inputs` reads.
    (Not frozen: a frozen dataclass's `__init__` costs ~4x, on every input of every request.)"""

    name: str
    datatype: str
    shape: list[int]
    data: Any  # a list from JSON; a list or an ndarray (raw contents) from gRPC


def parse_plain(body: bytes) -> tuple[list[PlainInput], str | None] | None:
    """(inputs, request id) of a plain V2 request, or None for the full validator."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or not doc.keys() <= _REQUEST_KEYS:
        return None
    request_id = doc.get("id")
    inputs = doc.get("inputs")
    if (request_id is not None and type(request_id) is not str) or type(inputs) is not list:
        return None
    parsed: list[PlainInput] = []
    for item in inputs:
        if type(item) is not dict or item.keys() != _INPUT_KEYS:
            return None
        name, datatype, shape, data = item["name"], item["datatype"], item["shape"], item["data"]
        if (
            type(name) is not str
            or datatype not in _DATATYPES
            or type(shape) is not list
            or type(data) is not list
        ):
            return None
        for dim in shape:
            if type(dim) is not int:
                return None
        parsed.append(PlainInput(name, datatype, shape, data))
    return parsed, request_id


def response_json(
    model_name: str, version: str, request_id: str | None, columns: list[OutputColumn]
) -> bytes:
    """The V2 response body; BYTES data as UTF-8 strings, as MLServer's REST renders them."""
    outputs = [
        {
            "name": c.name,
            "shape": c.shape,
            "datatype": c.datatype,
            "data": _text(c.data) if c.datatype == "BYTES" else c.data,
        }
        for c in columns
    ]
    doc: dict[str, Any] = {"model_name": model_name, "model_version": version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = outputs
    return orjson.dumps(doc)


def _text(values: list[object]) -> list[object]:
    # The model and version columns repeat one value on most requests: decode it once.
    if values and isinstance(first := values[0], bytes) and values.count(first) == len(values):
        return [first.decode()] * len(values)
    return [v.decode() if isinstance(v, bytes) else v for v in values]
