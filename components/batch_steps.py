"""The batch-scoring pipeline's one step: a `BatchRunSpec` handed to `loopline.batch.job`.

Everything a batch run does (resolve the version, read the window in chunks, score, write the
parquet file, register the feature view, record the MLflow run) is `run_batch`'s; this step
only turns the run spec into its request, tags the MLflow run with the Loopline run id (which
is how the `kfp` backend finds the outcome) and reports progress events like the training
steps do, so the local runner shows the step and the error.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from loopline.components.progress import FAILED, FINISHED, STARTED, report
from loopline.types.batch import BATCH_STEP, SCHEDULE_CALLER, BatchRunSpec


def batch_request(spec: BatchRunSpec) -> Any:
    """The in-process request the run spec stands for (the same one `loopline score` builds)."""
    from loopline.batch.job import BatchRequest
    from loopline.batch.plan import ModelRef
    from loopline.tracking.lineage import RUN_ID

    request = BatchRequest(
        model=ModelRef(spec.namespace, spec.model_name),
        tracking_uri=spec.mlflow_tracking_uri,
        repo=Path(spec.feature_repo),
        start=spec.window_start,
        end=spec.window_end,
        version=spec.version,
        output=Path(spec.output) if spec.output else None,
        memory_mib=spec.memory_mib,
        tags={RUN_ID: spec.run_id},
    )
    if spec.scheduled_time is not None:
        # Counted by the operator's usage series under this caller; `loopline usage
        # --tracking-uri` leaves its MLflow run out (no double count).
        request = replace(request, caller=SCHEDULE_CALLER)
    return request


def summary(rows: int, version: str, output: str, view: str | None) -> str:
    where = f"{output} (feature view {view})" if view else output
    return f"scored {rows} rows with version {version} -> {where}"


def score_window(spec_json: str) -> dict[str, Any]:
    """Run the batch job of `spec_json`; the outcome the runner folds into the run's result."""
    from loopline.batch.job import run_batch

    spec = BatchRunSpec.model_validate_json(spec_json)
    report(BATCH_STEP, STARTED, run_id=spec.run_id)
    try:
        result = run_batch(batch_request(spec))
    except Exception as exc:
        report(BATCH_STEP, FAILED, message=f"{BATCH_STEP}: {exc}", error=type(exc).__name__)
        raise
    tally = result.tally
    metrics = {
        "batch_rows": float(tally.rows),
        "batch_fallback_rows": float(tally.fallback_rows),
        "batch_unscored_rows": float(tally.unscored_rows),
    }
    if tally.flagged_rows is not None:
        metrics["batch_flagged_rows"] = float(tally.flagged_rows)
    out = {
        "mlflow_run_id": result.mlflow_run_id,
        "model_version": result.version,
        "output": str(result.output),
        "feature_view": result.feature_view,
        "metrics": metrics,
        "summary": summary(tally.rows, result.version, str(result.output), result.feature_view),
    }
    report(BATCH_STEP, FINISHED, **{k: v for k, v in out.items() if k != "model_version"})
    return out
