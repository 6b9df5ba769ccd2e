"""Serving latency and throughput: Loopline's runtime against its peers, in one run.

Same model (one registered bundle version in a throwaway MLflow), same rows, same loopback:

- `in_process`: `bundle.score(x)` called directly (no server): the model's own cost;
- `echo_floor`: a bare ASGI app under uvicorn that returns the request body: the round trip
  of the same payload through any Python HTTP server here, the floor;
- `stock_mlflow`: stock MLServer with the mlserver-mlflow runtime serving the same MLflow
  model (pandas codec + pyfunc predict);
- `loopline_rest` / `loopline_rest_matrix` / `loopline_grpc`: Loopline's runtime in the lean
  server (the local default) over REST (one input per feature, the same payload the stock
  path gets; and one [n, 12] tensor) and gRPC (one [n, 12] tensor in raw_input_contents);
- `loopline_mlserver_*`: the same runtime hosted by MLServer, as Seldon runs it.

Both MLServers run with the same server settings (models in-process, no access log, no gzip).
Each case runs with 1 client and with `CONCURRENCY` clients over keep-alive connections (a
minimal asyncio HTTP/1.1 client, so the client costs little of the 2 cores), at batch 1 and 64.
All servers run at once and the cases take turns, `ROUNDS` turns each (`interleaved`).
Ratios, not absolute numbers, are the result: this machine is shared and its speed varies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import percentiles, time_calls, write_results

CONCURRENCY = 4
REQUESTS = int(os.environ.get("LOOPLINE_BENCH_SERVING_REQUESTS", "500"))
WARMUP = 50
ROUNDS = 5
BATCHES = (1, 64)
HOST = "127.0.0.1"

ECHO_APP = """
import sys, uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


# -- load generation ------------------------------------------------------------------------


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc): the server's own cost per
    request, which, unlike wall time, does not depend on what else the machine is running."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _http_client(port: int, request: bytes, count: int, out: list[float]) -> int:
    """One keep-alive connection sending `request` `count` times; returns non-200 answers."""
    reader, writer = await asyncio.open_connection(HOST, port)
    bad = 0
    try:
        for _ in range(count):
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            out.append(time.perf_counter() - start)
            if head[9:12] != b"200":
                bad += 1
    finally:
        writer.close()
    return bad


def http_request(port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass
class Tally:
    """Latencies and costs of one case, summed over the rounds it ran in."""

    latencies: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    bad: int = 0
    cpu_s: float = 0.0

    def add(self, other: Tally) -> None:
        self.latencies += other.latencies
        self.elapsed_s += other.elapsed_s
        self.bad += other.bad
        self.cpu_s += other.cpu_s

    def summary(self) -> dict[str, Any]:
        doc: dict[str, Any] = percentiles(self.latencies)
        doc["throughput_rps"] = len(self.latencies) / self.elapsed_s
        doc["server_cpu_ms_per_request"] = self.cpu_s / len(self.latencies) * 1e3
        doc["non_200"] = self.bad
        return doc


# A case: (clients, requests, warm-up requests) -> Tally.
Case = Callable[[int, int, int], Tally]


def http_case(port: int, path: str, body: bytes, pid: int) -> Case:
    request = http_request(port, path, body)

    def run(clients: int, requests: int, warmup: int) -> Tally:
        async def main() -> Tally:
            if warmup:
                await _http_client(port, request, warmup, [])
            per_client = max(1, requests // clients)
            latencies: list[float] = []
            cpu = process_cpu_s(pid)
            start = time.perf_counter()
            bad = await asyncio.gather(
                *[_http_client(port, request, per_client, latencies) for _ in range(clients)]
            )
            elapsed = time.perf_counter() - start
            return Tally(latencies, elapsed, sum(bad), process_cpu_s(pid) - cpu)

        return asyncio.run(main())

    return run


def grpc_case(target: str, request: Any, pid: int) -> Case:
    import grpc
    from mlserver.grpc.dataplane_pb2_grpc import GRPCInferenceServiceStub

    async def client(stub: Any, count: int, out: list[float]) -> None:
        for _ in range(count):
            start = time.perf_counter()
            await stub.ModelInfer(request)
            out.append(time.perf_counter() - start)

    def run(clients: int, requests: int, warmup: int) -> Tally:
        async def main() -> Tally:
            async with grpc.aio.insecure_channel(target) as channel:
                stub = GRPCInferenceServiceStub(channel)
                await client(stub, max(warmup, 1), [])
                per_client = max(1, requests // clients)
                latencies: list[float] = []
                cpu = process_cpu_s(pid)
                start = time.perf_counter()
                await asyncio.gather(*[client(stub, per_client, latencies) for _ in range(clients)])
                elapsed = time.perf_counter() - start
                return Tally(latencies, elapsed, 0, process_cpu_s(pid) - cpu)

        return asyncio.run(main())

    return run


def interleaved(cases: dict[str, Case], clients: int) -> dict[str, dict[str, Any]]:
    """Every case in turn, `ROUNDS` times, `REQUESTS / ROUNDS` requests a turn.

    The machine's speed drifts by 2x within minutes (shared cores), so cases measured one
    after the other compare moments, not servers; taking turns spreads the drift over all."""
    tallies = {name: Tally() for name in cases}
    for warm in cases.values():
        warm(1, WARMUP, 0)  # connections, caches, lazy imports
    for _ in range(ROUNDS):
        for name, run in cases.items():
            tallies[name].add(run(clients, max(1, REQUESTS // ROUNDS), 5))
    return {name: tally.summary() for name, tally in tallies.items()}


# -- payloads ---------------------------------------------------------------------------------


def per_feature_body(x: np.ndarray, names: list[str]) -> bytes:
    inputs = [
        {"name": n, "datatype": "FP32", "shape": [x.shape[0]], "data": x[:, j].tolist()}
        for j, n in enumerate(names)
    ]
    return json.dumps({"inputs": inputs}).encode()


def matrix_body(x: np.ndarray) -> bytes:
    tensor = {"name": "features", "datatype": "FP32", "shape": list(x.shape)}
    return json.dumps({"inputs": [{**tensor, "data": x.reshape(-1).tolist()}]}).encode()


def grpc_request(name: str, x: np.ndarray) -> Any:
    from mlserver.grpc import dataplane_pb2 as pb

    tensor = pb.ModelInferRequest.InferInputTensor(
        name="features", datatype="FP32", shape=list(x.shape)
    )
    return pb.ModelInferRequest(
        model_name=name, inputs=[tensor], raw_input_contents=[x.astype("<f4").tobytes()]
    )


# -- servers ----------------------------------------------------------------------------------


def start_echo(log: Path) -> tuple[subprocess.Popen[bytes], int]:
    from loopline.serving.local import free_port

    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", ECHO_APP, str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    _wait_http(f"http://{HOST}:{port}/", proc, log)
    return proc, port


def start_stock(
    folder: Path, model_dir: Path, tracking: str
) -> tuple[subprocess.Popen[bytes], int]:
    """Stock MLServer + mlserver-mlflow, with the same server settings as the local backend."""
    from loopline import auth
    from loopline.serving.local import free_port, mlserver_command, server_settings

    rest, grpc_port, metrics = free_port(), free_port(), free_port()
    (folder / "models" / "stock").mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps(server_settings(rest, grpc_port, metrics)))
    (folder / "models" / "stock" / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "stock",
                "implementation": "mlserver_mlflow.MLflowRuntime",
                "parameters": {"uri": str(model_dir)},
            }
        )
    )
    log = folder / "server.log"
    # mlserver_command guards the repository API: it needs the Model's token, like any host.
    token_file = folder / auth.TOKEN_FILE
    auth.ensure_token_file(token_file)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, auth.TOKEN_FILE_ENV: str(token_file)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            mlserver_command(folder), cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    _wait_http(f"http://{HOST}:{rest}/v2/models/stock/ready", proc, log, timeout_s=300)
    return proc, rest


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code in (200, 404, 405):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s} s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the profile ------------------------------------------------------------------------------


def profile(bundle: Any, x: np.ndarray, repeat: int = 300) -> dict[str, dict[str, float]]:
    """Median microseconds of each step of one REST request inside the server process, for
    the lean server's plain-JSON path and for the pydantic path (MLServer's types) it
    replaces, on the per-feature body line clients send."""
    from mlserver.types import InferenceRequest, InferenceResponse

    from loopline.serving.payload import FeatureLayout, decode_inputs
    from loopline.serving.scoring import encode_outputs, output_columns, score_batch
    from loopline.serving.v2_json import parse_plain, response_json

    layout = FeatureLayout.of(bundle.feature_names, bundle.core_feature_names)
    body = per_feature_body(x, list(bundle.feature_names))
    plain = parse_plain(body)
    assert plain is not None
    inputs = plain[0]
    decoded = decode_inputs(inputs, layout, max_rows=4096)
    scored = score_batch(bundle, decoded.x, layout, complete=decoded.complete)
    columns = output_columns(scored, bundle.task, "1")
    request = InferenceRequest.model_validate_json(body)
    response = InferenceResponse(
        model_name="m", model_version="1", outputs=encode_outputs(scored, bundle.task, "1")
    )
    paths: dict[str, dict[str, Callable[[], object]]] = {
        "lean_plain_json": {
            "parse_json": lambda: parse_plain(body),
            "decode_validate": lambda: decode_inputs(inputs, layout, max_rows=4096),
            "score_primary": lambda: score_batch(
                bundle, decoded.x, layout, complete=decoded.complete
            ),
            "output_columns": lambda: output_columns(scored, bundle.task, "1"),
            "serialise_response": lambda: response_json("m", "1", None, columns),
        },
        "pydantic_v2_types": {
            "parse_json": lambda: InferenceRequest.model_validate_json(body),
            "decode_validate": lambda: decode_inputs(request.inputs, layout, max_rows=4096),
            "score_primary": lambda: score_batch(
                bundle, decoded.x, layout, complete=decoded.complete
            ),
            "output_columns": lambda: encode_outputs(scored, bundle.task, "1"),
            "serialise_response": lambda: response.model_dump_json(),
        },
    }
    return {
        path: {
            name: float(np.median(time_calls(fn, repeat=repeat, warmup=20)) * 1e6)
            for name, fn in steps.items()
        }
        for path, steps in paths.items()
    }


IDLE_GAPS_US = (0, 50, 200, 1000)


def idle_gaps(settings: Path, bodies: dict[int, bytes], requests: int = 1000) -> dict[str, Any]:
    """Median microseconds of one whole REST request in this process (`V2App` called
    directly: no sockets, no client) after each idle gap.

    Why: the live server's requests cost about twice the in-process steps, and the ratio to
    the echo floor swings with this machine's phases. Sleeping before each call reproduces
    that without any server, so each run records how much this machine slows a request its
    CPU was idle before (docs/serving.md, "Where the time goes")."""
    from loopline import auth
    from loopline.serving.runtime_slot import RuntimeSlot
    from loopline.serving.v2_asgi import V2App

    async def run() -> dict[str, Any]:
        slot = RuntimeSlot(settings)
        await slot.load()
        app = V2App(slot, server_version="bench", max_body_bytes=1 << 26, token=auth.new_token())
        statuses: set[int] = set()

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.add(message["status"])

        results: dict[str, Any] = {}
        for batch, body in bodies.items():
            scope = {
                "type": "http",
                "method": "POST",
                "path": "/v2/models/drill-ae/infer",
                "headers": [(b"content-length", str(len(body)).encode())],
            }
            message = {"type": "http.request", "body": body, "more_body": False}

            async def receive(message: dict[str, Any] = message) -> dict[str, Any]:
                return message

            times: dict[int, list[float]] = {gap: [] for gap in IDLE_GAPS_US}
            for _ in range(ROUNDS * 2):  # the gaps take turns, as the servers do
                for gap, out in times.items():
                    for i in range(requests // (ROUNDS * 2) + 10):
                        if gap:
                            # Blocking on purpose: the loop would round a timer up to 1 ms.
                            time.sleep(gap / 1e6)  # noqa: ASYNC251
                        start = time.perf_counter()
                        await app(scope, receive, send)
                        if i >= 10:  # the first few after a switch warm the path
                            out.append(time.perf_counter() - start)
            results[f"batch_{batch}"] = {
                f"after_{gap}_us": float(np.median(out)) * 1e6 for gap, out in times.items()
            }
        await slot.unload()
        if statuses != {200}:
            raise RuntimeError(f"in-process requests answered {sorted(statuses)}")
        return results

    return asyncio.run(run())


class _AbortContext:
    """The one part of a gRPC servicer context `V2Servicer` uses: an error the servicer
    reports ends the benchmark with its status and message, not a time."""

    async def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"in-process gRPC call failed: {code}: {details}")


def grpc_in_process(
    settings: Path, requests: dict[int, Any], calls: int = 2000
) -> dict[str, float]:
    """Median microseconds of one gRPC call's own work in this process: parse the request's
    protobuf, the servicer's `ModelInfer`, serialise the response (no channel, no grpc core).

    Why: set against the live server's CPU per call (0.4-0.6 ms), it shows how much of a
    gRPC call is the runtime's and how much grpc core and grpc.aio cost (docs/serving.md)."""
    from mlserver.grpc import dataplane_pb2 as pb

    from loopline.serving.runtime_slot import RuntimeSlot
    from loopline.serving.v2_grpc import V2Servicer

    async def run() -> dict[str, float]:
        slot = RuntimeSlot(settings)
        await slot.load()
        servicer = V2Servicer(slot, server_version="bench")
        context = _AbortContext()
        out: dict[str, float] = {}
        for batch, request in requests.items():
            wire = request.SerializeToString()

            async def call(wire: bytes = wire) -> None:
                response = await servicer.ModelInfer(pb.ModelInferRequest.FromString(wire), context)
                response.SerializeToString()

            for _ in range(50):
                await call()
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                await call()
                times.append(time.perf_counter() - start)
            out[f"batch_{batch}"] = float(np.median(times)) * 1e6
        await slot.unload()
        return out

    return asyncio.run(run())


# -- main ---------------------------------------------------------------------------------------


def main() -> Path:
    from loopline import quiet

    quiet.apply()
    import torch
    from mlflow.artifacts import download_artifacts

    from loopline.models.bundle import load_bundle
    from loopline.serving.local import LocalModelSpec, LocalServingManager, model_settings
    from loopline.serving.versions import resolve_model_uri
    from tests.fixtures.serving import register_bundles, sensor_rows

    torch.set_num_threads(1)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "config": {"requests": REQUESTS, "concurrency": [1, CONCURRENCY], "batches": list(BATCHES)}
    }
    with tempfile.TemporaryDirectory(prefix="loopline-bench-serving-") as tmp:
        root = Path(tmp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            registered = register_bundles(root / "mlflow")
        uri = f"models:/{registered.name}/{registered.champion_version}"
        files = resolve_model_uri(uri, registered.tracking_uri).load_uri
        bundle = load_bundle(files, tracking_uri=registered.tracking_uri)
        model_dir = Path(
            download_artifacts(artifact_uri=files, tracking_uri=registered.tracking_uri)
        )
        names = list(bundle.feature_names)
        data = {b: sensor_rows(b, seed=b) for b in BATCHES}

        results["in_process"] = {
            f"batch_{b}": percentiles(time_calls(partial(bundle.score, x), repeat=REQUESTS))
            for b, x in data.items()
        }
        results["profile_us"] = {f"batch_{b}": profile(bundle, x) for b, x in data.items()}
        in_process = LocalModelSpec(
            name="drill-ae", model_uri=uri, tracking_uri=registered.tracking_uri
        )
        settings = root / "in-process" / "drill-ae" / "model-settings.json"
        settings.parent.mkdir(parents=True)
        settings.write_text(json.dumps(model_settings(in_process)))
        results["idle_gap_us"] = idle_gaps(
            settings, {b: per_feature_body(x, names) for b, x in data.items()}
        )

        results["grpc_in_process_us"] = grpc_in_process(
            settings, {b: grpc_request("drill-ae", x) for b, x in data.items()}
        )

        # Every server runs at once so that the cases can take turns (see `interleaved`).
        with contextlib.ExitStack() as stack:
            echo, echo_port = start_echo(root / "echo.log")
            stack.callback(_stop, echo)
            stock, stock_port = start_stock(root / "stock", model_dir, registered.tracking_uri)
            stack.callback(_stop, stock)
            # The runtime under the lean server (the local default) and under MLServer (what
            # Seldon runs on a cluster).
            hosts = {}
            for server in ("lean", "mlserver"):
                manager = stack.enter_context(LocalServingManager(root / f"loopline-{server}"))
                spec = LocalModelSpec(
                    name="drill-ae",
                    model_uri=uri,
                    tracking_uri=registered.tracking_uri,
                    server=server,
                )
                hosts[server] = manager.start(spec)
            infer = "/v2/models/drill-ae/infer"
            by_batch: dict[int, dict[str, Case]] = {}
            for b, x in data.items():
                features = per_feature_body(x, names)
                batch_cases = {
                    "echo_floor": http_case(echo_port, "/", features, echo.pid),
                    "stock_mlflow": http_case(
                        stock_port, "/v2/models/stock/infer", features, stock.pid
                    ),
                }
                for server, prefix in (("lean", "loopline"), ("mlserver", "loopline_mlserver")):
                    status = hosts[server]
                    port, pid = int(status.endpoints.rest.rsplit(":", 1)[1]), status.pid or 0
                    batch_cases[f"{prefix}_rest"] = http_case(port, infer, features, pid)
                    batch_cases[f"{prefix}_rest_matrix"] = http_case(
                        port, infer, matrix_body(x), pid
                    )
                    batch_cases[f"{prefix}_grpc"] = grpc_case(
                        status.endpoints.grpc, grpc_request("drill-ae", x), pid
                    )
                by_batch[b] = batch_cases
            cases: dict[str, dict[str, Any]] = {}
            for b, batch_cases in by_batch.items():
                for clients in (1, CONCURRENCY):
                    for name, summary in interleaved(batch_cases, clients).items():
                        cases.setdefault(f"{name}/batch_{b}", {})[f"clients_{clients}"] = summary
    results["cases"] = cases
    results["ratios"] = ratios(cases)
    results["wall_s"] = time.perf_counter() - started
    return write_results("serving", results)


def ratios(cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The serving targets, as ratios against peers measured in this run."""
    conc = f"clients_{CONCURRENCY}"

    def get(case: str, clients: str, key: str) -> float:
        return float(cases[case][clients][key])

    def ratio(a: float, b: float) -> float | None:
        # CPU time has 10 ms ticks: a cheap server over few requests can read 0.
        return a / b if b > 0 else None

    out: dict[str, Any] = {}
    for b in BATCHES:
        out[f"batch_{b}"] = {
            "throughput_vs_stock": ratio(
                get(f"loopline_rest/batch_{b}", conc, "throughput_rps"),
                get(f"stock_mlflow/batch_{b}", conc, "throughput_rps"),
            ),
            "grpc_throughput_vs_stock": ratio(
                get(f"loopline_grpc/batch_{b}", conc, "throughput_rps"),
                get(f"stock_mlflow/batch_{b}", conc, "throughput_rps"),
            ),
            "rest_p50_vs_floor_1_client": ratio(
                get(f"loopline_rest/batch_{b}", "clients_1", "p50_ms"),
                get(f"echo_floor/batch_{b}", "clients_1", "p50_ms"),
            ),
            # The other documented layout: one 2-D FP32 `features` tensor.
            "rest_matrix_p50_vs_floor_1_client": ratio(
                get(f"loopline_rest_matrix/batch_{b}", "clients_1", "p50_ms"),
                get(f"echo_floor/batch_{b}", "clients_1", "p50_ms"),
            ),
            "rest_p50_vs_floor_concurrent": ratio(
                get(f"loopline_rest/batch_{b}", conc, "p50_ms"),
                get(f"echo_floor/batch_{b}", conc, "p50_ms"),
            ),
            "rest_p99_ms_concurrent": get(f"loopline_rest/batch_{b}", conc, "p99_ms"),
            "grpc_p99_ms_concurrent": get(f"loopline_grpc/batch_{b}", conc, "p99_ms"),
            "lean_vs_mlserver_host_throughput": ratio(
                get(f"loopline_rest/batch_{b}", conc, "throughput_rps"),
                get(f"loopline_mlserver_rest/batch_{b}", conc, "throughput_rps"),
            ),
            # CPU the server burns per request, independent of the machine's other load.
            "server_cpu_vs_stock": ratio(
                get(f"loopline_rest/batch_{b}", "clients_1", "server_cpu_ms_per_request"),
                get(f"stock_mlflow/batch_{b}", "clients_1", "server_cpu_ms_per_request"),
            ),
            "server_cpu_vs_floor": ratio(
                get(f"loopline_rest/batch_{b}", "clients_1", "server_cpu_ms_per_request"),
                get(f"echo_floor/batch_{b}", "clients_1", "server_cpu_ms_per_request"),
            ),
        }
    out["targets"] = {
        "throughput_vs_stock_batch_1": ">= 1.5",
        "rest_p50_vs_floor": "<= 3.5",
        "p99_ms_concurrent": "< 5",
    }
    return out


if __name__ == "__main__":
    print(main())
