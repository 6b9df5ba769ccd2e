"""What happened during a demo run, as data: the one thing the live view and the report read.

The traffic driver, the cluster watcher and the scenario write into a `DemoRecord` from their
own threads; the live view renders it a few times a second and the report plots it at the end.
Keeping it plain data (saved as JSON beside the report) means the report can be rebuilt and
unit-tested without running anything, and every number in the report traces back to a
measurement recorded here.

Times are seconds since the record was created (`t`), so plots share one axis; `started_at`
anchors them to the wall clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from loopline.demo.traffic_stats import TrafficStats
from loopline.types.history import Decision

# Bounds on what a long run keeps, so `loopline demo` without --quick never grows unbounded.
MAX_REQUESTS = 200_000
MAX_TRACE_POINTS = 50_000


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestSample(_Item):
    """One inference call the simulated plant made."""

    t: float
    protocol: str  # "rest" | "grpc"
    latency_s: float
    rows: int
    ok: bool
    status: str = "ok"  # "ok", or the HTTP/gRPC status and message of a failure
    segment: str = ""  # scenario segment: baseline, recipe-change, dead-sensor, ...
    fallback_rows: int = 0
    anomalies: int = 0
    model_version: str = ""
    model_state: str = ""  # "ok" | "stale" | "unknown"; "" when the server sent none
    stale_anomalies: int = 0  # anomalous rows answered by a stale version (held back)
    alarm_rows: int = 0  # rows whose machine's alarm event is active
    alarm_starts: list[str] = Field(default_factory=list)  # machines whose alarm event started
    # of those, the ones whose starting row the generator labelled a fault (ground truth)
    fault_alarm_starts: list[str] = Field(default_factory=list)
    caller: str = ""  # the Loopline-Caller it sent ("" for none)


class AsyncSample(_Item):
    """One request a producer queued for asynchronous inference, and its answer."""

    t: float  # when it was accepted
    id: str
    caller: str
    rows: int
    ok: bool = False  # answered with a V2 response
    answered_t: float | None = None  # when the answer was first fetched
    status: str = "pending"  # "pending", "ok", or the status and message of a failure
    segment: str = ""
    model_version: str = ""
    fallback_rows: int = 0
    polls: int = 0  # GETs until the answer (a pending answer costs one each)

    @property
    def latency_s(self) -> float | None:
        return None if self.answered_t is None else self.answered_t - self.t


class UsageEntry(_Item):
    """One line of the model servers' usage table (`loopline usage`), as Prometheus read it."""

    version: str
    caller: str
    requests: float
    errors: float
    rows: float
    fallback_rows: float
    p50_s: float | None = None
    p95_s: float | None = None
    p99_s: float | None = None
    retired: bool | None = None


class InjectedFault(_Item):
    """A labelled fault the scenario injected into the live traffic on purpose."""

    kind: str
    machine_id: str
    start_t: float  # when its first reading was taken
    end_t: float | None = None  # when its last was; None while it runs
    readings: int = 0
    segment: str = ""


class TracePoint(_Item):
    """One scored row of the traced machine: its core sensors and what the model said."""

    t: float
    machine_id: str
    values: dict[str, float | None]
    score: float | None = None
    threshold: float | None = None
    is_anomaly: bool | None = None
    model: str = ""  # "primary" | "fallback"
    is_fault: bool | None = None  # ground truth from the generator, when known
    model_state: str = ""  # "ok" | "stale" | "unknown"; "" when the server sent none
    alarm: bool | None = None  # the machine's alarm event active after this row


class DriftSample(_Item):
    """The drift monitor's per-feature p-values at one moment."""

    t: float
    p_values: dict[str, float]
    drift: bool = False


class ConditionChange(_Item):
    """A Model condition (or the phase, as type "Phase") changing status."""

    t: float
    type: str
    status: str
    reason: str = ""
    message: str = ""


class Marker(_Item):
    """A moment of the story: recipe change, retraining requested, promoted, sensor dead, ..."""

    t: float
    kind: str
    label: str = ""


class Step(_Item):
    """A line of the demo's log, with the kubectl command that shows the same thing."""

    t: float
    title: str
    detail: str = ""
    command: str = ""


class RunInfo(_Item):
    """One training run as the Model's status and MLflow describe it."""

    run_id: str
    trigger: str = ""
    phase: str = ""
    step: str = ""
    message: str = ""
    started_t: float | None = None
    ended_t: float | None = None
    mlflow_run_id: str = ""
    model_version: str = ""


class VersionInfo(_Item):
    """A registered model version: its aliases, metrics and lineage tags from MLflow."""

    version: str
    aliases: list[str] = Field(default_factory=list)
    run_id: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)


class Comparison(_Item):
    """Both versions scored on the same data (e.g. rows after the recipe change)."""

    dataset: str
    rows: int
    metrics: dict[str, dict[str, float]]  # version -> metric -> value


class DemoRecord(BaseModel):
    """Everything the demo observed, appended to from several threads."""

    model_config = ConfigDict(extra="forbid")

    model: str = "drill-ae"
    namespace: str = "default"
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    core_features: list[str] = Field(default_factory=list)
    phase: str = ""
    message: str = ""  # the Model's status.message
    conditions: dict[str, ConditionChange] = Field(default_factory=dict)
    champion: str = ""
    challenger: str = ""
    endpoints: dict[str, str] = Field(default_factory=dict)
    segment: str = ""
    requests: list[RequestSample] = Field(default_factory=list)
    async_requests: list[AsyncSample] = Field(default_factory=list)
    # the model servers' usage per version and caller over the run (None: not read)
    usage: list[UsageEntry] | None = None
    injected_faults: list[InjectedFault] = Field(default_factory=list)
    trace: list[TracePoint] = Field(default_factory=list)
    drift: list[DriftSample] = Field(default_factory=list)
    transitions: list[ConditionChange] = Field(default_factory=list)
    markers: list[Marker] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list)
    runs: dict[str, RunInfo] = Field(default_factory=dict)
    versions: dict[str, VersionInfo] = Field(default_factory=dict)
    comparisons: list[Comparison] = Field(default_factory=list)
    links: dict[str, str] = Field(default_factory=dict)  # name -> URL (MLflow UI, ...)
    notes: list[str] = Field(default_factory=list)  # what did not happen, and why
    # "namespace/model" -> its history ledger's decisions, read as the run ends
    history: dict[str, list[Decision]] = Field(default_factory=dict)
    ended_t: float | None = None

    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)
    _t0: float = PrivateAttr(default_factory=time.monotonic)
    _listeners: list[Callable[[Step], None]] = PrivateAttr(default_factory=list)

    # -- clock -----------------------------------------------------------------------------

    def now(self) -> float:
        """Seconds since the record was created (monotonic)."""
        return time.monotonic() - self._t0

    def _at(self, t: float | None) -> float:
        return self.now() if t is None else t

    # -- writers (thread-safe) -------------------------------------------------------------

    def on_step(self, listener: Callable[[Step], None]) -> None:
        """Call `listener` for every step logged from now on (the plain-text progress)."""
        self._listeners.append(listener)

    def step(
        self, title: str, *, detail: str = "", command: str = "", t: float | None = None
    ) -> Step:
        item = Step(t=self._at(t), title=title, detail=detail, command=command)
        with self._lock:
            self.steps.append(item)
        for listener in list(self._listeners):
            listener(item)
        return item

    def mark(self, kind: str, label: str = "", *, t: float | None = None) -> Marker:
        item = Marker(t=self._at(t), kind=kind, label=label)
        with self._lock:
            self.markers.append(item)
        return item

    def set_segment(self, segment: str) -> None:
        with self._lock:
            self.segment = segment

    def add_request(self, sample: RequestSample) -> None:
        with self._lock:
            self.requests.append(sample)
            if len(self.requests) > MAX_REQUESTS:
                del self.requests[: len(self.requests) - MAX_REQUESTS]

    def add_async(self, sample: AsyncSample) -> None:
        with self._lock:
            self.async_requests.append(sample)
            if len(self.async_requests) > MAX_REQUESTS:
                del self.async_requests[: len(self.async_requests) - MAX_REQUESTS]

    def answer_async(self, sample: AsyncSample, **fields: Any) -> AsyncSample:
        """A queued request with its answer filled in, in place of `sample` (items are
        replaced, never mutated: snapshots share them)."""
        with self._lock:
            updated = sample.model_copy(update=fields)
            for i in range(len(self.async_requests) - 1, -1, -1):
                if self.async_requests[i] is sample:
                    self.async_requests[i] = updated
                    break
            return updated

    def set_usage(self, entries: Iterable[UsageEntry]) -> None:
        with self._lock:
            self.usage = list(entries)

    def add_injected_fault(
        self, fault: InjectedFault, *, replaces: InjectedFault | None = None
    ) -> None:
        """Record an injected fault, or its progress in place of what was known of it."""
        with self._lock:
            for i, known in enumerate(self.injected_faults):
                if known is replaces:
                    self.injected_faults[i] = fault
                    return
            self.injected_faults.append(fault)

    def add_trace(self, points: Iterable[TracePoint]) -> None:
        with self._lock:
            self.trace.extend(points)
            if len(self.trace) > MAX_TRACE_POINTS:
                del self.trace[: len(self.trace) - MAX_TRACE_POINTS]

    def add_drift(self, p_values: dict[str, float], *, drift: bool, t: float | None = None) -> None:
        with self._lock:
            last = self.drift[-1] if self.drift else None
            if last is not None and last.p_values == p_values and last.drift == drift:
                return  # the monitor has not tested a new window since we last asked
            self.drift.append(DriftSample(t=self._at(t), p_values=dict(p_values), drift=drift))

    def set_condition(
        self,
        type_: str,
        status: str,
        reason: str = "",
        message: str = "",
        *,
        t: float | None = None,
    ) -> bool:
        """Record a condition's state; returns True when it changed (a transition)."""
        with self._lock:
            current = self.conditions.get(type_)
            if current is not None and (current.status, current.reason) == (status, reason):
                if current.message != message:
                    self.conditions[type_] = current.model_copy(update={"message": message})
                return False
            change = ConditionChange(
                t=self._at(t), type=type_, status=status, reason=reason, message=message
            )
            self.conditions[type_] = change
            self.transitions.append(change)
            return True

    def set_phase(self, phase: str, *, t: float | None = None) -> bool:
        with self._lock:
            if phase == self.phase:
                return False
            self.phase = phase
            self.transitions.append(ConditionChange(t=self._at(t), type="Phase", status=phase))
            return True

    def set_versions(self, *, champion: str | None = None, challenger: str | None = None) -> None:
        with self._lock:
            if champion is not None:
                self.champion = champion
            if challenger is not None:
                self.challenger = challenger

    def upsert_run(self, run_id: str, **fields: Any) -> RunInfo:
        with self._lock:
            current = self.runs.get(run_id) or RunInfo(run_id=run_id)
            updated = current.model_copy(update={k: v for k, v in fields.items() if v is not None})
            self.runs[run_id] = updated
            return updated

    def upsert_version(self, info: VersionInfo) -> None:
        with self._lock:
            self.versions[info.version] = info

    def add_comparison(self, comparison: Comparison) -> None:
        with self._lock:
            self.comparisons.append(comparison)

    def note(self, text: str) -> None:
        with self._lock:
            if text not in self.notes:
                self.notes.append(text)

    def set_history(self, ref: str, decisions: Iterable[Decision]) -> None:
        with self._lock:
            self.history[ref] = list(decisions)

    def finish(self) -> None:
        with self._lock:
            self.ended_t = self.now()

    # -- readers ---------------------------------------------------------------------------

    def snapshot(self) -> DemoRecord:
        """A consistent copy for rendering while writers keep appending."""
        with self._lock:
            data: dict[str, Any] = {
                name: list(value)
                if isinstance(value, list)
                else dict(value)
                if isinstance(value, dict)
                else value
                for name, value in self.__dict__.items()
            }
        copy = DemoRecord.model_construct(**data)  # items are never mutated in place
        copy._t0 = self._t0
        return copy

    def first_marker(self, kind: str, *more: str) -> Marker | None:
        """The earliest marker of `kind` (or of any of `more` kinds)."""
        kinds = {kind, *more}
        return next((m for m in self.markers if m.kind in kinds), None)

    def markers_of(self, kind: str) -> list[Marker]:
        return [m for m in self.markers if m.kind == kind]

    def traffic_stats(self, window_s: float = 10.0, *, now: float | None = None) -> TrafficStats:
        """Request and row rates, latency and anomaly/fallback rates over the last window."""
        end = self.now() if now is None else now
        with self._lock:
            recent = [r for r in self.requests if end - window_s <= r.t <= end]
        return TrafficStats.of(recent, window_s)

    def stage_durations(self) -> dict[str, float | None]:
        """Seconds per stage of the loop, from the markers (None when a stage never ended).

        detection: recipe change -> retraining requested; training: requested -> the run
        reaches the gate's steps (compare with the champion, register); gate: those steps ->
        the decision on the Model; rollout: decision -> new champion serving all traffic.
        total: recipe change -> new champion serving. Without a seen gate step (a run faster
        than one poll), training ends and the gate starts at the registration.
        """
        order = ["recipe-change", "retrain-requested", "gate-started", "gate-passed", "promoted"]
        times: dict[str, float | None] = {}
        for kind in order:
            marker = self.first_marker(kind) or (
                self.first_marker("registered") if kind == "gate-started" else None
            )
            times[kind] = marker.t if marker else None

        def span(a: str, b: str) -> float | None:
            ta, tb = times[a], times[b]
            return None if ta is None or tb is None else round(tb - ta, 3)

        return {
            "detection_s": span("recipe-change", "retrain-requested"),
            "training_s": span("retrain-requested", "gate-started"),
            "gate_s": span("gate-started", "gate-passed"),
            "rollout_s": span("gate-passed", "promoted"),
            "total_s": span("recipe-change", "promoted"),
        }

    # -- persistence -----------------------------------------------------------------------

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with self._lock:
            tmp.write_text(self.model_dump_json(indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> DemoRecord:
        return cls.model_validate_json(path.read_text())
