"""The demo's acts on a running stack: the first champion, the plant's traffic, a recipe change
that the loop must answer with a retrained champion, both versions compared, a dead sensor."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from loopline.data.schema import CORE_SENSORS, SENSORS
from loopline.demo.comparison import record_versions, score_versions
from loopline.demo.errors import ModelFailed
from loopline.demo.record import DemoRecord
from loopline.demo.stack import DemoStack
from loopline.demo.traffic import GrpcClient, InferClient, Plant, PlantStream, RestClient
from loopline.types.common import registered_model_name
from loopline.wait import wait_for

LANDING_INTERVAL = 2.0  # seconds between writes of the plant's readings to the offline store


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
            if protocol == "rest":
                clients.append(RestClient(rest, self.s.model, SENSORS))
            elif protocol == "grpc":
                clients.append(GrpcClient(grpc_target, self.s.model, SENSORS))
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
        self.plant = Plant(
            self.stream,
            self._clients(),
            self.record,
            rate=self.s.rate,
            trace_machine=self.s.trace_machine,
            trace_features=list(CORE_SENSORS),
            on_answer=lambda batch, _answer: landing.add(batch),
        ).start()
        self.record.set_segment("baseline")
        self.stream.set_segment("baseline")
        self.record.step(
            "Plant traffic started",
            detail=f"{self.s.rate:g} requests/s over {', '.join(self.s.protocols)}, "
            f"{self.s.machines} machines per request",
            command=f"curl -s {self.record.endpoints['REST']}/v2/models/{self.s.model}",
        )

    def _run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._tick()
            time.sleep(0.5)

    def _tick(self) -> None:
        """Periodic work while traffic flows: land new rows for later training runs."""
        now = time.monotonic()
        if self.landing is not None and not self._landing_stop and now >= self._next_landing:
            self.landing.land()
            self._next_landing = now + LANDING_INTERVAL

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
