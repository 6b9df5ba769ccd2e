"""The demo's acts on a running stack: the first champion, the plant's traffic, a recipe change
that the loop must answer with a retrained champion, both versions compared, a dead sensor."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pandas as pd

from loopline.data.schema import CORE_SENSORS, ENTITY, SENSORS
from loopline.demo.clients import AsyncRestClient
from loopline.demo.comparison import record_versions, score_versions
from loopline.demo.errors import ModelFailed
from loopline.demo.historian import CALLER as HISTORIAN
from loopline.demo.historian import Historian
from loopline.demo.record import DemoRecord
from loopline.demo.stack import DemoStack
from loopline.demo.traffic import (
    Answer,
    GrpcClient,
    InferClient,
    Plant,
    PlantStream,
    RestClient,
)
from loopline.demo.usage import read_usage
from loopline.types.common import registered_model_name
from loopline.wait import wait_for

LANDING_INTERVAL = 2.0  # seconds between writes of the plant's readings to the offline store
# The line's gateway names itself per protocol (`Loopline-Caller`), the historian as such.
GATEWAY_CALLER = "gateway"


def loop_failure(rec: DemoRecord, waiting_for: str) -> str | None:
    """Why the closed loop cannot reach `waiting_for` any more, or None.

    Only the loop's own retraining counts: the first drift-triggered run and the first gate
    decision. A later request (drift against the new champion while its canary runs) may train
    a challenger that the gate rightly rejects; that is the platform working, not the loop
    failing."""
    decision = rec.first_marker("gate-passed", "gate-rejected")
    if (
        decision is not None
        and decision.kind == "gate-rejected"
        and waiting_for in ("gate-passed", "promoted")
    ):
        return f"the gate rejected the challenger: {decision.label}"
    drift_runs = [r for r in list(rec.runs.values()) if r.trigger == "drift"]
    first = min(drift_runs, key=lambda r: r.started_t or 0.0, default=None)
    if first is not None and first.phase == "Failed":
        return (
            f"the retraining run {first.run_id} failed at step {first.step or '-'}: {first.message}"
        )
    return None


class DemoActs(DemoStack):
    """What happens once the stack is up, in the order the scenario runs it."""

    def wait_first_champion(self) -> None:
        rec = self.record
        rec.set_segment("first training")

        def serving() -> bool:
            if rec.phase == "Failed":
                raise ModelFailed(f"the Model failed before serving: {rec.message}")
            return rec.first_marker("serving") is not None

        wait_for(
            serving,
            timeout=self.s.serving_timeout,
            what=f"the first champion of {self.s.model} to serve (phase {rec.phase or '-'})",
        )
        wait_for(
            lambda: rec.endpoints.get("REST") and rec.endpoints.get("GRPC"),
            timeout=60,
            what="REST and gRPC endpoints in the Model's status",
        )
        rec.step(
            "First champion serving",
            detail=f"version {rec.champion} at {rec.endpoints.get('REST')}",
            command=self.kubectl_model("-o", "jsonpath={.status.champion}"),
        )

    def _clients(self) -> list[InferClient]:
        rest = self.record.endpoints["REST"]
        grpc_target = self.record.endpoints["GRPC"].removeprefix("grpc://")
        clients: list[InferClient] = []
        for protocol in self.s.protocols:
            caller = f"{GATEWAY_CALLER}-{protocol}"
            if protocol == "rest":
                clients.append(RestClient(rest, self.s.model, SENSORS, caller=caller))
            elif protocol == "grpc":
                clients.append(GrpcClient(grpc_target, self.s.model, SENSORS, caller=caller))
            else:
                raise ValueError(f"protocols: unknown protocol {protocol!r}; use rest or grpc")
        return clients

    def start_traffic(self) -> None:
        assert self.history is not None
        assert self.landing is not None
        self.stream = PlantStream(
            self.history,
            fault_fraction=self.s.fault_fraction,
            clock=lambda: datetime.now(UTC),
        )
        landing = self.landing
        self.start_prometheus()
        historian = None
        if self.s.historian_burst > 0:
            client = AsyncRestClient(
                self.record.endpoints["REST"], self.s.model, SENSORS, caller=HISTORIAN
            )
            historian = self.historian = Historian(
                client,
                self.record,
                burst=self.s.historian_burst,
                every_s=self.s.historian_every_seconds,
            )

        def on_answer(batch: pd.DataFrame, answer: Answer) -> None:
            landing.add(batch)
            if historian is not None:
                historian.feed(batch)
            if answer.state == "stale" and self._quiet(batch, answer):
                self._stale_seen.set()

        self.plant = Plant(
            self.stream,
            self._clients(),
            self.record,
            rate=self.s.rate,
            trace_machine=self.s.trace_machine,
            trace_features=list(CORE_SENSORS),
            on_answer=on_answer,
        ).start()
        self.record.set_segment("baseline")
        self.stream.set_segment("baseline")
        self.record.step(
            "Plant traffic started",
            detail=f"{self.s.rate:g} requests/s over {', '.join(self.s.protocols)}, "
            f"{self.s.machines} machines per request",
            command=f"curl -s {self.record.endpoints['REST']}/v2/models/{self.s.model}",
        )
        if historian is not None:
            historian.start()
            rest = self.record.endpoints["REST"]
            self.record.step(
                "Historian sending bursts (asynchronous inference)",
                detail=f"{self.s.historian_burst} queued requests every "
                f"{self.s.historian_every_seconds:g} s, caller {HISTORIAN}",
                command=f"curl -si -X POST {rest}/v2/models/{self.s.model}/infer/async "
                "-H 'Loopline-Caller: historian' -d @request.json",
            )

    def _run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._tick()
            time.sleep(0.5)

    def _tick(self) -> None:
        """Periodic work while traffic flows: land new rows for later training runs, and
        inject the fault once the model answers stale."""
        now = time.monotonic()
        if self.landing is not None and not self._landing_stop and now >= self._next_landing:
            self.landing.land()
            self._next_landing = now + LANDING_INTERVAL
        if self._stale_seen.is_set() and not self._fault_injected:
            self.inject_stale_fault()
        self.on_tick()

    def _quiet(self, batch: pd.DataFrame, answer: Answer) -> bool:
        """Whether the trace machine's alarm is inactive in this answer. The stale model's
        threshold alarms every machine between the recipe change and the monitor's verdict,
        and an alarm still active from then would swallow the injected fault's own event."""
        machines = [str(m) for m in batch[ENTITY]]
        if self.s.trace_machine not in machines:
            return False
        i = machines.index(self.s.trace_machine)
        return i < len(answer.alarm_event) and answer.alarm_event[i] == "inactive"

    def inject_stale_fault(self) -> None:
        """A real fault while the model is stale: the alarm must still come (docs/demo.md)."""
        self._fault_injected = True
        if self.stream is None or not self.s.stale_fault:
            return
        machine = self.s.trace_machine
        self.stream.inject_fault(machine, self.s.stale_fault, self.s.stale_fault_readings)
        self.record.mark("fault-injected", f"{self.s.stale_fault} on {machine}")
        self.record.step(
            "Fault injected while the model is stale",
            detail=f"{self.s.stale_fault.replace('_', ' ')} on {machine} for "
            f"{self.s.stale_fault_readings} readings; its alarm event must still come",
            command=f"curl -s {self._metrics_url()} | grep loopline_alarm_events_total",
        )

    def act_recipe_change(self) -> None:
        assert self.stream is not None
        rec = self.record
        self._run_for(self.s.baseline_seconds)
        self.stream.change_recipe(self.s.recipe_shift, segment="recipe-change")
        rec.set_segment("recipe-change")
        rec.mark("recipe-change", f"operating point x{1 + self.s.recipe_shift:g}")
        rec.step(
            "Recipe changed",
            detail=f"feed rate and spindle speed x{1 + self.s.recipe_shift:g}",
            command=self.kubectl_model("-o", "jsonpath={.status.drift}"),
        )
        deadline = time.monotonic() + self.s.loop_timeout
        steps = [
            (
                "retrain-requested",
                "Drift detected: retraining requested",
                self.kubectl_line(
                    "get",
                    "events",
                    "-n",
                    self.s.namespace,
                    "--field-selector",
                    f"involvedObject.name={self.s.model}",
                ),
            ),
            (
                "registered",
                "Retrained on the new recipe: challenger registered",
                self.kubectl_model("-o", "jsonpath={.status.currentRun}"),
            ),
            (
                "gate-passed",
                "Gate passed: the challenger beats the champion",
                self.kubectl_model("-o", "jsonpath={.status.challenger}"),
            ),
            (
                "promoted",
                "Canary done: new champion serves all traffic",
                self.kubectl_model("-o", "jsonpath={.status.champion}"),
            ),
        ]
        for kind, title, command in steps:

            def seen(kind: str = kind) -> bool:
                self._tick()
                failure = loop_failure(rec, kind)
                if failure is not None:
                    raise ModelFailed(failure)
                return rec.first_marker(kind) is not None

            wait_for(
                seen,
                timeout=max(1.0, deadline - time.monotonic()),
                what=f"{kind} (phase {rec.phase or '-'})",
            )
            marker = rec.first_marker(kind)
            rec.step(title, detail=marker.label if marker else "", command=command)
        self._landing_stop = True

    def compare_versions(self) -> None:
        """Both versions on the same fresh post-change data (never seen by either)."""
        assert self.stream is not None
        rec = self.record
        old = rec.first_marker("serving")
        old_version = old.label.removeprefix("version ") if old else ""
        name = registered_model_name(self.s.namespace, self.s.model)
        comparison = score_versions(
            [old_version, rec.champion or ""],
            name,
            self.tracking_uri,
            self.stream.manifest,
            self.s.interval_seconds,
        )
        rec.add_comparison(comparison)
        record_versions(rec, name, self.tracking_uri)
        summary = ", ".join(
            f"v{v}: f1 {m.get('f1', float('nan')):.3f}" for v, m in comparison.metrics.items()
        )
        rec.step("Both versions scored on fresh post-change data", detail=summary)

    def _metrics_url(self) -> str:
        metrics = self.record.endpoints.get("Metrics")
        if metrics:
            return metrics if metrics.endswith("/metrics") else f"{metrics.rstrip('/')}/metrics"
        return f"{self.record.endpoints.get('REST', '')}/metrics"

    def act_dead_sensor(self) -> None:
        assert self.stream is not None
        rec = self.record
        self.stream.kill_sensor(self.s.dead_sensor, segment="dead-sensor")
        rec.set_segment("dead-sensor")
        rec.mark("sensor-dead", self.s.dead_sensor)
        rec.step(
            "Sensor died",
            detail=f"{self.s.dead_sensor} reads NaN on every machine; the fallback answers",
            command=f"curl -s {self._metrics_url()} | grep fallback",
        )
        self._run_for(self.s.dead_sensor_seconds)
        self.stream.revive_sensor(self.s.dead_sensor, segment="sensor-restored")
        rec.mark("sensor-restored", self.s.dead_sensor)
        rec.set_segment("sensor-restored")
        self._run_for(min(3.0, self.s.dead_sensor_seconds))

    def read_usage(self) -> None:
        """The usage table per version and caller from Prometheus (`loopline usage`'s
        source), read after the last request; before the model server stops."""
        if not self.prometheus_url:
            return
        from loopline.monitoring.prometheus_http import PrometheusError

        start = self.record.started_at.timestamp()
        try:
            rows = read_usage(self.prometheus_url, self.s.model, self.s.namespace, start)
        except (PrometheusError, ValueError) as exc:
            self.record.note(f"usage per caller not measured: {exc}")
            return
        self.record.set_usage(rows)
        self.record.step(
            "Usage per caller read from Prometheus",
            detail=", ".join(f"{r.caller} v{r.version}: {r.requests:.0f}" for r in rows),
            command=f"loopline usage --prometheus-url {self.prometheus_url} "
            f"--model {self.s.namespace}/{self.s.model} --since 1h",
        )

    def read_history(self) -> None:
        """The Model's history ledger into the record, for the report's history section: read
        at the end, while the API server still answers (a run that stopped before the cluster
        was up has none; one whose read failed says why in the notes)."""
        if self.api is None:
            return
        from kubernetes import client as k8s
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        from loopline.history.ledger import Ledger

        ns, model = self.s.namespace, self.s.model
        ref = f"{ns}/{model}"
        try:
            decisions = Ledger(k8s.CoreV1Api(self.api)).read(ns, model)
        except (ApiException, HTTPError, OSError) as exc:
            self.record.note(f"the history of {ref} could not be read: {exc}")
            return
        self.record.set_history(ref, decisions)
        self.record.step(
            "Production history read",
            detail=f"{len(decisions)} decisions about {ref}",
            command=f"KUBECONFIG={self.kubeconfig} loopline history {ref}",
        )
