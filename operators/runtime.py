"""The operator's I/O around the pure builders: read objects, ask backends, write status.

One `Operator` per process holds the Kubernetes client and the chosen backends. Each
`reconcile_*` call reads the object fresh (so an event handler and the level-based timer
cannot act on stale copies), holds a per-object lock, calls the builder, performs the
actions it returns, then writes `status` with one merge patch (only when it changed) and
queues the builder's Events. The operator is the only writer of `status`; kopf's own
bookkeeping lives in annotations (see handlers.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from loopline.history.ledger import Ledger
from loopline.operators.backends.approvals import Approvals
from loopline.operators.backends.factory import Backends, build_backends
from loopline.operators.batch_runtime import reconcile_batch
from loopline.operators.builders.approval import consults_approvals
from loopline.operators.builders.champion import alias_restoration, record
from loopline.operators.builders.conditions import is_true
from loopline.operators.builders.decisions import (
    alias_decision,
    decisions_of,
    deletion,
    spec_change,
)
from loopline.operators.builders.model import (
    ChampionAlias,
    Event,
    ModelObservation,
    mark_degraded,
    mark_failed,
    reconcile_model,
)
from loopline.operators.builders.model_plan import reject_run
from loopline.operators.builders.monitoring import build_monitor
from loopline.operators.builders.pipeline import reconcile_pipeline
from loopline.operators.builders.runs import RunContext
from loopline.operators.builders.serving import ServingDesired
from loopline.operators.cache import ObjectCache
from loopline.operators.errors import BackendRejected, BackendUnavailable
from loopline.operators.events import EventRecorder
from loopline.operators.kube import validation_message, without_nulls
from loopline.operators.settings import OperatorSettings
from loopline.settings import Settings
from loopline.types.common import (
    GROUP,
    RETRAIN_ANNOTATION,
    RETRAIN_REASON_ANNOTATION,
    VERSION,
    registered_model_name,
)
from loopline.types.history import Decision
from loopline.types.model import ModelSpec
from loopline.types.pipeline import PipelineSpec
from loopline.types.status import Endpoints, ModelPhase, ModelStatus, PipelineStatus

log = logging.getLogger(__name__)

__all__ = ["Backends", "Operator", "build_backends"]  # the handlers build both through here


def utcnow() -> datetime:
    return datetime.now(UTC)


class Operator:
    def __init__(
        self,
        api: k8s.ApiClient,
        backends: Backends,
        settings: OperatorSettings,
        context: RunContext | None = None,
    ) -> None:
        self.api = api
        self.custom = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)
        self.pipelines = backends.pipelines
        self.serving = backends.serving
        self.monitoring = backends.monitoring
        self.registry = backends.registry
        self.settings = settings
        self.context = context or RunContext(
            mlflow_tracking_uri=Settings().resolved_mlflow_tracking_uri(),
            feature_repo=settings.feature_repo,
        )
        self.approvals = Approvals(self.custom)
        self.history = Ledger(self.core, settings.history_chunk_size, settings.history_chunks)
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._written: dict[tuple[str, str, str], str] = {}
        self.cache = ObjectCache()
        self.events = EventRecorder(self._post_event)

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _locked(self, plural: str, namespace: str, name: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault((plural, namespace, name), threading.Lock())
        with lock:
            yield

    def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The watch's newest copy when the watch feeds the cache, else a GET."""
        held = self.cache.get(plural, namespace, name)
        if held is not None or self.cache.absent(plural, namespace, name):
            return held
        try:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                self.cache.remember_absent(plural, namespace, name)
                return None
            raise
        return obj

    def _patch_status(self, plural: str, obj: dict[str, Any], status: Any) -> None:
        new = status.model_dump(mode="json", by_alias=True)
        if without_nulls(new) == without_nulls(obj.get("status") or {}):
            return
        meta = obj["metadata"]
        try:
            done = self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], plural, meta["name"], {"status": new}
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise
            return
        key = (plural, meta["namespace"], meta["name"])
        self._written[key] = done["metadata"]["resourceVersion"]
        self.cache.update_if_held(plural, done)

    def wrote(self, key: tuple[str, str, str], resource_version: str | None) -> bool:
        """Whether `resource_version` is the operator's own last status write of `key` (its
        watch event then brings nothing the operator does not know)."""
        return resource_version is not None and self._written.get(key) == resource_version

    def event(self, obj: dict[str, Any], event: Event) -> None:
        """Queue a core/v1 Event about `obj`; posted beside the reconcile (operators/events.py)."""
        self.events.record(obj, event, utcnow())

    def _post_event(self, namespace: str, body: dict[str, Any]) -> None:
        response = self.core.create_namespaced_event(namespace, body, _preload_content=False)
        response.read()  # drained, so the connection is reused; the answer is not needed
        response.release_conn()

    def record(self, obj: dict[str, Any], decisions: list[Decision]) -> None:
        """Append decisions to the Model's history ledger (best effort, like Events: a
        ledger the API server refuses must not stop serving; the failure is logged and
        posted as a HistoryNotRecorded Event)."""
        if not decisions:
            return
        meta = obj["metadata"]
        try:
            self.history.append(meta["namespace"], meta["name"], decisions)
        except (ApiException, OSError) as exc:
            kinds = ", ".join(d.kind for d in decisions)
            log.warning("%s: history not recorded (%s): %s", meta["name"], kinds, exc)
            self.event(obj, Event("Warning", "HistoryNotRecorded", f"{kinds}: {exc}"))

    # -- Model ----------------------------------------------------------------------------

    def _pipeline(self, namespace: str, name: str) -> tuple[PipelineSpec | None, str]:
        obj = self._get("pipelines", namespace, name)
        if obj is None:
            return None, (
                f"spec.pipelineRef.name: Pipeline {name!r} not found in namespace "
                f"{namespace!r}; create it (pipelines.{GROUP})"
            )
        try:
            return PipelineSpec.model_validate(obj.get("spec") or {}), ""
        except ValidationError as exc:
            return None, validation_message(exc, f"Pipeline {name} spec")

    def reconcile_model(self, namespace: str, name: str) -> None:
        """Bring one Model a step closer to its spec; raises BackendUnavailable (after
        recording Degraded) so the caller can retry with backoff."""
        with self._locked("models", namespace, name):
            obj = self._get("models", namespace, name)
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                return
            self._reconcile_model(obj)

    def _reconcile_model(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation", 1)
        now = utcnow()
        try:
            status = ModelStatus.model_validate(obj.get("status") or {})
        except ValidationError as exc:
            # A status we cannot read is rebuilt, not trusted (run ids are derived, so the
            # rebuilt status adopts the same runs).
            log.warning("%s/%s: unreadable status, rebuilding: %s", namespace, name, exc)
            status = ModelStatus()
        try:
            spec = ModelSpec.model_validate(obj.get("spec") or {})
        except ValidationError as exc:
            message = validation_message(exc, "spec")
            failed = mark_failed(status, generation, "InvalidSpec", message, now)
            if status.phase != ModelPhase.FAILED:
                self.event(obj, Event("Warning", "InvalidSpec", message))
            self._patch_status("models", obj, failed)
            return
        changed = spec_change(meta, status, now)
        self.record(obj, [changed] if changed is not None else [])
        pipeline, pipeline_message = self._pipeline(namespace, spec.pipeline_ref.name)
        try:
            run = self.pipelines.status(status.current_run.run_id) if status.current_run else None
            serving = self.serving.observe(namespace, name)
            drift_check = self.monitoring.check(namespace, name) if self.monitoring else None
            approvals = (
                self.approvals.of(namespace, name) if consults_approvals(spec, status) else ()
            )
        except BackendUnavailable as exc:
            self._degrade(obj, status, generation, "BackendUnavailable", str(exc), now)
            raise
        observation = ModelObservation(
            namespace=namespace,
            name=name,
            uid=meta["uid"],
            generation=generation,
            annotations=meta.get("annotations") or {},
            spec=spec,
            status=status,
            pipeline=pipeline,
            pipeline_message=pipeline_message,
            run=run,
            serving=serving,
            now=now,
            drift_check=drift_check,
            approvals=approvals,
        )
        plan = reconcile_model(observation, self.context)
        new_status, rejected = plan.status, None
        batch_events: list[Event] = []
        try:
            if plan.cancel:
                self.pipelines.cancel(plan.cancel)
            if plan.submit is not None:
                self.pipelines.submit(plan.submit)
            # The alias before the monitor: a monitor (re)started for a new champion loads
            # its reference from the alias.
            previous = status.champion.version if status.champion else None
            new_status = self._point_champion(obj, plan.champion_alias, previous, new_status, now)
            if self.registry is not None:
                self.registry.mark_rollouts(plan.rollout_marks)
            new_status, monitor_url = self._apply_monitor(
                namespace, name, spec, plan.serving, new_status
            )
            if plan.serving is not None:
                self.serving.apply(replace(plan.serving, monitor_url=monitor_url))
            elif serving is not None:
                self.serving.delete(namespace, name)  # scaled to zero
            batch, batch_events = reconcile_batch(
                self.pipelines, meta, spec, new_status, self.context, now
            )
            new_status = new_status.model_copy(update={"batch": batch})
        except BackendUnavailable as exc:
            # Keep what the plan decided (e.g. the run id); it is asked for again next time.
            self._degrade(obj, new_status, generation, "BackendUnavailable", str(exc), now)
            raise
        except BackendRejected as exc:
            rejected = str(exc)
            new_status = reject_run(new_status, generation, rejected, now)
            self.event(obj, Event("Warning", "BackendRejected", rejected))
        # Before the status: a decision recorded twice (status write lost) beats one lost.
        self.record(obj, decisions_of(observation, plan, rejected))
        self._patch_status("models", obj, new_status)
        self.approvals.mark(namespace, plan.approval_marks)
        for event in [*plan.events, *batch_events]:
            self.event(obj, event)

    def _point_champion(
        self,
        obj: dict[str, Any],
        alias: ChampionAlias | None,
        previous: str | None,
        status: ModelStatus,
        now: datetime,
    ) -> ModelStatus:
        """Point the registry's champion alias (read on every reconcile: someone else may
        have moved it) and return `status`, with a history entry when the alias had to be
        put back. A running monitor is told to reload whenever the alias moved (it would
        otherwise notice within its poll period and test windows against the wrong
        reference meanwhile, or keep the reference of a version the gate rejected)."""
        if alias is None or self.registry is None:
            return status
        check = self.registry.ensure_champion(alias)
        if not check.moved:
            return status
        meta = obj["metadata"]
        if self.monitoring is not None:
            self.monitoring.reload_reference(meta["namespace"], meta["name"])
        restored = alias_restoration(check, previous, now)
        if restored is None:
            return status
        event, entry = restored
        log.warning("%s/%s: %s", meta["namespace"], meta["name"], event.message)
        self.event(obj, event)
        self.record(obj, [alias_decision(entry, meta, status)])
        return record(status, entry)

    def _apply_monitor(
        self,
        namespace: str,
        name: str,
        spec: ModelSpec,
        serving: ServingDesired | None,
        status: ModelStatus,
    ) -> tuple[ModelStatus, str]:
        """Start/stop the Model's drift monitor; the status with its endpoint, and the URL the
        model server samples to ("" without a monitor)."""
        if self.monitoring is None:
            return status, ""
        champion = serving.champion_version if serving is not None else None
        desired = build_monitor(namespace, name, spec, champion)
        if desired is None:
            self.monitoring.delete(namespace, name)
            return status, ""
        url = self.monitoring.apply(desired)  # the sampler appends loopline.samples.SAMPLES_PATH
        endpoints = status.endpoints or Endpoints()
        status = status.model_copy(
            update={"endpoints": endpoints.model_copy(update={"monitor": url})}
        )
        return status, url

    def _degrade(
        self,
        obj: dict[str, Any],
        status: ModelStatus,
        generation: int,
        reason: str,
        message: str,
        now: datetime,
    ) -> None:
        was = is_true(list(status.conditions), "Degraded")
        self._patch_status("models", obj, mark_degraded(status, generation, reason, message, now))
        if not was:
            self.event(obj, Event("Warning", reason, message))

    def cleanup_model(self, body: dict[str, Any], retry: int) -> bool:
        """Remove what a Model made outside Kubernetes. True when done or given up (the
        finalizer may go); raises BackendUnavailable to be retried. It waits for a reconcile
        under way, which would otherwise re-create what this removes and leave it behind."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        with self._locked("models", namespace, name):
            try:
                for run_id in self.pipelines.runs_of(namespace, name):
                    self.pipelines.cancel(run_id)
                self.serving.delete(namespace, name)
                if self.monitoring is not None:
                    self.monitoring.delete(namespace, name)
                self.serving.forget(namespace, name)
                if self.registry is not None:
                    self.registry.release(registered_model_name(namespace, name))
            except (BackendUnavailable, BackendRejected, OSError) as exc:
                if retry < self.settings.cleanup_retries:
                    raise BackendUnavailable(f"cleanup of {namespace}/{name}: {exc}") from exc
                message = (
                    f"gave up cleaning up after {retry + 1} attempts: {exc}; remove leftovers "
                    "by hand (serving processes, runs, the MLflow aliases); the Model is "
                    "deleted anyway"
                )
                self.event(body, Event("Warning", "CleanupAbandoned", message))
        self.record(body, [deletion(meta, utcnow())])
        self._written.pop(("models", namespace, name), None)
        return True

    # -- Pipeline -------------------------------------------------------------------------

    def reconcile_pipeline(self, namespace: str, name: str) -> None:
        with self._locked("pipelines", namespace, name):
            obj = self._get("pipelines", namespace, name)
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                return
            meta = obj["metadata"]
            now = utcnow()
            try:
                status = PipelineStatus.model_validate(obj.get("status") or {})
            except ValidationError:
                status = PipelineStatus()
            try:
                spec = PipelineSpec.model_validate(obj.get("spec") or {})
            except ValidationError as exc:
                log.warning("%s", validation_message(exc, f"Pipeline {name} spec"))
                return
            models: dict[str, ModelStatus] = {}
            listing = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "models")
            for model in listing.get("items", []):
                if (model.get("spec") or {}).get("pipelineRef", {}).get("name") != name:
                    continue
                try:
                    models[model["metadata"]["name"]] = ModelStatus.model_validate(
                        model.get("status") or {}
                    )
                except ValidationError:
                    models[model["metadata"]["name"]] = ModelStatus()
            created = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))
            plan = reconcile_pipeline(spec, status, meta.get("generation", 1), created, models, now)
            for request in plan.requests:
                patch = {
                    "metadata": {
                        "annotations": {
                            RETRAIN_ANNOTATION: request.request_id,
                            RETRAIN_REASON_ANNOTATION: request.reason,
                        }
                    }
                }
                self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, "models", request.model, patch
                )
                self.event(
                    obj,
                    Event(
                        "Normal",
                        "ScheduledRun",
                        f"retraining {request.model} ({request.request_id})",
                    ),
                )
            old_error = status.conditions[0].message if status.conditions else ""
            if plan.error and plan.error != old_error:
                self.event(obj, Event("Warning", "ScheduleInvalid", plan.error))
            self._patch_status("pipelines", obj, plan.status)

    def close(self) -> None:
        self.events.close()
        self.serving.close()
        if callable(close := getattr(self.pipelines, "close", None)):  # the local fork worker
            close()
        if self.monitoring is not None:
            self.monitoring.close()
        self.api.close()
