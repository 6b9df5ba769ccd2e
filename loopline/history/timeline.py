"""Questions asked of a Model's decisions (pure): a filtered timeline, and "what was serving
at that moment, and why" (`serving_at`).

Every decision carries the serving state right after it, so the answer at a time T is the
state of the last decision at or before T; the reason is the decision that made that champion
(its last Promoted, or the first decision naming it), and the canary's, when one ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from loopline.types.history import Decision, ServingState

PROMOTING = frozenset({"Promoted", "AliasRestored"})
CANARY = frozenset({"TrainingSucceeded", "CanaryStep", "Approved"})


def select(
    decisions: Sequence[Decision],
    since: datetime | None = None,
    version: str | None = None,
) -> list[Decision]:
    """The decisions at or after `since` about `version` (either may be None: no filter)."""
    return [
        d
        for d in decisions
        if (since is None or d.at >= since) and (version is None or d.version == version)
    ]


@dataclass(frozen=True)
class ServingAt:
    """The answer of `serving_at`: the state, the decision it comes from, and the decisions
    that put the champion and the canary there."""

    at: datetime
    state: ServingState | None
    last: Decision | None
    champion_by: Decision | None
    canary_by: Decision | None


def serving_at(decisions: Sequence[Decision], at: datetime) -> ServingAt:
    """What served at `at` and why (decisions oldest first)."""
    before = [d for d in decisions if d.at <= at]
    stated = [d for d in before if d.serving is not None]
    if not stated:
        return ServingAt(at, None, before[-1] if before else None, None, None)
    last = stated[-1]
    state = last.serving
    assert state is not None
    champion_by = _made(before, state.champion, PROMOTING) if state.champion else None
    canary_by = _made(before, state.canary, CANARY) if state.canary else None
    return ServingAt(at, state, last, champion_by, canary_by)


def _made(before: Sequence[Decision], version: str | None, kinds: frozenset[str]) -> Decision:
    """The latest decision of `kinds` about `version`; else the first one naming it as
    serving (a ledger whose older chunks were dropped may have lost the promotion)."""
    for d in reversed(before):
        if d.kind in kinds and d.version == version:
            return d
    for d in before:
        if d.serving is not None and version in (d.serving.champion, d.serving.canary):
            return d
    raise LookupError(version)  # unreachable: `version` comes from one of `before`


def describe(d: Decision) -> str:
    """One line of the timeline."""
    when = d.at.strftime("%Y-%m-%dT%H:%M:%SZ")
    version = f" v{d.version}" if d.version else ""
    serving = ""
    if d.serving is not None:
        serving = f"  [champion {d.serving.champion or '-'}"
        if d.serving.canary:
            serving += f", canary {d.serving.canary} at {d.serving.weight}%"
        serving += "]"
    return f"{when}  {d.kind:<18}{version}  by {d.actor}: {d.message}{serving}"


def describe_at(answer: ServingAt) -> list[str]:
    """The lines answering `--at`."""
    when = answer.at.strftime("%Y-%m-%dT%H:%M:%SZ")
    state = answer.state
    if state is None or (state.champion is None and state.canary is None):
        return [f"at {when}: nothing was serving (no version had been rolled out)"]
    lines = [f"at {when}: champion {state.champion or '-'}"]
    if state.canary:
        lines[0] += f", canary {state.canary} taking {state.weight}% of traffic"
    if answer.champion_by is not None:
        lines.append(f"  champion because: {describe(answer.champion_by)}")
    if answer.canary_by is not None:
        lines.append(f"  canary because:   {describe(answer.canary_by)}")
    return lines
