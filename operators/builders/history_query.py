"""Questions asked of a Model's ledger (pure): a filtered timeline, and what served at a time.

"What was serving at 03:10 and why" is answered by replaying the decisions up to that moment:
the champion is the version of the last promotion (with the gate decision and the approval
that let it through), a canary in progress is the last canary step of a version that was
neither promoted nor rolled back by then, and the last rollback or rejection says why a newer
version is not the one serving.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from loopline.types.history import Decision, DecisionKind

ENDED = frozenset({DecisionKind.ROLLED_BACK, DecisionKind.REJECTED})


def select(
    decisions: Iterable[Decision],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    version: str | None = None,
) -> list[Decision]:
    """The decisions in [since, until] about `version` (all when None), oldest first."""
    return [
        d
        for d in decisions
        if (since is None or d.at >= since)
        and (until is None or d.at <= until)
        and (version is None or d.version == version)
    ]


@dataclass(frozen=True)
class ServingAt:
    """What served at `at`, and the entries that explain it."""

    at: datetime
    champion: str | None = None
    promoted: Decision | None = None  # the promotion that made the champion
    because: list[Decision] = field(default_factory=list)  # its gate decision and approval
    canary: str | None = None
    canary_weight: int | None = None
    canary_step: Decision | None = None
    last_ended: Decision | None = None  # the newest rollback or rejection before `at`
    deleted: Decision | None = None

    def to_json(self) -> dict[str, Any]:
        def dump(d: Decision | None) -> dict[str, Any] | None:
            return d.model_dump(mode="json", by_alias=True, exclude_none=True) if d else None

        return {
            "at": self.at.isoformat(),
            "champion": self.champion,
            "promoted": dump(self.promoted),
            "because": [dump(d) for d in self.because],
            "canary": (
                {
                    "version": self.canary,
                    "weight": self.canary_weight,
                    "step": dump(self.canary_step),
                }
                if self.canary
                else None
            ),
            "lastRollback": dump(self.last_ended),
            "deleted": dump(self.deleted),
        }


def serving_at(decisions: Sequence[Decision], at: datetime) -> ServingAt:
    """Replay the ledger (oldest first) up to and including `at`."""
    champion: str | None = None
    promoted: Decision | None = None
    canary: Decision | None = None
    last_ended: Decision | None = None
    deleted: Decision | None = None
    for d in decisions:
        if d.at > at:
            break
        if d.kind == DecisionKind.PROMOTED:
            champion, promoted = d.version, d
            if canary is not None and canary.version == d.version:
                canary = None
        elif d.kind == DecisionKind.CANARY_STEP and d.version != champion:
            canary = d
        elif d.kind in ENDED:
            last_ended = d
            if canary is not None and canary.version == d.version:
                canary = None
        elif d.kind == DecisionKind.DELETED:
            deleted, champion, promoted, canary = d, None, None, None
    because = [
        d
        for d in decisions
        if promoted is not None
        and d.at <= promoted.at
        and d.version == promoted.version
        and d.kind in (DecisionKind.GATE_DECIDED, DecisionKind.APPROVED)
    ]
    # A canary at 100% of a first version is the champion-to-be, not a canary beside one.
    serving_canary = canary if canary is not None and champion is not None else None
    return ServingAt(
        at=at,
        champion=champion,
        promoted=promoted,
        because=because,
        canary=serving_canary.version if serving_canary else None,
        canary_weight=serving_canary.weight if serving_canary else None,
        canary_step=serving_canary,
        last_ended=last_ended,
        deleted=deleted,
    )
