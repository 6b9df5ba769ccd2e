"""One production decision about a Model, as its history ledger keeps it.

A decision is what happened (`kind`, e.g. TrainingStarted, ChallengerRejected, CanaryStep,
Promoted, CanaryAborted, SpecChanged, Deleted), when, who made it (`actor`: the operator, the
drift monitor, or a Kubernetes user), on what evidence (a small JSON object: drift p-values,
gate metrics of both versions, canary readings), and what was serving right after it
(`serving`). Keeping the serving state on every decision is what lets `loopline history --at`
answer "what was serving then, and why" from the last decision before that moment alone.

See docs/history.md for where decisions are stored and how growth is bounded.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

OPERATOR = "loopline-operator"
MONITOR = "loopline-monitor"
# One stored decision is at most this many bytes of JSON; longer messages and evidence are
# cut (a ConfigMap holds 1 MiB, and a chunk holds many decisions).
MAX_DECISION_BYTES = 2048


class ServingState(BaseModel):
    """What served the Model's traffic right after a decision."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    champion: str | None = None
    canary: str | None = None
    weight: int = Field(default=0, ge=0, le=100, description="The canary's share of traffic, %.")


class Decision(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    at: datetime
    kind: str
    actor: str
    message: str = ""
    version: str | None = Field(default=None, description="The model version it is about.")
    generation: int | None = None
    uid: str | None = Field(default=None, description="The Model object's uid then.")
    evidence: dict[str, Any] = Field(default_factory=dict)
    serving: ServingState | None = None

    def to_json(self) -> str:
        """Compact JSON, cut to MAX_DECISION_BYTES (evidence first, then the message)."""
        doc = self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        doc["at"] = self.at.isoformat()
        doc["kind"], doc["actor"] = self.kind, self.actor
        text = _dumps(doc)
        if len(text.encode()) > MAX_DECISION_BYTES and doc.get("evidence"):
            doc["evidence"] = {"truncated": True}
            text = _dumps(doc)
        if len(text.encode()) > MAX_DECISION_BYTES:
            over = len(text.encode()) - MAX_DECISION_BYTES
            doc["message"] = doc.get("message", "")[
                : max(0, len(doc.get("message", "")) - over - 8)
            ]
            text = _dumps(doc)
        return text


def _dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
