"""Alarm events and stale periods, read from the responses the simulated plant recorded.

The model server answers every row with `model_state` (is the answering version stale: the
drift monitor confirmed drift against its training data) and, for anomaly models,
`alarm_event` (the machine's debounced alarm after the row). Between a recipe change and the
new champion the stale model flags nearly every row; those verdicts are held back and only
alarm events count. This module turns the recorded responses into what the live view and the
report show instead of a wall of red: the stale periods, the anomalous rows held back in them,
and the alarm events per machine before, during and after.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from loopline.demo.record import InjectedFault, RequestSample

STALE = "stale"
ACTIVE = "active"
# Stale answers closer than this belong to one period (a canary's `ok` answers or a monitor
# poll reading `unknown` in between do not end it).
STALE_GAP_S = 10.0


class AlarmTracker:
    """Which machines' alarm events start with each response.

    An event starts when a machine's `alarm_event` turns `active` after being `inactive` or
    never seen; it lasts as long as the answers say `active`. The REST and gRPC workers share
    one tracker (it locks), and responses are read in the order they come back, so two
    requests in flight at once can be read in the other order than the server judged them:
    an event can then be counted on the neighbouring request, never twice.
    """

    def __init__(self) -> None:
        self._active: dict[str, bool] = {}
        self._lock = threading.Lock()

    def starts(self, machines: Sequence[str], alarm_event: Sequence[str]) -> list[str]:
        """The machines whose event starts with these rows (request order, each once)."""
        started: list[str] = []
        with self._lock:
            for machine, state in zip(machines, alarm_event, strict=False):
                active = state == ACTIVE
                if active and not self._active.get(machine, False) and machine not in started:
                    started.append(machine)
                self._active[machine] = active
        return started


class StalePeriod(BaseModel):
    """A span of traffic answered by a stale model, and what its answers said."""

    model_config = ConfigDict(extra="forbid")

    start_t: float  # the first stale answer
    end_t: float | None  # the first answer after the last stale one; None: stale until the end
    versions: list[str] = Field(default_factory=list)  # the stale version(s)
    successor: str = ""  # the version answering when it ended
    requests: int = 0
    rows: int = 0
    anomalous_rows: int = 0  # every row over the threshold in the period
    held_back: int = 0  # of those, answered by the stale version
    alarm_events: int = 0
    alarm_machines: list[str] = Field(default_factory=list)  # one entry per event
    fault_alarm_events: int = 0  # events whose starting row is a labelled fault

    @property
    def open(self) -> bool:
        return self.end_t is None

    def duration(self, now: float) -> float:
        return (now if self.end_t is None else self.end_t) - self.start_t


def stale_periods(
    requests: Sequence[RequestSample], gap_s: float = STALE_GAP_S
) -> list[StalePeriod]:
    """The stale periods of a run, in time order, from its successful requests."""
    ok = sorted((r for r in requests if r.ok), key=lambda r: r.t)
    stale_idx = [i for i, r in enumerate(ok) if r.model_state == STALE]
    if not stale_idx:
        return []
    groups: list[list[int]] = [[stale_idx[0]]]
    for i in stale_idx[1:]:
        if ok[i].t - ok[groups[-1][-1]].t > gap_s:
            groups.append([i])
        else:
            groups[-1].append(i)
    periods = []
    for group in groups:
        first, last = group[0], group[-1]
        after = ok[last + 1] if last + 1 < len(ok) else None
        span = ok[first : last + 1]
        stale = [ok[i] for i in group]
        machines = [m for r in span for m in r.alarm_starts]
        if after is not None and after.model_state == STALE:
            end_t: float | None = ok[last].t  # a gap in the traffic: ends at its last answer
            successor = ""
        else:
            end_t = None if after is None else after.t
            successor = "" if after is None else after.model_version
        periods.append(
            StalePeriod(
                start_t=ok[first].t,
                end_t=end_t,
                versions=sorted({r.model_version for r in stale if r.model_version}),
                successor=successor,
                requests=len(span),
                rows=sum(r.rows for r in span),
                anomalous_rows=sum(r.anomalies for r in span),
                held_back=sum(r.stale_anomalies for r in stale),
                alarm_events=len(machines),
                alarm_machines=machines,
                fault_alarm_events=sum(len(r.fault_alarm_starts) for r in span),
            )
        )
    return periods


def in_period(t: float, periods: Sequence[StalePeriod]) -> bool:
    return any(p.start_t <= t and (p.end_t is None or t < p.end_t) for p in periods)


def alarm_events_by_machine(
    requests: Sequence[RequestSample], periods: Sequence[StalePeriod]
) -> dict[str, dict[str, int]]:
    """Alarm events per machine before the first stale period, during any, and after."""
    first = periods[0].start_t if periods else None
    out: dict[str, dict[str, int]] = {}
    for r in requests:
        if not r.ok or not r.alarm_starts:
            continue
        if first is None or r.t < first:
            when = "before"
        elif in_period(r.t, periods):
            when = "during"
        else:
            when = "after"
        for machine in r.alarm_starts:
            counts = out.setdefault(machine, {"before": 0, "during": 0, "after": 0})
            counts[when] += 1
    return dict(sorted(out.items()))


def clock(started_at: datetime, t: float) -> str:
    """Seconds since the start as the wall-clock time an operator reads (UTC)."""
    return (started_at + timedelta(seconds=t)).strftime("%H:%M:%S")


def stale_sentence(period: StalePeriod, started_at: datetime) -> str:
    """One line saying what the stale period held back and what it still raised."""
    versions = ", ".join(period.versions) or "?"
    since = clock(started_at, period.start_t)
    counts = (
        f"{period.held_back} anomalous rows held back, "
        f"{period.alarm_events} alarm event{'s' if period.alarm_events != 1 else ''}"
    )
    if period.fault_alarm_events:
        counts += f" ({period.fault_alarm_events} on a labelled fault)"
    if period.end_t is None:
        return f"model stale since {since} UTC (version {versions}): {counts}"
    until = clock(started_at, period.end_t)
    successor = f", then version {period.successor}" if period.successor else ""
    return f"model was stale {since}-{until} UTC (version {versions}{successor}): {counts}"


class FaultOutcome(BaseModel):
    """What the answers said about a fault the scenario injected."""

    model_config = ConfigDict(extra="forbid")

    fault: InjectedFault
    during_stale: bool  # its first reading fell inside a stale period
    detected_t: float | None = None  # the first alarm event on its machine while it ran
    detected_state: str = ""  # the model state of the answer that started that event


def fault_outcome(
    requests: Sequence[RequestSample],
    fault: InjectedFault,
    periods: Sequence[StalePeriod],
) -> FaultOutcome:
    """Whether an alarm event started on the faulty machine while its fault ran (its last
    reading included: workers may read answers out of order)."""
    end = fault.end_t if fault.end_t is not None else float("inf")
    detected: RequestSample | None = None
    for r in sorted((r for r in requests if r.ok), key=lambda r: r.t):
        if r.t < fault.start_t or r.t > end:
            continue
        if fault.machine_id in r.fault_alarm_starts and detected is None:
            detected = r
    return FaultOutcome(
        fault=fault,
        during_stale=in_period(fault.start_t, periods),
        detected_t=None if detected is None else detected.t,
        detected_state=detected.model_state if detected is not None else "",
    )


def stale_model_events(
    requests: Sequence[RequestSample], periods: Sequence[StalePeriod]
) -> list[tuple[float, str, bool]]:
    """Alarm events started by a stale model's answers inside the stale periods: (time,
    machine, whether its starting row is a labelled fault)."""
    out = []
    for r in requests:
        if not r.ok or r.model_state != STALE or not in_period(r.t, periods):
            continue
        for machine in r.alarm_starts:
            out.append((r.t, machine, machine in r.fault_alarm_starts))
    return sorted(out)


def fault_sentence(outcome: FaultOutcome, started_at: datetime) -> str:
    f = outcome.fault
    where = "during the stale period" if outcome.during_stale else "outside any stale period"
    text = (
        f"injected {f.kind.replace('_', ' ')} on {f.machine_id} at "
        f"{clock(started_at, f.start_t)} UTC ({f.readings} readings, {where}): "
    )
    if outcome.detected_t is None:
        return text + ("no alarm event yet" if f.end_t is None else "no alarm event")
    state = f", model {outcome.detected_state}" if outcome.detected_state else ""
    delay = outcome.detected_t - f.start_t
    return text + (
        f"alarm event at {clock(started_at, outcome.detected_t)} UTC ({delay:.1f} s later{state})"
    )
