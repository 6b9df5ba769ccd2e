"""Asynchronous inference on the MLServer host (the host Seldon's Servers run), end to end:
a real redis-server on a loopback port, a real MLServer with the Loopline runtime started by
the local serving backend, a model in a throwaway MLflow. The same routes and answers as the
lean host's (tests/integration/test_serving_async.py), and the worker follows MLServer's
model registry: unloading the model through the repository API stops its worker and its
routes, loading it again brings both back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from loopline import auth
from loopline.serving.async_messages import StreamKeys
from loopline.serving.local import LocalModelSpec, LocalServingManager
from tests.fixtures.serving import RegisteredModel, sensor_rows

NAME = "drill-async-ml"
KEYS = StreamKeys("loopline:async", NAME)
CALLER = "historian"


def _body(rows: int = 2, seed: int = 0, request_id: str | None = None) -> bytes:
    x = sensor_rows(rows, seed=seed)
    doc: dict[str, Any] = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": list(x.shape),
             "data": x.ravel().tolist()}
        ]
    }  # fmt: skip
    if request_id is not None:
        doc["id"] = request_id
    return json.dumps(doc).encode()


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("token") / "model.token"
    return path, auth.ensure_token_file(path)


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServingManager]:
    with LocalServingManager(tmp_path_factory.mktemp("async-ml"), ready_timeout_s=180) as m:
        yield m


@pytest.fixture(scope="module")
def rest(
    manager: LocalServingManager,
    registered_model: RegisteredModel,
    redis_url: str,
    token: tuple[Path, str],
) -> str:
    spec = LocalModelSpec(
        name=NAME,
        model_uri=registered_model.champion_uri,
        tracking_uri=registered_model.tracking_uri,
        server="mlserver",
        token_file=str(token[0]),
        extra_env={
            "LOOPLINE_ASYNC_REDIS_URL": redis_url,
            "LOOPLINE_ASYNC_RESULT_STREAM": "true",
            "LOOPLINE_ASYNC_BLOCK_MS": "200",
        },
    )
    return manager.start(spec).endpoints.rest


def _poll(rest: str, location: str, timeout_s: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.get(rest + location, timeout=10)
        if response.status_code != 202 or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def _submit(rest: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{rest}/v2/models/{NAME}/infer/async",
        content=body,
        headers={"loopline-caller": CALLER},
        timeout=30,
    )


def test_accepted_at_once_and_polled_result_equals_sync(rest: str) -> None:
    body = _body(rows=3, seed=7, request_id="same-as-sync")
    sync = httpx.post(f"{rest}/v2/models/{NAME}/infer", content=body, timeout=30)
    assert sync.status_code == 200, sync.text
    accepted = _submit(rest, body)
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["location"]
    assert location == f"/v2/models/{NAME}/infer/async/same-as-sync"
    done = _poll(rest, location)
    assert done.status_code == 200, done.text
    assert done.json()["outputs"] == sync.json()["outputs"]
    assert done.json()["id"] == "same-as-sync"


def test_bad_requests_and_unknown_models_are_refused_at_once(rest: str) -> None:
    bad = _submit(rest, b'{"inputs": [}')
    assert bad.status_code == 400, bad.text
    unknown = httpx.post(f"{rest}/v2/models/nope/infer/async", content=_body(), timeout=30)
    assert unknown.status_code == 404
    assert "nope" in unknown.json()["error"]
    bad_id = httpx.get(f"{rest}/v2/models/{NAME}/infer/async/no%20such", timeout=10)
    assert bad_id.status_code == 400


def test_async_requests_count_in_the_usage_metrics(manager: LocalServingManager, rest: str) -> None:
    assert _poll(rest, _submit(rest, _body(seed=3)).headers["location"]).status_code == 200
    text = httpx.get(manager.endpoints(NAME).metrics, timeout=10).text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    assert [
        s for s in samples
        if s.name == "loopline_inference_requests_total"
        and s.labels.get("protocol") == "async" and s.labels.get("outcome") == "ok"
        and s.value >= 1
    ]  # fmt: skip
    assert [
        s for s in samples
        if s.name == "loopline_usage_requests_total" and s.labels.get("caller") == CALLER
        and s.value >= 1
    ]  # fmt: skip


def test_the_worker_follows_the_model_through_unload_and_load(
    rest: str, redis_url: str, token: tuple[Path, str]
) -> None:
    auth_header = {"authorization": f"Bearer {token[1]}"}
    unloaded = httpx.post(
        f"{rest}/v2/repository/models/{NAME}/unload", headers=auth_header, timeout=60
    )
    assert unloaded.status_code == 200, unloaded.text
    try:
        gone = _submit(rest, _body())
        assert gone.status_code == 404, gone.text
        client = redis.Redis.from_url(redis_url)
        try:
            consumers = client.xinfo_consumers(KEYS.requests, KEYS.group)
        finally:
            client.close()
        assert consumers  # the group is still there for the next worker
    finally:
        loaded = httpx.post(
            f"{rest}/v2/repository/models/{NAME}/load", headers=auth_header, timeout=180
        )
        assert loaded.status_code == 200, loaded.text
    again = _submit(rest, _body(seed=11, request_id="after-reload"))
    assert again.status_code == 202, again.text
    done = _poll(rest, again.headers["location"])
    assert done.status_code == 200, done.text
    assert done.json()["id"] == "after-reload"
