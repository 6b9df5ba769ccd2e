"""Whether the registry's `champion` alias was moved behind the operator's back, and the
status history that records such repairs.

The operator owns the alias of the Models it rolls out (see `ChampionAlias`): the drift
monitor takes its reference from it and the next gate compares against it. Anyone who can
write to MLflow can move it, so every reconcile compares it with the champion the status
names and puts it back; this module decides whether a move the registry backend made was a
repair (someone else moved or removed the alias) or the operator's own promotion, and words
the Event and the history entry an engineer reads afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from loopline.operators.builders.model import Event
from loopline.types.common import CHAMPION_ALIAS as CHAMPION
from loopline.types.status import HistoryEntry, ModelStatus

HISTORY = 20
ALIAS_RESTORED = "ChampionAliasRestored"


@dataclass(frozen=True)
class ChampionCheck:
    """What the registry backend found and did for one `ChampionAlias`."""

    registered_model: str
    version: str  # where the alias points now: the champion serving all traffic
    found: str | None  # where it pointed before (None: no alias, or no registered model)
    moved: bool


def alias_restoration(
    check: ChampionCheck, previous_champion: str | None, now: datetime
) -> tuple[Event, HistoryEntry] | None:
    """The Event and history entry for an alias the operator had to put back, or None when
    the move was the operator's own (a promotion, or the first champion).

    The alias counts as tampered with when the status already named `check.version` as
    champion before this reconcile (so the operator had pointed the alias there) and the
    registry said otherwise."""
    if not check.moved or previous_champion != check.version:
        return None
    where = f"{check.registered_model}@{CHAMPION}"
    was = f"pointed at version {check.found}" if check.found else "was missing"
    message = (
        f"{where} {was}, not the champion serving all traffic; put back to version "
        f"{check.version} (the alias is the operator's: move it by rolling out a version, not "
        "in MLflow)"
    )
    entry = HistoryEntry(
        at=now, reason=ALIAS_RESTORED, message=message, found=check.found, restored=check.version
    )
    return Event("Warning", ALIAS_RESTORED, message), entry


def record(status: ModelStatus, entry: HistoryEntry) -> ModelStatus:
    """`status` with `entry` first in its history (the oldest drop off after HISTORY)."""
    return status.model_copy(update={"history": [entry, *status.history][:HISTORY]})
