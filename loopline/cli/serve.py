"""`loopline serve`: run a model server by hand (the local backend, in the foreground)."""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
from pathlib import Path
from typing import cast

import click


@click.group()
def serve() -> None:
    """Serve a registered model over the Open Inference Protocol (REST and gRPC)."""


def _spec_options(func: click.decorators.FC) -> click.decorators.FC:
    options = [
        click.option("--name", required=True, help="Model name in the V2 URLs, e.g. drill-ae."),
        click.option(
            "--model-uri",
            required=True,
            help="MLflow URI of the champion: models:/<ns>.<name>@champion, models:/<name>/3, "
            "runs:/<id>/model or a local bundle folder.",
        ),
        click.option("--canary-uri", default="", help="MLflow URI of a canary version."),
        click.option(
            "--canary-weight",
            type=click.FloatRange(0, 1),
            default=0.0,
            show_default=True,
            help="Share of requests the canary answers.",
        ),
        click.option("--tracking-uri", default="", help="MLflow tracking URI (default: settings)."),
        click.option(
            "--monitor-url", default="", help="Drift monitor base URL; empty: no sampling."
        ),
        click.option("--sample-rate", type=click.FloatRange(0, 1), default=0.1, show_default=True),
        click.option(
            "--max-batch-size",
            type=click.IntRange(0),
            default=0,
            show_default=True,
            help="MLServer adaptive batching: requests merged per batch (0/1: off).",
        ),
        click.option(
            "--max-batch-time",
            type=click.FloatRange(0),
            default=0.0,
            show_default=True,
            help="MLServer adaptive batching: seconds to wait to fill a batch.",
        ),
        click.option(
            "--server",
            type=click.Choice(["auto", "lean", "mlserver"]),
            default="auto",
            show_default=True,
            help="The process that hosts the runtime: the lean V2 server, MLServer, or auto "
            "(lean unless adaptive batching is on).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _spec(**kw: object) -> object:
    from loopline.serving.local import LocalModelSpec

    try:
        return _build(LocalModelSpec, kw)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def _build(cls: type, kw: dict[str, object]) -> object:
    return cls(
        name=str(kw["name"]),
        model_uri=str(kw["model_uri"]),
        canary_model_uri=str(kw["canary_uri"]),
        canary_weight=float(kw["canary_weight"]),  # type: ignore[arg-type]
        tracking_uri=str(kw["tracking_uri"]),
        monitor_url=str(kw["monitor_url"]),
        sample_rate=float(kw["sample_rate"]),  # type: ignore[arg-type]
        max_batch_size=int(kw["max_batch_size"]),  # type: ignore[call-overload]
        max_batch_time=float(kw["max_batch_time"]),  # type: ignore[arg-type]
        server=str(kw["server"]),
    )


@serve.command("run")
@_spec_options
@click.option(
    "--dir",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where server folders and logs go (default: <state_dir>/serving).",
)
def run(root: Path | None, **kw: object) -> None:
    """Start one model server on free 127.0.0.1 ports and keep it up until Ctrl-C."""
    from loopline.serving.async_local import local_async_env
    from loopline.serving.async_redis_local import LocalRedisError
    from loopline.serving.local import (
        LocalModelSpec,
        LocalServingError,
        LocalServingManager,
        resolved_server,
    )
    from loopline.settings import get_settings

    root = root or get_settings().state_dir / "serving"
    try:
        extra_env = local_async_env(root)
    except LocalRedisError as exc:
        raise click.ClickException(str(exc)) from exc
    spec = dataclasses.replace(cast(LocalModelSpec, _spec(**kw)), extra_env=extra_env)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalServingManager(root) as manager:
        try:
            status = manager.start(spec)
        except (LocalServingError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        ep = status.endpoints
        host = resolved_server(spec)
        click.echo(f"serving {status.name} (pid {status.pid}, {host} server)")
        click.echo(f"  REST     {ep.infer_url(status.name)}")
        click.echo(f"  gRPC     {ep.grpc}")
        click.echo(f"  metrics  {ep.metrics}")
        if extra_env:
            click.echo(f"  async    {ep.rest}/v2/models/{status.name}/infer/async (local Redis)")
        click.echo(f"  log      {status.log_path}")
        # The path, never the token: repository calls and its monitor need the file's token.
        click.echo(f"  token    {manager.token_file(status.name)} (LOOPLINE_AUTH_TOKEN_FILE)")
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        click.echo("stopping")


@serve.command("pod")
@_spec_options
@click.option(
    "--fallback-on-missing-sensors/--no-fallback-on-missing-sensors",
    default=True,
    show_default=True,
    help="Rows with a missing non-core sensor go to the fallback model (else a 422).",
)
@click.option(
    "--dir",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Writable folder for the server's files (default: <state_dir>/serving/<name>).",
)
@click.option("--http-port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8081, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8082, show_default=True)
def pod(
    root: Path | None,
    fallback_on_missing_sensors: bool,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    **kw: object,
) -> None:
    """Run one model server in the foreground on every interface, as a pod's container does:
    write its files, then become the server (it handles SIGTERM itself). The token comes from
    LOOPLINE_AUTH_TOKEN (or LOOPLINE_AUTH_TOKEN_FILE)."""
    from dataclasses import replace

    from loopline.serving.local_spec import LocalModelSpec
    from loopline.serving.pod import PodPorts, exec_server, write_server_folder
    from loopline.settings import get_settings

    built = _spec(**kw)
    assert isinstance(built, LocalModelSpec)
    spec = replace(built, fallback_on_missing_sensors=fallback_on_missing_sensors)
    try:
        ports = PodPorts(http_port, grpc_port, metrics_port)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    folder = root or get_settings().state_dir / "serving" / spec.name
    try:
        write_server_folder(folder, spec, ports)
    except OSError as exc:
        raise click.ClickException(f"cannot write the server's files in {folder}: {exc}") from exc
    exec_server(spec, folder)


@serve.command("settings")
@_spec_options
def settings(**kw: object) -> None:
    """Print the model-settings.json the local backend writes for these options."""
    from loopline.serving.local import LocalModelSpec, model_settings

    click.echo(json.dumps(model_settings(cast(LocalModelSpec, _spec(**kw))), indent=2))
