"""The REST inference codec both hosts share, against tritonclient's own HTTP encoder and
decoder (its HTTP half imports no gRPC stubs, so it can share this process with MLServer's)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from tritonclient.http import InferInput, InferRequestedOutput, InferResult
from tritonclient.http._utils import _get_inference_request

from loopline.serving.quiet_probes import quiet_readiness_polls
from loopline.serving.scoring import OutputColumn
from loopline.serving.v2_rest import (
    OutputSelection,
    WireError,
    encode_infer_response,
    parse_infer_body,
)


def triton_body(
    inputs: list[InferInput], outputs: list[InferRequestedOutput] | None = None
) -> tuple[bytes, str | None]:
    body, json_size = _get_inference_request(
        inputs=inputs,
        request_id="r1",
        outputs=outputs,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        custom_parameters=None,
    )
    return body, None if json_size is None else str(json_size)


def _input(name: str, arr: np.ndarray, datatype: str, binary: bool) -> InferInput:
    inp = InferInput(name, list(arr.shape), datatype)
    inp.set_data_from_numpy(arr, binary_data=binary)
    return inp


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_requests_read_the_same_with_and_without_binary_data(binary: bool) -> None:
    a = np.array([1.5, np.nan, -2.25], dtype=np.float32)
    b = np.array([[1.0], [2.0], [3.0]], dtype=np.float64)
    ids = np.array([b"m-1", b"m-\xc3\xa9", b""], dtype=np.object_)
    body, header = triton_body(
        [
            _input("a", a, "FP32", binary),
            _input("b", b, "FP64", binary),
            _input("id", ids, "BYTES", binary),
        ]
    )
    assert (header is not None) == binary
    parsed = parse_infer_body(body, header)
    request = parsed.request
    assert request.id == "r1"
    got = {i.name: list(i.data.root) for i in request.inputs}
    np.testing.assert_array_equal(np.array(got["a"], dtype=np.float32), a)
    assert got["b"] == [1.0, 2.0, 3.0]
    assert [v.encode() if isinstance(v, str) else v for v in got["id"]] == ids.tolist()
    for inp in request.inputs:  # the size is the wire's business, not the runtime's
        assert not (inp.parameters and getattr(inp.parameters, "binary_data_size", None))
    # tritonclient names no outputs: it asks for every output as binary data
    assert parsed.outputs.names is None
    assert parsed.outputs.is_binary("anything")


COLUMNS = [
    OutputColumn("anomaly_score", "FP32", [3], [0.5, None, 2.0]),
    OutputColumn("is_anomaly", "BOOL", [3], [False, True, False]),
    OutputColumn("class_index", "INT64", [3], [0, 3, 1]),
    OutputColumn("model", "BYTES", [3], [b"primary", b"fallback", b"primary"]),
]


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_reads_the_responses(binary: bool) -> None:
    selection = OutputSelection(binary_by_default=binary)
    body, json_size = encode_infer_response("m", "3", "r1", COLUMNS, selection)
    assert (json_size is not None) == binary
    result = InferResult.from_response_body(body, header_length=json_size)
    assert result.get_response()["model_version"] == "3"
    np.testing.assert_array_equal(
        result.as_numpy("anomaly_score"), np.array([0.5, np.nan, 2.0], dtype=np.float32)
    )
    assert result.as_numpy("is_anomaly").tolist() == [False, True, False]
    assert result.as_numpy("class_index").tolist() == [0, 3, 1]
    model = result.as_numpy("model").tolist()
    assert [m.decode() if isinstance(m, bytes) else m for m in model] == [
        "primary",
        "fallback",
        "primary",
    ]


def test_requested_outputs_are_the_only_ones_and_each_says_how() -> None:
    body, header = triton_body(
        [_input("a", np.array([1.0], dtype=np.float32), "FP32", True)],
        outputs=[
            InferRequestedOutput("model", binary_data=False),
            InferRequestedOutput("anomaly_score", binary_data=True),
        ],
    )
    selection = parse_infer_body(body, header).outputs
    selection.check([c.name for c in COLUMNS])
    out, json_size = encode_infer_response("m", "3", None, COLUMNS, selection)
    assert json_size is not None
    head = json.loads(out[:json_size])
    assert [o["name"] for o in head["outputs"]] == ["model", "anomaly_score"]
    assert head["outputs"][0]["data"] == ["primary", "fallback", "primary"]
    assert head["outputs"][1]["parameters"] == {"binary_data_size": 12}
    with pytest.raises(WireError, match=r"requested output\(s\) \['nope'\]"):
        OutputSelection(names=["nope"]).check([c.name for c in COLUMNS])


def _binary_body(sizes: list[int], tail: bytes) -> tuple[bytes, str]:
    inputs = [
        {"name": f"x{i}", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": s}}
        for i, s in enumerate(sizes)
    ]
    head = json.dumps({"inputs": inputs}).encode()
    return head + tail, str(len(head))


@pytest.mark.parametrize(
    ("body", "header", "status", "message"),
    [
        (b"{", None, 400, "request body is not valid JSON"),
        (b"[]", None, 422, "must be a JSON object"),
        (b'{"inputs": [{"name": "a"}]}', None, 422, "inputs.0.datatype: Field required"),
        (b"{}", "x", 400, "must be a byte count"),
        (b"{}", "99", 400, "is 99 but the body has only 2 bytes"),
        (*_binary_body([4], b"\0" * 8), 400, "add up to 4"),
        (*_binary_body([8], b"\0" * 4), 400, "runs past the binary data"),
        (*_binary_body([3], b"\0" * 3), 400, "not whole FP32 values"),
        (*_binary_body([-1], b""), 400, "binary_data_size must be a byte count"),
        (b'{"inputs": [], "parameters": {"binary_data_output": 1}}', None, 400, "true or false"),
    ],
)
def test_unreadable_bodies_say_what_is_wrong(
    body: bytes, header: str | None, status: int, message: str
) -> None:
    with pytest.raises(WireError) as caught:
        parse_infer_body(body, header)
    assert caught.value.status_code == status
    assert message in str(caught.value)


def test_nan_and_infinity_literals_are_numbers() -> None:
    body = (
        b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [3], "data": [NaN, Infinity, 1]}]}'
    )
    data = parse_infer_body(body, None).request.inputs[0].data.root
    assert np.isnan(data[0])
    assert data[1:] == [float("inf"), 1]


def test_readiness_polls_are_not_logged_other_requests_are(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet_readiness_polls()
    quiet_readiness_polls()  # once is enough; twice installs nothing more
    httpx_log = logging.getLogger("httpx")
    assert len(httpx_log.filters) == len({type(f) for f in httpx_log.filters})
    with caplog.at_level(logging.INFO, logger="httpx"):
        for path in ("/v2/health/ready", "/v2/models/m/ready"):
            httpx_log.info('HTTP Request: GET http://127.0.0.1:1%s "HTTP/1.1 503 "', path)
        httpx_log.info('HTTP Request: POST http://127.0.0.1:1/v2/models/m/infer "HTTP/1.1 200 "')
    assert [r.getMessage().split()[3] for r in caplog.records] == [
        "http://127.0.0.1:1/v2/models/m/infer"
    ]
