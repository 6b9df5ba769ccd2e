"""`loopline usage`: which caller used which model version, how often, with what result.

Reads the model servers' `loopline_usage_*` series from Prometheus (docs/monitoring.md):
the same table as the "Model usage" dashboard, for a time range; with `--tracking-uri`, the
batch scoring runs of the range too (`monitoring/batch_usage.py`), marked `(batch)`.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import click

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(value: str, now: float, option: str) -> float:
    """A unix time from a duration before `now` (`90s`, `30m`, `6h`, `7d`, `2w`) or an ISO
    8601 time (naive is UTC)."""
    text = value.strip()
    match = _DURATION.match(text)
    if match:
        return now - int(match[1]) * _SECONDS[match[2]]
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration (30m, 6h, 7d) nor an ISO 8601 time "
            "(2026-03-02T03:10:00Z)",
            param_hint=option,
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


@click.command()
@click.option(
    "--since",
    default="24h",
    show_default=True,
    help="Start of the range: a duration before the end (30m, 6h, 7d) or an ISO 8601 time.",
)
@click.option(
    "--until", default=None, help="End of the range (ISO 8601 or a duration before now); now."
)
@click.option("--model", "model", default=None, help="Only this Model: NAMESPACE/NAME or NAME.")
@click.option(
    "--prometheus-url",
    envvar="LOOPLINE_PROMETHEUS_URL",
    required=True,
    help="Prometheus that scrapes the model servers (env LOOPLINE_PROMETHEUS_URL).",
)
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow server whose batch scoring runs (loopline score) are added to the table.",
)
@click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def usage(
    since: str,
    until: str | None,
    model: str | None,
    prometheus_url: str,
    tracking_uri: str | None,
    output: str,
) -> None:
    """Requests, errors, rows, fallback share and latency per model version and caller over a
    time range, and which called versions are retired (neither champion nor canary)."""
    from loopline.monitoring.prometheus_http import PrometheusError, PrometheusHttp
    from loopline.monitoring.usage import Scope, as_json, as_text, collect

    now = time.time()
    end = parse_when(until, now, "--until") if until else now
    start = parse_when(since, end, "--since")
    try:
        scope = Scope.parse(model)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None
    if start >= end:
        raise click.BadParameter(
            f"the range is empty: {since!r} is not before the end of the range",
            param_hint="--since",
        )
    try:
        with PrometheusHttp(prometheus_url) as prometheus:
            rows = collect(prometheus.query, scope, start, end)
    except PrometheusError as exc:
        raise click.ClickException(str(exc)) from exc
    if tracking_uri:
        from loopline.monitoring.batch_usage import collect_batch
        from loopline.tracking.experiments import client_for

        rows += collect_batch(client_for(tracking_uri), scope, start, end)
    if output == "json":
        click.echo(as_json(rows))
        return
    if not rows:
        where = f" for {model}" if model else ""
        click.echo(f"no inference requests{where} in the range")
        return
    click.echo(as_text(rows))
