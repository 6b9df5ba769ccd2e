"""Serving latency and throughput: Loopline's runtime against its peers, in one run.

Same model (one registered bundle version in a throwaway MLflow), same rows, same loopback:

- `in_process`: `bundle.score(x)` called directly (no server): the model's own cost;
- `echo_floor`: a bare ASGI app under uvicorn that returns the request body: the round trip
  of the same payload through any Python HTTP server here, the floor;
- `grpc_echo_floor`: a bare grpc.aio server whose `ModelInfer` returns the request's bytes:
  the same round trip through grpcio (client and server), the floor for the gRPC cases;
- `stock_mlflow`: stock MLServer with the mlserver-mlflow runtime serving the same MLflow
  model (pandas codec + pyfunc predict);
- `loopline_rest` / `loopline_rest_matrix` / `loopline_grpc`: Loopline's runtime in the lean
  server (the local default) over REST (one input per feature, the same payload the stock
  path gets; and one [n, 12] tensor) and gRPC (one [n, 12] tensor in raw_input_contents)
  from grpc.aio clients; `loopline_grpc_sync_client`: the same gRPC calls from grpcio's
  blocking stub, one thread per client;
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
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import percentiles, time_calls, write_results
from benchmarks.serving_harness import (
    BATCHES,
    CONCURRENCY,
    REQUESTS,
    ROUNDS,
    Case,
    grpc_case,
    grpc_request,
    grpc_sync_case,
    http_case,
    interleaved,
    matrix_body,
    per_feature_body,
    start_echo,
    start_grpc_echo,
    start_stock,
    stop_server,
)

# -- the profile ------------------------------------------------------------------------------


def profile(bundle: Any, x: np.ndarray, repeat: int = 300) -> dict[str, dict[str, float]]:
    """Median microseconds of each step of one REST request inside the server process, for
    the lean server's plain-JSON path and for the pydantic path (MLServer's types) it
    replaces, on the per-feature body line clients send."""
    from mlserver.types import InferenceRequest, InferenceResponse

    from loopline.models.windowing import WindowHistory
    from loopline.serving.alarm_events import AlarmEvents
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
    # alarm_event: k-of-n per entity, one row per machine as a line sends them; while
    # stale, the per-sensor check against each machine's recent readings too
    machines = [f"m{i}" for i in range(x.shape[0])]
    over = scored.outputs["is_anomaly"]
    events = AlarmEvents(3, 5, 1, max_entities=10_000)
    # the window detector's history (N=4): each machine's window from its earlier readings
    windows = WindowHistory(4, x.shape[1], max_entities=10_000)
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
            "alarm_events": lambda: events.column(machines, over, decoded.x),
            "alarm_events_stale": lambda: events.column(machines, over, decoded.x, stale=True),
            "window_history": lambda: windows.step(machines, decoded.x),
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
    """The parts of a gRPC servicer context `V2Servicer` uses: the call's metadata (what a
    client sends, with a caller for the usage metrics), and an error the servicer reports
    ends the benchmark with its status and message, not a time."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("user-agent", "grpc-python/bench"), ("loopline-caller", "bench"))

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
            stack.callback(stop_server, echo)
            grpc_echo, grpc_echo_target = start_grpc_echo(root / "grpc-echo.log")
            stack.callback(stop_server, grpc_echo)
            stock, stock_port = start_stock(root / "stock", model_dir, registered.tracking_uri)
            stack.callback(stop_server, stock)
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
                    "grpc_echo_floor": grpc_case(
                        grpc_echo_target, grpc_request("drill-ae", x), grpc_echo.pid
                    ),
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
                    if server == "lean":
                        batch_cases[f"{prefix}_grpc_sync_client"] = grpc_sync_case(
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
            "grpc_sync_client_p99_ms_concurrent": get(
                f"loopline_grpc_sync_client/batch_{b}", conc, "p99_ms"
            ),
            # gRPC against REST on the same lean server, and against grpcio's own echo floor
            # (docs/profiles/grpc.md: the floor alone is above 1.3x REST on these machines).
            "grpc_p50_vs_rest_1_client": ratio(
                get(f"loopline_grpc/batch_{b}", "clients_1", "p50_ms"),
                get(f"loopline_rest/batch_{b}", "clients_1", "p50_ms"),
            ),
            "grpc_sync_client_p50_vs_rest_1_client": ratio(
                get(f"loopline_grpc_sync_client/batch_{b}", "clients_1", "p50_ms"),
                get(f"loopline_rest/batch_{b}", "clients_1", "p50_ms"),
            ),
            "grpc_floor_p50_vs_rest_1_client": ratio(
                get(f"grpc_echo_floor/batch_{b}", "clients_1", "p50_ms"),
                get(f"loopline_rest/batch_{b}", "clients_1", "p50_ms"),
            ),
            "grpc_p50_vs_grpc_floor_1_client": ratio(
                get(f"loopline_grpc/batch_{b}", "clients_1", "p50_ms"),
                get(f"grpc_echo_floor/batch_{b}", "clients_1", "p50_ms"),
            ),
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
        "grpc_p50_vs_rest_1_client_batch_1": "<= 1.3",
        "grpc_p99_ms_concurrent_batch_1": "< 3",
    }
    return out


if __name__ == "__main__":
    print(main())
