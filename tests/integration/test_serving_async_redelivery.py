"""10,000 asynchronous requests, two lean model servers consuming the same stream, one of
them SIGKILLed mid-stream: every request is answered, each exactly once (checked by id on the
result stream), and the killed worker's batch is answered by another consumer.

A real redis-server on a free loopback port and real server processes; the killed one is
restarted by its manager under a new consumer name, as a pod would be.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis

from loopline.serving.async_messages import AsyncRequest, StoredResult, StreamKeys
from loopline.serving.local import LocalModelSpec, LocalServingManager
from tests.fixtures.serving import RegisteredModel, sensor_rows

NAME = "drill-async-10k"
KEYS = StreamKeys("loopline:async", NAME)
TOTAL = 10_000
KILL_AFTER = 2_000
CLAIM_IDLE_S = 5


@pytest.fixture(scope="module")
def managers(
    tmp_path_factory: pytest.TempPathFactory, registered_model: RegisteredModel, redis_url: str
) -> Iterator[list[LocalServingManager]]:
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
    roots = [tmp_path_factory.mktemp(f"async-{i}") for i in range(2)]
    with (
        LocalServingManager(roots[0], ready_timeout_s=120) as a,
        LocalServingManager(roots[1], ready_timeout_s=120) as b,
    ):
        a.start(spec)
        b.start(spec)
        yield [a, b]


def _bodies() -> list[bytes]:
    x = sensor_rows(TOTAL, seed=11)
    return [
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "features",
                        "datatype": "FP32",
                        "shape": [1, x.shape[1]],
                        "data": row.tolist(),
                    }
                ]
            }
        ).encode()
        for row in x
    ]


def _published(client: redis.Redis) -> list[str]:
    entries = cast(list[Any], client.xrange(KEYS.results))
    return [fields[b"id"].decode() for _, fields in entries]


def test_ten_thousand_requests_survive_a_killed_worker_each_answered_once(
    managers: list[LocalServingManager], redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    ids = [f"r-{i:05d}" for i in range(TOTAL)]
    with client.pipeline(transaction=False) as pipe:
        for request_id, body in zip(ids, _bodies(), strict=True):
            pipe.xadd(KEYS.requests, AsyncRequest(request_id, body, "historian").fields())
        pipe.execute()

    deadline = time.monotonic() + 120
    while cast(int, client.xlen(KEYS.results)) < KILL_AFTER and time.monotonic() < deadline:
        time.sleep(0.05)
    victim = managers[0].status(NAME).pid
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    dead_consumer = f"{socket.gethostname()}-{victim}"
    held = cast(
        list[Any], client.xpending_range(KEYS.requests, KEYS.group, "-", "+", 1000, dead_consumer)
    )
    assert held, "the killed worker held no batch: the kill did not land mid-batch"

    deadline = time.monotonic() + 300
    while cast(int, client.xlen(KEYS.results)) < TOTAL and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2 * CLAIM_IDLE_S)  # anything answered twice would show up by now

    counts = Counter(_published(client))
    assert set(counts) == set(ids), f"missing: {sorted(set(ids) - set(counts))[:10]}"
    assert [i for i, n in counts.items() if n != 1] == []
    assert client.xlen(KEYS.requests) == 0
    # The dead consumer's entries were taken over: nothing is pending for it any more.
    pending = cast(
        list[Any], client.xpending_range(KEYS.requests, KEYS.group, "-", "+", 1000, dead_consumer)
    )
    assert pending == []
    for request_id in ids[:: TOTAL // 20]:
        raw = client.get(KEYS.result(request_id))
        assert raw is not None
        assert StoredResult.decode(cast(bytes, raw)).status == 200
    client.close()
