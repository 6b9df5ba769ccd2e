"""Entry point of the `loopline` command.

Subcommands are imported only when invoked: importing torch, MLflow or Feast costs seconds,
and `loopline --help` or `loopline cluster status` should not pay for them.
"""

from __future__ import annotations

import importlib
import logging

import click

from loopline import __version__, quiet
from loopline.settings import get_settings

# name -> "module:attribute" of a click command or group. Add a line per subcommand.
COMMANDS: dict[str, str] = {
    "version": "loopline.cli.main:version",
    "cluster": "loopline.cli.cluster:cluster",
    "data": "loopline.cli.data:data",
    "monitor": "loopline.cli.monitor:monitor",
    "operator": "loopline.cli.operator:operator",
    "demo": "loopline.cli.demo:demo",
    "serve": "loopline.cli.serve:serve",
    "pipeline": "loopline.cli.pipeline:pipeline",
    "images": "loopline.cli.images:images",
    "history": "loopline.cli.history:history",
    "approve": "loopline.cli.approval:approve",
    "reject": "loopline.cli.approval:reject",
    "usage": "loopline.cli.usage:usage",
    "score": "loopline.cli.score:score",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module on first use."""

    def __init__(self, *args: object, lazy: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            module_name, _, attr = self._lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module_name), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self._lazy[cmd_name]} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def cli(verbose: bool) -> None:
    """Loopline: train, serve, watch and retrain models on Kubernetes."""
    quiet.apply()
    level = "DEBUG" if verbose else get_settings().log_level
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.command()
def version() -> None:
    """Print Loopline's version."""
    click.echo(f"loopline {__version__}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
