"""What the drift monitor and the operator say to each other, typed once for both sides.

Two messages cross that boundary: the retraining request the monitor annotates on its Model
(`RETRAIN_ANNOTATION` holds the request id, `RETRAIN_REASON_ANNOTATION` a `RetrainReason` as
compact JSON), and the monitor's `GET /v1/status` body (`MonitorStatus`), which the operator
reads for the Model's `Drifted` condition and `status.drift`. The monitor writes them with these
models and the operator reads them with the same ones, so a renamed field fails a type check
instead of silently reading as "no drift".
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loopline.types.common import Trigger


class RetrainReason(BaseModel):
    """Why a retraining was requested (the reason annotation). Hand-written requests may say
    less, or more: unknown keys are kept, missing ones default."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    trigger: Trigger = Trigger.MANUAL
    features: list[str] = Field(default_factory=list)
    p_values: dict[str, float] = Field(default_factory=dict, alias="pValues")
    window_end: str | None = Field(default=None, alias="windowEnd")
    # When the drift began (ISO, UTC): a drift run trains from here, not on the weeks before.
    drift_start: str | None = Field(default=None, alias="driftStart")

    def to_json(self) -> str:
        doc = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, raw: str) -> RetrainReason | None:
        """The reason in `raw`, or None when it is not a JSON object this model can read
        (the request still counts; its reason is kept verbatim in status)."""
        try:
            doc = json.loads(raw) if raw else {}
            return cls.model_validate(doc) if isinstance(doc, dict) else None
        except (ValueError, ValidationError):
            return None


class MonitorReference(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    rows: int
    source: str


class MonitorWindow(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    size: int
    step: int
    rows: int
    since_test: int = Field(alias="sinceTest")
    rows_seen: int = Field(alias="rowsSeen")


class MonitorStatus(BaseModel):
    """The drift monitor's `GET /v1/status` body."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    model: str
    namespace: str
    detector: str
    p_value: float = Field(alias="pValue")
    correction: str
    reference: MonitorReference | None = None
    features: list[str] = Field(default_factory=list)
    window: MonitorWindow
    queue_rows: int = Field(alias="queueRows")
    received: int
    dropped: int
    anomaly_rate: float | None = Field(default=None, alias="anomalyRate")
    decision: str
    windows_tested: int = Field(alias="windowsTested")
    drifted_windows: int = Field(alias="driftedWindows")
    consecutive: int
    consecutive_required: int = Field(alias="consecutiveRequired")
    stable_consecutive: int = Field(default=0, alias="stableConsecutive")
    drift_confirmed: bool = Field(
        default=False,
        alias="driftConfirmed",
        description="K windows in a row drifted and none stable since: the Model's Drifted.",
    )
    retrain_on_drift: bool = Field(alias="retrainOnDrift")
    cooldown_remaining_seconds: float = Field(alias="cooldownRemainingSeconds")
    cooldown_until: str | None = Field(default=None, alias="cooldownUntil")  # ISO, UTC
    requests: int
    last_request: dict[str, Any] | None = Field(default=None, alias="lastRequest")
    pending_request: dict[str, Any] | None = Field(default=None, alias="pendingRequest")
    last_p_values: dict[str, float] = Field(default_factory=dict, alias="lastPValues")
    last_statistics: dict[str, float] = Field(default_factory=dict, alias="lastStatistics")
    last_drifted: list[str] = Field(default_factory=list, alias="lastDrifted")
    last_window_end: str | None = Field(default=None, alias="lastWindowEnd")  # ISO, UTC
    last_error: str | None = Field(default=None, alias="lastError")
    idle: bool

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)
