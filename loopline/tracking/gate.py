"""The champion gate: may this challenger replace the champion? Pure decision, then effects.

The decision compares the challenger with the champion on the SAME evaluation set (the
caller scores both on the fresh rows of this run; a champion's metrics from its own training
run were measured on older data and would make the comparison meaningless). It is pure so
the rules are tested without MLflow; `loopline.tracking.registry.apply_decision` performs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from loopline.types.policy import ValidationPolicy

# Values of the MLflow tag `loopline.gate.decision`. Earlier releases wrote "promoted" for a
# pass; readers accept both (`gate_passed`).
GATE_PASSED = "passed"
GATE_REJECTED = "rejected"
_LEGACY_PASSED = "promoted"


def gate_passed(tag_value: str | None) -> bool:
    """Whether a `loopline.gate.decision` tag value records a pass (old or new spelling)."""
    return tag_value in (GATE_PASSED, _LEGACY_PASSED)


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on one challenger. `passed` means it may go on to a canary; whether it
    becomes champion is the rollout's outcome (`RolloutOutcome.PROMOTED`), decided later."""

    passed: bool
    reason: str
    metric: str
    challenger_value: float
    champion_value: float | None = None
    margin: float = 0.0
    failed_minimums: dict[str, tuple[float, float]] = field(default_factory=dict)  # value, min

    @property
    def label(self) -> str:
        return GATE_PASSED if self.passed else GATE_REJECTED


def _fmt(value: float) -> str:
    return "undefined" if math.isnan(value) else f"{value:.4f}"


def decide(
    policy: ValidationPolicy,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    *,
    champion_version: str | None = None,
) -> GateDecision:
    """Pass iff every minimum holds and the metric beats the champion's by the margin."""
    metric = policy.metric
    value = float(challenger.get(metric, math.nan))
    failed: dict[str, tuple[float, float]] = {}
    unknown = sorted(k for k in policy.minimums if k not in challenger)
    if unknown:
        return GateDecision(
            passed=False,
            reason=f"validation.minimums names metric(s) {unknown} this run does not report; "
            f"reported: {sorted(challenger)}",
            metric=metric,
            challenger_value=value,
        )
    for name, minimum in sorted(policy.minimums.items()):
        got = float(challenger[name])
        if math.isnan(got) or got < minimum:
            failed[name] = (got, minimum)
    if metric not in challenger or math.isnan(value):
        return GateDecision(
            passed=False,
            reason=f"metric {metric!r} is undefined for this evaluation set "
            "(e.g. no labelled faults in it); cannot compare with the champion",
            metric=metric,
            challenger_value=value,
            failed_minimums=failed,
        )
    if failed:
        parts = [f"{k} {_fmt(v)} < minimum {m:.4f}" for k, (v, m) in failed.items()]
        return GateDecision(
            passed=False,
            reason="below policy minimums: " + "; ".join(parts),
            metric=metric,
            challenger_value=value,
            failed_minimums=failed,
        )
    margin = policy.champion_margin
    if champion is None:
        return GateDecision(
            passed=True,
            reason=f"no champion yet; {metric} {_fmt(value)} meets the policy",
            metric=metric,
            challenger_value=value,
            margin=margin,
        )
    best = float(champion.get(metric, math.nan))
    label = f"champion v{champion_version}" if champion_version else "champion"
    if math.isnan(best):
        return GateDecision(
            passed=True,
            reason=f"{label} has no {metric} on this evaluation set; {metric} {_fmt(value)} "
            "meets the policy",
            metric=metric,
            challenger_value=value,
            champion_value=best,
            margin=margin,
        )
    if value >= best + margin:
        return GateDecision(
            passed=True,
            reason=f"{metric} {_fmt(value)} >= {label} {_fmt(best)} + margin {margin:.4f}",
            metric=metric,
            challenger_value=value,
            champion_value=best,
            margin=margin,
        )
    return GateDecision(
        passed=False,
        reason=f"{metric} {_fmt(value)} < {label} {_fmt(best)} + margin {margin:.4f} "
        "on the same evaluation set",
        metric=metric,
        challenger_value=value,
        champion_value=best,
        margin=margin,
    )
