"""`loopline approve|reject ns/model --version N --reason ...`: a person's decision about a
challenger that awaits approval, made as a ModelApproval in the caller's own name.

The name comes from the API server (a SelfSubjectReview: who the server says the caller is),
and the server checks it again when the ModelApproval is created, so no one can decide in
another's name whatever this command is told. Creating it needs the approver Role
(`create` on modelapprovals); nothing here writes the Model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from loopline.cli.history import split_ref
from loopline.types.approval import MODEL_LABEL, ApprovalState, Verdict
from loopline.types.common import GROUP, VERSION

PLURAL = "modelapprovals"


def awaiting_problem(model: Mapping[str, Any], version: str) -> str | None:
    """Why `version` of this Model object cannot be decided now, or None when it can."""
    meta = model.get("metadata") or {}
    ref = f"{meta.get('namespace')}/{meta.get('name')}"
    status = model.get("status") or {}
    approval = status.get("approval") or {}
    if approval.get("state") != ApprovalState.PENDING.value:
        phase = status.get("phase") or "Pending"
        last = (
            f"; the last request, for version {approval.get('version')}, is {approval.get('state')}"
            if approval
            else ""
        )
        return f"nothing of {ref} awaits approval (phase {phase}{last})"
    if str(approval.get("version")) != version:
        return (
            f"version {version} of {ref} does not await approval; version "
            f"{approval.get('version')} does (its evidence: kubectl get models.{GROUP} "
            f"{meta.get('name')} -n {meta.get('namespace')} -o jsonpath='{{.status.approval}}')"
        )
    return None


def build_approval(
    model: Mapping[str, Any], version: str, decision: Verdict, reason: str, user: str
) -> dict[str, Any]:
    """The ModelApproval answering the Model's pending request, in `user`'s name. Owned by the
    Model, so it goes with it (the decision stays in the Model's history ledger)."""
    meta = model["metadata"]
    request = model["status"]["approval"]["request"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelApproval",
        "metadata": {
            "generateName": f"{meta['name'][:40]}-v{version}-",
            "namespace": meta["namespace"],
            "labels": {MODEL_LABEL: meta["name"]},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "Model",
                    "name": meta["name"],
                    "uid": meta["uid"],
                }
            ],
        },
        "spec": {
            "model": meta["name"],
            "version": version,
            "request": request,
            "decision": decision.value,
            "reason": reason,
            "approver": user,
        },
    }


def _decide(
    decision: Verdict, model: str, version: str, reason: str, wait: float, kubeconfig: Path | None
) -> None:
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    from loopline.kube import api_client

    namespace, name = split_ref(model)
    with api_client(kubeconfig) as api:
        custom = k8s.CustomObjectsApi(api)
        try:
            review = k8s.AuthenticationV1Api(api).create_self_subject_review(
                {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
            )
            user = review.status.user_info.username
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "models", name)
        except ApiException as exc:
            raise click.ClickException(
                f"cannot read {namespace}/{name}: {exc.status} {exc.reason}"
                + (" (no such Model)" if exc.status == 404 else "")
            ) from exc
        problem = awaiting_problem(obj, version)
        if problem:
            raise click.ClickException(problem)
        body = build_approval(obj, version, decision, reason, user)
        try:
            made = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        except ApiException as exc:
            hint = ""
            if exc.status == 403:
                hint = (
                    f" (deciding needs create on {PLURAL}.{GROUP} in {namespace}: ask for a "
                    "RoleBinding to the loopline-approver ClusterRole)"
                )
            raise click.ClickException(
                f"{user} may not {decision.value.lower()} {namespace}/{name}: {exc.status} "
                f"{_message(exc)}{hint}"
            ) from exc
        made_name = made["metadata"]["name"]
        click.echo(
            f"{decision.value.lower()}: version {version} of {namespace}/{name} by {user} "
            f"(modelapproval {made_name})"
        )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            got = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, made_name)
            status = got.get("status") or {}
            if status.get("message"):
                applied = "applied" if status.get("applied") else "not applied"
                click.echo(f"{applied}: {status['message']}")
                return
            time.sleep(0.5)
        if wait:
            click.echo(f"not applied yet after {wait:g} s: is the operator running?")


def _message(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)


def _command(decision: Verdict) -> click.Command:
    verb = decision.value.lower()

    @click.command(name=verb)
    @click.argument("model")
    @click.option("--version", "version", required=True, help="The version awaiting approval.")
    @click.option("--reason", default="", help="Why (kept in the Model's history).")
    @click.option(
        "--wait",
        type=float,
        default=30.0,
        show_default=True,
        help="Seconds to wait for the operator to apply it (0: do not wait).",
    )
    @click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        envvar="KUBECONFIG",
        help="Kubeconfig (default: in-cluster, then ~/.kube/config).",
    )
    def command(
        model: str, version: str, reason: str, wait: float, kubeconfig: Path | None
    ) -> None:
        _decide(decision, model, version.strip(), reason, max(0.0, wait), kubeconfig)

    command.help = (
        f"{decision.value} the challenger of MODEL (NAMESPACE/NAME) that awaits approval, in "
        "your own name as the API server knows it."
    )
    return command


approve = _command(Verdict.APPROVE)
reject = _command(Verdict.REJECT)
