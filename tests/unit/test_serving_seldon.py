"""Seldon builders: shape and input checks (the real schemas validate them in integration)."""

from __future__ import annotations

import pytest

from loopline.serving.seldon import (
    RUNTIME,
    build_experiment,
    build_model,
    build_server,
    model_object_name,
)


def test_server_runs_the_loopline_runtime_image() -> None:
    server = build_server(
        "loopline",
        "plant",
        image="loopline/runtime:0.1",
        env={"LOOPLINE_SERVING_SAMPLE_RATE": "0.2"},
    )
    spec = server["spec"]
    assert spec["serverConfig"] == "mlserver"
    assert spec["extraCapabilities"] == ["loopline"]
    container = spec["podSpec"]["containers"][0]
    assert container["image"] == "loopline/runtime:0.1"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MLSERVER_MODEL_IMPLEMENTATION"] == RUNTIME
    assert env["LOOPLINE_SERVING_SAMPLE_RATE"] == "0.2"


def test_model_per_version_points_at_the_artifact() -> None:
    model = build_model(
        "drill-ae", "7", "plant", storage_uri="s3://mlflow/1/abc/artifacts/model", server="loopline"
    )
    assert model["metadata"]["name"] == "drill-ae-v7"
    assert model["metadata"]["labels"]["loopline.dev/version"] == "7"
    assert model["spec"]["storageUri"] == "s3://mlflow/1/abc/artifacts/model"
    assert model["spec"]["requirements"] == ["loopline"]


def test_experiment_splits_champion_and_canary() -> None:
    exp = build_experiment("drill-ae", "plant", champion="6", canary="7", canary_weight=10)
    assert exp["spec"]["default"] == "drill-ae-v6"
    assert exp["spec"]["candidates"] == [
        {"name": "drill-ae-v6", "weight": 90},
        {"name": "drill-ae-v7", "weight": 10},
    ]
    shadow = build_experiment("drill-ae", "plant", champion="6", shadow="8", shadow_percent=25)
    assert shadow["spec"]["mirror"] == {"name": "drill-ae-v8", "percent": 25}
    assert shadow["spec"]["candidates"] == [{"name": "drill-ae-v6", "weight": 100}]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"canary_weight": 10}, "needs a canary"),
        ({"canary": "7", "canary_weight": 101}, "within 0..100"),
        ({}, "needs a canary or a shadow"),
    ],
)
def test_bad_experiments_are_refused(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        build_experiment("drill-ae", "plant", champion="6", **kwargs)


def test_names_must_be_dns_labels() -> None:
    with pytest.raises(ValueError, match="DNS-1123"):
        model_object_name("Drill_AE", "1")
    with pytest.raises(ValueError, match="image is empty"):
        build_server("loopline", "plant", image="")
