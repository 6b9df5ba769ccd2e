"""`LooplineRuntime`: the MLServer inference runtime that serves a Loopline model bundle.

The model-load pattern: the image holds code only. At load the runtime reads its settings
(`LOOPLINE_SERVING_*` env, overridden by `parameters.extra` in model-settings.json), pins the
champion alias to a version, downloads that version's bundle from MLflow and, if a canary URI
is set, the canary's too. Each request goes to the canary with probability `canary_weight`,
else to the champion; a weight change is a model reload (`POST
/v2/repository/models/{name}/load`), which MLServer performs without dropping requests.

`predict` is the hot path: V2 request -> float32 matrix (no pandas) -> primary and fallback
scoring -> flat V2 outputs. Bad payloads raise `MLServerError`s with 4xx codes naming the
field; MLServer turns them into REST 4xx / gRPC INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.types import (
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    MetadataTensor,
    Parameters,
)
from prometheus_client import Counter, Histogram

from loopline import auth
from loopline.models.windowing import WindowHistory
from loopline.serving import callers
from loopline.serving.alarm_events import AlarmEvents, policy_of, threshold_units
from loopline.serving.drift_state import STALE, UNKNOWN, DriftState
from loopline.serving.metadata import metadata_inputs, metadata_parameters
from loopline.serving.metrics import ServingMetrics, serving_metrics
from loopline.serving.payload import (
    FeatureLayout,
    TensorInput,
    decode_inputs,
    entity_input_name,
)
from loopline.serving.request_headers import detect_protocol, header_caller
from loopline.serving.sampling import PayloadSampler, PendingSample
from loopline.serving.scoring import (
    ALARM_OUTPUT,
    ANOMALY_TASK,
    STATE_OUTPUT,
    ScoredBatch,
    Scorer,
    encode_outputs,
    metadata_outputs,
    score_batch,
)
from loopline.serving.settings import ServingSettings
from loopline.serving.token_review import CallerVerifier, caller_verifier, refusal_of
from loopline.serving.versions import ResolvedModel, resolve_model_uri
from loopline.serving.windows import DETECTOR_OUTPUT, apply_window, window_history

log = logging.getLogger(__name__)

CHAMPION = "champion"
CANARY = "canary"


@dataclass
class LoadedVersion:
    """One model version ready to score."""

    role: str
    resolved: ResolvedModel
    scorer: Scorer
    layout: FeatureLayout
    label: str = ""  # overrides the resolved version in responses and metrics

    @property
    def version(self) -> str:
        return self.label or self.resolved.version


@dataclass(frozen=True)
class Answer:
    """A scored request: which version answered, its task, and the per-row outputs."""

    version: str
    task: str
    scored: ScoredBatch


@dataclass(frozen=True)
class _Series:
    ok: Counter
    batch_size: Histogram
    rows: Counter
    fallback_rows: Counter
    anomaly_rows: Counter
    latency: Histogram
    usage_ok: Counter
    usage_rows: Counter
    usage_fallback_rows: Counter
    usage_latency: Histogram


_SELDON_VERSION = re.compile(r"^(?P<model>.+)-v(?P<version>\d+)$")


def seldon_name_parts(name: str) -> tuple[str, str] | None:
    """(model, version) of a Seldon Model named `<model>-v<version>` (see `seldon.py`)."""
    match = _SELDON_VERSION.match(name)
    return (match["model"], match["version"]) if match else None


def load_version(role: str, uri: str, tracking_uri: str) -> LoadedVersion:
    """Resolve and load one version (blocking: MLflow download, reading the weights)."""
    from loopline.models.bundle import load_bundle

    resolved = resolve_model_uri(uri, tracking_uri)
    bundle = load_bundle(resolved.load_uri, tracking_uri=tracking_uri)
    bundle.warm_up()  # compile scoring now, not on the first request
    layout = FeatureLayout.of(
        bundle.feature_names, bundle.core_feature_names, entity_input_name(bundle.metadata)
    )
    return LoadedVersion(role=role, resolved=resolved, scorer=bundle, layout=layout)


class LooplineRuntime(MLModel):
    """Serves one Loopline Model: its champion and, optionally, a canary version."""

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.config: ServingSettings | None = None
        self.champion: LoadedVersion | None = None
        self.canary: LoadedVersion | None = None
        self.metrics: ServingMetrics = serving_metrics()
        self.sampler: PayloadSampler | None = None
        self._random = random.Random()
        self._series_cache: dict[tuple[str, str, str, str], _Series] = {}
        self.callers = callers.CallerLabels()
        self.drift: DriftState | None = None
        self.alarms: AlarmEvents | None = None
        self.windows: WindowHistory | None = None
        self.verifier: CallerVerifier | None = None

    async def load(self) -> bool:
        params = self.settings.parameters
        self.config = ServingSettings.from_sources(params.extra if params else None)
        cfg = self.config
        uri = cfg.model_uri or (params.uri if params and params.uri else "")
        tracking = cfg.tracking_uri or _default_tracking_uri()
        self.champion = await asyncio.to_thread(load_version, CHAMPION, uri, tracking)
        if cfg.torch_threads:
            # Scoring runs no torch; this matters only where torch is installed and loaded
            # (after a format-1 bundle, or training in the same process). Never imports torch.
            from loopline.models.bundle import set_torch_threads

            set_torch_threads(cfg.torch_threads)
        if self.champion.resolved.registered_name is None:
            # A folder (Seldon's agent downloads the artifact): the registry version comes
            # from the settings, else from the Seldon Model's name `<model>-v<version>`.
            parts = seldon_name_parts(self.name)
            self.champion.label = cfg.version_label or (parts[1] if parts else "")
        if cfg.canary_model_uri:
            self.canary = await asyncio.to_thread(
                load_version, CANARY, cfg.canary_model_uri, tracking
            )
            if self.canary.layout.feature_names != self.champion.layout.feature_names:
                raise MLServerError(
                    f"canary features {list(self.canary.layout.feature_names)} differ from the "
                    f"champion's {list(self.champion.layout.feature_names)}",
                    422,
                )
        elif cfg.canary_weight > 0:
            raise MLServerError("canary_weight > 0 needs canary_model_uri", 422)
        scorer = self.champion.scorer
        self.inputs = metadata_inputs(
            self.champion.layout, fallback=cfg.fallback_on_missing_sensors
        )
        self.outputs = metadata_outputs(scorer.task, len(scorer.class_names))
        self.callers = self.metrics.callers(self.model_label, cfg.callers, cfg.max_callers)
        self.verifier = caller_verifier(cfg)
        self.publish_version_info(1)
        self.sampler = PayloadSampler(
            model=self.model_label,
            feature_names=list(self.champion.layout.feature_names),
            monitor_url=cfg.monitor_url,
            rate=cfg.sample_rate,
            queue_size=cfg.sample_queue_size,
            timeout_s=cfg.sample_timeout_s,
            metrics=self.metrics,
            token=auth.client_token() if cfg.monitor_url else None,
        )
        self.sampler.start()
        self.drift = DriftState(
            cfg.monitor_url, poll_s=cfg.drift_poll_s, timeout_s=cfg.sample_timeout_s
        )
        self.drift.start()
        if scorer.task == ANOMALY_TASK:
            meta = getattr(scorer, "metadata", None) or {}
            policy = policy_of(meta)
            self.alarms = AlarmEvents.of(policy, max_entities=cfg.alarm_max_entities, metadata=meta)
            versions = [v.scorer for v in (self.champion, self.canary) if v is not None]
            self.windows = window_history(versions, max_entities=cfg.alarm_max_entities)
            if self.windows is not None:
                self.outputs.append(
                    MetadataTensor(name=DETECTOR_OUTPUT, datatype="BYTES", shape=[-1])
                )
        log.info(
            "loaded %s: champion %s%s",
            self.name,
            self.champion.version,
            f", canary {self.canary.version} at {cfg.canary_weight:.0%}" if self.canary else "",
        )
        return True

    async def metadata(self) -> MetadataModelResponse:
        """MLServer's metadata with what a generic V2 client needs: the versions this
        runtime serves (champion first) and the model parameters that describe the
        alternative `features` input and the entity (`metadata.metadata_parameters`)."""
        response = await super().metadata()
        loaded = [v for v in (self.champion, self.canary) if v is not None]
        response.versions = list(dict.fromkeys(v.version for v in loaded if v.version))
        if self.champion is not None:
            response.parameters = Parameters(
                **metadata_parameters(self.champion.layout),
                task=str(self.champion.scorer.task),
            )
        return response

    async def unload(self) -> bool:
        if self.sampler is not None:
            await self.sampler.stop()
        if self.drift is not None:
            await self.drift.stop()
        self.publish_version_info(0)
        return True

    def publish_version_info(self, value: int) -> None:
        """1 for each version this runtime serves, 0 once it no longer does. A host that
        swaps runtimes publishes the new one's again after unloading the old one, since
        both may serve the same version."""
        for loaded in (self.champion, self.canary):
            if loaded is not None:
                self.metrics.version_info.labels(
                    self.model_label, loaded.version, loaded.role, str(loaded.scorer.task)
                ).set(value)

    @property
    def model_label(self) -> str:
        if self.config and self.config.model_name:
            return self.config.model_name
        parts = seldon_name_parts(self.name)
        return parts[0] if parts else self.name

    def _series(self, model: str, version: str, protocol: str, caller: str) -> _Series:
        """The labelled children one successful request updates, looked up once per label
        set (a `labels()` call takes a lock and a dict lookup per metric, on every request).
        The caller label is bounded (`callers.CallerLabels`), and so is this cache."""
        key = (model, version, protocol, caller)
        series = self._series_cache.get(key)
        if series is None:
            m = self.metrics
            series = _Series(
                ok=m.requests.labels(model, version, protocol, "ok"),
                batch_size=m.batch_size.labels(model),
                rows=m.rows.labels(model, version),
                fallback_rows=m.fallback_rows.labels(model, version),
                anomaly_rows=m.anomaly_rows.labels(model, version),
                latency=m.latency.labels(model, version, protocol),
                usage_ok=m.usage_requests.labels(model, version, caller, "ok"),
                usage_rows=m.usage_rows.labels(model, version, caller),
                usage_fallback_rows=m.usage_fallback_rows.labels(model, version, caller),
                usage_latency=m.usage_latency.labels(model, version, caller),
            )
            self._series_cache[key] = series
        return series

    def refused(
        self,
        protocol: str,
        exc: MLServerError,
        version: str | None = None,
        caller: str | None = None,
        subject: str | None = None,
    ) -> None:
        """Count and log a request refused for the client's mistake: one INFO line, no
        traceback (the message names what is wrong; the client has it too). Hosts call it
        for what they refuse before the runtime sees a request (an unreadable body, an
        unknown model); `score_inputs` for what decoding refuses. `caller` is the raw
        `Loopline-Caller` header value, `subject` the verified one (`identify`)."""
        if version is None:
            version = self.champion.version if self.champion is not None else ""
        model = self.model_label
        self.metrics.requests.labels(model, version, protocol, "client_error").inc()
        label = self.callers.label(caller, subject)
        self.metrics.usage_requests.labels(model, version, label, "client_error").inc()
        log.info("refused a %s request to %s (%d): %s", protocol, self.name, exc.status_code, exc)

    def pick(self) -> LoadedVersion:
        """Champion, or the canary for a `canary_weight` share of requests."""
        assert self.champion is not None
        assert self.config is not None
        canary = self.canary
        if canary is not None and self._random.random() < self.config.canary_weight:
            return canary
        return self.champion

    async def identify(
        self, authorization: str | None, protocol: str, caller: str | None
    ) -> str | None:
        """The verified subject of a request's bearer token (`token_review`), or None when
        its header decides. With `require_caller_token`, a request without a valid token is
        counted and refused with a 401 naming the header."""
        subject = None if self.verifier is None else await self.verifier.subject(authorization)
        required = self.config is not None and self.config.require_caller_token
        refusal = refusal_of(authorization, subject) if required else None
        if refusal is not None:
            exc = MLServerError(refusal, 401)
            self.refused(protocol, exc, caller=caller, subject=subject)
            raise exc
        return subject

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        protocol, caller = detect_protocol(payload), header_caller(payload)
        subject = await self.identify(header_caller(payload, "authorization"), protocol, caller)
        return await self.infer(payload, protocol, caller, subject)

    async def infer(
        self,
        payload: InferenceRequest,
        protocol: str,
        caller: str | None = None,
        subject: str | None = None,
    ) -> InferenceResponse:
        """The hot path, for MLServer (through `predict`) and for hosts that know the
        protocol and caller without reading `parameters.headers` (`lean_server`)."""
        answer = self.score_inputs(payload.inputs, protocol, caller, subject)
        return InferenceResponse(
            model_name=self.name,
            model_version=answer.version,
            id=payload.id,
            outputs=encode_outputs(answer.scored, answer.task, answer.version),
        )

    def score_inputs(
        self,
        inputs: Sequence[TensorInput],
        protocol: str,
        caller: str | None = None,
        subject: str | None = None,
    ) -> Answer:
        """Pick a version, decode, score, count and sample: everything but the wire format,
        so a host with its own encoder (`v2_json`) shares every rule with `infer`. `caller`
        is the raw `Loopline-Caller` header value (None: the request had none), `subject`
        the verified identity of its bearer token (`identify`), which outranks it."""
        start = time.perf_counter()
        target = self.pick()
        model = self.model_label
        version = target.version
        try:
            assert self.config is not None
            decoded = decode_inputs(inputs, target.layout, max_rows=self.config.max_rows)
            scored = score_batch(
                target.scorer,
                decoded.x,
                target.layout,
                complete=decoded.complete,
                allow_fallback=self.config.fallback_on_missing_sensors,
            )
            detector = None
            if self.windows is not None:
                detector = apply_window(
                    target.scorer, self.windows, decoded.machine_ids, decoded.x, scored
                )
        except MLServerError as exc:
            self.refused(protocol, exc, version, caller, subject)
            raise
        except Exception:
            self.metrics.requests.labels(model, version, protocol, "server_error").inc()
            label = self.callers.label(caller, subject)
            self.metrics.usage_requests.labels(model, version, label, "server_error").inc()
            log.exception("scoring failed for %s version %s", model, version)
            raise
        n = scored.rows
        n_fallback = scored.n_fallback
        m = self._series(model, version, protocol, self.callers.label(caller, subject))
        m.ok.inc()
        m.usage_ok.inc()
        m.batch_size.observe(n)
        m.rows.inc(n)
        m.usage_rows.inc(n)
        if n_fallback:
            m.fallback_rows.inc(n_fallback)
            m.usage_fallback_rows.inc(n_fallback)
        is_anomaly = scored.outputs.get("is_anomaly")
        state = self.drift.state(version) if self.drift is not None else UNKNOWN
        scored.labels[STATE_OUTPUT] = [state.encode()] * n
        if is_anomaly is not None:
            anomalies = int(np.count_nonzero(is_anomaly))
            if anomalies:
                m.anomaly_rows.inc(anomalies)
                if state == STALE:
                    self.metrics.stale_anomaly_rows.labels(model, version).inc(anomalies)
            if self.alarms is not None:
                column, raised = self.alarms.column(
                    decoded.machine_ids,
                    is_anomaly,
                    decoded.x,
                    stale=state == STALE,
                    u=threshold_units(scored.outputs),
                )
                scored.labels[ALARM_OUTPUT] = column
                if raised:
                    self.metrics.alarm_events.labels(model, version, state).inc(raised)
        if detector is not None:
            scored.labels[DETECTOR_OUTPUT] = detector
        task = str(target.scorer.task)
        if self.sampler is not None and self.sampler.enabled:
            anomaly = task == ANOMALY_TASK
            self.sampler.offer(
                PendingSample(
                    model_version=version,
                    x=decoded.x,
                    machine_ids=decoded.machine_ids,
                    scores=scored.outputs["anomaly_score"] if anomaly else None,
                    decisions=is_anomaly,
                    fallback=scored.fallback,
                )
            )
        elapsed = time.perf_counter() - start
        m.latency.observe(elapsed)
        m.usage_latency.observe(elapsed)
        return Answer(version=version, task=task, scored=scored)


def _default_tracking_uri() -> str:
    from loopline.settings import get_settings

    return get_settings().resolved_mlflow_tracking_uri()
