"""Asynchronous inference end to end: a real redis-server (started on a free loopback port,
never the system service), a real lean model server with its async worker, a model in a
throwaway MLflow.

Before the server starts, a worker process joins the consumer group, takes a batch of
requests and is SIGKILLed without answering them: the server must reclaim and answer them,
each once, even the one that was also published a second time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from loopline.ports import free_port
from loopline.serving.async_local import local_async_env
from loopline.serving.async_messages import AsyncRequest, StoredResult, StreamKeys
from loopline.serving.async_redis_local import LocalRedis
from loopline.serving.async_settings import AsyncSettings
from loopline.serving.async_store import AsyncStore
from loopline.serving.local import LocalModelSpec, LocalServingManager
from tests.fixtures.serving import RegisteredModel, sensor_rows

NAME = "drill-async"
PREFIX = "loopline:async"
KEYS = StreamKeys(PREFIX, NAME)
CLAIM_IDLE_S = 30
DOOMED = [f"doomed-{i}" for i in range(6)]
CALLER = "historian"


def _body(rows: int = 2, seed: int = 0, request_id: str | None = None) -> bytes:
    x = sensor_rows(rows, seed=seed)
    doc: dict[str, Any] = {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": list(x.shape),
                "data": x.ravel().tolist(),
            }
        ]
    }
    if request_id is not None:
        doc["id"] = request_id
    return json.dumps(doc).encode()


@pytest.fixture(scope="module")
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


_DOOMED_WORKER = """
import sys, time, redis
client = redis.Redis.from_url(sys.argv[1])
got = client.xreadgroup(sys.argv[2], "doomed-worker", {sys.argv[3]: ">"}, count=int(sys.argv[4]))
print(sum(len(entries) for _, entries in got), flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def doomed(client: redis.Redis, redis_url: str) -> list[str]:
    """Requests a worker took and died holding (SIGKILL), one of them published twice."""
    client.xgroup_create(KEYS.requests, KEYS.group, "0", mkstream=True)
    for i, request_id in enumerate(DOOMED):
        client.xadd(KEYS.requests, AsyncRequest(request_id, _body(seed=i), CALLER).fields())
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _DOOMED_WORKER,
            redis_url,
            KEYS.group,
            KEYS.requests,
            str(len(DOOMED)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    assert worker.stdout.readline().strip() == str(len(DOOMED))
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    worker.stdout.close()
    # The duplicate arrives after the crash, so it is delivered fresh to the server.
    client.xadd(KEYS.requests, AsyncRequest(DOOMED[0], _body(seed=0), CALLER).fields())
    pending = cast(dict[str, Any], client.xpending(KEYS.requests, KEYS.group))
    assert pending["pending"] == len(DOOMED)
    return DOOMED


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServingManager]:
    with LocalServingManager(tmp_path_factory.mktemp("async"), ready_timeout_s=120) as m:
        yield m


@pytest.fixture(scope="module")
def rest(
    manager: LocalServingManager,
    registered_model: RegisteredModel,
    redis_url: str,
    doomed: list[str],
) -> str:
    spec = LocalModelSpec(
        name=NAME,
        model_uri=registered_model.champion_uri,
        tracking_uri=registered_model.tracking_uri,
        server="lean",
        extra_env={
            "LOOPLINE_ASYNC_REDIS_URL": redis_url,
            "LOOPLINE_ASYNC_CLAIM_IDLE_S": str(CLAIM_IDLE_S),
            "LOOPLINE_ASYNC_RESULT_STREAM": "true",
            "LOOPLINE_ASYNC_BLOCK_MS": "200",
        },
    )
    return manager.start(spec).endpoints.rest


def _metrics(manager: LocalServingManager) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(manager.endpoints(NAME).metrics, timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _gauge(manager: LocalServingManager, name: str) -> float:
    return _metrics(manager).get((name, (("model", NAME),)), -1.0)


def _poll(rest: str, location: str, timeout_s: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.get(rest + location, timeout=10)
        if response.status_code != 202 or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def test_backlog_of_a_dead_worker_shows_as_depth_and_age(
    rest: str, manager: LocalServingManager
) -> None:
    # The dead worker's entries wait CLAIM_IDLE_S before anyone may take them over.
    deadline = time.monotonic() + 10
    while (
        _gauge(manager, "loopline_async_queue_depth") < len(DOOMED) and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert _gauge(manager, "loopline_async_queue_depth") >= len(DOOMED)
    assert _gauge(manager, "loopline_async_pending") >= len(DOOMED)
    assert _gauge(manager, "loopline_async_oldest_age_seconds") > 0


def test_accepted_at_once_and_polled_result_equals_sync(rest: str) -> None:
    body = _body(rows=3, seed=7, request_id="same-as-sync")
    sync = httpx.post(f"{rest}/v2/models/{NAME}/infer", content=body, timeout=30)
    assert sync.status_code == 200, sync.text
    accepted = httpx.post(
        f"{rest}/v2/models/{NAME}/infer/async",
        content=body,
        headers={"loopline-caller": CALLER},
        timeout=30,
    )
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["location"]
    assert location == f"/v2/models/{NAME}/infer/async/same-as-sync"
    assert accepted.json()["id"] == "same-as-sync"
    done = _poll(rest, location)
    assert done.status_code == 200, done.text
    assert done.json()["outputs"] == sync.json()["outputs"]
    assert done.json()["id"] == "same-as-sync"


def test_request_without_id_gets_one(rest: str) -> None:
    accepted = httpx.post(f"{rest}/v2/models/{NAME}/infer/async", content=_body(), timeout=30)
    assert accepted.status_code == 202
    request_id = accepted.json()["id"]
    assert accepted.headers["location"].endswith("/" + request_id)
    assert _poll(rest, accepted.headers["location"]).status_code == 200


def test_bad_requests_are_refused_at_once(rest: str) -> None:
    url = f"{rest}/v2/models/{NAME}/infer/async"
    not_v2 = httpx.post(url, content=b'{"inputs": 3}', timeout=30)
    assert not_v2.status_code == 422
    assert "inputs" in not_v2.json()["error"]
    bad_id = httpx.post(url, content=_body(request_id="has space"), timeout=30)
    assert bad_id.status_code == 422
    assert "id must be" in bad_id.json()["error"]
    assert (
        httpx.get(f"{rest}/v2/models/{NAME}/infer/async/never-sent", timeout=10).status_code == 404
    )
    assert httpx.get(f"{rest}/v2/models/other/infer/async/x", timeout=10).status_code == 404


def test_a_request_whose_scoring_fails_stores_the_error(rest: str) -> None:
    x = sensor_rows(1)
    body = json.dumps(
        {
            "id": "wrong-width",
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": [1, 2],
                    "data": x.ravel()[:2].tolist(),
                }
            ],
        }
    ).encode()
    accepted = httpx.post(f"{rest}/v2/models/{NAME}/infer/async", content=body, timeout=30)
    assert accepted.status_code == 202
    done = _poll(rest, accepted.headers["location"])
    assert 400 <= done.status_code < 500
    assert "error" in done.json()


def test_retried_post_is_answered_once(rest: str, client: redis.Redis) -> None:
    body = _body(seed=3, request_id="retried")
    url = f"{rest}/v2/models/{NAME}/infer/async"
    first = httpx.post(url, content=body, timeout=30)
    second = httpx.post(url, content=body, timeout=30)
    assert first.status_code == second.status_code == 202
    assert first.headers["location"] == second.headers["location"]
    assert _poll(rest, first.headers["location"]).status_code == 200
    assert httpx.post(url, content=body, timeout=30).status_code == 202  # after: still once
    time.sleep(1)
    assert _published_ids(client).count("retried") == 1


def _published_ids(client: redis.Redis) -> list[str]:
    return [fields[b"id"].decode() for _, fields in cast(list[Any], client.xrange(KEYS.results))]


def test_a_killed_workers_requests_are_answered_once_by_another(
    rest: str, manager: LocalServingManager, client: redis.Redis, doomed: list[str]
) -> None:
    deadline = time.monotonic() + CLAIM_IDLE_S + 60
    results: dict[str, StoredResult] = {}
    while len(results) < len(doomed) and time.monotonic() < deadline:
        for request_id in doomed:
            raw = client.get(KEYS.result(request_id))
            if raw is not None:
                results[request_id] = StoredResult.decode(raw)
        time.sleep(0.5)
    assert sorted(results) == sorted(doomed)
    assert all(r.status == 200 for r in results.values())
    for request_id in doomed:
        polled = httpx.get(f"{rest}/v2/models/{NAME}/infer/async/{request_id}", timeout=10)
        assert polled.status_code == 200
        assert polled.json()["outputs"][0]["name"] == "anomaly_score"
    time.sleep(1.5)  # the duplicate of doomed-0 is read and dropped; stats are republished
    published = _published_ids(client)
    assert sorted(i for i in published if i in doomed) == sorted(doomed)  # each once
    metrics = _metrics(manager)
    assert metrics[("loopline_async_reclaimed_total", (("model", NAME),))] >= len(doomed)
    assert (
        metrics[("loopline_async_messages_total", (("model", NAME), ("outcome", "duplicate")))] >= 1
    )
    assert _gauge(manager, "loopline_async_queue_depth") == 0
    assert _gauge(manager, "loopline_async_oldest_age_seconds") == 0
    assert client.xlen(KEYS.requests) == 0


def test_async_requests_count_in_the_usage_metrics_as_protocol_async(
    manager: LocalServingManager, rest: str
) -> None:
    metrics = _metrics(manager)
    ok = [
        value
        for (name, labels), value in metrics.items()
        if name == "loopline_inference_requests_total"
        and dict(labels).get("protocol") == "async"
        and dict(labels).get("outcome") == "ok"
    ]
    assert ok
    assert sum(ok) >= 1
    by_caller = [
        value
        for (name, labels), value in metrics.items()
        if name == "loopline_usage_requests_total" and dict(labels).get("caller") == CALLER
    ]
    assert by_caller
    assert sum(by_caller) >= 1


def test_result_ttl_is_set(client: redis.Redis, rest: str) -> None:
    ttl = cast(int, client.ttl(KEYS.result("same-as-sync")))
    assert 0 < ttl <= 3600


def test_server_without_redis_says_async_is_off(
    tmp_path: Path, registered_model: RegisteredModel
) -> None:
    spec = LocalModelSpec(
        name="drill-sync-only",
        model_uri=registered_model.champion_uri,
        tracking_uri=registered_model.tracking_uri,
        server="lean",
    )
    with LocalServingManager(tmp_path, ready_timeout_s=120) as m:
        base = m.start(spec).endpoints.rest
        response = httpx.post(
            f"{base}/v2/models/drill-sync-only/infer/async", content=_body(), timeout=30
        )
    assert response.status_code == 404
    assert "LOOPLINE_ASYNC_REDIS_URL" in response.json()["error"]


def test_local_mode_starts_one_redis_for_the_local_servers(tmp_path: Path) -> None:
    assert local_async_env(tmp_path, AsyncSettings()) == {}  # off by default
    assert local_async_env(tmp_path, AsyncSettings(local=True, redis_url="redis://r:1/0")) == {}
    env = local_async_env(tmp_path, AsyncSettings(local=True))
    folder = tmp_path / ".redis"
    try:
        url = env["LOOPLINE_ASYNC_REDIS_URL"]
        assert url.startswith("redis://127.0.0.1:")
        with redis.Redis.from_url(url) as c:
            assert c.ping()
        assert local_async_env(tmp_path, AsyncSettings(local=True)) == env  # one for all
    finally:
        LocalRedis(folder.resolve()).stop_adopted()


def test_consumers_gone_for_long_are_pruned_unless_they_hold_entries(redis_url: str) -> None:
    settings = AsyncSettings(redis_url=redis_url, prefix="prune-test")
    keys = StreamKeys(settings.prefix, "m")

    async def scenario() -> tuple[list[str], set[str]]:
        store = AsyncStore(settings, "m")
        try:
            await store.ensure_group()
            await store.client.xadd(keys.requests, AsyncRequest("p-0", _body()).fields())
            (entry_id, _), *_ = await store.read("answered-all", block_ms=None)
            await store.drop([entry_id])
            await store.client.xadd(keys.requests, AsyncRequest("p-1", _body()).fields())
            assert len(await store.read("holds-one", block_ms=None)) == 1
            await asyncio.sleep(0.3)
            removed = await store.prune_consumers("me", min_idle_s=0.2)
            left = await store.client.xinfo_consumers(keys.requests, keys.group)
            return removed, {c["name"].decode() for c in left}
        finally:
            await store.close()

    removed, left = asyncio.run(scenario())
    assert removed == ["answered-all"]
    assert left == {"holds-one"}


def test_a_server_started_before_its_redis_catches_up(
    tmp_path: Path, registered_model: RegisteredModel
) -> None:
    port = free_port()
    spec = LocalModelSpec(
        name="drill-async-late",
        model_uri=registered_model.champion_uri,
        tracking_uri=registered_model.tracking_uri,
        server="lean",
        extra_env={"LOOPLINE_ASYNC_REDIS_URL": f"redis://127.0.0.1:{port}/0"},
    )
    late = LocalRedis(tmp_path / "redis", port=port)
    with LocalServingManager(tmp_path / "serving", ready_timeout_s=120) as m:
        base = m.start(spec).endpoints.rest
        url = f"{base}/v2/models/drill-async-late/infer/async"
        down = httpx.post(url, content=_body(), timeout=30)
        assert down.status_code == 503
        assert "asynchronous inference store unavailable" in down.json()["error"]
        late.start()
        try:
            accepted = httpx.post(url, content=_body(request_id="late-1"), timeout=30)
            assert accepted.status_code == 202
            done = _poll(base, accepted.headers["location"])
            assert done.status_code == 200, done.text
        finally:
            late.stop()
