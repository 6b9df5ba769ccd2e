"""Which registered version a batch run scores with: the one asked for, or the champion."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from loopline.batch.plan import BatchError
from loopline.tracking.registry import CHAMPION, version_by_alias


def _known_versions(client: MlflowClient, name: str) -> list[str]:
    found = client.search_model_versions(f"name = '{name}'")
    return sorted((str(v.version) for v in found), key=int)


def resolve_version(client: MlflowClient, registered_name: str, version: str | None) -> str:
    """The version number to load; `BatchError` naming `--version` or `--model` otherwise."""
    try:
        client.get_registered_model(registered_name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise BatchError(
            f"--model: no registered model {registered_name!r} in this MLflow; train the Model "
            "first (a training run registers it)"
        ) from None
    if version is None:
        champion = version_by_alias(client, registered_name, CHAMPION)
        if champion is None:
            raise BatchError(
                f"--version: {registered_name!r} has no {CHAMPION} yet (versions: "
                f"{_known_versions(client, registered_name) or 'none'}); pass --version N"
            )
        return str(champion.version)
    text = version.strip().removeprefix("v")
    if not text.isdigit():
        raise BatchError(f"--version {version!r}: expected a version number such as 3")
    known = _known_versions(client, registered_name)
    if text not in known:
        raise BatchError(
            f"--version {text}: {registered_name!r} has no such version; it has {known or 'none'}"
        )
    return text
