"""`loopline history ns/model`: a Model's production decisions, and what served at a moment.

Reads the Model's history ledger (ConfigMaps in its namespace, docs/history.md) with the
caller's own Kubernetes credentials: reading it needs `list` on ConfigMaps there.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click


def parse_time(value: str) -> datetime:
    """An ISO 8601 time (`2026-03-02T03:10:00Z`, a date, or with an offset); naive is UTC."""
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time; write e.g. 2026-03-02T03:10:00Z"
        ) from exc
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def split_ref(ref: str) -> tuple[str, str]:
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise click.BadParameter(f"{ref!r}: write the Model as NAMESPACE/NAME")
    return namespace, name


@click.command()
@click.argument("model")
@click.option("--since", default=None, help="Only decisions at or after this time (ISO 8601).")
@click.option("--at", "at", default=None, help="What was serving at this time (ISO 8601), and why.")
@click.option("--version", "version", default=None, help="Only decisions about this version.")
@click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="KUBECONFIG",
    help="Kubeconfig (default: in-cluster, then ~/.kube/config).",
)
def history(
    model: str,
    since: str | None,
    at: str | None,
    version: str | None,
    output: str,
    kubeconfig: Path | None,
) -> None:
    """The production history of MODEL (NAMESPACE/NAME): every decision with its time, actor,
    evidence and what served after it."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    from loopline.history.ledger import Ledger
    from loopline.history.timeline import describe, describe_at, select, serving_at
    from loopline.kube import api_client

    namespace, name = split_ref(model)
    since_t = parse_time(since) if since else None
    at_t = parse_time(at) if at else None
    with api_client(kubeconfig) as api:
        try:
            decisions = Ledger(k8s.CoreV1Api(api)).read(namespace, name)
        except ApiException as exc:
            raise click.ClickException(
                f"cannot read the history of {namespace}/{name}: {exc.status} {exc.reason} "
                "(reading it needs list on configmaps in that namespace)"
            ) from exc
    if at_t is not None:
        answer = serving_at(decisions, at_t)
        if output == "json":
            click.echo(
                json.dumps(
                    {
                        "at": at_t.isoformat(),
                        "serving": answer.state.model_dump() if answer.state else None,
                        "championBy": _doc(answer.champion_by),
                        "canaryBy": _doc(answer.canary_by),
                        "last": _doc(answer.last),
                    },
                    indent=2,
                )
            )
        else:
            for line in describe_at(answer):
                click.echo(line)
        return
    chosen = select(decisions, since_t, version)
    if output == "json":
        click.echo(json.dumps([_doc(d) for d in chosen], indent=2))
        return
    if not chosen:
        click.echo(f"no decisions recorded for {namespace}/{name}")
    for d in chosen:
        click.echo(describe(d))


def _doc(decision: object) -> object:
    from loopline.types.history import Decision

    if not isinstance(decision, Decision):
        return None
    return decision.model_dump(mode="json", exclude_none=True)
