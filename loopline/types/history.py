"""The decision ledger of a Model and the approvals people give, as Kubernetes objects.

`ModelHistory` objects (`<model>-history-<n>`) hold a Model's decisions in order, up to
`CHUNK_ENTRIES` each: the operator appends to the newest and starts the next when it is full,
so one write is one small patch, and a cluster backup (etcd, Velero) takes the record with the
Model. They outlive Events (gone within the hour), operator restarts and the Model itself (no
owner reference: the last entry of a deleted Model says it was deleted).

`ModelApproval` objects are a person's decision on one challenger version. The API server
fills nothing in for us, so an admission policy (manifests/policies/model-approval-identity.yaml)
requires `spec.approver` to equal the authenticated user who creates the object and forbids
changing it afterwards: the name recorded is the API server's, not free text.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field

from loopline.types.common import Spec

CHUNK_ENTRIES = 200
MODEL_LABEL = "loopline.dev/model"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def chunk_name(model: str, index: int) -> str:
    return f"{model}-history-{index}"


class ActorKind(StrEnum):
    OPERATOR = "operator"
    MONITOR = "monitor"
    SCHEDULER = "scheduler"
    USER = "user"  # an authenticated Kubernetes user (or the field manager that wrote a spec)


class DecisionKind(StrEnum):
    SPEC_CHANGED = "SpecChanged"
    RETRAIN_REQUESTED = "RetrainRequested"
    RUN_STARTED = "RunStarted"
    RUN_FINISHED = "RunFinished"
    GATE_DECIDED = "GateDecided"
    AWAITING_APPROVAL = "AwaitingApproval"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    APPROVAL_EXPIRED = "ApprovalExpired"
    APPROVAL_TIMED_OUT = "ApprovalTimedOut"
    CANARY_STEP = "CanaryStep"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    ALIAS_RESTORED = "AliasRestored"
    DELETED = "Deleted"


class Actor(Spec):
    kind: ActorKind
    name: str = Field(default="", max_length=512)
    detail: str = Field(
        default="",
        max_length=256,
        description="How the name was learnt (e.g. the field manager and operation of a spec "
        "change: the API server does not keep who made it).",
    )


class Decision(Spec):
    """One entry of the ledger: what was decided, when, by whom, on what evidence."""

    at: datetime
    kind: DecisionKind
    actor: Actor
    version: str | None = Field(default=None, description="The model version it concerns.")
    generation: int | None = Field(default=None, ge=0)
    run_id: str | None = Field(default=None, alias="runId")
    weight: int | None = Field(
        default=None, ge=0, le=100, description="Canary weight after the decision."
    )
    outcome: str = Field(default="", max_length=128)
    message: str = Field(default="", max_length=4096)
    evidence: dict[str, Any] = Field(
        default_factory=dict,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="Metrics, p-values, windows, gate reports: what the decision rested on.",
    )


class ModelHistorySpec(Spec):
    model: str = Field(max_length=253, pattern=NAME_PATTERN)
    model_uid: str = Field(default="", alias="modelUid", max_length=64)
    chunk: int = Field(ge=0, description="Position of this object in the Model's ledger.")
    entries: list[Decision] = Field(default_factory=list, max_length=CHUNK_ENTRIES)


class ApprovalDecision(StrEnum):
    APPROVED = "Approved"
    REJECTED = "Rejected"


class ModelApprovalSpec(Spec):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self == oldSelf",
                    "message": "a ModelApproval cannot be changed; create a new one",
                    "reason": "FieldValueForbidden",
                }
            ]
        }
    )

    model: str = Field(max_length=253, pattern=NAME_PATTERN)
    version: str = Field(min_length=1, max_length=64, pattern=r"^[0-9]+$")
    decision: ApprovalDecision
    reason: str = Field(default="", max_length=2048)
    approver: str = Field(
        min_length=1,
        max_length=512,
        description="The authenticated user creating the object (checked by the API server).",
    )
