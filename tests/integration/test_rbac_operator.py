"""The operator's RBAC (manifests/rbac/operator.yaml) is enough and no more.

`kubectl auth can-i` as the operator's ServiceAccount for every verb it needs, and for some it
must not have; then the operator itself runs with a token of that ServiceAccount and drives a
Model to Serving, which proves the list is complete (a missing verb shows up as a 403).
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from loopline.cluster.versions import REPO_ROOT
from tests.fixtures.cluster import ClusterHandle
from tests.fixtures.operator import PIPELINE, OperatorHarness, model_manifest

RBAC = REPO_ROOT / "manifests" / "rbac" / "operator.yaml"
SA = "system:serviceaccount:loopline-system:loopline-operator"

ALLOWED = [
    ("get", "models.loopline.dev"),
    ("list", "models.loopline.dev"),
    ("watch", "models.loopline.dev"),
    ("patch", "models.loopline.dev"),
    ("patch", "models.loopline.dev/status"),
    ("get", "pipelines.loopline.dev"),
    ("list", "pipelines.loopline.dev"),
    ("watch", "pipelines.loopline.dev"),
    ("patch", "pipelines.loopline.dev"),
    ("patch", "pipelines.loopline.dev/status"),
    ("create", "events"),
    # the kubernetes serving backend
    ("create", "deployments.apps"),
    ("patch", "deployments.apps"),
    ("get", "deployments.apps"),
    ("list", "deployments.apps"),
    ("delete", "deployments.apps"),
    ("create", "services"),
    ("patch", "services"),
    ("list", "services"),
    ("delete", "services"),
    ("create", "secrets"),
    ("delete", "secrets"),
    ("create", "jobs.batch"),
    ("get", "jobs.batch"),
    ("list", "jobs.batch"),
    ("watch", "jobs.batch"),
    ("delete", "jobs.batch"),
    ("get", "pods"),
    ("list", "pods"),
    # a drift monitor per Model
    ("get", "services"),
    ("create", "persistentvolumeclaims"),
    ("patch", "serviceaccounts"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("delete", "rolebindings.rbac.authorization.k8s.io"),
    ("list", "configmaps"),
    ("create", "configmaps"),
    ("patch", "configmaps"),
    ("delete", "configmaps"),
    # people's decisions on challengers awaiting approval
    ("list", "modelapprovals.loopline.dev"),
    ("patch", "modelapprovals.loopline.dev/status"),
]
DENIED = [
    ("create", "models.loopline.dev"),
    ("delete", "models.loopline.dev"),
    ("update", "models.loopline.dev"),
    ("delete", "pipelines.loopline.dev"),
    ("get", "secrets"),
    ("list", "secrets"),
    ("watch", "secrets"),
    ("update", "deployments.apps"),
    ("create", "pods"),
    ("delete", "pods"),
    ("patch", "jobs.batch"),
    ("get", "persistentvolumeclaims"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("patch", "events"),
    ("update", "configmaps"),
    # the operator reads decisions; it never makes or rewrites one
    ("create", "modelapprovals.loopline.dev"),
    ("patch", "modelapprovals.loopline.dev"),
    ("delete", "modelapprovals.loopline.dev"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("list", "namespaces"),
]


def _can_i(cluster: ClusterHandle, namespace: str, verb: str, resource: str) -> str:
    """kubectl's answer; `kind/sub` asks about the subresource (kubectl would read `sub` as
    an object's name)."""
    kind, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    done = _kubectl(cluster, "auth", "can-i", verb, kind, *extra, "-n", namespace, f"--as={SA}")
    return done.stdout.strip() or done.stderr.strip()


def _kubectl(cluster: ClusterHandle, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def rbac(cluster: ClusterHandle) -> None:
    done = _kubectl(cluster, "apply", "-f", str(RBAC))
    assert done.returncode == 0, done.stderr


@pytest.mark.usefixtures("rbac")
@pytest.mark.parametrize(("verb", "resource"), ALLOWED)
def test_operator_may(cluster: ClusterHandle, namespace: str, verb: str, resource: str) -> None:
    assert _can_i(cluster, namespace, verb, resource) == "yes", (verb, resource)


@pytest.mark.usefixtures("rbac")
@pytest.mark.parametrize(("verb", "resource"), DENIED)
def test_operator_may_not(cluster: ClusterHandle, namespace: str, verb: str, resource: str) -> None:
    assert _can_i(cluster, namespace, verb, resource) == "no", (verb, resource)


@pytest.mark.usefixtures("rbac")
def test_operator_runs_with_only_its_service_account(
    cluster: ClusterHandle, operator_harness: OperatorHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = _kubectl(cluster, "create", "token", "loopline-operator", "-n", "loopline-system")
    assert token.returncode == 0, token.stderr
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    kubeconfig = {
        **admin,
        "users": [{"name": "operator", "user": {"token": token.stdout.strip()}}],
        "contexts": [
            {
                "name": "operator",
                "context": {"cluster": admin["clusters"][0]["name"], "user": "operator"},
            }
        ],
        "current-context": "operator",
    }
    path = operator_harness.runs_dir.parent / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("LOOPLINE_OPERATOR_KUBECONFIG", str(path))
    h = operator_harness
    h.create(PIPELINE)
    h.create(model_manifest())
    with h.running() as runner:
        h.wait_phase("drill-ae", "Serving", timeout=60)
    # A 403 status, not the milliseconds of a log line's timestamp ("07:47:57,403").
    assert not re.search(r"(?<![,.\d])403(?!\d)", runner.output), runner.output[-3000:]
    assert "Forbidden" not in runner.output
    assert any(reason == "Serving" for reason, _ in h.events("drill-ae"))


@pytest.mark.usefixtures("rbac")
def test_seldon_backend_rbac_is_separate_and_minimal(
    cluster: ClusterHandle, namespace: str
) -> None:
    """Without operator-seldon.yaml the operator has no Seldon access; with it, exactly the
    verbs the seldon backend uses."""
    resource = "models.mlops.seldon.io"
    cluster.install_crds(REPO_ROOT / "tests" / "fixtures" / "seldon-core-v2")

    def can(verb: str, what: str = resource) -> str:
        done = _kubectl(cluster, "auth", "can-i", verb, what, "-n", namespace, f"--as={SA}")
        return done.stdout.strip()

    seldon = REPO_ROOT / "manifests" / "rbac" / "operator-seldon.yaml"
    _kubectl(cluster, "delete", "--ignore-not-found", "-f", str(seldon))
    assert can("create") == "no"
    done = _kubectl(cluster, "apply", "-f", str(seldon))
    assert done.returncode == 0, done.stderr
    try:
        for verb in ("list", "create", "patch", "delete"):
            for what in ("servers.mlops.seldon.io", resource, "experiments.mlops.seldon.io"):
                assert can(verb, what) == "yes", (verb, what)
        assert can("update") == "no"
        assert can("create", "serverconfigs.mlops.seldon.io") == "no"
        for verb in ("create", "patch", "delete"):
            assert can(verb, "networkpolicies.networking.k8s.io") == "yes", verb
        for verb in ("get", "list", "update"):
            assert can(verb, "networkpolicies.networking.k8s.io") == "no", verb
        assert can("list", "pods") == "yes"  # a canary's traffic, from the Server pods
    finally:
        _kubectl(cluster, "delete", "--ignore-not-found", "-f", str(seldon))
