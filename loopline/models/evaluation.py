"""Score a bundle on a labelled evaluation set: primary, fallback and the statistical baselines.

Two baselines: max-|z| (`baseline_*`) and PCA Hotelling T² + Q (`pca_*`, with
`f1_gain_over_pca`), so every model shows what the network adds over what a process engineer
would fit first.

The same function scores the challenger and the current champion on the same fresh rows, so
the champion gate compares like with like. Metric names are flat (`f1`, `roc_auc`,
`fallback_f1`, `baseline_roc_auc`, `roc_auc_gain_over_baseline`, …) because they become MLflow
metrics and gate policy keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from loopline.models.baseline import ClassRangeBaseline
from loopline.models.bundle import ModelBundle
from loopline.models.evaluation_anomaly import evaluate_anomaly, reliability_markdown
from loopline.models.training import class_indices
from loopline.types.alarms import AlarmPolicy
from loopline.types.common import Task
from loopline.types.dataset import DatasetRoles


@dataclass
class Evaluation:
    metrics: dict[str, float]
    confusion: dict[str, Any] = field(default_factory=dict)  # classification: labels + matrix
    faults: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # anomaly: per detector

    def markdown(self, title: str = "Evaluation") -> str:
        lines = [f"## {title}", "", *reliability_markdown(self.metrics)]
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.4f} |" for k, v in sorted(self.metrics.items())]
        if self.confusion:
            labels = self.confusion["labels"]
            lines += ["", "Confusion matrix (rows: true, columns: predicted)", ""]
            lines += ["| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
            for label, row in zip(labels, self.confusion["matrix"], strict=True):
                lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
        return "\n".join(lines) + "\n"


def _macro_ovr_auc(y: np.ndarray, probs: np.ndarray, present: list[int]) -> float:
    """Mean one-vs-rest ROC-AUC over classes that have both positives and negatives."""
    aucs = [roc_auc_score(y == k, probs[:, k]) for k in present if 0 < (y == k).sum() < len(y)]
    return float(np.mean(aucs)) if aucs else math.nan


def _rows(df: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    return df[df[names].notna().all(axis=1)]


def evaluate_bundle(
    bundle: ModelBundle,
    df: pd.DataFrame,
    roles: DatasetRoles | None = None,
    alarms: AlarmPolicy | None = None,
) -> Evaluation:
    """Metrics of primary, fallback and baselines on the labelled rows of `df`.

    Anomaly detection adds the reliability figures (`loopline.models.evaluation_anomaly`),
    with alarm events counted after the debouncing of `alarms` (default k=5 of n=8, ending
    below m=1) and, when it sets a false-alarm budget, whether each detector met it.

    The label column is `roles.label`: the run's roles, else those the bundle recorded (a
    champion trained before bundles recorded roles needs the run's)."""
    roles = roles or bundle.roles
    if roles is None:
        raise ValueError(
            "the bundle records no data set roles and none were given: cannot tell which "
            "column is the label"
        )
    label = roles.label
    if label not in df.columns:
        raise ValueError(f"evaluation set lacks the label column {label!r}")
    names, core = bundle.feature_names, bundle.core_feature_names
    labelled = df[df[label].notna()]
    full, core_rows = _rows(labelled, names), _rows(labelled, core)
    if len(full) == 0:
        raise ValueError(f"evaluation set has no rows with all of {names} present")
    x, xc = full[names].to_numpy(np.float32), core_rows[core].to_numpy(np.float32)
    metrics: dict[str, float] = {"eval_rows": float(len(full))}
    baseline_doc = bundle.metadata.get("baseline")
    if bundle.task == Task.ANOMALY_DETECTION:
        found, faults = evaluate_anomaly(bundle, full, core_rows, roles, alarms or AlarmPolicy())
        return Evaluation(metrics=metrics | found, faults=faults)
    classes = bundle.class_names
    y = class_indices(full[label], classes, label)
    yc = class_indices(core_rows[label], classes, label)
    labels = list(range(len(classes)))
    pred = bundle.score(x)["class_index"]
    predf = bundle.score_fallback(xc)["class_index"]
    present = sorted(set(y.tolist()))
    probs = bundle.score(x)["probabilities"]
    p, r, f, _ = precision_recall_fscore_support(
        y, pred, labels=present, average="macro", zero_division=0
    )
    # `f1`, `precision`, `recall` and `roc_auc` are macro averages over the classes present, so
    # every policy metric name means something for both tasks.
    metrics |= {"macro_f1": float(f), "f1": float(f), "precision": float(p), "recall": float(r)}
    metrics["roc_auc"] = _macro_ovr_auc(y, probs, present)
    metrics["accuracy"] = float(accuracy_score(y, pred))
    metrics["fallback_macro_f1"] = float(
        f1_score(yc, predf, labels=sorted(set(yc.tolist())), average="macro", zero_division=0)
    )
    metrics["fallback_accuracy"] = float(accuracy_score(yc, predf))
    if baseline_doc:
        predb = ClassRangeBaseline.from_dict(baseline_doc).predict(x)
        metrics["baseline_macro_f1"] = float(
            f1_score(y, predb, labels=present, average="macro", zero_division=0)
        )
        metrics["baseline_accuracy"] = float(accuracy_score(y, predb))
        metrics["macro_f1_gain_over_baseline"] = metrics["macro_f1"] - metrics["baseline_macro_f1"]
    matrix = confusion_matrix(y, pred, labels=labels)
    return Evaluation(
        metrics=metrics, confusion={"labels": list(classes), "matrix": matrix.tolist()}
    )
