"""`loopline images`: build Loopline's runtime and training images without Docker (mmdebstrap
and podman), list them, and push them to a registry (skopeo)."""

from __future__ import annotations

import click

from loopline.cli.errors import friendly_errors
from loopline.images.errors import ImagesError
from loopline.images.plan import FLAVOURS, Flavour

_friendly_errors = friendly_errors(ImagesError)


def _flavours(only: str | None) -> tuple[Flavour, ...]:
    return FLAVOURS if only is None else tuple(f for f in FLAVOURS if f == only)


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


only_option = click.option(
    "--only", type=click.Choice(FLAVOURS), default=None, help="One image instead of both."
)


@click.group()
def images() -> None:
    """Loopline's container images: `runtime` (no torch) and `training` (torch)."""


@images.command()
@only_option
@click.option("--force", is_flag=True, help="Rebuild without podman's layer cache.")
@click.option(
    "--torch-index-url",
    envvar="TORCH_INDEX_URL",
    default="",
    help="A PyTorch CPU wheel index for the training image's torch layer (default: PyPI).",
)
@_friendly_errors
def build(only: str | None, force: bool, torch_index_url: str) -> None:
    """Build the images (cached by a hash of every input: a second run takes seconds)."""
    from loopline.images.runner import default_images

    runner = default_images(torch_index_url=torch_index_url, echo=click.echo)
    for result in runner.build(_flavours(only), force=force):
        click.echo(f"{result.plan.reference}  {result.action} in {result.seconds:.1f}s")


@images.command()
@click.option("--registry", required=True, help="HOST:PORT; loopback registries use plain http.")
@only_option
@_friendly_errors
def push(registry: str, only: str | None) -> None:
    """Push the built images (all, or --only one) under their content tag and their version."""
    from loopline.images.runner import default_images

    runner = default_images(echo=click.echo)
    for reference in runner.push(registry, _flavours(only), built_only=only is None):
        click.echo(f"pushed {reference}")


@images.command(name="list")
@_friendly_errors
def list_images() -> None:
    """The Loopline images in the store (and the training image's torch layer), with sizes."""
    from loopline.images.runner import default_images

    for row in default_images(echo=click.echo).list():
        click.echo(f"{row['name']}:{row['tag']}  {_size(int(str(row['size'])))}")
