"""`loopline demo`: the closed loop on this machine, with a live view and a report.

`loopline demo` runs the scenario (`loopline.demo.scenario`) and stops everything it started
at the end (or on Ctrl-C); `--keep` leaves the cluster, operator, model servers and MLflow
running for exploration, and `loopline demo down` stops them later.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from loopline.demo.settings import DemoSettings


def _settings(quick: bool, state_dir: Path | None) -> DemoSettings:
    settings = DemoSettings()
    if state_dir is not None:
        settings = settings.model_copy(update={"state_dir": state_dir})
    return settings.quick() if quick else settings


state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The demo's state directory (default: $LOOPLINE_DEMO_STATE_DIR or "
    "$LOOPLINE_STATE_DIR/demo).",
)


def _log_to_file(path: Path) -> Path:
    """Send logging (and Python warnings) to a file: the screen belongs to the live view."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return path


@click.group(invoke_without_command=True)
@click.option("--quick", is_flag=True, help="CI-sized data, few epochs, short acts (minutes).")
@click.option("--keep", is_flag=True, help="Leave everything running; stop it with `demo down`.")
@click.option("--plain", is_flag=True, help="Print steps line by line instead of the live view.")
@click.option(
    "--cluster",
    is_flag=True,
    help="Run every piece as pods on a real containerd node (`loopline cluster up --runtime "
    "containerd`; needs root and the built images, docs/demo.md).",
)
@state_dir_option
@click.pass_context
def demo(
    ctx: click.Context, quick: bool, keep: bool, plain: bool, cluster: bool, state_dir: Path | None
) -> None:
    """Train, serve, drift, retrain and promote a model, then kill a sensor; write a report."""
    if ctx.invoked_subcommand is not None:
        return
    from loopline.demo.live import LiveView
    from loopline.demo.scenario import ClusterDemo, Demo

    settings = _settings(quick, state_dir)
    log_file = _log_to_file(settings.resolved_state_dir() / "logs" / "demo.log")
    click.echo(f"loopline demo: logs in {log_file}")
    scenario = (ClusterDemo if cluster else Demo)(settings, keep=keep)
    view = LiveView(scenario.record, live=False if plain else None)
    scenario.view = view
    try:
        with view:
            result = scenario.run()
    except KeyboardInterrupt:
        click.echo("interrupted: everything the demo started was stopped", err=True)
        raise SystemExit(130) from None
    if result.report is not None:
        click.echo(f"report: {result.report}")
    if keep:
        click.echo(
            f"still running (stop with `loopline demo down`): KUBECONFIG={result.kubeconfig}"
        )
        for name, url in result.record.links.items():
            click.echo(f"  {name}: {url}")
    elif result.leftovers:
        click.echo(f"processes left behind: {result.leftovers}", err=True)
    if not result.completed:
        for problem in result.problems:
            click.echo(f"the demo stopped early: {problem}", err=True)
        raise SystemExit(1)


@demo.command()
@state_dir_option
def down(state_dir: Path | None) -> None:
    """Stop everything a demo started (after `loopline demo --keep`)."""
    from loopline.demo.processes import DemoProcesses

    processes = DemoProcesses(_settings(False, state_dir).resolved_state_dir())
    stopped = processes.stop_all()
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    left = processes.leftovers()
    if left:
        raise click.ClickException(f"still running: pids {left}")


@demo.command()
@click.argument("record", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of the report (default: beside the record).",
)
def report(record: Path, out: Path | None) -> None:
    """Rebuild the HTML report from a run's record.json."""
    from loopline.demo.record import DemoRecord
    from loopline.demo.report import write_report

    path = write_report(DemoRecord.load(record), out or record.parent)
    click.echo(f"report: {path}")
