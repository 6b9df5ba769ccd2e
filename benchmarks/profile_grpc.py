"""grpcio's own round trip on this machine: a gRPC echo under each server and client design.

`python -m benchmarks.profile_grpc` starts a `grpc.aio` echo server on uvloop (what the lean
model server runs) and a synchronous `grpc.server` echo on a thread pool, calls each with
grpcio's blocking stub and with a `grpc.aio` client, and prints p50/p99 latency with the CPU
per call of the server and of the client. Nothing of Loopline's is in the path: this is the
floor under any Python gRPC server here, and it is what docs/profiles/grpc.md compares the
lean server's gRPC path and REST path with. Not part of `make bench` (it writes no results
file); the serving benchmark measures the `grpc.aio` echo beside the lean server in one run.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.serving_harness import GRPC_ECHO_APP, HOST, process_cpu_s

METHOD = "/inference.GRPCInferenceService/ModelInfer"
CALLS = int(os.environ.get("LOOPLINE_PROFILE_GRPC_CALLS", "3000"))
WARMUP = 200
BODY = b"\x0a\x08drill-ae" + b"\x00" * 48  # a small message, as a batch-1 request is

SYNC_ECHO_APP = """
import sys, grpc
from concurrent import futures

def echo(request, context):
    return request

server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
handler = grpc.unary_unary_rpc_method_handler(echo)
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
    "inference.GRPCInferenceService", {"ModelInfer": handler}),))
server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
server.start()
server.wait_for_termination()
"""


def sync_client(target: str, calls: int) -> list[float]:
    import grpc

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD)
        for _ in range(WARMUP):
            call(BODY)
        out = []
        for _ in range(calls):
            start = time.perf_counter()
            call(BODY)
            out.append(time.perf_counter() - start)
        return out


def aio_client(target: str, calls: int) -> list[float]:
    import grpc

    async def main() -> list[float]:
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_unary(METHOD)
            for _ in range(WARMUP):
                await call(BODY)
            out = []
            for _ in range(calls):
                start = time.perf_counter()
                await call(BODY)
                out.append(time.perf_counter() - start)
            return out

    return asyncio.run(main())


def start(app: str) -> tuple[subprocess.Popen[bytes], str]:
    import grpc

    from loopline.serving.local import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", app, str(port)])
    target = f"{HOST}:{port}"
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
    return proc, target


def measure(target: str, pid: int, client: Any) -> dict[str, float]:
    server_cpu = process_cpu_s(pid)
    client_cpu = time.process_time()
    latencies = np.array(client(target, CALLS)) * 1e3
    calls = CALLS + WARMUP
    return {
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "server_cpu_ms_per_call": (process_cpu_s(pid) - server_cpu) / calls * 1e3,
        "client_cpu_ms_per_call": (time.process_time() - client_cpu) / calls * 1e3,
    }


def main() -> None:
    print(f"load average {Path('/proc/loadavg').read_text().split()[:3]}")
    for server, app in (("grpc.aio on uvloop", GRPC_ECHO_APP), ("sync grpc.server", SYNC_ECHO_APP)):
        proc, target = start(app)
        try:
            for name, client in (("blocking stub", sync_client), ("grpc.aio", aio_client)):
                r = measure(target, proc.pid, client)
                print(
                    f"{server:20} {name:14} p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                    f"server CPU {r['server_cpu_ms_per_call']:.3f} ms/call  "
                    f"client CPU {r['client_cpu_ms_per_call']:.3f} ms/call",
                    flush=True,
                )
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
