"""The chart's own MLflow and Feast volume on a real node (helm/loopline/values-local.yaml).

The runtime image, pushed to the cluster's registry, runs `mlflow server` as the chart
deploys it: its claim binds on the local cluster's hostPath StorageClass, the init container
hands the fresh volume to uid 10001, and the pod turns Ready. From the host, through a
port-forward, an MLflow client logs a run with an artifact and registers a model version
(alias `champion`), then reads them back; the operator pod reaches the server by its Service
name (the name the operator and the pods it creates use). The MLflow pod is deleted and its
replacement still has the run, the artifact and the model (they live on the claim).
The operator's Feast repository is seeded on its own claim before it starts.

The operator runs its local backends here: this test is about the platform services, and the
cluster backends have tests of their own.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from loopline.cluster.versions import REPO_ROOT
from tests.fixtures.cluster import wait_for
from tests.realnode.conftest import RealNode
from tests.realnode.test_chart_on_node import runtime_image  # noqa: F401  (a fixture)

CHART = REPO_ROOT / "helm" / "loopline"
RELEASE = "loopline"
MLFLOW = f"{RELEASE}-mlflow"
MLFLOW_SELECTOR = "app.kubernetes.io/component=mlflow"
OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"


def _values(registry: str, tag: str) -> dict[str, Any]:
    return {
        "image": {"registry": registry, "tag": tag},
        "backends": {"pipelines": "local", "serving": "local"},
    }


@contextmanager
def _port_forward(realnode: RealNode, ns: str, target: str, port: int) -> Iterator[str]:
    """`kubectl port-forward <target> :<port>` from the host; yields the local URL."""
    kubectl = realnode.kubectl
    with subprocess.Popen(
        [
            *(str(kubectl.binary), f"--kubeconfig={kubectl.kubeconfig}", f"--namespace={ns}"),
            *("port-forward", target, f":{port}"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as forward:
        try:
            assert forward.stdout is not None
            line = forward.stdout.readline()
            match = re.search(r"127\.0\.0\.1:(\d+)", line)
            assert match, f"port-forward said {line!r}"
            yield f"http://127.0.0.1:{match.group(1)}"
        finally:
            forward.terminate()
            forward.wait(timeout=10)


def _ready_pod(realnode: RealNode, ns: str, selector: str, *, other_than: str = "") -> str:
    """The name of the Ready pod of `selector` (not `other_than`), waiting for it."""

    def pods() -> list[dict[str, Any]]:
        out = realnode.kubectl(
            "get", "pods", f"--namespace={ns}", f"--selector={selector}", "-o", "json"
        ).stdout
        return [
            p
            for p in json.loads(out)["items"]
            if p["metadata"]["name"] != other_than and not p["metadata"].get("deletionTimestamp")
        ]

    wait_for(lambda: bool(pods()), timeout=120, what=f"a pod of {selector}")
    name = str(pods()[0]["metadata"]["name"])
    realnode.wait_pod_ready(ns, name, timeout=600)  # a first pull of the runtime image
    return name


def _log_run_and_register(url: str, model: str, tmp_path: Path) -> tuple[str, str]:
    """A run with a metric and an artifact, and version 1 of `model` from it, aliased
    champion; returns (run id, artifact text)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url, registry_uri=url)
    experiment = client.create_experiment(f"platsvc-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "auc", 0.93)
    text = f"weights {uuid.uuid4().hex}"
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.txt").write_text(text)
    client.log_artifacts(run.info.run_id, str(model_dir), artifact_path="model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(model)
    version = client.create_model_version(
        model, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias(model, "champion", version.version)
    return run.info.run_id, text


def _read_back(url: str, model: str, run_id: str, tmp_path: Path) -> tuple[float, str, str]:
    """(the run's metric, the artifact's text, the champion's run id) as the server has them."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url, registry_uri=url)
    run = client.get_run(run_id)
    dst = tmp_path / f"download-{uuid.uuid4().hex[:6]}"
    dst.mkdir()
    local = client.download_artifacts(run_id, "model/weights.txt", str(dst))
    champion = client.get_model_version_by_alias(model, "champion")
    return run.data.metrics["auc"], Path(local).read_text(), str(champion.run_id)


def test_mlflow_and_feast_volume_on_the_real_node(
    realnode: RealNode,
    node_namespace: str,
    runtime_image: tuple[str, str],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = node_namespace
    repository, tag = runtime_image
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(_values(repository.split("/", 1)[0], tag)))
    helm = subprocess.run(
        [
            *(
                str(realnode.state.bin_dir / "helm"),
                f"--kubeconfig={realnode.local.kubeconfig_path}",
            ),
            *("install", RELEASE, str(CHART), f"--namespace={ns}"),
            *(f"--values={CHART / 'values-local.yaml'}", f"--values={values_file}"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert helm.returncode == 0, helm.stderr

    # The claims bind on the local cluster's default StorageClass.
    for claim in (MLFLOW, f"{RELEASE}-feast"):
        realnode.kubectl(
            "wait",
            f"--namespace={ns}",
            "--for=jsonpath={.status.phase}=Bound",
            f"pvc/{claim}",
            "--timeout=120s",
            timeout=150,
        )
    started = time.monotonic()
    pod = _ready_pod(realnode, ns, MLFLOW_SELECTOR)
    print(f"MLflow pod Ready after {time.monotonic() - started:.0f} s")
    assert realnode.exec(ns, pod, "id", "-u").strip() == "10001"
    owner = realnode.exec(ns, pod, "stat", "-c", "%u %a", "/var/lib/mlflow").split()
    assert owner[0] == "10001", f"the volume was not handed to the pod's user: {owner}"

    # The client's retries stay short: a refused request should fail the test, not stall it.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    model = "platsvc-drill-ae"
    with _port_forward(realnode, ns, f"svc/{MLFLOW}", 5000) as url:
        run_id, text = _log_run_and_register(url, model, tmp_path)
        assert _read_back(url, model, run_id, tmp_path) == (0.93, text, run_id)
    # The artifact went through the server onto its volume (no client wrote a file there).
    stored = realnode.exec(
        ns, pod, "sh", "-c", "cat /var/lib/mlflow/artifacts/*/*/artifacts/model/weights.txt"
    )
    assert stored.strip() == text

    # The operator reaches MLflow by the Service name it is configured with.
    operator = _ready_pod(realnode, ns, OPERATOR_SELECTOR)
    uri = realnode.exec(ns, operator, "printenv", "LOOPLINE_MLFLOW_TRACKING_URI").strip()
    assert uri == f"http://{MLFLOW}.{ns}.svc:5000"
    probe = (
        "import json, sys, urllib.request;"
        f"r = urllib.request.urlopen(sys.argv[1] + '/api/2.0/mlflow/registered-models/get?name={model}', timeout=20);"
        "print(json.load(r)['registered_model']['name'])"
    )
    assert realnode.exec(ns, operator, "python", "-c", probe, uri, timeout=90).strip() == model

    # The Feast repository was seeded on the operator's claim, owned by the pods' user.
    repo = realnode.exec(ns, operator, "printenv", "LOOPLINE_OPERATOR_FEATURE_REPO").strip()
    assert repo == "/var/lib/loopline-feast/feature_repo"
    listing = realnode.exec(ns, operator, "ls", repo).split()
    assert {"data", "definitions.py", "feature_store.yaml", "repo.json"} <= set(listing)
    realnode.exec(ns, operator, "touch", f"{repo}/data/written-by-the-operator")

    # A new MLflow pod on the same claim still has everything.
    realnode.kubectl("delete", "pod", f"--namespace={ns}", pod, "--wait=true", timeout=120)
    started = time.monotonic()
    replacement = _ready_pod(realnode, ns, MLFLOW_SELECTOR, other_than=pod)
    print(f"replacement MLflow pod Ready after {time.monotonic() - started:.0f} s")
    with _port_forward(realnode, ns, f"svc/{MLFLOW}", 5000) as url:
        assert _read_back(url, model, run_id, tmp_path) == (0.93, text, run_id)
    assert replacement != pod
