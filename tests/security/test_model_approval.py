"""Human approval against the real API server: who may decide, in whose name, and the
operator holding a challenger until a person decides.

People are ServiceAccounts of the test namespace with their own tokens (TokenRequest), so
the API server authenticates them as it would any user; `alice` is bound only to the approver
ClusterRole of manifests/rbac/approver.yaml, `mallory` may only read Models. The CRDs and the
approval admission policy are what the session cluster installs from manifests/ (as the chart
does). The operator is the in-process one of tests/fixtures/operator.py with its test worker
(made-up versions, `serving.replicas: 0`, so an approved version is promoted at once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from loopline.cli.approval import approve, reject
from loopline.history.ledger import Ledger
from loopline.types.common import GROUP, RETRAIN_ANNOTATION, VERSION
from loopline.wait import wait_for
from tests.fixtures.cluster import ClusterHandle
from tests.fixtures.operator import PIPELINE, OperatorHarness, model_manifest

APPROVER_ROLE = Path(__file__).resolve().parents[2] / "manifests" / "rbac" / "approver.yaml"
REQUIRED = {"approval": "Required", "approvalTimeoutSeconds": 3600}


@dataclass
class Person:
    name: str
    username: str
    kubeconfig: Path

    def api(self) -> k8s.ApiClient:
        return k8s_config.new_client_from_config(config_file=str(self.kubeconfig))

    def run(self, command: Any, *args: str) -> Any:
        return CliRunner().invoke(command, [*args, "--kubeconfig", str(self.kubeconfig)])


@dataclass
class People:
    alice: Person  # bound to the approver ClusterRole only
    mallory: Person  # may read Models, nothing more


def _person(
    cluster: ClusterHandle, core: k8s.CoreV1Api, namespace: str, name: str, tmp: Path
) -> Person:
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    token = core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority": str(cluster.ca_file),
                },
            }
        ],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "c", "user": name}}],
        "current-context": name,
    }
    path = tmp / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return Person(name, f"system:serviceaccount:{namespace}:{name}", path)


def _bind(rbac: k8s.RbacAuthorizationV1Api, namespace: str, who: str, kind: str, role: str) -> None:
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": f"{who}-{role}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": who, "namespace": namespace}],
        },
    )


@pytest.fixture
def people(
    cluster: ClusterHandle, kube_api: k8s.ApiClient, namespace: str, tmp_path: Path
) -> People:
    cluster.kubectl("apply", "-f", str(APPROVER_ROLE))
    core, rbac = k8s.CoreV1Api(kube_api), k8s.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "model-reader"},
            "rules": [
                {"apiGroups": [GROUP], "resources": ["models"], "verbs": ["get", "list", "watch"]}
            ],
        },
    )
    alice = _person(cluster, core, namespace, "alice", tmp_path)
    mallory = _person(cluster, core, namespace, "mallory", tmp_path)
    _bind(rbac, namespace, "alice", "ClusterRole", "loopline-approver")
    _bind(rbac, namespace, "mallory", "Role", "model-reader")
    return People(alice, mallory)


def _custom(api: k8s.ApiClient) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(api)


def _awaiting_model(kube_api: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    """A Model whose status says version 2 awaits approval, as the operator writes it."""
    custom = _custom(kube_api)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "models", model_manifest(promotion=REQUIRED)
    )
    status = {
        "phase": "AwaitingApproval",
        "approval": {
            "version": "2",
            "request": "0123456789abcdef",
            "state": "Pending",
            "requestedAt": "2026-03-02T03:00:00Z",
        },
    }
    return dict(
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "models", "drill-ae", {"status": status}
        )
    )


def _approval_body(namespace: str, approver: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelApproval",
        "metadata": {"generateName": "drill-ae-v2-", "namespace": namespace},
        "spec": {
            "model": "drill-ae",
            "version": "2",
            "request": "0123456789abcdef",
            "decision": "Approve",
            "approver": approver,
        },
    }


def test_only_an_approver_decides_and_only_in_their_own_name(
    people: People, kube_api: k8s.ApiClient, namespace: str
) -> None:
    _awaiting_model(kube_api, namespace)
    ref = f"{namespace}/drill-ae"

    done = people.alice.run(approve, ref, "--version", "2", "--reason", "checked", "--wait", "0")
    assert done.exit_code == 0, done.output
    made = _custom(kube_api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelapprovals"
    )["items"]
    assert [m["spec"]["approver"] for m in made] == [people.alice.username]
    assert made[0]["spec"]["request"] == "0123456789abcdef"

    refused = people.mallory.run(reject, ref, "--version", "2", "--wait", "0")
    assert refused.exit_code != 0
    assert "403" in refused.output
    assert "loopline-approver" in refused.output

    with people.alice.api() as api:
        alice = _custom(api)
        with pytest.raises(ApiException) as forged:  # the admission policy, not RBAC
            alice.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "modelapprovals", _approval_body(namespace, "bob")
            )
        assert forged.value.status == 403
        assert "spec.approver must be the user creating the approval" in forged.value.body
        with pytest.raises(ApiException) as edit:  # approving is not editing the Model
            alice.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "models", "drill-ae", {"spec": {"serving": {}}}
            )
        assert edit.value.status == 403
        with pytest.raises(ApiException) as rewrite:  # a decision stays as it was made
            alice.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                "modelapprovals",
                made[0]["metadata"]["name"],
                {"spec": {"decision": "Reject"}},
            )
        assert rewrite.value.status == 403

    with pytest.raises(ApiException) as admin_rewrite:  # not even by a cluster admin
        _custom(kube_api).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "modelapprovals",
            made[0]["metadata"]["name"],
            {"spec": {"decision": "Reject"}},
        )
    assert admin_rewrite.value.status in (403, 422)
    assert "cannot be changed" in admin_rewrite.value.body

    wrong = people.alice.run(approve, ref, "--version", "3", "--wait", "0")
    assert wrong.exit_code != 0
    assert "version 3 of" in wrong.output
    assert "version 2 does" in wrong.output


def _history(h: OperatorHarness) -> list[tuple[str, str, str | None]]:
    ledger = Ledger(k8s.CoreV1Api(h.api))
    return [(d.kind, d.actor, d.version) for d in ledger.read(h.namespace, "drill-ae")]


def test_the_operator_holds_a_challenger_until_an_approver_decides(
    operator_harness: OperatorHarness, people: People
) -> None:
    h = operator_harness
    ref = f"{h.namespace}/drill-ae"
    h.create(PIPELINE)
    h.create(model_manifest(promotion=REQUIRED))
    with h.running():
        waiting = h.wait_phase("drill-ae", "AwaitingApproval", timeout=60)
        assert waiting.get("champion") is None  # nothing serves unapproved
        version = waiting["approval"]["version"]

        done = people.alice.run(approve, ref, "--version", version, "--reason", "reviewed")
        assert done.exit_code == 0, done.output
        assert "applied: approved" in done.output
        served = h.wait_phase("drill-ae", "Serving", timeout=60)
        assert served["champion"]["version"] == version
        assert served["approval"]["decidedBy"] == people.alice.username
        assert ("Approved", people.alice.username, version) in _history(h)

        h.patch("models", "drill-ae", {"metadata": {"annotations": {RETRAIN_ANNOTATION: "r2"}}})

        def newer() -> dict[str, Any] | None:
            obj = h.get("drill-ae")
            approval = ((obj or {}).get("status") or {}).get("approval") or {}
            pending = approval.get("state") == "Pending" and approval.get("version") != version
            return obj if pending else None

        second = wait_for(newer, timeout=60, what="a second version awaiting approval")
        assert second["status"]["phase"] == "AwaitingApproval"
        assert second["status"]["champion"]["version"] == version  # the champion still serves
        challenger = second["status"]["approval"]["version"]

        no = people.alice.run(reject, ref, "--version", challenger, "--reason", "vibration")
        assert no.exit_code == 0, no.output
        assert "applied: rejected" in no.output

        def settled() -> dict[str, Any] | None:
            obj = h.get("drill-ae")
            status = (obj or {}).get("status") or {}
            return obj if status.get("phase") == "Serving" else None

        after = wait_for(settled, timeout=60, what="the champion serving after the rejection")
        assert after["status"]["champion"]["version"] == version
        assert f"version {challenger} not promoted: rejected by" in after["status"]["message"]
        kinds = _history(h)
        assert ("ApprovalRejected", people.alice.username, challenger) in kinds
        assert ("ApprovalRequested", "loopline-operator", challenger) in kinds
        assert not any(k == "Promoted" and v == challenger for k, _, v in kinds)
    events = json.dumps(h.events("drill-ae"))
    assert "ApprovalRejected" in events
