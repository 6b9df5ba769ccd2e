"""Where a Model reconcile's time goes: the operator in process against a real local control
plane, every Kubernetes API call timed by verb and resource, and the rest (building, parsing,
locks) as the remainder. `python -m benchmarks.profile_operator [N]`; docs/profiles/operator.md
quotes it.

N Models reference an absent Pipeline (as in bench_operator.py): each is reconciled once to
settle (its first status and `Created` decision), once with nothing new (the periodic pass),
and once with a retraining request (a change to record), one at a time, so the shares are of
the operator's own work and not of contention between its threads.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from loopline.cluster.manager import LocalCluster
from loopline.cluster.settings import ClusterSettings
from loopline.operators.backends.factory import Backends
from loopline.operators.backends.pipelines import LocalPipelineBackend
from loopline.operators.backends.serving import LocalServingBackend
from loopline.operators.builders.runs import RunContext
from loopline.operators.runtime import Operator
from loopline.operators.settings import OperatorSettings

GROUP, VERSION = "loopline.dev", "v1alpha1"
_ID = re.compile(r"/(namespaces)/[^/]+|/(models|pipelines|configmaps)/[^/]+")


def _shape(method: str, path: str) -> str:
    return f"{method} " + _ID.sub(lambda m: f"/{m.group(1) or m.group(2)}/*", path)


class Timed:
    """Wraps ApiClient.call_api: seconds and count per call shape."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        inner = api.call_api

        def call_api(path: str, method: str, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(path, method, *args, **kwargs)
            finally:
                shape = _shape(method, path)
                self.seconds[shape] += time.perf_counter() - start
                self.calls[shape] += 1

        api.call_api = call_api

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def _phase(name: str, n: int, run: Any, timed: Timed) -> None:
    timed.reset()
    start = time.perf_counter()
    run()
    total = time.perf_counter() - start
    api = sum(timed.seconds.values())
    print(f"\n{name}: {total / n * 1e3:.1f} ms per Model ({n} Models, one at a time)")
    for shape, seconds in sorted(timed.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {seconds / n * 1e3:6.2f} ms  {timed.calls[shape] / n:4.1f} calls  {shape}")
    print(f"  {(total - api) / n * 1e3:6.2f} ms  outside API calls (build, parse, locks)")


def main(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="profile-operator-") as tmp:
        workdir = Path(tmp)
        local = LocalCluster(ClusterSettings(state_dir=workdir / "cluster"))
        local.up(nodes=0)
        try:
            api = k8s_config.new_client_from_config(config_file=str(local.kubeconfig_path))
            custom, core = k8s.CustomObjectsApi(api), k8s.CoreV1Api(api)
            namespace = "profile"
            core.create_namespace({"metadata": {"name": namespace}})
            names = [f"m-{i:04d}" for i in range(n)]
            for name in names:
                body = {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "Model",
                    "metadata": {"name": name},
                    "spec": {
                        "task": "anomaly-detection",
                        "pipelineRef": {"name": "absent"},
                        "serving": {"replicas": 0},
                    },
                }
                custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "models", body)
            settings = OperatorSettings(runs_dir=workdir / "runs", serving_dir=workdir / "serving")
            backends = Backends(
                pipelines=LocalPipelineBackend(settings.runs_dir),
                serving=LocalServingBackend(
                    settings.serving_dir, tracking_uri="sqlite:///unused.db"
                ),
            )
            context = RunContext(mlflow_tracking_uri="sqlite:///unused.db", feature_repo=".")
            timed = Timed(api)
            operator = Operator(api, backends, settings, context)

            def reconcile_all() -> None:
                for name in names:
                    operator.reconcile_model(namespace, name)

            _phase("first reconcile (settle: status, Created)", n, reconcile_all, timed)
            _phase("nothing new (the periodic pass)", n, reconcile_all, timed)
            for name in names:
                custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    "models",
                    name,
                    {"metadata": {"annotations": {"loopline.dev/retrain": "r1"}}},
                )
            _phase("a retraining request (record it)", n, reconcile_all, timed)
            operator.close()
        finally:
            local.down()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
