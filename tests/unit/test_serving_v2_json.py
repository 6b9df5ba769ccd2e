"""The lean server's plain-JSON path must read and write exactly what the pydantic V2 path
does, and hand every other body to the pydantic path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlserver.types import InferenceRequest, InferenceResponse

from loopline.serving.payload import FeatureLayout, decode_inputs
from loopline.serving.scoring import (
    ANOMALY_TASK,
    CLASSIFICATION_TASK,
    encode_outputs,
    output_columns,
)
from loopline.serving.v2_json import parse_plain, response_json
from tests.fixtures.serving import scored_batch

LAYOUT = FeatureLayout.of(["a", "b", "c"], ["a"])


def _body(doc: object) -> bytes:
    return json.dumps(doc).encode()


PLAIN = {
    "id": "r-1",
    "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]},
        {"name": "c", "datatype": "FP64", "shape": [2, 1], "data": [0.5, None]},
        {"name": "machine_id", "datatype": "BYTES", "shape": [2], "data": ["m1", "m2"]},
    ],
}


def test_a_plain_request_decodes_as_the_pydantic_one_does() -> None:
    parsed = parse_plain(_body(PLAIN))
    assert parsed is not None
    inputs, request_id = parsed
    assert request_id == "r-1"
    fast = decode_inputs(inputs, LAYOUT, max_rows=10)
    full = decode_inputs(InferenceRequest.model_validate(PLAIN).inputs, LAYOUT, max_rows=10)
    np.testing.assert_array_equal(fast.x, full.x)  # NaN where b is absent or c is null
    assert fast.machine_ids == full.machine_ids == ["m1", "m2"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": [',
        b"[]",
        _body({"inputs": PLAIN["inputs"], "parameters": {"content_type": "np"}}),
        _body({"inputs": [{**PLAIN["inputs"][0], "parameters": {}}]}),  # type: ignore[dict-item]
        _body({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1.0], "data": [1]}]}),
        _body({"inputs": [{"name": "a", "datatype": "FP32", "shape": [True], "data": [1]}]}),
        _body({"inputs": [{"name": "a", "datatype": "FLOAT", "shape": [1], "data": [1]}]}),
        _body({"inputs": [{"name": "a", "shape": [1], "data": [1]}]}),
        _body({"inputs": {"name": "a"}}),
        _body({"id": 7, "inputs": []}),
    ],
    ids=[
        "bad-json",
        "not-an-object",
        "parameters",
        "input-parameters",
        "float-dim",
        "bool-dim",
        "unknown-datatype",
        "no-datatype",
        "inputs-not-a-list",
        "numeric-id",
    ],
)
def test_anything_else_goes_to_the_full_validator(body: bytes) -> None:
    assert parse_plain(body) is None


@pytest.mark.parametrize("task", [ANOMALY_TASK, CLASSIFICATION_TASK])
@pytest.mark.parametrize("request_id", [None, "r-9"])
def test_the_response_is_what_pydantic_would_write(task: str, request_id: str | None) -> None:
    scored = scored_batch(task, nan_score=True)
    fast = response_json("drill-ae", "4", request_id, output_columns(scored, task, "4"))
    full = InferenceResponse(
        model_name="drill-ae",
        model_version="4",
        id=request_id,
        outputs=encode_outputs(scored, task, "4"),
    ).model_dump_json(exclude_unset=True, exclude_none=True)
    assert json.loads(fast) == json.loads(full)
