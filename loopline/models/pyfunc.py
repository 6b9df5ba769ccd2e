"""The bundle as one MLflow pyfunc model: explicit signature, explicit requirements.

`predict(DataFrame)` is the stock MLflow path (mlserver-mlflow, `mlflow models serve`): rows
whose non-core sensors are all present go to the primary model, rows with a missing or NaN
non-core sensor go to the core-sensor fallback, and a `model` column says which answered.
A missing core sensor cannot be scored by either model and is refused with the column named.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, DataType, Schema

import loopline
from loopline.models.bundle import (
    ARTIFACT_KEY,
    INFERENCE_THREADS,
    BundleError,
    ModelBundle,
    set_torch_threads,
)
from loopline.types.common import Task
from loopline.types.dataset import MLFLOW_METADATA_KEY

PRIMARY = "primary"
FALLBACK = "fallback"
MODEL_COLUMN = "model"
PROBABILITY_PREFIX = "probability_"


def _version(dist: str) -> str:
    return str(__import__(dist).__version__).split("+")[0]


def pip_requirements() -> list[str]:
    """Pinned to what trained the model; the serving image installs Loopline itself.

    No torch: a format-2 bundle scores with numpy (and numba) alone, so an environment MLflow
    builds for the model needs none of its CUDA libraries. Given explicitly because MLflow's
    requirement inference re-imports the model in a subprocess and costs seconds per logged
    model.
    """
    return [
        f"loopline=={loopline.__version__}",
        f"mlflow=={_version('mlflow')}",
        f"numpy=={_version('numpy')}",
        f"numba=={_version('numba')}",
        f"pandas=={_version('pandas')}",
    ]


def signature_of(bundle: ModelBundle) -> ModelSignature:
    """Inputs: one double column per sensor (non-core optional); outputs per task."""
    core = set(bundle.core_feature_names)
    inputs = Schema(
        [ColSpec(DataType.double, name, required=name in core) for name in bundle.feature_names]
    )
    if bundle.task == Task.ANOMALY_DETECTION:
        cols = [
            ColSpec(DataType.double, "anomaly_score"),
            ColSpec(DataType.double, "threshold"),
            ColSpec(DataType.boolean, "is_anomaly"),
        ]
    else:
        cols = [
            ColSpec(DataType.long, "class_index"),
            ColSpec(DataType.string, "class_name"),
            *[ColSpec(DataType.double, PROBABILITY_PREFIX + c) for c in bundle.class_names],
        ]
    return ModelSignature(inputs=inputs, outputs=Schema([*cols, ColSpec(DataType.string, "model")]))


def predict_frame(bundle: ModelBundle, frame: pd.DataFrame) -> pd.DataFrame:
    """Score a DataFrame, routing rows with missing non-core sensors to the fallback."""
    names = bundle.feature_names
    core = bundle.core_feature_names
    missing_core = [c for c in core if c not in frame.columns]
    if missing_core:
        raise BundleError(f"core sensor column(s) {missing_core} are missing from the input")
    x = frame.reindex(columns=names).to_numpy(dtype=np.float32)
    core_idx = bundle.core_indices
    nan = np.isnan(x)
    bad_core = nan[:, core_idx].any(axis=0)
    if bad_core.any():
        cols = [c for c, bad in zip(core, bad_core, strict=True) if bad]
        raise BundleError(f"core sensor column(s) {cols} have NaN values; no model can score them")
    use_fallback = nan.any(axis=1)
    n = len(frame)
    out: dict[str, Any] = {}
    results = []
    if (~use_fallback).any():
        results.append((~use_fallback, bundle.score(x[~use_fallback])))
    if use_fallback.any():
        results.append((use_fallback, bundle.score_fallback(x[use_fallback][:, core_idx])))
    for mask, res in results:
        for key, values in res.items():
            if key == "probabilities":
                for j, cname in enumerate(bundle.class_names):
                    col = out.setdefault(PROBABILITY_PREFIX + cname, np.zeros(n, np.float64))
                    col[mask] = values[:, j]
                continue
            if key not in out:
                out[key] = np.empty(n, dtype=values.dtype if values.dtype != np.str_ else object)
            out[key][mask] = values
    out[MODEL_COLUMN] = np.where(use_fallback, FALLBACK, PRIMARY)
    return pd.DataFrame(out, index=frame.index)


class BundlePyfunc(PythonModel):
    """The pyfunc face of a bundle; the bundle folder is its only artifact."""

    bundle: ModelBundle

    def load_context(self, context: PythonModelContext) -> None:
        self.bundle = ModelBundle.load_dir(Path(context.artifacts[ARTIFACT_KEY]))
        # Only if a format-1 bundle brought torch in: one thread per request, not per core
        # (see `set_torch_threads`).
        set_torch_threads(INFERENCE_THREADS)

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        # A DataFrame type hint keeps MLflow's type-hint validation out of the way; the
        # signature given at logging time is what MLflow enforces.
        return predict_frame(self.bundle, model_input)


def input_example(bundle: ModelBundle) -> pd.DataFrame:
    """Two typical rows (the training means, the second with non-core sensors missing)."""
    row = dict(zip(bundle.feature_names, bundle.primary.scaler.mean.astype(float), strict=True))
    partial = {n: row[n] for n in bundle.core_feature_names}
    return pd.DataFrame([row, partial], columns=bundle.feature_names)


def model_metadata(bundle: ModelBundle) -> dict[str, Any] | None:
    """The MLmodel file's `metadata:` block: the data set's column roles under
    `loopline_roles` (the same document as the bundle's `metadata.roles`), so a server or a
    person reading only the MLflow model knows what the entity column is called."""
    roles = bundle.roles
    return None if roles is None else {MLFLOW_METADATA_KEY: roles.model_dump(mode="json")}


def _model_options(bundle: ModelBundle, folder: Path) -> dict[str, Any]:
    """What logging and saving share, so a saved folder is what a logged model holds."""
    return {
        "python_model": BundlePyfunc(),
        "artifacts": {ARTIFACT_KEY: str(folder)},
        "signature": signature_of(bundle),
        "input_example": input_example(bundle),
        "pip_requirements": pip_requirements(),
        "metadata": model_metadata(bundle),
    }


def log_bundle(bundle: ModelBundle, *, name: str = "model") -> ModelInfo:
    """Log the bundle as a pyfunc model into the active MLflow run."""
    with tempfile.TemporaryDirectory(prefix="loopline-bundle-") as tmp:
        folder = bundle.save(Path(tmp) / ARTIFACT_KEY)
        return mlflow.pyfunc.log_model(name=name, **_model_options(bundle, folder))


def save_bundle_model(bundle: ModelBundle, path: Path) -> Path:
    """Write the bundle as an MLflow pyfunc model folder at `path` (no tracking server).

    The same folder `log_bundle` uploads; `load_bundle(path)` and `mlflow.pyfunc.load_model`
    both read it."""
    with tempfile.TemporaryDirectory(prefix="loopline-bundle-") as tmp:
        folder = bundle.save(Path(tmp) / ARTIFACT_KEY)
        mlflow.pyfunc.save_model(str(path), **_model_options(bundle, folder))
    return path
