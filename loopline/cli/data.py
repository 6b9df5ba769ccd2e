"""`loopline data …`: generate factory data, register your own, build a Feast repo, check quality.

Heavy imports (Feast, Great Expectations) happen inside the commands that need them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from loopline.types.common import Trigger
from loopline.types.dataset import LabelKind

if TYPE_CHECKING:
    from loopline.data.schema import DatasetSchema


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO-8601 time: {value!r}", param_hint=option) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@click.group()
def data() -> None:
    """Factory sensor data, feature repositories and the data quality gate."""


@data.command()
@click.option("--machines", default=10, show_default=True, help="Number of machines.")
@click.option("--days", default=30.0, show_default=True, help="Length of the history in days.")
@click.option(
    "--interval",
    "interval_seconds",
    default=60,
    show_default=True,
    help="Seconds between readings.",
)
@click.option(
    "--start", default=None, help="First timestamp (ISO-8601, UTC if no zone) [2026-01-01]."
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--recipe-change-at", default=None, help="ISO time of a recipe change (the drift case)."
)
@click.option(
    "--recipe-shift", default=0.15, show_default=True, help="Relative operating-point shift."
)
@click.option("--fault-fraction", default=0.02, show_default=True, help="Fraction of faulty rows.")
@click.option("--sensor-faults-per-day", default=1.5, show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def generate(
    machines: int,
    days: float,
    interval_seconds: int,
    start: str | None,
    seed: int,
    recipe_change_at: str | None,
    recipe_shift: float,
    fault_fraction: float,
    sensor_faults_per_day: float,
    out_dir: Path,
) -> None:
    """Write sensors.parquet, manifest.json (injected events) and schema.json into OUT."""
    from pydantic import ValidationError

    from loopline.data.generator import GeneratorConfig, RecipeChange, generate, write_dataset
    from loopline.data.schema import plain_errors

    at = _parse_time(recipe_change_at, "--recipe-change-at")
    begin = _parse_time(start, "--start")
    try:
        cfg = GeneratorConfig(
            machines=machines,
            days=days,
            interval_seconds=interval_seconds,
            seed=seed,
            fault_fraction=fault_fraction,
            sensor_faults_per_day=sensor_faults_per_day,
            recipe_changes=[RecipeChange(at=at, shift=recipe_shift)] if at else [],
            **({"start": begin} if begin else {}),
        )
    except ValidationError as exc:
        raise click.UsageError(plain_errors(exc)) from exc
    frame, manifest = generate(cfg)
    path = write_dataset(frame, manifest, out_dir)
    counts: dict[str, int] = {}
    for event in manifest.events:
        counts[event.kind] = counts.get(event.kind, 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    click.echo(
        f"wrote {len(frame)} rows to {path} ({manifest.start:%Y-%m-%d} .. {manifest.end:%Y-%m-%d}); events: {summary}"
    )


def _schema_of(source: Path, schema_file: Path | None) -> DatasetSchema:
    """The declared schema of `source`: `--schema`, else the schema.json beside it (what
    `data generate` writes); no column names are assumed for a file that declares none."""
    from loopline.data.schema import DatasetSchema

    beside = source.parent / "schema.json"
    if schema_file is None and not beside.is_file():
        raise click.UsageError(
            f"--schema is required: {source} has no schema.json beside it to say which "
            "columns are the entity, timestamp, features and label"
        )
    return DatasetSchema.load(schema_file or beside)


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@data.command()
@click.option(
    "--source",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Parquet or CSV file.",
)
@click.option(
    "--repo",
    "repo_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Feature repository directory to create.",
)
@click.option(
    "--schema",
    "schema_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A DatasetSchema JSON file (instead of the options below).",
)
@click.option("--entity", default=None, help="Entity (key) column, e.g. the machine id.")
@click.option("--timestamp", default=None, help="Event timestamp column.")
@click.option(
    "--features",
    "feature_list",
    default=None,
    help="Comma-separated feature columns [every numeric column].",
)
@click.option(
    "--core", default=None, help="Comma-separated core features (the fallback model's inputs)."
)
@click.option(
    "--label",
    default=None,
    help="Label column: an anomaly flag (0/1, true/false) or a class. Required.",
)
@click.option(
    "--label-kind",
    type=click.Choice([k.value for k in LabelKind]),
    default=None,
    help="What the label means [anomaly-flag if it holds only 0/1 or booleans, else class].",
)
@click.option("--name", default="sensors", show_default=True, help="Data set name (lowercase).")
@click.option(
    "--materialize/--no-materialize", default=True, show_default=True, help="Fill the online store."
)
@click.option(
    "--rolling/--no-rolling",
    default=True,
    show_default=True,
    help="Build the rolling-aggregate view.",
)
def register(
    source: Path,
    repo_dir: Path,
    schema_file: Path | None,
    entity: str,
    timestamp: str,
    feature_list: str | None,
    core: str | None,
    label: str | None,
    label_kind: str | None,
    name: str,
    materialize: bool,
    rolling: bool,
) -> None:
    """Register your own data: validate it and generate its Feast feature view and services.

    Name the entity, timestamp and label columns (or give a schema file); the roles are
    recorded in the repository and every run, model and monitor reads them from there.
    """
    from loopline.data import register as reg
    from loopline.data.schema import DatasetSchema, SchemaError

    beside = source.parent / "schema.json"  # `loopline data generate` writes one there
    declared = any(v is not None for v in (entity, timestamp, label, feature_list))
    if schema_file is None and not declared and beside.is_file():
        click.echo(f"using the schema declared in {beside}")
        schema_file = beside
    try:
        if schema_file is not None:
            schema = DatasetSchema.load(schema_file)
        else:
            frame = reg.read_data(source)
            if not entity or not timestamp:
                flag = "--entity" if not entity else "--timestamp"
                raise click.UsageError(
                    f"{flag} is required (or --schema FILE); the file's columns are "
                    f"{list(frame.columns)}"
                )
            schema = reg.declare_schema(
                frame,
                entity=entity,
                timestamp=timestamp,
                label=label,
                label_kind=LabelKind(label_kind) if label_kind else None,
                feature_names=_split(feature_list),
                core=_split(core),
                name=name,
            )
        result = reg.register(source, repo_dir, schema, materialize=materialize, rolling=rolling)
    except (SchemaError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(f"{source}: {exc}") from exc
    click.echo(result.summary)


@data.command()
@click.option(
    "--repo",
    "repo_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option("--start", default=None, help="ISO start of the window [first reading].")
@click.option("--end", default=None, help="ISO end of the window [last reading].")
def materialize(repo_dir: Path, start: str | None, end: str | None) -> None:
    """Load the newest feature values of a repository into its online store."""
    from loopline.data import features

    features.materialize(repo_dir, _parse_time(start, "--start"), _parse_time(end, "--end"))
    click.echo(f"materialized {repo_dir}")


@data.command()
@click.option(
    "--source",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Parquet or CSV training set.",
)
@click.option(
    "--schema",
    "schema_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="DatasetSchema JSON [the schema.json beside the source].",
)
@click.option(
    "--reference",
    "reference_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Reference statistics JSON (from `data reference`).",
)
@click.option("--window-end", default=None, help="End of the training window (ISO) [now].")
@click.option(
    "--max-staleness-hours", default=None, type=float, help="Override the policy's staleness."
)
@click.option(
    "--report",
    "report_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the JSON report here.",
)
@click.option(
    "--trigger",
    type=click.Choice([t.value for t in Trigger]),
    default=Trigger.MANUAL.value,
    show_default=True,
    help="Why the training run started; with `drift`, distribution is advisory (not gating).",
)
def check(
    source: Path,
    schema_file: Path | None,
    reference_file: Path | None,
    window_end: str | None,
    max_staleness_hours: float | None,
    report_file: Path | None,
    trigger: str,
) -> None:
    """Run the data quality gate on a file; exit 1 with the summary when it fails."""
    from loopline.data.features import normalise_timestamps, read_source
    from loopline.data.quality import ReferenceStats, run_gate
    from loopline.data.schema import SchemaError
    from loopline.types.policy import DataQualityThresholds

    try:
        schema = _schema_of(source, schema_file)
        frame = normalise_timestamps(read_source(source), schema.timestamp)
    except (SchemaError, ValueError) as exc:
        raise click.ClickException(f"{source}: {exc}") from exc
    reference = ReferenceStats.load(reference_file) if reference_file else None
    thresholds = (
        DataQualityThresholds(max_staleness_hours=max_staleness_hours)
        if max_staleness_hours
        else DataQualityThresholds()
    )
    report = run_gate(
        frame,
        schema,
        thresholds,
        reference,
        _parse_time(window_end, "--window-end"),
        trigger=trigger,
    )
    if report_file:
        report.save(report_file)
    click.echo(report.summary)
    if not report.passed:
        raise SystemExit(1)


@data.command()
@click.option(
    "--source", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--schema",
    "schema_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="DatasetSchema JSON [the schema.json beside the source].",
)
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path))
def reference(source: Path, schema_file: Path | None, out_file: Path) -> None:
    """Compute reference statistics (for the gate's consistency and distribution checks)."""
    from loopline.data.features import normalise_timestamps, read_source
    from loopline.data.quality import reference_stats
    from loopline.data.schema import SchemaError

    try:
        schema = _schema_of(source, schema_file)
        frame = normalise_timestamps(read_source(source), schema.timestamp)
    except (SchemaError, ValueError) as exc:
        raise click.ClickException(f"{source}: {exc}") from exc
    reference_stats(frame, schema).save(out_file)
    click.echo(f"wrote reference statistics of {len(frame)} rows to {out_file}")
