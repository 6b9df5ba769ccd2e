"""`loopline data …`: generate factory data, register your own, build a Feast repo, check quality.

Heavy imports (Feast, Great Expectations) happen inside the commands that need them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click


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
        raise click.UsageError(str(exc)) from exc
    frame, manifest = generate(cfg)
    path = write_dataset(frame, manifest, out_dir)
    counts: dict[str, int] = {}
    for event in manifest.events:
        counts[event.kind] = counts.get(event.kind, 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    click.echo(
        f"wrote {len(frame)} rows to {path} ({manifest.start:%Y-%m-%d} .. {manifest.end:%Y-%m-%d}); events: {summary}"
    )
