"""`loopline score`: batch inference over a window of the offline store or a parquet file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from loopline.cli.errors import friendly_errors


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time (2026-03-02T00:00:00Z)", param_hint=option
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@click.command()
@click.option(
    "--model", "model", required=True, help="The Model: NAMESPACE.NAME or NAMESPACE/NAME."
)
@click.option("--start", default=None, help="First timestamp scored (ISO 8601; naive is UTC).")
@click.option("--end", default=None, help="End of the window, exclusive (ISO 8601).")
@click.option("--version", "version", default=None, help="Model version (default: the champion).")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Feature repository: the offline store read, and where the scores are registered.",
)
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Score this parquet file (or folder) instead of the offline store.",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the scores (default: <repo>/data/scores/<view>).",
)
@click.option(
    "--memory-mib",
    type=int,
    default=512,
    show_default=True,
    help="Working memory of one chunk; sets how many rows are read and scored at a time.",
)
@click.option("--tracking-uri", default=None, help="MLflow URI (default: from settings).")
@click.option(
    "--caller",
    default=None,
    help="Who the run is counted as in `loopline usage` (default: the OS user, else batch).",
)
@click.option(
    "--submit",
    is_flag=True,
    help="Run it as a batch-scoring pipeline run on the operator's pipeline backend "
    "(LOOPLINE_OPERATOR_PIPELINE_BACKEND: local, kubernetes or kfp) instead of in this process.",
)
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="With --submit: follow the run."
)
@click.option(
    "--run-id", default=None, help="With --submit: the run id (default: from the request)."
)
@friendly_errors(ValueError, FileNotFoundError)
def score(
    model: str,
    start: str | None,
    end: str | None,
    version: str | None,
    repo: Path | None,
    input_path: Path | None,
    output: Path | None,
    memory_mib: int,
    tracking_uri: str | None,
    caller: str | None,
    submit: bool,
    wait: bool,
    run_id: str | None,
) -> None:
    """Score a time window with a registered model version, write the scores to parquet,
    register them in the feature repository and record the run in MLflow."""
    from loopline.batch.job import BatchRequest, run_batch
    from loopline.batch.plan import batch_caller, parse_model_ref
    from loopline.settings import get_settings

    if submit:
        if caller is not None:
            raise click.UsageError("--caller: not with --submit (a submitted run counts as batch)")
        _submit(
            model,
            start,
            end,
            version,
            repo,
            input_path,
            output,
            memory_mib,
            tracking_uri,
            run_id,
            wait,
        )
        return
    if run_id is not None:
        raise click.UsageError("--run-id: only with --submit")

    request = BatchRequest(
        model=parse_model_ref(model),
        tracking_uri=tracking_uri or get_settings().resolved_mlflow_tracking_uri(),
        repo=repo,
        input=input_path,
        start=_when(start, "--start"),
        end=_when(end, "--end"),
        version=version,
        output=output,
        memory_mib=memory_mib,
        caller=batch_caller(caller),
    )
    result = run_batch(request)
    tally = result.tally
    flagged = "" if tally.flagged_rows is None else f", {tally.flagged_rows} flagged"
    if tally.unscored_rows:
        flagged += f", {tally.unscored_rows} unscored (a core sensor missing)"
    click.echo(
        f"scored {tally.rows} rows with {request.model.registered_name} v{result.version} in "
        f"{result.seconds:.1f} s ({tally.fallback_rows} by the fallback{flagged}) -> "
        f"{result.output}"
    )
    if result.feature_view:
        click.echo(f"feature view {result.feature_view} in {repo}")
    click.echo(f"MLflow run {result.mlflow_run_id}")


def _submit(
    model: str,
    start: str | None,
    end: str | None,
    version: str | None,
    repo: Path | None,
    input_path: Path | None,
    output: Path | None,
    memory_mib: int,
    tracking_uri: str | None,
    run_id: str | None,
    wait: bool,
) -> None:
    from loopline.cli.score_submit import submit_batch
    from loopline.settings import get_settings
    from loopline.types.runs import RunPhase

    if input_path is not None:
        raise click.UsageError(
            "--input: a submitted run reads the feature repository's offline store; score a "
            "file without --submit"
        )
    result = submit_batch(
        model=model,
        start=_when(start, "--start"),
        end=_when(end, "--end"),
        version=version,
        repo=repo,
        output=output,
        memory_mib=memory_mib,
        tracking_uri=tracking_uri or get_settings().resolved_mlflow_tracking_uri(),
        run_id=run_id,
        wait=wait,
    )
    if result is None:
        return
    click.echo(f"{result.phase.value}: {result.message}")
    if result.mlflow_run_id:
        click.echo(f"MLflow run {result.mlflow_run_id}")
    if result.phase != RunPhase.SUCCEEDED:
        raise SystemExit(1)
