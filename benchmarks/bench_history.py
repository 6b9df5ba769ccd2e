"""History benchmark: what recording a decision adds to a reconcile, and how long
`loopline history` takes over a full ledger of 10,000 decisions.

A real local control plane (`loopline.cluster`, project CRDs installed) and the operator's
own ledger backend (`HistoryLedger`). Measured:
- append_one: one decision appended to the newest chunk (the JSON patch a reconcile that
  decides something sends), after warm-up; the reconcile that decides nothing sends none;
- status_patch: the merge patch of a Model's status every deciding reconcile already sends,
  measured in the same run as the peer the append is compared with (`append_vs_status`);
- fill: 10,000 decisions written in batches of 10 (the default chunks of 20, the oldest pruned past 500);
- history_cli: `loopline history ns/model -o json` in-process (read, parse, filter, print),
  and `--at` (replay), both over the 10,000 decisions; history_cli_process: the same as a
  new process (interpreter and imports included).
Targets: append_one p50 < 5 ms, history_cli < 1 s.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from benchmarks.common import percentiles, write_results
from loopline.cli.main import cli
from loopline.cluster.manager import LocalCluster
from loopline.cluster.settings import ClusterSettings
from loopline.operators.backends.history import HistoryLedger, HistorySettings
from loopline.types.common import API_VERSION, GROUP, VERSION
from loopline.types.history import Actor, ActorKind, Decision, DecisionKind

DECISIONS = 10_000
BATCH = 10
SAMPLES = 200
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _decision(i: int) -> Decision:
    kinds = (DecisionKind.CANARY_STEP, DecisionKind.PROMOTED, DecisionKind.GATE_DECIDED)
    return Decision(
        at=T0 + timedelta(seconds=i),
        kind=kinds[i % len(kinds)],
        actor=Actor(kind=ActorKind.OPERATOR, name="loopline-operator"),
        version=str(i // 3 + 1),
        weight=50,
        outcome="stepped",
        message="step 50% held 60 s",
        evidence={"readings": {"canary": {"requests": 1200.0, "serverErrors": 0.0}}},
    )


def _status_patch(custom: k8s.CustomObjectsApi, namespace: str, i: int) -> None:
    body = {"status": {"phase": "Rolling out", "message": f"version 2 at {i % 100}%"}}
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "models", "peer", body)


def _cli(args: list[str]) -> float:
    start = time.perf_counter()
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    elapsed = time.perf_counter() - start
    if result.exit_code != 0:
        raise RuntimeError(result.output)
    return elapsed


def _measure(api: k8s.ApiClient, kubeconfig: Path, namespace: str) -> dict[str, Any]:
    custom = k8s.CustomObjectsApi(api)
    ledger = HistoryLedger(api, HistorySettings())
    peer = {
        "apiVersion": API_VERSION,
        "kind": "Model",
        "metadata": {"name": "peer"},
        "spec": {"task": "anomaly-detection", "pipelineRef": {"name": "absent"}},
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "models", peer)
    append, status = [], []
    for i in range(SAMPLES + 5):
        start = time.perf_counter()
        ledger.append(namespace, "bench", "uid-bench", [_decision(i)])
        mid = time.perf_counter()
        _status_patch(custom, namespace, i)
        end = time.perf_counter()
        if i >= 5:
            append.append(mid - start)
            status.append(end - mid)
    start = time.perf_counter()
    written = SAMPLES + 5
    while written < DECISIONS:
        ledger.append(
            namespace, "bench", "uid-bench", [_decision(written + j) for j in range(BATCH)]
        )
        written += BATCH
    fill_s = time.perf_counter() - start
    stored = len(ledger.read(namespace, "bench"))
    ref = f"{namespace}/bench"
    common = ["--kubeconfig", str(kubeconfig)]
    timeline = [_cli(["history", ref, "-o", "json", *common]) for _ in range(5)]
    at = (T0 + timedelta(seconds=DECISIONS // 2)).isoformat()
    replay = [_cli(["history", ref, "--at", at, *common]) for _ in range(5)]
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "loopline.cli.main", "history", ref, *common],
        check=True,
        capture_output=True,
    )
    process_s = time.perf_counter() - start
    append_p = percentiles(append)
    status_p = percentiles(status)
    timeline_p = percentiles(timeline)
    return {
        "decisions_stored": stored,
        "append_one": append_p,
        "status_patch": status_p,
        "append_vs_status": append_p["p50_ms"] / status_p["p50_ms"],
        "fill": {"decisions": DECISIONS, "batch": BATCH, "seconds": fill_s},
        "history_cli": timeline_p,
        "history_cli_at": percentiles(replay),
        "history_cli_process_s": process_s,
        "targets": {
            "append_one_p50_under_5_ms": append_p["p50_ms"] < 5.0,
            "history_cli_p50_under_1_s": timeline_p["p50_ms"] < 1000.0,
        },
    }


def main() -> Path:
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        workdir = Path(tmp)
        local = LocalCluster(ClusterSettings(state_dir=workdir / "cluster"))
        local.up(nodes=0)
        try:
            api = k8s_config.new_client_from_config(config_file=str(local.kubeconfig_path))
            try:
                k8s.CoreV1Api(api).create_namespace({"metadata": {"name": "bench-history"}})
                payload = _measure(api, local.kubeconfig_path, "bench-history")
            finally:
                api.close()
        finally:
            local.down()
    return write_results("history", payload)


if __name__ == "__main__":
    print(main())
