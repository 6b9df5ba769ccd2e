"""The lean server's gRPC fast path must read and write what MLServer's converters do."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.converters import ModelInferRequestConverter, ModelInferResponseConverter
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput

from loopline.serving.payload import FeatureLayout, decode_inputs
from loopline.serving.scoring import (
    ANOMALY_TASK,
    CLASSIFICATION_TASK,
    encode_outputs,
    output_columns,
)
from loopline.serving.v2_grpc import pack_bytes, plain_inputs, response_message, unpack_bytes
from loopline.serving.v2_rest import WireError
from tests.fixtures.serving import scored_batch

LAYOUT = FeatureLayout.of(["a", "b", "c"], ["a"])


def _request(inputs: list[RequestInput], *, use_raw: bool) -> pb.ModelInferRequest:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The `construct` method is deprecated")
        request = InferenceRequest(inputs=inputs)
        return ModelInferRequestConverter.from_types(request, model_name="m", use_raw=use_raw)


def _converted(message: pb.ModelInferRequest) -> InferenceRequest:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The `construct` method is deprecated")
        return ModelInferRequestConverter.to_types(message)


@pytest.mark.parametrize("use_raw", [False, True])
@pytest.mark.parametrize("layout", ["per-feature", "matrix"])
def test_inputs_decode_as_through_mlservers_converter(use_raw: bool, layout: str) -> None:
    x = np.array([[1.0, 2.0, 3.0], [4.0, np.nan, 6.0]], dtype=np.float32)
    if layout == "matrix":
        inputs = [
            RequestInput(name="features", datatype="FP32", shape=[2, 3], data=x.ravel().tolist())
        ]
    else:
        inputs = [
            RequestInput(name=n, datatype="FP64", shape=[2], data=x[:, j].tolist())
            for j, n in enumerate(LAYOUT.feature_names)
        ]
    machine_ids = [b"m1", b"m2"]  # typed gRPC contents carry bytes
    inputs.append(RequestInput(name="machine_id", datatype="BYTES", shape=[2], data=machine_ids))
    message = _request(inputs, use_raw=use_raw)
    plain = plain_inputs(message)
    assert plain is not None
    fast = decode_inputs(plain, LAYOUT, max_rows=10)
    full = decode_inputs(_converted(message).inputs, LAYOUT, max_rows=10)
    np.testing.assert_array_equal(fast.x, full.x)
    assert fast.machine_ids == full.machine_ids == ["m1", "m2"]


def test_requests_with_parameters_or_other_types_take_the_converter() -> None:
    with_params = _request(
        [RequestInput(name="a", datatype="FP32", shape=[1], data=[1.0])], use_raw=False
    )
    with_params.parameters["content_type"].string_param = "np"
    assert plain_inputs(with_params) is None
    ints = _request([RequestInput(name="a", datatype="INT32", shape=[1], data=[1])], use_raw=True)
    assert plain_inputs(ints) is None


def test_torn_raw_contents_are_a_payload_error_naming_the_input() -> None:
    torn = _request([RequestInput(name="a", datatype="FP32", shape=[1], data=[1.0])], use_raw=True)
    torn.raw_input_contents[0] = torn.raw_input_contents[0][:3]
    with pytest.raises(WireError, match="input 'a': raw contents of 3 bytes"):
        plain_inputs(torn)
    ids = _request(
        [RequestInput(name="machine_id", datatype="BYTES", shape=[1], data=[b"m1"])], use_raw=True
    )
    ids.raw_input_contents[0] = b"\x09\x00\x00\x00m1"
    with pytest.raises(WireError, match="input 'machine_id'"):
        plain_inputs(ids)


def test_raw_bytes_that_do_not_add_up_are_refused() -> None:
    assert unpack_bytes(b"\x02\x00\x00\x00ab\x01\x00\x00\x00c") == [b"ab", b"c"]
    assert unpack_bytes(b"\x05\x00\x00\x00ab") is None
    assert unpack_bytes(b"\x01\x00") is None


@pytest.mark.parametrize(
    "values",
    [[], [b"primary"], [b"primary"] * 64, [b"primary", b"fallback", b"primary"], [b"", b"x"]],
)
def test_raw_bytes_frame_each_element_once_per_row(values: list[bytes]) -> None:
    framed = b"".join(len(v).to_bytes(4, "little") + v for v in values)
    assert pack_bytes(values) == framed
    assert unpack_bytes(pack_bytes(values)) == values
    assert pack_bytes(["ünï", "ünï"]) == pack_bytes([b"\xc3\xbcn\xc3\xaf"] * 2)


@pytest.mark.parametrize("use_raw", [False, True])
@pytest.mark.parametrize("task", [ANOMALY_TASK, CLASSIFICATION_TASK])
def test_the_response_is_what_mlservers_converter_makes(use_raw: bool, task: str) -> None:
    scored = scored_batch(task)
    fast = response_message("m", "4", "r-1", output_columns(scored, task, "4"), use_raw=use_raw)
    full = ModelInferResponseConverter.from_types(
        InferenceResponse(
            model_name="m", model_version="4", id="r-1", outputs=encode_outputs(scored, task, "4")
        ),
        use_raw=use_raw,
    )
    assert fast == full
