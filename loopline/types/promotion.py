"""How a Model's challenger becomes its canary: at once, or after a person approves it."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from loopline.types.common import Spec


class Approval(StrEnum):
    NONE = "None"
    REQUIRED = "Required"


class ApprovalTimeoutAction(StrEnum):
    REJECT = "Reject"
    WAIT = "Wait"


class PromotionSpec(Spec):
    """Who lets a challenger that passed the gate start its canary: the operator at once
    (approval None), or a person with the approver role (a ModelApproval object)."""

    approval: Approval = Field(
        default=Approval.NONE,
        description="Required: a challenger waits in phase AwaitingApproval until a "
        "ModelApproval approves or rejects its version.",
    )
    approval_timeout_seconds: int | None = Field(
        default=None,
        alias="approvalTimeoutSeconds",
        ge=1,
        le=90 * 86400,
        description="How long a challenger may wait for a decision; unset: no limit.",
    )
    on_timeout: ApprovalTimeoutAction = Field(
        default=ApprovalTimeoutAction.REJECT,
        alias="onTimeout",
        description="Reject: the challenger is rejected when the timeout passes; Wait: the "
        "timeout is recorded and the challenger keeps waiting.",
    )
