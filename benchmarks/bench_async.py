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
- `paced`: a producer that sends at a fixed rate, `PACE_FRACTION` of the async stream's
  sustained throughput measured just before, for `PACED_SECONDS`: `async_stream` one `XADD`
  per request on schedule, `sync_rest` the same schedule over `CONCURRENCY` connections.
  Latency runs from each request's scheduled time to its answer (a request sent late because
  the client fell behind counts its wait), so these percentiles are what one request costs
  at that load, not how long a burst takes to drain.

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
PACE_FRACTION = float(os.environ.get("LOOPLINE_BENCH_ASYNC_PACE_FRACTION", "0.5"))
PACED_SECONDS = float(os.environ.get("LOOPLINE_BENCH_ASYNC_PACED_SECONDS", "10"))
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


def _wait_until(when: float) -> None:
    delay = when - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def async_paced(client: redis.Redis, bodies: list[bytes], rate: float) -> dict[str, Any]:
    """One `XADD` per request at `rate` per second; end-to-end from the scheduled time."""
    import threading

    from loopline.serving.async_messages import AsyncRequest, StreamKeys

    keys = StreamKeys("loopline:async", NAME)
    last = cast(Any, client.xrevrange(keys.results, count=1))
    cursor: bytes | str = last[0][0] if last else "0-0"
    start = time.perf_counter() + 0.2
    due = {f"paced-{i}": start + i / rate for i in range(len(bodies))}
    latencies: list[float] = []

    def produce() -> None:
        with redis.Redis(connection_pool=client.connection_pool) as producer:
            for i, body in enumerate(bodies):
                request_id = f"paced-{i}"
                _wait_until(due[request_id])
                producer.xadd(keys.requests, AsyncRequest(request_id, body).fields())

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    while len(latencies) < len(bodies):
        got = cast(Any, client.xread({keys.results: cursor}, count=1000, block=30_000))
        if not got:
            raise RuntimeError(f"no answer for 30 s after {len(latencies)} of {len(bodies)}")
        for entry_id, fields in got[0][1]:
            cursor = entry_id
            scheduled = due.get(fields[b"id"].decode())
            if scheduled is not None:
                latencies.append(time.perf_counter() - scheduled)
    producer.join()
    elapsed = time.perf_counter() - start
    return {"requests_per_s": len(bodies) / elapsed, "end_to_end": percentiles(latencies)}


def sync_paced(rest: str, bodies: list[bytes], rate: float) -> dict[str, Any]:
    """The same schedule as `async_paced` over `CONCURRENCY` connections; latency from the
    scheduled time (a connection still busy makes the next request late, and that counts)."""
    url = f"{rest}/v2/models/{NAME}/infer"
    start = time.perf_counter() + 0.2

    def client(k: int) -> list[float]:
        out = []
        with httpx.Client(timeout=30, trust_env=False) as c:
            for i in range(k, len(bodies), CONCURRENCY):
                scheduled = start + i / rate
                _wait_until(scheduled)
                c.post(url, content=bodies[i]).raise_for_status()
                out.append(time.perf_counter() - scheduled)
        return out

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        latencies = [s for part in pool.map(client, range(CONCURRENCY)) for s in part]
    elapsed = time.perf_counter() - start
    return {"requests_per_s": len(bodies) / elapsed, "latency": percentiles(latencies)}


def paced(rest: str, client: redis.Redis, bodies: list[bytes], sustained: float) -> dict[str, Any]:
    rate = PACE_FRACTION * sustained
    n = max(1, min(len(bodies), int(rate * PACED_SECONDS)))
    return {
        "rate_per_s": rate,
        "fraction_of_sustained": PACE_FRACTION,
        "requests": n,
        "async_stream": async_paced(client, bodies[:n], rate),
        "sync_rest": sync_paced(rest, bodies[:n], rate),
    }


def main() -> Path:
    from loopline import quiet
    from loopline.serving.async_redis_local import LocalRedis
    from loopline.serving.local import LocalModelSpec, LocalServingManager
    from tests.fixtures.serving import register_bundles

    quiet.apply()
    bodies = _bodies(REQUESTS)
    results: dict[str, Any] = {
        "config": {
            "requests": REQUESTS,
            "concurrency": CONCURRENCY,
            "pace_fraction": PACE_FRACTION,
            "paced_seconds": PACED_SECONDS,
        }
    }
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
                sustained = results["async_stream"]["requests_per_s"]
                results["paced"] = paced(rest, client, bodies, sustained)
                client.close()
        finally:
            local_redis.stop()
    results["async_vs_sync_throughput"] = (
        results["async_stream"]["requests_per_s"] / results["sync_rest"]["requests_per_s"]
    )
    at_pace = results["paced"]
    results["paced_async_vs_sync_p50"] = (
        at_pace["async_stream"]["end_to_end"]["p50_ms"] / at_pace["sync_rest"]["latency"]["p50_ms"]
    )
    return write_results("async", results)


if __name__ == "__main__":
    print(main())
