"""The plant's V2 requests and answers, checked against the serving side's own codec.

No server: the request bodies go through `loopline.serving.payload.decode_request` (what the
model server runs on each request), and answers come from `loopline.serving.scoring`.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from mlserver.grpc.converters import ModelInferRequestConverter
from mlserver.types import InferenceRequest

from loopline.data.generator import GeneratorConfig, Manifest, generate
from loopline.data.schema import CORE_SENSORS, ENTITY, SENSORS
from loopline.demo.record import DemoRecord
from loopline.demo.traffic import (
    Answer,
    InferError,
    Plant,
    PlantStream,
    grpc_request,
    kill_sensor,
    rest_payload,
)
from loopline.serving.payload import FeatureLayout, decode_request

LAYOUT = FeatureLayout.of(SENSORS, CORE_SENSORS)


@pytest.fixture(scope="module")
def history() -> Manifest:
    return generate(GeneratorConfig(machines=4, days=1, interval_seconds=600, seed=3))[1]


def _batch(history: Manifest) -> pd.DataFrame:
    return PlantStream(history).next_batch()


# MLServer's gRPC converter (used here to decode like the server does) calls pydantic's
# deprecated `construct`.
@pytest.mark.filterwarnings("ignore:The `construct` method is deprecated")
def test_rest_and_grpc_requests_decode_to_the_same_rows(history: Manifest) -> None:
    batch = _batch(history)
    kill_sensor(batch, "feed_rate", machines=["drill-02"])
    rest = InferenceRequest.model_validate(json.loads(json.dumps(rest_payload(batch, SENSORS))))
    grpc = ModelInferRequestConverter.to_types(grpc_request(batch, SENSORS, "drill-ae"))
    a = decode_request(rest, LAYOUT, max_rows=100)
    b = decode_request(grpc, LAYOUT, max_rows=100)
    expected = batch[list(SENSORS)].to_numpy(np.float32)
    np.testing.assert_array_equal(a.x, expected)
    np.testing.assert_array_equal(b.x, expected)
    assert a.machine_ids == b.machine_ids == list(batch[ENTITY])
    dead = a.machine_ids.index("drill-02")
    assert np.isnan(a.x[dead, SENSORS.index("feed_rate")])


def test_stream_changes_recipe_and_kills_sensors(history: Manifest) -> None:
    stream = PlantStream(history, chunk_minutes=60)
    before = stream.next_batch()
    at = stream.change_recipe(0.3)
    after = stream.next_batch()
    assert after["event_timestamp"].iloc[0] == at
    assert after["feed_rate"].mean() > 1.2 * before["feed_rate"].mean()
    for _ in range(12):  # across a chunk boundary the new operating point stays
        later = stream.next_batch()
    assert later["feed_rate"].mean() > 1.2 * before["feed_rate"].mean()
    assert later.attrs["segment"] == ""
    stream.kill_sensor("coolant_flow", segment="dead")
    dead = stream.next_batch()
    assert dead.attrs["segment"] == "dead"
    assert dead["coolant_flow"].isna().all()
    assert not dead[list(CORE_SENSORS)].isna().any().any()
    stream.revive_sensor("coolant_flow")
    assert not stream.next_batch()["coolant_flow"].isna().any()
    with pytest.raises(ValueError, match="not a column"):
        kill_sensor(dead, "no_such_sensor")


def test_stream_stamps_batches_with_its_clock(history: Manifest) -> None:
    from datetime import UTC, datetime

    fixed = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    stream = PlantStream(history, clock=lambda: fixed)
    first, second = stream.next_batch(), stream.next_batch()
    assert (first["event_timestamp"] == fixed).all()
    assert (second["event_timestamp"] > fixed).all()  # strictly later, never a duplicate key
    assert str(second["event_timestamp"].dtype) == "datetime64[ns, UTC]"


def test_answer_reads_the_servers_outputs() -> None:
    from loopline.serving.scoring import ScoredBatch, encode_outputs

    scored = ScoredBatch(
        outputs={
            "anomaly_score": np.array([0.5, 3.0, np.nan], np.float32),
            "threshold": np.array([1.0, 1.0, 1.0], np.float32),
            "is_anomaly": np.array([False, True, False]),
        },
        fallback=np.array([False, False, True]),
    )
    outputs = encode_outputs(scored, "anomaly-detection", "7")
    answer = Answer.from_outputs({o.name: list(o.data.root) for o in outputs})
    assert answer.anomaly_score == [0.5, 3.0, None]
    assert answer.is_anomaly == [False, True, False]
    assert answer.model == ["primary", "primary", "fallback"]
    assert (answer.anomalies, answer.fallback_rows, answer.model_version) == (1, 1, "7")


def test_grpc_answers_decode_from_typed_and_raw_contents() -> None:
    from mlserver.grpc import dataplane_pb2 as pb

    from loopline.demo.traffic import grpc_outputs

    out = pb.ModelInferResponse.InferOutputTensor
    typed = pb.ModelInferResponse(
        outputs=[
            out(
                name="anomaly_score",
                datatype="FP32",
                shape=[2],
                contents=pb.InferTensorContents(fp32_contents=[0.25, float("nan")]),
            ),
            out(
                name="model",
                datatype="BYTES",
                shape=[2],
                contents=pb.InferTensorContents(bytes_contents=[b"primary", b"fallback"]),
            ),
        ]
    )
    assert grpc_outputs(typed) == {
        "anomaly_score": [0.25, None],
        "model": [b"primary", b"fallback"],
    }
    raw = pb.ModelInferResponse(
        outputs=[
            out(name="is_anomaly", datatype="BOOL", shape=[2]),
            out(name="model", datatype="BYTES", shape=[1]),
        ],
        raw_output_contents=[
            np.array([True, False]).tobytes(),
            (7).to_bytes(4, "little") + b"primary",
        ],
    )
    assert grpc_outputs(raw) == {"is_anomaly": [True, False], "model": [b"primary"]}


class _Refusing:
    """A client whose server answers 503, to see failures land in the record."""

    protocol = "rest"
    caller = "gateway-rest"

    def infer(self, frame: pd.DataFrame) -> Answer:
        raise InferError("503", "model not ready")

    def close(self) -> None:
        pass


def test_plant_records_failed_requests(history: Manifest) -> None:
    record = DemoRecord()
    record.set_segment("baseline")
    plant = Plant(PlantStream(history), [_Refusing()], record, rate=50)
    with plant:
        deadline = record.now() + 5
        while len(record.requests) < 5 and record.now() < deadline:
            pass
    assert len(record.requests) >= 5
    assert all(not r.ok and r.status.startswith("503") for r in record.requests)
    assert record.requests[0].segment == "baseline"
    assert record.requests[0].caller == "gateway-rest"
    with pytest.raises(ValueError, match="rate"):
        Plant(PlantStream(history), [_Refusing()], record, rate=0)
