"""History ledger benchmark: what recording a decision adds to a reconcile, and how long
`loopline history` takes over 10,000 decisions.

A real local control plane (`loopline.cluster`), no operator: the ledger is driven directly,
as the operator's reconcile drives it (`Operator.record` -> `Ledger.append`).

Measured:
- append: wall time of `Ledger.append` of one decision (one merge patch; a chunk's seal and
  the next chunk's creation included when they fall in the sample), against the peer: a plain
  GET of a ConfigMap on the same API server in the same run (the floor of any API call);
- read: `loopline history ns/model` over a ledger of 10,000 decisions (25 chunks), in process
  (list the chunks, parse, filter, print) for the timeline, `--at` and `-o json`, and as a
  separate `loopline history` process (Python start and imports included).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from benchmarks.common import percentiles, time_calls, write_results
from loopline.cli.history import history
from loopline.cluster.manager import LocalCluster
from loopline.cluster.settings import ClusterSettings
from loopline.history.ledger import CHUNK_SIZE, CHUNKS, Ledger
from loopline.types.history import Decision, ServingState

APPENDS = 300
DECISIONS = 10_000
BATCH = 200
READS = 5
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _decision(i: int) -> Decision:
    """A canary step with realistic evidence (about 600 bytes of JSON)."""
    version = str(i // 5 + 1)
    return Decision(
        at=T0 + timedelta(minutes=i),
        kind="CanaryStep",
        actor="loopline-operator",
        message=f"version {version} at 50%: error rate 0.001 <= 0.01 over 1200 requests",
        version=version,
        generation=3,
        uid="6f1c2d7e-0000-4000-8000-000000000000",
        evidence={
            "weight": 10,
            "step": 0,
            "championStats": {"requests": 1200.0, "rows": 9600.0, "errorRate": 0.001},
            "canaryStats": {"requests": 130.0, "rows": 1040.0, "errorRate": 0.0},
        },
        serving=ServingState(champion=str(max(1, int(version) - 1)), canary=version, weight=50),
    )


def _namespace(core: k8s.CoreV1Api, name: str) -> str:
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    return name


def _cli(kubeconfig: Path, *args: str) -> float:
    start = time.perf_counter()
    done = CliRunner().invoke(history, [*args, "--kubeconfig", str(kubeconfig)])
    elapsed = time.perf_counter() - start
    if done.exit_code != 0:
        raise RuntimeError(done.output)
    return elapsed


def main() -> Path:
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        local = LocalCluster(ClusterSettings(state_dir=Path(tmp) / "cluster"))
        local.up(nodes=0)
        try:
            kubeconfig = local.kubeconfig_path
            api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
            core = k8s.CoreV1Api(api)
            ns = _namespace(core, "bench-history")
            ledger = Ledger(core, chunk_size=CHUNK_SIZE, chunks=CHUNKS)
            counter = iter(range(10**9))
            append_s = time_calls(
                lambda: ledger.append(ns, "appended", [_decision(next(counter))]), repeat=APPENDS
            )
            get_s = time_calls(
                lambda: core.read_namespaced_config_map("appended-history-00000", ns),
                repeat=APPENDS,
            )
            filled = Ledger(core, chunk_size=CHUNK_SIZE, chunks=CHUNKS)
            for start in range(0, DECISIONS, BATCH):
                batch = [_decision(i) for i in range(start, start + BATCH)]
                filled.append(ns, "filled", batch)
            ref = f"{ns}/filled"
            middle = (T0 + timedelta(minutes=DECISIONS // 2)).isoformat()
            timeline = [_cli(kubeconfig, ref) for _ in range(READS)]
            at = [_cli(kubeconfig, ref, "--at", middle) for _ in range(READS)]
            as_json = [_cli(kubeconfig, ref, "-o", "json") for _ in range(READS)]
            kept = len(filled.read(ns, "filled"))
            process = []
            for _ in range(3):
                start_t = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "loopline.cli.main", "history", ref, "--at", middle],
                    env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin"},
                    check=True,
                    capture_output=True,
                )
                process.append(time.perf_counter() - start_t)
            api.close()
        finally:
            local.down()
    append = percentiles(append_s)
    get = percentiles(get_s)
    return write_results(
        "history",
        {
            "append_one_decision": append,
            "peer_configmap_get": get,
            "append_over_get_p50": append["p50_ms"] / get["p50_ms"],
            "append_p50_under_5_ms": append["p50_ms"] < 5.0,
            "decisions_read": kept,
            "history_timeline_10k": percentiles(timeline),
            "history_at_10k": percentiles(at),
            "history_json_10k": percentiles(as_json),
            "history_process_at_10k": percentiles(process),
            "history_at_10k_under_1_s": max(at) < 1.0,
        },
    )
