"""The simulated plant: live sensor rows sent to the model server over REST and gRPC.

Requests use the Open Inference Protocol (V2) through the clients of `loopline.demo.clients`.
One request carries one timestamp of readings from every machine, as a plant gateway would
batch them.

The rows come from the data generator's `live_traffic`, chunk by chunk, continuing the
training history; the scenario changes the recipe (a new chunk whose operating point shifts)
and kills a non-core sensor (NaN from then on) while the plant runs.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from loopline.data.faults import inject_fault
from loopline.data.generator import Manifest, live_traffic
from loopline.data.schema import ENTITY, IS_FAULT, TIMESTAMP
from loopline.demo.alarms import ACTIVE, AlarmTracker
from loopline.demo.clients import (
    Answer,
    GrpcClient,
    InferClient,
    InferError,
    RestClient,
    grpc_outputs,
    grpc_request,
    rest_payload,
)
from loopline.demo.record import DemoRecord, InjectedFault, RequestSample, TracePoint

log = logging.getLogger(__name__)

# Re-exported: the plant and its clients are one API to the scenario and the tests.
__all__ = [
    "Answer",
    "GrpcClient",
    "InferClient",
    "InferError",
    "Plant",
    "PlantStream",
    "RestClient",
    "grpc_outputs",
    "grpc_request",
    "kill_sensor",
    "rest_payload",
]

# -- the stream of live rows ------------------------------------------------------------------


@dataclass
class _Injection:
    machine: str
    kind: str
    readings: int
    number: int  # the how-manieth injection of the stream
    done: int = 0


def kill_sensor(frame: pd.DataFrame, sensor: str, machines: Sequence[str] | None = None) -> None:
    """Make `sensor` read NaN (a dead sensor) in `frame`, for some machines or all (in place)."""
    if sensor not in frame.columns:
        raise ValueError(f"sensor {sensor!r} is not a column; columns are {list(frame.columns)}")
    rows = frame[ENTITY].isin(list(machines)) if machines else slice(None)
    frame.loc[rows, sensor] = np.nan


class PlantStream:
    """Batches of live rows, one timestamp (every machine) per batch, generated on demand.

    Thread-safe: several protocol workers pull from one stream. `change_recipe` and
    `kill_sensor` take effect from the next batch on and return its simulated timestamp.

    With a `clock`, each batch is stamped with the clock's time when it is taken instead of
    the generator's simulated time (which runs one interval per batch, far faster than real
    time): readings then land in the offline store at the time they were sent, as a real
    plant's would, and training windows that end "now" contain them.
    """

    def __init__(
        self,
        history: Manifest,
        *,
        chunk_minutes: float = 600.0,
        sensor_faults_per_day: float = 0.0,
        fault_fraction: float | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._manifest = history
        self._clock = clock
        self._last_stamp: datetime | None = None
        self._chunk_minutes = chunk_minutes
        self._sensor_faults = sensor_faults_per_day
        self._fault_fraction = fault_fraction
        self._lock = threading.Lock()
        self._batches: Iterator[pd.DataFrame] = iter(())
        self._next_start: datetime = history.end
        self._pending_recipe: float | None = None
        self._dead: dict[str, list[str] | None] = {}
        self._fault: _Injection | None = None
        self._injections = 0
        self.recipe_changes: list[tuple[datetime, float]] = []
        self.rows_sent = 0
        self.segment = ""

    def _generate(self, recipe_shift: float | None) -> None:
        start = self._next_start
        frame, manifest = live_traffic(
            self._manifest,
            start=start,
            minutes=self._chunk_minutes,
            recipe_change_at=start if recipe_shift is not None else None,
            recipe_shift=recipe_shift if recipe_shift is not None else 0.15,
            fault_fraction=self._fault_fraction,
            sensor_faults_per_day=self._sensor_faults,
        )
        self._manifest = manifest
        self._batches = (group for _, group in frame.groupby(TIMESTAMP, sort=True))

    def next_batch(self) -> pd.DataFrame:
        with self._lock:
            if self._pending_recipe is not None:
                shift, self._pending_recipe = self._pending_recipe, None
                self._generate(shift)
                self.recipe_changes.append((self._next_start, shift))
            batch = next(self._batches, None)
            if batch is None:
                self._generate(None)
                batch = next(self._batches)
            batch = batch.reset_index(drop=True)
            interval = timedelta(seconds=self._manifest.config.interval_seconds)
            self._next_start = batch[TIMESTAMP].iloc[0].to_pydatetime() + interval
            for sensor, machines in self._dead.items():
                kill_sensor(batch, sensor, machines)
            if self._fault is not None:
                fault = self._fault
                if inject_fault(batch, fault.machine, fault.kind).any():
                    fault.done += 1
                    batch.attrs["injected"] = (
                        fault.number,
                        fault.machine,
                        fault.kind,
                        fault.done,
                        fault.readings,
                    )
                if fault.done >= fault.readings:
                    self._fault = None
            if self._clock is not None:
                stamp = pd.Timestamp(self._stamp()).as_unit("ns")
                batch[TIMESTAMP] = pd.DatetimeIndex([stamp] * len(batch)).as_unit("ns")
            self.rows_sent += len(batch)
            batch.attrs["segment"] = self.segment
            return batch

    @property
    def manifest(self) -> Manifest:
        """The generator's manifest of the latest chunk (its end state continues the plant)."""
        return self._manifest

    def set_segment(self, segment: str) -> None:
        """Label batches taken from now on (the scenario's acts), atomically with the data."""
        with self._lock:
            self.segment = segment

    def _stamp(self) -> datetime:
        """The clock's time, strictly after the previous batch's."""
        assert self._clock is not None
        now = self._clock()
        if self._last_stamp is not None and now <= self._last_stamp:
            now = self._last_stamp + timedelta(microseconds=1)
        self._last_stamp = now
        return now

    def change_recipe(self, shift: float, *, segment: str | None = None) -> datetime:
        """From the next batch on, the operating point is scaled by 1 + shift."""
        with self._lock:
            self._pending_recipe = shift
            self.segment = self.segment if segment is None else segment
            return self._next_start

    def inject_fault(self, machine: str, kind: str, readings: int) -> None:
        """From the next batch on, `machine`'s next `readings` rows carry a labelled fault of
        `kind` at full severity (the generator's effects, `loopline.data.faults`)."""
        if readings < 1:
            raise ValueError(f"readings must be >= 1, got {readings}")
        with self._lock:
            self._injections += 1
            self._fault = _Injection(machine, kind, readings, number=self._injections)

    @property
    def injecting(self) -> bool:
        with self._lock:
            return self._fault is not None

    def kill_sensor(
        self,
        sensor: str,
        machines: Sequence[str] | None = None,
        *,
        segment: str | None = None,
    ) -> datetime:
        with self._lock:
            self._dead[sensor] = list(machines) if machines else None
            self.segment = self.segment if segment is None else segment
            return self._next_start

    def revive_sensor(self, sensor: str, *, segment: str | None = None) -> None:
        with self._lock:
            self._dead.pop(sensor, None)
            self.segment = self.segment if segment is None else segment


# -- the driver -------------------------------------------------------------------------------


class Plant:
    """Send batches from a `PlantStream` at a set rate, one worker thread per client.

    Each response becomes a `RequestSample` in the record (with its model state and the
    machines whose alarm events it starts), and the rows of `trace_machine` become
    `TracePoint`s (its core sensors, score, decision and which model answered).
    """

    def __init__(
        self,
        stream: PlantStream,
        clients: Sequence[InferClient],
        record: DemoRecord,
        *,
        rate: float = 10.0,
        trace_machine: str = "drill-01",
        trace_features: Sequence[str] = (),
        on_answer: Callable[[pd.DataFrame, Answer], None] | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 requests/s, got {rate}")
        if not clients:
            raise ValueError("clients: give at least one REST or gRPC client")
        self.stream = stream
        self.clients = list(clients)
        self.record = record
        self.rate = rate
        self.trace_machine = trace_machine
        self.trace_features = list(trace_features)
        self.on_answer = on_answer
        self.alarms = AlarmTracker()
        self._faults: dict[int, InjectedFault] = {}
        self._fault_last: dict[int, float] = {}  # the latest reading of each fault
        self._faults_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Plant:
        per_client = self.rate / len(self.clients)
        for client in self.clients:
            thread = threading.Thread(
                target=self._work,
                args=(client, 1.0 / per_client),
                name=f"plant-{client.protocol}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        for client in self.clients:
            client.close()

    def __enter__(self) -> Plant:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _work(self, client: InferClient, period: float) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.send(client, self.stream.next_batch())
            except Exception:  # the plant keeps going; the failure is in the record
                log.exception("plant worker %s failed", client.protocol)
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()  # behind schedule: don't burst to catch up

    def send(self, client: InferClient, batch: pd.DataFrame) -> Answer | None:
        """One request; its outcome goes into the record. Returns the answer, or None."""
        rec = self.record
        t = rec.now()
        segment = str(batch.attrs.get("segment") or rec.segment)
        start = time.perf_counter()
        try:
            answer = client.infer(batch)
        except InferError as exc:
            rec.add_request(
                RequestSample(
                    t=t,
                    protocol=client.protocol,
                    latency_s=time.perf_counter() - start,
                    rows=len(batch),
                    ok=False,
                    status=f"{exc.status}: {exc}"[:200],
                    segment=segment,
                    caller=client.caller,
                )
            )
            self._injected(t, batch)
            return None
        latency = time.perf_counter() - start
        machines = [str(m) for m in batch[ENTITY]]
        started = self.alarms.starts(machines, answer.alarm_event)
        faulty = (
            {m for m, f in zip(machines, batch[IS_FAULT], strict=True) if f}
            if IS_FAULT in batch.columns
            else set()
        )
        rec.add_request(
            RequestSample(
                t=t,
                protocol=client.protocol,
                latency_s=latency,
                rows=len(batch),
                ok=True,
                segment=segment,
                fallback_rows=answer.fallback_rows,
                anomalies=answer.anomalies,
                model_version=answer.model_version,
                model_state=answer.state,
                stale_anomalies=answer.stale_anomalies,
                alarm_rows=sum(1 for a in answer.alarm_event if a == ACTIVE),
                alarm_starts=started,
                fault_alarm_starts=[m for m in started if m in faulty],
                caller=client.caller,
            )
        )
        self._injected(t, batch)
        rec.add_trace(self._trace(t, batch, answer))
        if self.on_answer is not None:
            self.on_answer(batch, answer)
        return answer

    def _injected(self, t: float, batch: pd.DataFrame) -> None:
        """Record the progress of a fault the stream injected into this batch."""
        injected = batch.attrs.get("injected")
        if not injected:
            return
        number, machine, kind, _done, total = injected
        with self._faults_lock:  # the REST and gRPC workers may answer out of order
            known = self._faults.get(number)
            readings = (known.readings if known else 0) + 1
            last = self._fault_last[number] = max(t, self._fault_last.get(number, t))
            fault = InjectedFault(
                kind=kind,
                machine_id=machine,
                start_t=min(t, known.start_t) if known else t,
                end_t=last if readings >= total else None,
                readings=readings,
                segment=known.segment if known else self.record.segment,
            )
            self._faults[number] = fault
            self.record.add_injected_fault(fault, replaces=known)

    def _trace(self, t: float, batch: pd.DataFrame, answer: Answer) -> list[TracePoint]:
        points = []
        machines = batch[ENTITY].tolist()
        for i, machine in enumerate(machines):
            if machine != self.trace_machine or i >= len(answer.is_anomaly):
                continue
            values: dict[str, float | None] = {}
            for name in self.trace_features:
                v = float(batch[name].iloc[i])
                values[name] = None if math.isnan(v) else v
            truth = bool(batch[IS_FAULT].iloc[i]) if IS_FAULT in batch.columns else None
            points.append(
                TracePoint(
                    t=t,
                    machine_id=str(machine),
                    values=values,
                    score=answer.anomaly_score[i] if i < len(answer.anomaly_score) else None,
                    threshold=answer.threshold[i] if i < len(answer.threshold) else None,
                    is_anomaly=answer.is_anomaly[i],
                    model=answer.model[i] if i < len(answer.model) else "",
                    is_fault=truth,
                    model_state=answer.model_state[i] if i < len(answer.model_state) else "",
                    alarm=answer.alarm_event[i] == ACTIVE if i < len(answer.alarm_event) else None,
                )
            )
        return points
