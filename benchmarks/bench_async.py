"""Asynchronous inference next to synchronous REST on the same lean server and model.

One lean server with asynchronous inference on, a local redis-server, single-row requests:

- `sync_rest`: `CONCURRENCY` clients posting `POST .../infer` back to back; latency per
  request and sustained throughput.
- `async_stream`: the same number of requests published at once to the request stream (a
  historian's burst); end-to-end latency from `XADD` to the answer on the result stream, and
  sustained throughput from the first publish to the last answer (the queue drains at the
  worker's pace, so latency grows with the position in the burst: the p50 says how long a
  burst of this size takes to half drain, not the cost of one request).
- `async_rest_submit`: how fast `POST .../infer/async` accepts requests (202s per second).

The ratio `async_vs_sync_throughput` is what to compare across runs; the machine's speed
varies from run to run.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import httpx
import redis

from benchmarks.common import percentiles, write_results

REQUESTS = int(os.environ.get("LOOPLINE_BENCH_ASYNC_REQUESTS", "5000"))
CONCURRENCY = 4
NAME = "drill-ae"


def _bodies(n: int) -> list[bytes]:
    from tests.fixtures.serving import sensor_rows

    x = sensor_rows(n, seed=5)
    shape = [1, int(x.shape[1])]
    return [
        json.dumps(
            {
                "inputs": [
                    {"name": "features", "datatype": "FP32", "shape": shape, "data": r.tolist()}
                ]
            }
        ).encode()
        for r in x
    ]


def sync_rest(rest: str, bodies: list[bytes]) -> dict[str, Any]:
    url = f"{rest}/v2/models/{NAME}/infer"
    chunks = [bodies[i::CONCURRENCY] for i in range(CONCURRENCY)]

    def client(chunk: list[bytes]) -> list[float]:
        out = []
        with httpx.Client(timeout=30, trust_env=False) as c:
            for body in chunk:
                start = time.perf_counter()
                c.post(url, content=body).raise_for_status()
                out.append(time.perf_counter() - start)
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        latencies = [s for part in pool.map(client, chunks) for s in part]
    elapsed = time.perf_counter() - start
    return {"requests_per_s": len(bodies) / elapsed, "latency": percentiles(latencies)}


def async_stream(client: redis.Redis, bodies: list[bytes]) -> dict[str, Any]:
    from loopline.serving.async_messages import AsyncRequest, StreamKeys

    keys = StreamKeys("loopline:async", NAME)
    sent: dict[str, float] = {}
    start = time.perf_counter()
    with client.pipeline(transaction=False) as pipe:
        for i, body in enumerate(bodies):
            request_id = f"bench-{i}"
            sent[request_id] = time.perf_counter()
            pipe.xadd(keys.requests, AsyncRequest(request_id, body).fields())
            if i % 500 == 499:
                pipe.execute()
        pipe.execute()
    latencies: list[float] = []
    cursor = "0-0"
    while len(latencies) < len(bodies):
        got = cast(Any, client.xread({keys.results: cursor}, count=1000, block=30_000))
        if not got:
            raise RuntimeError(f"no answer for 30 s after {len(latencies)} of {len(bodies)}")
        for entry_id, fields in got[0][1]:
            cursor = entry_id
            latencies.append(time.perf_counter() - sent[fields[b"id"].decode()])
    elapsed = time.perf_counter() - start
    return {"requests_per_s": len(bodies) / elapsed, "end_to_end": percentiles(latencies)}


def async_rest_submit(rest: str, bodies: list[bytes]) -> dict[str, Any]:
    url = f"{rest}/v2/models/{NAME}/infer/async"
    chunks = [bodies[i::CONCURRENCY] for i in range(CONCURRENCY)]

    def client(chunk: list[bytes]) -> list[float]:
        out = []
        with httpx.Client(timeout=30, trust_env=False) as c:
            for body in chunk:
                start = time.perf_counter()
                if c.post(url, content=body).status_code != 202:
                    raise RuntimeError("async submit was not accepted")
                out.append(time.perf_counter() - start)
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        latencies = [s for part in pool.map(client, chunks) for s in part]
    elapsed = time.perf_counter() - start
    return {"accepted_per_s": len(bodies) / elapsed, "latency": percentiles(latencies)}


def main() -> Path:
    from loopline import quiet
    from loopline.serving.async_redis_local import LocalRedis
    from loopline.serving.local import LocalModelSpec, LocalServingManager
    from tests.fixtures.serving import register_bundles

    quiet.apply()
    bodies = _bodies(REQUESTS)
    results: dict[str, Any] = {"config": {"requests": REQUESTS, "concurrency": CONCURRENCY}}
    with tempfile.TemporaryDirectory(prefix="loopline-bench-async-") as tmp:
        root = Path(tmp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            registered = register_bundles(root / "mlflow")
        local_redis = LocalRedis(root / "redis")
        url = local_redis.start()
        try:
            with LocalServingManager(root / "serving") as manager:
                spec = LocalModelSpec(
                    name=NAME,
                    model_uri=registered.champion_uri,
                    tracking_uri=registered.tracking_uri,
                    server="lean",
                    extra_env={
                        "LOOPLINE_ASYNC_REDIS_URL": url,
                        "LOOPLINE_ASYNC_RESULT_STREAM": "true",
                        "LOOPLINE_ASYNC_BATCH_SIZE": "64",
                    },
                )
                rest = manager.start(spec).endpoints.rest
                client = redis.Redis.from_url(url)
                sync_rest(rest, bodies[:200])  # warm-up
                results["sync_rest"] = sync_rest(rest, bodies)
                results["async_stream"] = async_stream(client, bodies)
                results["async_rest_submit"] = async_rest_submit(rest, bodies)
                client.close()
        finally:
            local_redis.stop()
    results["async_vs_sync_throughput"] = (
        results["async_stream"]["requests_per_s"] / results["sync_rest"]["requests_per_s"]
    )
    return write_results("async", results)


if __name__ == "__main__":
    print(main())
