"""Score a bundle on a labelled evaluation set: primary, fallback and the statistical baseline.

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

from loopline.models.baseline import ClassRangeBaseline, RangeBaseline
from loopline.models.bundle import ModelBundle
from loopline.models.evaluation_split import label_values
from loopline.models.pca_baseline import PcaBaseline
from loopline.models.training import class_indices
from loopline.types.common import Task
from loopline.types.dataset import DatasetRoles


@dataclass
class Evaluation:
    metrics: dict[str, float]
    confusion: dict[str, Any] = field(default_factory=dict)  # classification: labels + matrix

    def markdown(self, title: str = "Evaluation") -> str:
        lines = [f"## {title}", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.4f} |" for k, v in sorted(self.metrics.items())]
        if self.confusion:
            labels = self.confusion["labels"]
            lines += ["", "Confusion matrix (rows: true, columns: predicted)", ""]
            lines += ["| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
            for label, row in zip(labels, self.confusion["matrix"], strict=True):
                lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
        return "\n".join(lines) + "\n"


def _binary(prefix: str, y: np.ndarray, score: np.ndarray, flag: np.ndarray) -> dict[str, float]:
    p, r, f, _ = precision_recall_fscore_support(
        y, flag.astype(np.int64), average="binary", zero_division=0
    )
    auc = roc_auc_score(y, score) if 0 < y.sum() < len(y) else math.nan
    return {
        f"{prefix}precision": float(p),
        f"{prefix}recall": float(r),
        f"{prefix}f1": float(f),
        f"{prefix}roc_auc": float(auc),
        f"{prefix}alarm_rate": float(flag.mean()) if len(flag) else math.nan,
    }


def _macro_ovr_auc(y: np.ndarray, probs: np.ndarray, present: list[int]) -> float:
    """Mean one-vs-rest ROC-AUC over classes that have both positives and negatives."""
    aucs = [roc_auc_score(y == k, probs[:, k]) for k in present if 0 < (y == k).sum() < len(y)]
    return float(np.mean(aucs)) if aucs else math.nan


def _rows(df: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    return df[df[names].notna().all(axis=1)]


def _flags(labels: pd.Series) -> np.ndarray:
    return label_values(labels).eq("1").to_numpy(np.int64)


def evaluate_bundle(
    bundle: ModelBundle, df: pd.DataFrame, roles: DatasetRoles | None = None
) -> Evaluation:
    """Metrics of primary, fallback and baseline on the labelled rows of `df`.

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
        y, yc = _flags(full[label]), _flags(core_rows[label])
        metrics["eval_fault_rate"] = float(y.mean())
        res = bundle.score(x)
        metrics |= _binary("", y, res["anomaly_score"], res["is_anomaly"])
        resf = bundle.score_fallback(xc)
        metrics |= _binary("fallback_", yc, resf["anomaly_score"], resf["is_anomaly"])
        if baseline_doc:
            base = RangeBaseline.from_dict(baseline_doc)
            s = base.score(x)
            metrics |= _binary("baseline_", y, s, s > base.threshold)
            metrics["roc_auc_gain_over_baseline"] = metrics["roc_auc"] - metrics["baseline_roc_auc"]
            metrics["f1_gain_over_baseline"] = metrics["f1"] - metrics["baseline_f1"]
        pca_doc = bundle.metadata.get("pca_baseline")
        if pca_doc:
            pca = PcaBaseline.from_dict(pca_doc)
            s = pca.score(x)
            metrics |= _binary("pca_", y, s, s > pca.threshold)
            metrics["pca_components"] = float(pca.components)
            metrics["roc_auc_gain_over_pca"] = metrics["roc_auc"] - metrics["pca_roc_auc"]
            metrics["f1_gain_over_pca"] = metrics["f1"] - metrics["pca_f1"]
        return Evaluation(metrics=metrics)
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
