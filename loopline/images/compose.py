"""The training image as the runtime image plus one layer, composed from their manifests.

The training image is not built from a Dockerfile of its own. It is the runtime image's layers
with the torch layer (docker/torch-layer.Dockerfile: the `training` extra's closure over the
runtime requirements) inserted right after the runtime image's dependency layers (the base, the
user, the venv), below the layers a source change rebuilds (the Feast repository, the loopline
wheel). So:

- a source change rebuilds neither the venv nor the torch layer, and re-ships neither: the
  composed manifest names the same layer blobs as before but for the top ones;
- every layer of the training image but the torch layer is the very blob of the runtime image
  (same digest), so a registry or a node that holds the runtime image holds all of it.

The layers above the insertion point were made on a venv without torch; they only add files
(the wheel's, the Feast repository's) and remove none of the torch layer's, so stacking them on
top of it gives the files of a venv with both (`loopline images build` imports torch and loopline
in the composed image to check it).

Nothing here touches the disk: the runner reads the two images' manifests and configs out of
podman's store (skopeo), writes what this module returns as an OCI layout, and copies it back
into the store, which reuses every layer it already holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# The runtime Dockerfile's marker after its dependency layers: `LABEL <this>=...`.
DEPENDENCIES_MARKER = "org.loopline.dependency-layers"
# Bumped when the composition changes (it is one of the training image's tag inputs).
COMPOSITION = "torch layer after the dependency layers, v1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
REF_ANNOTATION = "org.opencontainers.image.ref.name"

Json = dict[str, Any]


class CompositionError(ValueError):
    """The images do not fit together (no marker, not one layer, layers out of step)."""


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(document: Mapping[str, Any]) -> bytes:
    """The bytes of a JSON document as stored (sorted keys, no spaces: the same document
    always has the same digest)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def insertion_point(config: Mapping[str, Any]) -> int:
    """How many layers the runtime image has up to its dependency marker: the torch layer goes
    right after them. The marker is a LABEL (an empty layer) in the history."""
    layers = 0
    for entry in config.get("history", []):
        if DEPENDENCIES_MARKER in entry.get("created_by", ""):
            if layers == 0:
                raise CompositionError("the dependency marker comes before any layer")
            return layers
        if not entry.get("empty_layer", False):
            layers += 1
    raise CompositionError(
        f"the runtime image has no `LABEL {DEPENDENCIES_MARKER}` in its history "
        "(docker/loopline.Dockerfile puts one after the venv)"
    )


def _history_index(history: list[Json], layers: int) -> int:
    """The history position right after the entry of the `layers`-th layer."""
    seen = 0
    for index, entry in enumerate(history):
        if not entry.get("empty_layer", False):
            seen += 1
            if seen == layers:
                return index + 1
    raise CompositionError(f"the history records fewer than {layers} layers")


def training_config(
    runtime: Mapping[str, Any], layer: Mapping[str, Any], *, title: str, description: str
) -> Json:
    """The runtime image's config with the torch layer's diff id (and a history entry for it)
    after the dependency layers, and the training image's labels."""
    at = insertion_point(runtime)
    (layer_diff,) = _one_layer(layer["rootfs"]["diff_ids"])
    config: Json = json.loads(json.dumps(runtime))
    diff_ids: list[str] = config["rootfs"]["diff_ids"]
    if len(diff_ids) <= at:
        raise CompositionError("the runtime image has no layer above its dependency marker")
    diff_ids.insert(at, layer_diff)
    history: list[Json] = config.setdefault("history", [])
    layer_history = [h for h in layer.get("history", []) if not h.get("empty_layer", False)]
    entry: Json = {
        "created_by": "loopline images build: the torch layer (docker/torch-layer.Dockerfile)",
        "comment": f"{COMPOSITION}; {layer_diff}",
    }
    if layer_history and "created" in layer_history[0]:
        entry["created"] = layer_history[0]["created"]
    history.insert(_history_index(history, at), entry)
    labels: Json = config.setdefault("config", {}).setdefault("Labels", {}) or {}
    labels["org.opencontainers.image.title"] = title
    labels["org.opencontainers.image.description"] = description
    config["config"]["Labels"] = labels
    return config


def training_manifest(
    runtime: Mapping[str, Any], layer: Mapping[str, Any], *, at: int, config: bytes
) -> Json:
    """The runtime image's manifest with the torch layer's descriptor at `at` and the new
    config."""
    (layer_descriptor,) = _one_layer(layer["layers"])
    layers = [dict(d) for d in runtime["layers"]]
    layers.insert(at, dict(layer_descriptor))
    manifest: Json = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest(config), "size": len(config)},
        "layers": layers,
    }
    return manifest


def compose(
    runtime_manifest: Mapping[str, Any],
    runtime_config: Mapping[str, Any],
    layer_manifest: Mapping[str, Any],
    layer_config: Mapping[str, Any],
    *,
    title: str = "loopline-training",
    description: str = "Loopline training image: the runtime image and the torch layer",
) -> tuple[bytes, bytes]:
    """(manifest, config) of the training image, as bytes to store under their digests."""
    if [d["digest"] for d in runtime_manifest["layers"]] != runtime_config["rootfs"]["diff_ids"]:
        raise CompositionError(
            "the runtime image's manifest does not list its layers uncompressed "
            "(read it from podman's store, where they are)"
        )
    at = insertion_point(runtime_config)
    config = canonical(
        training_config(runtime_config, layer_config, title=title, description=description)
    )
    manifest = canonical(training_manifest(runtime_manifest, layer_manifest, at=at, config=config))
    return manifest, config


def layout(manifest: bytes, config: bytes, name: str) -> dict[str, bytes]:
    """The files of an OCI image layout holding one image's manifest and config under `name`
    (no layer blob: the store it is copied into has every layer)."""
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest(manifest),
                "size": len(manifest),
                "annotations": {REF_ANNOTATION: name},
            }
        ],
    }
    return {
        "oci-layout": canonical({"imageLayoutVersion": "1.0.0"}),
        "index.json": canonical(index),
        f"blobs/sha256/{digest(manifest).removeprefix('sha256:')}": manifest,
        f"blobs/sha256/{digest(config).removeprefix('sha256:')}": config,
    }


def _one_layer(items: list[Any]) -> list[Any]:
    if len(items) != 1:
        raise CompositionError(
            f"the torch layer image must have exactly one layer, not {len(items)}"
        )
    return items
