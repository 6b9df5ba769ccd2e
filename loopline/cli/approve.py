"""`loopline approve|reject ns/model --version N --reason ...`: a person's decision on a
challenger waiting for approval, as a ModelApproval object.

The approver's name is the API server's: it is asked who the kubeconfig's credentials are
(SelfSubjectReview), and the admission policy refuses an approval whose `spec.approver` is not
the user creating it, so the name cannot be typed in.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import click
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from loopline import kube
from loopline.cli.history import split_ref
from loopline.types.common import API_VERSION, GROUP, VERSION
from loopline.types.history import MODEL_LABEL, ApprovalDecision, ModelApprovalSpec


def whoami(api: k8s.ApiClient) -> str:
    """The authenticated user of `api`'s credentials, as the API server sees them."""
    review = k8s.AuthenticationV1Api(api).create_self_subject_review(
        k8s.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
    )
    return str(review.status.user_info.username)


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return f"{exc.status} {exc.reason}"


def build_approval(
    model: str, version: str, decision: ApprovalDecision, reason: str, approver: str
) -> dict[str, Any]:
    spec = ModelApprovalSpec(
        model=model, version=version, decision=decision, reason=reason, approver=approver
    )
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelApproval",
        "metadata": {
            # One object per decision; a name that says what it is, unique per attempt.
            "name": f"{model}-v{version}-{decision.value.lower()}-{uuid.uuid4().hex[:6]}",
            "labels": {MODEL_LABEL: model},
        },
        "spec": spec.model_dump(mode="json", by_alias=True),
    }


def decide(
    ref: str, version: str, reason: str, decision: ApprovalDecision, kubeconfig: Path | None
) -> str:
    namespace, name = split_ref(ref)
    api = kube.api_client(kubeconfig)
    try:
        try:
            user = whoami(api)
            body = build_approval(name, version, decision, reason, user)
            k8s.CustomObjectsApi(api).create_namespaced_custom_object(
                GROUP, VERSION, namespace, "modelapprovals", body
            )
        except ApiException as exc:
            said = _message(exc)
            if exc.status == 403:
                raise click.ClickException(
                    f"the API server refused: {said}; approving needs the loopline-approver "
                    "role in the Model's namespace (docs/history.md)"
                ) from exc
            raise click.ClickException(f"cannot record the decision: {said}") from exc
    finally:
        api.close()
    return f"{decision.value.lower()} version {version} of {namespace}/{name} as {user}"


def _options(func: Any) -> Any:
    func = click.option("--kubeconfig", type=click.Path(path_type=Path), envvar="KUBECONFIG")(func)
    func = click.option("--reason", required=True, help="Why: kept in the Model's history.")(func)
    func = click.option(
        "--version", required=True, help="The challenger version waiting for approval."
    )(func)
    return click.argument("ref", metavar="NAMESPACE/MODEL")(func)


@click.command()
@_options
def approve(ref: str, version: str, reason: str, kubeconfig: Path | None) -> None:
    """Let a challenger that passed the gate start its canary."""
    click.echo(decide(ref, version, reason, ApprovalDecision.APPROVED, kubeconfig))


@click.command()
@_options
def reject(ref: str, version: str, reason: str, kubeconfig: Path | None) -> None:
    """Refuse a challenger: the champion keeps serving."""
    click.echo(decide(ref, version, reason, ApprovalDecision.REJECTED, kubeconfig))
