"""What the chart's ServiceAccounts and the drift monitors' can really do, asked of a real
API server.

The chart's RBAC, the monitors' ClusterRole and their ValidatingAdmissionPolicy (helm
template, the same objects `helm install` creates) go into the session cluster; each Model's
monitor identity (its ServiceAccount and RoleBinding, built by
operators.builders.kube_monitoring) is applied as the operator, as the operator applies it.
Then requests impersonate each ServiceAccount and try what it must not do: every one answers
403. What each must do (a monitor raises a retraining request on its own Model; the operator
adds its finalizer, writes status and binds the monitors' role) still works, so the denials are
not a broken policy that refuses everything.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from loopline.operators.backends.kube_objects import KubeObjects
from loopline.operators.builders.kube_monitoring import (
    account_name,
    build_role_binding,
    build_service_account,
)
from loopline.operators.errors import BackendUnavailable
from loopline.types.common import GROUP, RETRAIN_ANNOTATION, RETRAIN_REASON_ANNOTATION, VERSION
from loopline.wait import wait_for
from tests import helm_chart
from tests.fixtures.cluster import ClusterHandle
from tests.fixtures.operator import model_manifest

pytestmark = pytest.mark.security

SELDON_CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "seldon-core-v2"
RELEASE = "sap"
MODEL = "drill-ae"
OTHER_MODEL = "fault-classifier"
# A Model whose name starts with MODEL's: "its own Model" must be an exact match.
LONGER_MODEL = "drill-ae-monitor-x"
MODELS = (MODEL, OTHER_MODEL, LONGER_MODEL)
MONITOR_ROLE = f"{RELEASE}-loopline-monitor"
ELSEWHERE = "sa-privileges-elsewhere"  # another namespace (it need not exist)
FINALIZER = "loopline.dev/cleanup"
# What the chart installs for identities: everything else (workloads, services, network
# policies) is irrelevant to what a ServiceAccount may do.
IDENTITY_KINDS = {
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ConfigMap",
}


@dataclass
class Install:
    namespace: str
    operator: str
    monitor: str  # MODEL's monitor
    objects: list[dict[str, Any]]
    cluster: ClusterHandle

    def monitor_of(self, model: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{account_name(model)}"

    def client(self, username: str) -> k8s.ApiClient:
        """An ApiClient of the cluster admin that impersonates `username` (a ServiceAccount
        gets its groups from the API server)."""
        api = self.cluster.api_client()
        api.set_default_header("Impersonate-User", username)
        return api


def _kubectl(
    cluster: ClusterHandle, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _model(name: str) -> dict[str, Any]:
    body = model_manifest(name, validation={"metric": "f1", "minimums": {"f1": 0.6}})
    body["spec"]["serving"] = {"replicas": 1}
    body["metadata"].update(
        labels={"team": "plant-a"},
        # An earlier request is there, so every denial below is for what the patch changes,
        # not for a request it would lack.
        annotations={
            "example.com/owner": "ml-platform",
            RETRAIN_ANNOTATION: "sec-0",
            RETRAIN_REASON_ANNOTATION: "{}",
        },
        finalizers=[FINALIZER],
    )
    return body


@pytest.fixture(scope="module")
def install(cluster: ClusterHandle, loopline_crds: list[str]) -> Iterator[Install]:
    """The chart's identities for a release in a fresh namespace, its Models, and the policy
    in force (a denied patch proves the API server has loaded it)."""
    namespace = f"sa-privileges-{uuid.uuid4().hex[:8]}"
    rendered = helm_chart.helm(
        "template",
        RELEASE,
        str(helm_chart.CHART_DIR),
        "--namespace",
        namespace,
    ).stdout
    objects = [d for d in helm_chart.documents(rendered) if d["kind"] in IDENTITY_KINDS]
    kinds = {d["kind"] for d in objects}
    assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= kinds, kinds
    done = _kubectl(cluster, "create", "namespace", namespace)
    assert done.returncode == 0, done.stderr
    stream = yaml.safe_dump_all(objects)
    done = _kubectl(cluster, "apply", "-f", "-", stdin=stream)
    assert done.returncode == 0, done.stderr
    admin = cluster.api_client()
    custom = k8s.CustomObjectsApi(admin)
    for name in MODELS:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "models", _model(name))
    sa = f"system:serviceaccount:{namespace}:{RELEASE}-loopline"
    handle = Install(namespace, f"{sa}-operator", "", objects, cluster)
    handle.monitor = handle.monitor_of(MODEL)
    # Each Model's monitor identity, applied as the operator applies it: RBAC lets it bind
    # the monitors' ClusterRole because it holds that role's one permission itself.
    as_operator = handle.client(handle.operator)
    try:
        for name in MODELS:
            for obj in (
                build_service_account(namespace, name),
                build_role_binding(namespace, name, MONITOR_ROLE),
            ):
                wait_for(
                    lambda obj=obj: KubeObjects(as_operator).apply(obj),
                    timeout=60,
                    what=f"the operator to apply {obj['kind']} {obj['metadata']['name']}",
                    ignore=(BackendUnavailable,),
                )
    finally:
        as_operator.close()

    def policy_in_force() -> bool:
        # RBAC's 403 comes first while the RoleBinding is not in force yet: wait for the
        # policy's own denial, after which RBAC lets the patch through to it.
        # The probe's change is harmless if it lands before the policy is loaded: a fresh
        # annotation value, which no test below compares.
        probe = {"metadata": {"annotations": {"example.com/probe": uuid.uuid4().hex}}}
        status, body = _patch_answer(handle, handle.monitor, MODEL, probe)
        return status == 403 and POLICY_DENIAL in body

    wait_for(policy_in_force, timeout=60, what="the monitor's admission policy to deny a patch")
    try:
        yield handle
    finally:
        for obj in objects:
            if "namespace" not in obj["metadata"]:  # cluster-scoped: outlives the namespace
                _kubectl(
                    cluster, "delete", "--ignore-not-found", "-f", "-", stdin=yaml.safe_dump(obj)
                )
        for name in MODELS:
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "models", name, {"metadata": {"finalizers": None}}
            )
        _kubectl(cluster, "delete", "namespace", namespace, "--wait=false")
        admin.close()


POLICY_DENIAL = "ValidatingAdmissionPolicy"


def _answer(
    install: Install, username: str, request: Callable[[k8s.ApiClient], object]
) -> tuple[int, str]:
    """The HTTP status and error body of `request` made as `username` (200, "" on success)."""
    api = install.client(username)
    try:
        request(api)
    except ApiException as exc:
        return int(exc.status), str(exc.body)
    finally:
        api.close()
    return 200, ""


def _call(install: Install, username: str, request: Callable[[k8s.ApiClient], object]) -> int:
    return _answer(install, username, request)[0]


def _patch(
    install: Install,
    username: str,
    name: str,
    body: dict[str, Any],
    *,
    status: bool = False,
    namespace: str | None = None,
) -> int:
    return _patch_answer(install, username, name, body, status=status, namespace=namespace)[0]


def _patch_answer(
    install: Install,
    username: str,
    name: str,
    body: dict[str, Any],
    *,
    status: bool = False,
    namespace: str | None = None,
) -> tuple[int, str]:
    """Merge-patch a Model as `username`: the HTTP status and the error body."""

    def send(api: k8s.ApiClient) -> object:
        custom = k8s.CustomObjectsApi(api)
        patch = (
            custom.patch_namespaced_custom_object_status
            if status
            else custom.patch_namespaced_custom_object
        )
        return patch(GROUP, VERSION, namespace or install.namespace, "models", name, body)

    return _answer(install, username, send)


def _admin_model(install: Install, name: str = MODEL) -> dict[str, Any]:
    api = install.cluster.api_client()
    try:
        got = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, install.namespace, "models", name
        )
    finally:
        api.close()
    assert isinstance(got, dict)
    return got


def _retrain(request_id: str) -> dict[str, Any]:
    reason = json.dumps({"features": ["spindle_current"]})
    return {
        "metadata": {
            "annotations": {RETRAIN_ANNOTATION: request_id, RETRAIN_REASON_ANNOTATION: reason}
        }
    }


# ---- the monitor -----------------------------------------------------------------------


def test_monitor_may_raise_a_retraining_request_on_its_model(install: Install) -> None:
    assert _patch(install, install.monitor, MODEL, _retrain("sec-1")) == 200
    model = _admin_model(install)
    assert model["metadata"]["annotations"][RETRAIN_ANNOTATION] == "sec-1"
    # and again, with a new id: each drift episode is a new request
    assert _patch(install, install.monitor, MODEL, _retrain("sec-2")) == 200
    assert _admin_model(install)["metadata"]["annotations"][RETRAIN_ANNOTATION] == "sec-2"


MONITOR_MUST_NOT_PATCH = {
    "scale serving to zero": {"spec": {"serving": {"replicas": 0}}},
    "lower a quality minimum": {"spec": {"validation": {"minimums": {"f1": 0.0}}}},
    "remove the finalizers": {"metadata": {"finalizers": None}},
    "replace the finalizers": {"metadata": {"finalizers": ["example.com/other"]}},
    "add a label": {"metadata": {"labels": {"example.com/x": "1"}}},
    "remove a label": {"metadata": {"labels": {"team": None}}},
    "add another annotation": {"metadata": {"annotations": {"example.com/x": "1"}}},
    "change another annotation": {"metadata": {"annotations": {"example.com/owner": "me"}}},
    "remove another annotation": {"metadata": {"annotations": {"example.com/owner": None}}},
    "set its request along with a spec change": {
        **_retrain("sneaky"),
        "spec": {"serving": {"replicas": 0}},
    },
    "add an owner reference": {
        "metadata": {
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": str(uuid.uuid4())}
            ]
        }
    },
}


@pytest.mark.parametrize("body", MONITOR_MUST_NOT_PATCH.values(), ids=MONITOR_MUST_NOT_PATCH)
def test_monitor_may_not_change_anything_else_of_its_model(
    install: Install, body: dict[str, Any]
) -> None:
    before = _admin_model(install)
    status, answer = _patch_answer(install, install.monitor, MODEL, body)
    assert status == 403
    assert POLICY_DENIAL in answer  # RBAC allows the patch; the policy refuses its content
    after = _admin_model(install)
    assert after["spec"] == before["spec"]
    assert after["metadata"].get("labels") == before["metadata"].get("labels")
    assert after["metadata"].get("annotations") == before["metadata"].get("annotations")
    assert after["metadata"].get("finalizers") == [FINALIZER]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_monitor_may_not_withdraw_a_retraining_request(install: Install) -> None:
    assert _patch(install, install.monitor, MODEL, _retrain("sec-3")) == 200
    withdraw = {"metadata": {"annotations": {RETRAIN_ANNOTATION: None}}}
    assert _patch(install, install.monitor, MODEL, withdraw) == 403


def test_monitor_may_not_write_status(install: Install) -> None:
    body = {"status": {"phase": "Serving"}}
    assert _patch(install, install.monitor, MODEL, body, status=True) == 403


def test_monitor_may_not_touch_another_model(install: Install) -> None:
    """RBAC lets every monitor patch Models of its namespace; the policy holds each to the
    Model its ServiceAccount names, exactly: not another, not one whose name extends its own,
    and the longer one's monitor not the shorter."""
    for monitor, model in (
        (MODEL, OTHER_MODEL),
        (MODEL, LONGER_MODEL),
        (LONGER_MODEL, MODEL),
        (OTHER_MODEL, MODEL),
    ):
        status, answer = _patch_answer(install, install.monitor_of(monitor), model, _retrain("x"))
        assert status == 403, (monitor, model)
        assert POLICY_DENIAL in answer
        annotations = _admin_model(install, model)["metadata"]["annotations"]
        assert annotations[RETRAIN_ANNOTATION] != "x"


def test_every_models_monitor_may_raise_a_request_on_its_own_model(install: Install) -> None:
    for model in (OTHER_MODEL, LONGER_MODEL):
        assert _patch(install, install.monitor_of(model), model, _retrain(f"own-{model}")) == 200
        annotations = _admin_model(install, model)["metadata"]["annotations"]
        assert annotations[RETRAIN_ANNOTATION] == f"own-{model}"


def test_a_claimed_pod_name_does_not_make_another_monitor_the_models(install: Install) -> None:
    """The policy trusts the ServiceAccount, not what the pod-name extra claims: another
    Model's monitor whose token names the Model's monitor pod is still refused."""
    api = install.client(install.monitor_of(OTHER_MODEL))
    api.set_default_header(
        "Impersonate-Extra-authentication.kubernetes.io%2fpod-name", f"{MODEL}-monitor-5d4f-x2x"
    )
    try:
        with pytest.raises(ApiException) as refused:
            k8s.CustomObjectsApi(api).patch_namespaced_custom_object(
                GROUP, VERSION, install.namespace, "models", MODEL, _retrain("claimed")
            )
    finally:
        api.close()
    assert refused.value.status == 403
    assert POLICY_DENIAL in str(refused.value.body)


def test_monitor_may_not_read_list_create_or_delete_models(install: Install) -> None:
    ns = install.namespace

    def custom(api: k8s.ApiClient) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(api)

    calls: dict[str, Callable[[k8s.ApiClient], object]] = {
        "get": lambda api: custom(api).get_namespaced_custom_object(
            GROUP, VERSION, ns, "models", MODEL
        ),
        "list": lambda api: custom(api).list_namespaced_custom_object(GROUP, VERSION, ns, "models"),
        "create": lambda api: custom(api).create_namespaced_custom_object(
            GROUP, VERSION, ns, "models", model_manifest("intruder")
        ),
        "delete": lambda api: custom(api).delete_namespaced_custom_object(
            GROUP, VERSION, ns, "models", MODEL
        ),
        "read a secret": lambda api: k8s.CoreV1Api(api).list_namespaced_secret(ns),
        "delete its admission policy": lambda api: k8s.AdmissionregistrationV1Api(
            api
        ).delete_validating_admission_policy(f"{RELEASE}-loopline-monitor-retrain-only"),
    }
    got = {what: _call(install, install.monitor, call) for what, call in calls.items()}
    assert got == dict.fromkeys(calls, 403)
    assert _admin_model(install)["metadata"].get("deletionTimestamp") is None


@pytest.fixture
def widened_monitor_rbac(install: Install) -> Iterator[None]:
    """A mistake in RBAC: the monitor may patch, create and delete every Model of the
    namespace, and so may a ServiceAccount of another namespace named like MODEL's monitor.
    The policy must still hold on its own."""
    name = f"{RELEASE}-widened-{uuid.uuid4().hex[:6]}"
    objects = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": install.namespace},
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "resources": ["models", "models/status"],
                    "verbs": ["get", "patch", "create", "delete", "update"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": install.namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": install.monitor.rsplit(":", 1)[1],
                    "namespace": install.namespace,
                },
                {"kind": "ServiceAccount", "name": account_name(MODEL), "namespace": ELSEWHERE},
            ],
        },
    ]
    stream = yaml.safe_dump_all(objects)
    done = _kubectl(install.cluster, "apply", "-f", "-", stdin=stream)
    assert done.returncode == 0, done.stderr
    wait_for(
        lambda: (
            _patch(install, install.monitor, OTHER_MODEL, {"metadata": {}}) == 403
            and _call(
                install,
                install.monitor,
                lambda api: k8s.CustomObjectsApi(api).get_namespaced_custom_object(
                    GROUP, VERSION, install.namespace, "models", OTHER_MODEL
                ),
            )
            == 200
        ),
        timeout=30,
        what="the widened Role to take effect",
    )
    try:
        yield
    finally:
        _kubectl(install.cluster, "delete", "--ignore-not-found", "-f", "-", stdin=stream)


@pytest.mark.usefixtures("widened_monitor_rbac")
def test_policy_holds_even_when_rbac_grants_too_much(install: Install) -> None:
    ns = install.namespace
    assert _patch(install, install.monitor, OTHER_MODEL, _retrain("sec-5")) == 403
    assert _patch(install, install.monitor, MODEL, {"spec": {"serving": {"replicas": 0}}}) == 403
    assert (
        _patch(install, install.monitor, MODEL, {"status": {"phase": "Failed"}}, status=True) == 403
    )
    create = _call(
        install,
        install.monitor,
        lambda api: k8s.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, ns, "models", model_manifest("intruder")
        ),
    )
    delete = _call(
        install,
        install.monitor,
        lambda api: k8s.CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, ns, "models", OTHER_MODEL
        ),
    )
    assert (create, delete) == (403, 403)
    assert _admin_model(install, OTHER_MODEL)["metadata"].get("deletionTimestamp") is None
    # a monitor of another namespace is not this Model's, however it is named
    foreign = f"system:serviceaccount:{ELSEWHERE}:{account_name(MODEL)}"
    status, answer = _patch_answer(install, foreign, MODEL, _retrain("sec-foreign"))
    assert (status, POLICY_DENIAL in answer) == (403, True)
    # what it must do still works under the same widened RBAC
    assert _patch(install, install.monitor, MODEL, _retrain("sec-6")) == 200


# ---- the operator ----------------------------------------------------------------------


def test_operator_may_add_its_finalizer_and_write_status(install: Install) -> None:
    """The policy is the monitor's only: the operator's metadata and status patches pass."""
    body = {"metadata": {"annotations": {"kopf.loopline.dev/last-handled-configuration": "{}"}}}
    assert _patch(install, install.operator, MODEL, body) == 200
    assert (
        _patch(install, install.operator, MODEL, {"status": {"phase": "Pending"}}, status=True)
        == 200
    )


@pytest.fixture(scope="module")
def seldon_crds(cluster: ClusterHandle) -> list[str]:
    """Seldon's CRDs are served, so a 403 on its objects is RBAC and not a missing API."""
    return cluster.install_crds(SELDON_CRDS)


@pytest.mark.usefixtures("seldon_crds")
def test_operator_may_not_reach_beyond_its_need(install: Install) -> None:
    ns = install.namespace
    core = k8s.CoreV1Api
    calls: dict[str, Callable[[k8s.ApiClient], object]] = {
        "list secrets": lambda api: core(api).list_namespaced_secret(ns),
        "read a secret": lambda api: core(api).read_namespaced_secret("mlflow", ns),
        # It lists, creates, patches and deletes ConfigMaps (the Models' history ledgers), but
        # never reads one by name or replaces one.
        "read the operator's config": lambda api: core(api).read_namespaced_config_map(
            f"{RELEASE}-loopline-config", ns
        ),
        "replace the operator's config": lambda api: core(api).replace_namespaced_config_map(
            f"{RELEASE}-loopline-config",
            ns,
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}},
        ),
        "create a pod": lambda api: core(api).create_namespaced_pod(
            ns,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "x"},
                "spec": {"containers": [{"name": "x", "image": "x"}]},
            },
        ),
        "delete a Model": lambda api: k8s.CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, ns, "models", OTHER_MODEL
        ),
        "list Seldon Models (Seldon is off)": lambda api: k8s.CustomObjectsApi(
            api
        ).list_namespaced_custom_object("mlops.seldon.io", "v1alpha1", ns, "models"),
        "create a Seldon Server (Seldon is off)": lambda api: k8s.CustomObjectsApi(
            api
        ).create_namespaced_custom_object(
            "mlops.seldon.io",
            "v1alpha1",
            ns,
            "servers",
            {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Server", "metadata": {"name": "x"}},
        ),
        "grant itself a Role": lambda api: k8s.RbacAuthorizationV1Api(api).create_namespaced_role(
            ns,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "x"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
            },
        ),
        "delete the monitor's admission policy": lambda api: k8s.AdmissionregistrationV1Api(
            api
        ).delete_validating_admission_policy_binding(f"{RELEASE}-loopline-monitor-retrain-only"),
        # It may bind the monitors' ClusterRole (it holds that role's one permission), and
        # nothing it does not hold itself: RBAC's escalation check.
        "bind `edit` to a monitor": lambda api: k8s.RbacAuthorizationV1Api(
            api
        ).create_namespaced_role_binding(ns, _binding_to("edit")),
        "bind `cluster-admin` to a monitor": lambda api: k8s.RbacAuthorizationV1Api(
            api
        ).create_namespaced_role_binding(ns, _binding_to("cluster-admin")),
        "mint a monitor's token": lambda api: core(api).create_namespaced_service_account_token(
            account_name(MODEL), ns, {"spec": {"audiences": ["https://kubernetes.default.svc"]}}
        ),
    }
    got = {what: _call(install, install.operator, call) for what, call in calls.items()}
    assert got == dict.fromkeys(calls, 403)


def _binding_to(cluster_role: str) -> dict[str, Any]:
    binding = build_role_binding("ignored", MODEL, cluster_role)
    binding["metadata"] = {"name": f"escalate-{cluster_role}"}
    return binding


# ---- the plain-manifest install --------------------------------------------------------


@pytest.fixture
def plain_policy(cluster: ClusterHandle, loopline_crds: list[str]) -> Iterator[Install]:
    """manifests/policies as a plain-manifest install applies it (the monitors' ClusterRole,
    the policy and its binding), and the identity the operator gives Model drill-ae's monitor
    in `default`."""
    files = sorted((helm_chart.REPO_ROOT / "manifests" / "policies").glob("*.yaml"))
    admin = cluster.api_client()
    custom = k8s.CustomObjectsApi(admin)
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", "models", _model(MODEL))
    for path in files:
        done = _kubectl(cluster, "apply", "-f", str(path))
        assert done.returncode == 0, done.stderr
    identity = [
        build_service_account("default", MODEL),
        build_role_binding("default", MODEL, "loopline-monitor"),
    ]
    for obj in identity:
        KubeObjects(admin).apply(obj)
    handle = Install(
        "default",
        operator="",
        monitor=f"system:serviceaccount:default:{account_name(MODEL)}",
        objects=[],
        cluster=cluster,
    )

    def policy_in_force() -> bool:
        probe = {"metadata": {"annotations": {"example.com/probe": uuid.uuid4().hex}}}
        status, body = _patch_answer(handle, handle.monitor, MODEL, probe)
        return status == 403 and POLICY_DENIAL in body

    wait_for(policy_in_force, timeout=60, what="the plain-manifest policy to deny a patch")
    try:
        yield handle
    finally:
        objects = KubeObjects(admin)
        for obj in identity:
            objects.delete(obj["apiVersion"], obj["kind"], "default", obj["metadata"]["name"])
        for path in reversed(files):
            _kubectl(cluster, "delete", "--ignore-not-found", "-f", str(path))
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, "default", "models", MODEL, {"metadata": {"finalizers": None}}
        )
        custom.delete_namespaced_custom_object(GROUP, VERSION, "default", "models", MODEL)
        admin.close()


def test_plain_manifest_policy_limits_the_models_monitor(plain_policy: Install) -> None:
    monitor = plain_policy.monitor
    assert _patch(plain_policy, monitor, MODEL, _retrain("plain-1")) == 200
    status, answer = _patch_answer(
        plain_policy, monitor, MODEL, {"spec": {"validation": {"minimums": {"f1": 0.0}}}}
    )
    assert status == 403
    assert POLICY_DENIAL in answer
    assert _admin_model(plain_policy)["spec"]["validation"]["minimums"] == {"f1": 0.6}
