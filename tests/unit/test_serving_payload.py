"""Decoding V2 requests: both layouts, fallback rows, and a 4xx naming the field for bad ones."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from mlserver.types import InferenceRequest, RequestInput

from loopline.data.schema import CORE_SENSORS, SENSORS
from loopline.serving.metadata import metadata_inputs, metadata_parameters
from loopline.serving.payload import (
    FeatureLayout,
    MissingCoreSensor,
    PayloadError,
    PayloadTooLarge,
    decode_request,
    entity_input_name,
    fallback_rows,
)

LAYOUT = FeatureLayout.of(SENSORS, CORE_SENSORS)


def matrix_request(rows: list[list[float | None]], datatype: str = "FP32") -> InferenceRequest:
    flat = [v for row in rows for v in row]
    return InferenceRequest(
        inputs=[
            RequestInput(
                name="features", datatype=datatype, shape=[len(rows), len(SENSORS)], data=flat
            )
        ]
    )


def column_request(
    columns: Mapping[str, Sequence[float | None]], **extra: RequestInput
) -> InferenceRequest:
    inputs = [
        RequestInput(name=name, datatype="FP64", shape=[len(values)], data=values)
        for name, values in columns.items()
    ]
    return InferenceRequest(inputs=[*inputs, *extra.values()])


def full_row(offset: float = 0.0) -> list[float | None]:
    return [float(i) + offset for i in range(len(SENSORS))]


def test_matrix_layout_keeps_feature_order() -> None:
    decoded = decode_request(matrix_request([full_row(), full_row(0.5)]), LAYOUT, max_rows=10)
    assert decoded.x.dtype == np.float32
    assert decoded.x.shape == (2, 12)
    np.testing.assert_array_equal(decoded.x[1], np.arange(12, dtype=np.float32) + 0.5)


def test_column_layout_maps_names_to_positions_in_any_order() -> None:
    columns = {name: [float(i), float(i) + 1] for i, name in reversed(list(enumerate(SENSORS)))}
    decoded = decode_request(column_request(columns), LAYOUT, max_rows=10)
    np.testing.assert_array_equal(decoded.x[0], np.arange(12, dtype=np.float32))
    np.testing.assert_array_equal(decoded.x[1], np.arange(12, dtype=np.float32) + 1)


def test_column_shape_n_by_1_is_accepted() -> None:
    inputs = [
        RequestInput(name=name, datatype="FP32", shape=[1, 1], data=[[1.0]]) for name in SENSORS
    ]
    decoded = decode_request(InferenceRequest(inputs=inputs), LAYOUT, max_rows=10)
    assert decoded.x.shape == (1, 12)


def test_missing_and_nan_noncore_sensors_become_fallback_rows() -> None:
    columns: dict[str, list[float | None]] = {
        name: [1.0, 1.0, 1.0] for name in SENSORS if name != "feed_rate"
    }
    columns["acoustic_level"] = [1.0, None, 1.0]  # JSON null
    decoded = decode_request(column_request(columns), LAYOUT, max_rows=10)
    assert math.isnan(decoded.x[0, SENSORS.index("feed_rate")])
    assert fallback_rows(decoded.x, LAYOUT).tolist() == [True, True, True]

    row_ok, row_nan = full_row(), full_row()
    row_nan[SENSORS.index("power_factor")] = None
    decoded = decode_request(matrix_request([row_ok, row_nan]), LAYOUT, max_rows=10)
    assert fallback_rows(decoded.x, LAYOUT).tolist() == [False, True]


def test_machine_ids_are_decoded() -> None:
    machine = RequestInput(
        name="machine_id", datatype="BYTES", shape=[2], data=["drill-01", b"drill-02"]
    )
    request = matrix_request([full_row(), full_row()])
    request.inputs.append(machine)
    assert decode_request(request, LAYOUT, max_rows=10).machine_ids == ["drill-01", "drill-02"]


@pytest.mark.parametrize(
    ("request_", "status", "needle"),
    [
        (InferenceRequest(inputs=[]), 400, "no inputs"),
        (matrix_request([]), 400, "empty batch"),
        (matrix_request([full_row()], datatype="INT32"), 400, "must be FP32 or FP64"),
        (
            InferenceRequest(
                inputs=[
                    RequestInput(name="features", datatype="FP32", shape=[1, 11], data=[1.0] * 11)
                ]
            ),
            400,
            "expected [n, 12]",
        ),
        (
            InferenceRequest(
                inputs=[
                    RequestInput(name="features", datatype="FP32", shape=[2, 12], data=[1.0] * 12)
                ]
            ),
            400,
            "needs 24 values",
        ),
        (
            InferenceRequest(
                inputs=[
                    RequestInput(name="features", datatype="FP32", shape=[1, 12], data=["a"] * 12)
                ]
            ),
            400,
            "not a list of numbers",
        ),
        (
            column_request({**{n: [1.0] for n in SENSORS}, "spindle_sped": [1.0]}),
            400,
            "unknown input 'spindle_sped'",
        ),
        (
            column_request({"spindle_current": [1.0, 2.0], "spindle_torque": [1.0]}),
            400,
            "all must agree",
        ),
        (
            InferenceRequest(
                inputs=[
                    RequestInput(
                        name="spindle_current", datatype="FP32", shape=[1, 2], data=[1.0, 2.0]
                    )
                ]
            ),
            400,
            "expected [n] or [n, 1]",
        ),
        (matrix_request([full_row()] * 11), 413, "at most 10"),
    ],
    ids=[
        "no-inputs",
        "empty",
        "dtype",
        "width",
        "data-length",
        "strings",
        "unknown-input",
        "ragged-columns",
        "column-shape",
        "oversized",
    ],
)
def test_bad_payloads_are_4xx_with_a_message(
    request_: InferenceRequest, status: int, needle: str
) -> None:
    with pytest.raises(PayloadError) as info:
        decode_request(request_, LAYOUT, max_rows=10)
    assert info.value.status_code == status
    assert needle in str(info.value)


def test_missing_core_sensor_is_422_naming_it() -> None:
    columns = {name: [1.0] for name in SENSORS if name != "spindle_torque"}
    with pytest.raises(MissingCoreSensor, match="spindle_torque") as info:
        decode_request(column_request(columns), LAYOUT, max_rows=10)
    assert info.value.status_code == 422

    row = full_row()
    row[SENSORS.index("coolant_temperature")] = None
    with pytest.raises(MissingCoreSensor, match=r"coolant_temperature.*row 1"):
        decode_request(matrix_request([full_row(), row]), LAYOUT, max_rows=10)


def test_oversized_error_is_its_own_type() -> None:
    with pytest.raises(PayloadTooLarge):
        decode_request(matrix_request([full_row()] * 3), LAYOUT, max_rows=2)


def test_layout_rejects_core_outside_features() -> None:
    with pytest.raises(ValueError, match="not in feature_names"):
        FeatureLayout.of(["a", "b"], ["c"])


def test_metadata_lists_one_layout_and_describes_the_other() -> None:
    tensors = metadata_inputs(LAYOUT)
    assert [t.name for t in tensors] == [*SENSORS, "machine_id"]
    params = {t.name: t.parameters.model_dump(exclude_none=True) for t in tensors if t.parameters}
    assert params["machine_id"] == {"role": "entity", "optional": True}
    assert params[CORE_SENSORS[0]]["optional"] is False
    noncore = next(s for s in SENSORS if s not in CORE_SENSORS)
    assert params[noncore]["optional"] is True
    assert (
        metadata_inputs(LAYOUT, fallback=False)[SENSORS.index(noncore)].parameters.optional is False
    )
    described = json.loads(metadata_parameters(LAYOUT)["alternative_inputs"])
    assert described[0]["name"] == "features"
    assert described[0]["shape"] == [-1, len(SENSORS)]
    assert described[0]["columns"] == list(SENSORS)


def test_the_entity_input_is_named_after_the_recorded_entity() -> None:
    assert entity_input_name({}) == "machine_id"
    assert entity_input_name({"roles": {"entity": "case_id"}}) == "case_id"
    assert entity_input_name({"roles": {"entity": ""}}) == "machine_id"
    layout = FeatureLayout.of(SENSORS, CORE_SENSORS, "case_id")
    columns = {name: [1.0, 2.0] for name in SENSORS}
    case = RequestInput(name="case_id", datatype="BYTES", shape=[2], data=["c1", "c2"])
    request = column_request(columns, case=case)
    assert decode_request(request, layout, max_rows=10).machine_ids == ["c1", "c2"]
    machine = RequestInput(name="machine_id", datatype="BYTES", shape=[2], data=["m1", "m2"])
    legacy = column_request(columns, machine=machine)
    with pytest.raises(PayloadError, match=r"unknown input 'machine_id'.*entity 'case_id'"):
        decode_request(legacy, layout, max_rows=10)
    with pytest.raises(ValueError, match="also a feature"):
        FeatureLayout.of(SENSORS, CORE_SENSORS, SENSORS[0])


def _plain(name: str, data: list[object], shape: list[int] | None = None) -> object:
    from loopline.serving.v2_json import PlainInput

    return PlainInput(name, "FP32", shape if shape is not None else [len(data)], data)


@pytest.mark.parametrize(
    "case",
    ["all", "reversed", "absent noncore", "nan noncore", "n by 1", "machine id", "ints", "huge"],
)
def test_the_one_pass_path_agrees_with_the_input_by_input_path(case: str) -> None:
    """`_plain_columns` is a shortcut for what `_decode_any` builds; when both accept a
    request they must build the same matrix."""
    from loopline.serving.payload import _decode_any, _plain_columns

    rng = np.random.default_rng(len(case))
    cols = {n: rng.normal(size=5).tolist() for n in SENSORS}
    inputs = [_plain(n, v) for n, v in cols.items()]
    if case == "reversed":
        inputs.reverse()
    elif case == "absent noncore":
        noncore = next(n for n in SENSORS if n not in CORE_SENSORS)
        inputs = [_plain(n, v) for n, v in cols.items() if n != noncore]
    elif case == "nan noncore":
        noncore = next(n for n in SENSORS if n not in CORE_SENSORS)
        inputs = [_plain(n, [math.nan, *v[1:]] if n == noncore else v) for n, v in cols.items()]
    elif case == "n by 1":
        inputs = [_plain(n, [[x] for x in v], [5, 1]) for n, v in cols.items()]
    elif case == "machine id":
        inputs.append(_plain("machine_id", ["m1"] * 5))
    elif case == "ints":
        inputs = [_plain(n, [1, 2, 3, 4, 5]) for n in SENSORS]
    elif case == "huge":
        inputs = [_plain(n, [1e39, *v[1:]]) for n, v in cols.items()]
    fast = _plain_columns(inputs, LAYOUT, 10)  # type: ignore[arg-type]
    slow, _ = _decode_any(inputs, LAYOUT, 10)  # type: ignore[arg-type]
    if case == "n by 1":  # nested lists take the input-by-input path
        assert fast is None
        return
    assert fast is not None
    np.testing.assert_array_equal(fast[0], slow)
    assert fast[0].flags.c_contiguous


@pytest.mark.parametrize(
    "inputs",
    [
        [],
        [("machine_id", ["m"])],
        [("nope", [1.0])],
        [("features", [1.0] * 12)],
        [(SENSORS[0], [1.0]), (SENSORS[0], [2.0])],
        [(SENSORS[0], [1.0]), (SENSORS[1], [1.0, 2.0])],
        [(SENSORS[0], ["1.5"])],
        [(SENSORS[0], [None])],
        [(SENSORS[0], [1.0] * 11)],
    ],
    ids=["empty", "only id", "unknown", "matrix", "twice", "ragged", "text", "null", "too many"],
)
def test_the_one_pass_path_leaves_everything_else_to_the_full_checks(
    inputs: list[tuple[str, list[object]]],
) -> None:
    from loopline.serving.payload import _plain_columns

    plain = [_plain(name, data) for name, data in inputs]
    assert _plain_columns(plain, LAYOUT, 10) is None  # type: ignore[arg-type]
