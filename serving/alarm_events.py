"""Debounced alarm events per entity, as the server answers them: the `alarm_event` output.

The same rule as the evaluation's `loopline.models.alarms.debounce` (k = `alarms.raiseAt` of
the last n = `alarms.window` readings over the threshold raise an event, fewer than m =
`alarms.clearBelow` end it), applied one reading at a time as rows arrive, with the Model's
`spec.alarms` as the training run stored it in the bundle's metadata (`alarms`). An entity's
first window-1 readings are judged on the readings seen so far, as in the evaluation: k over
the threshold among them already raise an event.

While the monitor reports the model stale (`drift_state`), its threshold verdict is no alarm:
after a recipe change every row is over it. The debouncer then takes a drift-robust verdict
instead, one that needs no model: each sensor of the row against the same sensor's last
`ROBUST_WINDOW` readings of the same entity, a robust z (distance from their median in units
of their scaled median absolute deviation), and the row counts when any sensor's is over
`ROBUST_CUT`. A steady shift of the operating point moves the medians with it within half a
window; a fault breaks sensors away from them (docs/serving.md has the measurement). An
entity with fewer than half a window of readings is not flagged while stale; a sensor with a
missing reading in its window is left out until the reading has left the window.

The state lives in the replica's memory: the last n flags of each entity, at most
`max_entities` entities (the least recently seen is forgotten first, and starts afresh when it
comes back). With more than one replica each sees only the readings routed to it, so the
answer is right only when an entity's readings all go to one replica (sticky routing on the
entity key); docs/serving.md says how.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loopline.models.alarms import check_debounce
from loopline.types.alarms import AlarmPolicy

ACTIVE = "active"
INACTIVE = "inactive"
_ACTIVE_B = ACTIVE.encode()
_INACTIVE_B = INACTIVE.encode()
ALARMS_KEY = "alarms"  # bundle metadata key the training run writes spec.alarms under
ROBUST_WINDOW = 60
ROBUST_CUT = 8.0
_MAD_SCALE = 1.4826  # MAD of a normal distribution -> its standard deviation


def policy_of(metadata: Mapping[str, Any]) -> AlarmPolicy:
    """The bundle's `spec.alarms`; the defaults for a bundle trained without them."""
    doc = metadata.get(ALARMS_KEY)
    if doc is None:
        return AlarmPolicy()
    try:
        return AlarmPolicy.model_validate(doc)
    except ValueError as exc:
        raise ValueError(f"bundle metadata {ALARMS_KEY!r} is malformed: {exc}") from exc


def sensor_break(history: np.ndarray, row: np.ndarray, cut: float = ROBUST_CUT) -> bool:
    """Whether any sensor of `row` [F] breaks away from the entity's recent `history` [h, F]
    (robust z over `cut`); False with fewer than half a window of history."""
    if history.shape[0] < ROBUST_WINDOW // 2:
        return False
    median = np.median(history, axis=0)
    mad = np.median(np.abs(history - median), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.abs(row - median) / (_MAD_SCALE * mad + 1e-9)
    finite = z[np.isfinite(z)]
    return bool(finite.size and finite.max() > cut)


@dataclass
class _Entity:
    flags: deque[bool]
    readings: np.ndarray | None = None  # ring buffer [ROBUST_WINDOW, F] of recent rows
    seen: int = 0  # rows written to `readings`
    over: int = 0  # how many of `flags` are True
    active: bool = False


@dataclass
class Step:
    """The answer for one batch: alarm state per row and the rows that raised an event."""

    active: list[bool]
    raised: list[int] = field(default_factory=list)


class AlarmEvents:
    """k-of-n with hysteresis per entity, one reading at a time."""

    def __init__(self, k: int, n: int, m: int, *, max_entities: int) -> None:
        check_debounce(k, n, m)
        if max_entities < 1:
            raise ValueError(f"alarm_max_entities must be at least 1, got {max_entities}")
        self.k, self.n, self.m = k, n, m
        self.max_entities = max_entities
        self._entities: OrderedDict[str, _Entity] = OrderedDict()

    @classmethod
    def of(cls, policy: AlarmPolicy, *, max_entities: int) -> AlarmEvents:
        return cls(policy.k, policy.n, policy.m, max_entities=max_entities)

    def __len__(self) -> int:
        return len(self._entities)

    def _entity(self, key: str) -> _Entity:
        found = self._entities.get(key)
        if found is None:
            found = self._entities[key] = _Entity(flags=deque(maxlen=self.n))
            if len(self._entities) > self.max_entities:
                self._entities.popitem(last=False)
        else:
            self._entities.move_to_end(key)
        return found

    def step(
        self,
        entities: Sequence[str],
        over: Sequence[bool],
        x: np.ndarray | None = None,
        *,
        stale: bool = False,
    ) -> Step:
        """Feed one batch in request order (an entity may appear several times). With the
        rows `x` [n, F], each entity's recent readings are kept, and with `stale` they, not
        `over`, decide whether a row counts towards an alarm (`sensor_break`)."""
        if len(entities) != len(over) or (x is not None and x.shape[0] != len(over)):
            raise ValueError(f"{len(entities)} entity keys for {len(over)} rows")
        out = Step(active=[])
        for row, (key, flag) in enumerate(zip(entities, over, strict=True)):
            e = self._entity(key)
            if x is not None:
                if e.readings is None:
                    e.readings = np.empty((ROBUST_WINDOW, x.shape[1]), dtype=np.float32)
                if stale:
                    flag = sensor_break(e.readings[: min(e.seen, ROBUST_WINDOW)], x[row])
                e.readings[e.seen % ROBUST_WINDOW] = x[row]
                e.seen += 1
            if len(e.flags) == self.n and e.flags[0]:
                e.over -= 1
            e.flags.append(bool(flag))
            e.over += bool(flag)
            was = e.active
            e.active = e.over >= self.m if was else e.over >= self.k
            if e.active and not was:
                out.raised.append(row)
            out.active.append(e.active)
        return out

    def column(
        self,
        entities: Sequence[str] | None,
        over: Sequence[bool] | Any,
        x: np.ndarray | None = None,
        *,
        stale: bool = False,
    ) -> tuple[list[bytes], int]:
        """The `alarm_event` output of a batch and how many events it raised. Rows without
        an entity key (the request had no entity column) are one stream, entity ""."""
        flags = [bool(v) for v in over]
        keys = entities if entities is not None else [""] * len(flags)
        step = self.step(keys, flags, x, stale=stale)
        return [_ACTIVE_B if a else _INACTIVE_B for a in step.active], len(step.raised)
