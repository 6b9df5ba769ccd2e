"""The window detector end to end: the pipeline's train-model step trains it (real torch, a
real SQLite MLflow), evaluate-model reports it beside the per-row autoencoder, and a real model
server, sent one row per machine per request for two interleaved machines, answers each
machine's first windowSize-1 readings with the per-row verdict and the rest with the window
one, the same scores as the bundle gives offline for the same readings in order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from loopline.components import model_steps
from loopline.data.generator import GeneratorConfig, generate
from loopline.data.schema import ENTITY, SENSORS, TIMESTAMP
from loopline.models.bundle import ModelBundle
from loopline.models.windowing import score_sequence
from loopline.serving.local import LocalModelSpec, LocalServingManager
from tests.fixtures.serving import v2_tensor_request
from tests.integration.test_training_alarms import _features, _spec

NAME = "drill-window"
SIZE = 4


def columns(response: httpx.Response) -> dict[str, list[Any]]:
    assert response.status_code == 200, response.text
    return {o["name"]: o["data"] for o in response.json()["outputs"]}


@pytest.mark.slow
def test_window_detector_is_trained_evaluated_and_served_per_entity(
    tmp_path: Path, training_mlflow_uri: str
) -> None:
    features = _features(tmp_path / "features")
    params = {"epochs": 4, "seed": 0, "detector": "window", "windowSize": SIZE}
    doc = _spec(training_mlflow_uri, params=params).model_dump_json(by_alias=True)
    model_dir = tmp_path / "model"
    model_steps.train_model(doc, str(features), str(model_dir))
    bundle = ModelBundle.load_dir(model_dir)
    assert bundle.detector == "window"
    assert bundle.window_size == SIZE
    report = tmp_path / "evaluation.md"
    metrics = json.loads(
        model_steps.evaluate_model(doc, str(features), str(model_dir), str(report))
    )
    assert "dense_f1" in metrics
    assert metrics["window_size"] == SIZE
    assert "| per-row autoencoder" in report.read_text()

    readings, _ = generate(GeneratorConfig(machines=2, days=0.05, interval_seconds=60, seed=9))
    readings = readings.dropna(subset=list(SENSORS)).sort_values(TIMESTAMP, kind="stable")
    a = sorted(readings[ENTITY].unique())[0]
    # machine a twice before b's first reading, then alternating: interleaved, unevenly
    first = readings[readings[ENTITY] == a].head(2)
    rest = readings.drop(first.index).groupby(ENTITY).head(8).sort_values(TIMESTAMP, kind="stable")
    sequence = pd.concat([first, rest]).reset_index(drop=True)
    x = sequence[list(SENSORS)].to_numpy(np.float32)
    offline, windowed = score_sequence(bundle, sequence[ENTITY], sequence.index.to_numpy(), x)

    with LocalServingManager(tmp_path / "serving", ready_timeout_s=180) as manager:
        status = manager.start(
            LocalModelSpec(
                name=NAME,
                model_uri=str(model_dir),
                tracking_uri=training_mlflow_uri,
                server="mlserver",  # the runtime as Seldon hosts it
            )
        )
        url = f"{status.endpoints.rest}/v2/models/{NAME}/infer"
        detector: list[str] = []
        scores: list[float] = []
        with httpx.Client(timeout=30) as client:
            meta = client.get(f"{status.endpoints.rest}/v2/models/{NAME}").json()
            assert "detector" in [o["name"] for o in meta["outputs"]]
            for start in range(0, len(sequence), 2):  # [a, a], [b, b], then [a, b]: interleaved
                out = columns(client.post(url, json=v2_tensor_request(sequence[start : start + 2])))
                detector += out["detector"]
                scores += out["anomaly_score"]
    seen = sequence.groupby(ENTITY).cumcount().to_numpy()
    assert detector == ["window" if n >= SIZE - 1 else "dense" for n in seen]
    assert detector == ["window" if w else "dense" for w in windowed]
    np.testing.assert_allclose(scores, offline["anomaly_score"], rtol=1e-5, atol=1e-6)
