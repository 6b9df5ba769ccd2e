"""What to do after a window was tested: pure functions over a small, persisted state.

Drift must hold for K consecutive windows (one noisy window is not a recipe change). Then ONE
retraining request with its cause, and a cooldown: while it runs, drift that persists (the
retraining has not finished yet) raises nothing more. When a new champion is promoted the
reference changes and the monitor re-arms: the count starts over, the cooldown runs on.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from loopline.types.common import Trigger
from loopline.types.monitor import RetrainReason

from .detectors import DriftResult


class Decision(StrEnum):
    NONE = "none"  # nothing tested yet
    STABLE = "stable"  # the window did not drift
    SUSPECT = "suspect"  # drifted, fewer than K windows in a row
    REQUESTED = "retrain-requested"  # K in a row: a retraining request was raised
    COOLDOWN = "cooldown"  # drift persists, a request was raised recently
    REPORTED = "drift-reported"  # drift confirmed, retrainOnDrift is off
    REARMED = "rearmed"  # a new reference (champion) replaced the old one


# K windows in a row drifted: the drift is confirmed, whatever was done about it.
CONFIRMED = frozenset({Decision.REQUESTED, Decision.COOLDOWN, Decision.REPORTED})


@dataclass(frozen=True)
class Policy:
    consecutive_windows: int = 3
    cooldown_seconds: float = 3600.0
    retrain_on_drift: bool = True

    def __post_init__(self) -> None:
        if self.consecutive_windows < 1:
            raise ValueError(f"consecutive_windows must be >= 1, got {self.consecutive_windows}")
        if self.cooldown_seconds < 0:
            raise ValueError(f"cooldown_seconds must be >= 0, got {self.cooldown_seconds}")


@dataclass(frozen=True)
class RetrainRequest:
    """A retraining request: an id (so one cause starts at most one run) and the cause."""

    request_id: str
    model: str
    namespace: str
    features: list[str]
    p_values: dict[str, float]
    window_end: str
    trigger: str = Trigger.DRIFT.value
    # When the drift began (ISO, UTC; see `_drift_began`): the retraining run trains from
    # here, so the challenger learns the new operating point instead of the weeks before it.
    # Empty when unknown.
    drift_start: str = ""

    def reason(self) -> RetrainReason:
        return RetrainReason(
            trigger=Trigger(self.trigger),
            features=list(self.features),
            p_values=dict(self.p_values),
            window_end=self.window_end,
            drift_start=self.drift_start or None,
        )

    def reason_json(self) -> str:
        return self.reason().to_json()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetrainRequest:
        return cls(**data)


@dataclass(frozen=True)
class DecisionState:
    """Everything a decision depends on; persisted after every window."""

    reference_version: str = ""
    windows_tested: int = 0
    drifted_windows: int = 0
    consecutive: int = 0
    # Stable windows in a row: K of them say a drift is over (the Model's `Drifted` clears),
    # the same hysteresis as the K drifted windows that confirm one.
    stable_consecutive: int = 0
    decision: str = Decision.NONE.value
    cooldown_until: float = 0.0
    requests: int = 0
    last_request: dict[str, Any] | None = None
    pending_request: dict[str, Any] | None = None
    last_p_values: dict[str, float] = field(default_factory=dict)
    last_statistics: dict[str, float] = field(default_factory=dict)
    last_drifted: list[str] = field(default_factory=list)
    last_window_end: str = ""
    # Start of the current run of drifted windows (see `_drift_began`). It outlives
    # a request and its cooldown while drift persists, so a later request still trains from
    # the true start; a stable window or a new reference clears it.
    drift_start: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecisionState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def cooldown_remaining(self, now: float) -> float:
        return max(0.0, self.cooldown_until - now)


def request_id(model: str, reference_version: str, window_index: int) -> str:
    """Deterministic, so re-sending after a restart names the same request (at most one run)."""
    version = reference_version or "0"
    return f"drift-{model}-v{version}-w{window_index}"


def decide(
    state: DecisionState,
    result: DriftResult,
    *,
    policy: Policy,
    now: float,
    model: str,
    namespace: str,
    window_start: float | None = None,
) -> tuple[DecisionState, RetrainRequest | None]:
    """The next state after testing one window, and the retraining request to raise, if any.

    `window_start`: since when the tested window's rows look drifted (wall-clock seconds: the
    arrival of the rows after the shift the service found in it, else of its oldest row), if
    known.
    """
    window_index = state.windows_tested + 1
    window_end = datetime.fromtimestamp(now, UTC).isoformat()
    common: dict[str, Any] = {
        "windows_tested": window_index,
        "last_p_values": result.p_values,
        "last_statistics": {f.name: f.statistic for f in result.features},
        "last_drifted": result.drifted_features,
        "last_window_end": window_end,
    }
    if not result.is_drift:
        return replace(
            state,
            consecutive=0,
            stable_consecutive=state.stable_consecutive + 1,
            decision=Decision.STABLE.value,
            drift_start="",
            **common,
        ), None

    common["stable_consecutive"] = 0
    consecutive = state.consecutive + 1
    common["drifted_windows"] = state.drifted_windows + 1
    if not state.drift_start:
        common["drift_start"] = datetime.fromtimestamp(
            _drift_began(state, window_start, now), UTC
        ).isoformat()
    if consecutive < policy.consecutive_windows:
        return replace(
            state, consecutive=consecutive, decision=Decision.SUSPECT.value, **common
        ), None
    if not policy.retrain_on_drift:
        return replace(
            state, consecutive=consecutive, decision=Decision.REPORTED.value, **common
        ), None
    if now < state.cooldown_until:
        return replace(
            state, consecutive=consecutive, decision=Decision.COOLDOWN.value, **common
        ), None

    drifted = result.drifted_features
    request = RetrainRequest(
        request_id=request_id(model, state.reference_version, window_index),
        model=model,
        namespace=namespace,
        features=drifted,
        p_values={name: result.p_values[name] for name in drifted},
        window_end=window_end,
        drift_start=common.get("drift_start", state.drift_start),
    )
    # The streak goes on counting: the drift stays confirmed (`CONFIRMED`, which servers read
    # as `model_state: stale`) for as long as it persists, instead of falling back to SUSPECT
    # for the K-1 windows after each request, which told every server its stale model was
    # fine again in the middle of the drift.
    new_state = replace(
        state,
        consecutive=consecutive,
        decision=Decision.REQUESTED.value,
        cooldown_until=now + policy.cooldown_seconds,
        requests=state.requests + 1,
        last_request=asdict(request),
        pending_request=asdict(request),
        **common,
    )
    return new_state, request


def _drift_began(state: DecisionState, window_start: float | None, now: float) -> float:
    """When the first drifted window of a streak says the drift began.

    After a window that did not drift against the same reference, the drift began after that
    test: the rows that tipped this window are the ones since then. The rest of the window is
    older data, mostly from before the change, and a run that trained on it (and logged it
    into the new champion's reference) would keep the monitor finding drift. Without such a
    test (a fresh or re-armed monitor), the window's oldest row is the safe bound."""
    bounds = [] if window_start is None else [window_start]
    if state.decision == Decision.STABLE.value and state.last_window_end:
        # An unreadable saved time leaves only the window's own bound.
        with contextlib.suppress(ValueError):
            bounds.append(datetime.fromisoformat(state.last_window_end).timestamp())
    return min(max(bounds), now) if bounds else now


def rearm(state: DecisionState, reference_version: str) -> DecisionState:
    """A new champion's reference replaced the old one: start counting from scratch.

    The cooldown stays. It bounds how often retraining is requested, whatever the champion:
    when it was reset here, a champion whose reference had not settled yet drew a request
    within a minute of its promotion, its successor the same, and a full demo run retrained
    three times in four minutes."""
    return replace(
        state,
        reference_version=reference_version,
        consecutive=0,
        decision=Decision.REARMED.value,
        drift_start="",
    )


def delivered(state: DecisionState, request_id_: str) -> DecisionState:
    """The request reached the Model; nothing is left to re-send."""
    pending = state.pending_request
    if pending is not None and pending.get("request_id") == request_id_:
        return replace(state, pending_request=None)
    return state
