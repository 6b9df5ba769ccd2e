"""`loopline pipeline`: compile the training pipeline, run one locally, show a version's gate."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
def pipeline() -> None:
    """Training pipelines: compile, run locally, inspect the champion gate."""


@pipeline.command("compile")
@click.option(
    "--check", is_flag=True, help="Exit 1 if the golden YAML is stale instead of writing."
)
def compile_(check: bool) -> None:
    """Compile the pipelines to their golden IR YAML (pipelines/compiled/)."""
    from loopline.pipelines.compile import main

    sys.exit(main(["--check"] if check else []))


@pipeline.command("run")
@click.option("--spec", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--result", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option(
    "--subprocess-steps",
    is_flag=True,
    help="Each step in its own process, as kfp.local does (default: steps run warm in one).",
)
def run(spec: Path, result: Path, workdir: Path | None, subprocess_steps: bool) -> None:
    """Run one training run (a TrainingRunSpec JSON) with kfp.local; writes its result JSON."""
    from loopline.pipelines.run import main

    args = ["--spec", str(spec), "--result", str(result)]
    args += ["--workdir", str(workdir)] if workdir else []
    sys.exit(main(args + (["--subprocess-steps"] if subprocess_steps else [])))


@pipeline.command("gate")
@click.argument("registered_name")
@click.option("--version", "version", default=None, help="Model version (default: challenger).")
@click.option("--tracking-uri", default=None, help="MLflow URI (default: from settings).")
def gate(registered_name: str, version: str | None, tracking_uri: str | None) -> None:
    """Show the champion gate's decision for a version of REGISTERED_NAME (namespace.model)."""
    from loopline.settings import get_settings
    from loopline.tracking.experiments import client_for
    from loopline.tracking.registry import CHALLENGER, CHAMPION, version_by_alias

    client = client_for(tracking_uri or get_settings().resolved_mlflow_tracking_uri())
    mv = (
        client.get_model_version(registered_name, version)
        if version
        else version_by_alias(client, registered_name, CHALLENGER)
    )
    if mv is None:
        raise click.ClickException(f"{registered_name} has no challenger version")
    champion = version_by_alias(client, registered_name, CHAMPION)
    click.echo(
        f"{registered_name} v{mv.version} (champion: v{champion.version if champion else '-'})"
    )
    for key in sorted(k for k in mv.tags if k.startswith("loopline.gate.")):
        click.echo(f"  {key.removeprefix('loopline.gate.')}: {mv.tags[key]}")
    # The gate passing is not the end: the operator tags how the version's canary ended.
    for key in sorted(k for k in mv.tags if k.startswith("loopline.rollout.")):
        click.echo(f"  rollout {key.removeprefix('loopline.rollout.')}: {mv.tags[key]}")
