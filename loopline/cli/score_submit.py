"""`loopline score --submit`: the same batch run as a pipeline run on the operator's backend.

The run spec is the one the operator's schedule builds (`loopline.types.batch.BatchRunSpec`),
submitted through the pipeline backend the operator's settings name
(`LOOPLINE_OPERATOR_PIPELINE_BACKEND`: a local worker, a Kubernetes Job, a KFP run). Its run id
derives from the request (Model, window, version, output), so submitting the same request twice
adopts the first run instead of scoring the window twice; `--run-id` overrides it.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import click

from loopline.types.runs import RunPhase, TrainingRunResult

POLL_SECONDS = 1.0
TERMINAL = frozenset({RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED})


def submit_batch(
    *,
    model: str,
    start: datetime | None,
    end: datetime | None,
    version: str | None,
    repo: Path | None,
    output: Path | None,
    memory_mib: int,
    tracking_uri: str,
    run_id: str | None,
    wait: bool,
) -> TrainingRunResult | None:
    """Submit (or adopt) the run and, with `wait`, follow it to its end."""
    from loopline.batch.plan import check_window, parse_model_ref
    from loopline.operators.backends.factory import build_pipeline_backend
    from loopline.operators.builders.batch import manual_run_id
    from loopline.operators.settings import OperatorSettings
    from loopline.types.batch import BatchRunSpec
    from loopline.types.common import registered_model_name

    ref = parse_model_ref(model)
    check_window(start, end)
    settings = OperatorSettings()
    feature_repo = str(repo.resolve()) if repo is not None else settings.feature_repo
    if not feature_repo:
        raise click.UsageError("--repo: give the feature repository the run reads and writes")
    out = str(output.resolve()) if output is not None else None
    spec = BatchRunSpec(
        run_id=run_id
        or manual_run_id(ref.namespace, ref.name, start, end, version, out, feature_repo),
        namespace=ref.namespace,
        model_name=ref.name,
        registered_model_name=registered_model_name(ref.namespace, ref.name),
        version=version,
        window_start=start,
        window_end=end,
        output=out,
        memory_mib=memory_mib,
        mlflow_tracking_uri=tracking_uri,
        feature_repo=feature_repo,
    )
    backend = build_pipeline_backend(settings, tracking_uri)
    backend.submit(spec)
    click.echo(f"submitted batch run {spec.run_id} ({settings.pipeline_backend} backend)")
    if not wait:
        return None
    while True:
        result = backend.status(spec.run_id)
        if result is not None and result.phase in TERMINAL:
            return result
        time.sleep(POLL_SECONDS)
