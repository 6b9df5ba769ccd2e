"""The example manifests as the demo applies them: the repository's own examples, put in the
demo's namespace with its sizes, so the demo shows what a user would apply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from loopline.demo.errors import MissingPiece
from loopline.demo.settings import DemoSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO_ROOT / "manifests" / "examples"


def load_examples(directory: Path, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The example Model named `model` and the Pipeline it references, from YAML files."""
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.y*ml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    models = [
        d for d in docs if d.get("kind") == "Model" and d.get("metadata", {}).get("name") == model
    ]
    if not models:
        raise MissingPiece(
            f"no example Model named {model!r} in {directory} (the demo reads "
            "manifests/examples/; is the checkout complete?)"
        )
    spec = models[0].get("spec", {})
    pipeline_name = (spec.get("pipelineRef") or {}).get("name")
    pipelines = [
        d
        for d in docs
        if d.get("kind") == "Pipeline" and d.get("metadata", {}).get("name") == pipeline_name
    ]
    if not pipelines:
        raise MissingPiece(f"the example Pipeline {pipeline_name!r} is not in {directory}")
    return models[0], pipelines[0]


def demo_model(model: dict[str, Any], settings: DemoSettings, namespace: str) -> dict[str, Any]:
    """The example Model as the demo applies it: its namespace, retraining on drift on, and
    the demo's sizes (epochs, window, canary step) where set.

    The data quality policy is the Model's own: the drift-triggered retraining run's shifted
    window passes the gate because distribution is advisory in drift runs
    (`loopline.data.quality.advisory_dimensions`), not because the demo loosens a minimum."""
    doc = json.loads(json.dumps(model))
    doc["metadata"] = {"name": doc["metadata"]["name"], "namespace": namespace}
    spec = doc.setdefault("spec", {})
    monitoring = spec.setdefault("monitoring", {})
    monitoring["enabled"] = True
    monitoring["retrainOnDrift"] = True
    if settings.window_size is not None:
        monitoring["windowSize"] = settings.window_size
    if settings.epochs is not None:
        spec.setdefault("training", {})["epochs"] = settings.epochs
    if settings.canary_step_seconds is not None:
        canary = spec.setdefault("serving", {}).setdefault("canary", {})
        canary["stepSeconds"] = settings.canary_step_seconds
    return doc


def demo_pipeline(pipeline: dict[str, Any], namespace: str) -> dict[str, Any]:
    doc = json.loads(json.dumps(pipeline))
    doc["metadata"] = {"name": doc["metadata"]["name"], "namespace": namespace}
    return doc
