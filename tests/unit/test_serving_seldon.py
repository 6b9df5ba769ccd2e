"""Seldon builders: shape and input checks (the real schemas validate them in integration)."""

from __future__ import annotations

import pytest

from loopline.serving.seldon import (
    RUNTIME,
    SERVER_OPEN_PORTS,
    SERVER_POD_LABEL,
    build_experiment,
    build_model,
    build_server,
    build_server_network_policy,
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


def test_server_network_policy_admits_only_seldons_ports() -> None:
    """MLServer's own ports (9000 HTTP, 9500 gRPC) and rclone's remote control (5572) serve
    without a token inside a Seldon Server pod: the policy must leave them out."""
    policy = build_server_network_policy("drill-ae-server", "plant", labels={"app": "x"})
    assert policy["kind"] == "NetworkPolicy"
    assert policy["metadata"] == {
        "name": "drill-ae-server",
        "namespace": "plant",
        "labels": policy["metadata"]["labels"],
    }
    assert policy["metadata"]["labels"]["app"] == "x"
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {SERVER_POD_LABEL: "drill-ae-server"}}
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert "from" not in rule  # seldon-mesh and Prometheus may live in any namespace
    ports = {p["port"] for p in rule["ports"]}
    assert ports == set(SERVER_OPEN_PORTS)
    assert not ports & {9000, 9500, 5572}
    assert {p["protocol"] for p in rule["ports"]} == {"TCP"}


@pytest.mark.parametrize(("ports", "message"), [((), "empty"), ((9001, 70000), "1-65535")])
def test_server_network_policy_refuses_bad_ports(ports: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_server_network_policy("s", "plant", open_ports=ports)


def test_open_ports_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from loopline.operators.settings import OperatorSettings

    assert OperatorSettings().seldon_open_ports == list(SERVER_OPEN_PORTS)
    monkeypatch.setenv("LOOPLINE_OPERATOR_SELDON_OPEN_PORTS", "[9001, 9501]")
    assert OperatorSettings().seldon_open_ports == [9001, 9501]
