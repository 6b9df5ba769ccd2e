"""`loopline monitor`: run a drift monitor, or ask one for its status."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def monitor() -> None:
    """The drift monitor of a Model (alibi-detect on sampled live traffic)."""


@monitor.command()
@click.option("--model", required=True, help="Name of the Model resource it watches.")
@click.option("--namespace", default=None, help="Namespace of the Model.")
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="HTTP port (default 8090).")
@click.option(
    "--reference",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A reference .parquet instead of the champion's in MLflow.",
)
@click.option("--state-dir", type=click.Path(path_type=Path), default=None)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Any other monitor setting, e.g. --set window_size=2000 --set requester=log.",
)
def serve(
    model: str,
    namespace: str | None,
    host: str | None,
    port: int | None,
    reference: Path | None,
    state_dir: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Serve the monitor's HTTP API (samples in, status and metrics out)."""
    from loopline.monitoring.server import serve as run
    from loopline.monitoring.settings import MonitorSettings

    fields: dict[str, object] = {"model": model}
    for key, value in (("namespace", namespace), ("host", host), ("port", port)):
        if value is not None:
            fields[key] = value
    if state_dir is not None:
        fields["state_dir"] = state_dir
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in MonitorSettings.model_fields:
            raise click.BadParameter(
                f"{item!r}: expected FIELD=VALUE with FIELD one of "
                f"{sorted(MonitorSettings.model_fields)}",
                param_hint="--set",
            )
        fields[key] = value
    try:
        settings = MonitorSettings.model_validate(fields)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    from loopline.auth import AuthConfigError
    from loopline.monitoring.detectors import DetectorUnavailable

    try:
        run(settings, reference=reference)
    except (AuthConfigError, DetectorUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc


@monitor.command()
@click.option("--url", default="http://127.0.0.1:8090", show_default=True)
def status(url: str) -> None:
    """Print a running monitor's status (JSON)."""
    import httpx

    from loopline.monitoring.app import STATUS_PATH

    response = httpx.get(url.rstrip("/") + STATUS_PATH, timeout=10)
    response.raise_for_status()
    click.echo(json.dumps(response.json(), indent=2))
