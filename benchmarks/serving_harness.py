"""The serving benchmark's harness: servers to measure (an echo floor, stock MLServer), a
minimal keep-alive HTTP/1.1 load generator, gRPC calls, and the interleaving that lets the
cases take turns on this shared machine. `bench_serving` holds the scenarios and the ratios.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import percentiles

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

# A gRPC server that answers the V2 `ModelInfer` method with the request's own bytes (they
# parse as a `ModelInferResponse`: the two messages share field numbers 1-5), on the same
# grpc.aio + uvloop stack the lean server uses and without protobuf or a runtime: the round
# trip of the same payload through grpcio here, the floor a Python gRPC server cannot beat.
GRPC_ECHO_APP = """
import sys, grpc, uvloop

async def echo(request, context):
    return request

async def main(port):
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(echo)  # bytes in, bytes out
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()

uvloop.run(main(int(sys.argv[1])))
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


def grpc_sync_case(target: str, request: Any, pid: int) -> Case:
    """`grpc_case` with grpcio's blocking stub, one thread per client: the cheaper of
    grpcio's two Python clients (~0.18 ms of client CPU a call against grpc.aio's ~0.22 ms,
    docs/profiles/grpc.md)."""
    import threading

    import grpc
    from mlserver.grpc.dataplane_pb2_grpc import GRPCInferenceServiceStub

    def client(stub: Any, count: int, out: list[float]) -> None:
        for _ in range(count):
            start = time.perf_counter()
            stub.ModelInfer(request)
            out.append(time.perf_counter() - start)

    def run(clients: int, requests: int, warmup: int) -> Tally:
        with grpc.insecure_channel(target) as channel:
            stub = GRPCInferenceServiceStub(channel)
            client(stub, max(warmup, 1), [])
            per_client = max(1, requests // clients)
            latencies: list[float] = []
            threads = [
                threading.Thread(target=client, args=(stub, per_client, latencies))
                for _ in range(clients)
            ]
            cpu = process_cpu_s(pid)
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - start
            return Tally(latencies, elapsed, 0, process_cpu_s(pid) - cpu)

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


def start_grpc_echo(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    import grpc

    from loopline.serving.local import free_port

    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", GRPC_ECHO_APP, str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    target = f"{HOST}:{port}"
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=60)
        except grpc.FutureTimeoutError:
            proc.kill()
            raise RuntimeError(f"gRPC echo not ready: {log.read_text()[-2000:]}") from None
    return proc, target


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


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
