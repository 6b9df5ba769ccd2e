"""Training runs as the operator asks for them: identity, parameters, spec.

The run id is a pure function of the Model's uid, generation, trigger and cause (the retraining
request id, or the hash of the training inputs for a spec change). A restarted operator therefore
computes the same id for the same cause and the backend, keyed by run id, adopts the run instead
of starting a second one.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loopline.types.alarms import AlarmPolicy
from loopline.types.common import Trigger, registered_model_name
from loopline.types.model import ModelSpec
from loopline.types.pipeline import PipelineSpec
from loopline.types.policy import TrainingParams
from loopline.types.runs import TrainingRunSpec

_RUN_ID_MAX = 63


def _digest(*parts: object, length: int = 12) -> str:
    text = json.dumps([str(p) for p in parts])
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def run_id(uid: str, generation: int, trigger: Trigger, cause: str, name: str = "") -> str:
    """A DNS-label-safe id, readable (model name first) and unique per cause."""
    prefix = re.sub(r"[^a-z0-9-]", "-", name.lower())[:40].strip("-")
    digest = _digest(uid, generation, trigger.value, cause)
    return f"{prefix}-{digest}"[-_RUN_ID_MAX:] if prefix else f"run-{digest}"


def merged_params(pipeline: PipelineSpec, model: ModelSpec) -> TrainingParams:
    """Pipeline defaults, overridden by the fields the Model's spec.training sets."""
    base = pipeline.parameters.model_dump(by_alias=True)
    if model.training is not None:
        base.update(model.training.model_dump(by_alias=True, exclude_unset=True))
    return TrainingParams.model_validate(base)


def training_inputs(pipeline: PipelineSpec, model: ModelSpec) -> dict[str, Any]:
    """Everything that changes what a training run produces (not serving or monitoring).

    `alarms` only when the Model sets it: a Model without it trains as before, so its hash,
    and whether the operator starts a run for it, stays what it was."""
    alarms = {} if model.alarms is None else {"alarms": model.alarms.model_dump(by_alias=True)}
    return alarms | {
        "task": model.task.value,
        "pipeline": pipeline.pipeline or pipeline.package_uri,
        "featureService": model.feature_service or pipeline.feature_service,
        "fallbackFeatureService": model.fallback_feature_service,
        "entityKey": model.entity_key,
        "params": merged_params(pipeline, model).model_dump(mode="json", by_alias=True),
        "validation": model.validation.model_dump(mode="json", by_alias=True),
    }


def training_hash(pipeline: PipelineSpec, model: ModelSpec) -> str:
    return _digest(json.dumps(training_inputs(pipeline, model), sort_keys=True), length=16)


@dataclass(frozen=True)
class RunContext:
    """Where runs go: fixed per operator process (from its settings)."""

    mlflow_tracking_uri: str
    feature_repo: str


def build_run_spec(
    *,
    run_id_: str,
    namespace: str,
    name: str,
    trigger: Trigger,
    model: ModelSpec,
    pipeline: PipelineSpec,
    context: RunContext,
    parent_version: str | None,
    drift_start: datetime | None = None,
) -> TrainingRunSpec:
    return TrainingRunSpec(
        run_id=run_id_,
        namespace=namespace,
        model_name=name,
        task=model.task,
        trigger=trigger,
        feature_service=model.feature_service or pipeline.feature_service,
        fallback_feature_service=model.fallback_feature_service,
        entity_key=model.entity_key,
        params=merged_params(pipeline, model),
        validation=model.validation,
        alarms=model.alarms or AlarmPolicy(),
        registered_model_name=registered_model_name(namespace, name),
        parent_version=parent_version,
        move_champion=False,  # the rollout moves it (`ModelPlan.champion_alias`)
        drift_start=drift_start if trigger == Trigger.DRIFT else None,
        drift_min_rows=model.monitoring.drift_window_min_rows,
        mlflow_tracking_uri=context.mlflow_tracking_uri,
        feature_repo=context.feature_repo,
        pipeline=pipeline.pipeline or pipeline.package_uri or "training",
    )
