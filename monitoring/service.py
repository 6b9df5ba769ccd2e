"""`DriftMonitor`: queue -> sliding window -> detector -> decision -> retraining request.

One instance per Model. The HTTP layer (`app.py`) only calls `submit` (cheap, never blocks on
testing) and reads `status`; a worker thread drains the queue, tests each due window, decides,
persists, and delivers a pending request, retrying it until it lands. The same object runs
without the thread (`process()`) in benchmarks and unit tests.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from loopline.samples import SampleBatch

from .decision import (
    Decision,
    DecisionState,
    Policy,
    RetrainRequest,
    decide,
    delivered,
    rearm,
)
from .detectors import Detector, DriftResult, build_detector
from .intake import SampleRows
from .metrics import MonitorMetrics
from .reference import Reference, ReferenceSource
from .retrain import RetrainRequester
from .settings import MonitorSettings
from .state import StateStore
from .status import status_of
from .window import SampleQueue, SlidingWindow

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0
# Until a first reference loads, samples are dropped; a champion is usually moments away (its
# alias moves once its server is ready), so look for it more often than the usual poll.
NO_REFERENCE_POLL_SECONDS = 5.0


class DriftMonitor:
    def __init__(
        self,
        settings: MonitorSettings,
        *,
        reference_source: ReferenceSource,
        requester: RetrainRequester,
        metrics: MonitorMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.model = settings.model
        self.source = reference_source
        self.requester = requester
        self.metrics = metrics or MonitorMetrics()
        self.clock = clock
        self.policy = Policy(
            consecutive_windows=settings.consecutive_windows,
            cooldown_seconds=settings.cooldown_seconds,
            retrain_on_drift=settings.retrain_on_drift,
        )
        self.store = StateStore(settings.resolved_state_dir())
        self.state = DecisionState()
        self.reference: Reference | None = None
        self.detector: Detector | None = None
        self.feature_names: list[str] = []
        self.queue = SampleQueue(settings.queue_rows, 1)
        self.window = SlidingWindow(settings.window_size, settings.step, 1)
        self._intake: tuple[list[str], SampleQueue] = (self.feature_names, self.queue)
        self.received = 0
        self.dropped = 0
        self.last_result: DriftResult | None = None
        self.last_error = ""
        self._decisions: deque[bool] = deque(maxlen=settings.anomaly_window)
        self._work = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dirty = False
        self._last_persist = 0.0
        # While `process` holds rows off the queue or decisions not on disk: not `idle`.
        self._processing = False
        self._next_retry = 0.0
        self._next_poll = 0.0
        self._init_series()
        self._restore()
        self._try_reference(initial=True)

    def _init_series(self) -> None:
        """Create the per-model series at zero, so dashboards and alerts see them from the start
        (a counter that appears only at its first increment hides the first rate)."""
        m, model = self.metrics, self.model
        for counter in (m.received, m.dropped):
            counter.labels(model)
        m.retraining.labels(model, "drift")
        m.windows.labels(model, "drift")
        m.windows.labels(model, "stable")
        for gauge in (m.detected, m.consecutive, m.window_rows, m.queue_rows, m.cooldown):
            gauge.labels(model).set(0)

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"monitor-{self.model}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker, test what is due, and persist everything."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.process()
        self.persist()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            try:
                self.process()
                self._poll_reference()
            except Exception as exc:  # the worker must outlive one bad window or a flaky API
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("drift monitor iteration failed")

    # ---- ingestion ---------------------------------------------------------------------

    def submit(self, batch: SampleBatch | SampleRows) -> dict[str, int]:
        """Queue a batch's rows for testing; return how many were accepted and dropped."""
        sample = batch if isinstance(batch, SampleRows) else SampleRows.from_batch(batch)
        n = len(sample)
        self.metrics.received.labels(self.model).inc(n)
        self.received += n
        self._record_decisions(sample)
        if self.reference is None:
            self.dropped += n
            self.metrics.dropped.labels(self.model).inc(n)
            return {"accepted": 0, "dropped": n}
        # One read of (names, queue): a reference with other features swaps both together.
        names, queue = self._intake
        rows = _align(sample, names)
        missing = np.isnan(rows).sum(axis=0)
        for j in np.flatnonzero(missing):
            self.metrics.missing.labels(self.model, names[j]).inc(int(missing[j]))
        dropped = queue.put(rows)
        if dropped:
            self.dropped += dropped
            self.metrics.dropped.labels(self.model).inc(dropped)
        self.metrics.queue_rows.labels(self.model).set(len(queue))
        self._dirty = True
        self._wake.set()
        return {"accepted": n, "dropped": dropped}

    def _record_decisions(self, sample: SampleRows) -> None:
        if sample.decisions is None:
            return
        decisions = sample.decisions
        self._decisions.extend(decisions.tolist())
        if self._decisions:
            self.metrics.anomaly_rate.labels(self.model).set(
                sum(self._decisions) / len(self._decisions)
            )
        machines = np.asarray(sample.machine_ids or ["unknown"] * len(decisions), dtype=object)
        # One counter update per machine in the batch, not per row.
        ids, inverse = np.unique(machines, return_inverse=True)
        scored = np.bincount(inverse, minlength=len(ids))
        anomalies = np.bincount(inverse, weights=decisions, minlength=len(ids))
        for machine, count, flagged in zip(
            ids.tolist(), scored.tolist(), anomalies.tolist(), strict=True
        ):
            self.metrics.scored.labels(self.model, machine).inc(count)
            self.metrics.anomalies.labels(self.model, machine).inc(int(flagged))

    def anomaly_rate(self) -> float | None:
        return sum(self._decisions) / len(self._decisions) if self._decisions else None

    # ---- testing -----------------------------------------------------------------------

    def process(self) -> int:
        """Test every window the queued rows complete; deliver a pending request. Returns the
        number of windows tested."""
        with self._work:
            self._processing = True
            try:
                return self._drain()
            finally:
                self._processing = False

    def _drain(self) -> int:
        tested = 0
        unsaved = False
        if self.detector is not None:
            while True:
                chunk = self.queue.take(self.window.room())
                if chunk.shape[0]:
                    self.window.add(chunk, self.clock())
                if self.window.due():
                    self._test_window()
                    tested += 1
                    unsaved = True
                    # Rows arriving as fast as they are tested must not defer the write.
                    if self.clock() - self._last_persist >= self.settings.persist_seconds:
                        self.persist()
                        unsaved = False
                elif chunk.shape[0] == 0:
                    break
            if unsaved:
                self.persist()
            self.metrics.queue_rows.labels(self.model).set(len(self.queue))
            self.metrics.window_rows.labels(self.model).set(self.window.rows.shape[0])
        self._deliver_pending()
        self.metrics.cooldown.labels(self.model).set(self.state.cooldown_remaining(self.clock()))
        if self._dirty and self.clock() - self._last_persist >= self.settings.persist_seconds:
            self.persist()
        return tested

    def _test_window(self) -> None:
        assert self.detector is not None
        result = self.detector.test(self.window.rows)
        self.window.mark_tested()
        self.last_result = result
        self._export(result)
        state, request = decide(
            self.state,
            result,
            policy=self.policy,
            now=self.clock(),
            model=self.model,
            namespace=self.settings.namespace,
            window_start=self._drift_arrival(result),
        )
        self.state = state
        self.metrics.consecutive.labels(self.model).set(state.consecutive)
        if request is not None:
            self.metrics.retraining.labels(self.model, request.trigger).inc()
            log.warning(
                "drift in %d windows in a row on %s: %s; requesting retraining (%s)",
                self.policy.consecutive_windows,
                self.model,
                ", ".join(request.features),
                request.request_id,
            )
        # A request's decision is on disk before anything acts on it. Other windows' decisions
        # are written once per drained batch, by `process` (group commit): they are lost by a
        # crash only together with the rows that produced them, which the file still holds
        # (queued) or never had, so a restart recomputes them.
        if request is not None:
            self.persist()
            self._next_retry = 0.0
            self._deliver_pending()

    def _drift_arrival(self, result: DriftResult) -> float | None:
        """Since when the tested window's rows look drifted: after the shift in its most
        drifted feature (the first drifted window of a streak holds older rows too), else
        its oldest row. `decide` uses it only for a streak's first window."""
        drifted = [f for f in result.features if f.drifted and f.name in self.feature_names]
        if not result.is_drift or not drifted:
            return self.window.oldest_arrival()
        top = max(drifted, key=lambda f: f.statistic)
        shifted = self.window.shift_arrival(self.feature_names.index(top.name))
        return shifted if shifted is not None else self.window.oldest_arrival()

    def _export(self, result: DriftResult) -> None:
        m, model = self.metrics, self.model
        m.check_duration.labels(model).observe(result.duration_seconds)
        m.detected.labels(model).set(1 if result.is_drift else 0)
        m.windows.labels(model, "drift" if result.is_drift else "stable").inc()
        for f in result.features:
            m.p_value.labels(model, f.name).set(f.p_value)
            m.statistic.labels(model, f.name).set(f.statistic)
            m.feature_detected.labels(model, f.name).set(1 if f.drifted else 0)

    def _deliver_pending(self) -> None:
        pending = self.state.pending_request
        if pending is None or self.clock() < self._next_retry:
            return
        request = RetrainRequest.from_dict(pending)
        try:
            self.requester.request(request)
        except Exception as exc:
            self.last_error = f"retraining request {request.request_id} failed: {exc}"
            log.warning("%s; retrying in %.0fs", self.last_error, RETRY_SECONDS)
            self._next_retry = self.clock() + RETRY_SECONDS
            return
        self.state = delivered(self.state, request.request_id)
        self.persist()

    # ---- reference ---------------------------------------------------------------------

    def _try_reference(self, *, initial: bool = False) -> None:
        try:
            self.reload_reference()
        except Exception as exc:
            self.last_error = f"reference not loaded: {exc}"
            if initial:
                log.warning("%s; samples are dropped until it loads", self.last_error)

    def _poll_reference(self) -> None:
        every = self.settings.reference_poll_seconds
        if every <= 0 or self.clock() < self._next_poll:
            return
        self._try_reference()
        if self.reference is None:
            every = min(every, NO_REFERENCE_POLL_SECONDS)
        self._next_poll = self.clock() + every

    def reload_reference(self, *, force: bool = False) -> bool:
        """Load the source's reference if its version changed (or `force`); True if replaced.

        A new version means a new champion: the detector is rebuilt and the decision state
        re-arms. Live rows already in the window are kept (they are still today's traffic)."""
        version = self.source.current_version()
        with self._work:
            if self.reference is not None and version == self.reference.version and not force:
                return False
            reference = self.source.load()
            detector = build_detector(
                self.settings.detector,
                reference.values,
                reference.feature_names,
                p_value=self.settings.p_value,
                correction=self.settings.correction,
                min_statistic=self.settings.min_statistic,
                min_rows=self.settings.min_feature_rows,
                permutations=self.settings.mmd_permutations,
                max_rows=self.settings.mmd_max_rows,
            )
            if reference.feature_names != self.feature_names:
                self._reshape(reference.feature_names)
            if self.reference is not None:
                self.metrics.reference_info.remove(self.model, self.reference.version)
            self.reference, self.detector = reference, detector
            previous = self.state.reference_version
            if previous != reference.version:
                self.state = rearm(self.state, reference.version)
                if previous:
                    log.info("new reference %s (was %s): re-armed", reference.version, previous)
                elif self.state.windows_tested == 0:
                    self.state = replace(self.state, decision=Decision.NONE.value)
            self.metrics.reference_rows.labels(self.model).set(reference.values.shape[0])
            self.metrics.reference_info.labels(self.model, reference.version).set(1)
            self.last_error = ""
            self.persist()
        return True

    def _reshape(self, feature_names: list[str]) -> None:
        """New feature set: rows kept under the old columns cannot be compared; start over."""
        if self.feature_names:
            log.warning("reference features changed; discarding the window and queue")
        self.feature_names = list(feature_names)
        width = len(self.feature_names)
        self.queue = SampleQueue(self.settings.queue_rows, width)
        self.window = SlidingWindow(self.settings.window_size, self.settings.step, width)
        self._intake = (self.feature_names, self.queue)

    # ---- persistence -------------------------------------------------------------------

    def persist(self) -> None:
        with self._work:
            meta = {
                "model": self.model,
                "feature_names": self.feature_names,
                "decision": self.state.to_dict(),
                "since_test": self.window.since_test,
                "rows_seen": self.window.rows_seen,
                # When each window row arrived: a drift's start survives a restart.
                "window_arrivals": [
                    None if math.isnan(t) else round(t, 3) for t in self.window.arrivals.tolist()
                ],
            }
            self.store.save(meta, self.window.rows, self.queue.snapshot())
            self._dirty = False
            self._last_persist = self.clock()

    def _restore(self) -> None:
        snap = self.store.load()
        if snap is None:
            return
        self.state = DecisionState.from_dict(snap.meta.get("decision", {}))
        names = list(snap.meta.get("feature_names", []))
        if names:
            self._reshape(names)
            saved = snap.meta.get("window_arrivals")
            arrivals = (
                np.array([np.nan if t is None else float(t) for t in saved], dtype=np.float64)
                if isinstance(saved, list) and len(saved) == snap.window.shape[0]
                else None
            )
            self.window = SlidingWindow(
                self.settings.window_size,
                self.settings.step,
                len(names),
                rows=snap.window,
                arrivals=arrivals,
            )
            self.window.since_test = int(snap.meta.get("since_test", 0))
            self.window.rows_seen = int(snap.meta.get("rows_seen", 0))
            if snap.queue.shape[0]:
                self.queue.put(snap.queue)
        log.info(
            "restored monitor state: %d windows tested, decision %s, %d window rows",
            self.state.windows_tested,
            self.state.decision,
            self.window.rows.shape[0],
        )

    # ---- reporting ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The `GET /v1/status` body (`loopline.types.monitor.MonitorStatus`, as JSON)."""
        return status_of(self).to_json_dict()

    def idle(self) -> bool:
        """Nothing queued, no test due, and every tested window on disk (tests wait on this)."""
        return not self._processing and len(self.queue) == 0 and not self.window.due()


def _align(sample: SampleRows, names: list[str]) -> np.ndarray:
    """Rows in the reference's feature order, NaN where missing or not finite; a feature the
    batch lacks is all-missing. The batch's own array when it is already in that order."""
    values = sample.values
    if sample.feature_names != names:
        position = {name: i for i, name in enumerate(sample.feature_names)}
        out = np.full((values.shape[0], len(names)), np.nan)
        for j, name in enumerate(names):
            i = position.get(name)
            if i is not None:
                out[:, j] = values[:, i]
        values = out
    finite = np.isfinite(values)
    if not finite.all():
        values = np.where(finite, values, np.nan)
    return values
