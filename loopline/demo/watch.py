"""Follow the Model's `status` (and the drift monitor's metrics) into the demo record.

`StatusTracker.update` is pure with respect to the cluster: it takes one Model object as the
API server returned it and turns what changed since the last call into record entries:
phase and condition transitions, runs, versions, and the story's markers (first champion,
retraining requested, challenger registered, gate decided, promoted). `ModelWatcher` polls
the API server in a thread and feeds it; `scrape_drift` reads the monitor's Prometheus text.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loopline.demo.record import DemoRecord
from loopline.types.common import GROUP, VERSION
from loopline.types.runs import PipelineStep

log = logging.getLogger(__name__)

PLURAL = "models"
# Pipeline steps that make up the champion gate (loopline.components.steps): the challenger is
# compared with the champion on the same fresh data, then registered with the decision.
GATE_STEPS = (PipelineStep.COMPARE_WITH_CHAMPION, PipelineStep.REGISTER_MODEL)
_ENDPOINT_LABELS = {"rest": "REST", "grpc": "GRPC", "metrics": "Metrics", "monitor": "Monitor"}


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


class StatusTracker:
    """Turns successive Model objects into record entries and markers (each marker once)."""

    def __init__(self, record: DemoRecord, reach: Callable[[str], str] | None = None) -> None:
        self.record = record
        # How the demo reaches an endpoint of the status from where it runs (the cluster mode
        # turns in-cluster Service names into ClusterIPs); None: as written.
        self.reach = reach or (lambda url: url)
        self.first_champion: str | None = None
        self.champion: str | None = None
        self.requests_seen: set[str] = set()
        self.registered: set[str] = set()
        self.decided: set[str] = set()
        self.gating: set[str] = set()
        self.generation: int | None = None

    def _t(self, stamp: Any) -> float | None:
        when = _parse_time(stamp)
        if when is None:
            return None
        return (when - self.record.started_at).total_seconds()

    def update(self, obj: dict[str, Any]) -> None:
        rec = self.record
        status = obj.get("status") or {}
        self.generation = (obj.get("metadata") or {}).get("generation")
        phase = status.get("phase")
        if phase:
            rec.set_phase(str(phase))
        rec.message = str(status.get("message") or "")
        for cond in status.get("conditions") or []:
            rec.set_condition(
                str(cond.get("type")),
                str(cond.get("status")),
                str(cond.get("reason") or ""),
                str(cond.get("message") or ""),
            )
        endpoints = status.get("endpoints") or {}
        with rec._lock:
            for key in ("rest", "grpc", "metrics", "monitor"):
                if endpoints.get(key):
                    rec.endpoints[_ENDPOINT_LABELS[key]] = self.reach(str(endpoints[key]))
        champion = (status.get("champion") or {}).get("version")
        challenger = (status.get("challenger") or {}).get("version")
        rec.set_versions(
            champion=str(champion) if champion else None,
            challenger=str(challenger) if challenger else "",
        )
        if champion and self.first_champion is None and phase == "Serving":
            self.first_champion = self.champion = str(champion)
            rec.mark("serving", f"version {champion}")
        # In story order, when one poll shows several steps at once.
        self._retraining(status)
        self._runs(status)
        self._drift(status)
        if champion and self.champion is not None and str(champion) != self.champion:
            self.champion = str(champion)
            rec.mark("promoted", f"version {champion}")

    def _runs(self, status: dict[str, Any]) -> None:
        runs = list(status.get("runs") or [])
        current = status.get("currentRun")
        if current:
            runs = [current, *[r for r in runs if r.get("runId") != current.get("runId")]]
        for run in runs:
            run_id = run.get("runId")
            if not run_id:
                continue
            version = run.get("modelVersion")
            info = self.record.upsert_run(
                str(run_id),
                trigger=run.get("trigger"),
                phase=run.get("phase"),
                step=run.get("step"),
                message=run.get("message"),
                mlflow_run_id=run.get("mlflowRunId"),
                model_version=str(version) if version else None,
                started_t=self._t(run.get("startedAt")),
                ended_t=self._t(run.get("finishedAt")),
            )
            if info.trigger != "drift":
                continue
            if run.get("step") in GATE_STEPS and run_id not in self.gating:
                self.gating.add(run_id)
                self.record.mark("gate-started", f"{run.get('step')} ({run_id})")
            if version and run_id not in self.registered:
                self.registered.add(run_id)
                self.record.mark("registered", f"version {version} ({run_id})")
            passed = run.get("gatePassed")
            if passed is not None and run_id not in self.decided:
                self.decided.add(run_id)
                if passed:
                    self.record.mark("gate-passed", f"version {version} beats the champion")
                else:
                    self.record.mark("gate-rejected", str(run.get("message") or ""))

    def _retraining(self, status: dict[str, Any]) -> None:
        for key in ("retraining", "pendingRequest"):
            req = status.get(key)
            if not req or not req.get("requestId"):
                continue
            request_id = str(req["requestId"])
            if request_id in self.requests_seen:
                continue
            self.requests_seen.add(request_id)
            label = str(req.get("trigger") or "")
            try:
                reason = json.loads(req.get("reason") or "{}")
                features = reason.get("features") or []
                if features:
                    label += ": " + ", ".join(features)
            except (TypeError, ValueError):
                pass
            kind = "retrain-requested" if req.get("trigger") == "drift" else "retrain-other"
            self.record.mark(kind, label)

    def _drift(self, status: dict[str, Any]) -> None:
        if "Monitor" in self.record.endpoints:
            return  # the monitor's own metrics (scraped by the watcher) are the finer source
        drift = status.get("drift") or {}
        p_values = drift.get("pValues") or {}
        if p_values:
            self.record.add_drift(
                {str(k): float(v) for k, v in p_values.items()}, drift=bool(drift.get("drifted"))
            )


def parse_drift_metrics(text: str, model: str) -> tuple[dict[str, float], bool | None]:
    """Per-feature p-values and the drift flag of one model from the monitor's /metrics."""
    p_values: dict[str, float] = {}
    detected: bool | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") not in (model, None):
                continue
            if sample.name == "loopline_drift_p_value" and "feature" in sample.labels:
                p_values[sample.labels["feature"]] = float(sample.value)
            elif sample.name == "loopline_drift_detected":
                detected = bool(sample.value)
    return p_values, detected


def scrape_drift(client: httpx.Client, metrics_url: str, model: str, record: DemoRecord) -> bool:
    """Add the monitor's current p-values to the record; False when it could not be read."""
    try:
        response = client.get(metrics_url, timeout=5.0)
        response.raise_for_status()
    except httpx.HTTPError:
        return False
    p_values, detected = parse_drift_metrics(response.text, model)
    if p_values:
        record.add_drift(p_values, drift=bool(detected))
    return True


class ModelWatcher:
    """Poll one Model (and optionally the monitor's metrics) every `interval` seconds."""

    def __init__(
        self,
        api: Any,  # kubernetes.client.ApiClient
        namespace: str,
        name: str,
        record: DemoRecord,
        *,
        interval: float = 0.5,
        reach: Callable[[str], str] | None = None,
    ) -> None:
        from kubernetes import client as k8s

        self._custom = k8s.CustomObjectsApi(api)
        self.namespace = namespace
        self.name = name
        self.tracker = StatusTracker(record, reach)
        self.record = record
        self.interval = interval
        self.monitor_metrics_url: str | None = None
        self.last: dict[str, Any] | None = None
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http = httpx.Client()

    def poll(self) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self._custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name
            )
        except ApiException as exc:
            if exc.status != 404:
                self.errors += 1
                log.debug("reading the Model failed: %s", exc)
            return None
        except Exception as exc:  # connection refused while the apiserver restarts, ...
            self.errors += 1
            log.debug("reading the Model failed: %s", exc)
            return None
        self.last = obj
        self.tracker.update(obj)
        monitor = self.record.endpoints.get("Monitor")
        url = self.monitor_metrics_url or (f"{monitor.rstrip('/')}/metrics" if monitor else None)
        if url:
            scrape_drift(self._http, url, self.name, self.record)
        return obj

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)

    def start(self) -> ModelWatcher:
        self._thread = threading.Thread(target=self._loop, name="model-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._http.close()
