"""Debounced alarm events per entity, as the server answers them: the `alarm_event` output.

The same rule as the evaluation's `loopline.models.alarms.debounce` (k = `alarms.raiseAt` of
the last n = `alarms.window` readings over the threshold raise an event, fewer than m =
`alarms.clearBelow` end it), applied one reading at a time as rows arrive, with the Model's
`spec.alarms` as the training run stored it in the bundle's metadata (`alarms`). An entity's
first window-1 readings are judged on the readings seen so far, as in the evaluation: k over
the threshold among them already raise an event.

While the monitor reports the model stale (`drift_state`), its threshold verdict is no alarm:
after a recipe change every row is over it. When the model turns stale (or back), each
entity's window and open alarm are dropped, so the new rule raises its own events. The
debouncer then takes a drift-robust verdict
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
from loopline.models.score_baseline import BASELINE_KEY, BaselineCalibration, EntityBaseline
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


def baseline_of(metadata: Mapping[str, Any]) -> tuple[int, BaselineCalibration] | None:
    """The bundle's score baseline (readings, the primary detector's calibration), if any:
    the window detector's when the bundle has one, else the per-row autoencoder's. Rows the
    fallback scored are judged with it too, their scores in units of their own threshold."""
    doc = metadata.get(BASELINE_KEY)
    if not doc:
        return None
    try:
        detectors = doc["detectors"]
        cal = detectors["window"] if "window" in detectors else detectors["dense"]
        return int(doc["readings"]), BaselineCalibration.from_dict(cal)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bundle metadata {BASELINE_KEY!r} is malformed: {exc}") from exc


def sensor_breaks(history: np.ndarray, rows: np.ndarray, cut: float = ROBUST_CUT) -> np.ndarray:
    """Per row of `rows` [r, F], whether any sensor breaks away from the entity's recent
    `history` [h, F] (robust z over `cut`); all False with fewer than half a window of it."""
    if history.shape[0] < ROBUST_WINDOW // 2:
        return np.zeros(rows.shape[0], dtype=bool)
    median = np.median(history, axis=0)
    mad = np.median(np.abs(history - median), axis=0)
    return _over(rows, median, mad, cut)


def _over(rows: np.ndarray, median: np.ndarray, mad: np.ndarray, cut: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        z = np.abs(rows - median) / (_MAD_SCALE * mad + 1e-9)
    return np.asarray((np.where(np.isfinite(z), z, 0.0) > cut).any(axis=1))


def sensor_break(history: np.ndarray, row: np.ndarray, cut: float = ROBUST_CUT) -> bool:
    """`sensor_breaks` for one row [F]."""
    return bool(sensor_breaks(history, row[np.newaxis], cut)[0])


@dataclass
class _Entity:
    flags: deque[bool]
    level: EntityBaseline | None = None  # recent scores, with a score baseline
    readings: np.ndarray | None = None  # ring buffer [ROBUST_WINDOW, F] of recent rows
    seen: int = 0  # rows written to `readings`
    over: int = 0  # how many of `flags` are True
    active: bool = False
    stale: bool = False  # which rule judged `flags`: the threshold's, or drift-robust


@dataclass
class Step:
    """The answer for one batch: alarm state per row and the rows that raised an event."""

    active: list[bool]
    raised: list[int] = field(default_factory=list)


class AlarmEvents:
    """k-of-n with hysteresis per entity, one reading at a time."""

    def __init__(
        self,
        k: int,
        n: int,
        m: int,
        *,
        max_entities: int,
        baseline: tuple[int, BaselineCalibration] | None = None,
    ) -> None:
        check_debounce(k, n, m)
        if max_entities < 1:
            raise ValueError(f"alarm_max_entities must be at least 1, got {max_entities}")
        self.k, self.n, self.m = k, n, m
        self.max_entities = max_entities
        self.baseline = baseline
        self._entities: OrderedDict[str, _Entity] = OrderedDict()

    @classmethod
    def of(
        cls, policy: AlarmPolicy, *, max_entities: int, metadata: Mapping[str, Any] | None = None
    ) -> AlarmEvents:
        return cls(
            policy.k,
            policy.n,
            policy.m,
            max_entities=max_entities,
            baseline=baseline_of(metadata or {}),
        )

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
        u: Sequence[float] | None = None,
    ) -> Step:
        """Feed one batch in request order (an entity may appear several times). With the
        rows `x` [n, F], each entity's recent readings are kept, and with `stale` they, not
        `over`, decide whether a row counts towards an alarm (`sensor_breaks`, each row of a
        request against the readings kept before the request)."""
        if len(entities) != len(over) or (x is not None and x.shape[0] != len(over)):
            raise ValueError(f"{len(entities)} entity keys for {len(over)} rows")
        entity = [self._entity(key) for key in entities]
        flags = [bool(v) for v in over]
        if self.baseline is not None and u is not None:
            self._against_level(entity, u, flags, stale)
        if x is not None:
            self._remember(entity, x, flags, stale)
        out = Step(active=[])
        for row, (e, flag) in enumerate(zip(entity, flags, strict=True)):
            if e.stale != stale:
                _rejudge(e, stale)
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

    def _against_level(
        self, entity: list[_Entity], u: Sequence[float], flags: list[bool], stale: bool
    ) -> None:
        """With a score baseline, a row's flag is its score against its entity's recent
        level (`loopline.models.score_baseline`), the verdict the evaluation judged; each
        score joins the entity's history, also while stale."""
        assert self.baseline is not None
        readings, cal = self.baseline
        if len(u) != len(flags):
            raise ValueError(f"{len(u)} scores for {len(flags)} rows")
        for row, (e, value) in enumerate(zip(entity, u, strict=True)):
            if e.level is None:
                e.level = EntityBaseline(readings, cal.reference)
            relative = e.level.relative(float(value))
            if not stale:
                flags[row] = relative > cal.threshold

    def _remember(
        self, entity: list[_Entity], x: np.ndarray, flags: list[bool], stale: bool
    ) -> None:
        """Judge the rows while stale (into `flags`), then keep them, one entity at a time."""
        rows_of: dict[int, list[int]] = {}
        for row, e in enumerate(entity):
            rows_of.setdefault(id(e), []).append(row)
        groups = [(entity[rows[0]], rows) for rows in rows_of.values()]
        for e, _ in groups:
            if e.readings is None:
                e.readings = np.empty((ROBUST_WINDOW, x.shape[1]), dtype=np.float32)
        if stale:
            _judge(groups, x, flags)
        for e, rows in groups:
            assert e.readings is not None
            if len(rows) == 1:  # the common case, without fancy indexing
                e.readings[e.seen % ROBUST_WINDOW] = x[rows[0]]
                e.seen += 1
                continue
            tail = x[rows[-ROBUST_WINDOW:]]
            first = e.seen + len(rows) - len(tail)
            e.readings[np.arange(first, first + len(tail)) % ROBUST_WINDOW] = tail
            e.seen += len(rows)

    def column(
        self,
        entities: Sequence[str] | None,
        over: Sequence[bool] | Any,
        x: np.ndarray | None = None,
        *,
        stale: bool = False,
        u: Sequence[float] | Any | None = None,
    ) -> tuple[list[bytes], int]:
        """The `alarm_event` output of a batch and how many events it raised. Rows without
        an entity key (the request had no entity column) are one stream, entity ""."""
        flags = [bool(v) for v in over]
        keys = entities if entities is not None else [""] * len(flags)
        step = self.step(keys, flags, x, stale=stale, u=None if u is None else list(u))
        return [_ACTIVE_B if a else _INACTIVE_B for a in step.active], len(step.raised)


def _rejudge(e: _Entity, stale: bool) -> None:
    """The verdict's rule changed (the model went stale, or drift cleared): what the other
    rule flagged is forgotten and an alarm it raised ends, so every event is raised by one
    rule. Kept, the threshold's verdicts of the last readings before staleness was
    confirmed (a recipe change puts every row over it) would hold an alarm open into the
    stale period, and a fault then would extend that alarm instead of raising its own."""
    e.flags.clear()
    e.over = 0
    e.active = False
    e.stale = stale


def _judge(groups: list[tuple[_Entity, list[int]]], x: np.ndarray, flags: list[bool]) -> None:
    """`sensor_breaks` for every row of a request, in one vectorised pass for the entities
    with one row and a full window (a line sends one row per entity), one at a time else."""
    full = [(e, rows[0]) for e, rows in groups if len(rows) == 1 and e.seen >= ROBUST_WINDOW]
    if full:
        history = np.stack([e.readings for e, _ in full if e.readings is not None])
        median = np.median(history, axis=1)
        mad = np.median(np.abs(history - median[:, np.newaxis]), axis=1)
        broke = _over(x[[row for _, row in full]], median, mad, ROBUST_CUT)
        for (_, row), flag in zip(full, broke.tolist(), strict=True):
            flags[row] = flag
    for e, rows in groups:
        if (len(rows) == 1 and e.seen >= ROBUST_WINDOW) or e.readings is None:
            continue
        kept = e.readings[: min(e.seen, ROBUST_WINDOW)]
        for row, flag in zip(rows, sensor_breaks(kept, x[rows]).tolist(), strict=True):
            flags[row] = flag


def threshold_units(outputs: dict[str, Any]) -> Any:
    """Each row's anomaly score in units of its own detector's threshold (what a score
    baseline follows), or None without both outputs."""
    score, threshold = outputs.get("anomaly_score"), outputs.get("threshold")
    if score is None or threshold is None:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(score, dtype=np.float64) / np.asarray(threshold, dtype=np.float64)
