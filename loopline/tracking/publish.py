"""Publish a trained bundle: log it into its run, register a challenger, apply the gate.

This is the last step of every training run and also what the test fixture uses to put a
model into a registry, so both go through the same code (and the same lineage tags).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from loopline.models.bundle import ModelBundle
from loopline.models.pyfunc import log_bundle
from loopline.tracking.experiments import using_tracking_uri
from loopline.tracking.gate import GateDecision, decide
from loopline.tracking.registry import alias_uri, apply_decision, register_challenger
from loopline.types.policy import ValidationPolicy

MODEL_ARTIFACT = "model"
REFERENCE_ARTIFACT = "reference/reference.parquet"
MAX_REFERENCE_ROWS = 5000


def reference_rows(
    df: pd.DataFrame,
    feature_names: list[str],
    *,
    normal: pd.Series | None = None,
    seed: int = 0,
    limit: int = MAX_REFERENCE_ROWS,
) -> pd.DataFrame:
    """Up to `limit` training rows with every feature present (the drift reference); with
    `normal` (a boolean mask over `df`, e.g. the anomaly flag's normal rows) only those."""
    rows = df[df[feature_names].notna().all(axis=1)]
    if normal is not None:
        rows = rows[normal.reindex(rows.index, fill_value=False)]
    if len(rows) > limit:
        rows = rows.sample(n=limit, random_state=seed).sort_index()
    return rows[feature_names].astype("float32").reset_index(drop=True)


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float]) -> None:
    """Log finite metrics; MLflow cannot compare NaN, so undefined ones are left out."""
    finite = {k: float(v) for k, v in metrics.items() if not math.isnan(float(v))}
    if finite:
        mlflow_metrics = [
            mlflow.entities.Metric(key=k, value=v, timestamp=0, step=0) for k, v in finite.items()
        ]
        client.log_batch(run_id, metrics=mlflow_metrics)


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    flat = {k: json.dumps(v) if isinstance(v, list | dict) else str(v) for k, v in params.items()}
    client.log_batch(run_id, params=[mlflow.entities.Param(k, v) for k, v in flat.items()])


@dataclass(frozen=True)
class Publication:
    model_version: str
    model_uri: str  # the version's own URI: models:/<name>/<version>
    gate_passed: bool
    decision: GateDecision


def publish(
    client: MlflowClient,
    *,
    registered_name: str,
    run_id: str,
    bundle: ModelBundle,
    metrics: dict[str, float],
    policy: ValidationPolicy,
    champion_metrics: dict[str, float] | None,
    champion_version: str | None,
    reference: pd.DataFrame,
    version_tags: dict[str, str],
    move_champion: bool = True,
) -> Publication:
    """Log model and reference, register the challenger, decide and apply the gate."""
    with tempfile.TemporaryDirectory(prefix="loopline-ref-") as tmp:
        path = Path(tmp) / Path(REFERENCE_ARTIFACT).name
        reference.to_parquet(path, index=False)
        client.log_artifact(run_id, str(path), str(Path(REFERENCE_ARTIFACT).parent))
    # MLflow 3 resolves a logged model's registry source through the global tracking URI
    # (not the client's), so logging and registering both run with it pointed at our store.
    with using_tracking_uri(client.tracking_uri):
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            info = log_bundle(bundle, name=MODEL_ARTIFACT)
        version = register_challenger(
            client,
            registered_name,
            model_uri=info.model_uri,
            run_id=run_id,
            model_id=info.model_id,
            tags=version_tags,
        )
    decision = decide(policy, metrics, champion_metrics, champion_version=champion_version)
    apply_decision(
        client,
        registered_name,
        str(version.version),
        run_id,
        decision,
        champion_version,
        move_champion=move_champion,
    )
    return Publication(
        model_version=str(version.version),
        model_uri=f"models:/{registered_name}/{version.version}",
        gate_passed=decision.passed,
        decision=decision,
    )


__all__ = ["MODEL_ARTIFACT", "REFERENCE_ARTIFACT", "Publication", "alias_uri", "publish"]
