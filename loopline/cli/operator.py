"""`loopline operator run`: the Model and Pipeline operator (kopf), locally or in a pod."""

from __future__ import annotations

import click


@click.group()
def operator() -> None:
    """The Loopline operator (models.loopline.dev, pipelines.loopline.dev)."""


@operator.command()
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    help="Watch only these namespaces (repeatable; globs allowed). Default: all namespaces.",
)
@click.option(
    "--liveness",
    default=None,
    metavar="URL",
    help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz (in-cluster).",
)
@click.option("--peering/--standalone", default=False, help="kopf peering between replicas.")
def run(namespaces: tuple[str, ...], liveness: str | None, peering: bool) -> None:
    """Run the operator until interrupted. Backends and intervals come from
    LOOPLINE_OPERATOR_* variables (see docs/operators.md)."""
    import kopf

    from loopline.operators.handlers import build_registry
    from loopline.operators.settings import OperatorSettings

    settings = OperatorSettings()
    watched = list(namespaces) or settings.namespaces
    kopf.run(
        registry=build_registry(settings),
        standalone=not peering,
        clusterwide=not watched,
        namespaces=watched,
        liveness_endpoint=liveness,
    )
