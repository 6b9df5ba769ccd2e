"""`helm install` of helm/loopline into the local control plane, with kwok's fake node.

The project-built helm installs the chart; kwok runs the pods as fake pods (no image is
pulled, so the images need not exist), which is enough to see that the API server accepts
every object, that the pods pass the `restricted` Pod Security Standard (enforced on the
namespace by the API server's own admission), that the Deployments become available, and
that the operator's ServiceAccount can do exactly what manifests/rbac grants and nothing
more (`kubectl auth can-i` with impersonation, a table of allowed and denied checks), and that
the model servers' ServiceAccount the chart binds may create TokenReviews and nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client as k8s

from loopline.kube import client_configuration
from loopline.operators.builders.kube_serving import build_deployment
from loopline.operators.builders.serving import ServingDesired
from loopline.serving.token_review import KubeTokenReviewer, ReviewFailed
from loopline.types.common import GROUP, VERSION
from tests import helm_chart
from tests.fixtures.cluster import ClusterHandle, wait_for
from tests.fixtures.operator import PIPELINE, kill_workers, model_manifest, write_worker

SENTINEL = "s3nt1nel-mlflow-Pa55w0rd"
SELDON_CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "seldon-core-v2"
SUBRESOURCES = {"status", "exec", "log", "scale", "token"}
OPERATOR = "app.kubernetes.io/component=operator"


@dataclass
class Release:
    """One installed release of the chart."""

    name: str
    namespace: str
    cluster: ClusterHandle
    env: dict[str, str]

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(helm_chart.helm_binary()), f"--kubeconfig={self.cluster.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=420,
            env=self.env,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"helm {' '.join(args)} failed:\n{result.stderr}\n"
                f"{self.cluster.snapshot(self.namespace)}"
            )
        return result

    def install(self, *values: str, chart: Path = helm_chart.CHART_DIR) -> None:
        self.helm(
            "install",
            self.name,
            str(chart),
            f"--namespace={self.namespace}",
            "--wait",
            "--timeout=300s",  # 180 s ran out once in CI; a failure prints the cluster snapshot
            *[arg for setting in values for arg in ("--set", setting)],
        )

    def service_account(self, component: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}-loopline-{component}"

    def can_i(self, component: str, verb: str, resource: str, namespace: str | None) -> bool:
        """`kubectl auth can-i` as the component's ServiceAccount. `resource` is
        `plural.group`, optionally `/subresource` (status, exec) or `/name`."""
        return self.can(self.service_account(component), verb, resource, namespace)

    def can(self, user: str, verb: str, resource: str, namespace: str | None) -> bool:
        """`kubectl auth can-i` as any user (see `can_i`)."""
        base, _, rest = resource.partition("/")
        args = ["auth", "can-i", verb, f"--as={user}"]
        if rest in SUBRESOURCES:
            args += [base, f"--subresource={rest}"]
        else:
            args.append(resource)
        args += [f"--namespace={namespace}"] if namespace else ["--all-namespaces"]
        result = self.cluster.kubectl(*args, check=False)
        answer = result.stdout.strip()
        assert answer in ("yes", "no"), result.stderr
        return answer == "yes"


@contextmanager
def _release(
    cluster: ClusterHandle, namespace: str, tmp_path: Path, name: str
) -> Iterator[Release]:
    """A release to install; uninstalled afterwards, since its ClusterRoles (cluster-wide
    mode) outlive the namespace."""
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(tmp_path / var.lower())
    # The API server refuses pods that break the restricted Pod Security Standard.
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    release = Release(name=name, namespace=namespace, cluster=cluster, env=env)
    try:
        yield release
    finally:
        release.helm("uninstall", release.name, f"--namespace={namespace}", check=False)


@pytest.fixture(scope="module")
def seldon_crds(cluster: ClusterHandle) -> list[str]:
    """Seldon Core 2's CRDs: the operator's seldon backend is granted their objects, and
    `kubectl auth can-i` resolves a resource only if the API server serves it."""
    return cluster.install_crds(SELDON_CRDS)


@pytest.fixture
def release(cluster: ClusterHandle, namespace: str, tmp_path: Path) -> Iterator[Release]:
    with _release(cluster, namespace, tmp_path, "ll") as installed:
        yield installed


@pytest.fixture
def other_namespace(kube_api: k8s.ApiClient, namespace: str) -> Iterator[str]:
    """A second namespace the operator is told to watch."""
    core = k8s.CoreV1Api(kube_api)
    name = f"{namespace[:50]}-b"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")


def _manifest_permissions(backends: tuple[str, ...] = ("seldon", "kfp")) -> list[tuple[str, str]]:
    """(verb, resource.group[/subresource]) for everything manifests/rbac grants the operator."""
    checks = []
    for group, resource, verb, _ in sorted(
        helm_chart.expand_rules(helm_chart.operator_manifest_rules(backends))
    ):
        base, _, sub = resource.partition("/")
        name = f"{base}.{group}" if group else base
        checks.append((verb, f"{name}/{sub}" if sub else name))
    return checks


# What the operator must NOT be able to do anywhere: read credentials, run code in pods,
# create or delete the resources it only reconciles, grant itself more, touch the CRDs.
DENIED = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("create", "pods/exec"),
    ("create", "models.loopline.dev"),
    ("delete", "models.loopline.dev"),
    ("delete", "pipelines.loopline.dev"),
    ("update", "models.loopline.dev/status"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("create", "serviceaccounts/token"),
    ("delete", "events"),
    ("get", "configmaps"),
]
DENIED_CLUSTER = [
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "tokenreviews.authentication.k8s.io"),  # the model servers' grant, not its
    ("list", "nodes"),
    ("list", "namespaces"),
]


def _check_table(
    release: Release, rows: list[tuple[str, str, str | None, bool]], component: str = "operator"
) -> None:
    """Evaluate (verb, resource, namespace, expected) rows; fail with the whole table."""
    table = []
    wrong = []
    for verb, resource, namespace, expected in rows:
        got = release.can_i(component, verb, resource, namespace)
        mark = "ok" if got == expected else "WRONG"
        table.append(f"{mark:5} {verb:7} {resource:55} {namespace or '(cluster)':30} {got}")
        if got != expected:
            wrong.append(table[-1])
    print("\n".join(table))
    assert not wrong, "kubectl auth can-i disagrees:\n" + "\n".join(wrong)


MODEL_SERVER_DENIED = [
    ("get", "pods"),
    ("create", "pods"),
    ("list", "secrets"),
    ("get", "configmaps"),
    ("get", "models.loopline.dev"),
    ("create", "serviceaccounts/token"),
]
MODEL_SERVER_DENIED_CLUSTER = [
    ("create", "subjectaccessreviews.authorization.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("list", "namespaces"),
]


def _check_model_server_grant(release: Release, watched: list[str], tmp_path: Path) -> None:
    """The chart's model-server ServiceAccount, in each watched namespace, may create
    TokenReviews and nothing else; the same name elsewhere, the namespaces' default
    accounts and the operator may not; and its real token does create one."""
    account = f"{release.name}-loopline-model-server"
    review = ("create", "tokenreviews.authentication.k8s.io")
    rows: list[tuple[str, str, str, str | None, bool]] = []
    for ns in watched:
        user = f"system:serviceaccount:{ns}:{account}"
        rows += [(user, *review, ns, True), (user, *review, None, True)]
        rows += [(user, verb, resource, ns, False) for verb, resource in MODEL_SERVER_DENIED]
        rows += [(user, verb, res, None, False) for verb, res in MODEL_SERVER_DENIED_CLUSTER]
        rows.append((f"system:serviceaccount:{ns}:default", *review, None, False))
    rows.append((f"system:serviceaccount:default:{account}", *review, None, False))
    rows.append((release.service_account("operator"), *review, None, False))
    wrong = [row for row in rows if release.can(*row[:4]) != row[4]]
    assert not wrong, f"kubectl auth can-i disagrees (user, verb, resource, ns, want): {wrong}"

    # A real TokenReview with the account's own token, as a server pod makes it
    # (serving/token_review.py), of another ServiceAccount's token.
    cluster, ns = release.cluster, watched[-1]
    caller = cluster.kubectl("create", "token", "default", f"--namespace={ns}").stdout.strip()
    reviewer = KubeTokenReviewer(
        client_configuration(_kubeconfig(release, account, ns, tmp_path)), 5.0
    )
    doc = asyncio.run(_review_and_close(reviewer, caller))
    assert doc["status"]["authenticated"] is True, doc
    assert doc["status"]["user"]["username"] == f"system:serviceaccount:{ns}:default"
    # The namespace's default account has no such grant: the API server refuses it.
    unbound = KubeTokenReviewer(
        client_configuration(_kubeconfig(release, "default", ns, tmp_path)), 5.0
    )
    with pytest.raises(ReviewFailed, match="403"):
        asyncio.run(_review_and_close(unbound, caller))

    # A model server pod as the operator builds it with the account is admitted (restricted
    # Pod Security Standard, ServiceAccount admission): a server-side dry run of its Pod.
    desired = ServingDesired(
        namespace=release.namespace, name="drill-ae", registered_model="m", champion_version="1"
    )
    template = build_deployment(
        desired, image="loopline/runtime:1", tracking_uri="http://mlflow:5000", digest="d",
        service_account=account,
    )["spec"]["template"]  # fmt: skip
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "server-probe", **template["metadata"]},
        "spec": template["spec"],
    }
    result = cluster.kubectl(
        "apply", "--dry-run=server", f"--namespace={release.namespace}", "-f", "-",
        input=yaml.safe_dump(pod),
    )  # fmt: skip
    assert "(server dry run)" in result.stdout


async def _review_and_close(reviewer: KubeTokenReviewer, token: str) -> dict[str, Any]:
    try:
        return await reviewer.review(token, ())
    finally:
        await reviewer.close()


def _pods(release: Release, selector: str) -> list[dict[str, Any]]:
    out = release.cluster.kubectl(
        "get", "pods", f"--namespace={release.namespace}", f"--selector={selector}", "-o", "json"
    ).stdout
    return list(json.loads(out)["items"])


def test_install_namespaced_runs_hardened_pods_with_exact_rbac(
    release: Release,
    kube_api: k8s.ApiClient,
    other_namespace: str,
    tmp_path: Path,
    seldon_crds: list[str],
) -> None:
    core = k8s.CoreV1Api(kube_api)
    core.create_namespaced_secret(
        release.namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="mlflow-auth"),
            string_data={"username": "loopline", "password": SENTINEL},
        ),
    )
    # From the packaged chart, as users get it: the links to manifests/ are resolved in it.
    release.helm("package", str(helm_chart.CHART_DIR), f"--destination={tmp_path}")
    (package,) = tmp_path.glob("loopline-*.tgz")
    release.install(
        f"rbac.watchNamespaces={{{release.namespace},{other_namespace}}}",
        "backends.mlflow.username.secretName=mlflow-auth",
        "backends.mlflow.password.secretName=mlflow-auth",
        "backends.seldon.enabled=true",
        "backends.serving=kubernetes",  # the model servers' token-review grant with it
        chart=package,
    )

    # The operator's pod runs (as a kwok fake pod), admitted under `restricted`.
    pods = wait_for(
        lambda: [p for p in _pods(release, OPERATOR) if p["status"].get("phase") == "Running"],
        timeout=60,
        what="a Running operator pod",
    )
    assert len(pods) == 1

    # The admission that let these pods in is live: a root pod is refused here.
    refused = release.cluster.kubectl(
        "run",
        "root-probe",
        "--image=busybox",
        "--dry-run=server",
        f"--namespace={release.namespace}",
        check=False,
    )
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr

    # The CRDs are served: the operator's resources can be listed in the namespace.
    for resource in ("models.loopline.dev", "pipelines.loopline.dev"):
        release.cluster.kubectl("get", resource, f"--namespace={release.namespace}")

    watched = [release.namespace, other_namespace]
    rows: list[tuple[str, str, str | None, bool]] = []
    for verb, resource in _manifest_permissions():
        rows += [(verb, resource, ns, True) for ns in watched]
        rows.append((verb, resource, "default", False))  # not a watched namespace
    rows += [(verb, resource, ns, False) for verb, resource in DENIED for ns in watched]
    rows += [(verb, resource, None, False) for verb, resource in DENIED_CLUSTER]
    _check_table(release, rows)
    _check_model_server_grant(release, watched, tmp_path)

    # Credentials stay in their Secret: the pods reference it, and neither the release
    # (manifest, values) nor any object or Event in the namespace carries the value.
    (operator_pod,) = pods
    env = {e["name"]: e for e in operator_pod["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-auth",
        "key": "password",
    }
    encoded = base64.b64encode(SENTINEL.encode()).decode()
    dumps = [
        release.helm("get", "all", release.name, f"--namespace={release.namespace}").stdout,
        release.cluster.kubectl(
            "get",
            "all,configmaps,serviceaccounts,roles,rolebindings,networkpolicies,"
            "poddisruptionbudgets,events,models.loopline.dev,pipelines.loopline.dev",
            f"--namespace={release.namespace}",
            "-o",
            "yaml",
        ).stdout,
    ]
    for dump in dumps:
        assert SENTINEL not in dump
        assert encoded not in dump


def test_install_cluster_wide_grants_the_same_rules_everywhere(
    cluster: ClusterHandle,
    namespace: str,
    other_namespace: str,
    tmp_path: Path,
    seldon_crds: list[str],
) -> None:
    """rbac.clusterWide: one ClusterRole; the operator may act in any namespace, yet still
    only with the manifest's verbs."""
    with _release(cluster, namespace, tmp_path, "llwide") as release:
        release.install("rbac.clusterWide=true", "backends.seldon.enabled=true")
        wait_for(
            lambda: [p for p in _pods(release, OPERATOR) if p["status"].get("phase") == "Running"],
            timeout=60,
            what="a Running operator pod",
        )
        config = release.cluster.kubectl(
            "get", "configmap", "llwide-loopline-config", f"--namespace={namespace}", "-o", "yaml"
        ).stdout
        assert yaml.safe_load(config)["data"]["LOOPLINE_OPERATOR_NAMESPACES"] == "[]"
        rows: list[tuple[str, str, str | None, bool]] = []
        for verb, resource in _manifest_permissions():
            rows += [(verb, resource, ns, True) for ns in (other_namespace, "default")]
            rows.append((verb, resource, None, True))
        rows += [(verb, resource, other_namespace, False) for verb, resource in DENIED]
        rows += [(verb, resource, None, False) for verb, resource in DENIED_CLUSTER]
        _check_table(release, rows)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _service_account_kubeconfig(release: Release, component: str, path: Path) -> Path:
    """A kubeconfig that authenticates as a component's ServiceAccount (a bound token)."""
    return _kubeconfig(release, f"{release.name}-loopline-{component}", release.namespace, path)


def _kubeconfig(release: Release, account: str, namespace: str, path: Path) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount (a bound token); `path` may be a
    directory, which gets a file named after the account."""
    if path.is_dir():
        path = path / f"{namespace}-{account}.kubeconfig"
    token = release.cluster.kubectl(
        "create", "token", account, f"--namespace={namespace}", "--duration=15m"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": release.cluster.server,
                    "certificate-authority": str(release.cluster.ca_file),
                },
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": account}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_operator_runs_as_configured_by_the_chart_with_only_its_rbac(
    release: Release, kube_api: k8s.ApiClient, tmp_path: Path
) -> None:
    """The real operator, given the environment and command the chart renders and the
    chart's ServiceAccount token, reconciles a Model to Serving: the RBAC is enough, the
    liveness probe the chart points at answers, and a credential in its environment never
    reaches its log (at DEBUG).

    The local pipeline backend runs the operator tests' worker (tests/fixtures/operator.py:
    a small real program speaking the worker protocol, which does not train), and the Model
    has `serving.replicas: 0`, so the run needs neither KFP nor Seldon.
    """
    release.install("backends.kfp.enabled=false", "backends.seldon.enabled=false")
    container = _deployment_container(release, "operator")
    config = yaml.safe_load(
        release.cluster.kubectl(
            "get",
            "configmap",
            f"{release.name}-loopline-config",
            f"--namespace={release.namespace}",
            "-o",
            "yaml",
        ).stdout
    )["data"]
    assert config["LOOPLINE_OPERATOR_PIPELINE_BACKEND"] == "local"

    port, metrics_port = _free_port(), _free_port()
    args = [
        a.replace(f"0.0.0.0:{container['ports'][0]['containerPort']}", f"127.0.0.1:{port}")
        for a in container["args"]
    ]
    assert args == [f"--liveness=http://127.0.0.1:{port}/healthz"]
    env = {
        **os.environ,
        **config,
        **{e["name"]: e["value"] for e in container["env"] if "value" in e},
        # What only a real pod has: its token, writable directories, the Secret's value.
        "LOOPLINE_OPERATOR_KUBECONFIG": str(
            _service_account_kubeconfig(release, "operator", tmp_path / "sa.kubeconfig")
        ),
        "LOOPLINE_STATE_DIR": str(tmp_path / "state"),
        "LOOPLINE_CACHE_DIR": str(tmp_path / "cache"),
        "HOME": str(tmp_path),
        "LOOPLINE_OPERATOR_RUNS_DIR": str(tmp_path / "runs"),
        "LOOPLINE_OPERATOR_SERVING_DIR": str(tmp_path / "serving"),
        "LOOPLINE_OPERATOR_WORKER_COMMAND": json.dumps(write_worker(tmp_path / "bin")),
        "LOOPLINE_OPERATOR_RECONCILE_INTERVAL": "1",
        "LOOPLINE_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_TRACKING_USERNAME": "loopline",
        "MLFLOW_TRACKING_PASSWORD": SENTINEL,
        "LOOPLINE_LOG_LEVEL": "DEBUG",
        "LOOPLINE_TEST_WORKER_STEP_SECONDS": "0.2",
        # The chart's /metrics port, moved to a free loopback one as the liveness port is.
        "LOOPLINE_OPERATOR_METRICS_PORT": str(metrics_port),
        "LOOPLINE_OPERATOR_METRICS_HOST": "127.0.0.1",
    }
    assert config["LOOPLINE_OPERATOR_METRICS_PORT"] == str(
        next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    )
    log_path = tmp_path / "operator.log"
    with _process([*container["command"], *args], env, log_path):
        wait_for(
            lambda: _healthy(f"http://127.0.0.1:{port}/healthz"),
            timeout=60,
            what=f"the operator's liveness endpoint (log: {log_path})",
        )
        custom = k8s.CustomObjectsApi(kube_api)
        for manifest, plural in ((PIPELINE, "pipelines"), (model_manifest(), "models")):
            custom.create_namespaced_custom_object(
                GROUP, VERSION, release.namespace, plural, manifest
            )

        def serving() -> dict[str, Any] | None:
            obj = custom.get_namespaced_custom_object(
                GROUP, VERSION, release.namespace, "models", "drill-ae"
            )
            status = obj.get("status") or {}
            return status if status.get("phase") == "Serving" else None

        wait_for(serving, timeout=90, what=f"Model drill-ae Serving (log: {log_path})")
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert scraped.status_code == 200
        assert "loopline_usage_requests_total" in scraped.text  # HELP/TYPE; no batch run yet
        events = k8s.CoreV1Api(kube_api).list_namespaced_event(
            release.namespace, field_selector="involvedObject.name=drill-ae"
        )
        assert events.items, "the operator could not record Events"
    kill_workers(tmp_path / "runs")  # test workers left behind
    log_text = log_path.read_text(errors="replace")
    assert "DEBUG" in log_text, "the operator did not log at DEBUG"
    assert SENTINEL not in log_text
    assert "Forbidden" not in log_text, log_text[-3000:]


def _deployment_container(release: Release, component: str) -> dict[str, Any]:
    """The container of a component's Deployment as the API server stored it."""
    deployment = yaml.safe_load(
        release.cluster.kubectl(
            "get",
            "deployment",
            f"{release.name}-loopline-{component}",
            f"--namespace={release.namespace}",
            "-o",
            "yaml",
        ).stdout
    )
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


@contextmanager
def _process(argv: list[str], env: dict[str, str], log_path: Path) -> Iterator[None]:
    """Run a console script of this venv (as the image runs its command) with its output in
    `log_path`; stop its process group afterwards."""
    program = Path(sys.executable).parent / argv[0]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(program), *argv[1:]],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_every_object_of_the_all_features_render_is_accepted_by_the_api_server(
    cluster: ClusterHandle, namespace: str
) -> None:
    """Server-side dry run of everything cluster-wide-values.yaml renders (projected token
    volume, restricted egress, Feast ConfigMap, dashboards...), so the API server's own
    validation sees each object. The Prometheus operator's kinds are left out: their CRDs are
    not installed here."""
    rendered = helm_chart.helm(
        "template",
        "llall",
        str(helm_chart.CHART_DIR),
        f"--namespace={namespace}",
        f"--values={helm_chart.CI_VALUES_DIR / 'cluster-wide-values.yaml'}",
        "--set",
        f"dashboards.namespace={namespace}",
    ).stdout
    docs = [
        d for d in helm_chart.documents(rendered) if d["apiVersion"] != "monitoring.coreos.com/v1"
    ]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "NetworkPolicy", "ClusterRole", "ValidatingAdmissionPolicy"} <= kinds
    result = cluster.kubectl(
        "apply",
        "--dry-run=server",
        f"--namespace={namespace}",
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
    )
    assert result.stdout.count("(server dry run)") == len(docs), result.stdout
