"""Human approval of a new champion: the Model's promotion policy, the ModelApproval resource
a person creates to decide, and the status block that says what waits for whom.

An approval is its own resource rather than an edit of the Model, so the permission to approve
(`create` on modelapprovals, the approver Role) is separate from the permission to change what
a Model is (`patch` on models): RBAC cannot narrow a patch to a few fields. Who approved comes
from the API server: `spec.approver` must equal the authenticated user of the create request
(a ValidatingAdmissionPolicy, manifests/policies/model-approval.yaml), and the spec is
immutable, so the object is the record of a person's decision.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum

from pydantic import ConfigDict, Field
from pydantic.config import JsonDict

from loopline.types.common import Spec
from loopline.types.pipeline import NAME_PATTERN

MODEL_LABEL = "loopline.dev/model"  # on each ModelApproval: the Model it decides about
DEFAULT_APPROVAL_TIMEOUT_SECONDS = 7 * 86400


class ApprovalMode(StrEnum):
    NOT_REQUIRED = "NotRequired"
    REQUIRED = "Required"


class TimeoutAction(StrEnum):
    """What happens to a challenger nobody decided on in time."""

    KEEP_WAITING = "KeepWaiting"  # it stays AwaitingApproval; the Model reports it overdue
    REJECT = "Reject"  # it is dropped; the champion keeps serving


class PromotionSpec(Spec):
    """How a challenger that passed the gate becomes the champion."""

    approval: ApprovalMode = Field(
        default=ApprovalMode.NOT_REQUIRED,
        description="Required: a challenger that passed the gate waits in phase "
        "AwaitingApproval until a person approves or rejects it (a ModelApproval, or "
        "`loopline approve|reject`).",
    )
    approval_timeout_seconds: int = Field(
        default=DEFAULT_APPROVAL_TIMEOUT_SECONDS,
        alias="approvalTimeoutSeconds",
        ge=60,
        le=90 * 86400,
        description="How long a challenger waits for a decision before onTimeout applies.",
    )
    on_timeout: TimeoutAction = Field(
        default=TimeoutAction.KEEP_WAITING,
        alias="onTimeout",
        description="KeepWaiting: stay AwaitingApproval, reported overdue. Reject: drop the "
        "challenger and keep the champion.",
    )


class Verdict(StrEnum):
    APPROVE = "Approve"
    REJECT = "Reject"


IMMUTABLE_APPROVAL: list[JsonDict] = [
    {
        "rule": "self == oldSelf",
        "message": "a ModelApproval is a record and cannot be changed; create a new one",
        "reason": "FieldValueForbidden",
    }
]


class ModelApprovalSpec(Spec):
    """One person's decision about one challenger (a version awaiting approval)."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": list(IMMUTABLE_APPROVAL)}
    )

    model: str = Field(
        min_length=1, max_length=253, pattern=NAME_PATTERN, description="The Model's name."
    )
    version: str = Field(
        min_length=1, max_length=64, pattern=r"^[0-9]+$", description="The challenger's version."
    )
    request: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9]+$",
        description="The Model's status.approval.request: which request this answers (a "
        "newer challenger is a new request, so an approval cannot outlive its evidence).",
    )
    decision: Verdict
    reason: str = Field(default="", max_length=1024, description="Why, in the approver's words.")
    approver: str = Field(
        min_length=1,
        max_length=512,
        description="The authenticated user creating this object (the API server refuses any "
        "other name).",
    )


class ModelApprovalStatus(Spec):
    """Set by the operator when it took the decision into account."""

    applied: bool = False
    message: str = ""


class ApprovalState(StrEnum):
    PENDING = "Pending"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    EXPIRED = "Expired"  # a newer challenger took its place before anyone decided
    TIMED_OUT = "TimedOut"  # onTimeout: Reject applied
    WAIVED = "Waived"  # spec.promotion.approval changed to NotRequired while it waited


class ApprovalStatus(Spec):
    """The Model's current (or last) request for a person's decision."""

    version: str
    request: str = Field(description="The id a ModelApproval must name in spec.request.")
    state: ApprovalState
    requested_at: datetime = Field(alias="requestedAt")
    champion: str | None = Field(default=None, description="The version serving when asked.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="The challenger's gate metrics (the evidence)."
    )
    champion_metrics: dict[str, float] = Field(default_factory=dict, alias="championMetrics")
    decided_by: str | None = Field(default=None, alias="decidedBy")
    decided_at: datetime | None = Field(default=None, alias="decidedAt")
    reason: str = ""
    approval: str | None = Field(default=None, description="The ModelApproval that decided.")


def request_id(uid: str, version: str, requested_at: datetime) -> str:
    """A request id unique to this Model object, version and moment (so re-training the
    same version number after a Model was recreated is a new request)."""
    raw = f"{uid}/{version}/{requested_at.isoformat()}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]
