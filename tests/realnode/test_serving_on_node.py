"""The `kubernetes` serving backend on a real containerd node: nothing faked.

An MLflow server runs on this host, bound to the node's address so pods reach it; two versions
of a model are registered in it: a good one, and one whose every answer is a server error (its
anomaly threshold is missing: it loads, then fails each request). The runtime image, built with
`loopline images build` and pushed to the cluster's registry, serves the first version from a
Deployment; inference goes through the Service's ClusterIP from the host. The second version
then takes 50% of the traffic as a canary (a rolling update of the Deployment); under live
traffic the backend reads each pod's metrics, the operator's `decide_canary` judges the step
and rolls it back, and the Deployment rolls back to the champion alone, with no request
failing on the way but the canary's own errors (maxUnavailable 0, readiness on the loaded
model, preStop drain).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from kubernetes import config as k8s_config

from loopline.cluster.dns import host_address
from loopline.operators.backends.kube_serving import KubernetesServingBackend
from loopline.operators.builders.canary import CanaryAction, decide_canary
from loopline.operators.builders.serving import ServingDesired, ServingObserved
from loopline.operators.settings import OperatorSettings
from loopline.ports import free_port
from loopline.types.model import CanarySpec, ServingResources
from tests.fixtures.cluster import wait_for
from tests.fixtures.serving import make_bundle, sensor_rows
from tests.realnode.conftest import RealNode

NAME = "drill-ae"
REGISTERED = "plant.drill-ae"


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An MLflow server on the node's address (pods reach it there), artifacts proxied."""
    root = tmp_path_factory.mktemp("mlflow")
    host = host_address()
    port = free_port(host)
    log = (root / "mlflow.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            *("--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"),
            "--serve-artifacts",
            *("--artifacts-destination", (root / "artifacts").as_uri()),
            *("--host", host, "--port", str(port), "--workers", "1"),
            *("--allowed-hosts", f"{host}:{port},{host}"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://{host}:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, (root / "mlflow.log").read_text()[-2000:]
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200
        return False

    try:
        wait_for(healthy, timeout=120, interval=1, what="MLflow server healthy")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def versions(mlflow_url: str) -> tuple[str, str]:
    """(good version, broken version) registered through the server (artifacts uploaded)."""
    import mlflow

    from loopline.models.pyfunc import log_bundle

    good = make_bundle(seed=0)
    broken = make_bundle(seed=10)
    broken.primary.threshold = None  # loads; every request is a server error
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(mlflow_url)
    mlflow.set_registry_uri(mlflow_url)
    try:
        experiment = mlflow.create_experiment("serving-on-node")
        registered = []
        for bundle in (good, broken):
            with mlflow.start_run(experiment_id=experiment), warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=UserWarning)
                info = log_bundle(bundle)
            registered.append(str(mlflow.register_model(info.model_uri, REGISTERED).version))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return registered[0], registered[1]


@pytest.fixture
def backend(
    realnode: RealNode,
    runtime_image: tuple[str, str],
    mlflow_url: str,
) -> Iterator[KubernetesServingBackend]:
    repository, tag = runtime_image
    api = k8s_config.new_client_from_config(config_file=str(realnode.local.kubeconfig_path))
    serving = KubernetesServingBackend(
        OperatorSettings(runtime_image=f"{repository}:{tag}", cluster_tracking_uri=mlflow_url),
        tracking_uri=mlflow_url,
        api=api,
    )
    try:
        yield serving
    finally:
        serving.close()
        api.close()


def _desired(namespace: str, champion: str, canary: str | None = None) -> ServingDesired:
    return ServingDesired(
        namespace=namespace,
        name=NAME,
        registered_model=REGISTERED,
        champion_version=champion,
        canary_version=canary,
        canary_weight=50 if canary else 0,
        replicas=2,
        resources=ServingResources.model_validate({"requests": {"cpu": "50m", "memory": "256Mi"}}),
    )


def _ready(
    backend: KubernetesServingBackend, realnode: RealNode, namespace: str, weight: int
) -> ServingObserved:
    def probe() -> ServingObserved | None:
        seen = backend.observe(namespace, NAME)
        return seen if seen is not None and seen.ready and seen.canary_weight == weight else None

    deadline = time.monotonic() + 900  # the first pull of a 1.4 GB image
    while time.monotonic() < deadline:
        seen = probe()
        if seen is not None:
            return seen
        time.sleep(2)
    described = realnode.kubectl("describe", "pods", f"--namespace={namespace}", check=False)
    last = backend.observe(namespace, NAME)
    pytest.fail(f"not ready at {weight}%: {last}\n{described.stdout[-6000:]}")


def _pod_names(realnode: RealNode, namespace: str) -> list[str]:
    """The server pods that exist, terminating ones included."""
    out = realnode.kubectl(
        "get",
        "pods",
        f"--namespace={namespace}",
        "--selector=loopline.dev/component=server",
        "-o",
        "name",
    ).stdout
    return out.split()


class Traffic:
    """Requests through the Service's ClusterIP from the host, counted by outcome."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.outcomes: Counter[str] = Counter()
        self.transport_errors: list[str] = []
        self._stop = threading.Event()
        x = sensor_rows(1)
        tensor = {"name": "features", "datatype": "FP32", "shape": list(x.shape)}
        self.body = json.dumps({"inputs": [{**tensor, "data": x.reshape(-1).tolist()}]})
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def one(self) -> httpx.Response:
        return httpx.post(
            self.url,
            content=self.body,
            headers={"content-type": "application/json"},
            timeout=10,
            trust_env=False,
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self.one()
            except httpx.TransportError as exc:
                self.transport_errors.append(repr(exc))
                continue
            if response.status_code == 200:
                self.outcomes[f"ok v{response.json()['model_version']}"] += 1
            else:
                self.outcomes[str(response.status_code)] += 1
            time.sleep(0.02)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def test_a_failing_canary_is_rolled_back_under_live_traffic(
    realnode: RealNode,
    node_namespace: str,
    backend: KubernetesServingBackend,
    versions: tuple[str, str],
) -> None:
    ns = node_namespace
    good, broken = versions
    backend.apply(_desired(ns, good))
    served = _ready(backend, realnode, ns, 0)
    assert served.endpoints["rest"] == f"http://{NAME}-server.{ns}.svc:8080"
    cluster_ip = realnode.kubectl(
        "get", "service", f"{NAME}-server", f"--namespace={ns}", "-o", "jsonpath={.spec.clusterIP}"
    ).stdout.strip()
    traffic = Traffic(f"http://{cluster_ip}:8080/v2/models/{NAME}/infer")
    first = traffic.one()
    assert first.status_code == 200, first.text
    assert first.json()["model_version"] == good

    with traffic:
        backend.apply(_desired(ns, good, broken))
        canary = _ready(backend, realnode, ns, 50)
        assert canary.canary_version == broken

        def judged() -> tuple[CanaryAction, str] | None:
            seen = backend.observe(ns, NAME)
            if seen is None or seen.champion_stats is None or seen.canary_stats is None:
                return None
            decision = decide_canary(
                CanarySpec(steps=[50, 100], step_seconds=60),
                step_index=0,
                step_elapsed_s=1,
                champion=seen.champion_stats,
                canary=seen.canary_stats,
            )
            return (
                None
                if decision.action == CanaryAction.HOLD
                else (
                    decision.action,
                    decision.reason,
                )
            )

        action, reason = wait_for(judged, timeout=180, interval=2, what="a canary decision")
        assert action == CanaryAction.ROLLBACK, reason
        assert reason.startswith("error_rate 1 > abortThreshold 0.05 at 50%"), reason

        backend.apply(_desired(ns, good))  # what the operator applies after a rollback
        _ready(backend, realnode, ns, 0)
        # Ready once the new pods serve; the canary's pods still drain (preStop) and may
        # answer the last requests kube-proxy routes to them until they are gone.
        wait_for(
            lambda: len(_pod_names(realnode, ns)) == 2,
            timeout=120,
            interval=1,
            what="the canary's pods gone",
        )
        before = traffic.outcomes.copy()
        time.sleep(5)
        after = traffic.outcomes - before
    assert traffic.transport_errors == [], traffic.transport_errors[:5]
    assert traffic.outcomes["500"] > 0  # the canary's own answers
    assert set(after) == {f"ok v{good}"}, after  # the champion alone again
    pods = realnode.kubectl(
        "get",
        "pods",
        f"--namespace={ns}",
        "-o",
        "jsonpath={.items[*].status.containerStatuses[0].restartCount}",
    ).stdout.split()
    assert pods
    assert all(count == "0" for count in pods), pods
    backend.delete(ns, NAME)
    backend.forget(ns, NAME)
    assert backend.observe(ns, NAME) is None
