"""`loopline history ns/model`: the Model's decision ledger as a timeline, or what was
serving at a moment and why (`--at`)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from loopline import kube
from loopline.cli.errors import friendly_errors
from loopline.operators.backends.history import HistoryLedger
from loopline.operators.builders.history_query import ServingAt, select, serving_at
from loopline.operators.errors import BackendUnavailable
from loopline.types.history import Decision

_AGO = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(raw: str, now: datetime | None = None) -> datetime:
    """An RFC 3339 / ISO 8601 time (UTC when it names no zone), or a duration ago (30m, 2h,
    7d)."""
    ago = _AGO.match(raw.strip())
    if ago:
        delta = timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
        return (now or datetime.now(UTC)) - delta
    try:
        when = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{raw!r} is not a time: use RFC 3339 (2026-03-10T03:10:00Z) or a duration ago "
            "(30m, 2h, 7d)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def split_ref(ref: str) -> tuple[str, str]:
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name:
        raise click.BadParameter(f"{ref!r}: name the Model as NAMESPACE/NAME")
    return namespace, name


def _line(d: Decision, evidence: bool = False) -> str:
    who = d.actor.name or d.actor.kind.value
    version = f"v{d.version}" if d.version else "-"
    weight = f" {d.weight}%" if d.weight is not None else ""
    outcome = f" [{d.outcome}]" if d.outcome else ""
    message = f" {d.message}" if d.message else ""
    stamp = d.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    line = f"{stamp}  {d.kind.value:<17} {version:<6} {who}{weight}{outcome}{message}"
    if evidence and d.evidence:
        line += "\n" + " " * 22 + json.dumps(d.evidence, sort_keys=True, default=str)
    return line


def render_at(answer: ServingAt) -> str:
    stamp = answer.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if answer.deleted is not None:
        return f"at {stamp}: nothing served (the Model was deleted)\n  {_line(answer.deleted)}"
    if answer.champion is None:
        return f"at {stamp}: no version was champion yet"
    lines = [f"at {stamp}: version {answer.champion} was champion"]
    if answer.canary is not None:
        lines[0] += f", version {answer.canary} a canary at {answer.canary_weight}%"
    lines.append("why:")
    lines += [f"  {_line(d)}" for d in answer.because]
    if answer.promoted is not None:
        lines.append(f"  {_line(answer.promoted)}")
    if answer.canary_step is not None:
        lines.append(f"  {_line(answer.canary_step)}")
    if answer.last_ended is not None:
        lines.append(f"last rollback or rejection before then:\n  {_line(answer.last_ended)}")
    return "\n".join(lines)


@click.command()
@click.argument("ref", metavar="NAMESPACE/MODEL")
@click.option("--since", help="Only decisions since this time (RFC 3339, or 30m/2h/7d ago).")
@click.option("--at", "at_", help="Answer what was serving at this time, and why.")
@click.option("--version", help="Only decisions about this model version.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.option("--evidence", is_flag=True, help="Show each decision's evidence (text output).")
@click.option("--kubeconfig", type=click.Path(path_type=Path), envvar="KUBECONFIG")
@friendly_errors(BackendUnavailable)
def history(
    ref: str,
    since: str | None,
    at_: str | None,
    version: str | None,
    output: str,
    evidence: bool,
    kubeconfig: Path | None,
) -> None:
    """The decision history of a Model: spec changes, retraining requests, runs, gate
    decisions, approvals, canary steps, promotions, rollbacks, deletion."""
    namespace, name = split_ref(ref)
    api = kube.api_client(kubeconfig)
    try:
        decisions = HistoryLedger(api).read(namespace, name)
    finally:
        api.close()
    if not decisions:
        raise click.ClickException(
            f"no history for Model {namespace}/{name} (no ModelHistory labelled "
            f"loopline.dev/model={name} in {namespace}: wrong name, or not yet reconciled)"
        )
    if at_ is not None:
        answer = serving_at(decisions, parse_time(at_))
        if output == "json":
            click.echo(json.dumps(answer.to_json(), indent=2))
        else:
            click.echo(render_at(answer))
        return
    chosen = select(decisions, since=parse_time(since) if since else None, version=version)
    if output == "json":
        docs = [d.model_dump(mode="json", by_alias=True, exclude_none=True) for d in chosen]
        click.echo(json.dumps(docs, indent=2))
        return
    for d in chosen:
        click.echo(_line(d, evidence))
