"""The kubernetes monitoring backend's own logic: what it applies, which digest and reload
stamp it carries over, which address it reads the status at, and that `check` never raises.

The API server is replaced by an in-memory `KubeObjects` (apply stores, get reads back, the
Service gets a ClusterIP), because these tests are about the backend's decisions; the real
API server runs in tests/integration/test_monitor_kube_cluster.py. The monitor's status comes
from a real HTTP server on loopback.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from loopline import auth
from loopline.operators.backends.kube_monitoring import KubernetesMonitoringBackend
from loopline.operators.builders.auth import DIGEST_ENV
from loopline.operators.builders.kube_monitoring import RELOAD_ANNOTATION
from loopline.operators.builders.monitoring import MonitorDesired
from loopline.operators.errors import BackendRejected, BackendUnavailable
from loopline.operators.settings import OperatorSettings

DESIRED = MonitorDesired(
    namespace="plant",
    name="drill-ae",
    champion_version="3",
    detector="ks",
    p_value=0.01,
    window_size=100,
    cooldown_seconds=60,
    retrain_on_drift=True,
)
Key = tuple[str, str, str, str]


class MemoryObjects:
    """KubeObjects' contract in memory: apply replaces, get reads back, delete removes."""

    def __init__(self, cluster_ip: str = "10.96.0.42") -> None:
        self.store: dict[Key, dict[str, Any]] = {}
        self.secrets: set[tuple[str, str]] = set()
        self.cluster_ip = cluster_ip
        self.calls: list[str] = []
        self.fail_get = False

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        self.calls.append(f"apply {obj['kind']}")
        stored = copy.deepcopy(obj)
        if obj["kind"] == "Service":
            stored["spec"]["clusterIP"] = self.cluster_ip
        self.store[key] = stored
        return copy.deepcopy(stored)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(f"get {kind}")
        if self.fail_get:
            raise BackendUnavailable("cannot read: 503 Service Unavailable")
        found = self.store.get((api_version, kind, namespace, name))
        return copy.deepcopy(found) if found else None

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.calls.append(f"delete {kind}")
        self.store.pop((api_version, kind, namespace, name), None)

    def ensure_token_secret(self, namespace: str, model: str) -> str | None:
        if (namespace, model) in self.secrets:
            return None
        self.secrets.add((namespace, model))
        return auth.fingerprint(auth.new_token())

    def kinds(self) -> set[str]:
        return {key[1] for key in self.store}

    def deployment(self) -> dict[str, Any]:
        return self.store[("apps/v1", "Deployment", "plant", "drill-ae-monitor")]


def _backend(objects: MemoryObjects, **settings: Any) -> KubernetesMonitoringBackend:
    values = {"runtime_image": "loopline/runtime:t", "serving_backend": "kubernetes", **settings}
    return KubernetesMonitoringBackend(
        OperatorSettings(**values),
        tracking_uri="http://127.0.0.1:5000",
        objects=objects,
    )


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_apply_creates_the_monitors_objects_and_returns_the_dns_name() -> None:
    objects = MemoryObjects()
    url = _backend(objects).apply(DESIRED)
    assert url == "http://drill-ae-monitor.plant.svc:8090"
    assert objects.kinds() == {
        "ServiceAccount",
        "RoleBinding",
        "PersistentVolumeClaim",
        "NetworkPolicy",
        "Deployment",
        "Service",
    }
    env = _env(objects.deployment())
    assert env[DIGEST_ENV]  # the Secret was created just now: its digest is known
    assert env["LOOPLINE_MONITOR_TRACKING_URI"] == "http://127.0.0.1:5000"


def test_cluster_tracking_uri_wins_over_the_operators_own() -> None:
    objects = MemoryObjects()
    _backend(objects, cluster_tracking_uri="http://mlflow.mlflow.svc:5000").apply(DESIRED)
    env = _env(objects.deployment())
    assert env["LOOPLINE_MONITOR_TRACKING_URI"] == "http://mlflow.mlflow.svc:5000"


def test_an_existing_secrets_digest_is_kept_from_the_running_pod_template() -> None:
    objects = MemoryObjects()
    backend = _backend(objects)
    backend.apply(DESIRED)
    first = objects.deployment()["spec"]["template"]
    backend.apply(DESIRED)  # the Secret exists now: ensure_token_secret says None
    assert objects.deployment()["spec"]["template"] == first
    # an operator restarted: it learns the digest from the Deployment again
    _backend(objects).apply(DESIRED)
    assert objects.deployment()["spec"]["template"] == first


def test_a_rotated_token_rolls_the_pod() -> None:
    objects = MemoryObjects()
    backend = _backend(objects)
    backend.apply(DESIRED)
    before = _env(objects.deployment())[DIGEST_ENV]
    objects.secrets.clear()  # the Secret was deleted: the next apply creates a new token
    backend.apply(DESIRED)
    assert _env(objects.deployment())[DIGEST_ENV] != before


def test_reload_restarts_a_running_monitor_once_and_the_stamp_stays() -> None:
    objects = MemoryObjects()
    backend = _backend(objects)
    backend.reload_reference("plant", "drill-ae")  # nothing runs yet: it loads as it starts
    backend.apply(DESIRED)
    annotations = objects.deployment()["spec"]["template"]["metadata"]["annotations"]
    assert RELOAD_ANNOTATION not in annotations
    backend.reload_reference("plant", "drill-ae")
    backend.apply(DESIRED)
    stamp = objects.deployment()["spec"]["template"]["metadata"]["annotations"][RELOAD_ANNOTATION]
    template = objects.deployment()["spec"]["template"]
    backend.apply(DESIRED)
    _backend(objects).apply(DESIRED)  # a restarted operator keeps it too
    assert objects.deployment()["spec"]["template"] == template
    assert stamp


def test_a_failed_apply_keeps_the_pending_reload() -> None:
    objects = MemoryObjects()
    backend = _backend(objects)
    backend.apply(DESIRED)
    backend.reload_reference("plant", "drill-ae")
    broken = objects.apply

    def unavailable(obj: dict[str, Any]) -> dict[str, Any]:
        raise BackendUnavailable("cannot apply: 503")

    objects.apply = unavailable  # type: ignore[method-assign]
    with pytest.raises(BackendUnavailable):
        backend.apply(DESIRED)
    objects.apply = broken  # type: ignore[method-assign]
    backend.apply(DESIRED)
    assert RELOAD_ANNOTATION in objects.deployment()["spec"]["template"]["metadata"]["annotations"]


def test_a_name_too_long_for_a_monitor_is_rejected() -> None:
    objects = MemoryObjects()
    long = MonitorDesired(**{**DESIRED.__dict__, "name": "m" * 56})
    with pytest.raises(BackendRejected, match="too long"):
        _backend(objects).apply(long)
    assert objects.store == {}


def test_without_a_runtime_image_the_backend_says_which_setting() -> None:
    with pytest.raises(ValueError, match="LOOPLINE_OPERATOR_RUNTIME_IMAGE"):
        _backend(MemoryObjects(), runtime_image="")


def test_with_seldon_the_servers_peer_is_the_seldon_server() -> None:
    objects = MemoryObjects()
    _backend(objects, serving_backend="seldon", seldon_namespace="seldon").apply(DESIRED)
    policy = objects.store[("networking.k8s.io/v1", "NetworkPolicy", "plant", "drill-ae-monitor")]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"] == {
        "seldon-server-name": "drill-ae-server"
    }


def test_delete_removes_everything_once() -> None:
    objects = MemoryObjects()
    backend = _backend(objects)
    backend.apply(DESIRED)
    backend.delete("plant", "drill-ae")
    assert objects.store == {}
    objects.calls.clear()
    backend.delete("plant", "drill-ae")  # every reconcile of a Model without a monitor
    assert objects.calls == []
    backend.apply(DESIRED)
    backend.delete("plant", "drill-ae")
    assert objects.store == {}


STATUS = {
    "model": "drill-ae",
    "namespace": "plant",
    "detector": "ks",
    "pValue": 0.01,
    "correction": "bonferroni",
    "window": {"size": 100, "step": 50, "rows": 100, "sinceTest": 0, "rowsSeen": 300},
    "queueRows": 0,
    "received": 300,
    "dropped": 0,
    "decision": "drift",
    "windowsTested": 4,
    "driftedWindows": 3,
    "consecutive": 3,
    "consecutiveRequired": 3,
    "driftConfirmed": True,
    "retrainOnDrift": True,
    "cooldownRemainingSeconds": 0.0,
    "requests": 1,
    "lastPValues": {"spindle_current": 0.0001},
    "lastDrifted": ["spindle_current"],
    "lastWindowEnd": "2026-12-05T10:00:00+00:00",
    "idle": False,
}


@pytest.fixture
def status_server() -> Iterator[tuple[str, list[str]]]:
    """A monitor's status endpoint on loopback: (its address, the paths asked for)."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            body = json.dumps(STATUS).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", paths
    finally:
        server.shutdown()
        server.server_close()


def _existing_service(objects: MemoryObjects, cluster_ip: str, port: int) -> None:
    objects.store[("v1", "Service", "plant", "drill-ae-monitor")] = {
        "spec": {"clusterIP": cluster_ip, "ports": [{"name": "http", "port": port}]}
    }


def test_check_reads_the_status_at_the_services_cluster_ip(
    status_server: tuple[str, list[str]],
) -> None:
    """An operator that did not apply the monitor itself (it restarted) finds the Service."""
    address, paths = status_server
    host, port = address.split(":")
    objects = MemoryObjects()
    _existing_service(objects, host, int(port))
    check = _backend(objects).check("plant", "drill-ae")
    assert check is not None
    assert check.confirmed is True
    assert check.features == ["spindle_current"]
    assert paths == ["/v1/status"]


def test_check_after_apply_uses_the_applied_services_cluster_ip(
    status_server: tuple[str, list[str]],
) -> None:
    objects = MemoryObjects(cluster_ip="127.0.0.1")
    backend = _backend(objects)
    backend.apply(DESIRED)
    objects.calls.clear()
    backend.check("plant", "drill-ae")  # port 8090 of loopback: nothing of ours there
    assert "get Service" not in objects.calls  # the address came from the apply


def test_check_never_raises() -> None:
    objects = MemoryObjects()
    backend = _backend(objects)
    assert backend.check("plant", "drill-ae") is None  # no Service yet
    _existing_service(objects, "127.0.0.1", 1)  # nothing listens on port 1
    assert backend.check("plant", "drill-ae") is None
    objects.fail_get = True
    assert _backend(objects).check("plant", "drill-ae") is None  # API server down
    _existing_service(objects, "None", 8090)
    objects.fail_get = False
    assert _backend(objects).check("plant", "drill-ae") is None  # headless: no address
