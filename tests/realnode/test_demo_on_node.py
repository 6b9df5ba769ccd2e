"""The closed loop on real pods: `loopline demo --cluster --quick` on the containerd node.

Everything the local e2e test (tests/e2e/test_closed_loop.py) asserts, where the pieces are
pods: the operator and MLflow from the chart, the model server Deployment, the drift monitor
and the training Jobs the operator creates, from the images pushed to the node's registry.
The plant's traffic goes through the Model's Service by its ClusterIP. The run is kept up
(`keep`) so the test reads the cluster's own objects (the Jobs, the Deployment, MLflow's
registry) before it takes everything down and checks nothing is left.

The operator pod is deleted twice (`restart_operator`): while the drift-triggered Job trains
and in the middle of its canary. The new pod must adopt the Job (no second one for the run)
and walk the canary on from its step.

It runs on the session's node (the `realnode` fixture's cluster, whose registry already has
the images the other real-node tests pushed), after every other real-node test
(conftest.py orders it last), because its teardown takes that node down and checks that
nothing is left. About 12 minutes on a quiet 2-core machine. `make test-cluster-demo` runs
it alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from loopline.cluster.kubectl import Kubectl
from loopline.cluster.manager import LocalCluster
from loopline.cluster.node import teardown
from loopline.cluster.settings import ClusterSettings
from loopline.components.steps import SINCE_DRIFT, WINDOW_BASIS_TAG
from loopline.demo.cluster_objects import MLFLOW_SELECTOR, MLFLOW_SERVICE, OPERATOR_SELECTOR
from loopline.demo.processes import tagged_pids
from loopline.demo.scenario import ClusterDemo, DemoResult
from loopline.demo.settings import DemoSettings
from loopline.demo.traffic_stats import segment_stats
from loopline.operators.builders.auth import MODEL_LABEL
from loopline.operators.builders.kube_jobs import COMPONENT_LABEL
from loopline.operators.builders.kube_serving import CANARY_ANNOTATION, CHAMPION_ANNOTATION
from loopline.tracking import lineage
from tests.fixtures.cluster import wait_for
from tests.realnode.conftest import RealNode

if os.geteuid() != 0:
    pytest.skip("the images and the real node need root", allow_module_level=True)

pytestmark = [pytest.mark.realnode, pytest.mark.slow, pytest.mark.timeout(5400)]


@dataclass
class KeptRun:
    result: DemoResult
    demo: ClusterDemo
    kubectl: Kubectl

    def objects(self, *args: str) -> list[dict[str, Any]]:
        out = self.kubectl(*args, "-n", self.result.record.namespace, "-o", "json").stdout
        return list(json.loads(out)["items"])


@pytest.fixture(scope="module")
def cluster_run(
    realnode_session: RealNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KeptRun]:
    base = tmp_path_factory.mktemp("clusterdemo")
    cluster_dir = realnode_session.local.layout.root
    settings = DemoSettings(
        state_dir=base / "state",
        report_dir=base / "report",
        cluster_dir=cluster_dir,
        restart_operator=True,
    ).quick()
    demo = ClusterDemo(settings, keep=True)
    started = time.monotonic()
    result = demo.run()
    print(f"cluster demo ran {time.monotonic() - started:.0f} s; markers:")
    for marker in result.record.markers:
        print(f"  {marker.t:7.1f} s  {marker.kind}: {marker.label}")
    try:
        if demo.kubectl_bin is None or demo.kubeconfig is None:
            pytest.fail("the cluster never came up: " + "; ".join(result.problems))
        yield KeptRun(result, demo, Kubectl(demo.kubectl_bin, demo.kubeconfig))
    finally:
        demo.processes.stop_all()
        cluster = LocalCluster(ClusterSettings(state_dir=cluster_dir))
        assert cluster.state() is None, "the cluster is still recorded as running"
        assert demo.processes.leftovers() == []
        assert tagged_pids(result.demo_id) == []
        assert teardown.chains_now() <= realnode_session.chains_before, (
            "iptables chains left behind"
        )
        print(f"from start to a clean machine: {time.monotonic() - started:.0f} s")


def test_the_loop_closes_on_pods(cluster_run: KeptRun) -> None:
    from mlflow import MlflowClient

    result = cluster_run.result
    rec = result.record
    assert result.completed, "the demo stopped early: " + "; ".join(result.problems)

    first = result.first_champion
    assert first, "no first champion ever served"
    baseline = [r for r in rec.requests if r.segment == "baseline"]
    assert {r.protocol for r in baseline if r.ok} == {"rest", "grpc"}
    # Through the Model's Service, by its ClusterIP (10.0.0.0/24), not a host process.
    assert rec.endpoints["REST"].startswith("http://10.0.0."), rec.endpoints

    # Drift -> exactly one retraining run, with trigger drift: one Job of its own.
    assert len(result.drift_runs) == 1, f"drift runs: {result.drift_runs}"
    assert len(rec.markers_of("retrain-requested")) == 1
    run = rec.runs[result.drift_runs[0]]
    assert run.model_version
    assert run.model_version != first
    jobs = cluster_run.objects(
        "get", "jobs", "-l", f"{COMPONENT_LABEL}=training,{MODEL_LABEL}={rec.model}"
    )
    names = sorted(str(j["metadata"]["name"]) for j in jobs)
    assert len(names) == 2, f"the first run and the drift run, one Job each: {names}"
    assert result.drift_runs[0] in names

    # The gate and the canary, as the Model's status told them.
    assert rec.first_marker("gate-passed") is not None
    assert rec.first_marker("promoted") is not None
    comparison = rec.comparisons[-1]
    old, new = comparison.metrics[first], comparison.metrics[run.model_version]
    assert new["f1"] > old["f1"], comparison.metrics

    # The champion alias moved, in MLflow's registry in the cluster.
    client = MlflowClient(tracking_uri=result.tracking_uri, registry_uri=result.tracking_uri)
    champion = client.get_model_version_by_alias(result.model_uri_name, "champion")
    assert str(champion.version) == run.model_version
    tags = client.get_run(str(champion.run_id)).data.tags
    assert tags.get(lineage.TRIGGER) == "drift"
    assert tags.get(lineage.PARENT_VERSION) == first
    assert tags.get(WINDOW_BASIS_TAG) == SINCE_DRIFT

    # The new champion serves all traffic: the Deployment has no canary, its pods run only
    # the new version, and the plant's last answers all came from it.
    # The promotion is a rolling update of that Deployment: the canary's pods (already all
    # on the new version at 100 %) answer until its new pods are ready, so the pods are read
    # once the rollout is done.
    servers = f"{MODEL_LABEL}={rec.model},{COMPONENT_LABEL}=server"
    (deployment,) = cluster_run.objects("get", "deployments", "-l", servers)
    cluster_run.kubectl(
        "rollout",
        "status",
        f"deployment/{deployment['metadata']['name']}",
        "-n",
        rec.namespace,
        "--timeout=300s",
        timeout=330,
    )
    (deployment,) = cluster_run.objects("get", "deployments", "-l", servers)
    annotations = deployment["metadata"]["annotations"]
    assert annotations[CHAMPION_ANNOTATION] == run.model_version
    assert annotations.get(CANARY_ANNOTATION, "") == ""
    pods = cluster_run.objects(
        "get", "pods", "-l", f"{MODEL_LABEL}={rec.model},{COMPONENT_LABEL}=server"
    )
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    args = [p["spec"]["containers"][0].get("args", []) for p in live]
    serving = f"--model-uri=models:/{result.model_uri_name}/{run.model_version}"
    assert args
    assert all(serving in a and not any("--canary-uri" in x for x in a) for a in args)
    last = [r for r in rec.requests if r.segment == "sensor-restored" and r.ok]
    assert last
    assert {r.model_version for r in last} == {run.model_version}

    # The fallback answered while the sensor was dead, and nothing failed because of it.
    dead = segment_stats(rec)["dead-sensor"]
    assert dead.requests > 0
    assert dead.errors == 0
    assert dead.fallback_rate == 1.0

    assert result.report is not None
    assert "<h2>Production history</h2>" in result.report.read_text()

    # The operator pod was deleted while the drift run trained and mid-canary; its successor
    # adopted the Job (two Jobs in all, asserted above) and walked the canary on from the
    # step it found: the drift version's steps never went back and reached the champion.
    restarts = rec.markers_of("operator-restarted")
    assert cluster_run.demo.restarts == {"run", "canary"}, [m.label for m in restarts]
    assert len(restarts) == 2
    steps = [
        step for _, version, step in cluster_run.demo.rollout_steps if version == run.model_version
    ]
    assert steps, cluster_run.demo.rollout_steps
    assert steps == sorted(steps), cluster_run.demo.rollout_steps
    canary_restart = next(m for m in restarts if "mid-canary" in m.label)
    assert rec.markers_of("promoted")[-1].t > canary_restart.t


def _pod(run: KeptRun, selector: str, *, other_than: str = "") -> dict[str, Any]:
    """The Ready pod of `selector` (not `other_than`), waiting up to 5 minutes for it."""

    def ready() -> dict[str, Any] | None:
        for pod in run.objects("get", "pods", "-l", selector):
            if pod["metadata"]["name"] == other_than or pod["metadata"].get("deletionTimestamp"):
                continue
            conditions = (pod.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return pod
        return None

    return wait_for(ready, timeout=300, interval=2, what=f"a Ready pod of {selector}")


def _exec(
    run: KeptRun, pod: str, *command: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run.kubectl(
        "exec", "-n", run.result.record.namespace, pod, "--", *command, check=check, timeout=90
    )


def test_the_platform_pods_are_hardened_and_mlflow_keeps_the_registry_on_its_claim(
    cluster_run: KeptRun,
) -> None:
    """The chart's pods as they ran the loop: the operator from the runtime image in the
    node's registry, as user 10001 on a read-only root with no capabilities; MLflow on its
    claim, handed to that user, and a new MLflow pod on the same claim still has the champion
    and its artifacts. Runs after the loop test (same module, kept run)."""
    from mlflow import MlflowClient

    demo, result = cluster_run.demo, cluster_run.result
    operator = _pod(cluster_run, OPERATOR_SELECTOR)
    name = operator["metadata"]["name"]
    assert operator["status"]["containerStatuses"][0]["image"] == demo.runtime_image
    assert _exec(cluster_run, name, "id", "-u").stdout.strip() == "10001"
    write = _exec(cluster_run, name, "sh", "-c", "echo x > /probe", check=False)
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr
    status = _exec(cluster_run, name, "cat", "/proc/self/status").stdout
    caps = {
        line.split(":")[0]: line.split(":")[1].strip()
        for line in status.splitlines()
        if line.startswith("Cap")
    }
    assert int(caps["CapEff"], 16) == 0
    assert int(caps["CapPrm"], 16) == 0
    assert "NoNewPrivs:\t1" in status

    # MLflow's claim is bound and handed to the pods' user.
    claim = cluster_run.kubectl(
        "get", "pvc", MLFLOW_SERVICE, "-n", result.record.namespace, "-o", "json"
    ).stdout
    assert json.loads(claim)["status"]["phase"] == "Bound"
    mlflow = _pod(cluster_run, MLFLOW_SELECTOR)["metadata"]["name"]
    owner = _exec(cluster_run, mlflow, "stat", "-c", "%u", "/var/lib/mlflow").stdout.strip()
    assert owner == "10001", f"the volume was not handed to the pod's user: {owner}"

    client = MlflowClient(tracking_uri=result.tracking_uri, registry_uri=result.tracking_uri)
    before = client.get_model_version_by_alias(result.model_uri_name, "champion")
    artifacts = sorted(a.path for a in client.list_artifacts(str(before.run_id)))
    assert artifacts, "the champion's run has no artifacts"

    cluster_run.kubectl(
        "delete", "pod", mlflow, "-n", result.record.namespace, "--wait=true", timeout=120
    )
    replacement = _pod(cluster_run, MLFLOW_SELECTOR, other_than=mlflow)["metadata"]["name"]
    assert replacement != mlflow
    demo.mlflow_ready(timeout=300)
    after = client.get_model_version_by_alias(result.model_uri_name, "champion")
    assert (after.version, after.run_id) == (before.version, before.run_id)
    assert sorted(a.path for a in client.list_artifacts(str(after.run_id))) == artifacts
