"""The local backend's pure parts: the files it writes and the specs it accepts."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from mlserver.settings import ModelSettings, Settings

from loopline.serving.local import (
    LocalModelSpec,
    model_settings,
    server_identity,
    server_settings,
)
from loopline.serving.settings import ServingSettings


def test_model_settings_are_valid_mlserver_and_serving_settings() -> None:
    spec = LocalModelSpec(
        name="drill-ae",
        model_uri="models:/plant.drill-ae@champion",
        canary_model_uri="models:/plant.drill-ae@challenger",
        canary_weight=0.25,
        max_batch_size=8,
        max_batch_time=0.002,
    )
    doc = model_settings(spec)
    parsed = ModelSettings.model_validate(doc)
    assert parsed.implementation_ == "loopline.serving.runtime.LooplineRuntime"
    assert parsed.max_batch_size == 8
    assert parsed.parameters is not None
    serving = ServingSettings.from_sources(parsed.parameters.extra)
    assert serving.canary_weight == 0.25
    assert serving.model_name == "drill-ae"
    assert serving.fallback_on_missing_sensors is True
    strict = model_settings(replace(spec, fallback_on_missing_sensors=False))
    extra = ModelSettings.model_validate(strict).parameters.extra  # type: ignore[union-attr]
    assert ServingSettings.from_sources(extra).fallback_on_missing_sensors is False


def test_fallback_on_missing_sensors_reaches_every_serving_backend(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """spec.serving.fallbackOnMissingSensors -> the local server's settings and the Seldon
    Server's environment, both read by ServingSettings."""
    from loopline.operators.backends.seldon import serving_env
    from loopline.operators.backends.serving import LocalServingBackend
    from loopline.operators.builders.serving import ServingDesired

    desired = ServingDesired(
        namespace="plant",
        name="drill-ae",
        registered_model="plant.drill-ae",
        champion_version="3",
        fallback_on_missing_sensors=False,
        monitor_url="http://127.0.0.1:8090",
    )
    backend = LocalServingBackend(tmp_path, tracking_uri="sqlite:///m.db")
    assert backend._spec(desired).fallback_on_missing_sensors is False
    # The monitor's URL travels in the serving plan too, to both backends.
    assert backend._spec(desired).monitor_url == "http://127.0.0.1:8090"
    for key, value in serving_env(desired).items():
        monkeypatch.setenv(key, value)
    assert ServingSettings().fallback_on_missing_sensors is False
    assert ServingSettings().monitor_url == "http://127.0.0.1:8090"


def test_server_settings_bind_loopback_and_run_models_in_process() -> None:
    settings = Settings.model_validate(server_settings(1001, 1002, 1003))
    assert settings.host == "127.0.0.1"
    assert (settings.http_port, settings.grpc_port, settings.metrics_port) == (1001, 1002, 1003)
    assert settings.parallel_workers == 0


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"name": "", "model_uri": "m"}, "name"),
        ({"name": "a/b", "model_uri": "m"}, "name"),
        ({"name": "a", "model_uri": ""}, "model_uri is empty"),
        ({"name": "a", "model_uri": "m", "canary_weight": 1.5}, "within 0..1"),
        ({"name": "a", "model_uri": "m", "canary_weight": 0.5}, "needs canary_model_uri"),
    ],
)
def test_bad_specs_are_refused(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        LocalModelSpec(**kwargs)


def test_what_a_leftover_server_must_share_to_be_adopted() -> None:
    """The served versions and the canary are a hot reload, so they do not stop an adoption;
    the kind of server, the install and the environment need a new process."""
    spec = LocalModelSpec(name="drill-ae", model_uri="models:/plant.drill-ae/1")
    same = server_identity(
        replace(spec, canary_model_uri="models:/plant.drill-ae/2", canary_weight=0.5)
    )
    assert same == server_identity(replace(spec, model_uri="models:/plant.drill-ae/3"))
    assert server_identity(spec) == same
    assert server_identity(spec)["server"] == "lean"
    assert server_identity(replace(spec, max_batch_size=8))["server"] == "mlserver"
    assert server_identity(replace(spec, extra_env={"A": "1"})) != same
    assert os.path.isabs(same["python"])


def test_a_deleted_model_leaves_no_token_behind(tmp_path: Path) -> None:
    """Deleting a Model removes its token file; scaling to zero (`delete` alone) keeps it, so
    the model server and the monitor come back with the token they had."""
    from loopline.auth import ensure_token_file, model_token_path
    from loopline.operators.backends.serving import LocalServingBackend

    backend = LocalServingBackend(tmp_path, tracking_uri="sqlite:///m.db")
    token_file = model_token_path(backend.tokens_dir, "plant", "drill-ae")
    ensure_token_file(token_file)
    backend.delete("plant", "drill-ae")
    assert token_file.exists()
    backend.forget("plant", "drill-ae")
    assert not token_file.exists()
    backend.forget("plant", "drill-ae")  # idempotent: a retried cleanup
