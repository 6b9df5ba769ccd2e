"""A Model's history and human approval against the real API server.

The operator runs in-process with the `kubernetes` serving backend (kwok runs the pods, so a
canary holds each step on time alone, as in test_serving_kubernetes_operator.py) and the test
worker of tests/fixtures/operator.py as trainer (it registers a version without artifacts:
what is tested is the bookkeeping, not training). People are client-certificate users signed
by the cluster's CA: `alice` holds the approver role (manifests/rbac/approver.yaml) through a
RoleBinding, `mallory` holds nothing; the approval identity policy
(manifests/policies/model-approval-identity.yaml) is in force. `loopline approve|reject` and
`loopline history` run as the CLI does, with those users' kubeconfigs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from loopline.cli.main import cli
from loopline.cluster import kubeconfig, pki
from loopline.cluster.versions import REPO_ROOT
from loopline.types.common import GROUP, RETRAIN_ANNOTATION, VERSION
from tests.fixtures.cluster import ClusterHandle, wait_for
from tests.fixtures.operator import PIPELINE, OperatorHarness, model_manifest

POLICY = REPO_ROOT / "manifests" / "policies" / "model-approval-identity.yaml"
BINDING = REPO_ROOT / "manifests" / "policies" / "model-approval-binding.yaml"
APPROVER = REPO_ROOT / "manifests" / "rbac" / "approver.yaml"


def _kubectl(cluster: ClusterHandle, *args: str) -> None:
    done = cluster.kubectl(*args, check=False)
    assert done.returncode == 0, done.stderr


def _user_kubeconfig(cluster: ClusterHandle, user: str, directory: Path) -> Path:
    """A kubeconfig authenticating as `user` by a client certificate of the cluster's CA."""
    layout = cluster.local.layout
    ca = layout.ca_cert.read_bytes()
    cert, key = pki.issue(ca, layout.ca_key.read_bytes(), user)
    path = directory / f"{user}.kubeconfig"
    path.write_text(
        yaml.safe_dump(kubeconfig.cert_kubeconfig(cluster.server, ca, cert, key, user=user))
    )
    return path


@pytest.fixture(scope="module")
def approval_policy(cluster: ClusterHandle, loopline_crds: list[str]) -> Iterator[None]:
    for path in (APPROVER, POLICY, BINDING):
        _kubectl(cluster, "apply", "-f", str(path))
    try:
        yield
    finally:
        for path in (BINDING, POLICY, APPROVER):
            cluster.kubectl("delete", "--ignore-not-found", "-f", str(path), check=False)


def _approval(name: str, approver: str, version: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelApproval",
        "metadata": {"name": name},
        "spec": {
            "model": "drill-ae",
            "version": version,
            "decision": "Approved",
            "reason": "probe",
            "approver": approver,
        },
    }


@pytest.fixture
def people(
    cluster: ClusterHandle, namespace: str, approval_policy: None, tmp_path: Path
) -> dict[str, Path]:
    """alice (approver role in the namespace) and mallory (nothing), with the policy in force
    (an approval naming someone else is refused)."""
    _kubectl(
        cluster,
        "create",
        "rolebinding",
        "approvers",
        "-n",
        namespace,
        "--clusterrole=loopline-approver",
        "--user=alice",
    )
    users = {user: _user_kubeconfig(cluster, user, tmp_path) for user in ("alice", "mallory")}
    # The probe names another user: once the policy is loaded it is refused.
    alice = k8s_config.new_client_from_config(config_file=str(users["alice"]))
    api = k8s.CustomObjectsApi(alice)

    def refused() -> bool:
        try:
            api.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "modelapprovals", _approval(uuid.uuid4().hex, "bob")
            )
        except ApiException as exc:
            return exc.status == 403 and "ValidatingAdmissionPolicy" in str(exc.body)
        return False

    try:
        wait_for(refused, timeout=60, what="the approval identity policy to be in force")
    finally:
        alice.close()
    return users


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _history(h: OperatorHarness, *args: str) -> Any:
    ref = f"{h.namespace}/drill-ae"
    out = _run("history", ref, "-o", "json", "--kubeconfig", str(h.cluster.kubeconfig), *args)
    return json.loads(out)


def _kinds(h: OperatorHarness) -> list[tuple[str, str | None, str]]:
    return [(d["kind"], d.get("version"), d["actor"].get("name", "")) for d in _history(h)]


def _wait_awaiting(h: OperatorHarness, version: str) -> dict[str, Any]:
    return wait_for(
        lambda: (
            h.status("drill-ae")
            if (h.status("drill-ae").get("approval") or {}).get("version") == version
            and h.status("drill-ae").get("phase") == "AwaitingApproval"
            else None
        ),
        timeout=90,
        what=f"version {version} waiting for approval (now {h.status('drill-ae').get('phase')})",
    )


def _champion(h: OperatorHarness) -> str | None:
    return (h.status("drill-ae").get("champion") or {}).get("version")


def _decide(h: OperatorHarness, user: Path, verb: str, version: str, reason: str) -> Any:
    return CliRunner().invoke(
        cli,
        [
            verb,
            f"{h.namespace}/drill-ae",
            "--version",
            version,
            "--reason",
            reason,
            "--kubeconfig",
            str(user),
        ],
        catch_exceptions=False,
    )


def test_approval_history_and_serving_at(
    operator_harness: OperatorHarness,
    people: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = operator_harness
    monkeypatch.setenv("LOOPLINE_OPERATOR_SERVING_BACKEND", "kubernetes")
    monkeypatch.setenv("LOOPLINE_OPERATOR_RUNTIME_IMAGE", "loopline/runtime:test")
    monkeypatch.setenv("LOOPLINE_OPERATOR_IMAGE_PULL_POLICY", "Never")
    monkeypatch.setenv("LOOPLINE_OPERATOR_MONITORING_BACKEND", "local")
    h.create(PIPELINE)
    h.create(
        model_manifest(
            serving={"replicas": 1, "canary": {"steps": [50, 100], "stepSeconds": 4}},
            monitoring={"enabled": False},
            promotion={"approval": "Required"},
        )
    )
    with h.running():
        # The first version waits too: nothing serves until someone approves it.
        status = _wait_awaiting(h, "1")
        assert status["approval"]["metrics"] == {"f1": 0.9}
        assert _champion(h) is None
        # A user without the approver role is refused by RBAC.
        denied = _decide(h, people["mallory"], "approve", "1", "looks fine")
        assert denied.exit_code != 0
        assert "loopline-approver" in denied.output
        assert "forbidden" in denied.output.lower()
        done = _decide(h, people["alice"], "approve", "1", "first model, reviewed")
        assert done.exit_code == 0, done.output
        assert "as alice" in done.output
        wait_for(lambda: _champion(h) == "1", timeout=60, what="version 1 champion")
        h.wait_phase("drill-ae", "Serving", timeout=60)

        # Version 2: waits, then alice approves and its canary walks 50% -> 100% -> champion.
        h.patch("models", "drill-ae", {"metadata": {"annotations": {RETRAIN_ANNOTATION: "r-2"}}})
        _wait_awaiting(h, "2")
        before = datetime.now(UTC)
        assert _champion(h) == "1"
        assert _decide(h, people["alice"], "approve", "2", "better f1").exit_code == 0
        wait_for(
            lambda: (h.status("drill-ae").get("rollout") or {}).get("weight") == 50,
            timeout=60,
            what="version 2 canary at 50%",
        )
        during = datetime.now(UTC)
        wait_for(lambda: _champion(h) == "2", timeout=60, what="version 2 promoted")
        after = datetime.now(UTC)

        # Version 3: alice rejects it; version 2 keeps serving.
        h.patch("models", "drill-ae", {"metadata": {"annotations": {RETRAIN_ANNOTATION: "r-3"}}})
        _wait_awaiting(h, "3")
        assert _decide(h, people["alice"], "reject", "3", "drifted sensor").exit_code == 0
        status = h.wait_phase("drill-ae", "Serving", timeout=60)
        assert status["champion"]["version"] == "2"
        assert "approval" not in status
        assert status["runs"][0]["rolloutResult"]["outcome"] == "Rejected"

    kinds = _kinds(h)
    assert ("Approved", "1", "alice") in kinds
    assert ("Approved", "2", "alice") in kinds
    assert ("Rejected", "3", "alice") in kinds
    assert [k for k, v, _ in kinds if v == "2"] == [
        "RunFinished",
        "GateDecided",
        "AwaitingApproval",
        "Approved",
        "CanaryStep",
        "CanaryStep",
        "Promoted",
    ]
    assert kinds[0][0] == "SpecChanged"

    def at(when: datetime) -> dict[str, Any]:
        answer: dict[str, Any] = _history(h, "--at", when.isoformat())
        return answer

    assert (at(before)["champion"], at(before)["canary"]) == ("1", None)
    assert at(during)["champion"] == "1"
    assert at(during)["canary"]["version"] == "2"
    assert at(during)["canary"]["weight"] == 50
    assert at(after)["champion"] == "2"
    assert at(after)["canary"] is None
    why = [d["kind"] for d in at(after)["because"]]
    assert why == ["GateDecided", "Approved"]
    assert at(after)["promoted"]["evidence"]["previousChampion"] == "1"

    # Events gone and the operator restarted: the history is all there, and grows on.
    core = k8s.CoreV1Api(h.api)
    core.delete_collection_namespaced_event(h.namespace)
    wait_for(
        lambda: not core.list_namespaced_event(h.namespace).items,
        timeout=30,
        what="the namespace's Events to be deleted",
    )
    recorded = _history(h)
    with h.running():
        h.patch("models", "drill-ae", {"spec": {"serving": {"canary": {"stepSeconds": 5}}}})
        wait_for(
            lambda: _history(h)[-1]["kind"] == "SpecChanged",
            timeout=60,
            what="the spec change recorded after the restart",
        )
    now = _history(h)
    assert now[: len(recorded)] == recorded
    assert now[-1]["generation"] == 2
    assert now[-1]["actor"]["detail"].startswith("field manager")
    assert at(during)["canary"]["weight"] == 50
    text = _run(
        "history",
        f"{h.namespace}/drill-ae",
        "--at",
        during.isoformat(),
        "--kubeconfig",
        str(h.cluster.kubeconfig),
    )
    assert "version 1 was champion, version 2 a canary at 50%" in text


def test_approvals_name_their_creator_and_cannot_change(
    cluster: ClusterHandle, namespace: str, people: dict[str, Path]
) -> None:
    alice = k8s_config.new_client_from_config(config_file=str(people["alice"]))
    try:
        api = k8s.CustomObjectsApi(alice)
        created = api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "modelapprovals", _approval("mine", "alice")
        )
        assert created["spec"]["approver"] == "alice"
        with pytest.raises(ApiException) as refused:
            api.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "modelapprovals", _approval("theirs", "carol")
            )
        assert refused.value.status == 403
        assert "must be the user creating the approval (alice)" in str(refused.value.body)
        # No update verb for alice; and the cluster admin is stopped by the policy and CEL.
        admin_api = cluster.api_client()
        try:
            with pytest.raises(ApiException) as changed:
                k8s.CustomObjectsApi(admin_api).patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, "modelapprovals", "mine", {"spec": {"reason": "x"}}
                )
        finally:
            admin_api.close()
        assert changed.value.status in (403, 422)
    finally:
        alice.close()
