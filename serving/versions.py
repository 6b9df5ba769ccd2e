"""Turn a model URI with an alias into a pinned version before loading it.

`models:/ns.drill-ae@champion` names whatever version holds the alias *now*; the server pins
the version it resolved (`models:/ns.drill-ae/7`), loads that, and reports it in every
response and metric, so a concurrent alias move can never make a server say one version and
serve another. Moving the server to a new champion is a reload (the manager's `update`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MODELS_URI = re.compile(r"^models:/(?P<name>[^@/]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


@dataclass(frozen=True)
class ResolvedModel:
    requested_uri: str
    uri: str  # pinned: models:/name/<version>, or the requested URI when not a registry URI
    version: str
    registered_name: str | None = None
    # Where the version's files are (file://, s3://, …): loading from it needs no registry
    # lookup in the loading code, so the registry URI given here is the only one used.
    download_uri: str = ""

    @property
    def load_uri(self) -> str:
        return self.download_uri or self.uri


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None] | None:
    """(name, alias, version) of a `models:/` URI, or None for any other URI."""
    match = _MODELS_URI.match(uri)
    if match is None:
        return None
    return match["name"], match["alias"], match["version"]


def resolve_model_uri(uri: str, tracking_uri: str) -> ResolvedModel:
    """Pin an alias (or `latest`) to a version; other URIs keep a readable version label."""
    if not uri:
        raise ValueError(
            "model_uri is empty: set LOOPLINE_SERVING_MODEL_URI or parameters.uri in "
            "model-settings.json (e.g. models:/ns.drill-ae@champion)"
        )
    parsed = parse_models_uri(uri)
    if parsed is None:
        if uri.startswith("models:/"):
            raise ValueError(
                f"model_uri {uri!r} is not models:/<name>@<alias> or models:/<name>/<version>"
            )
        # runs:/<run id>/model or a local folder: no registry version; report the run or path.
        label = uri.split("/")[1] if uri.startswith("runs:/") else uri
        return ResolvedModel(requested_uri=uri, uri=uri, version=label)
    name, alias, version = parsed
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if alias is not None:
        version = str(client.get_model_version_by_alias(name, alias).version)
    elif version == "latest":
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise ValueError(f"registered model {name!r} has no versions")
        version = str(max(int(v.version) for v in versions))
    assert version is not None
    if not version.isdigit():
        raise ValueError(f"model_uri {uri!r}: version {version!r} is not a number")
    return ResolvedModel(
        requested_uri=uri,
        uri=f"models:/{name}/{version}",
        version=version,
        registered_name=name,
        download_uri=str(client.get_model_version_download_uri(name, version)),
    )
