"""Submit a training run to a Kubeflow Pipelines API server and read its state back.

The operators' `kfp` pipeline backend wraps these two entry points: `submit()` uploads the
compiled golden package as a run (experiment per Model, run name = Loopline run id, the run
spec as the single `spec_json` parameter, caching off) and `run_status()` maps the KFP run's
state and its failing task onto a `TrainingRunResult`. A batch-scoring run (`BatchRunSpec`) goes
the same way, with its own compiled package (`batch-scoring.yaml`). Submission is idempotent per Loopline
run id: an existing run with that name in the experiment is returned instead of a second one.
"""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loopline.pipelines.compile import COMPILED_DIR
from loopline.types.batch import BatchRunSpec, RunSpec
from loopline.types.runs import RunPhase, TrainingRunResult

# KFP v2beta1 RuntimeState -> our phase. PAUSED/CANCELING are still in flight.
_PHASES: dict[str, RunPhase] = {
    "RUNTIME_STATE_UNSPECIFIED": RunPhase.PENDING,
    "PENDING": RunPhase.PENDING,
    "RUNNING": RunPhase.RUNNING,
    "PAUSED": RunPhase.RUNNING,
    "CANCELING": RunPhase.RUNNING,
    "SUCCEEDED": RunPhase.SUCCEEDED,
    "SKIPPED": RunPhase.SUCCEEDED,
    "FAILED": RunPhase.FAILED,
    "CANCELED": RunPhase.CANCELLED,
}


def run_phase(state: str | None) -> RunPhase:
    """Our phase of a KFP run state (unknown states count as Running, never as done)."""
    return _PHASES.get((state or "RUNTIME_STATE_UNSPECIFIED").upper(), RunPhase.RUNNING)


def experiment_name(spec: RunSpec) -> str:
    return f"loopline-{spec.namespace}-{spec.model_name}"


def package_path(spec: RunSpec) -> Path:
    path = COMPILED_DIR / f"{spec.pipeline}.yaml"
    if not path.is_file():
        raise ValueError(f"pipeline {spec.pipeline!r} has no compiled package at {path}")
    return path


def make_client(host: str, *, token: str | None = None, namespace: str | None = None) -> Any:
    """A `kfp.Client` for `host` (its version-compatibility FutureWarning silenced)."""
    import kfp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="kfp")
        return kfp.Client(host=host, existing_token=token, namespace=namespace or "kubeflow")


def _find_run(client: Any, experiment_id: str, run_name: str) -> Any | None:
    flt = json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": run_name}]}
    )
    response = client.list_runs(experiment_id=experiment_id, filter=flt, page_size=2)
    runs = response.runs or []
    return runs[0] if runs else None


def submit(client: Any, spec: RunSpec) -> str:
    """Start (or find) the KFP run of `spec`; returns the KFP run id."""
    experiment = client.create_experiment(name=experiment_name(spec))
    existing = _find_run(client, experiment.experiment_id, spec.run_id)
    if existing is not None:
        return str(existing.run_id)
    result = client.create_run_from_pipeline_package(
        str(package_path(spec)),
        arguments={"spec_json": spec.model_dump_json(by_alias=True)},
        run_name=spec.run_id,
        experiment_id=experiment.experiment_id,
        enable_caching=False,
    )
    return str(result.run_id)


def _failed_task(run: Any) -> tuple[str | None, str]:
    """Name and error message of the first failed task in a run's details, if any."""
    details = getattr(run, "run_details", None)
    for task in getattr(details, "task_details", None) or []:
        if str(getattr(task, "state", "")).upper() == "FAILED":
            error = getattr(task, "error", None)
            message = getattr(error, "message", None) or "task failed"
            return getattr(task, "display_name", None), str(message)
    return None, ""


def _running_task(run: Any) -> str | None:
    details = getattr(run, "run_details", None)
    for task in getattr(details, "task_details", None) or []:
        if str(getattr(task, "state", "")).upper() == "RUNNING":
            name = getattr(task, "display_name", None)
            if name and not str(name).startswith(("root", "loopline-training")):
                return str(name)
    return None


def _as_utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime) or value.year < 1971:  # KFP sends epoch 0 for "unset"
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def run_status(
    client: Any, spec: RunSpec, kfp_run_id: str, *, with_outcome: bool = True
) -> TrainingRunResult:
    """The `TrainingRunResult` a KFP run currently amounts to.

    Once the run succeeded, the outcome (model version, gate verdict or rejection reason,
    metrics) comes from MLflow (`loopline.tracking.outcome`), unless `with_outcome` is False.
    """
    run = client.get_run(kfp_run_id)
    phase = run_phase(getattr(run, "state", None))
    step, message = _failed_task(run) if phase == RunPhase.FAILED else (_running_task(run), "")
    error = getattr(run, "error", None)
    if phase == RunPhase.FAILED and not message and error is not None:
        message = str(getattr(error, "message", "") or error)
    outcome: dict[str, Any] = {}
    if with_outcome and phase in (RunPhase.SUCCEEDED, RunPhase.FAILED):
        outcome = _outcome(spec)
    message = message or str(outcome.pop("message", "") or "")
    return TrainingRunResult(
        **outcome,
        run_id=spec.run_id,
        phase=phase,
        step=step,
        message=message or f"KFP run {kfp_run_id} is {getattr(run, 'state', 'unknown')}",
        started_at=_as_utc(getattr(run, "created_at", None)),
        finished_at=_as_utc(getattr(run, "finished_at", None)),
    )


def _outcome(spec: RunSpec) -> dict[str, Any]:
    """The result fields MLflow holds for a finished run, found by its Loopline run id."""
    from loopline.tracking.outcome import batch_outcome, run_outcome

    if isinstance(spec, BatchRunSpec):
        return batch_outcome(spec.mlflow_tracking_uri, spec.namespace, spec.model_name, spec.run_id)
    found = run_outcome(
        spec.mlflow_tracking_uri,
        spec.namespace,
        spec.model_name,
        spec.registered_model_name,
        spec.run_id,
    )
    return {
        "mlflow_run_id": found.mlflow_run_id,
        "model_version": found.model_version,
        "gate_passed": found.gate_passed,
        "rejection_reason": found.rejection_reason,
        "metrics": found.metrics,
    }
